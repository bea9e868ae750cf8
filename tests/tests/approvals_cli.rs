//! The owner's commands, run as a person would: `aie approvals list|show|approve|reject` and
//! `aie audit verify`, on a real vault and state folder.

use std::process::{Command, Output};

use aie_e2e::{aie_bin, approve_as_shown, run};
use aie_shared::{
    EffectClass, Zone,
    audit::{AuditLog, ToolCall},
    vault::{AgentName, ApprovalId, ApprovalRequest, Domain, Vault},
};
use chrono::{Duration, Utc};
use serde_json::json;

struct Setup {
    _dir: tempfile::TempDir,
    vault: Vault,
    state: std::path::PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::init(dir.path().join("vault")).expect("init");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state");
    Setup {
        _dir: dir,
        vault,
        state,
    }
}

fn request(vault: &Vault, id: &str) {
    let payload = json!({"to": ["alice@example.com"], "subject": "Re: invoice", "body": "Thanks!"});
    let req = ApprovalRequest::new(
        ApprovalId::new(id).expect("id"),
        Domain::Email,
        "email_send",
        payload,
        AgentName::new("cloud").expect("agent"),
        Utc::now() + Duration::hours(72),
    )
    .with_preview("To alice@example.com: Thanks!");
    vault.write_approval_request(&req).expect("write request");
}

fn aie(s: &Setup, args: &[&str]) -> Output {
    let vault = s.vault.root().to_str().expect("utf-8").to_owned();
    let state = s.state.to_str().expect("utf-8").to_owned();
    run(Command::new(aie_bin())
        .args(args)
        .args(["--vault", &vault, "--state", &state]))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// list prints one request a line, id first; approve (with the hash `show` printed) and
/// reject move the files and need nothing more; a second approve is refused with a clear
/// line.
#[test]
fn owner_lists_approves_and_rejects() {
    let s = setup();
    request(&s.vault, "appr-1");
    request(&s.vault, "appr-2");

    let out = aie(&s, &["approvals", "list"]);
    assert!(out.status.success());
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("appr-1 ") && lines[1].starts_with("appr-2 "),
        "{lines:?}"
    );

    let out = aie(&s, &["approvals", "show", "appr-1"]);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("alice@example.com"),
        "{}",
        stdout(&out)
    );

    let (vault, state) = (
        s.vault.root().display().to_string(),
        s.state.display().to_string(),
    );
    let out = approve_as_shown("appr-1", &["--vault", &vault, "--state", &state]);
    assert!(out.status.success(), "approve failed");
    assert!(s.vault.root().join("Approved/appr-1.md").exists());

    let out = aie(
        &s,
        &["approvals", "reject", "appr-2", "--reason", "wrong tone"],
    );
    assert!(out.status.success(), "reject failed");
    assert!(s.vault.root().join("Rejected/appr-2.md").exists());

    let out = aie(&s, &["approvals", "list"]);
    assert!(stdout(&out).trim().is_empty(), "{}", stdout(&out));

    let out = aie(&s, &["approvals", "approve", "appr-2"]);
    assert!(
        !out.status.success(),
        "approving a rejected request must fail"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    assert!(
        s.state.join("approvals.jsonl").exists(),
        "the ledger lives in the state folder"
    );
    assert!(!s.vault.root().join("approvals.jsonl").exists());
}

/// Ids with path tricks are refused before anything is touched.
#[test]
fn approval_ids_with_path_tricks_are_refused() {
    let s = setup();
    for id in ["../x", "..", "a/b", "/etc/passwd"] {
        let out = aie(&s, &["approvals", "approve", id]);
        assert!(!out.status.success(), "{id}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("invalid approval id"),
            "{id}"
        );
    }
}

/// `aie audit verify` passes a clean chain and names the first broken record of an edited one.
#[test]
fn audit_verify_passes_clean_and_names_an_edited_record() {
    let s = setup();
    let log =
        AuditLog::open(&s.vault, &s.state, AgentName::new("local").expect("agent")).expect("open");
    for i in 0..5 {
        let call = ToolCall::new(
            Zone::Local,
            "owner",
            format!("c{i}"),
            "vault_list_tasks",
            EffectClass::Read,
            &json!({"i": i}),
        );
        log.append(call).expect("append");
    }
    let out = aie(&s, &["audit", "verify"]);
    assert!(out.status.success(), "clean chain must verify");

    let day = Utc::now().format("%Y-%m-%d").to_string();
    let file = s.vault.root().join(format!("Logs/local/{day}.jsonl"));
    let text = std::fs::read_to_string(&file).expect("log");
    let edited = text.replacen("\"c2\"", "\"cX\"", 1);
    assert_ne!(text, edited);
    std::fs::write(&file, edited).expect("edit");
    let out = aie(&s, &["audit", "verify"]);
    assert!(
        !out.status.success(),
        "an edited record must fail verification"
    );
    let report = stdout(&out);
    assert!(report.contains("edited"), "{report}");
}
