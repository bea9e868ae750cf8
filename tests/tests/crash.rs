//! Invariant 7 with real processes: the local stack is killed (the `AIE_TEST_CRASH` test
//! hook aborts it, as SIGKILL would) right before and right after the SMTP send. On restart
//! nothing is sent a second time, and the owner is shown the approval in doubt by
//! `aie approvals show` and `aie approvals list`.

use aie_e2e::zones::{
    SmtpSink, agent_call, aie_in, approve_in, bare_remote, cloud_drafts_invoice_reply, up,
};
use serde_json::json;

/// Crashes local at `point`, restarts it, and returns the messages the sink holds.
fn crash_at(point: &str) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let remote = bare_remote(root);
    let sink = SmtpSink::start(root);
    let drafted = cloud_drafts_invoice_reply(root, &remote, "crash test reply");

    let smtp = sink.url();
    let mut local = up(
        "local",
        root,
        &remote,
        &["--smtp", &smtp],
        &[("AIE_TEST_CRASH", point)],
    );
    let approve = approve_in("local", root, &drafted.approval_id);
    assert!(approve.status.success());
    let args = json!({"approval_id": drafted.approval_id});
    // The process dies during the call: the agent sees an error, never a success.
    let _ = std::process::Command::new(aie_e2e::peer("AIE_PYTHON"))
        .arg(aie_e2e::peers_dir().join("mcp_client.py"))
        .args([
            local.url.as_str(),
            "legacy",
            "email_send",
            &args.to_string(),
        ])
        .arg("--header")
        .arg(format!("Authorization=Bearer {}", aie_e2e::zones::TOKEN))
        .output();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while local.is_running() {
        assert!(
            std::time::Instant::now() < deadline,
            "the crash hook did not fire"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let before_restart = sink.messages().len();

    let local = up("local", root, &remote, &["--smtp", &smtp], &[]);
    let again = agent_call(&local.url, "email_send", &args);
    assert_eq!(
        again["is_error"], true,
        "sent again after a crash at {point}: {again}"
    );
    assert_eq!(
        sink.messages().len(),
        before_restart,
        "a second message after {point}"
    );

    let shown = aie_in("local", root, &["approvals", "show", &drafted.approval_id]);
    let text = String::from_utf8_lossy(&shown.stdout).to_uppercase();
    assert!(text.contains("IN DOUBT"), "the owner is not told: {text}");
    assert!(
        text.contains("THE EMAIL SERVER'S SEND JOURNAL HOLDS THIS SEND IN DOUBT"),
        "show does not give the send journal's view: {text}"
    );

    // `list` names it too, id first, with what the ledger and the send journal know.
    let listed = aie_in("local", root, &["approvals", "list"]);
    assert!(listed.status.success());
    let text = String::from_utf8_lossy(&listed.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{}  IN DOUBT  email_send", drafted.approval_id)))
        .unwrap_or_else(|| panic!("list does not show the approval in doubt: {text}"));
    assert!(line.contains("used, no result recorded"), "{line}");
    assert!(line.contains("the send journal says"), "{line}");
    assert!(line.contains("never retried"), "{line}");
    drop(local);
    sink.messages().len()
}

#[test]
fn crash_before_the_smtp_send_sends_nothing_and_is_in_doubt() {
    assert_eq!(crash_at("before_send"), 0);
}

#[test]
fn crash_after_the_smtp_send_sends_once_and_is_in_doubt() {
    assert_eq!(crash_at("after_send"), 1);
}
