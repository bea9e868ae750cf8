//! Issue 11's contract fixes, with real peers over loopback: 2025-03-26 batches through the
//! gateway (and their refusal in later revisions), the official Python SDK closing a
//! session without a warning, the official TypeScript SDK listing tools without a format
//! warning, the flags every `aie serve SERVER` takes, and `aie up` fronting an `aie serve
//! email-draft` named like the suite's own email server.

use std::{path::Path, process::Command};

use aie_e2e::{
    Aie, audit_records_in, last_json_line, peer, peers_dir, run, shown_hash,
    zones::{SmtpSink, TOKEN, agent_call, agent_ok},
};
use aie_shared::{
    approvals::Approvals,
    vault::{ApprovalId, Vault},
};
use serde_json::{Value, json};

fn s(path: &Path) -> String {
    path.display().to_string()
}

/// `aie up --zone local` on a fresh folder under `dir`, with the token [`TOKEN`].
fn up(dir: &Path, extra: &[&str]) -> Aie {
    let (vault, state) = (s(&dir.join("vault")), s(&dir.join("state")));
    let mut args = vec![
        "up",
        "--zone",
        "local",
        "--vault",
        &vault,
        "--state",
        &state,
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend(extra);
    Aie::start_with_env(&args, &[("AIE_TOKEN", TOKEN), ("USER", "owner")])
}

/// POSTs `body` to `url` with the token and `headers`: (status, content type, JSON body).
async fn post(url: &str, headers: &[(&str, &str)], body: &Value) -> (u16, String, Value) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {TOKEN}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.body(body.to_string()).send().await.expect("send");
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("body");
    (
        status,
        kind,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// In a 2025-03-26 session with the gateway of `aie up`, a JSON-RPC batch of reads (a
/// `tools/list`, a `tools/call` and a notification) is answered with an array of the two
/// responses, in order, as that revision prescribes; revisions from 2025-06-18 on removed
/// batching, so there a batch is refused as a whole with `-32600`.
#[tokio::test]
async fn batches_are_answered_in_2025_03_26_and_refused_in_later_revisions() {
    aie_shared::init_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = up(dir.path(), &[]);
    let url = stack.url.clone();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {},
        "clientInfo": {"name": "batcher", "version": "1"}}});
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(init.to_string())
        .send()
        .await
        .expect("initialize");
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .expect("session id")
        .to_owned();
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (status, _, _) = post(&url, &[("mcp-session-id", &session)], &initialized).await;
    assert_eq!(status, 202);

    let batch = json!([
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "vault_status", "arguments": {}}},
        {"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": "t", "progress": 1}},
    ]);
    let (status, kind, answers) = post(&url, &[("mcp-session-id", &session)], &batch).await;
    assert_eq!(status, 200, "{answers}");
    assert!(kind.starts_with("application/json"), "{kind}");
    let answers = answers.as_array().expect("an array of answers");
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0]["id"], 2);
    assert!(
        answers[0]["result"]["tools"]
            .as_array()
            .is_some_and(|tools| tools.iter().any(|t| t["name"] == "vault_status")),
        "{}",
        answers[0]
    );
    assert_eq!(answers[1]["id"], 3);
    assert_eq!(answers[1]["result"]["isError"], false, "{}", answers[1]);
    assert_eq!(answers[1]["result"]["structuredContent"]["zone"], "local");

    for version in ["2025-06-18", "2025-11-25", "2026-07-28"] {
        let (status, _, refused) = post(&url, &[("mcp-protocol-version", version)], &batch).await;
        assert_eq!(status, 400, "{version}: {refused}");
        assert_eq!(refused["error"]["code"], -32600, "{version}: {refused}");
        assert!(
            refused["error"]["message"].as_str().is_some_and(
                |m| m.contains(&format!("not supported in protocol version {version}"))
            ),
            "{version}: {refused}"
        );
    }
}

