//! Opening replicas: clone, lay out an empty remote, adopt a plain vault; bad input (wrong
//! remote URLs, unsafe task ids) refused with clear errors and the vault left intact; the
//! dashboard; the periodic sync loop.

mod sync_support;

use std::{collections::BTreeMap, fs, path::Path, sync::Arc, time::Duration};

use aie_shared::vault::{ApprovalId, ApprovalRequest, Domain, TaskId, Vault, VaultError};
use aie_vault_claim::sync::{Replica, SyncError, Zone, spawn_sync_loop};
use chrono::{TimeDelta, Utc};
use git2::Repository;
use sync_support::{Net, agent, bare_remote, seed_tasks, task_id};

/// Every file under `dir` with its content (to show a vault was left exactly as it was).
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in fs::read_dir(&at).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).expect("under").display().to_string();
                files.insert(rel, fs::read(&path).expect("read"));
            }
        }
    }
    files
}

/// An empty remote gets the laid-out vault pushed; a second replica clones it.
#[test]
fn sync_open_lays_out_empty_remote_then_clones() {
    let net = Net::new();
    let first = net.replica("first", Zone::Local);
    let files = net.remote_files();
    for expected in [
        ".gitignore",
        "Dashboard.md",
        "README.md",
        "Needs_Action/email/.gitkeep",
    ] {
        assert!(files.contains_key(expected), "{expected} pushed");
    }
    let gitignore = String::from_utf8_lossy(&files[".gitignore"]).into_owned();
    assert!(gitignore.contains("*token*") && gitignore.contains("secrets/"));
    let second = net.replica("second", Zone::Cloud);
    assert!(
        second
            .vault()
            .root()
            .join("Needs_Action/email/.gitkeep")
            .is_file()
    );
    assert_eq!(
        snapshot(&net.vault("second").join("Needs_Action")),
        snapshot(&net.vault("first").join("Needs_Action"))
    );
    let status = second.status().expect("status");
    assert_eq!((status.ahead, status.behind), (0, 0));
    assert_eq!(status.remote.as_deref(), Some(net.url().as_str()));
    // Reopening an existing replica keeps it as it is.
    drop(first);
    let again = Replica::open(
        net.vault("first"),
        Some(&net.url()),
        agent("first"),
        Zone::Local,
    )
    .expect("reopen");
    assert!(again.sync().expect("sync").offline.is_none());
}

/// A `file://` URL works like a path.
#[test]
fn sync_open_file_url() {
    let net = Net::new();
    let url = format!("file://{}", net.remote.display());
    let replica = Replica::open(net.vault("a"), Some(&url), agent("a"), Zone::Local).expect("open");
    seed_tasks(&replica, 1);
    assert!(
        net.remote_files()
            .contains_key("Needs_Action/email/t000.md")
    );
}

/// A vault that existed before it had a remote is adopted: its tasks and the remote's are
/// merged, nothing lost on either side.
#[test]
fn sync_open_adopts_plain_vault_into_existing_remote() {
    let net = Net::new();
    let first = net.replica("first", Zone::Cloud);
    seed_tasks(&first, 2);
    let plain = net.vault("plain");
    let vault = Vault::init(&plain).expect("plain vault");
    let task = aie_shared::vault::Task::new(task_id("mine"), Domain::Social, "Mine", "Body\n");
    vault.create_task(&task).expect("task");
    let adopted =
        Replica::open(&plain, Some(&net.url()), agent("plain"), Zone::Local).expect("adopt");
    assert!(plain.join(".git").is_dir());
    let files = net.remote_files();
    assert!(files.contains_key("Needs_Action/social/mine.md"));
    assert!(files.contains_key("Needs_Action/email/t000.md"));
    assert!(plain.join("Needs_Action/email/t001.md").is_file());
    assert!(adopted.status().expect("status").last_error.is_none());
}

