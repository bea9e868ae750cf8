//! The vault's behaviour end to end on real directories: concurrent claims (threads and
//! processes), refused path tricks, broken files left alone, round-trips, check and repair.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Barrier},
    thread,
};

use chrono::TimeDelta;
use serde_json::json;
use tempfile::TempDir;

use super::*;

/// Set in a child process to the vault it should claim in (see [`claim_child_process`]).
const CHILD_VAULT_ENV: &str = "AIE_VAULT_TEST_CHILD_VAULT";
/// Set in a child process to the prefix of its agents' names.
const CHILD_AGENT_ENV: &str = "AIE_VAULT_TEST_CHILD_AGENT";
/// Threads per child process.
const CHILD_THREADS: usize = 4;
/// Tasks in each contended run.
const CONTENDED_TASKS: usize = 1000;

fn task_id(raw: &str) -> TaskId {
    TaskId::new(raw).expect("valid task id")
}

fn agent(raw: &str) -> AgentName {
    AgentName::new(raw).expect("valid agent name")
}

/// A fresh vault in a temporary directory (kept alive by the returned guard).
fn new_vault() -> (TempDir, Vault) {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::init(dir.path().join("vault")).expect("init");
    (dir, vault)
}

/// The body every seeded task carries, so tests can see it survived intact.
fn body_of(id: &TaskId) -> String {
    format!("Task {id}.\n\n- [ ] step one\n- [ ] step two\n")
}

/// Adds `n` tasks spread over the domains, each with a human's extra key.
fn seed(vault: &Vault, n: usize) -> Vec<TaskId> {
    (0..n)
        .map(|i| {
            let id = task_id(&format!("t{i:05}"));
            let domain = Domain::ALL[i % Domain::ALL.len()];
            let mut task = Task::new(id.clone(), domain, format!("Task number {i}"), body_of(&id));
            task.meta.extra.insert("priority".into(), "high".into());
            vault.create_task(&task).expect("create task");
            id
        })
        .collect()
}

/// A file's modification time, to the second, as claims read it.
fn file_time(path: &Path) -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    let modified = fs::metadata(path)
        .and_then(|m| m.modified())
        .expect("mtime");
    chrono::DateTime::<chrono::Utc>::from(modified).trunc_subsecs(0)
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in fs::read_dir(&next).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(path.clone(), fs::read(&path).expect("read"));
            }
        }
    }
    files
}

/// Claims every id in order as `agent`; returns the ids won and every loser's error.
fn claim_all(vault: &Vault, ids: &[TaskId], agent: &AgentName) -> (Vec<TaskId>, Vec<VaultError>) {
    let (mut won, mut lost) = (Vec::new(), Vec::new());
    for id in ids {
        match vault.claim(id, agent) {
            Ok(claim) => {
                assert_eq!(&claim.owner, agent);
                assert!(!claim.renewed, "{id} first claim reported as renewal");
                won.push(claim.task_id);
            }
            Err(e) => lost.push(e),
        }
    }
    (won, lost)
}

/// After a contended run: every task is in exactly one `In_Progress/<agent>/`, that agent
/// is the one whose claim returned Ok, the file is intact, and every loser was told the
/// real winner.
fn assert_each_owned_once(
    vault: &Vault,
    ids: &[TaskId],
    wins: &BTreeMap<TaskId, Vec<AgentName>>,
    losses: &[VaultError],
) {
    assert_eq!(wins.len(), ids.len(), "every task claimed");
    for id in ids {
        let winners = &wins[id];
        assert_eq!(winners.len(), 1, "task {id} claimed by {winners:?}");
        let stored = vault.read_task(id).expect("read claimed task");
        assert_eq!(stored.folder, TaskFolder::InProgress, "{id}");
        assert_eq!(stored.holder.as_ref(), Some(&winners[0]), "{id} holder");
        assert_eq!(
            stored.task.meta.owner.as_ref(),
            Some(&winners[0]),
            "{id} owner field"
        );
        assert!(stored.task.meta.lease_until.is_some(), "{id} lease");
        assert_eq!(stored.task.body, body_of(id), "{id} body intact");
        assert_eq!(
            stored
                .task
                .meta
                .extra
                .get("priority")
                .and_then(|v| v.as_str()),
            Some("high")
        );
    }
    for loss in losses {
        match loss {
            VaultError::AlreadyClaimed { id, owner } => {
                assert_eq!(
                    Some(owner),
                    wins[id].first(),
                    "loser told the wrong winner for {id}"
                )
            }
            other => panic!("a losing claim failed otherwise: {other}"),
        }
    }
    let listing = vault.list_tasks(TaskFilter::default()).expect("list");
    assert!(listing.broken.is_empty(), "{:?}", listing.broken);
    assert_eq!(listing.tasks.len(), ids.len());
    assert!(
        listing
            .tasks
            .iter()
            .all(|t| t.folder == TaskFolder::InProgress)
    );
    assert!(vault.check().expect("check").is_empty());
}

/// 16 threads race for the same 1,000 tasks in the same order: each task ends up owned by
/// exactly one agent, the one whose claim succeeded, and each loser is told that agent.
#[test]
fn vault_claim_16_threads_each_task_owned_once() {
    let (_dir, vault) = new_vault();
    let ids = Arc::new(seed(&vault, CONTENDED_TASKS));
    let barrier = Arc::new(Barrier::new(16));
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let (vault, ids, barrier) = (vault.clone(), ids.clone(), barrier.clone());
            thread::spawn(move || {
                let me = agent(&format!("agent{i:02}"));
                barrier.wait();
                let (won, lost) = claim_all(&vault, &ids, &me);
                (me, won, lost)
            })
        })
        .collect();
    let mut wins: BTreeMap<TaskId, Vec<AgentName>> = BTreeMap::new();
    let mut losses = Vec::new();
    for handle in handles {
        let (me, won, lost) = handle.join().expect("claimer thread");
        for id in won {
            wins.entry(id).or_default().push(me.clone());
        }
        losses.extend(lost);
    }
    assert_eq!(
        losses.len(),
        15 * CONTENDED_TASKS,
        "every other attempt lost"
    );
    assert_each_owned_once(&vault, &ids, &wins, &losses);
}

