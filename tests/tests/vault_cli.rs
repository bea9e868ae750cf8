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

/// Runs plain `git` in `dir` as an attacker with push access would, failing on an error.
fn git(dir: &std::path::Path, args: &[&str]) {
    let out = run(Command::new("git")
        .args([
            "-c",
            "user.name=mallory",
            "-c",
            "user.email=m@example.invalid",
        ])
        .args(args)
        .current_dir(dir));
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `aie vault check` names what the remote's `main` (as last fetched) holds that the sync
/// refuses, and the next `aie vault sync` refuses it, reports it, and leaves no link behind.
#[test]
fn vault_check_names_what_the_remote_holds_and_the_sync_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let remote = dir.path().join("remote.git");
    git(
        dir.path(),
        &["init", "-q", "--bare", remote.to_str().expect("utf-8")],
    );
    let vault = dir.path().join("local");
    let v = vault.to_str().expect("utf-8");
    let r = remote.to_str().expect("utf-8");
    assert!(
        aie(&["vault", "sync", "--vault", v, "--remote", r])
            .status
            .success()
    );

    let bait = dir.path().join("bait");
    std::fs::create_dir(&bait).expect("bait");
    git(dir.path(), &["clone", "-q", r, "attacker"]);
    let attacker = dir.path().join("attacker");
    std::os::unix::fs::symlink(&bait, attacker.join("Updates/owner")).expect("link");
    git(&attacker, &["add", "-A"]);
    git(&attacker, &["commit", "-q", "-m", "link"]);
    git(&attacker, &["push", "-q", "origin", "HEAD:main"]);
    git(&vault, &["fetch", "-q", "origin"]);

    let out = aie(&["vault", "check", "--vault", v]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("Updates/owner: on the remote, refused by the sync: a symbolic link"),
        "{text}"
    );
    let json = aie(&["vault", "check", "--vault", v, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert!(
        json.as_array()
            .expect("array")
            .iter()
            .any(|f| f["kind"] == "refused_from_remote" && f["path"] == "Updates/owner"),
        "{json}"
    );

    let out = aie(&["vault", "sync", "--vault", v, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["refused"][0]["path"], "Updates/owner", "{report}");
    assert!(
        std::fs::symlink_metadata(vault.join("Updates/owner")).is_err(),
        "no link checked out"
    );
    assert!(aie(&["vault", "check", "--vault", v]).status.success());
}
