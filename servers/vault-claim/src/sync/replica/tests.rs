//! When the replica flushes: before every move of `main`, with the working tree already
//! holding what the new commit records (`specs/sync.md`, "Durability").

use std::{cell::RefCell, collections::BTreeMap, fs, path::Path};

use aie_shared::vault::{AgentName, Domain, Task, TaskId, Vault, VaultError};
use git2::{Oid, Repository, RepositoryInitOptions};

use super::Replica;
use crate::sync::{repo::BRANCH, report::Zone};

/// What the disk held at one flush: `main` (not yet moved) and every file of the working tree.
struct Flushed {
    main: Option<Oid>,
    files: BTreeMap<String, Vec<u8>>,
}

thread_local! {
    /// The flushes made on this thread; a replica's work runs on its caller's thread.
    static FLUSHES: RefCell<Vec<Flushed>> = const { RefCell::new(Vec::new()) };
}

/// The real flush, recorded.
fn recording_flush(vault: &Vault) -> Result<(), VaultError> {
    let main = Repository::open(vault.root())
        .ok()
        .and_then(|repo| repo.refname_to_id(BRANCH).ok());
    let files = working_tree(vault.root());
    FLUSHES.with(|f| f.borrow_mut().push(Flushed { main, files }));
    vault.flush()
}

/// Every file under `root` but `.git/`, by relative path.
fn working_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir").flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy();
            if rel == ".git" {
                continue;
            }
            if entry.file_type().expect("type").is_dir() {
                stack.push(path);
            } else {
                files.insert(rel.into_owned(), fs::read(&path).expect("read"));
            }
        }
    }
    files
}

/// A commit's files, by path.
fn committed(repo: &Repository, commit: Oid) -> BTreeMap<String, Vec<u8>> {
    let tree = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .expect("tree");
    let mut files = BTreeMap::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() == Some(git2::ObjectType::Blob) {
            let blob = repo.find_blob(entry.id()).expect("blob");
            let name = entry.name().expect("utf-8 name");
            files.insert(format!("{dir}{name}"), blob.content().to_vec());
        }
        git2::TreeWalkResult::Ok
    })
    .expect("walk");
    files
}

/// The moves of `main` in `root`'s reflog, oldest first: (from, to).
fn main_moves(root: &Path) -> Vec<(Oid, Oid)> {
    let repo = Repository::open(root).expect("open");
    let log = repo.reflog(BRANCH).expect("reflog");
    let mut moves: Vec<_> = log.iter().map(|e| (e.id_old(), e.id_new())).collect();
    moves.reverse();
    moves
}

/// Runs `op` on a recording replica and checks every move of `main` it made: a flush came
/// first, while `main` was still at the old commit and the working tree already held
/// exactly the new commit's files. Returns how many moves `op` made.
fn assert_flushed_before_main_moves(replica: &Replica, op: impl FnOnce(&Replica)) -> usize {
    let root = replica.vault().root().to_path_buf();
    let before = main_moves(&root).len();
    FLUSHES.with(|f| f.borrow_mut().clear());
    op(replica);
    let repo = Repository::open(&root).expect("open");
    let moves = main_moves(&root).split_off(before);
    FLUSHES.with(|flushes| {
        let flushes = flushes.borrow();
        for (from, to) in &moves {
            let from = (!from.is_zero()).then_some(*from);
            let want = committed(&repo, *to);
            assert!(
                flushes.iter().any(|f| f.main == from && f.files == want),
                "main moved {from:?} -> {to} without a flush of the files it records"
            );
        }
    });
    moves.len()
}

/// A replica of `remote` in `dir/<name>`, flushing through the recorder.
fn replica(dir: &Path, remote: &Path, name: &str) -> Replica {
    let agent = AgentName::new(name).expect("agent");
    let url = remote.display().to_string();
    let mut replica =
        Replica::open(dir.join(name), Some(&url), agent, Zone::Cloud).expect("open replica");
    replica.flush = recording_flush;
    replica
}

fn task_id(raw: &str) -> TaskId {
    TaskId::new(raw).expect("task id")
}

/// A claim's commit, a fast-forward that brings another replica's claim, and a merge each
/// flush the vault before `main` moves, with the claim already in the flushed files.
#[test]
fn sync_flushes_before_main_moves() {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("aie-flush-")
            .tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("tempdir");
    let remote = dir.path().join("remote.git");
    let mut options = RepositoryInitOptions::new();
    options.bare(true).initial_head("main");
    Repository::init_opts(&remote, &options).expect("bare remote");
    let alpha = replica(dir.path(), &remote, "alpha");
    let beta = replica(dir.path(), &remote, "beta");
    let ids: Vec<_> = (0..3).map(|i| task_id(&format!("t{i}"))).collect();

    let seeded = assert_flushed_before_main_moves(&alpha, |alpha| {
        alpha.with_vault(|vault| {
            for id in &ids {
                let task = Task::new(id.clone(), Domain::Email, "a task", "Body.\n");
                vault.create_task(&task).expect("create");
            }
        });
        alpha.sync().expect("seed sync");
    });
    assert!(seeded >= 1, "the seed was committed");

    let claims = assert_flushed_before_main_moves(&alpha, |alpha| {
        assert!(alpha.claim(&ids[0]).expect("claim").confirmed());
    });
    assert_eq!(claims, 1, "one claim commit");

    let forwarded = assert_flushed_before_main_moves(&beta, |beta| {
        beta.sync().expect("fast-forward");
    });
    assert!(forwarded >= 1, "beta took alpha's commits");

    // Alpha claims offline (on disk only) while beta's claim reaches the remote: alpha's sync
    // commits its claim, merges beta's, and checks the merge out.
    alpha.with_vault(|vault| vault.claim(&ids[1], alpha.agent()).expect("local claim"));
    assert!(beta.claim(&ids[2]).expect("beta claim").confirmed());
    let merged = assert_flushed_before_main_moves(&alpha, |alpha| {
        let report = alpha.sync().expect("merge sync");
        assert!(report.lost_claims.is_empty(), "{report:?}");
    });
    assert_eq!(merged, 2, "alpha's commit and the merge");
    let head = Repository::open(alpha.vault().root())
        .and_then(|r| r.refname_to_id(BRANCH))
        .expect("main");
    let files = committed(&Repository::open(alpha.vault().root()).expect("open"), head);
    assert!(files.contains_key("In_Progress/alpha/t1.md"));
    assert!(files.contains_key("In_Progress/beta/t2.md"));
}
