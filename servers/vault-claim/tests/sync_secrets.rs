//! Invariant 5 through a real remote: canary secrets by name and by content never appear in
//! any blob of any commit a fresh clone of the remote holds; they stay on disk and are
//! reported as blocked. Canaries are built by concatenation so no secret-looking literal
//! sits in the repository.

mod sync_support;

use std::{collections::BTreeSet, fs};

use aie_shared::vault::{Domain, Task};
use aie_vault_claim::sync::{SyncError, Zone};
use git2::Repository;
use sync_support::{Net, task_id};

/// Every blob of every commit reachable from any ref of a fresh clone of the remote.
fn every_blob_in_a_fresh_clone(net: &Net) -> Vec<(String, Vec<u8>)> {
    let clone_dir = net
        .dir
        .path()
        .join(format!("fresh-clone-{}", std::process::id()));
    let _ = fs::remove_dir_all(&clone_dir);
    let repo = Repository::clone(&net.url(), &clone_dir).expect("fresh clone");
    let mut walk = repo.revwalk().expect("revwalk");
    walk.push_glob("refs/*").expect("all refs");
    let mut blobs = Vec::new();
    for commit in walk {
        let commit = repo.find_commit(commit.expect("commit")).expect("commit");
        let tree = commit.tree().expect("tree");
        tree.walk(git2::TreeWalkMode::PreOrder, |root, entry| {
            if entry.kind() == Some(git2::ObjectType::Blob) {
                let blob = repo.find_blob(entry.id()).expect("blob");
                let name = entry.name().unwrap_or("?");
                blobs.push((format!("{root}{name}"), blob.content().to_vec()));
            }
            git2::TreeWalkResult::Ok
        })
        .expect("walk");
    }
    blobs
}

/// Whether `haystack` contains `needle`.
fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// `.env`, `secrets/x`, `api_token.txt` and a private key pasted into a note (new, and into
/// a note already committed clean) never reach the remote, even with `.gitignore` emptied;
/// all stay on disk and are reported as blocked, in the sync report and in `status`.
#[test]
fn sync_canary_secrets_never_reach_the_remote() {
    let net = Net::new();
    let owner = net.replica("owner", Zone::Local);
    let root = owner.vault().root().to_path_buf();
    fs::write(root.join("Plans/email/plan.md"), "# Plan\nClean so far.\n").expect("plan");
    owner.sync().expect("first sync");

    let aws = ["AK", "IA", "QWERTYUIOPASDFGH"].concat();
    let github = ["gh", "p_", &"Z9".repeat(18)].concat();
    let key_block = [
        "-----",
        "BEGIN OPENSSH PRIV",
        "ATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----",
        "END OPENSSH PRIV",
        "ATE KEY-----\n",
    ]
    .concat();
    let named = ["named-only-", "canary-", "7f3a"].concat();
    let writes = [
        (".env", format!("AWS_ACCESS_KEY_ID={aws}\n")),
        ("secrets/x", format!("token: {github}\n")),
        ("api_token.txt", format!("{named}\n")),
        (
            "Plans/email/note.md",
            format!("# Notes\nPasted by mistake:\n{key_block}"),
        ),
        (
            "Plans/email/plan.md",
            format!("# Plan\nClean so far.\n{key_block}"),
        ),
    ];
    fs::create_dir_all(root.join("secrets")).expect("secrets dir");
    for (path, text) in &writes {
        fs::write(root.join(path), text).expect("write canary");
    }
    // Someone emptied .gitignore: the contract's patterns must hold without it.
    fs::write(root.join(".gitignore"), "# emptied\n").expect("gitignore");
    fs::write(root.join("Plans/email/fine.md"), "An ordinary note.\n").expect("fine");

    let report = owner.sync().expect("sync");
    let blocked: BTreeSet<&str> = report.blocked.iter().map(|b| b.path.as_str()).collect();
    let expected: BTreeSet<&str> = writes.iter().map(|(p, _)| *p).collect();
    assert_eq!(blocked, expected, "{:?}", report.blocked);
    let reason = |path: &str| {
        report
            .blocked
            .iter()
            .find(|b| b.path == path)
            .map(|b| b.reason.clone())
            .unwrap_or_default()
    };
    assert!(
        reason("Plans/email/note.md").contains("private key"),
        "{}",
        reason("Plans/email/note.md")
    );
    assert!(reason("api_token.txt").contains("token"));
    assert!(reason("secrets/x").contains("secrets/"));
    assert_eq!(owner.status().expect("status").blocked, report.blocked);

    for (path, text) in &writes {
        assert_eq!(
            &fs::read_to_string(root.join(path)).expect("still on disk"),
            text,
            "{path}"
        );
    }
    let blobs = every_blob_in_a_fresh_clone(&net);
    assert!(
        blobs.iter().any(|(p, _)| p == "Plans/email/fine.md"),
        "ordinary notes do sync"
    );
    for (path, content) in &blobs {
        for canary in [&aws, &github, &named, "BEGIN OPENSSH"] {
            assert!(!contains(content, canary), "{path} carries a canary");
        }
        assert!(
            !expected.contains(path.as_str()) || path == "Plans/email/plan.md",
            "{path}"
        );
    }
    // The clean plan stays on the remote as it was committed.
    let plan = blobs
        .iter()
        .find(|(p, _)| p == "Plans/email/plan.md")
        .expect("plan");
    assert_eq!(plan.1, b"# Plan\nClean so far.\n");
}

