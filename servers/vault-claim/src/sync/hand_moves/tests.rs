//! Hand moves told from commits, on real repositories made with the `git` command line, as
//! the owner's tools (a shell, obsidian-git) leave them.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use tempfile::TempDir;

use super::*;

/// A request file's text; any bytes do, the check compares bytes only.
const REQUEST: &str = "---\napproval_id: a1\ntool: email_send\n---\nPaid, thanks.\n";

/// Runs `git` in `dir` with an identity and no user config; its output, or a failed test.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=owner",
            "-c",
            "user.email=owner@example.invalid",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "protocol.file.allow=always",
        ])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A vault on `main` whose last commit holds `Pending_Approval/email/<id>.md` for each id.
struct Vault {
    dir: TempDir,
}

impl Vault {
    fn with_pending(ids: &[&str]) -> Self {
        let vault = Self {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        git(vault.root(), &["init", "-q", "-b", "main"]);
        for id in ids {
            vault.write(&format!("Pending_Approval/email/{id}.md"), REQUEST);
        }
        vault.write("Approved/.keep", "");
        vault.commit("drafts");
        vault
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, text).expect("write");
    }

    /// `mv Pending_Approval/email/<id>.md Approved/`, as the owner does by hand.
    fn move_by_hand(&self, id: &str) {
        fs::rename(
            self.path(&format!("Pending_Approval/email/{id}.md")),
            self.path(&format!("Approved/{id}.md")),
        )
        .expect("mv");
    }

    fn commit(&self, message: &str) {
        git(self.root(), &["add", "-A"]);
        git(self.root(), &["commit", "-q", "-m", message]);
    }

    fn is_hand_move(&self, id: &str) -> bool {
        is_hand_move(self.root(), &ApprovalId::new(id).expect("id")).expect("check")
    }

    fn hand_moves(&self) -> Vec<String> {
        hand_moves(self.root())
            .expect("scan")
            .into_iter()
            .map(|id| id.as_str().to_owned())
            .collect()
    }
}

/// An uncommitted `mv` of a committed pending request is a hand move; the others in
/// `Approved/` are not listed.
#[test]
fn an_uncommitted_move_of_a_committed_pending_file_is_a_hand_move() {
    let vault = Vault::with_pending(&["a1", "a2"]);
    vault.move_by_hand("a1");
    vault.write("Approved/forged.md", REQUEST);
    assert!(vault.is_hand_move("a1"));
    assert!(!vault.is_hand_move("a2"), "still pending");
    assert!(!vault.is_hand_move("forged"), "never pending in main");
    assert_eq!(vault.hand_moves(), ["a1"]);
}

/// Once the move is committed (by the sync, or by the owner's own tool) it is no longer a
/// hand move: what `main` holds in `Approved/` came through a commit.
#[test]
fn a_committed_file_in_approved_is_not_a_hand_move() {
    let vault = Vault::with_pending(&["a1"]);
    vault.move_by_hand("a1");
    vault.commit("move");
    assert!(!vault.is_hand_move("a1"));
    assert!(vault.hand_moves().is_empty());
}

/// A moved file whose bytes differ from the pending request `main` holds is not a hand
/// move, however small the change.
#[test]
fn an_edited_moved_file_is_not_a_hand_move() {
    let vault = Vault::with_pending(&["a1"]);
    vault.move_by_hand("a1");
    vault.write("Approved/a1.md", &REQUEST.replace("Paid", "Unpaid"));
    assert!(!vault.is_hand_move("a1"));
}

/// A move staged in the index (`git mv`, `git add -A`, as obsidian-git does before its
/// commit) is on its way into a commit: not a hand move.
#[test]
fn a_staged_move_is_not_a_hand_move() {
    let vault = Vault::with_pending(&["a1", "a2"]);
    git(
        vault.root(),
        &["mv", "Pending_Approval/email/a1.md", "Approved/a1.md"],
    );
    assert!(!vault.is_hand_move("a1"));
    vault.move_by_hand("a2");
    git(vault.root(), &["add", "-A"]);
    assert!(!vault.is_hand_move("a2"));
}

