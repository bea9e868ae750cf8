//! `aie serve email-draft` driven by a real MCP client (rmcp's) against a real SMTP server
//! (aiosmtpd, `tests/peers/smtp_sink.py`): a mail in the Maildir becomes a task, is triaged,
//! answered by a drafted reply that the owner approves, and sent exactly once with its
//! threading headers; with the SMTP server down the send is a clear `not sent:` and the
//! approval stays usable.

use std::path::{Path, PathBuf};

use aie_e2e::{
    Aie,
    mcp::{Client, call, connect, text},
    zones::{SmtpSink, free_port},
};
use aie_shared::{
    rmcp::model::CallToolResult,
    vault::{AgentName, TaskId, Vault},
};
use serde_json::{Value, json};

fn structured(result: &CallToolResult) -> Value {
    assert_ne!(result.is_error, Some(true), "{}", text(result));
    result
        .structured_content
        .clone()
        .expect("structuredContent")
}

const ORIGINAL: &str = "From: Alice <alice@example.org>\r\n\
To: Owner <owner@example.com>\r\n\
Subject: Invoice 42\r\n\
Message-ID: <inv42@example.org>\r\n\
References: <q0@example.com>\r\n\
\r\n\
Please pay invoice 42 by Friday.\r\n";

/// A vault, a state folder and a Maildir holding the original mail.
fn setup() -> (tempfile::TempDir, Vault, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::init(dir.path().join("vault")).expect("vault");
    let maildir = dir.path().join("Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
    }
    std::fs::write(maildir.join("new/1700000000.1.host"), ORIGINAL).expect("deliver");
    let state = dir.path().join("state");
    (dir, vault, maildir, state)
}

fn serve(vault: &Vault, state: &Path, maildir: &Path, smtp: &str) -> Aie {
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
    Aie::start(&[
        "serve",
        "email-draft",
        "--listen",
        "127.0.0.1:0",
        "--vault",
        &path(vault.root()),
        "--state",
        &path(state),
        "--maildir",
        &path(maildir),
        "--smtp",
        smtp,
        "--agent",
        "cloud",
    ])
}

/// Fetch, claim, triage and draft through MCP; returns the approval id of the reply.
async fn fetch_and_draft(client: &Client, vault: &Vault, marker: &str) -> String {
    let fetched = structured(&call(client, "email_fetch", json!({})).await);
    assert_eq!(fetched["new"], 1, "{fetched}");
    let task_id = fetched["task_ids"][0].as_str().expect("task id").to_owned();

    let unclaimed = call(client, "email_triage", json!({"task_id": task_id})).await;
    assert_eq!(unclaimed.is_error, Some(true));
    assert!(
        text(&unclaimed).contains("claim it first"),
        "{}",
        text(&unclaimed)
    );
    vault
        .claim(
            &TaskId::new(task_id.clone()).expect("id"),
            &AgentName::new("cloud").expect("agent"),
        )
        .expect("claim");
    let triaged = structured(&call(client, "email_triage", json!({"task_id": task_id})).await);
    assert_eq!(triaged["category"], "invoice", "{triaged}");

    let drafted = structured(
        &call(
            client,
            "email_draft_reply",
            json!({"task_id": task_id, "body": format!("Paid. {marker}")}),
        )
        .await,
    );
    let approval_id = drafted["approval_id"]
        .as_str()
        .expect("approval id")
        .to_owned();
    assert_eq!(
        drafted["path"],
        format!("Pending_Approval/email/{approval_id}.md")
    );
    approval_id
}

/// The owner's approval, as a file move (the approval ledger is exercised by its own tests).
fn approve(vault: &Vault, approval_id: &str) {
    std::fs::rename(
        vault
            .root()
            .join(format!("Pending_Approval/email/{approval_id}.md")),
        vault.root().join(format!("Approved/{approval_id}.md")),
    )
    .expect("approve");
}

/// A mail in the Maildir becomes a task; after triage, a draft and the owner's approval,
/// `email_send` delivers exactly one message to the real SMTP server, with the marker body,
/// the right recipient, `Re:` and threading headers, and the approval-derived Message-ID;
/// a second call sends nothing.
#[tokio::test]
async fn email_mail_to_reply_sent_once_over_smtp() {
    let (dir, vault, maildir, state) = setup();
    let port = free_port();
    let sink = SmtpSink::start_on(port, dir.path());
    let server = serve(
        &vault,
        &state,
        &maildir,
        &format!("smtp://127.0.0.1:{port}"),
    );
    let client = connect(&server).await;

    let tools = client.list_all_tools().await.expect("tools/list");
    let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "email_draft_reply",
            "email_fetch",
            "email_send",
            "email_triage"
        ]
    );

    let approval_id = fetch_and_draft(&client, &vault, "MARKER-e2e").await;
    approve(&vault, &approval_id);
    let sent = structured(&call(&client, "email_send", json!({"approval_id": approval_id})).await);
    assert_eq!(sent["status"], "sent", "{sent}");
    assert_eq!(sent["approval_id"], approval_id.as_str());
    let again = structured(&call(&client, "email_send", json!({"approval_id": approval_id})).await);
    assert_eq!(again["status"], "already_sent");

    let received = sink.messages();
    assert_eq!(received.len(), 1, "exactly one message");
    let raw = &received[0];
    let header = |name: &str| {
        raw.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} header in\n{raw}"))
            .to_owned()
    };
    assert_eq!(header("Subject"), "Re: Invoice 42");
    assert_eq!(header("To"), "Alice <alice@example.org>");
    assert_eq!(header("In-Reply-To"), "<inv42@example.org>");
    assert_eq!(header("References"), "<q0@example.com> <inv42@example.org>");
    assert_eq!(
        header("Message-ID"),
        format!("<aie.{approval_id}@example.com>")
    );
    assert!(raw.contains("MARKER-e2e"), "{raw}");
    client.cancel().await.expect("close");
}

/// With the SMTP server down, `email_send` is an error starting `not sent:` that names the
/// server; nothing arrives, the approval stays in Approved/, and once the server is up the
/// same approval sends one message.
#[tokio::test]
async fn email_smtp_down_is_not_sent_and_the_approval_stays_usable() {
    let (dir, vault, maildir, state) = setup();
    let port = free_port();
    let server = serve(
        &vault,
        &state,
        &maildir,
        &format!("smtp://127.0.0.1:{port}"),
    );
    let client = connect(&server).await;
    let approval_id = fetch_and_draft(&client, &vault, "MARKER-down").await;
    approve(&vault, &approval_id);

    let down = call(&client, "email_send", json!({"approval_id": approval_id})).await;
    assert_eq!(down.is_error, Some(true));
    let why = text(&down);
    assert!(
        why.contains("not sent: SMTP server smtp://127.0.0.1:"),
        "{why}"
    );
    assert!(why.contains(&port.to_string()), "{why}");
    assert!(
        vault
            .root()
            .join(format!("Approved/{approval_id}.md"))
            .exists()
    );

    let sink = SmtpSink::start_on(port, dir.path());
    let sent = structured(&call(&client, "email_send", json!({"approval_id": approval_id})).await);
    assert_eq!(sent["status"], "sent");
    assert_eq!(sink.messages().len(), 1);
    client.cancel().await.expect("close");
}