/// A wrong or unreachable remote URL is a clear error naming the URL, and whatever was at
/// the vault path is left exactly as it was: a missing folder stays missing, an empty one
/// empty, a plain vault without `.git`, a replica with its old remote.
#[test]
fn sync_open_wrong_remote_leaves_vault_intact() {
    let net = Net::new();
    let wrong = net.nowhere();
    let open = |dir: &Path, url: &str| Replica::open(dir, Some(url), agent("a"), Zone::Local);

    let missing = net.vault("missing");
    let err = open(&missing, &wrong).expect_err("unreachable");
    assert!(matches!(err, SyncError::RemoteUnreachable { .. }), "{err}");
    assert!(err.to_string().contains(&wrong), "{err}");
    assert!(!missing.exists());

    let empty = net.vault("empty");
    fs::create_dir(&empty).expect("mkdir");
    open(&empty, &wrong).expect_err("unreachable");
    assert_eq!(fs::read_dir(&empty).expect("dir").count(), 0);

    let plain = net.vault("plain");
    Vault::init(&plain).expect("plain");
    fs::write(plain.join("Plans/email/mine.md"), "mine\n").expect("note");
    let before = snapshot(&plain);
    open(&plain, &wrong).expect_err("unreachable");
    assert_eq!(snapshot(&plain), before);
    assert!(!plain.join(".git").exists());

    let good = net.replica("good", Zone::Local);
    drop(good);
    let before = snapshot(&net.vault("good"));
    let err = open(&net.vault("good"), &wrong).expect_err("new remote unreachable");
    assert!(err.to_string().contains(&wrong), "{err}");
    assert_eq!(snapshot(&net.vault("good")), before);
    let kept = Repository::open(net.vault("good")).expect("repo");
    assert_eq!(
        kept.find_remote("origin").expect("origin").url().ok(),
        Some(net.url().as_str())
    );

    // A working copy is no remote: pushing there would desync its files.
    let err = open(
        &net.vault("other"),
        &net.vault("good").display().to_string(),
    )
    .expect_err("not bare");
    assert!(matches!(err, SyncError::RemoteNotBare { .. }), "{err}");
    assert!(!net.vault("other").exists());

    for bad in [
        "ftp://example.org/vault.git",
        "file://relative/path",
        "",
        "a\nb",
    ] {
        let err = open(&net.vault("x"), bad).expect_err(bad);
        assert!(
            matches!(err, SyncError::InvalidRemoteUrl { .. }),
            "{bad}: {err}"
        );
    }
}

