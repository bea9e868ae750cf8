//! Issue 10, build item 3, with real processes: `aie up --zone cloud` drafts two replies
//! through a bare git remote; `aie up --zone local` (with `[approvals] accept_hand_moves =
//! true`) sends through aiosmtpd; the official Python MCP SDK is the agent; plain `git` is
//! the owner's other tool and the attacker's. Only the owner's own hand, on this machine,
//! approves: a pending request the owner moves into `Approved/` with `mv` is adopted before
//! the sync commits it and sends exactly once; a request an attacker's clone moved into
//! `Approved/` and pushed, brought into the local vault by a plain `git pull` (as
//! obsidian-git does), is set aside and sends nothing.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use aie_e2e::{
    maildir_holding, run,
    zones::{SmtpSink, agent_call, agent_ok, bare_remote, cloud_drafts, up},
};
use aie_shared::{
    approvals::Approvals,
    vault::{ApprovalId, Vault},
};
use serde_json::json;

/// A mail the cloud zone fetches and drafts a reply to.
fn mail(n: u32) -> String {
    format!(
        "From: Alice <alice@example.org>\r\n\
To: Owner <owner@example.com>\r\n\
Subject: Invoice {n}\r\n\
Message-ID: <inv{n}@example.org>\r\n\
\r\n\
Please pay invoice {n} by Friday.\r\n"
    )
}

/// Runs plain `git ARGS` in `dir` as `who`; fails the test when git does.
fn git(dir: &Path, who: &str, args: &[&str]) {
    let out = run(Command::new("git")
        .args(["-c", &format!("user.name={who}")])
        .args(["-c", &format!("user.email={who}@example.invalid")])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .current_dir(dir));
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the local ledger says about `id`: (approved, used).
fn ledger_of(vault: &Path, state: &Path, id: &str) -> (bool, bool) {
    let approvals = Approvals::open(Vault::open(vault).expect("vault"), state).expect("ledger");
    let ledger = approvals.ledger().read().expect("read");
    let record = ledger.get(&ApprovalId::new(id).expect("id")).cloned();
    record.map_or((false, false), |r| {
        (r.approved.is_some(), r.used_at.is_some())
    })
}

/// The owner's `mv` into `Approved/` sends exactly one mail; a move that came through a
/// commit (an attacker's push, pulled with plain `git pull`) is set aside and sends none.
#[test]
fn only_the_owners_own_move_approves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let remote = bare_remote(&root);

    // The cloud drafts two replies and pushes them as pending requests.
    let maildir = maildir_holding(&root.join("maildir"), "1.invoice", &mail(1));
    let (mine, theirs) = {
        let cloud = up(
            "cloud",
            &root,
            &remote,
            &["--maildir", &maildir.display().to_string()],
            &[],
        );
        let first = cloud_drafts(&cloud, "Paid, thanks (one).");
        maildir_holding(&maildir, "2.invoice", &mail(2));
        let second = cloud_drafts(&cloud, "Paid, thanks (two).");
        (first.approval_id, second.approval_id)
    };

    let sink = SmtpSink::start(&root);
    let config = root.join("local.toml");
    std::fs::write(
        &config,
        "[approvals]\naccept_hand_moves = true\n[sync]\ninterval_secs = 3600\n",
    )
    .expect("config");
    let local = up(
        "local",
        &root,
        &remote,
        &[
            "--smtp",
            &sink.url(),
            "--config",
            &config.display().to_string(),
        ],
        &[],
    );
    let vault: PathBuf = root.join("local/vault");
    let state: PathBuf = root.join("local/state");
    for id in [&mine, &theirs] {
        assert!(
            vault
                .join(format!("Pending_Approval/email/{id}.md"))
                .is_file(),
            "{id} did not reach the local vault"
        );
    }

    // The owner moves one request by hand; the sync that commits the move adopts it first.
    std::fs::rename(
        vault.join(format!("Pending_Approval/email/{mine}.md")),
        vault.join(format!("Approved/{mine}.md")),
    )
    .expect("mv");
    agent_ok(&local.url, "vault_sync", &json!({}));
    assert_eq!(ledger_of(&vault, &state, &mine), (true, false));
    let sent = agent_ok(&local.url, "email_send", &json!({"approval_id": mine}));
    assert_eq!(sent["status"], "sent", "{sent}");
    assert_eq!(sink.messages().len(), 1, "exactly one message");
    assert!(sink.messages()[0].contains("Paid, thanks (one)."));

    // The attacker's clone moves the other request into Approved/ and pushes; the owner's
    // obsidian-git (here: plain git) pulls it into the local vault.
    let attacker = root.join("attacker");
    git(
        &root,
        "mallory",
        &[
            "clone",
            "-q",
            &remote.display().to_string(),
            &attacker.display().to_string(),
        ],
    );
    git(
        &attacker,
        "mallory",
        &[
            "mv",
            &format!("Pending_Approval/email/{theirs}.md"),
            &format!("Approved/{theirs}.md"),
        ],
    );
    git(&attacker, "mallory", &["commit", "-q", "-m", "approve"]);
    git(&attacker, "mallory", &["push", "-q", "origin", "main"]);
    git(
        &vault,
        "owner",
        &["pull", "-q", "--no-rebase", "--no-edit", "origin", "main"],
    );
    assert!(vault.join(format!("Approved/{theirs}.md")).is_file());

    // Neither the sync nor the call adopts it: set aside, nothing sent.
    agent_ok(&local.url, "vault_sync", &json!({}));
    let refused = agent_call(&local.url, "email_send", &json!({"approval_id": theirs}));
    assert_eq!(refused["is_error"], true, "{refused}");
    let why = refused["text"].as_str().unwrap_or_default();
    assert!(why.contains("no approval was given"), "{why}");
    assert!(
        why.contains(&format!("set aside to Quarantine/{theirs}.md")),
        "{why}"
    );
    assert!(vault.join(format!("Quarantine/{theirs}.md")).is_file());
    assert_eq!(ledger_of(&vault, &state, &theirs), (false, false));
    assert_eq!(sink.messages().len(), 1, "the pulled request was sent");
}