/// The child half of the multi-process test: does nothing unless started by it.
#[test]
fn claim_child_process() {
    let (Ok(root), Ok(prefix)) = (
        std::env::var(CHILD_VAULT_ENV),
        std::env::var(CHILD_AGENT_ENV),
    ) else {
        return;
    };
    let vault = Vault::open(root).expect("child opens vault");
    // The ids `seed` made, known in advance: a listing would race with the other claimers.
    let ids: Vec<TaskId> = (0..CONTENDED_TASKS)
        .map(|i| task_id(&format!("t{i:05}")))
        .collect();
    let handles: Vec<_> = (0..CHILD_THREADS)
        .map(|i| {
            let (vault, ids) = (vault.clone(), ids.clone());
            let me = agent(&format!("{prefix}-{i}"));
            thread::spawn(move || {
                let (won, lost) = claim_all(&vault, &ids, &me);
                (me, won, lost)
            })
        })
        .collect();
    // End libtest's "test ... " line, which it leaves open while the test runs.
    println!();
    for handle in handles {
        let (me, won, lost) = handle.join().expect("child thread");
        for id in won {
            println!("WON {me} {id}");
        }
        for error in lost {
            match error {
                VaultError::AlreadyClaimed { id, owner } => println!("LOST {me} {id} {owner}"),
                other => println!("ERROR {me} {other}"),
            }
        }
    }
}

/// 4 processes of 4 threads race for the same 1,000 tasks: the same guarantees hold across
/// processes, checked from each child's own report of what it won and lost.
#[test]
fn vault_claim_4_processes_each_task_owned_once() {
    let (_dir, vault) = new_vault();
    let ids = seed(&vault, CONTENDED_TASKS);
    let exe = std::env::current_exe().expect("test binary");
    let children: Vec<_> = (0..4)
        .map(|p| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "vault::tests::claim_child_process",
                    "--nocapture",
                ])
                .args(["--test-threads", "1"])
                .env(CHILD_VAULT_ENV, vault.root())
                .env(CHILD_AGENT_ENV, format!("proc{p}"))
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    let mut wins: BTreeMap<TaskId, Vec<AgentName>> = BTreeMap::new();
    let mut losses = Vec::new();
    for child in children {
        let output = child.wait_with_output().expect("child output");
        assert!(output.status.success(), "child failed");
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let words: Vec<_> = line.split(' ').collect();
            match words.as_slice() {
                ["WON", me, id] => wins.entry(task_id(id)).or_default().push(agent(me)),
                ["LOST", _, id, owner] => losses.push(VaultError::AlreadyClaimed {
                    id: task_id(id),
                    owner: agent(owner),
                }),
                ["ERROR", ..] => panic!("child claim error: {line}"),
                _ => {}
            }
        }
    }
    assert_eq!(
        losses.len(),
        15 * CONTENDED_TASKS,
        "every other attempt lost"
    );
    assert_each_owned_once(&vault, &ids, &wins, &losses);
}

/// Set in a child process to the vault it should churn in (see [`churn_child_process`]).
const CHURN_VAULT_ENV: &str = "AIE_VAULT_TEST_CHURN_VAULT";
/// Tasks the churn test cycles through.
const CHURN_TASKS: usize = 40;

/// The child half of the kill test: claims, stamps, renews and releases tasks in a loop until
/// it is killed. Does nothing unless started by that test.
#[test]
fn churn_child_process() {
    let Ok(root) = std::env::var(CHURN_VAULT_ENV) else {
        return;
    };
    let vault = Vault::open(root).expect("child opens vault");
    let me = agent("churner");
    let ids: Vec<TaskId> = (0..CHURN_TASKS)
        .map(|i| task_id(&format!("t{i:05}")))
        .collect();
    println!("\nREADY");
    loop {
        for id in &ids {
            vault.claim(id, &me).expect("claim");
            vault
                .stamp_claims(&[(me.clone(), id.clone())])
                .expect("stamp");
            vault.claim(id, &me).expect("renew");
            vault.release(id, &me).expect("release");
        }
    }
}

/// A process claiming, stamping, renewing and releasing is killed (SIGKILL) at arbitrary
/// points, again and again: every task is still exactly once in the vault, whole, with its
/// body; what a kill leaves beyond that is only temporary files, which `check` names.
#[test]
fn vault_killed_claimer_loses_nothing() {
    use std::io::BufRead;
    let (_dir, vault) = new_vault();
    let ids = seed(&vault, CHURN_TASKS);
    let exe = std::env::current_exe().expect("test binary");
    for round in 0..8u64 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "vault::tests::churn_child_process",
                "--nocapture",
            ])
            .args(["--test-threads", "1"])
            .env(CHURN_VAULT_ENV, vault.root())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let ready = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line == "READY");
        assert!(ready, "round {round}: the child never started");
        thread::sleep(std::time::Duration::from_millis(3 + 7 * round));
        child.kill().expect("kill");
        child.wait().expect("reap");

        for id in &ids {
            let read = vault
                .read_task(id)
                .unwrap_or_else(|e| panic!("round {round}: {id}: {e}"));
            assert_eq!(read.task.body, body_of(id), "round {round}: {id}");
        }
        for finding in vault.check().expect("check") {
            assert!(
                matches!(
                    finding,
                    Finding::LeftoverTempFile { .. } | Finding::AbandonedClaimTemp { .. }
                ),
                "round {round}: {finding}"
            );
        }
    }
}

/// Ids and agent names with path tricks are refused before any file is touched; the bait
/// file beside the vault is never reached.
#[test]
fn vault_bad_ids_are_refused_and_touch_nothing() {
    let (dir, vault) = new_vault();
    seed(&vault, 4);
    let bait = dir.path().join("bait.md");
    fs::write(&bait, "---\nid: bait\n---\nbait\n").expect("bait");
    let before = snapshot(dir.path());
    let absolute = bait.with_extension("").display().to_string();
    let long = "x".repeat(MAX_ID_LEN + 1);
    for raw in [
        "..",
        "../bait",
        "../../bait",
        "Needs_Action/email/t00000",
        "a\\b",
        "t\0",
        absolute.as_str(),
        "",
        long.as_str(),
        ".t00000",
    ] {
        let err = TaskId::new(raw).expect_err(raw);
        assert!(err.to_string().contains(&format!("{raw:?}")), "{err}");
        assert!(AgentName::new(raw).is_err(), "agent {raw:?}");
    }
    // The same strings as agent names on otherwise valid operations.
    for raw in ["..", "../..", "x/../../bait"] {
        assert!(matches!(
            AgentName::new(raw),
            Err(VaultError::InvalidId { .. })
        ));
    }
    // A 128-character id is the longest accepted.
    assert!(TaskId::new("x".repeat(MAX_ID_LEN)).is_ok());
    // Claims and reads of valid ids that do not exist touch nothing either.
    let ghost = task_id("bait");
    assert!(matches!(
        vault.claim(&ghost, &agent("a")),
        Err(VaultError::TaskNotFound { .. })
    ));
    assert!(matches!(
        vault.read_task(&ghost),
        Err(VaultError::TaskNotFound { .. })
    ));
    assert_eq!(before, snapshot(dir.path()));
    assert!(
        vault.agents().expect("agents").is_empty(),
        "no agent folder made"
    );
}

