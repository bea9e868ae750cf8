//! Drafting replies and sending approved ones: threading headers, `Re:` once, Reply-To
//! first, a valid approval request; sending through the `.eml` outbox and through a real
//! SMTP server (aiosmtpd: plain, and STARTTLS with a login), exactly once; SMTP down is a
//! clear `not sent:` that leaves the approval usable; a send cut off by a crash is in doubt
//! and never repeated.

mod support;

use std::path::Path;

use aie_email_draft::{
    EmailConfig, EmailDraft, ReplyArgs, SmtpConfig,
    message::parse,
    send::{JOURNAL, outbox_dir},
};
use aie_shared::executor::{Journal, JournalEntry, JournalState};
use aie_shared::vault::{AgentName, ApprovalId, ApprovalRequest, TaskId};
use support::{Setup, SmtpSink, certificate, mail};

const ORIGINAL: &[u8] = b"From: \"Alice Example\" <alice@example.org>\r\n\
To: Owner <owner@example.com>\r\n\
Reply-To: billing@example.org\r\n\
Subject: Invoice 42\r\n\
Message-ID: <inv42@example.org>\r\n\
References: <q0@example.com> <q1@example.com>\r\n\
\r\n\
Please pay invoice 42.\r\n";

/// Delivers the original, fetches it and claims its task for `cloud`; returns the task id.
async fn task_for_original(setup: &Setup, server: &EmailDraft, raw: &[u8]) -> TaskId {
    setup.deliver(&format!("{}.mail", setup.names("cur").len()), raw);
    let out = server.fetch().await.expect("fetch");
    let id = TaskId::new(out.report.task_ids[0].clone()).expect("id");
    setup
        .vault
        .claim(&id, &AgentName::new("cloud").expect("agent"))
        .expect("claim");
    id
}

/// What the human does: the request moves from Pending_Approval/email/ to Approved/.
fn approve(setup: &Setup, approval_id: &str) {
    let root = setup.vault.root();
    std::fs::rename(
        root.join(format!("Pending_Approval/email/{approval_id}.md")),
        root.join(format!("Approved/{approval_id}.md")),
    )
    .expect("approve");
}

fn reply(task_id: &TaskId, body: &str) -> ReplyArgs {
    ReplyArgs {
        task_id: task_id.clone(),
        body: body.to_owned(),
        subject: None,
        to: None,
        cc: None,
    }
}

/// The reply has `Re:` once, In-Reply-To the original, References the thread plus the
/// original, goes to Reply-To; its approval request is valid and its hash matches.
#[tokio::test]
async fn draft_reply_threads_and_files_a_valid_approval() {
    let setup = Setup::new();
    let server = setup.server(setup.config());
    let task = task_for_original(&setup, &server, ORIGINAL).await;
    let drafted = server
        .draft_reply(reply(&task, "Paid today.\nThanks!"))
        .await
        .expect("draft");
    assert!(
        drafted.path.starts_with("Pending_Approval/email/reply-"),
        "{}",
        drafted.path
    );
    assert_eq!(drafted.to, ["billing@example.org"]);
    assert_eq!(drafted.subject, "Re: Invoice 42");

    let text = std::fs::read_to_string(setup.vault.root().join(&drafted.path)).expect("read");
    let request = ApprovalRequest::parse(&text).expect("parse");
    assert!(request.hash_matches());
    assert_eq!(request.meta.tool, "email_send");
    assert_eq!(request.meta.requested_by.as_str(), "cloud");
    assert_eq!(request.meta.task_id.as_ref(), Some(&task));
    let ttl = request.meta.expires_at - request.meta.requested_at;
    assert_eq!(ttl.num_hours(), 72);
    let p = &request.meta.payload;
    assert_eq!(p["in_reply_to"], "<inv42@example.org>");
    assert_eq!(
        p["references"],
        serde_json::json!([
            "<q0@example.com>",
            "<q1@example.com>",
            "<inv42@example.org>"
        ])
    );
    assert_eq!(p["from"], "Owner <owner@example.com>");
    assert_eq!(p["body"], "Paid today.\nThanks!");
    assert_eq!(
        p["message_id"],
        format!("<aie.{}@example.com>", drafted.approval_id)
    );
    assert!(
        request.preview.contains("> Paid today."),
        "{}",
        request.preview
    );
    assert!(
        request.preview.contains("**To:** billing@example.org"),
        "{}",
        request.preview
    );

    // A reply to a reply keeps one `Re:`; without Reply-To the From is answered.
    let re = mail(
        Some("re1@example.net"),
        "Carol <carol@example.net>",
        "RE: Lunch",
        "Sure",
    );
    let task2 = task_for_original(&setup, &server, &re).await;
    let drafted2 = server
        .draft_reply(reply(&task2, "See you"))
        .await
        .expect("draft");
    assert_eq!(drafted2.subject, "RE: Lunch");
    assert_eq!(drafted2.to, ["Carol <carol@example.net>"]);

    // The agent may choose the recipients; a bad address is refused, naming it.
    let mut custom = reply(&task2, "x");
    custom.to = Some(vec!["not an address".into()]);
    let err = server
        .draft_reply(custom)
        .await
        .expect_err("bad address")
        .to_string();
    assert!(err.contains("\"not an address\""), "{err}");
}

