//! A client that hangs up in the middle of an approved send, with real processes: `aie up
//! --zone local` hosting email-draft in-process, aiosmtpd (`smtp_sink.py --delay-data 2`) as
//! a mail server that waits two seconds after DATA before it answers, and a raw HTTP client
//! on a `TcpStream` that writes a plain `tools/call` of `email_send` (one the direct path
//! answers, `shared/src/direct.rs`) and closes its connection 300 ms later, long before any
//! answer; stateless (2026-07-28), and in a 2025-11-25 session warmed until its plain calls
//! take the direct path. The call runs in a task of its own, so it runs to its end all the same: the reply
//! is delivered once, the ledger records it sent (not in doubt), the audit log has its one
//! outcome record and verifies, the approval and its task move to `Done/`, and the stack
//! goes on serving.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    time::{Duration, Instant},
};

use aie_e2e::{
    Aie,
    zones::{
        SinkOptions, SmtpSink, TOKEN, agent_call_in, aie_in, approve_in, audit_records,
        bare_remote, cloud_drafts_invoice_reply, up,
    },
};
use aie_shared::{
    approvals::{Approvals, LedgerRecord, Outcome},
    vault::{ApprovalId, Vault},
};
use serde_json::{Value, json};

/// How long the SMTP server waits after DATA before it answers.
const SMTP_DELAY: Duration = Duration::from_secs(2);

/// How long the client waits for an answer before it hangs up: well inside [`SMTP_DELAY`].
const HANG_UP_AFTER: Duration = Duration::from_millis(300);

/// How long the send may take to finish after the client has gone.
const SETTLE: Duration = Duration::from_secs(15);

/// The session revision the legacy-era requests speak.
const SESSION_VERSION: &str = "2025-11-25";

/// A reqwest client for the requests answered in full (reqwest runs on rustls, whose
/// crypto provider aie installs once).
fn http() -> reqwest::blocking::Client {
    aie_shared::init_crypto();
    reqwest::blocking::Client::new()
}

/// The HTTP headers and JSON-RPC body of one request to the local gateway's `/mcp`.
struct McpRequest {
    headers: Vec<(&'static str, String)>,
    body: Value,
}

impl McpRequest {
    /// The headers every request carries: the bearer token, a JSON body, and an `Accept` of
    /// both media types the transport requires.
    fn common() -> Vec<(&'static str, String)> {
        vec![
            ("authorization", format!("Bearer {TOKEN}")),
            ("content-type", "application/json".into()),
            ("accept", "application/json, text/event-stream".into()),
        ]
    }

    /// A plain stateless (2026-07-28) `tools/call` of `tool`: the direct path's shape.
    fn stateless_call(id: u64, tool: &str, arguments: Value) -> McpRequest {
        let mut headers = Self::common();
        headers.extend([
            ("mcp-protocol-version", "2026-07-28".into()),
            ("mcp-method", "tools/call".into()),
            ("mcp-name", tool.to_owned()),
        ]);
        let meta = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        });
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments, "_meta": meta}});
        McpRequest { headers, body }
    }

    /// A plain `tools/call` of `tool` in legacy session `session`.
    fn session_call(session: &str, id: u64, tool: &str, arguments: Value) -> McpRequest {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}});
        Self::in_session(session, body)
    }

    /// `body` sent in legacy session `session`.
    fn in_session(session: &str, body: Value) -> McpRequest {
        let mut headers = Self::common();
        headers.extend([
            ("mcp-protocol-version", SESSION_VERSION.into()),
            ("mcp-session-id", session.to_owned()),
        ]);
        McpRequest { headers, body }
    }

    /// Sends it to `gateway` with reqwest and waits for the whole answer: (status, the
    /// answer's headers, its body).
    fn send(&self, gateway: &Aie) -> (u16, reqwest::header::HeaderMap, String) {
        let mut request = http().post(&gateway.url).body(self.body.to_string());
        for (name, value) in &self.headers {
            request = request.header(*name, value);
        }
        let response = request.send().expect("a request to the gateway");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().expect("the answer's body");
        (status, headers, body)
    }

    /// Writes it as raw HTTP/1.1 on a new connection to `gateway`, waits [`HANG_UP_AFTER`]
    /// for an answer that must not have come, and closes the connection: a client that
    /// gives up on its request.
    fn send_and_hang_up(&self, gateway: &Aie) {
        let body = self.body.to_string();
        let mut head = format!(
            "POST /mcp HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n",
            gateway.addr,
            body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut stream = TcpStream::connect(&gateway.addr).expect("connect to the gateway");
        stream
            .write_all(format!("{head}{body}").as_bytes())
            .expect("write the request");
        stream
            .set_read_timeout(Some(HANG_UP_AFTER))
            .expect("read timeout");
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            other => panic!("the gateway answered before the client hung up: {other:?}"),
        }
        drop(stream);
    }
}