/// A file whose id field tries a path trick is reported as broken, not followed.
#[test]
fn vault_front_matter_id_with_path_trick_is_broken_not_followed() {
    let (dir, vault) = new_vault();
    let path = vault.needs_action_dir(Domain::Email).join("t1.md");
    fs::write(
        &path,
        "---\nid: ../../bait\ndomain: email\ntitle: x\ncreated: 2025-01-01\n---\n",
    )
    .expect("write");
    let before = snapshot(dir.path());
    let err = vault
        .claim(&task_id("t1"), &agent("a"))
        .expect_err("refused");
    assert!(
        err.to_string().contains("field `id`: invalid task id"),
        "{err}"
    );
    assert_eq!(before, snapshot(dir.path()));
}

/// A task with broken front matter: every operation names the file and the reason, and
/// the file's bytes never change and it never moves.
#[test]
fn vault_broken_front_matter_is_reported_and_left_untouched() {
    let (_dir, vault) = new_vault();
    let path = vault.needs_action_dir(Domain::Email).join("t1.md");
    let broken = b"---\nid: t1\ndomain: email\ncreated: 2025-01-31T09:00:00Z\n---\nBody\n";
    fs::write(&path, broken).expect("write");
    let unfenced = vault.needs_action_dir(Domain::Social).join("t2.md");
    fs::write(&unfenced, b"just text, no front matter\n").expect("write");
    let id = task_id("t1");

    let read = vault.read_task(&id).expect_err("broken").to_string();
    assert_eq!(
        read,
        "Needs_Action/email/t1.md: front matter: missing field `title`"
    );
    let claim = vault
        .claim(&id, &agent("cloud"))
        .expect_err("broken")
        .to_string();
    assert_eq!(claim, read);

    let listing = vault.list_tasks(TaskFilter::default()).expect("list");
    assert!(listing.tasks.is_empty());
    let broken_paths: Vec<_> = listing.broken.iter().map(|b| b.path.as_str()).collect();
    assert_eq!(
        broken_paths,
        ["Needs_Action/email/t1.md", "Needs_Action/social/t2.md"]
    );
    assert!(
        listing.broken[1]
            .error
            .contains("does not start with a `---` line")
    );

    let findings = vault.repair().expect("repair").left;
    assert!(
        findings.iter().any(|f| f.to_string() == read),
        "{findings:?}"
    );
    assert_eq!(fs::read(&path).expect("still there"), broken);
    assert_eq!(
        fs::read(&unfenced).expect("still there"),
        b"just text, no front matter\n"
    );
    assert!(
        !vault
            .in_progress_root()
            .join("cloud")
            .join("t1.md")
            .exists()
    );
}

/// A claim, a release and a completion keep a human's own keys and the body byte for byte.
#[test]
fn vault_lifecycle_keeps_unknown_keys_and_body() {
    let (_dir, vault) = new_vault();
    let original = "---\nid: t1\nx-custom: keep me\ndomain: payments\ntitle: Pay Bob\n\
                    created: 2025-01-31T09:00:00Z\ntags: [a, b]\nnested: {k: [1, 2]}\n---\n\
                    Body with --- inside\n\n## Notes\n";
    fs::write(
        vault.needs_action_dir(Domain::Payments).join("t1.md"),
        original,
    )
    .expect("write");
    let (id, me) = (task_id("t1"), agent("local"));
    let first = Task::parse(original).expect("parse");

    let claim = vault.claim(&id, &me).expect("claim");
    assert_eq!(claim.path, "In_Progress/local/t1.md");
    let held = vault.read_task(&id).expect("read").task;
    assert_eq!(held.body, first.body);
    assert_eq!(held.meta.extra, first.meta.extra);
    assert_eq!(held.meta.owner.as_ref(), Some(&me));

    let renewed = vault.claim(&id, &me).expect("renew");
    assert!(renewed.renewed);
    assert_eq!(renewed.claimed_at, claim.claimed_at);

    assert_eq!(
        vault.release(&id, &me).expect("release"),
        "Needs_Action/payments/t1.md"
    );
    let released = vault.read_task(&id).expect("read").task;
    assert_eq!(released.meta.owner, None);
    assert_eq!(released.meta.lease_until, None);
    assert_eq!(released.meta.extra, first.meta.extra);

    vault.claim(&id, &me).expect("claim again");
    assert_eq!(
        vault.complete(&id, &me, Some("paid")).expect("complete"),
        "Done/t1.md"
    );
    let done = vault.read_task(&id).expect("read");
    assert_eq!(done.folder, TaskFolder::Done);
    assert_eq!(done.task.meta.note.as_deref(), Some("paid"));
    assert!(done.task.meta.completed_at.is_some());
    assert_eq!(done.task.body, first.body);
    assert_eq!(done.task.meta.extra, first.meta.extra);
    let text = fs::read_to_string(vault.done_dir().join("t1.md")).expect("done file");
    assert!(text.contains("x-custom: keep me"), "{text}");
    assert!(matches!(
        vault.claim(&id, &me),
        Err(VaultError::NotClaimable {
            folder: TaskFolder::Done,
            ..
        })
    ));
}

/// Only the holder may release or complete; a second agent's claim names the holder.
#[test]
fn vault_only_the_holder_releases_or_completes() {
    let (_dir, vault) = new_vault();
    let ids = seed(&vault, 1);
    let (cloud, local) = (agent("cloud"), agent("local"));
    vault.claim(&ids[0], &cloud).expect("claim");
    let err = vault.claim(&ids[0], &local).expect_err("held").to_string();
    assert_eq!(err, "task `t00000` is already claimed by agent `cloud`");
    let err = vault
        .release(&ids[0], &local)
        .expect_err("not held")
        .to_string();
    assert!(err.contains("claimed by agent `cloud`"), "{err}");
    assert!(vault.complete(&ids[0], &local, None).is_err());
    vault.release(&ids[0], &cloud).expect("holder releases");
    assert!(
        vault.release(&ids[0], &cloud).is_err(),
        "nothing left to release"
    );
}

