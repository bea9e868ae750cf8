//! The merge rules of `specs/sync.md`, one test per rule, through real replicas and a real
//! bare remote.

mod sync_support;

use std::fs;

use aie_shared::vault::layout::DASHBOARD_SEED;
use aie_vault_claim::sync::{ClaimOutcome, SyncError, Zone};
use chrono::TimeDelta;
use sync_support::{Net, agent, seed_tasks, settle, task_files, task_id};

/// The file names under a vault folder that start with `prefix`.
fn names_in(net: &Net, folder: &str, prefix: &str) -> Vec<String> {
    net.remote_files()
        .keys()
        .filter_map(|p| p.strip_prefix(&format!("{folder}/")))
        .filter(|n| n.starts_with(prefix) && !n.contains('/'))
        .map(str::to_owned)
        .collect()
}

/// `Dashboard.md` has one writer, the local zone: the cloud's edit never takes effect on
/// local (it is refused and reported), and the cloud replica ends with the local version.
/// The cloud cannot rebuild it at all.
#[test]
fn sync_rule_dashboard_cloud_edit_dropped() {
    let net = Net::new();
    let owner = net.replica("owner", Zone::Local);
    seed_tasks(&owner, 2);
    let cloud = net.replica("cloud", Zone::Cloud);
    assert!(matches!(
        cloud.refresh_dashboard(),
        Err(SyncError::DashboardIsLocal)
    ));

    let cloud_dash = cloud.vault().root().join("Dashboard.md");
    fs::write(&cloud_dash, "# Dashboard\ncloud scribble\n").expect("cloud edit");
    assert_eq!(cloud.sync().expect("cloud sync").pushed, 1);
    assert!(owner.refresh_dashboard().expect("refresh"));
    let report = owner.sync().expect("owner sync");
    assert!(
        report
            .refused
            .iter()
            .any(|r| r.path == "Dashboard.md" && r.reason.contains("only the local zone")),
        "{report:?}"
    );
    settle(&[&owner, &cloud], 3);
    let local_text = fs::read_to_string(owner.vault().root().join("Dashboard.md")).expect("dash");
    assert!(local_text.contains("## Counts") && !local_text.contains("cloud scribble"));
    assert_eq!(
        fs::read_to_string(&cloud_dash).expect("cloud dash"),
        local_text
    );
    assert_eq!(net.remote_files()["Dashboard.md"], local_text.as_bytes());
    assert_ne!(local_text, DASHBOARD_SEED);
}

/// `Updates/` notes both replicas wrote under one name are both kept, side by side, with no
/// conflict note for the human.
#[test]
fn sync_rule_updates_keep_both() {
    let net = Net::new();
    let owner = net.replica("owner", Zone::Local);
    let cloud = net.replica("cloud", Zone::Cloud);
    fs::write(
        cloud.vault().root().join("Updates/2025-01-31.md"),
        "From the cloud.\n",
    )
    .expect("w");
    fs::write(
        owner.vault().root().join("Updates/2025-01-31.md"),
        "From the owner.\n",
    )
    .expect("w");
    cloud.sync().expect("cloud sync");
    let report = owner.sync().expect("owner sync");
    assert!(report.conflicts.is_empty(), "{:?}", report.conflicts);
    settle(&[&owner, &cloud], 3);

    let files = net.remote_files();
    assert_eq!(files["Updates/2025-01-31.md"], b"From the cloud.\n");
    let copies = names_in(&net, "Updates", "2025-01-31.conflict-owner-");
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(
        files[&format!("Updates/{}", copies[0])],
        b"From the owner.\n"
    );
    assert!(
        names_in(&net, "Needs_Action/conflicts", "")
            .iter()
            .all(|n| n == ".gitkeep")
    );
    assert!(
        cloud
            .vault()
            .root()
            .join("Updates")
            .join(&copies[0])
            .is_file()
    );
    // The dashboard quotes both notes.
    owner.refresh_dashboard().expect("refresh");
    let dash = fs::read_to_string(owner.vault().root().join("Dashboard.md")).expect("dash");
    assert!(
        dash.contains("From the cloud.") && dash.contains("From the owner."),
        "{dash}"
    );
}