/// The JSON-RPC message of an answer body: the body itself, or the data of its SSE event
/// that carries an `id`.
fn message_of(body: &str) -> Value {
    if let Ok(message) = serde_json::from_str(body) {
        return message;
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|m| m.get("id").is_some())
        .unwrap_or_else(|| panic!("no JSON-RPC answer in: {body}"))
}

/// How many calls of `tool` the gateway answered on the direct path
/// (`aie_mcp_direct_calls_total`); only calls whose answer went out are counted.
fn direct_calls(gateway: &Aie, tool: &str) -> u64 {
    let metrics = http()
        .get(gateway.url.replace("/mcp", "/metrics"))
        .send()
        .and_then(|r| r.text())
        .expect("metrics");
    let series = format!("aie_mcp_direct_calls_total{{method=\"tools/call\",tool=\"{tool}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |n| n.trim().parse().expect("a count"))
}

/// Calls `vault_list_tasks` with `request` and requires a result.
fn list_tasks(gateway: &Aie, request: &McpRequest) {
    let (status, _, body) = request.send(gateway);
    assert_eq!(status, 200, "{body}");
    let answer = message_of(&body);
    assert_ne!(answer["result"]["isError"], true, "{answer}");
    assert!(
        answer["result"]["structuredContent"].is_object(),
        "{answer}"
    );
}

/// Opens a legacy session on `gateway` and warms it until its plain calls take the direct
/// path: `initialize`, `notifications/initialized`, then two calls through rmcp (the first
/// shows the gateway who owns the session, the second marks it fresh), and a third that
/// must be answered directly. Returns the session id.
fn warm_session(gateway: &Aie) -> String {
    let init = McpRequest {
        headers: McpRequest::common(),
        body: json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": SESSION_VERSION, "capabilities": {},
            "clientInfo": {"name": "disconnect-test", "version": "1"}}}),
    };
    let (status, headers, body) = init.send(gateway);
    assert_eq!(status, 200, "initialize: {body}");
    let session = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .expect("an Mcp-Session-Id")
        .to_owned();
    let initialized = McpRequest::in_session(
        &session,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    );
    let (status, _, body) = initialized.send(gateway);
    assert_eq!(status, 202, "initialized: {body}");
    for id in 1..=3 {
        list_tasks(
            gateway,
            &McpRequest::session_call(&session, id, "vault_list_tasks", json!({})),
        );
    }
    assert_eq!(
        direct_calls(gateway, "vault_list_tasks"),
        1,
        "the warmed session's third call did not take the direct path"
    );
    session
}

/// The local zone's ledger record of approval `id`.
fn ledger_record(root: &Path, id: &str) -> Option<LedgerRecord> {
    let vault = Vault::open(root.join("local/vault")).expect("vault");
    let ledger = Approvals::open(vault, &root.join("local/state")).expect("ledger");
    let state = ledger.ledger().read().expect("read ledger");
    assert!(state.damage().is_none(), "{:?}", state.problems);
    state.get(&ApprovalId::new(id).expect("id")).cloned()
}

/// The audit records of `email_send` under approval `id`.
fn send_records(root: &Path, id: &str) -> Vec<Value> {
    audit_records(root, "local")
        .into_iter()
        .filter(|r| r["tool"] == "email_send" && r["approval_id"] == id)
        .collect()
}