/// Listing filters by folder and domain and reports owner from the folder.
#[test]
fn vault_list_by_folder_and_domain() {
    let (_dir, vault) = new_vault();
    let ids = seed(&vault, 8);
    vault.claim(&ids[0], &agent("cloud")).expect("claim");
    let email = vault
        .list_tasks(TaskFilter {
            folder: Some(TaskFolder::NeedsAction),
            domain: Some(Domain::Email),
        })
        .expect("list");
    let got: Vec<_> = email.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(got, ["t00004"]);
    let held = vault
        .list_tasks(TaskFilter {
            folder: Some(TaskFolder::InProgress),
            domain: None,
        })
        .expect("list");
    assert_eq!(held.tasks.len(), 1);
    assert_eq!(held.tasks[0].owner, Some(agent("cloud")));
    let json = serde_json::to_value(&held.tasks[0]).expect("json");
    assert_eq!(json["folder"], "In_Progress");
    assert_eq!(json["domain"], "email");
}

/// A lease that has run out is reported as stale; a fresh one is not. Before its stamp a
/// claim's lease runs from its file's time with the reader's lease; once stamped, the lease
/// written in the file holds whoever reads it.
#[test]
fn vault_stale_lease_is_reported() {
    let (_dir, vault) = new_vault();
    let ids = seed(&vault, 2);
    let short = vault.clone().with_lease(TimeDelta::minutes(1));
    let (cloud, local) = (agent("cloud"), agent("local"));
    let claim = short.claim(&ids[0], &cloud).expect("claim");
    vault.claim(&ids[1], &local).expect("claim");
    let stamped = vault
        .stamp_claims(&[(local.clone(), ids[1].clone())])
        .expect("stamp");
    assert_eq!(stamped, ["In_Progress/local/t00001.md"]);
    assert!(short.stale_leases(task::now()).expect("stale").is_empty());
    let later = claim.lease_until + TimeDelta::seconds(1);
    let stale = short.stale_leases(later).expect("stale");
    let found: Vec<_> = stale.iter().map(|s| (&s.task_id, &s.owner)).collect();
    assert_eq!(
        found,
        [(&ids[0], &cloud)],
        "the stamped 30-minute lease holds"
    );
    assert_eq!(stale[0].lease_until, claim.lease_until);

    short
        .stamp_claims(&[(cloud.clone(), ids[0].clone())])
        .expect("stamp");
    let stale = vault.stale_leases(later).expect("stale");
    let found: Vec<_> = stale.iter().map(|s| (&s.task_id, s.lease_until)).collect();
    assert_eq!(
        found,
        [(&ids[0], claim.lease_until)],
        "the stamped lease holds"
    );
}

/// Approval requests are written create-only and read back with a matching hash.
#[test]
fn vault_approval_write_and_read() {
    let (_dir, vault) = new_vault();
    let request = ApprovalRequest::new(
        ApprovalId::new("a1").expect("id"),
        Domain::Email,
        "email_send",
        json!({"to": "alice@example.org", "body": "hi"}),
        agent("cloud"),
        task::now() + TimeDelta::hours(24),
    )
    .with_preview("To alice: hi\n");
    assert_eq!(
        vault.write_approval_request(&request).expect("write"),
        "Pending_Approval/email/a1.md"
    );
    assert!(matches!(
        vault.write_approval_request(&request),
        Err(VaultError::AlreadyExists { .. })
    ));
    let (path, back) = vault
        .read_approval_request(&request.meta.approval_id)
        .expect("read");
    assert_eq!(path, "Pending_Approval/email/a1.md");
    assert_eq!(back, request);
    assert!(back.hash_matches());
}

/// `check` lists a duplicated task, an orphaned and a tampered approval, a missing folder and
/// a missing `.gitignore` line; `repair` fixes only the folder and the line, and no file is
/// deleted or changed.
#[test]
fn vault_check_and_repair_list_and_delete_nothing() {
    let (dir, vault) = new_vault();
    let ids = seed(&vault, 2);
    let original = vault.needs_action_dir(Domain::Email).join("t00000.md");
    fs::copy(&original, vault.done_dir().join("t00000.md")).expect("duplicate");
    let orphan = ApprovalRequest::new(
        ApprovalId::new("a-orphan").expect("id"),
        Domain::Social,
        "social_publish",
        json!({"text": "hello"}),
        agent("cloud"),
        task::now(),
    )
    .for_task(task_id("ghost"));
    vault.write_approval_request(&orphan).expect("orphan");
    let fine = orphan.clone();
    let mut fine = ApprovalRequest {
        meta: ApprovalMeta {
            approval_id: ApprovalId::new("a-fine").expect("id"),
            ..fine.meta
        },
        ..fine
    };
    fine.meta.task_id = Some(ids[1].clone());
    vault.write_approval_request(&fine).expect("fine");
    let tampered_path = vault.pending_approval_dir(Domain::Social).join("a-fine.md");
    let text = fs::read_to_string(&tampered_path).expect("read");
    fs::write(&tampered_path, text.replace("text: hello", "text: goodbye")).expect("tamper");
    fs::remove_dir_all(vault.root().join("Updates")).expect("remove folder");
    let gitignore = vault.gitignore_path();
    let trimmed = fs::read_to_string(&gitignore)
        .expect("gitignore")
        .replace("*token*\n", "");
    fs::write(&gitignore, trimmed).expect("gitignore");

    let findings = vault.check().expect("check");
    let expected = [
        Finding::MissingFolder {
            path: "Updates".into(),
        },
        Finding::MissingGitignoreLine {
            line: "*token*".into(),
        },
        Finding::DuplicateTask {
            id: ids[0].clone(),
            paths: vec![
                "Needs_Action/email/t00000.md".into(),
                "Done/t00000.md".into(),
            ],
        },
        Finding::ApprovalHashMismatch {
            path: "Pending_Approval/social/a-fine.md".into(),
        },
        Finding::OrphanedApproval {
            path: "Pending_Approval/social/a-orphan.md".into(),
            task_id: task_id("ghost"),
        },
    ];
    for want in &expected {
        assert!(findings.contains(want), "missing {want:?} in {findings:#?}");
    }
    assert_eq!(findings.len(), expected.len(), "{findings:#?}");

    let before = snapshot(dir.path());
    let report = vault.repair().expect("repair");
    assert_eq!(report.fixed, expected[..2]);
    assert_eq!(report.left, expected[2..]);
    let after = snapshot(dir.path());
    for (path, bytes) in &before {
        if path != &gitignore {
            assert_eq!(
                after.get(path),
                Some(bytes),
                "{} changed or vanished",
                path.display()
            );
        }
    }
    let gitignore_text = fs::read_to_string(&gitignore).expect("gitignore");
    assert!(gitignore_text.lines().any(|l| l == "*token*"));
    assert!(vault.root().join("Updates/.gitkeep").is_file());
    assert_eq!(
        vault.check().expect("check").len(),
        3,
        "only the human's findings remain"
    );
}