/// Any other file both replicas changed keeps both versions (the copy beside it) and files
/// a conflict note in `Needs_Action/conflicts/` that `status` and the dashboard list.
#[test]
fn sync_rule_other_file_keeps_both_and_files_a_conflict_task() {
    let net = Net::new();
    let owner = net.replica("owner", Zone::Local);
    fs::write(owner.vault().root().join("Plans/email/p.md"), "v1\n").expect("w");
    owner.sync().expect("seed");
    let cloud = net.replica("cloud", Zone::Cloud);
    fs::write(cloud.vault().root().join("Plans/email/p.md"), "cloud v2\n").expect("w");
    fs::write(owner.vault().root().join("Plans/email/p.md"), "owner v2\n").expect("w");
    cloud.sync().expect("cloud sync");
    let report = owner.sync().expect("owner sync");
    assert_eq!(report.conflicts.len(), 1, "{:?}", report.conflicts);
    assert!(report.conflicts[0].starts_with("Plans/email/p.md: both replicas changed it"));
    settle(&[&owner, &cloud], 3);

    let files = net.remote_files();
    assert_eq!(files["Plans/email/p.md"], b"cloud v2\n");
    let copies = names_in(&net, "Plans/email", "p.conflict-owner-");
    assert_eq!(copies.len(), 1);
    assert_eq!(files[&format!("Plans/email/{}", copies[0])], b"owner v2\n");
    let notes = names_in(&net, "Needs_Action/conflicts", "sync-");
    assert_eq!(notes.len(), 1, "{notes:?}");
    let note = String::from_utf8_lossy(&files[&format!("Needs_Action/conflicts/{}", notes[0])])
        .into_owned();
    assert!(note.contains("Sync conflict: Plans/email/p.md"), "{note}");
    assert!(
        note.contains(&format!("[[Plans/email/{}]]", copies[0])),
        "{note}"
    );
    for replica in [&owner, &cloud] {
        let status = replica.status().expect("status");
        assert_eq!(status.counts.conflicts, 1);
        assert_eq!(
            status.conflicts,
            vec![format!("Needs_Action/conflicts/{}", notes[0])]
        );
    }
    owner.refresh_dashboard().expect("refresh");
    let dash = fs::read_to_string(owner.vault().root().join("Dashboard.md")).expect("dash");
    assert!(dash.contains("## Sync conflicts"), "{dash}");
}

/// Done beats In_Progress: a task completed on one replica (after an offline claim) stays
/// done although another agent's claim reached the remote first; that agent is told.
#[test]
fn sync_rule_done_beats_in_progress() {
    let net = Net::new();
    let alpha = net.replica("alpha", Zone::Cloud);
    let ids = seed_tasks(&alpha, 1);
    let beta = net.replica("beta", Zone::Local);
    alpha.set_remote_url(&net.nowhere()).expect("cut off");
    assert!(matches!(
        alpha.claim(&ids[0]).expect("claim"),
        ClaimOutcome::Pending { .. }
    ));
    alpha
        .with_vault(|v| v.complete(&ids[0], &agent("alpha"), Some("sent the reply")))
        .expect("complete");
    assert!(beta.claim(&ids[0]).expect("beta claim").confirmed());

    alpha.set_remote_url(&net.url()).expect("back");
    let report = alpha.sync().expect("alpha sync");
    assert!(report.lost_claims.is_empty(), "{report:?}");
    let told = beta.sync().expect("beta sync");
    assert_eq!(told.lost_claims.len(), 1, "{told:?}");
    assert_eq!(told.lost_claims[0].owner, Some(agent("alpha")));
    assert_eq!(told.lost_claims[0].path, "Done/t000.md");
    settle(&[&alpha, &beta], 3);
    for replica in [&alpha, &beta] {
        let files = task_files(replica.vault().root());
        assert_eq!(files["t000"], vec!["Done/t000.md".to_owned()]);
    }
}

/// The same task changed in the same folder on both replicas: the remote's version stays,
/// and the local one is kept in `Needs_Action/conflicts/` (never as a second task file).
#[test]
fn sync_rule_same_task_edited_on_both_keeps_local_as_conflict_copy() {
    let net = Net::new();
    let alpha = net.replica("alpha", Zone::Cloud);
    seed_tasks(&alpha, 1);
    let beta = net.replica("beta", Zone::Local);
    let path = "Needs_Action/email/t000.md";
    for (replica, line) in [(&alpha, "alpha's addition"), (&beta, "beta's addition")] {
        let file = replica.vault().root().join(path);
        let text = fs::read_to_string(&file).expect("read");
        fs::write(&file, format!("{text}{line}\n")).expect("edit");
    }
    alpha.sync().expect("alpha sync");
    let report = beta.sync().expect("beta sync");
    assert_eq!(report.conflicts.len(), 1, "{report:?}");
    settle(&[&alpha, &beta], 3);

    let files = net.remote_files();
    assert!(String::from_utf8_lossy(&files[path]).contains("alpha's addition"));
    let copies = names_in(&net, "Needs_Action/conflicts", "t000.conflict-beta-");
    assert_eq!(copies.len(), 1);
    let copy = &files[&format!("Needs_Action/conflicts/{}", copies[0])];
    assert!(String::from_utf8_lossy(copy).contains("beta's addition"));
    assert_eq!(
        task_files(beta.vault().root())["t000"],
        vec![path.to_owned()]
    );
}