/// The scenario, with the send whose client hangs up made in `era` (one of `ERAS`).
fn client_hangs_up_mid_send(era: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let remote = bare_remote(root);
    let drafted = cloud_drafts_invoice_reply(root, &remote, "disconnect test reply");
    let (id, task_id) = (drafted.approval_id.as_str(), drafted.task_id.as_str());
    let sink = SmtpSink::start_with(
        root,
        SinkOptions {
            delay_data: SMTP_DELAY,
            ..SinkOptions::default()
        },
    );
    let mut local = up("local", root, &remote, &["--smtp", &sink.url()], &[]);
    let approved = approve_in("local", root, id);
    assert!(approved.status.success(), "approve");

    // The same request shape as the send below, answered in full, takes the direct path.
    let args = json!({"approval_id": id});
    let send = if era == "legacy" {
        let session = warm_session(&local);
        McpRequest::session_call(&session, 10, "email_send", args.clone())
    } else {
        list_tasks(
            &local,
            &McpRequest::stateless_call(1, "vault_list_tasks", json!({})),
        );
        assert_eq!(
            direct_calls(&local, "vault_list_tasks"),
            1,
            "a plain stateless call did not take the direct path"
        );
        McpRequest::stateless_call(10, "email_send", args.clone())
    };

    // The client hangs up while the server still waits to answer DATA.
    send.send_and_hang_up(&local);
    assert!(
        sink.messages().is_empty(),
        "the reply was delivered before the client hung up"
    );

    // The send runs to its end all the same: delivered, its result in the ledger, its
    // outcome in the audit log (after the intent record written before it was forwarded).
    let deadline = Instant::now() + SETTLE;
    let (record, records) = loop {
        let record = ledger_record(root, id).expect("in the ledger");
        let records = send_records(root, id);
        if record.result.is_some() && !sink.messages().is_empty() && records.len() >= 2 {
            break (record, records);
        }
        assert!(
            Instant::now() < deadline,
            "no outcome {SETTLE:?} after the client hung up: {} message(s) delivered, {} \
             abandoned mid-DATA, ledger {record:?}, audit records {records:#?}",
            sink.messages().len(),
            sink.abandoned().len()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "not exactly one message");
    assert!(sink.abandoned().is_empty(), "a send was cut off mid-DATA");
    assert!(
        messages[0].contains(&format!("<aie.{id}@")) && messages[0].contains("Re: Invoice 42"),
        "not this reply: {}",
        messages[0]
    );
    assert!(record.used_at.is_some(), "not marked used: {record:?}");
    let result = record.result.as_ref().expect("a result");
    assert_eq!(result.outcome, Outcome::Ok, "{record:?}");
    assert!(record.released.is_empty(), "given back: {record:?}");
    assert!(record.set_aside.is_empty(), "set aside: {record:?}");
    let shown = aie_in("local", root, &["approvals", "show", id]);
    assert!(shown.status.success(), "approvals show");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.starts_with(&format!("{id}  done")), "{text}");
    assert!(!text.contains("IN DOUBT"), "{text}");
    let vault = root.join("local/vault");
    assert!(
        vault.join(format!("Done/approvals/{id}.md")).is_file(),
        "the approval file is not in Done/approvals/"
    );
    assert!(
        vault.join(format!("Done/{task_id}.md")).is_file(),
        "the task is not in Done/"
    );

    // The intent and exactly one outcome, allowed and ok, for the same call; the chain holds.
    assert_eq!(records.len(), 2, "{records:#?}");
    let (intent, outcome) = (&records[0], &records[1]);
    assert_eq!(intent["status"], "in_doubt", "{records:#?}");
    assert_eq!(
        intent["reason"], "forwarding: the approval is marked used",
        "{records:#?}"
    );
    assert_eq!(outcome["decision"], "allowed", "{records:#?}");
    assert_eq!(outcome["status"], "ok", "{records:#?}");
    assert_eq!(outcome["reason"], "", "{records:#?}");
    assert_eq!(
        outcome["correlation_id"], intent["correlation_id"],
        "{records:#?}"
    );
    let verified = aie_in("local", root, &["audit", "verify"]);
    assert!(verified.status.success(), "aie audit verify");

    // The stack goes on serving: the same approval, asked again by a real client in the
    // same era, is refused as used and nothing more is sent.
    assert!(local.is_running(), "the local stack died");
    let health = http()
        .get(format!("http://{}/healthz", local.addr))
        .send()
        .expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
    let again = agent_call_in(&local.url, era, "email_send", &args);
    assert_eq!(again["is_error"], true, "{again}");
    assert!(
        again["text"]
            .as_str()
            .is_some_and(|t| t.contains("already used")),
        "{again}"
    );
    assert_eq!(sink.messages().len(), 1, "a second message");
    let status = local.terminate();
    assert!(status.success(), "the local stack exited with {status}");
}

/// A stateless (2026-07-28) direct `email_send` whose client hangs up mid-DATA still sends
/// once, is recorded sent and audited once.
#[test]
fn client_hanging_up_mid_send_does_not_cut_the_send_off_stateless() {
    client_hangs_up_mid_send("2026-07-28");
}

/// The same in a warmed legacy (2025-11-25) session, whose plain calls take the direct path.
#[test]
fn client_hanging_up_mid_send_does_not_cut_the_send_off_legacy() {
    client_hangs_up_mid_send("legacy");
}