/// `init` on an existing vault changes nothing, and a fresh vault checks clean with every
/// secret pattern ignored.
#[test]
fn vault_init_is_idempotent_and_clean() {
    let (dir, vault) = new_vault();
    assert!(vault.check().expect("check").is_empty());
    let first = snapshot(dir.path());
    Vault::init(vault.root()).expect("init again");
    assert_eq!(first, snapshot(dir.path()));
    let gitignore = fs::read_to_string(vault.gitignore_path()).expect("gitignore");
    for line in layout::GITIGNORE_LINES {
        assert!(gitignore.lines().any(|l| l == *line), "{line}");
    }
    for dir in Vault::layout_dirs() {
        assert!(
            vault.root().join(&dir).join(".gitkeep").is_file(),
            "{}",
            dir.display()
        );
    }
    assert!(vault.root().join("Needs_Action/conflicts").is_dir());
    assert!(vault.root().join("Dashboard.md").is_file());
    assert!(vault.root().join("README.md").is_file());
}

/// Creating a task whose id exists anywhere is refused.
#[test]
fn vault_create_task_refuses_existing_id() {
    let (_dir, vault) = new_vault();
    let ids = seed(&vault, 1);
    vault.claim(&ids[0], &agent("cloud")).expect("claim");
    let again = Task::new(ids[0].clone(), Domain::Social, "again", "");
    let err = vault.create_task(&again).expect_err("exists").to_string();
    assert_eq!(
        err,
        "In_Progress/cloud/t00000.md already exists; not replacing it"
    );
    let names: BTreeSet<_> = vault
        .list_tasks(TaskFilter::default())
        .expect("list")
        .tasks
        .into_iter()
        .map(|t| t.path)
        .collect();
    assert_eq!(names.len(), 1);
}

/// Links in a synced vault are never followed: a linked task file or a linked domain folder
/// pointing at valid task files outside the vault lists nothing, claims nothing, changes
/// nothing, and `check` names both links.
#[cfg(unix)]
#[test]
fn vault_symlinks_are_never_followed() {
    let (dir, vault) = new_vault();
    let outside = dir.path().join("outside");
    fs::create_dir_all(&outside).expect("outside");
    let bait = Task::new(task_id("bait"), Domain::Email, "bait", "secret\n");
    fs::write(outside.join("bait.md"), bait.render().expect("render")).expect("bait");
    let linked = Task::new(task_id("linked"), Domain::Whatsapp, "linked", "secret\n");
    fs::write(outside.join("linked.md"), linked.render().expect("render")).expect("linked");
    let email = vault.needs_action_dir(Domain::Email);
    std::os::unix::fs::symlink(outside.join("bait.md"), email.join("bait.md")).expect("link");
    let whatsapp = vault.needs_action_dir(Domain::Whatsapp);
    fs::remove_dir_all(&whatsapp).expect("rm");
    std::os::unix::fs::symlink(&outside, &whatsapp).expect("dir link");
    let before = snapshot(&outside);

    let listing = vault.list_tasks(TaskFilter::default()).expect("list");
    assert!(
        listing.tasks.is_empty() && listing.broken.is_empty(),
        "{listing:?}"
    );
    for id in ["bait", "linked"] {
        let err = vault.claim(&task_id(id), &agent("cloud")).expect_err(id);
        assert!(matches!(err, VaultError::TaskNotFound { .. }), "{err}");
        assert!(vault.read_task(&task_id(id)).is_err());
    }
    let findings = vault.check().expect("check");
    for path in ["Needs_Action/email/bait.md", "Needs_Action/whatsapp"] {
        let want = Finding::Symlink { path: path.into() };
        assert!(findings.contains(&want), "{want:?} not in {findings:#?}");
    }
    assert_eq!(before, snapshot(&outside));
}

/// Lays out on disk what a crash can leave of claims and their stamps (see `specs/vault.md`,
/// "Durability"): a moved, unstamped file is a claim like any other, and `check` tells the
/// abandoned stamp's temporary file from every other leftover; `repair` removes only that
/// one, and no task file changes.
#[test]
fn vault_check_and_repair_handle_an_interrupted_claim() {
    let (dir, vault) = new_vault();
    let ids = seed(&vault, 2);
    let cloud = agent("cloud");
    let held = vault.in_progress_dir(&cloud);
    fs::create_dir_all(&held).expect("agent folder");
    // Task 0: the claim's move reached the disk, its stamp did not.
    let task_path = held.join("t00000.md");
    fs::rename(
        vault.needs_action_dir(Domain::Email).join("t00000.md"),
        &task_path,
    )
    .expect("move");
    let original = vault.load(&task_path, &ids[0]).expect("load");
    let stamped = |task: &Task| {
        let mut task = task.clone();
        task.meta.owner = Some(cloud.clone());
        task.meta.claimed_at = Some(task::now());
        task.meta.lease_until = Some(task::now() + TimeDelta::minutes(30));
        task.render().expect("render")
    };
    // A PID above Linux's limit (2^22) is never running.
    let dead = 4_194_305;
    let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
    let leftover = |name: &str, text: &str, modified| {
        let path = held.join(name);
        fs::write(&path, text).expect("temp");
        fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(modified))
            .expect("mtime");
        path
    };
    let abandoned = leftover(
        &format!(".t00000.md.{dead}.7.tmp"),
        &stamped(&original),
        long_ago,
    );
    // Not removable: a completion's note, a torn copy, a live writer, a fresh file.
    let mut completed = original.clone();
    completed.meta.note = Some("sent the reply".into());
    leftover(
        &format!(".t00000.md.{dead}.8.tmp"),
        &stamped(&completed),
        long_ago,
    );
    let full = stamped(&original);
    leftover(
        &format!(".t00000.md.{dead}.9.tmp"),
        &full[..full.len() - 5],
        long_ago,
    );
    let me = std::process::id();
    leftover(&format!(".t00000.md.{me}.10.tmp"), &full, long_ago);
    leftover(
        &format!(".t00000.md.{dead}.11.tmp"),
        &full,
        std::time::SystemTime::now(),
    );

    let findings = vault.check().expect("check");
    let removable = Finding::AbandonedClaimTemp {
        path: format!("In_Progress/cloud/.t00000.md.{dead}.7.tmp"),
        task: "In_Progress/cloud/t00000.md".into(),
    };
    assert!(findings.contains(&removable), "{findings:#?}");
    let kept: BTreeSet<String> = findings
        .iter()
        .filter_map(|f| match f {
            Finding::LeftoverTempFile { path } => Some(path.clone()),
            _ => None,
        })
        .collect();
    let want: BTreeSet<String> = [
        format!(".t00000.md.{dead}.8.tmp"),
        format!(".t00000.md.{dead}.9.tmp"),
        format!(".t00000.md.{me}.10.tmp"),
        format!(".t00000.md.{dead}.11.tmp"),
    ]
    .into_iter()
    .map(|n| format!("In_Progress/cloud/{n}"))
    .collect();
    assert_eq!(kept, want);
    assert_eq!(findings.len(), 1 + want.len(), "{findings:#?}");

    let mut before = snapshot(dir.path());
    let report = vault.repair().expect("repair");
    assert_eq!(report.fixed, vec![removable]);
    assert!(!abandoned.exists());
    before.remove(&abandoned);
    assert_eq!(before, snapshot(dir.path()), "only the abandoned copy went");

    // The unstamped claim reads as cloud's, its lease from the file's time; claiming again
    // renews it and writes it.
    let read = vault.read_task(&ids[0]).expect("read").task;
    assert_eq!(read.meta.owner.as_ref(), Some(&cloud));
    let changed = file_time(&task_path);
    assert_eq!(read.meta.lease_until, Some(changed + vault.lease()));
    let claim = vault.claim(&ids[0], &cloud).expect("claim again");
    assert!(claim.renewed);
    assert_eq!(claim.claimed_at, changed, "the first claim's time is kept");
    let stored = vault.load(&task_path, &ids[0]).expect("load");
    assert_eq!(stored.meta.lease_until, Some(claim.lease_until));
    assert_eq!(stored.body, body_of(&ids[0]));
}

