//! Claims across replicas through a real git remote: every task ends with exactly one owner
//! in every replica and on the remote, every loser is told who won, and no task is lost.

mod sync_support;

use std::{collections::BTreeMap, fs};

use aie_shared::vault::Task;
use aie_vault_claim::sync::{ClaimOutcome, Replica, Zone};
use sync_support::{Net, agent, head_of, holder, seed_tasks, settle, task_files, task_paths_in};

/// Checks the invariants on every replica's disk and on the remote: each of `count` tasks
/// exactly once, in one place, the same place everywhere; returns id → holder.
fn assert_one_owner_everywhere(
    net: &Net,
    replicas: &[&Replica],
    count: usize,
) -> BTreeMap<String, Option<String>> {
    let remote = task_paths_in(&net.remote_files());
    assert_eq!(remote.len(), count, "task count on the remote");
    for (id, paths) in &remote {
        assert_eq!(paths.len(), 1, "remote: {id} in {paths:?}");
    }
    for replica in replicas {
        let root = replica.vault().root();
        let disk = task_files(root);
        assert_eq!(disk, remote, "{} differs from the remote", root.display());
        assert_eq!(
            head_of(root),
            net.remote_head(),
            "{} not converged",
            root.display()
        );
    }
    remote
        .into_iter()
        .map(|(id, paths)| (id, holder(&paths)))
        .collect()
}

/// Two replicas cut off from the remote both claim the same 200 tasks; after they sync,
/// every task has one owner everywhere (the one that reached the remote first), the loser's
/// report names the winner for each, and no task file is lost.
#[test]
fn sync_two_replicas_claim_same_tasks_offline_one_owner_each() {
    let net = Net::new();
    let alpha = net.replica("alpha", Zone::Cloud);
    let ids = seed_tasks(&alpha, 200);
    let beta = net.replica("beta", Zone::Local);
    for replica in [&alpha, &beta] {
        replica.set_remote_url(&net.nowhere()).expect("cut off");
    }
    for id in &ids {
        assert!(matches!(
            alpha.claim(id).expect("claim"),
            ClaimOutcome::Pending { .. }
        ));
    }
    for id in ids.iter().rev() {
        assert!(matches!(
            beta.claim(id).expect("claim"),
            ClaimOutcome::Pending { .. }
        ));
    }
    assert_eq!(alpha.status().expect("status").pending_claims.len(), 200);
    for replica in [&alpha, &beta] {
        replica.set_remote_url(&net.url()).expect("reconnect");
    }

    let first = alpha.sync().expect("alpha sync");
    assert_eq!(
        first.confirmed_claims.len(),
        200,
        "alpha's claims confirmed"
    );
    assert!(first.lost_claims.is_empty());
    let second = beta.sync().expect("beta sync");
    assert_eq!(second.lost_claims.len(), 200, "beta told of every loss");
    for lost in &second.lost_claims {
        assert_eq!(lost.owner, Some(agent("alpha")), "{lost:?}");
    }
    assert!(second.confirmed_claims.is_empty());
    settle(&[&alpha, &beta], 3);

    let owners = assert_one_owner_everywhere(&net, &[&alpha, &beta], 200);
    assert!(owners.values().all(|o| o.as_deref() == Some("alpha")));
    assert!(beta.status().expect("status").pending_claims.is_empty());
}

/// Three replicas: two claim all 200 tasks offline while the third claims half of them
/// online; after syncing, each task has the one owner whose claim reached the remote first,
/// and both losers are told that owner for each task they lost.
#[test]
fn sync_three_replicas_claim_same_tasks_one_owner_each() {
    let net = Net::new();
    let alpha = net.replica("alpha", Zone::Cloud);
    let ids = seed_tasks(&alpha, 200);
    let beta = net.replica("beta", Zone::Cloud);
    let gamma = net.replica("gamma", Zone::Local);
    for replica in [&alpha, &beta] {
        replica.set_remote_url(&net.nowhere()).expect("cut off");
        for id in &ids {
            assert!(matches!(
                replica.claim(id).expect("claim"),
                ClaimOutcome::Pending { .. }
            ));
        }
        replica.set_remote_url(&net.url()).expect("reconnect");
    }
    for id in &ids[100..] {
        let outcome = gamma.claim(id).expect("online claim");
        assert!(outcome.confirmed(), "{outcome:?}");
    }

    let alpha_report = alpha.sync().expect("alpha sync");
    let beta_report = beta.sync().expect("beta sync");
    settle(&[&alpha, &beta, &gamma], 4);

    let owners = assert_one_owner_everywhere(&net, &[&alpha, &beta, &gamma], 200);
    for (i, id) in ids.iter().enumerate() {
        let expected = if i < 100 { "alpha" } else { "gamma" };
        assert_eq!(owners[id.as_str()].as_deref(), Some(expected), "{id}");
    }
    assert_eq!(alpha_report.confirmed_claims.len(), 100);
    assert_eq!(alpha_report.lost_claims.len(), 100);
    assert!(
        alpha_report
            .lost_claims
            .iter()
            .all(|l| l.owner == Some(agent("gamma")))
    );
    assert_eq!(beta_report.lost_claims.len(), 200);
    for lost in &beta_report.lost_claims {
        let expected = owners[lost.task_id.as_str()].as_deref();
        assert_eq!(
            lost.owner.as_ref().map(|a| a.as_str()),
            expected,
            "{lost:?}"
        );
    }
}

