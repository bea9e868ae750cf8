//! A send whose outcome nobody knows, with real processes: `aie up --zone local` hosting
//! email-draft in-process, the official Python MCP SDK as the agent, and aiosmtpd
//! (`smtp_sink.py --drop-in-data 1`) as a mail server that takes the whole reply after DATA
//! and then drops the connection without answering. The message may or may not have been
//! delivered, so the approval is recorded in doubt: the agent is told `in doubt:`, the ledger
//! says `in_doubt` (neither given back nor set aside), the owner sees IN DOUBT in
//! `aie approvals show` and `list`, and the same approval never reaches the server again.

use std::path::Path;

use aie_e2e::zones::{
    ERAS, SinkOptions, SmtpSink, agent_call_in, aie_in, approve_in, audit_records, bare_remote,
    cloud_drafts_invoice_reply, up,
};
use aie_shared::{
    approvals::{Approvals, Outcome},
    vault::{ApprovalId, Vault},
};
use serde_json::json;

/// What the gateway's ledger note for a server's in-doubt answer starts with.
const IN_DOUBT_NOTE: &str = "the server says it may have happened: ";

/// Asserts that the local zone's ledger holds approval `id` in doubt: used, its result
/// `in_doubt` with the server's reason, never given back, its file still in `Approved/` for
/// the owner (not set aside, not done) and its task not done.
fn assert_recorded_in_doubt(root: &Path, id: &str, task_id: &str) {
    let vault_dir = root.join("local/vault");
    let vault = Vault::open(&vault_dir).expect("vault");
    let ledger = Approvals::open(vault, &root.join("local/state")).expect("ledger");
    let state = ledger.ledger().read().expect("read ledger");
    assert!(state.damage().is_none(), "{:?}", state.problems);
    let record = state
        .get(&ApprovalId::new(id).expect("id"))
        .expect("in the ledger");
    assert!(record.used_at.is_some(), "not marked used: {record:?}");
    let result = record.result.as_ref().expect("a result");
    assert_eq!(result.outcome, Outcome::InDoubt, "{record:?}");
    assert!(
        result.detail.starts_with(IN_DOUBT_NOTE) && result.detail.contains("in doubt:"),
        "{record:?}"
    );
    assert!(record.released.is_empty(), "given back: {record:?}");
    assert!(record.set_aside.is_empty(), "set aside: {record:?}");
    assert!(
        vault_dir.join(format!("Approved/{id}.md")).is_file(),
        "the approval file left Approved/"
    );
    assert!(
        !vault_dir.join(format!("Done/{task_id}.md")).exists(),
        "the task moved to Done/"
    );
}

/// The scenario, with the send that meets the dropped connection made in `era`.
fn connection_dropped_mid_data(era: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let remote = bare_remote(root);
    let drafted = cloud_drafts_invoice_reply(root, &remote, "in doubt test reply");
    let (id, task_id) = (drafted.approval_id.as_str(), drafted.task_id.as_str());
    let sink = SmtpSink::start_with(
        root,
        SinkOptions {
            drop_in_data: 1,
            ..SinkOptions::default()
        },
    );
    let mut local = up("local", root, &remote, &["--smtp", &sink.url()], &[]);
    let approved = approve_in("local", root, id);
    assert!(approved.status.success(), "approve");
    let args = json!({"approval_id": id});

    // The server takes the whole reply, then the connection is gone: no answer at all.
    let answer = agent_call_in(&local.url, era, "email_send", &args);
    assert_eq!(answer["is_error"], true, "{answer}");
    let why = answer["text"].as_str().unwrap_or_default();
    assert!(
        why.starts_with(&format!(
            "email_send: in doubt: SMTP server {}: the connection failed while the message was being sent",
            sink.url()
        )),
        "{why}"
    );
    assert_eq!(answer["meta"]["dev.aie/inDoubt"], true, "{answer}");
    let dropped = sink.dropped();
    assert_eq!(dropped.len(), 1, "the server did not see exactly one DATA");
    assert!(
        dropped[0].contains(&format!("<aie.{id}@")),
        "not this reply: {}",
        dropped[0]
    );
    assert!(sink.messages().is_empty(), "a message was accepted");
    assert_recorded_in_doubt(root, id, task_id);

    // Never again by itself, in either era: the ledger refuses before email-draft runs.
    for again_era in ERAS {
        let again = agent_call_in(&local.url, again_era, "email_send", &args);
        assert_eq!(again["is_error"], true, "retried in {again_era}: {again}");
        let why = again["text"].as_str().unwrap_or_default();
        assert!(
            why.contains(&format!("approval `{id}` refused"))
                && why.contains("whether it happened is unknown")
                && why.contains("it is never retried"),
            "{why}"
        );
    }
    assert_eq!(sink.dropped().len(), 1, "a retry reached the server");
    assert!(sink.messages().is_empty(), "a retry was delivered");
    assert_recorded_in_doubt(root, id, task_id);

    // The owner is told, by the ledger and by the send journal.
    let shown = aie_in("local", root, &["approvals", "show", id]);
    assert!(shown.status.success(), "approvals show");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.starts_with(&format!("{id}  IN DOUBT")), "{text}");
    assert!(text.contains("result: in doubt at "), "{text}");
    assert!(text.contains("it is never retried"), "{text}");
    assert!(
        text.contains("the email server's send journal holds this send IN DOUBT"),
        "{text}"
    );
    let listed = aie_in("local", root, &["approvals", "list"]);
    assert!(listed.status.success(), "approvals list");
    let text = String::from_utf8_lossy(&listed.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{id}  IN DOUBT  email_send")))
        .unwrap_or_else(|| panic!("list does not show the approval in doubt: {text}"));
    assert!(
        line.contains(&format!("result in doubt: {IN_DOUBT_NOTE}")),
        "{line}"
    );
    assert!(line.contains("the send journal says"), "{line}");
    assert!(line.contains("never retried"), "{line}");

    // The audit log has the outcome, and its chain holds.
    let outcomes: Vec<_> = audit_records(root, "local")
        .into_iter()
        .filter(|r| {
            r["tool"] == "email_send"
                && r["approval_id"] == id
                && r["status"] == "in_doubt"
                && r["reason"]
                    .as_str()
                    .is_some_and(|t| t.starts_with(IN_DOUBT_NOTE))
        })
        .collect();
    assert_eq!(outcomes.len(), 1, "{outcomes:#?}");
    let verified = aie_in("local", root, &["audit", "verify"]);
    assert!(verified.status.success(), "aie audit verify");

    assert!(local.is_running(), "the local stack died");
    let status = local.terminate();
    assert!(status.success(), "the local stack exited with {status}");
}

/// The connection dropped mid-DATA under the legacy handshake: in doubt, never retried.
#[test]
fn connection_dropped_mid_data_is_in_doubt_and_never_retried_legacy() {
    connection_dropped_mid_data("legacy");
}

/// The same, stateless (2026-07-28): the in-process router's answer carries the mark too.
#[test]
fn connection_dropped_mid_data_is_in_doubt_and_never_retried_stateless() {
    connection_dropped_mid_data("2026-07-28");
}