/// A claim moves the file and sets its time, nothing more: the same inode and bytes, no
/// new file. Every reader sees the claim's owner and lease all the same, and the stamp
/// written later holds exactly what the claim answered.
#[cfg(unix)]
#[test]
fn vault_claim_writes_no_data_and_reads_as_claimed() {
    use std::os::unix::fs::MetadataExt;
    let (_dir, vault) = new_vault();
    let ids = seed(&vault, 1);
    let cloud = agent("cloud");
    let source = vault.needs_action_dir(Domain::Email).join("t00000.md");
    let (bytes, inode) = (
        fs::read(&source).expect("read"),
        fs::metadata(&source).expect("meta").ino(),
    );
    let claim = vault.claim(&ids[0], &cloud).expect("claim");
    let held = vault.in_progress_dir(&cloud).join("t00000.md");
    assert_eq!(fs::read(&held).expect("read"), bytes);
    assert_eq!(fs::metadata(&held).expect("meta").ino(), inode);
    assert_eq!(file_time(&held), claim.claimed_at);
    assert_eq!(
        fs::read_dir(vault.in_progress_dir(&cloud))
            .expect("dir")
            .count(),
        1
    );

    let read = vault.read_task(&ids[0]).expect("read").task.meta;
    assert_eq!(read.owner.as_ref(), Some(&cloud));
    assert_eq!(read.claimed_at, Some(claim.claimed_at));
    assert_eq!(read.lease_until, Some(claim.lease_until));

    let held_ids = [(cloud.clone(), ids[0].clone())];
    assert_eq!(vault.stamp_claims(&held_ids).expect("stamp").len(), 1);
    let stored = vault.load(&held, &ids[0]).expect("load");
    assert_eq!(stored.meta, read, "the stamp writes what readers saw");
    assert_eq!(stored.body, body_of(&ids[0]));
    assert!(vault.stamp_claims(&held_ids).expect("again").is_empty());
    assert!(vault.check().expect("check").is_empty());
}

/// A task that still carries an earlier claim's fields (moved back by hand) gets this
/// claim's owner and lease written at once, so an old lease never makes it look stale.
#[test]
fn vault_claim_of_a_file_with_old_claim_fields_writes_the_new_ones() {
    let (_dir, vault) = new_vault();
    let ids = seed(&vault, 1);
    let path = vault.needs_action_dir(Domain::Email).join("t00000.md");
    let mut task = vault.load(&path, &ids[0]).expect("load");
    let long_ago = task::now() - TimeDelta::days(3);
    task.meta.owner = Some(agent("cloud"));
    task.meta.claimed_at = Some(long_ago);
    task.meta.lease_until = Some(long_ago + TimeDelta::minutes(30));
    fs::write(&path, task.render().expect("render")).expect("write");

    let claim = vault.claim(&ids[0], &agent("cloud")).expect("claim");
    assert!(!claim.renewed);
    let held = vault.in_progress_dir(&agent("cloud")).join("t00000.md");
    let stored = vault.load(&held, &ids[0]).expect("load").meta;
    assert_eq!(stored.claimed_at, Some(claim.claimed_at));
    assert_eq!(stored.lease_until, Some(claim.lease_until));
    assert!(vault.stale_leases(task::now()).expect("stale").is_empty());
}

/// A claim leaves no temporary file behind, and `flush` succeeds on the vault.
#[test]
fn vault_claim_leaves_no_temp_and_flush_succeeds() {
    let (dir, vault) = new_vault();
    let ids = seed(&vault, 3);
    for id in &ids {
        vault.claim(id, &agent("cloud")).expect("claim");
    }
    vault
        .complete(&ids[0], &agent("cloud"), Some("done"))
        .expect("complete");
    vault.release(&ids[1], &agent("cloud")).expect("release");
    vault.flush().expect("flush");
    let temps: Vec<_> = snapshot(dir.path())
        .into_keys()
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
    assert!(vault.check().expect("check").is_empty());
}

/// An agent folder that is a link holds nothing: a task file behind it makes nobody its
/// holder, so the task is claimed normally, and `check` names the link.
#[cfg(unix)]
#[test]
fn vault_linked_agent_folder_holds_nothing() {
    let (dir, vault) = new_vault();
    let ids = seed(&vault, 1);
    let outside = dir.path().join("outside");
    fs::create_dir_all(&outside).expect("outside");
    let copy = vault.needs_action_dir(Domain::Email).join("t00000.md");
    fs::copy(&copy, outside.join("t00000.md")).expect("bait");
    let linked = vault.in_progress_root().join("mallory");
    std::os::unix::fs::symlink(&outside, &linked).expect("link");

    let claim = vault.claim(&ids[0], &agent("cloud")).expect("claim");
    assert_eq!(claim.owner, agent("cloud"));
    let findings = vault.check().expect("check");
    let want = Finding::Symlink {
        path: "In_Progress/mallory".into(),
    };
    assert!(findings.contains(&want), "{findings:#?}");
    assert_eq!(findings.len(), 1, "{findings:#?}");
}