/// Two replicas online claim the same 60 tasks at the same time from two threads: the push
/// is the compare-and-swap, so at most one claim per task is confirmed, the other is told
/// the winner (or, if the remote kept moving under it, left pending until a sync settles it),
/// and after syncing the confirmed claim's agent owns the task everywhere.
#[test]
fn sync_concurrent_online_claims_exactly_one_confirmed() {
    let net = Net::new();
    let alpha = net.replica("alpha", Zone::Cloud);
    let ids = seed_tasks(&alpha, 60);
    let beta = net.replica("beta", Zone::Local);
    let claim_all = |replica: &Replica, order: Vec<usize>| {
        order
            .into_iter()
            .map(|i| (i, replica.claim(&ids[i]).expect("claim")))
            .collect::<BTreeMap<_, _>>()
    };
    let forward: Vec<usize> = (0..ids.len()).collect();
    // A different order, so the two meet in the middle and race on many tasks.
    let shuffled: Vec<usize> = (0..ids.len()).map(|i| (i * 37 + 11) % ids.len()).collect();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| claim_all(&alpha, forward));
        let b = s.spawn(|| claim_all(&beta, shuffled));
        (
            a.join().expect("alpha thread"),
            b.join().expect("beta thread"),
        )
    });
    let mut settled: BTreeMap<String, String> = BTreeMap::new();
    for (name, replica) in [("alpha", &alpha), ("beta", &beta)] {
        let report = replica.sync().expect("sync");
        for id in report.confirmed_claims {
            settled.insert(id.to_string(), name.to_owned());
        }
        for lost in report.lost_claims {
            let owner = lost.owner.map(|o| o.to_string()).unwrap_or_default();
            settled.insert(lost.task_id.to_string(), owner);
        }
    }
    settle(&[&alpha, &beta], 3);
    let owners = assert_one_owner_everywhere(&net, &[&alpha, &beta], ids.len());
    let mut pending = 0;
    for (i, id) in ids.iter().enumerate() {
        let (oa, ob) = (&a[&i], &b[&i]);
        let owner = owners[id.as_str()].clone().expect("every task claimed");
        assert!(!(oa.confirmed() && ob.confirmed()), "{id}: both confirmed");
        for outcome in [oa, ob] {
            match outcome {
                ClaimOutcome::Confirmed { claim } => assert_eq!(claim.owner.as_str(), owner),
                ClaimOutcome::Lost { owner: told, .. } => {
                    assert_eq!(
                        told.as_ref().map(|o| o.as_str()),
                        Some(owner.as_str()),
                        "{id}"
                    )
                }
                ClaimOutcome::Pending { .. } => {
                    pending += 1;
                    // The next sync told this replica how it ended.
                    assert_eq!(settled.get(id.as_str()), Some(&owner), "{id}");
                }
            }
        }
    }
    println!(
        "{pending} of {} claims were left pending by a busy remote",
        2 * ids.len()
    );
}