/// A claim lost while the loser had also edited the task: the claim goes to the winner, and
/// the loser's edit survives as a conflict copy.
#[test]
fn sync_rule_lost_claim_keeps_the_losers_edit() {
    let net = Net::new();
    let alpha = net.replica("alpha", Zone::Cloud);
    let ids = seed_tasks(&alpha, 1);
    let beta = net.replica("beta", Zone::Local);
    alpha.set_remote_url(&net.nowhere()).expect("cut off");
    alpha.claim(&ids[0]).expect("claim");
    let held = alpha.vault().root().join("In_Progress/alpha/t000.md");
    let text = fs::read_to_string(&held).expect("read");
    fs::write(&held, format!("{text}Draft reply, half written.\n")).expect("edit");
    assert!(beta.claim(&ids[0]).expect("beta claim").confirmed());
    alpha.set_remote_url(&net.url()).expect("back");
    let report = alpha.sync().expect("alpha sync");
    assert_eq!(report.lost_claims.len(), 1);
    assert_eq!(report.lost_claims[0].owner, Some(agent("beta")));
    let copies = names_in(&net, "Needs_Action/conflicts", "t000.conflict-alpha-");
    assert_eq!(copies.len(), 1, "{report:?}");
    let files = net.remote_files();
    assert!(
        String::from_utf8_lossy(&files[&format!("Needs_Action/conflicts/{}", copies[0])])
            .contains("Draft reply, half written.")
    );
    assert!(files.contains_key("In_Progress/beta/t000.md"));
}

/// A log file has one writer, its agent: when another replica also changed it, the agent's
/// own version is kept, without a conflict.
#[test]
fn sync_rule_logs_take_the_writers_side() {
    let net = Net::new();
    let alpha = net.replica("alpha", Zone::Cloud);
    let beta = net.replica("beta", Zone::Local);
    let log = "Logs/alpha/2025-01-31.jsonl";
    for (replica, line) in [
        (&alpha, "{\"by\":\"alpha\"}\n"),
        (&beta, "{\"by\":\"beta\"}\n"),
    ] {
        let path = replica.vault().root().join(log);
        fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        fs::write(path, line).expect("log");
    }
    beta.sync().expect("beta first");
    let report = alpha.sync().expect("alpha sync");
    assert!(report.conflicts.is_empty(), "{report:?}");
    settle(&[&alpha, &beta], 3);
    assert_eq!(net.remote_files()[log], b"{\"by\":\"alpha\"}\n");
}

/// A stale claim goes back to Needs_Action when the local zone (or the holder) releases it;
/// the holder is told at its next sync; anyone else, or a live lease, is refused.
#[test]
fn sync_release_stale_claim() {
    let net = Net::new();
    let owner = net.replica("owner", Zone::Local);
    let ids = seed_tasks(&owner, 2);
    // Claims by this cloud agent are stale at once.
    let cloud = net
        .replica("cloud", Zone::Cloud)
        .with_lease(TimeDelta::seconds(-1));
    let other = net.replica("other", Zone::Cloud);
    assert!(cloud.claim(&ids[0]).expect("claim").confirmed());
    assert!(owner.claim(&ids[1]).expect("claim").confirmed());
    settle(&[&owner, &cloud, &other], 3);

    let refused = other.release_stale(&ids[0]).expect_err("not the holder");
    assert!(
        matches!(refused, SyncError::NotAllowedToRelease { .. }),
        "{refused}"
    );
    let live = cloud
        .release_stale(&ids[1])
        .expect_err("owner's lease is live");
    assert!(
        matches!(live, SyncError::NotAllowedToRelease { .. }),
        "{live}"
    );
    let live = owner.release_stale(&ids[1]).expect_err("lease is live");
    assert!(matches!(live, SyncError::LeaseNotStale { .. }), "{live}");

    let released = owner.release_stale(&ids[0]).expect("release");
    assert_eq!(released.previous_owner, agent("cloud"));
    assert_eq!(released.path, "Needs_Action/email/t000.md");
    assert!(released.offline.is_none());
    let told = cloud.sync().expect("cloud sync");
    assert_eq!(told.lost_claims.len(), 1, "{told:?}");
    assert_eq!(told.lost_claims[0].owner, None);
    assert_eq!(told.lost_claims[0].task_id, task_id("t000"));
    other.sync().expect("other sync");
    assert!(other.claim(&ids[0]).expect("claim again").confirmed());
}