/// Makes `at` (a folder or file of the vault, there or not) a link to a fresh, empty bait
/// folder inside the test's own temporary directory; returns the bait.
#[cfg(unix)]
fn link_to_bait(dir: &TempDir, at: &Path) -> PathBuf {
    let name = at.file_name().expect("name").to_string_lossy().into_owned();
    let bait = dir.path().join(format!("bait-{name}"));
    fs::create_dir_all(&bait).expect("bait");
    match fs::symlink_metadata(at) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(at).expect("remove folder"),
        Ok(_) => fs::remove_file(at).expect("remove file"),
        Err(_) => {}
    }
    std::os::unix::fs::symlink(&bait, at).expect("link");
    bait
}

/// Asserts `error` is the link guard's refusal of `path`, in words the owner can act on.
fn assert_link_refused(error: &VaultError, path: &str) {
    match error {
        VaultError::Refused(refused) => {
            assert_eq!(refused.path, path, "{error}");
            assert_eq!(refused.reason, Refusal::Link, "{error}");
        }
        other => panic!("expected a link refusal of {path}, got {other}"),
    }
    assert_eq!(
        error.to_string(),
        format!("`{path}` is a link; aie never writes through links")
    );
}

/// Asserts the bait folder is still empty: nothing was written through the link.
fn assert_empty(bait: &Path) {
    let left: Vec<_> = fs::read_dir(bait).expect("bait").collect();
    assert!(left.is_empty(), "written through the link: {left:?}");
}

/// `In_Progress/<agent>` committed as a link: the claim is refused naming the link, nothing
/// lands in the link's target, and the task stays in `Needs_Action/` as it was.
#[cfg(unix)]
#[test]
fn vault_claim_refuses_linked_agent_folder() {
    let (dir, vault) = new_vault();
    let ids = seed(&vault, 1);
    let local = agent("local");
    let bait = link_to_bait(&dir, &vault.in_progress_dir(&local));
    let source = vault.needs_action_dir(Domain::Email).join("t00000.md");
    let before = fs::read(&source).expect("task");

    let err = vault.claim(&ids[0], &local).expect_err("refused");
    assert_link_refused(&err, "In_Progress/local");
    assert_empty(&bait);
    assert_eq!(fs::read(&source).expect("task stays"), before);
    let stored = vault.read_task(&ids[0]).expect("read");
    assert_eq!(stored.folder, TaskFolder::NeedsAction);
}

/// A release into a linked `Needs_Action/<domain>` and a completion into a linked `Done` are
/// refused before anything is rewritten or moved: the task stays held, unchanged.
#[cfg(unix)]
#[test]
fn vault_release_and_complete_refuse_linked_destination() {
    let (dir, vault) = new_vault();
    let ids = seed(&vault, 2);
    let cloud = agent("cloud");
    for id in &ids {
        vault.claim(id, &cloud).expect("claim");
    }
    let held = |id: &TaskId| vault.in_progress_dir(&cloud).join(id.file_name());
    let before: Vec<_> = ids
        .iter()
        .map(|id| fs::read(held(id)).expect("held"))
        .collect();

    let bait = link_to_bait(&dir, &vault.needs_action_dir(Domain::Email));
    let err = vault.release(&ids[0], &cloud).expect_err("release refused");
    assert_link_refused(&err, "Needs_Action/email");
    assert_empty(&bait);

    let bait = link_to_bait(&dir, &vault.done_dir());
    let err = vault
        .complete(&ids[1], &cloud, Some("done"))
        .expect_err("complete refused");
    assert_link_refused(&err, "Done");
    assert_empty(&bait);

    for (id, bytes) in ids.iter().zip(before) {
        assert_eq!(
            fs::read(held(id)).expect("still held"),
            bytes,
            "{id} unchanged"
        );
    }
}

/// A new task into a linked `Needs_Action/<domain>` and a new approval request into a linked
/// `Pending_Approval/<domain>` are refused, and nothing is written through either link.
#[cfg(unix)]
#[test]
fn vault_new_files_refuse_linked_folders() {
    let (dir, vault) = new_vault();
    let bait = link_to_bait(&dir, &vault.needs_action_dir(Domain::Payments));
    let task = Task::new(task_id("pay"), Domain::Payments, "Pay", "body\n");
    let err = vault.create_task(&task).expect_err("refused");
    assert_link_refused(&err, "Needs_Action/payments");
    assert_empty(&bait);

    let bait = link_to_bait(&dir, &vault.pending_approval_dir(Domain::Email));
    let request = ApprovalRequest::new(
        ApprovalId::new("a-1").expect("id"),
        Domain::Email,
        "email_send",
        json!({"to": "x@example.com"}),
        agent("cloud"),
        chrono::Utc::now() + TimeDelta::hours(1),
    );
    let err = vault.write_approval_request(&request).expect_err("refused");
    assert_link_refused(&err, "Pending_Approval/email");
    assert_empty(&bait);
}

/// Laying out a vault whose `Updates`, `.gitignore` and `Dashboard.md` are links (an older
/// build's checkout) starts all the same, writes nothing through them, and `check` and
/// `repair` name the links instead of following them.
#[cfg(unix)]
#[test]
fn vault_init_leaves_links_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("vault");
    fs::create_dir_all(&root).expect("root");
    let bait = link_to_bait(&dir, &root.join("Updates"));
    let files = dir.path().join("bait-files");
    fs::create_dir_all(&files).expect("bait files");
    for name in [".gitignore", "Dashboard.md"] {
        fs::write(files.join(name), "mine\n").expect("bait file");
        std::os::unix::fs::symlink(files.join(name), root.join(name)).expect("link");
    }

    let vault = Vault::init(&root).expect("init starts despite the links");
    assert_empty(&bait);
    for name in [".gitignore", "Dashboard.md"] {
        assert_eq!(
            fs::read_to_string(files.join(name)).expect("bait"),
            "mine\n"
        );
    }
    let report = vault.repair().expect("repair");
    assert_empty(&bait);
    assert_eq!(
        fs::read_to_string(files.join(".gitignore")).expect("bait"),
        "mine\n"
    );
    for path in ["Updates", ".gitignore", "Dashboard.md"] {
        let want = Finding::Symlink { path: path.into() };
        assert!(report.left.contains(&want), "{want:?} not in {report:#?}");
    }
}

