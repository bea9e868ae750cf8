//! The shared executor under SIGKILL, with email as the effect against a real SMTP server
//! (aiosmtpd, `tests/peers/smtp_sink.py`): the process is stopped at each crash point
//! (`AIE_TEST_PAUSE`, `aie_shared::executor::crash`) and killed there with SIGKILL by the
//! test, then restarted and asked to send again.
//!
//! | point | the sink holds | after the restart |
//! |---|---|---|
//! | `before_journal` | nothing | the ledger holds the use in doubt; the send journal never started it (said so) |
//! | `after_journal` | nothing | in doubt: the journal's `started` has no outcome |
//! | `after_effect` | one message | in doubt, likewise |
//! | `before_outcome` | one message | in doubt, likewise |
//! | `after_outcome` | one message | settled: the journal's `sent` is recorded `ok` in the ledger at start |
//!
//! Never a second message, and what is unknown is shown by `aie approvals list`. SMTP cannot
//! be asked whether a message arrived, so email's doubts stay for the owner; the read-back
//! that settles a doubt when the service can tell is shown with a fake effect in
//! `shared/src/executor/tests.rs`.
//!
//! The same points against `aie serve email-draft` alone (no gateway, no ledger: the
//! executor's journal is the only lock) show that the journal by itself never sends twice.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use aie_e2e::{
    Aie,
    zones::{
        SmtpSink, TOKEN, agent_call, agent_call_in, aie_in, approve_in, bare_remote,
        cloud_drafts_invoice_reply, up,
    },
};
use aie_shared::vault::{AgentName, ApprovalId, ApprovalRequest, Domain, Vault};
use serde_json::{Value, json};