/// Task ids that could climb out of the vault never become a `TaskId`, so no replica call
/// can take one; a valid id that names no task is refused by name.
#[test]
fn sync_bad_task_ids_refused() {
    for bad in ["../x", "a/b", "a\0b", "..", "/etc/passwd", ".hidden"] {
        let err = TaskId::new(bad).expect_err(bad);
        assert!(err.to_string().contains("invalid task id"), "{err}");
    }
    let net = Net::new();
    let replica = net.replica("a", Zone::Local);
    let err = replica.claim(&task_id("nowhere")).expect_err("missing");
    assert!(
        matches!(err, SyncError::Vault(VaultError::TaskNotFound { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("nowhere"));
}

/// A vault repository on another branch than `main` is refused by name.
#[test]
fn sync_open_refuses_other_branch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = git2::RepositoryInitOptions::new();
    options.initial_head("notes");
    Repository::init_opts(dir.path(), &options).expect("init");
    let err = Replica::open(dir.path(), None, agent("a"), Zone::Local).expect_err("branch");
    assert!(err.to_string().contains("refs/heads/notes"), "{err}");
}

/// The dashboard shows counts, what waits for the owner (with titles), who holds what and
/// the latest notes newest first, as Obsidian links; rebuilding an unchanged vault changes
/// nothing.
#[test]
fn sync_dashboard_shows_what_waits_for_the_owner() {
    let net = Net::new();
    let owner = net.replica("owner", Zone::Local);
    let ids = seed_tasks(&owner, 3);
    owner.claim(&ids[0]).expect("claim");
    let root = owner.vault().root().to_path_buf();
    owner.with_vault(|v| {
        let request = ApprovalRequest::new(
            ApprovalId::new("a-1").expect("id"),
            Domain::Email,
            "email_send",
            serde_json::json!({"to": "alice@example.org"}),
            agent("cloud"),
            Utc::now() + TimeDelta::days(1),
        )
        .for_task(ids[1].clone())
        .with_preview("Reply to Alice.\n");
        v.write_approval_request(&request).expect("request");
    });
    fs::write(
        root.join("Updates/older.md"),
        "---\ncreated: 2025-01-01T09:00:00Z\n---\nOld news.\n",
    )
    .expect("w");
    fs::write(
        root.join("Updates/newer.md"),
        "---\ncreated: 2025-02-01T09:00:00Z\n---\n# Fresh news\n",
    )
    .expect("w");

    assert!(owner.refresh_dashboard().expect("refresh"));
    let dash = fs::read_to_string(root.join("Dashboard.md")).expect("dash");
    assert!(
        dash.contains("[[Pending_Approval/email/a-1\\|a-1]] | email | email_send | Task t001 |"),
        "{dash}"
    );
    assert!(
        dash.contains("| Needs_Action | 2 |") && dash.contains("| In_Progress | 1 |"),
        "{dash}"
    );
    assert!(
        dash.contains("[[In_Progress/owner/t000\\|t000]] | owner | Task t000 |"),
        "{dash}"
    );
    let (newer, older) = (
        dash.find("Fresh news").expect("newer"),
        dash.find("Old news").expect("older"),
    );
    assert!(newer < older, "newest first:\n{dash}");
    assert!(dash.contains("[[Updates/newer|newer]]"), "{dash}");
    assert!(
        !owner.refresh_dashboard().expect("again"),
        "unchanged vault, unchanged file"
    );
    owner.sync().expect("sync");
    assert_eq!(net.remote_files()["Dashboard.md"], dash.as_bytes());
}

/// The periodic loop syncs on its own (a note written in the vault reaches the remote) and
/// stops when shutdown completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_loop_syncs_until_shutdown() {
    let net = Net::new();
    let remote = net.remote.clone();
    let replica = Arc::new(net.replica("owner", Zone::Local));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = spawn_sync_loop(replica.clone(), Duration::from_millis(50), async move {
        let _ = stopped.await;
    });
    fs::write(
        replica.vault().root().join("Plans/email/loop.md"),
        "from the loop\n",
    )
    .expect("w");
    let reached = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let repo = Repository::open(&remote).expect("remote");
            let head = repo.refname_to_id("refs/heads/main").expect("main");
            let tree = repo
                .find_commit(head)
                .expect("commit")
                .tree()
                .expect("tree");
            if tree.get_path(Path::new("Plans/email/loop.md")).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(reached.is_ok(), "the loop pushed the note");
    stop.send(()).expect("stop");
    tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("loop stops")
        .expect("no panic");
    // The local zone's loop rebuilt the dashboard too.
    let dash = fs::read_to_string(replica.vault().root().join("Dashboard.md")).expect("dash");
    assert!(dash.contains("## Counts"));
    let _ = bare_remote;
}

/// A clone a crash cut off (its mark still in `.git/`, `main` never set, files cut short)
/// is cleared and cloned again when the replica opens, from the remote it was cloning even
/// when none is given: nothing cut short is committed, and the remote stays as it was.
#[test]
fn sync_open_redoes_an_unfinished_clone() {
    let net = Net::new();
    let first = net.replica("first", Zone::Local);
    let ids = seed_tasks(&first, 3);
    let before = net.remote_files();
    let remote_head = net.remote_head();

    // What the crash left: the repository with its remote, the mark, cut files, no `main`.
    let dir = net.vault("second");
    let mut init = git2::RepositoryInitOptions::new();
    init.initial_head("main");
    let repo = Repository::init_opts(&dir, &init).expect("init");
    repo.remote("origin", &net.url()).expect("origin");
    fs::write(dir.join(".git/aie-clone-incomplete"), "").expect("mark");
    let task = format!("Needs_Action/email/{}.md", ids[0]);
    fs::create_dir_all(dir.join("Needs_Action/email")).expect("folder");
    let whole = &before[&task];
    fs::write(dir.join(&task), &whole[..whole.len() / 2]).expect("cut task");
    fs::write(dir.join("README.md"), "").expect("empty readme");
    drop(repo);

    let second =
        Replica::open(&dir, None, agent("second"), Zone::Cloud).expect("open the cut clone");
    assert!(
        !dir.join(".git/aie-clone-incomplete").exists(),
        "the mark stayed"
    );
    assert_eq!(&fs::read(dir.join(&task)).expect("task"), whole);
    assert_eq!(second.remote_url().as_deref(), Some(net.url().as_str()));
    let report = second.sync().expect("sync");
    assert_eq!(report.pushed, 0, "{report:?}");
    assert_eq!(net.remote_head(), remote_head, "the remote moved");
    assert_eq!(net.remote_files(), before);
}