/// The primitives every vault write goes through refuse a link at the file itself: the
/// link's target is neither written, replaced, appended to nor read, and the link stays.
#[cfg(unix)]
#[test]
fn vault_file_writes_refuse_a_linked_file() {
    let (dir, vault) = new_vault();
    let bait = dir.path().join("bait.md");
    fs::write(&bait, "mine\n").expect("bait");
    let link = vault.root().join("Updates").join("note.md");
    std::os::unix::fs::symlink(&bait, &link).expect("link");
    let refused = |result: std::io::Result<()>, what: &str| {
        let err = result.expect_err(what);
        let refusal = nofollow::refusal(&err).unwrap_or_else(|| panic!("{what}: {err}"));
        assert_eq!(refusal.path, "Updates/note.md", "{what}");
    };
    refused(vault.write_new_file(&link, b"x"), "write_new_file");
    refused(
        vault.write_replacing_file(&link, b"x"),
        "write_replacing_file",
    );
    refused(
        vault.write_replacing_unflushed(&link, b"x"),
        "write_replacing_unflushed",
    );
    refused(vault.open_append(&link).map(drop), "open_append");
    refused(vault.read_plain_file(&link).map(drop), "read_plain_file");
    refused(
        vault.move_file(&link, &vault.done_dir().join("note.md")),
        "move_file from a link",
    );
    assert_eq!(fs::read_to_string(&bait).expect("bait"), "mine\n");
    assert!(fs::symlink_metadata(&link).expect("link").is_symlink());
    assert!(!vault.done_dir().join("note.md").exists());
}

/// A move (the approvals' set-aside into `Quarantine/`, their moves between `Approved/`,
/// `Rejected/` and `Done/approvals/`) refuses a linked folder on either side: a file is
/// neither moved out of the vault nor brought into it from outside.
#[cfg(unix)]
#[test]
fn vault_move_refuses_linked_folder_on_either_side() {
    let (dir, vault) = new_vault();
    let pending = vault.pending_approval_dir(Domain::Email).join("a-1.md");
    fs::write(&pending, "request\n").expect("request");
    let bait = link_to_bait(&dir, &vault.root().join("Quarantine"));
    let err = vault
        .move_file(&pending, &vault.root().join("Quarantine").join("a-1.md"))
        .expect_err("into a link");
    assert_eq!(
        nofollow::refusal(&err).map(|r| r.path.as_str()),
        Some("Quarantine")
    );
    assert_empty(&bait);
    assert_eq!(fs::read_to_string(&pending).expect("stays"), "request\n");

    let outside = link_to_bait(&dir, &vault.root().join("Approved"));
    fs::write(outside.join("a-2.md"), "outside\n").expect("outside file");
    let into = vault.root().join("Rejected").join("a-2.md");
    let err = vault
        .move_file(&vault.root().join("Approved").join("a-2.md"), &into)
        .expect_err("out of a link");
    assert_eq!(
        nofollow::refusal(&err).map(|r| r.path.as_str()),
        Some("Approved")
    );
    assert!(!into.exists(), "nothing brought in from outside");
    assert_eq!(
        fs::read_to_string(outside.join("a-2.md")).expect("stays"),
        "outside\n"
    );
}

/// Listings and quoting reads skip links: a linked folder lists nothing, a linked file in a
/// real folder is no file of it, and a folder on the way that is a file is refused.
#[cfg(unix)]
#[test]
fn vault_listings_skip_links() {
    let (dir, vault) = new_vault();
    let bait = link_to_bait(&dir, &vault.root().join("Updates"));
    fs::write(bait.join("secret.md"), "secret\n").expect("secret");
    let updates = vault.root().join("Updates");
    assert!(vault.markdown_files(&updates).expect("list").is_empty());
    let err = vault
        .read_plain_file(&updates.join("secret.md"))
        .expect_err("through a link");
    assert!(nofollow::refusal(&err).is_some(), "{err}");

    let done = vault.done_dir();
    std::os::unix::fs::symlink(bait.join("secret.md"), done.join("secret.md")).expect("link");
    fs::write(done.join("real.md"), "real\n").expect("real");
    let listed = vault.markdown_files(&done).expect("list");
    assert_eq!(listed, vec![done.join("real.md")]);

    let err = vault
        .write_new_file(&done.join("real.md").join("x.md"), b"x")
        .expect_err("a file is no folder");
    let refusal = nofollow::refusal(&err).expect("refusal");
    assert_eq!(
        (refusal.path.as_str(), refusal.reason),
        ("Done/real.md", Refusal::NotAFolder)
    );
}

/// A held task file that is a link is never stamped: nothing is written to its target.
#[cfg(unix)]
#[test]
fn vault_stamp_skips_linked_task_file() {
    let (dir, vault) = new_vault();
    let cloud = agent("cloud");
    let held = vault.in_progress_dir(&cloud);
    fs::create_dir_all(&held).expect("agent folder");
    let bait = dir.path().join("t1.md");
    let task = Task::new(task_id("t1"), Domain::Email, "bait", "body\n");
    let text = task.render().expect("render");
    fs::write(&bait, &text).expect("bait");
    std::os::unix::fs::symlink(&bait, held.join("t1.md")).expect("link");
    let stamped = vault
        .stamp_claims(&[(cloud, task_id("t1"))])
        .expect("stamp");
    assert!(stamped.is_empty(), "{stamped:?}");
    assert_eq!(fs::read_to_string(&bait).expect("bait"), text);
}

/// The vault's root is the owner's choice and may itself be a link: only what lies below it
/// is guarded, so a vault opened through a linked root lists, claims and completes as usual.
#[cfg(unix)]
#[test]
fn vault_root_may_be_a_link() {
    let (dir, real) = new_vault();
    let ids = seed(&real, 1);
    let linked_root = dir.path().join("linked-vault");
    std::os::unix::fs::symlink(real.root(), &linked_root).expect("link");
    let vault = Vault::open(&linked_root).expect("open");
    assert_eq!(
        vault
            .list_tasks(TaskFilter::default())
            .expect("list")
            .tasks
            .len(),
        1
    );
    let cloud = agent("cloud");
    vault.claim(&ids[0], &cloud).expect("claim");
    vault.complete(&ids[0], &cloud, None).expect("complete");
    assert!(real.done_dir().join("t00000.md").is_file());
    assert!(vault.check().expect("check").is_empty());
}
