//! Issue 5 with real processes: `aie up --zone local` hosting email-draft in-process, the
//! official Python MCP SDK as the agent, aiosmtpd as the mail server. When `email_send`
//! certifies that nothing ran (the SMTP server is down, or the arguments are refused), the
//! approval is given back: still in `Approved/`, unused in the ledger, its task not done,
//! and the audit log says so. The same approval then sends exactly once. Over HTTP the
//! same answer is not believed: the gateway does not give approvals back for upstreams.

use std::path::PathBuf;

use aie_e2e::{
    Aie, shown_hash,
    zones::{
        SmtpSink, TOKEN, agent_call_in, aie_in, approve_in, audit_records, bare_remote,
        cloud_drafts_invoice_reply, free_port, up,
    },
};
use aie_shared::{
    approvals::{Approvals, Outcome},
    vault::{AgentName, ApprovalId, ApprovalRequest, Domain, Vault},
};
use serde_json::{Value, json};

/// The cloud zone fetched, drafted and synced a reply; the local zone runs with `smtp`
/// and its owner approved the reply.
struct Local {
    _dir: tempfile::TempDir,
    root: PathBuf,
    remote: PathBuf,
    task_id: String,
    approval_id: String,
    vault: PathBuf,
    state: PathBuf,
}

impl Local {
    /// Drafts in the cloud zone, then returns before the local zone starts.
    fn drafted() -> Local {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let remote = bare_remote(&root);
        let drafted = cloud_drafts_invoice_reply(&root, &remote, "release test reply");
        Local {
            vault: root.join("local/vault"),
            state: root.join("local/state"),
            root,
            remote,
            task_id: drafted.task_id,
            approval_id: drafted.approval_id,
            _dir: dir,
        }
    }

    /// `aie ARGS --vault V --state S`.
    fn aie(&self, args: &[&str]) -> std::process::Output {
        aie_in("local", &self.root, args)
    }

    fn approve(&self) {
        let out = approve_in("local", &self.root, &self.approval_id);
        assert!(out.status.success(), "approve");
    }

    fn exists(&self, rel: &str) -> bool {
        self.vault.join(rel).is_file()
    }

    fn approved_file(&self) -> String {
        format!("Approved/{}.md", self.approval_id)
    }

    /// Asserts the approval is in `Approved/`, unused in the ledger with `released` uses
    /// given back, and its task not done.
    fn assert_given_back(&self, released: usize) {
        assert!(
            self.exists(&self.approved_file()),
            "the approval file moved"
        );
        assert!(
            !self.exists(&format!("Done/{}.md", self.task_id)),
            "the task moved to Done/"
        );
        let vault = Vault::open(&self.vault).expect("vault");
        let ledger = Approvals::open(vault, &self.state).expect("ledger");
        let state = ledger.ledger().read().expect("read ledger");
        assert!(state.damage().is_none(), "{:?}", state.problems);
        let record = state
            .get(&ApprovalId::new(self.approval_id.as_str()).expect("id"))
            .expect("in the ledger");
        assert!(record.used_at.is_none(), "still marked used: {record:?}");
        assert!(record.result.is_none(), "a result: {record:?}");
        assert_eq!(record.released.len(), released, "{record:?}");
        let shown = self.aie(&["approvals", "show", &self.approval_id]);
        let text = String::from_utf8_lossy(&shown.stdout);
        assert!(
            text.starts_with(&format!("{}  approved", self.approval_id)),
            "{text}"
        );
        assert!(text.contains("given back at"), "{text}");
    }

    /// Every audit record the local zone wrote.
    fn audit(&self) -> Vec<Value> {
        audit_records(&self.root, "local")
    }

    /// The outcome records of `email_send` under this approval that say nothing ran.
    fn not_executed_records(&self) -> Vec<Value> {
        self.audit()
            .into_iter()
            .filter(|r| {
                r["tool"] == "email_send"
                    && r["approval_id"] == self.approval_id.as_str()
                    && r["decision"] == "allowed"
                    && r["status"] == "error"
                    && r["reason"].as_str().is_some_and(|t| {
                        t.starts_with("not executed: ")
                            && t.ends_with("; the approval stays valid and unused")
                    })
            })
            .collect()
    }