/// One replica loses the remote while both keep working (claims, completions, edits); when
/// it is back, both converge on one tree, its offline claims are confirmed, nothing is lost.
#[test]
fn sync_remote_unreachable_then_back_converges() {
    let net = Net::new();
    let alpha = net.replica("alpha", Zone::Cloud);
    let ids = seed_tasks(&alpha, 20);
    let beta = net.replica("beta", Zone::Local);
    beta.set_remote_url(&net.nowhere()).expect("cut off");

    for id in &ids[..5] {
        assert!(alpha.claim(id).expect("claim").confirmed());
    }
    alpha.with_vault(|v| {
        v.complete(&ids[0], &agent("alpha"), Some("done"))
            .expect("complete")
    });
    for id in &ids[10..15] {
        assert!(matches!(
            beta.claim(id).expect("claim"),
            ClaimOutcome::Pending { .. }
        ));
    }
    let note = beta.vault().root().join("Plans/email/offline-plan.md");
    std::fs::write(&note, "Written while offline.\n").expect("note");
    let offline = beta.sync().expect("offline sync");
    assert!(
        offline
            .offline
            .as_deref()
            .is_some_and(|r| r.contains("missing.git")),
        "{offline:?}"
    );
    let status = beta.status().expect("status");
    assert!(status.ahead >= 2, "{status:?}");
    assert!(status.last_error.is_some());
    alpha.sync().expect("alpha sync");

    beta.set_remote_url(&net.url()).expect("back");
    let back = beta.sync().expect("back online");
    assert!(back.offline.is_none(), "{back:?}");
    assert_eq!(back.confirmed_claims.len(), 5, "{back:?}");
    assert!(back.lost_claims.is_empty());
    settle(&[&alpha, &beta], 3);

    let owners = assert_one_owner_everywhere(&net, &[&alpha, &beta], 20);
    assert_eq!(owners["t000"], None, "completed");
    assert_eq!(owners["t001"].as_deref(), Some("alpha"));
    assert_eq!(owners["t010"].as_deref(), Some("beta"));
    assert!(
        net.remote_files()
            .contains_key("Plans/email/offline-plan.md")
    );
    assert!(
        alpha
            .vault()
            .root()
            .join("Plans/email/offline-plan.md")
            .is_file()
    );
    let status = beta.status().expect("status");
    assert_eq!((status.ahead, status.behind), (0, 0));
    assert!(status.last_error.is_none() && status.last_sync.is_some());
}

/// A claim of a task another replica already holds on the remote is answered at claim time,
/// naming the holder, and the local file goes to the holder's folder.
#[test]
fn sync_claim_lost_at_claim_time_names_the_holder() {
    let net = Net::new();
    let alpha = net.replica("alpha", Zone::Cloud);
    let ids = seed_tasks(&alpha, 3);
    let beta = net.replica("beta", Zone::Local);
    assert!(alpha.claim(&ids[1]).expect("alpha claim").confirmed());
    // Beta has not synced: its vault still shows the task unclaimed, so the loss is found
    // by the refused push and the merge that follows.
    match beta.claim(&ids[1]).expect("beta claim") {
        ClaimOutcome::Lost { owner, task_id } => {
            assert_eq!(owner, Some(agent("alpha")));
            assert_eq!(task_id, ids[1]);
        }
        other => panic!("expected a lost claim, got {other:?}"),
    }
    let root = beta.vault().root();
    assert!(root.join("In_Progress/alpha/t001.md").is_file());
    assert!(!root.join("In_Progress/beta/t001.md").exists());
    // Now beta knows: a second try is refused locally, naming alpha again.
    let again = beta.claim(&ids[1]).expect("second claim");
    assert_eq!(again.owner(), Some(&agent("alpha")));
    assert!(!again.confirmed());
}

/// A claim writes no owner or lease into its file; the commit that records it does, for the
/// other replicas, and the working file is left equal to what was committed. This holds for
/// a claim the sync finds (made on the vault directly) and for a claim pushed at once.
#[test]
fn sync_commits_each_claim_with_its_owner_and_lease() {
    let net = Net::new();
    let alpha = net.replica("alpha", Zone::Cloud);
    let ids = seed_tasks(&alpha, 2);
    let root = alpha.vault().root().to_path_buf();
    let read = |rel: &str| {
        Task::parse(&String::from_utf8_lossy(
            &fs::read(root.join(rel)).expect("read"),
        ))
        .expect("parse")
    };

    let found = alpha.with_vault(|vault| vault.claim(&ids[0], &agent("alpha")).expect("claim"));
    let on_disk = read(&found.path);
    assert_eq!(
        on_disk.meta.owner, None,
        "the claim itself only moved the file"
    );
    assert!(alpha.sync().expect("sync").offline.is_none());

    let pushed = match alpha.claim(&ids[1]).expect("claim") {
        ClaimOutcome::Confirmed { claim } => claim,
        other => panic!("expected a confirmed claim, got {other:?}"),
    };
    let remote = net.remote_files();
    for claim in [&found, &pushed] {
        let blob = remote.get(&claim.path).expect("claim on the remote");
        let committed = Task::parse(&String::from_utf8_lossy(blob)).expect("parse blob");
        assert_eq!(committed.meta.owner, Some(agent("alpha")), "{}", claim.path);
        assert_eq!(committed.meta.claimed_at, Some(claim.claimed_at));
        assert_eq!(committed.meta.lease_until, Some(claim.lease_until));
        assert_eq!(committed.body, "Body.\n");
        assert_eq!(
            &fs::read(root.join(&claim.path)).expect("read"),
            blob,
            "working file as committed"
        );
    }
    let again = alpha.sync().expect("sync");
    assert_eq!((again.pushed, again.pulled), (0, 0), "{again:?}");
    let leftovers: Vec<_> = fs::read_dir(root.join("In_Progress/alpha"))
        .expect("agent folder")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