/// The official Python SDK ends its session with a DELETE when it closes, and prints no
/// warning about it (it warns on any answer but 200 and 204; rmcp's own is 202).
#[test]
fn the_python_sdk_closes_a_session_without_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = up(dir.path(), &[]);
    let out = run(Command::new(peer("AIE_PYTHON"))
        .arg(peers_dir().join("mcp_client.py"))
        .args([&stack.url, "legacy", "vault_status", "{}"])
        .arg("--header")
        .arg(format!("Authorization=Bearer {TOKEN}")));
    assert!(out.status.success(), "the Python SDK failed");
    assert_eq!(last_json_line(&out)["is_error"], false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("Session termination failed"),
        "the SDK warned: {stderr}"
    );
}

/// The official TypeScript SDK lists the gateway's tools (and compiles a validator for each
/// output schema) without Ajv's `unknown format "uint" ignored in schema` or any other
/// format warning: the schemas carry standard formats only.
#[test]
fn the_typescript_sdk_lists_tools_without_a_format_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = up(dir.path(), &[]);
    let out = run(Command::new(peer("AIE_NODE"))
        .arg(peers_dir().join("ts_client.mjs"))
        .arg(&stack.url)
        .arg("--header")
        .arg(format!("Authorization=Bearer {TOKEN}")));
    assert!(out.status.success(), "the TypeScript SDK failed");
    let answer = last_json_line(&out);
    let tools = answer["tools"].as_array().expect("tools");
    for tool in [
        "email_fetch",
        "email_draft_reply",
        "vault_list_tasks",
        "vault_sync",
    ] {
        assert!(
            tools.iter().any(|t| t == tool),
            "{tool} not listed: {answer}"
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("unknown format"),
        "the SDK warned: {stderr}"
    );
}

/// `aie serve vault-claim` and `aie serve email-draft` take `--listen --vault --state
/// --config --zone`: both start with all five, the config's `[limits]` bound their listener
/// (a sixth session past `max_sessions = 5` is refused naming the key), vault-claim's help
/// says it keeps nothing in the state folder, and email-draft in the cloud zone refuses an
/// SMTP server.
#[tokio::test]
async fn every_server_takes_the_common_flags() {
    aie_shared::init_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::init(dir.path().join("vault")).expect("vault");
    let config = dir.path().join("aie.toml");
    std::fs::write(&config, "[limits]\nmax_sessions = 5\n").expect("config");
    let common = |zone: &'static str, state: &str| {
        vec![
            "--listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--vault".to_owned(),
            s(vault.root()),
            "--state".to_owned(),
            s(&dir.path().join(state)),
            "--config".to_owned(),
            s(&config),
            "--zone".to_owned(),
            zone.to_owned(),
        ]
    };
    let start = |server: &str, flags: Vec<String>| {
        let mut args = vec!["serve".to_owned(), server.to_owned()];
        args.extend(flags);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Aie::start(&args)
    };
    let claim = start("vault-claim", common("cloud", "claim-state"));
    let email = start("email-draft", common("local", "email-state"));
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}});
    for server in [&claim, &email] {
        let mut statuses = Vec::new();
        let mut last = Value::Null;
        for _ in 0..6 {
            let (status, _, body) = post(&server.url, &[], &init).await;
            statuses.push(status);
            last = body;
        }
        assert_eq!(statuses, [200, 200, 200, 200, 200, 429], "{}", server.url);
        assert!(
            last["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("[limits] max_sessions = 5")),
            "{last}"
        );
    }
    let listed = run(Command::new(aie_e2e::aie_bin())
        .args(["serve", "vault-claim"])
        .args(common("cloud", "claim-state"))
        .arg("--help"));
    let help = String::from_utf8_lossy(&listed.stdout);
    assert!(help.contains("vault-claim keeps nothing there"), "{help}");
    let mut cloud = vec!["serve".to_owned(), "email-draft".to_owned()];
    cloud.extend(common("cloud", "email-state"));
    cloud.extend(["--smtp".to_owned(), "smtp://127.0.0.1:1".to_owned()]);
    // Refused at once; should it start instead, it is stopped and the test fails.
    let mut child = Command::new(aie_e2e::aie_bin())
        .args(&cloud)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn aie");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let refused = child.wait_with_output().expect("output");
    assert_eq!(
        refused.status.code(),
        Some(1),
        "email-draft started in the cloud"
    );
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("--zone cloud refuses to start with an SMTP server"),
        "{why}"
    );
}

