//! When the replica flushes: before every move of `main`, with the working tree already
//! holding what the new commit records (`specs/sync.md`, "Durability").

use std::{cell::RefCell, collections::BTreeMap, fs, path::Path};

use aie_shared::vault::{AgentName, Domain, Task, TaskId, Vault, VaultError};
use git2::{Oid, Repository, RepositoryInitOptions};

use super::{Replica, journal::CheckoutJournal};
use crate::sync::{
    repo::{BRANCH, TRACKING},
    report::Zone,
};

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

/// Two replicas of one remote holding task `t0`: alpha changed its body and pushed; beta
/// fetched that commit and was checking it out, its journal written, when "the crash" left
/// `t0` as [`Interrupted::new`]'s `left` says. Keeps the folder, beta's old and new versions
/// of the file, and the two commits.
struct Interrupted {
    dir: tempfile::TempDir,
    remote: std::path::PathBuf,
    old: Vec<u8>,
    new: Vec<u8>,
    from: Oid,
    to: Oid,
}

/// The task file the interrupted checkout was writing.
const T0: &str = "Needs_Action/email/t0.md";

impl Interrupted {
    /// Sets the scene; `left(old, new)` is what the crash left in `t0` (`None`: nothing).
    fn new(left: impl FnOnce(&[u8], &[u8]) -> Option<Vec<u8>>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let remote = dir.path().join("remote.git");
        let mut options = RepositoryInitOptions::new();
        options.bare(true).initial_head("main");
        Repository::init_opts(&remote, &options).expect("bare remote");
        let alpha = replica(dir.path(), &remote, "alpha");
        alpha.with_vault(|vault| {
            let task = Task::new(task_id("t0"), Domain::Email, "a task", "Body.\n");
            vault.create_task(&task).expect("create");
        });
        alpha.sync().expect("seed");
        let beta = replica(dir.path(), &remote, "beta");
        let beta_root = beta.vault().root().to_path_buf();
        drop(beta);
        let file = alpha.vault().root().join(T0);
        let text = fs::read_to_string(&file).expect("read");
        fs::write(
            &file,
            format!("{text}Alpha's notes, a few lines of them.\n"),
        )
        .expect("edit");
        alpha.sync().expect("push the edit");

        let repo = Repository::open(&beta_root).expect("beta repo");
        repo.find_remote("origin")
            .and_then(|mut r| r.fetch(&["+refs/heads/main:refs/remotes/origin/main"], None, None))
            .expect("fetch");
        let from = repo.refname_to_id(BRANCH).expect("main");
        let to = repo.refname_to_id(TRACKING).expect("origin/main");
        let old = fs::read(beta_root.join(T0)).expect("old");
        let new = fs::read(file).expect("new");
        CheckoutJournal::begin(&repo, Some(from), to, vec![T0.to_owned()]).expect("journal");
        match left(&old, &new) {
            Some(bytes) => fs::write(beta_root.join(T0), bytes).expect("crash"),
            None => fs::remove_file(beta_root.join(T0)).expect("crash"),
        }
        Self {
            dir,
            remote,
            old,
            new,
            from,
            to,
        }
    }

    /// Opens beta again, as after the restart.
    fn reopen(&self) -> Replica {
        replica(self.dir.path(), &self.remote, "beta")
    }

    /// Beta's `t0` now.
    fn beta_file(&self) -> Vec<u8> {
        fs::read(self.dir.path().join("beta").join(T0)).expect("beta's t0")
    }

    /// Whether beta's checkout journal is still there.
    fn journal_left(&self) -> bool {
        self.dir.path().join("beta/.git/aie-checkout.json").exists()
    }

    /// The conflict copies in beta's `Needs_Action/conflicts/`, by content.
    fn copies(&self) -> Vec<Vec<u8>> {
        let dir = self.dir.path().join("beta/Needs_Action/conflicts");
        let mut found: Vec<_> = fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".md"))
                    .map(|e| fs::read(e.path()).expect("copy"))
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }
}