    fn audit_verifies(&self) {
        let out = self.aie(&["audit", "verify"]);
        assert!(
            out.status.success(),
            "aie audit verify: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// After the one good send: file and task in `Done/`, a third call refused as used,
    /// the audit chain intact.
    fn assert_sent_once(&self, url: &str, sink: &SmtpSink) {
        assert_eq!(sink.messages().len(), 1, "exactly one message");
        assert!(
            self.exists(&format!("Done/approvals/{}.md", self.approval_id)),
            "the approval file is not in Done/approvals/"
        );
        assert!(
            self.exists(&format!("Done/{}.md", self.task_id)),
            "the task is not in Done/"
        );
        let args = json!({"approval_id": self.approval_id});
        let third = agent_call_in(url, "legacy", "email_send", &args);
        assert_eq!(third["is_error"], true, "{third}");
        let why = third["text"].as_str().unwrap_or_default();
        assert!(why.contains("already used"), "{why}");
        assert_eq!(sink.messages().len(), 1, "a second message");
        self.audit_verifies();
    }
}

/// SMTP down: `email_send` through the local gateway is a clear `not sent:` error, and the
/// approval is given back (in both protocol eras), and so is what it spent of the budgets:
/// with `emails_per_hour = 1`, two attempts that sent nothing leave the one email of the
/// hour for the real send. With the server up, the same approval sends exactly one message,
/// moves with its task to `Done/`, and a third call is refused.
#[test]
fn smtp_down_gives_the_approval_back_then_it_sends_once() {
    let zones = Local::drafted();
    // A port nothing listens on yet: the SMTP server is down.
    let port = free_port();
    let smtp = format!("smtp://127.0.0.1:{port}");
    let config = zones.root.join("aie.toml");
    std::fs::write(&config, "[limits]\nemails_per_hour = 1\n").expect("config");
    let config = config.display().to_string();
    let local = up(
        "local",
        &zones.root,
        &zones.remote,
        &["--smtp", &smtp, "--config", &config],
        &[],
    );
    zones.approve();
    let args = json!({"approval_id": zones.approval_id});

    let down = agent_call_in(&local.url, "legacy", "email_send", &args);
    assert_eq!(down["is_error"], true, "{down}");
    let why = down["text"].as_str().unwrap_or_default();
    assert!(
        why.contains(&format!("not sent: SMTP server {smtp}")),
        "{why}"
    );
    zones.assert_given_back(1);
    let records = zones.not_executed_records();
    assert_eq!(records.len(), 1, "{records:#?}");
    assert!(
        records[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not sent:")),
        "{records:#?}"
    );

    // Again, stateless (2026-07-28): the in-process router's answer carries the mark too.
    let down = agent_call_in(&local.url, "2026-07-28", "email_send", &args);
    assert_eq!(down["is_error"], true, "{down}");
    zones.assert_given_back(2);
    assert_eq!(zones.not_executed_records().len(), 2);
    zones.audit_verifies();

    let sink = SmtpSink::start_on(port, &zones.root);
    let sent = agent_call_in(&local.url, "legacy", "email_send", &args);
    assert_eq!(sent["is_error"], false, "{sent}");
    assert_eq!(sent["structured"]["status"], "sent", "{sent}");
    zones.assert_sent_once(&local.url, &sink);
}

/// `{approval_id, ...the approved payload}` passes the gateway's check (it hashes to the
/// approved payload) but email_send takes only `approval_id`: a clear invalid-arguments
/// error, nothing sent, the approval given back; then `{approval_id}` sends exactly once.
#[test]
fn restated_payload_is_refused_by_email_send_and_the_approval_stays_usable() {
    let zones = Local::drafted();
    let sink = SmtpSink::start(&zones.root);
    let local = up(
        "local",
        &zones.root,
        &zones.remote,
        &["--smtp", &sink.url()],
        &[],
    );
    zones.approve();
    let approved = std::fs::read_to_string(zones.vault.join(zones.approved_file()))
        .expect("the approved file");
    let request = ApprovalRequest::parse(&approved).expect("an approval request");
    let mut restated = request
        .meta
        .payload
        .as_object()
        .cloned()
        .expect("an object");
    restated.insert("approval_id".into(), json!(zones.approval_id));

    let refused = agent_call_in(
        &local.url,
        "2026-07-28",
        "email_send",
        &Value::Object(restated.clone()),
    );
    assert_eq!(refused["is_error"], true, "{refused}");
    let why = refused["text"].as_str().unwrap_or_default();
    assert!(
        why.starts_with("invalid arguments for email_send: unknown field"),
        "{why}"
    );
    assert!(sink.messages().is_empty(), "a message left");
    zones.assert_given_back(1);
    assert_eq!(zones.not_executed_records().len(), 1);

    let refused = agent_call_in(&local.url, "legacy", "email_send", &Value::Object(restated));
    assert_eq!(refused["is_error"], true, "{refused}");
    zones.assert_given_back(2);

    let sent = agent_call_in(
        &local.url,
        "legacy",
        "email_send",
        &json!({"approval_id": zones.approval_id}),
    );
    assert_eq!(sent["is_error"], false, "{sent}");
    zones.assert_sent_once(&local.url, &sink);
    let listed = zones.aie(&["approvals", "list"]);
    assert!(listed.status.success());
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains(&zones.approval_id),
        "a sent approval is neither pending nor in doubt"
    );
}

/// `aie serve gateway --zone local` fronting `aie serve email-draft` over HTTP, SMTP down:
/// email-draft marks its `not sent:` answer, but an HTTP upstream is not believed about
/// that, so the approval is spent as before (recorded `error`, set aside), never reusable.
#[test]
fn http_upstream_is_not_believed_about_not_executed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = |p: &std::path::Path| p.display().to_string();
    let vault = Vault::init(dir.path().join("vault")).expect("vault");
    let (state, email_state) = (dir.path().join("state"), dir.path().join("email-state"));
    let smtp = format!("smtp://127.0.0.1:{}", free_port());
    let email = Aie::start(&[
        "serve",
        "email-draft",
        "--listen",
        "127.0.0.1:0",
        "--vault",
        &s(vault.root()),
        "--state",
        &s(&email_state),
        "--smtp",
        &smtp,
        "--agent",
        "local",
    ]);
    let gateway = Aie::start_with_env(
        &[
            "serve",
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--zone",
            "local",
            "--vault",
            &s(vault.root()),
            "--state",
            &s(&state),
            "--agent",
            "local",
            "--upstream",
            &format!("email={},prefix=false", email.url),
        ],
        &[("AIE_TOKEN", TOKEN), ("USER", "owner")],
    );
    let id = ApprovalId::new("reply-http-1").expect("id");
    let payload = json!({
        "from": "owner@example.com",
        "to": ["alice@example.org"],
        "subject": "Re: Invoice 42",
        "body": "Paid.",
        "message_id": format!("<aie.{id}@example.com>"),
    });
    vault
        .write_approval_request(&ApprovalRequest::new(
            id.clone(),
            Domain::Email,
            "email_send",
            payload,
            AgentName::new("cloud").expect("agent"),
            chrono::Utc::now() + chrono::TimeDelta::hours(1),
        ))
        .expect("draft");
    let approvals = Approvals::open(vault.clone(), &state).expect("ledger");
    approvals
        .approve(&id, "owner", &shown_hash(&approvals, &id))
        .expect("approve");

    let down = agent_call_in(
        &gateway.url,
        "legacy",
        "email_send",
        &json!({"approval_id": id.as_str()}),
    );
    assert_eq!(down["is_error"], true, "{down}");
    let why = down["text"].as_str().unwrap_or_default();
    assert!(why.contains("not sent: SMTP server"), "{why}");
    let state_now = approvals.ledger().read().expect("ledger");
    let record = state_now.get(&id).expect("record");
    assert!(
        record.released.is_empty(),
        "given back for an upstream: {record:?}"
    );
    assert!(record.used_at.is_some());
    assert_eq!(
        record.result.as_ref().map(|r| r.outcome),
        Some(Outcome::Error)
    );
    assert!(vault.root().join(format!("Quarantine/{id}.md")).is_file());
    let again = agent_call_in(
        &gateway.url,
        "legacy",
        "email_send",
        &json!({"approval_id": id.as_str()}),
    );
    assert_eq!(again["is_error"], true, "{again}");
    assert!(
        again["text"]
            .as_str()
            .is_some_and(|t| t.contains("already used")),
        "{again}"
    );
}