/// `aie up --zone local` whose config names an `[[upstream]]` `email` (an `aie serve
/// email-draft` on its own port) fronts it in place of its in-process email-draft, beside
/// its in-process vault-claim: the agent fetches, claims, drafts through the zone's
/// gateway; the owner approves; `email_send` sends once through the upstream; the guard
/// refuses a send without approval and a second use of the approval; every call is in the
/// zone's audit log.
#[test]
fn aie_up_fronts_an_upstream_named_like_a_suite_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::init(dir.path().join("vault")).expect("vault");
    let state = dir.path().join("state");
    let sink = SmtpSink::start(dir.path());
    let maildir = aie_e2e::maildir_holding(
        &dir.path().join("Maildir"),
        "1.invoice",
        aie_e2e::zones::INVOICE_MAIL,
    );
    let email = Aie::start(&[
        "serve",
        "email-draft",
        "--listen",
        "127.0.0.1:0",
        "--vault",
        &s(vault.root()),
        "--state",
        &s(&dir.path().join("email-state")),
        "--zone",
        "local",
        "--maildir",
        &s(&maildir),
        "--smtp",
        &sink.url(),
    ]);
    let config = dir.path().join("aie.toml");
    std::fs::write(
        &config,
        format!(
            "[[upstream]]\nname = \"email\"\nurl = \"{}\"\nprefix = false\n",
            email.url
        ),
    )
    .expect("config");
    let stack = up(dir.path(), &["--config", &s(&config)]);

    let fetched = agent_call(&stack.url, "email_fetch", &json!({}));
    assert_eq!(fetched["is_error"], false, "{fetched}");
    let tools: Vec<&str> = fetched["tools"]
        .as_array()
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for tool in ["email_send", "email_draft_reply", "vault_claim_task"] {
        assert!(tools.contains(&tool), "{tool} not fronted: {tools:?}");
    }
    let task_id = fetched["structured"]["task_ids"][0]
        .as_str()
        .expect("a task")
        .to_owned();
    let task = json!({"task_id": task_id});
    assert_eq!(
        agent_ok(&stack.url, "vault_claim_task", &task)["claimed"],
        true
    );
    let drafted = agent_ok(
        &stack.url,
        "email_draft_reply",
        &json!({"task_id": task_id, "body": "Paid today."}),
    );
    let id = drafted["approval_id"]
        .as_str()
        .expect("approval id")
        .to_owned();

    let unapproved = agent_call(&stack.url, "email_send", &json!({"approval_id": id}));
    assert_eq!(unapproved["is_error"], true, "{unapproved}");
    assert!(sink.messages().is_empty(), "sent without approval");

    let approvals = Approvals::open(vault.clone(), &state).expect("ledger");
    let approval = ApprovalId::new(&id).expect("id");
    approvals
        .approve(&approval, "owner", &shown_hash(&approvals, &approval))
        .expect("approve");
    let sent = agent_ok(&stack.url, "email_send", &json!({"approval_id": id}));
    assert_eq!(sent["approval_id"], id.as_str(), "{sent}");
    let again = agent_call(&stack.url, "email_send", &json!({"approval_id": id}));
    assert_eq!(again["is_error"], true, "{again}");
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "sent once");
    assert!(messages[0].contains("Paid today."), "{}", messages[0]);

    let records = audit_records_in(&vault.root().join("Logs/local")).expect("audit");
    let of = |tool: &str| -> Vec<&Value> { records.iter().filter(|r| r["tool"] == tool).collect() };
    for tool in ["email_fetch", "vault_claim_task", "email_draft_reply"] {
        assert!(
            of(tool).iter().any(|r| r["status"] == "ok"),
            "{tool} not audited ok: {records:?}"
        );
    }
    let sends = of("email_send");
    assert!(
        sends.iter().any(|r| r["decision"] == "allowed"
            && r["status"] == "ok"
            && r["approval_id"] == id.as_str()),
        "{sends:?}"
    );
    assert_eq!(
        sends.iter().filter(|r| r["decision"] == "refused").count(),
        2,
        "the unapproved send and the second use: {sends:?}"
    );
}
