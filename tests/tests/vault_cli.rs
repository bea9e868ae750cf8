//! `aie vault ...` as the owner runs it: init, check, status, and sync between two vaults
//! through a bare git remote.

use std::process::{Command, Output};

use aie_e2e::{aie_bin, run};

fn aie(args: &[&str]) -> Output {
    run(Command::new(aie_bin()).args(args))
}

/// Two replicas sync through a bare remote: a note written in one reaches the other, and a
/// wrong remote is one clear line that leaves the vault as it was.
#[test]
fn vault_sync_carries_notes_between_replicas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let remote = dir.path().join("remote.git");
    assert!(
        Command::new("git")
            .args(["init", "-q", "--bare"])
            .arg(&remote)
            .status()
            .expect("git")
            .success()
    );
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let (a, b, remote) = (
        a.to_str().expect("utf-8"),
        b.to_str().expect("utf-8"),
        remote.to_str().expect("utf-8"),
    );

    assert!(
        aie(&["vault", "sync", "--vault", a, "--remote", remote])
            .status
            .success()
    );
    assert!(
        aie(&[
            "vault", "sync", "--vault", b, "--remote", remote, "--zone", "cloud"
        ])
        .status
        .success()
    );
    std::fs::write(
        format!("{b}/Updates/from-cloud.md"),
        "Drafted two replies.\n",
    )
    .expect("note");
    assert!(
        aie(&["vault", "sync", "--vault", b, "--zone", "cloud"])
            .status
            .success()
    );
    assert!(aie(&["vault", "sync", "--vault", a]).status.success());
    let note = std::fs::read_to_string(format!("{a}/Updates/from-cloud.md")).expect("note synced");
    assert_eq!(note, "Drafted two replies.\n");

    assert!(aie(&["vault", "check", "--vault", a]).status.success());
    let status = aie(&["vault", "status", "--vault", a, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(status["folders"]["Needs_Action"], 0);

    let fresh = dir.path().join("fresh");
    let fresh = fresh.to_str().expect("utf-8");
    let out = aie(&[
        "vault",
        "sync",
        "--vault",
        fresh,
        "--remote",
        "/nonexistent/aie-remote.git",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/aie-remote.git"), "{err}");
    assert!(
        !std::path::Path::new(fresh).join("Dashboard.md").exists(),
        "nothing laid out on failure"
    );
}