/// A clone that pushed the move as an attacker would (a plain `git mv` and commit), pulled
/// into the vault with `git pull`, fast-forward or merge: not a hand move. Nor while a
/// `git pull` that stopped on a conflict has the move in the working tree.
#[test]
fn a_file_brought_by_git_pull_or_merge_is_not_a_hand_move() {
    let remote = tempfile::tempdir().expect("tempdir");
    git(remote.path(), &["init", "-q", "--bare", "-b", "main"]);
    let remote_url = remote.path().to_str().expect("utf-8");
    let vault = Vault::with_pending(&["ff", "merged", "torn"]);
    git(vault.root(), &["remote", "add", "origin", remote_url]);
    git(vault.root(), &["push", "-q", "origin", "main"]);
    let attacker = tempfile::tempdir().expect("tempdir");
    git(attacker.path(), &["clone", "-q", remote_url, "."]);
    let push_move = |id: &str| {
        git(
            attacker.path(),
            &[
                "mv",
                &format!("Pending_Approval/email/{id}.md"),
                &format!("Approved/{id}.md"),
            ],
        );
        git(attacker.path(), &["commit", "-q", "-m", "approve"]);
        git(attacker.path(), &["push", "-q", "origin", "main"]);
    };

    push_move("ff");
    git(vault.root(), &["pull", "-q", "--ff-only", "origin", "main"]);
    assert!(vault.path("Approved/ff.md").is_file());
    assert!(!vault.is_hand_move("ff"));

    push_move("merged");
    vault.write("Updates/note.md", "a local change\n");
    vault.commit("local");
    git(
        vault.root(),
        &["pull", "-q", "--no-rebase", "origin", "main"],
    );
    assert!(vault.path("Approved/merged.md").is_file());
    assert!(!vault.is_hand_move("merged"));

    // A pull that stops on a conflict elsewhere leaves the move in the working tree,
    // uncommitted, with `main` still before it.
    fs::create_dir_all(attacker.path().join("Updates")).expect("mkdir");
    fs::write(attacker.path().join("Updates/note.md"), "theirs\n").expect("write");
    git(attacker.path(), &["add", "-A"]);
    git(attacker.path(), &["commit", "-q", "-m", "note"]);
    push_move("torn");
    vault.write("Updates/note.md", "ours\n");
    vault.commit("ours");
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=owner",
            "-c",
            "user.email=owner@example.invalid",
        ])
        .args(["pull", "-q", "--no-rebase", "origin", "main"])
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .current_dir(vault.root())
        .output()
        .expect("git runs");
    assert!(
        !out.status.success(),
        "the pull should stop on the conflict"
    );
    assert!(vault.path("Approved/torn.md").is_file());
    assert!(!vault.path("Pending_Approval/email/torn.md").exists());
    assert!(!vault.is_hand_move("torn"));
    assert!(vault.hand_moves().is_empty());
}

/// While a checkout of aie's sync is in progress (or was cut off), its journal is in
/// `.git/`: the working tree may be ahead of the index, so nothing counts as a hand move.
#[test]
fn nothing_is_a_hand_move_during_a_checkout_or_a_git_command() {
    let vault = Vault::with_pending(&["a1"]);
    vault.move_by_hand("a1");
    assert!(vault.is_hand_move("a1"));
    for busy in [CHECKOUT_JOURNAL, "index.lock"] {
        let marker = vault.path(&format!(".git/{busy}"));
        fs::write(&marker, "{}").expect("marker");
        assert!(!vault.is_hand_move("a1"), "{busy}");
        assert!(vault.hand_moves().is_empty(), "{busy}");
        fs::remove_file(&marker).expect("rm");
    }
    assert!(vault.is_hand_move("a1"));
}

/// A vault without git, or without a commit yet, has no hand moves.
#[test]
fn no_git_no_hand_moves() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(dir.path().join("Approved")).expect("mkdir");
    fs::write(dir.path().join("Approved/a1.md"), REQUEST).expect("write");
    let id = ApprovalId::new("a1").expect("id");
    assert!(!is_hand_move(dir.path(), &id).expect("check"));
    assert!(hand_moves(dir.path()).expect("scan").is_empty());
    git(dir.path(), &["init", "-q", "-b", "main"]);
    assert!(!is_hand_move(dir.path(), &id).expect("check"));
}

/// A link in `Approved/` to a copy of the pending bytes is not a hand move.
#[test]
fn a_link_is_not_a_hand_move() {
    let vault = Vault::with_pending(&["a1"]);
    let outside = tempfile::tempdir().expect("tempdir");
    let copy = outside.path().join("a1.md");
    fs::write(&copy, REQUEST).expect("write");
    fs::remove_file(vault.path("Pending_Approval/email/a1.md")).expect("rm");
    std::os::unix::fs::symlink(&copy, vault.path("Approved/a1.md")).expect("link");
    assert!(!vault.is_hand_move("a1"));
}