/// A checkout cut off by a crash (the file empty, half-written, or not yet there) is undone
/// when the replica opens again: the file is back as `main` records it, nothing cut is
/// committed, no conflict copy is made, and the next sync brings the new version.
#[test]
fn sync_interrupted_checkout_is_undone_on_open() {
    type Left = fn(&[u8], &[u8]) -> Option<Vec<u8>>;
    let cases: [(&str, Left); 4] = [
        ("empty", |_, _| Some(Vec::new())),
        ("half written", |_, new| Some(new[..new.len() / 2].to_vec())),
        ("whole", |_, new| Some(new.to_vec())),
        ("gone", |_, _| None),
    ];
    for (case, left) in cases {
        let crash = Interrupted::new(left);
        let beta = crash.reopen();
        assert!(!crash.journal_left(), "{case}: the journal stayed");
        assert_eq!(crash.beta_file(), crash.old, "{case}: not restored");
        assert_eq!(
            head_of(&beta),
            crash.from,
            "{case}: something was committed"
        );
        assert!(crash.copies().is_empty(), "{case}: a conflict copy");
        let report = beta.sync().expect("sync");
        assert!(
            report.conflicts.iter().any(|c| c.contains("interrupted")),
            "{case}: {report:?}"
        );
        assert_eq!(crash.beta_file(), crash.new, "{case}: the new version");
        assert_eq!(head_of(&beta), crash.to, "{case}: a fast-forward");
    }
}

/// A listed file changed meanwhile (neither version, nor a beginning of either) is kept as
/// a conflict copy before the old version takes its place.
#[test]
fn sync_interrupted_checkout_keeps_a_file_changed_meanwhile() {
    let edit = b"---\nid: t0\n---\nA human's edit made during the sync.\n".to_vec();
    let crash = Interrupted::new(|_, _| Some(edit.clone()));
    let beta = crash.reopen();
    assert_eq!(crash.beta_file(), crash.old);
    assert_eq!(crash.copies(), vec![edit]);
    let report = beta.sync().expect("sync");
    let line = report
        .conflicts
        .iter()
        .find(|c| c.contains("interrupted"))
        .expect("told");
    assert!(
        line.contains("kept as Needs_Action/conflicts/t0.conflict-beta-"),
        "{line}"
    );
    assert_eq!(crash.beta_file(), crash.new);
}

/// A crash after `main` moved (the files flushed, the index not yet written) leaves the
/// files as they are; only the index follows, and nothing is reported.
#[test]
fn sync_interrupted_checkout_after_main_moved_keeps_the_files() {
    let crash = Interrupted::new(|_, new| Some(new.to_vec()));
    let repo = Repository::open(crash.dir.path().join("beta")).expect("beta repo");
    repo.reference(BRANCH, crash.to, true, "test: main moved before the crash")
        .expect("move main");
    let beta = crash.reopen();
    assert!(!crash.journal_left());
    assert_eq!(crash.beta_file(), crash.new);
    assert_eq!(head_of(&beta), crash.to);
    let report = beta.sync().expect("sync");
    assert!(report.conflicts.is_empty(), "{report:?}");
    assert_eq!((report.pushed, report.pulled), (0, 0), "{report:?}");
}

/// The main of a replica.
fn head_of(replica: &Replica) -> Oid {
    Repository::open(replica.vault().root())
        .and_then(|r| r.refname_to_id(BRANCH))
        .expect("main")
}

/// A sync that checks out leaves no journal behind.
#[test]
fn sync_checkout_leaves_no_journal() {
    let crash = Interrupted::new(|old, _| Some(old.to_vec()));
    CheckoutJournal::end(&Repository::open(crash.dir.path().join("beta")).expect("repo"))
        .expect("no journal");
    let beta = crash.reopen();
    beta.sync().expect("sync");
    assert_eq!(crash.beta_file(), crash.new);
    assert!(!crash.journal_left());
}

/// The recovery of an interrupted checkout never writes through a link: with the task's
/// folder replaced by a link to a bait folder (by hand, or by an older build that checked
/// links out), opening refuses with the link named and the bait folder stays empty.
#[test]
fn sync_interrupted_checkout_never_restores_through_a_link() {
    let crash = Interrupted::new(|_, _| None);
    let beta_root = crash.dir.path().join("beta");
    let bait = crash.dir.path().join("bait");
    fs::create_dir(&bait).expect("bait");
    let folder = beta_root.join("Needs_Action/email");
    fs::remove_dir_all(&folder).expect("rm");
    std::os::unix::fs::symlink(&bait, &folder).expect("link");
    let opened = Replica::open(
        &beta_root,
        Some(crash.remote.to_str().expect("utf-8")),
        AgentName::new("beta").expect("agent"),
        Zone::Cloud,
    );
    let error = opened.expect_err("refused").to_string();
    assert!(error.contains("link"), "{error}");
    assert_eq!(
        fs::read_dir(&bait).expect("bait").count(),
        0,
        "nothing written through the link"
    );
}