/// Without an SMTP server the approved reply is written once to `<state>/outbox/<id>.eml`;
/// a second call reports the earlier send and writes nothing; an unapproved or tampered
/// request is never sent.
#[tokio::test]
async fn send_to_outbox_exactly_once_and_only_when_approved() {
    let setup = Setup::new();
    let server = setup.server(setup.config());
    let task = task_for_original(&setup, &server, ORIGINAL).await;
    let drafted = server
        .draft_reply(reply(&task, "MARKER-outbox"))
        .await
        .expect("draft");
    let id = ApprovalId::new(drafted.approval_id.clone()).expect("id");

    let err = server.send(&id).await.expect_err("pending").to_string();
    assert!(
        err.starts_with("not sent:") && err.contains("not in Approved/"),
        "{err}"
    );

    approve(&setup, &drafted.approval_id);
    let sent = server.send(&id).await.expect("send");
    assert_eq!(
        (sent.status.as_str(), sent.transport.as_str()),
        ("sent", "outbox")
    );
    let eml = outbox_dir(&setup.state).join(format!("{}.eml", drafted.approval_id));
    let message = parse(&std::fs::read(&eml).expect("eml"), 1 << 20);
    assert_eq!(message.subject.as_deref(), Some("Re: Invoice 42"));
    assert_eq!(
        message.message_id.as_deref(),
        Some(drafted.message_id.as_str())
    );
    assert!(message.body.contains("MARKER-outbox"));

    let again = server.send(&id).await.expect("second call");
    assert_eq!(again.status, "already_sent");
    assert_eq!(
        std::fs::read_dir(outbox_dir(&setup.state))
            .expect("outbox")
            .count(),
        1
    );
    let journal = Journal::open(&setup.state, &JOURNAL).expect("journal");
    assert_eq!(
        journal.last(&drafted.approval_id).map(|e| e.state),
        Some(JournalState::Done)
    );

    // Tampering after approval breaks the hash: refused.
    let drafted2 = server
        .draft_reply(reply(&task, "original text"))
        .await
        .expect("draft");
    approve(&setup, &drafted2.approval_id);
    let path = setup
        .vault
        .root()
        .join(format!("Approved/{}.md", drafted2.approval_id));
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(
        &path,
        text.replace("body: original text", "body: changed text"),
    )
    .expect("tamper");
    let id2 = ApprovalId::new(drafted2.approval_id).expect("id");
    let err = server.send(&id2).await.expect_err("tampered").to_string();
    assert!(
        err.contains("no longer matches its payload_sha256"),
        "{err}"
    );
}

fn with_smtp(setup: &Setup, smtp: SmtpConfig) -> EmailConfig {
    let mut config = setup.config();
    config.smtp = Some(smtp);
    config
}