/// A symbolic link in the vault pointing at a bait file outside it is never followed into a
/// commit: it is reported, and the bait's content never reaches the remote.
#[test]
fn sync_symlink_to_outside_is_never_committed() {
    let net = Net::new();
    let owner = net.replica("owner", Zone::Local);
    let root = owner.vault().root().to_path_buf();
    let bait = net.dir.path().join("bait.txt");
    let bait_text = ["bait-", "outside-", "the-vault"].concat();
    fs::write(&bait, &bait_text).expect("bait");
    std::os::unix::fs::symlink(&bait, root.join("Plans/email/link.md")).expect("symlink");

    let report = owner.sync().expect("sync");
    assert!(
        report
            .blocked
            .iter()
            .any(|b| b.path == "Plans/email/link.md" && b.reason.contains("symbolic link")),
        "{:?}",
        report.blocked
    );
    for (path, content) in every_blob_in_a_fresh_clone(&net) {
        assert!(!contains(&content, &bait_text), "{path}");
        assert_ne!(path, "Plans/email/link.md");
    }
    assert_eq!(fs::read_to_string(&bait).expect("bait intact"), bait_text);
}

/// Claiming a task whose file holds a secret is refused with the reason, the claim is given
/// back, and the file never reaches the remote.
#[test]
fn sync_claim_of_secret_bearing_task_is_refused_and_given_back() {
    let net = Net::new();
    let owner = net.replica("owner", Zone::Local);
    let slack = ["xo", "xb-", "2222222222-abcdef"].concat();
    let id = task_id("pasted");
    owner.with_vault(|v| {
        let task = Task::new(
            id.clone(),
            Domain::Email,
            "Pasted",
            format!("oops {slack}\n"),
        );
        v.create_task(&task).expect("create");
    });
    let report = owner.sync().expect("sync");
    assert!(
        report
            .blocked
            .iter()
            .any(|b| b.path == "Needs_Action/email/pasted.md")
    );

    let err = owner.claim(&id).expect_err("refused");
    assert!(matches!(err, SyncError::ClaimBlocked { .. }), "{err}");
    assert!(err.to_string().contains("Slack token"), "{err}");
    let root = owner.vault().root();
    assert!(
        root.join("Needs_Action/email/pasted.md").is_file(),
        "given back"
    );
    assert!(!root.join("In_Progress/owner/pasted.md").exists());
    for (path, content) in every_blob_in_a_fresh_clone(&net) {
        assert!(!contains(&content, &slack), "{path}");
    }
}

/// A committed note that got a secret pasted in (so it is blocked) and was changed on
/// another replica: the merged version takes its place, the local version (secret and all)
/// is set aside as a conflict copy that stays on disk and is blocked too, and the secret
/// never reaches the remote.
#[test]
fn sync_blocked_file_changed_elsewhere_is_set_aside_not_lost() {
    let net = Net::new();
    let owner = net.replica("owner", Zone::Local);
    let note = "Plans/email/plan.md";
    fs::write(owner.vault().root().join(note), "v1\n").expect("plan");
    owner.sync().expect("seed");
    let cloud = net.replica("cloud", Zone::Cloud);
    fs::write(cloud.vault().root().join(note), "v2 from the cloud\n").expect("edit");
    cloud.sync().expect("cloud sync");

    let stripe = ["sk", "_live_", "0123456789abcdefXYZ"].concat();
    let mine = format!("v1\nkey: {stripe}\n");
    fs::write(owner.vault().root().join(note), &mine).expect("paste");
    let report = owner.sync().expect("owner sync");
    assert!(report.blocked.iter().any(|b| b.path == note), "{report:?}");
    let set_aside = report
        .conflicts
        .iter()
        .find(|c| c.starts_with(note))
        .unwrap_or_else(|| panic!("{report:?}"));
    let copy = set_aside.rsplit(' ').next().expect("copy path");
    let root = owner.vault().root();
    assert_eq!(
        fs::read_to_string(root.join(note)).expect("merged"),
        "v2 from the cloud\n"
    );
    assert_eq!(fs::read_to_string(root.join(copy)).expect("copy"), mine);
    let again = owner.sync().expect("again");
    assert!(again.blocked.iter().any(|b| b.path == copy), "{again:?}");
    for (path, content) in every_blob_in_a_fresh_clone(&net) {
        assert!(!contains(&content, &stripe), "{path}");
    }
}