/// The Python agent calling `tool` at `url` in the background (its call never returns while
/// the executor is stopped).
fn call_in_background(url: &str, tool: &str, args: &Value, token: Option<&str>) -> Child {
    let mut cmd = Command::new(aie_e2e::peer("AIE_PYTHON"));
    cmd.arg(aie_e2e::peers_dir().join("mcp_client.py"))
        .args([url, "legacy", tool, &args.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(token) = token {
        cmd.arg("--header")
            .arg(format!("Authorization=Bearer {token}"));
    }
    cmd.spawn().expect("python agent")
}

/// Waits until the stopped process wrote `point` into `marker`, then SIGKILLs it and waits
/// for it to be gone.
fn kill_when_stopped_at(process: &mut Aie, marker: &Path, point: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(marker).ok().as_deref() != Some(point) {
        assert!(
            Instant::now() < deadline,
            "the executor did not stop at {point}"
        );
        assert!(process.is_running(), "the process ended before {point}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = Command::new("kill")
        .args(["-KILL", &process.pid().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while process.is_running() {
        assert!(Instant::now() < deadline, "SIGKILL did not stop it");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The full local stack (`aie up --zone local`: gateway, guard, ledger, executor) killed at
/// `point` during an approved `email_send`; returns the messages the sink got in all.
fn kill_local_stack_at(point: &str) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let remote = bare_remote(root);
    let sink = SmtpSink::start(root);
    let drafted = cloud_drafts_invoice_reply(root, &remote, "executor matrix reply");
    let id = drafted.approval_id.clone();
    let smtp = sink.url();
    let marker = root.join("paused-at");
    let marker_str = marker.display().to_string();
    let mut local = up(
        "local",
        root,
        &remote,
        &["--smtp", &smtp],
        &[
            ("AIE_TEST_PAUSE", point),
            ("AIE_TEST_PAUSE_FILE", &marker_str),
        ],
    );
    assert!(approve_in("local", root, &id).status.success());
    let args = json!({"approval_id": id});
    let mut agent = call_in_background(&local.url, "email_send", &args, Some(TOKEN));
    kill_when_stopped_at(&mut local, &marker, point);
    let _ = agent.kill();
    let _ = agent.wait();
    let sent = sink.messages().len();
    let expected = usize::from(!matches!(point, "before_journal" | "after_journal"));
    assert_eq!(sent, expected, "messages when killed at {point}");

    // Restarted: asked again, it sends nothing more.
    let local = up("local", root, &remote, &["--smtp", &smtp], &[]);
    let again = agent_call(&local.url, "email_send", &args);
    assert_eq!(again["is_error"], true, "sent again after {point}: {again}");
    assert_eq!(
        sink.messages().len(),
        sent,
        "a second message after {point}"
    );
    let again_modern = agent_call_in(&local.url, "2026-07-28", "email_send", &args);
    assert_eq!(again_modern["is_error"], true, "{again_modern}");

    // The owner is told what is unknown, id first.
    let listed = aie_in("local", root, &["approvals", "list"]);
    assert!(listed.status.success());
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{id}  IN DOUBT  email_send")));
    match point {
        "after_outcome" => {
            assert!(
                line.is_none(),
                "settled by the journal, still listed: {text}"
            );
            let shown = aie_in("local", root, &["approvals", "show", &id, "--json"]);
            let view: Value = serde_json::from_slice(&shown.stdout).expect("show --json");
            assert_eq!(view["status"], "done", "{view:#}");
        }
        "before_journal" => {
            let line = line.unwrap_or_else(|| panic!("not listed in doubt: {text}"));
            assert!(line.contains("used, no result recorded"), "{line}");
            assert!(
                line.contains("send journal never started it"),
                "the journal's view is missing: {line}"
            );
        }
        _ => {
            let line = line.unwrap_or_else(|| panic!("not listed in doubt: {text}"));
            assert!(line.contains("used, no result recorded"), "{line}");
            assert!(line.contains("the send journal says"), "{line}");
            assert!(!line.contains("never started"), "{line}");
            assert!(line.contains("never retried"), "{line}");
        }
    }
    drop(local);
    sink.messages().len()
}

#[test]
fn sigkill_before_the_journal_sends_nothing_and_the_ledger_holds_it_in_doubt() {
    assert_eq!(kill_local_stack_at("before_journal"), 0);
}

#[test]
fn sigkill_after_the_journal_sends_nothing_and_is_in_doubt() {
    assert_eq!(kill_local_stack_at("after_journal"), 0);
}

#[test]
fn sigkill_after_the_smtp_send_sends_once_and_is_in_doubt() {
    assert_eq!(kill_local_stack_at("after_effect"), 1);
}

#[test]
fn sigkill_before_the_outcome_is_written_sends_once_and_is_in_doubt() {
    assert_eq!(kill_local_stack_at("before_outcome"), 1);
}

#[test]
fn sigkill_after_the_outcome_sends_once_and_the_journal_settles_the_ledger() {
    assert_eq!(kill_local_stack_at("after_outcome"), 1);
}

/// `aie serve email-draft --vault V --state S --smtp URL` with `env`.
fn serve_email(vault: &Vault, state: &Path, smtp: &str, env: &[(&str, &str)]) -> Aie {
    let s = |p: &Path| p.display().to_string();
    Aie::start_with_env(
        &[
            "serve",
            "email-draft",
            "--listen",
            "127.0.0.1:0",
            "--vault",
            &s(vault.root()),
            "--state",
            &s(state),
            "--smtp",
            smtp,
            "--agent",
            "local",
        ],
        env,
    )
}

/// `aie serve email-draft` alone, killed at `point`: no gateway and no ledger, so the send
/// journal is the only thing between a restart and a second message.
fn kill_server_alone_at(point: &str) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::init(dir.path().join("vault")).expect("vault");
    let state = dir.path().join("state");
    let sink = SmtpSink::start(dir.path());
    let id = ApprovalId::new("reply-alone-1").expect("id");
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
    // The owner's approval as a file move (no ledger in this state folder).
    std::fs::rename(
        vault.root().join(format!("Pending_Approval/email/{id}.md")),
        vault.root().join(format!("Approved/{id}.md")),
    )
    .expect("approve");
    let marker = dir.path().join("paused-at");
    let marker_str = marker.display().to_string();
    let smtp = sink.url();
    let mut server = serve_email(
        &vault,
        &state,
        &smtp,
        &[
            ("AIE_TEST_PAUSE", point),
            ("AIE_TEST_PAUSE_FILE", &marker_str),
        ],
    );
    let args = json!({"approval_id": id.as_str()});
    let mut agent = call_in_background(&server.url, "email_send", &args, None);
    kill_when_stopped_at(&mut server, &marker, point);
    let _ = agent.kill();
    let _ = agent.wait();
    let sent = sink.messages().len();

    let server = serve_email(&vault, &state, &smtp, &[]);
    let again = agent_call_in(&server.url, "legacy", "email_send", &args);
    assert_eq!(
        sink.messages().len(),
        sent,
        "a second message after {point}"
    );
    // `started` is on disk at both points: in doubt, whether or not the message left.
    assert_eq!(again["is_error"], true, "{again}");
    let why = again["text"].as_str().unwrap_or_default();
    assert!(why.contains("in doubt:"), "{why}");
    drop(server);
    // The owner sees it in `aie approvals list`, from the journal alone.
    let listed = aie_e2e::zones::aie(&[
        "approvals",
        "list",
        "--vault",
        &vault.root().display().to_string(),
        "--state",
        &state.display().to_string(),
    ]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("{id}  IN DOUBT"))
                && l.contains("the send journal says")),
        "{text}"
    );
    sink.messages().len()
}

#[test]
fn alone_sigkill_after_the_journal_sends_nothing_then_the_journal_refuses() {
    // `started` without an outcome: in doubt, so the message is never sent at all.
    assert_eq!(kill_server_alone_at("after_journal"), 0);
}

#[test]
fn alone_sigkill_after_the_smtp_send_never_sends_a_second_message() {
    assert_eq!(kill_server_alone_at("after_effect"), 1);
}