/// Checks that `sink` got exactly one message: the marker body, the recipient, `Re:`,
/// the threading headers and the approval-derived Message-ID.
fn assert_one_reply(sink: &SmtpSink, approval_id: &str, marker: &str) {
    let received = sink.messages();
    assert_eq!(received.len(), 1, "exactly one message arrives");
    let (envelope, raw) = &received[0];
    assert_eq!(
        envelope["rcpt_tos"],
        serde_json::json!(["billing@example.org"])
    );
    assert_eq!(envelope["mail_from"], "owner@example.com");
    let message = parse(raw.as_bytes(), 1 << 20);
    assert_eq!(message.subject.as_deref(), Some("Re: Invoice 42"));
    assert_eq!(message.in_reply_to, ["<inv42@example.org>"]);
    assert_eq!(
        message.references,
        [
            "<q0@example.com>",
            "<q1@example.com>",
            "<inv42@example.org>"
        ]
    );
    assert_eq!(
        message.message_id,
        Some(format!("<aie.{approval_id}@example.com>"))
    );
    assert!(message.body.contains(marker), "{}", message.body);
}

/// Plain SMTP to a real server on loopback: one message, the right one, once.
#[tokio::test]
async fn send_over_plain_smtp_exactly_once() {
    let setup = Setup::new();
    let sink = SmtpSink::start(setup.dir.path(), None, None);
    let url = format!("smtp://127.0.0.1:{}", sink.port)
        .parse()
        .expect("url");
    let server = setup.server(with_smtp(&setup, SmtpConfig::new(url)));
    let task = task_for_original(&setup, &server, ORIGINAL).await;
    let drafted = server
        .draft_reply(reply(&task, "MARKER-plain"))
        .await
        .expect("draft");
    approve(&setup, &drafted.approval_id);
    let id = ApprovalId::new(drafted.approval_id.clone()).expect("id");
    let sent = server.send(&id).await.expect("send");
    assert_eq!(sent.status, "sent");
    assert_eq!(sent.transport, format!("smtp://127.0.0.1:{}", sink.port));
    assert!(sent.detail.contains("250"), "{}", sent.detail);
    assert_eq!(
        server.send(&id).await.expect("again").status,
        "already_sent"
    );
    assert_one_reply(&sink, &drafted.approval_id, "MARKER-plain");
}

/// STARTTLS (required) with a self-signed certificate the config trusts, and a login whose
/// password is read from a file in the state folder.
#[tokio::test]
async fn send_over_starttls_with_login() {
    let setup = Setup::new();
    let (cert, key) = certificate(setup.dir.path());
    let sink = SmtpSink::start(
        setup.dir.path(),
        Some((&cert, &key)),
        Some("owner:pw-in-file"),
    );
    std::fs::create_dir_all(&setup.state).expect("state");
    std::fs::write(setup.state.join("smtp-password"), "pw-in-file\n").expect("password");
    let url = format!("smtp://owner@localhost:{}?tls=required", sink.port)
        .parse()
        .expect("url");
    let mut smtp = SmtpConfig::new(url);
    smtp.password_file = Some("smtp-password".into());
    smtp.ca_file = Some(cert.clone());
    let server = setup.server(with_smtp(&setup, smtp));
    let task = task_for_original(&setup, &server, ORIGINAL).await;
    let drafted = server
        .draft_reply(reply(&task, "MARKER-starttls"))
        .await
        .expect("draft");
    approve(&setup, &drafted.approval_id);
    let id = ApprovalId::new(drafted.approval_id.clone()).expect("id");
    server.send(&id).await.expect("send");
    assert_one_reply(&sink, &drafted.approval_id, "MARKER-starttls");

    // Without trusting the certificate, nothing is sent and the reason says TLS.
    let mut untrusted = SmtpConfig::new(
        format!("smtp://owner@localhost:{}?tls=required", sink.port)
            .parse()
            .expect("url"),
    );
    untrusted.password_file = Some("smtp-password".into());
    let other = Setup::new();
    let server2 = other.server(with_smtp(&other, untrusted));
    std::fs::write(other.state.join("smtp-password"), "pw-in-file\n").expect("password");
    let task2 = task_for_original(&other, &server2, ORIGINAL).await;
    let drafted2 = server2
        .draft_reply(reply(&task2, "never"))
        .await
        .expect("draft");
    approve(&other, &drafted2.approval_id);
    let err = server2
        .send(&ApprovalId::new(drafted2.approval_id).expect("id"))
        .await
        .expect_err("untrusted")
        .to_string();
    assert!(
        err.starts_with("not sent:") && err.contains("STARTTLS"),
        "{err}"
    );
    assert_eq!(sink.messages().len(), 1);
}

/// SMTP down: `not sent:` naming the server, the journal says failed, the approval stays in
/// Approved/ and works once the server is up, delivering one message.
#[tokio::test]
async fn send_with_smtp_down_is_clear_and_leaves_the_approval_usable() {
    let setup = Setup::new();
    let port = support::free_port();
    let url = format!("smtp://127.0.0.1:{port}").parse().expect("url");
    let server = setup.server(with_smtp(&setup, SmtpConfig::new(url)));
    let task = task_for_original(&setup, &server, ORIGINAL).await;
    let drafted = server
        .draft_reply(reply(&task, "MARKER-retry"))
        .await
        .expect("draft");
    approve(&setup, &drafted.approval_id);
    let id = ApprovalId::new(drafted.approval_id.clone()).expect("id");
    let err = server.send(&id).await.expect_err("down").to_string();
    assert!(
        err.starts_with("not sent: SMTP server smtp://127.0.0.1:"),
        "{err}"
    );
    assert!(
        err.contains(&port.to_string()) && err.contains("cannot connect"),
        "{err}"
    );
    let journal = Journal::open(&setup.state, &JOURNAL).expect("journal");
    assert_eq!(
        journal.last(&drafted.approval_id).map(|e| e.state),
        Some(JournalState::NotExecuted)
    );
    assert!(journal.in_doubt().is_empty());
    assert!(
        setup
            .vault
            .root()
            .join(format!("Approved/{}.md", drafted.approval_id))
            .exists()
    );

    let sink = SmtpSink::start_on(port, setup.dir.path(), None, None);
    server.send(&id).await.expect("send once the server is up");
    assert_one_reply(&sink, &drafted.approval_id, "MARKER-retry");
}

/// A `sending` line without an outcome (the process died mid-send) makes the approval in
/// doubt after a restart: it is listed, and a send is refused with `in doubt:`, sending
/// nothing.
#[tokio::test]
async fn send_cut_off_by_a_crash_is_in_doubt_and_never_resent() {
    let setup = Setup::new();
    let sink = SmtpSink::start(setup.dir.path(), None, None);
    let url: aie_email_draft::SmtpUrl = format!("smtp://127.0.0.1:{}", sink.port)
        .parse()
        .expect("url");
    let config = with_smtp(&setup, SmtpConfig::new(url));
    let server = setup.server(config.clone());
    let task = task_for_original(&setup, &server, ORIGINAL).await;
    let drafted = server
        .draft_reply(reply(&task, "MARKER-doubt"))
        .await
        .expect("draft");
    approve(&setup, &drafted.approval_id);
    drop(server);
    crash_mid_send(&setup.state, &drafted.approval_id, &drafted.message_id);

    let restarted = setup.server(config);
    let doubts = restarted.in_doubt().await;
    assert_eq!(doubts.len(), 1);
    assert_eq!(doubts[0].approval_id, drafted.approval_id);
    let id = ApprovalId::new(drafted.approval_id.clone()).expect("id");
    let err = restarted.send(&id).await.expect_err("in doubt").to_string();
    assert!(
        err.starts_with("in doubt:") && err.contains("never sent again"),
        "{err}"
    );
    assert!(sink.messages().is_empty(), "nothing was sent");
}

/// Writes what a process killed between the journal's `started` line and the outcome leaves.
fn crash_mid_send(state: &Path, approval_id: &str, message_id: &str) {
    let mut journal = Journal::open(state, &JOURNAL).expect("journal");
    journal
        .append(JournalEntry {
            ts: "2025-01-31T09:00:00.000Z".into(),
            approval_id: approval_id.into(),
            state: JournalState::Started,
            effect_id: message_id.into(),
            payload_sha256: "unknown".into(),
            target: "smtp://127.0.0.1".into(),
            receipt: None,
            read_back: false,
            detail: None,
        })
        .expect("append");
}
