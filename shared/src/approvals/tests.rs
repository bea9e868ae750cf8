//! The approval lifecycle on real files: the happy path, and one test per attack, each
//! refused with its own reason and with nothing marked used.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Barrier},
    thread,
};

use chrono::TimeDelta;
use serde_json::{Value, json};
use tempfile::TempDir;

use super::{
    ledger::{KEY_FILE, ProblemKind},
    *,
};
use crate::{
    policy::Zone,
    vault::{AgentName, ApprovalId, ApprovalRequest, Domain, Task, TaskId, Vault},
};

/// Asserts a refusal's reason matches `pattern`, showing the whole refusal if it does not.
macro_rules! assert_refused {
    ($refused:expr, $pattern:pat) => {{
        let refused = &$refused;
        assert!(matches!(refused.refusal, $pattern), "{refused}");
    }};
}

/// Asserts an error matches `pattern`, showing the error if it does not.
macro_rules! assert_error {
    ($error:expr, $pattern:pat) => {{
        let error = &$error;
        assert!(matches!(error, $pattern), "{error}");
    }};
}

/// The payload hash `show` prints for `id`, as the owner copies it to `approve --sha256`.
fn as_shown(approvals: &Approvals, id: &ApprovalId) -> ShownHash {
    let hash = approvals
        .show(id)
        .expect("show")
        .payload_sha256
        .expect("a readable request");
    ShownHash::new(&hash[..12]).expect("hash")
}

/// A fresh vault and state folder, and the approvals on them.
struct Fixture {
    dir: TempDir,
    approvals: Approvals,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::init(dir.path().join("vault")).expect("init");
        let approvals = Approvals::open(vault, &dir.path().join("state")).expect("open");
        Self { dir, approvals }
    }

    fn vault(&self) -> &Vault {
        self.approvals.vault()
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.vault().root().join(rel)
    }

    fn exists(&self, rel: &str) -> bool {
        self.path(rel).is_file()
    }

    /// Moves vault file `from` to `to` by hand, as a person (or a crash mid-move) leaves it.
    fn move_file(&self, from: &str, to: &str) -> std::io::Result<()> {
        fs::rename(self.path(from), self.path(to))
    }

    /// Opens the same vault and state again, as a restarted process (or `aie approvals`) does.
    fn reopen(&self) -> Result<Approvals, ApprovalError> {
        Approvals::open(self.vault().clone(), &self.state())
    }

    /// Files `Pending_Approval/email/<raw>.md` for [`reply`], expiring in an hour.
    fn draft(&self, raw: &str) -> ApprovalId {
        self.vault()
            .write_approval_request(&request(raw, &reply(), TimeDelta::hours(1)))
            .expect("write request");
        id(raw)
    }

    /// Drafts and approves.
    fn approved(&self, raw: &str) -> ApprovalId {
        let id = self.draft(raw);
        self.approvals
            .approve(&id, "owner", &as_shown(&self.approvals, &id))
            .expect("approve");
        id
    }

    /// Files task `Needs_Action/email/<task>.md` and a request `raw` drafted for it.
    fn draft_for_task(&self, raw: &str, task: &str) -> ApprovalId {
        let task = TaskId::new(task).expect("task");
        self.vault()
            .create_task(&Task::new(task.clone(), Domain::Email, "Invoice", "Body\n"))
            .expect("task");
        self.vault()
            .write_approval_request(&request(raw, &reply(), TimeDelta::hours(1)).for_task(task))
            .expect("write");
        id(raw)
    }

    /// Writes request `raw` straight into `Approved/` with no local decision, as sync or a
    /// forger would.
    fn arrive(&self, raw: &str) -> ApprovalId {
        let text = request(raw, &reply(), TimeDelta::hours(1))
            .render()
            .expect("render");
        fs::write(self.path(&format!("Approved/{raw}.md")), text).expect("arrive");
        id(raw)
    }

    /// Makes vault path `rel` a link to an empty folder outside the vault; that folder.
    fn bait_link(&self, rel: &str) -> PathBuf {
        let bait = self.dir.path().join("bait");
        fs::create_dir_all(&bait).expect("bait");
        std::os::unix::fs::symlink(&bait, self.path(rel)).expect("link");
        bait
    }

    /// Asks to run `id`'s approved call: `email_send` with [`reply`].
    fn authorize(&self, id: &ApprovalId) -> Result<Authorized, Refused> {
        self.approvals.authorize(id, "email_send", &reply())
    }

    /// Records how `id`'s execution ended, as the local agent.
    fn record_result(
        &self,
        id: &ApprovalId,
        outcome: Outcome,
        detail: &str,
    ) -> Result<ResultRecorded, ApprovalError> {
        self.approvals.record_result(id, outcome, detail, &agent())
    }

    /// Authorizes `id` and gives that use back ("down"), as a server that ran nothing does;
    /// the use given back.
    fn give_back(&self, id: &ApprovalId) -> Authorized {
        let go = self.authorize(id).expect("authorized");
        self.approvals
            .release(id, go.use_seq, "down")
            .expect("released");
        go
    }

    /// `id`'s status as `show` reports it.
    fn status(&self, id: &ApprovalId) -> ApprovalStatus {
        self.approvals.show(id).expect("show").status
    }

    /// The ledger as it reads now.
    fn ledger_state(&self) -> LedgerState {
        self.approvals.ledger().read().expect("ledger")
    }

    /// Asserts the ledger reads without damage.
    fn assert_ledger_sound(&self) {
        let state = self.ledger_state();
        assert!(state.damage().is_none(), "{:?}", state.problems);
    }

    /// How many `used` entries the ledger file holds for `id`.
    fn used_entries(&self, id: &ApprovalId) -> usize {
        let text = fs::read_to_string(self.approvals.ledger().path()).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("\"event\":\"used\""))
            .filter(|l| l.contains(&format!("\"approval_id\":\"{id}\"")))
            .count()
    }

    /// Asserts the refusal left the approval unused.
    fn assert_unused(&self, id: &ApprovalId) {
        assert_eq!(self.used_entries(id), 0, "{id} was marked used");
        let state = self.ledger_state();
        assert!(state.get(id).is_none_or(|r| r.used_at.is_none()));
    }

    /// Appends raw lines to the ledger file, as an attacker or a crash would.
    fn append_ledger(&self, text: &str) {
        use std::io::Write;
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(self.approvals.ledger().path())
            .expect("ledger");
        file.write_all(text.as_bytes()).expect("append");
    }

    fn ledger_lines(&self) -> Vec<String> {
        fs::read_to_string(self.approvals.ledger().path())
            .expect("ledger")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Replaces the ledger file with `lines`, as an attacker editing it in place would.
    fn write_ledger(&self, lines: &[String]) {
        fs::write(self.approvals.ledger().path(), lines.join("\n") + "\n").expect("write");
    }
}

fn id(raw: &str) -> ApprovalId {
    ApprovalId::new(raw).expect("approval id")
}

fn agent() -> AgentName {
    AgentName::new("local").expect("agent")
}

fn reply() -> Value {
    json!({"to": "alice@example.org", "subject": "Re: invoice", "body": "Paid, thanks."})
}

/// An email_send request drafted by the cloud agent.
fn request(raw: &str, payload: &Value, expires_in: TimeDelta) -> ApprovalRequest {
    ApprovalRequest::new(
        id(raw),
        Domain::Email,
        "email_send",
        payload.clone(),
        AgentName::new("cloud").expect("agent"),
        chrono::Utc::now() + expires_in,
    )
    .with_preview("To: alice@example.org\n\nPaid, thanks.\n")
}

/// The refusal's reason, for matching.
fn refusal(result: Result<Authorized, Refused>) -> Refused {
    match result {
        Ok(ok) => panic!("expected a refusal, got {ok:?}"),
        Err(refused) => refused,
    }
}

/// How many threads [`race`] starts at once.
const RACERS: usize = 8;

/// [`RACERS`] threads, let go together by a barrier, each authorizing `id`: their results.
fn race(approvals: &Approvals, id: &ApprovalId) -> Vec<Result<Authorized, Refused>> {
    let barrier = Arc::new(Barrier::new(RACERS));
    let handles: Vec<_> = (0..RACERS)
        .map(|_| {
            let (approvals, barrier, a) = (approvals.clone(), barrier.clone(), id.clone());
            thread::spawn(move || {
                barrier.wait();
                approvals.authorize(&a, "email_send", &reply())
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect()
}

/// Approve, authorize with exactly the approved arguments, record ok: the file and its task
/// end in Done, and a second call is refused.
#[test]
fn approvals_happy_path_runs_once() {
    let fx = Fixture::new();
    let a1 = fx.draft_for_task("a1", "t1");
    let listing = fx.approvals.list_pending().expect("list");
    assert!(
        listing
            .to_string()
            .starts_with("a1  email  email_send  by cloud"),
        "{listing}"
    );
    assert_eq!(fx.status(&a1), ApprovalStatus::Pending);

    let decided = fx
        .approvals
        .approve(&a1, "owner", &as_shown(&fx.approvals, &a1))
        .expect("approve");
    assert_eq!(decided.path, "Approved/a1.md");
    assert!(!fx.exists("Pending_Approval/email/a1.md"));
    assert_eq!(fx.status(&a1), ApprovalStatus::Approved);

    let go = fx.authorize(&a1).expect("authorized");
    assert_eq!(go.payload, reply());
    assert_eq!(fx.used_entries(&a1), 1);
    assert_eq!(fx.status(&a1), ApprovalStatus::Running);

    let done = fx
        .record_result(&a1, Outcome::Ok, "sent <m1@example.org>")
        .expect("result");
    assert_eq!(done.moved_to.as_deref(), Some("Done/approvals/a1.md"));
    assert_eq!(done.task.as_deref(), Some("Done/t1.md"));
    assert!(done.problems.is_empty(), "{:?}", done.problems);
    let view = fx.approvals.show(&a1).expect("show");
    assert_eq!(view.status, ApprovalStatus::Done);
    let text = view.to_string();
    assert!(text.starts_with("a1  done  email_send"), "{text}");
    assert!(text.contains("approved by owner"), "{text}");

    let again = refusal(fx.authorize(&a1));
    assert_refused!(again, Refusal::AlreadyUsed { .. });
    assert_eq!(fx.used_entries(&a1), 1);
    // Approved files never sit in `Done/` itself, where tasks are listed.
    assert!(
        fx.vault()
            .list_tasks(Default::default())
            .expect("tasks")
            .broken
            .is_empty()
    );
}

/// A request nobody approved does not run, and stays where it is.
#[test]
fn approvals_refuse_without_approval() {
    let fx = Fixture::new();
    let a1 = fx.draft("a1");
    let refused = refusal(fx.authorize(&a1));
    assert_refused!(refused, Refusal::NotApproved { .. });
    assert!(
        refused.to_string().contains("Pending_Approval/email"),
        "{refused}"
    );
    assert!(refused.set_aside.is_none());
    assert!(fx.exists("Pending_Approval/email/a1.md"));
    fx.assert_unused(&a1);
    let unknown = refusal(fx.authorize(&id("nope")));
    assert_refused!(unknown, Refusal::NotApproved { .. });
}

/// A rejected request put back into Approved/ is refused and set aside; a revoked approval
/// (rejected after approving, before use) is refused too.
#[test]
fn approvals_refuse_rejected() {
    let fx = Fixture::new();
    let a1 = fx.draft("a1");
    let decided = fx
        .approvals
        .reject(&a1, "owner", "wrong tone")
        .expect("reject");
    assert_eq!(decided.path, "Rejected/a1.md");
    fs::copy(fx.path("Rejected/a1.md"), fx.path("Approved/a1.md")).expect("copy back");
    let refused = refusal(fx.authorize(&a1));
    match &refused.refusal {
        Refusal::Rejected { reason, by } => {
            assert_eq!((reason.as_str(), by.as_str()), ("wrong tone", "owner"))
        }
        other => panic!("expected Rejected, got {other}"),
    }
    assert_eq!(refused.set_aside.as_deref(), Some("Quarantine/a1.md"));
    assert!(!fx.exists("Approved/a1.md"));
    fx.assert_unused(&a1);

    let a2 = fx.approved("a2");
    fx.approvals
        .reject(&a2, "owner", "changed my mind")
        .expect("revoke");
    assert!(fx.exists("Rejected/a2.md"));
    let refused = refusal(fx.authorize(&a2));
    assert_refused!(refused, Refusal::Rejected { .. });
    fx.assert_unused(&a2);
    let again = fx
        .approvals
        .approve(&a2, "owner", &as_shown(&fx.approvals, &a2))
        .expect_err("rejection is final");
    assert_error!(
        again,
        ApprovalError::AlreadyDecided {
            decision: "rejected",
            ..
        }
    );
}

/// An approval past its expiry is refused and set aside; an expired request cannot be
/// approved at all.
#[test]
fn approvals_refuse_expired() {
    let fx = Fixture::new();
    let a1 = fx.approved("a1");
    let later = chrono::Utc::now() + TimeDelta::hours(2);
    let refused = refusal(
        fx.approvals
            .authorize_at(&a1, "email_send", &reply(), later),
    );
    assert_refused!(refused, Refusal::Expired { .. });
    assert_eq!(refused.set_aside.as_deref(), Some("Quarantine/a1.md"));
    fx.assert_unused(&a1);

    let a2 = fx.draft("a2");
    let err = fx
        .approvals
        .approve_at(&a2, "owner", &as_shown(&fx.approvals, &a2), later)
        .expect_err("expired");
    assert_error!(err, ApprovalError::Expired { .. });
    assert!(fx.exists("Pending_Approval/email/a2.md"));
    assert!(fx.ledger_state().get(&a2).is_none());
}

/// A second use is refused, both while the first is running and after its result.
#[test]
fn approvals_refuse_used_twice() {
    let fx = Fixture::new();
    let a1 = fx.approved("a1");
    fx.authorize(&a1).expect("first");
    let running = refusal(fx.authorize(&a1));
    assert_refused!(running, Refusal::AlreadyUsed { .. });
    assert!(
        running.set_aside.is_none(),
        "the running one keeps its file"
    );
    fx.record_result(&a1, Outcome::Ok, "sent").expect("result");
    let after = refusal(fx.authorize(&a1));
    assert_refused!(after, Refusal::AlreadyUsed { .. });
    assert_eq!(fx.used_entries(&a1), 1);
    let twice = fx
        .record_result(&a1, Outcome::Error, "late")
        .expect_err("one result");
    assert_error!(twice, ApprovalError::ResultExists { .. });
}

/// Eight threads authorizing one approval at once: exactly one goes ahead, ten times over.
#[test]
fn approvals_concurrent_authorize_has_one_winner() {
    let fx = Fixture::new();
    for round in 0..10 {
        let a = fx.approved(&format!("a{round}"));
        let results = race(&fx.approvals, &a);
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}"
        );
        for refused in results.into_iter().filter_map(Result::err) {
            assert_refused!(refused, Refusal::AlreadyUsed { .. });
        }
        assert_eq!(fx.used_entries(&a), 1, "round {round}");
    }
}

/// An approved file edited afterwards (payload, payload and its hash, or the tool) never
/// runs; it is set aside.
#[test]
fn approvals_refuse_file_edited_after_approval() {
    let fx = Fixture::new();
    type Edit = fn(&mut ApprovalRequest);
    let edits: [(&str, Edit); 3] = [
        ("payload", |r| {
            r.meta.payload["to"] = json!("mallory@example.org")
        }),
        ("payload_sha256", |r| {
            r.meta.payload["to"] = json!("mallory@example.org");
            r.meta.payload_sha256 = crate::vault::payload_sha256(&r.meta.payload);
        }),
        ("tool", |r| r.meta.tool = "payments_execute".into()),
    ];
    for (n, (what, edit)) in edits.into_iter().enumerate() {
        let a = fx.approved(&format!("a{n}"));
        let path = fx.path(&format!("Approved/a{n}.md"));
        let mut request =
            ApprovalRequest::parse(&fs::read_to_string(&path).expect("read")).expect("parse");
        edit(&mut request);
        fs::write(&path, request.render().expect("render")).expect("edit");
        let refused = refusal(fx.authorize(&a));
        match &refused.refusal {
            Refusal::PayloadChanged { detail } => assert!(detail.contains(what), "{detail}"),
            other => panic!("{what}: expected PayloadChanged, got {other}"),
        }
        assert_eq!(refused.set_aside, Some(format!("Quarantine/a{n}.md")));
        fx.assert_unused(&a);
        assert_eq!(fx.status(&a), ApprovalStatus::SetAside);
    }
}

/// A file that arrives in Approved/ with no local decision (through sync, or forged) never
/// runs: authorize sets it aside, naming how the owner approves instead.
#[test]
fn approvals_refuse_sync_arrival() {
    let fx = Fixture::new();
    let a1 = fx.arrive("a1");
    assert_eq!(fx.status(&a1), ApprovalStatus::Unverified);
    let refused = refusal(fx.authorize(&a1));
    assert_refused!(refused, Refusal::NoLedgerEntry { .. });
    assert_eq!(refused.set_aside.as_deref(), Some("Quarantine/a1.md"));
    assert!(
        refused.to_string().contains("aie approvals approve a1"),
        "{refused}"
    );
    fx.assert_unused(&a1);
    // Arriving again: set aside again, next to the first copy, never replacing it.
    fx.arrive("a1");
    let refused = refusal(fx.authorize(&a1));
    assert_eq!(refused.set_aside.as_deref(), Some("Quarantine/a1~1.md"));
    let view = fx.approvals.show(&a1).expect("show");
    assert_eq!(view.status, ApprovalStatus::SetAside);
    assert_eq!(view.other_paths.len(), 1, "{view}");
    fx.assert_unused(&a1);
}

/// The caller's answer to "was this moved here by hand?", as a fixed set of ids, counting
/// how often it is asked.
#[derive(Debug, Default)]
struct HandMovedIds {
    ids: Vec<String>,
    asked: std::sync::atomic::AtomicUsize,
    broken: bool,
}

impl HandMoveCheck for HandMovedIds {
    fn is_hand_move(&self, id: &ApprovalId) -> Result<bool, String> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.broken {
            return Err("the vault's git state cannot be read".into());
        }
        Ok(self.ids.iter().any(|i| i == id.as_str()))
    }
}

/// The fixture's approvals accepting the hand moves `ids`, and the check, to count its uses.
fn accepting(fx: &Fixture, ids: &[&str]) -> (Approvals, Arc<HandMovedIds>) {
    let check = Arc::new(HandMovedIds {
        ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        ..HandMovedIds::default()
    });
    let approvals = fx
        .reopen()
        .expect("open")
        .accepting_hand_moves(check.clone(), "owner");
    (approvals, check)
}

/// Hand moves the caller found are adopted on the local zone only; one that was edited is
/// set aside; files the caller did not name are not even looked at.
#[test]
fn approvals_hand_moves_named_by_the_caller_are_adopted_on_local_only() {
    let fx = Fixture::new();
    let a1 = fx.draft("a1");
    fx.move_file("Pending_Approval/email/a1.md", "Approved/a1.md")
        .expect("mv");
    let cloud = fx
        .approvals
        .adopt_hand_moves(Zone::Cloud, "owner", std::slice::from_ref(&a1));
    assert!(matches!(cloud, Err(ApprovalError::NotLocal)), "{cloud:?}");
    let other = fx.arrive("other");
    let report = fx
        .approvals
        .adopt_hand_moves(Zone::Local, "owner", std::slice::from_ref(&a1))
        .expect("adopt");
    assert_eq!(report.adopted, vec![a1.clone()]);
    assert!(report.set_aside.is_empty() && report.problems.is_empty());
    assert!(fx.exists("Approved/other.md"), "not a candidate: untouched");
    assert!(
        fx.approvals
            .show(&a1)
            .expect("show")
            .to_string()
            .contains("by moving the file")
    );
    fx.authorize(&a1).expect("authorized");
    // Named again: decided already, nothing happens.
    let again = fx
        .approvals
        .adopt_hand_moves(Zone::Local, "owner", std::slice::from_ref(&a1))
        .expect("adopt");
    assert_eq!(again, AdoptReport::default());
    assert_refused!(refusal(fx.authorize(&other)), Refusal::NoLedgerEntry { .. });

    let a2 = fx.draft("a2");
    let text = fs::read_to_string(fx.path("Pending_Approval/email/a2.md")).expect("read");
    fs::write(
        fx.path("Approved/a2.md"),
        text.replace("Paid, thanks.", "Send it all to me."),
    )
    .expect("edit");
    fs::remove_file(fx.path("Pending_Approval/email/a2.md")).expect("mv");
    let report = fx
        .approvals
        .adopt_hand_moves(Zone::Local, "owner", std::slice::from_ref(&a2))
        .expect("adopt");
    assert!(report.adopted.is_empty(), "{report:?}");
    assert_eq!(report.set_aside[0].0, "Quarantine/a2.md");
    fx.assert_unused(&a2);
}

/// With hand moves accepted, `authorize` asks about the one id it authorizes, adopts it
/// when the caller says the owner moved it, and sets aside one the caller does not vouch
/// for; without them, a hand move is set aside, and the refusal says how to approve.
#[test]
fn approvals_authorize_adopts_only_the_hand_move_it_is_asked_about() {
    let fx = Fixture::new();
    let moved = fx.draft("moved");
    fx.move_file("Pending_Approval/email/moved.md", "Approved/moved.md")
        .expect("mv");
    for n in 0..50 {
        fx.arrive(&format!("junk{n}"));
    }
    let (approvals, check) = accepting(&fx, &["moved"]);
    let go = approvals
        .authorize(&moved, "email_send", &reply())
        .expect("adopted and authorized");
    assert_eq!(check.asked.load(std::sync::atomic::Ordering::SeqCst), 1);
    let record = fx.ledger_state().get(&moved).cloned().expect("record");
    assert_eq!(
        record.approved.expect("approved").how,
        ledger::HowApproved::MovedByHand
    );
    assert_eq!(go.use_seq, 2);
    assert!(
        fx.exists("Approved/junk7.md"),
        "the others are not looked at"
    );

    let refused = refusal(approvals.authorize(&id("junk7"), "email_send", &reply()));
    assert_refused!(refused, Refusal::NoLedgerEntry { .. });
    assert!(
        refused.to_string().contains("came through a commit"),
        "{refused}"
    );
    assert_eq!(refused.set_aside.as_deref(), Some("Quarantine/junk7.md"));

    // Accepted, but edited on the way: set aside with the reason.
    let edited = fx.draft("edited");
    let text = fs::read_to_string(fx.path("Pending_Approval/email/edited.md")).expect("read");
    fs::write(
        fx.path("Approved/edited.md"),
        text.replace("Paid", "Unpaid"),
    )
    .expect("edit");
    fs::remove_file(fx.path("Pending_Approval/email/edited.md")).expect("rm");
    let (approvals, _) = accepting(&fx, &["edited"]);
    let refused = refusal(approvals.authorize(&edited, "email_send", &reply()));
    assert_refused!(refused, Refusal::NotApprovable { .. });
    assert_eq!(refused.set_aside.as_deref(), Some("Quarantine/edited.md"));
    fx.assert_unused(&edited);

    // The check cannot answer: refused, the file left for the owner, nothing written.
    let unsure = fx.draft("unsure");
    fx.move_file("Pending_Approval/email/unsure.md", "Approved/unsure.md")
        .expect("mv");
    let broken = Arc::new(HandMovedIds {
        ids: vec!["unsure".into()],
        broken: true,
        ..HandMovedIds::default()
    });
    let approvals = fx
        .reopen()
        .expect("open")
        .accepting_hand_moves(broken, "owner");
    let refused = refusal(approvals.authorize(&unsure, "email_send", &reply()));
    assert_refused!(refused, Refusal::NotApproved { .. });
    assert!(fx.exists("Approved/unsure.md"));
    assert!(fx.ledger_state().get(&unsure).is_none());

    // Not accepted (the default): the same move is set aside.
    let refused = refusal(fx.authorize(&unsure));
    assert_refused!(refused, Refusal::NoLedgerEntry { .. });
    assert!(
        refused.to_string().contains("accept_hand_moves is off"),
        "{refused}"
    );
    assert_eq!(refused.set_aside.as_deref(), Some("Quarantine/unsure.md"));
}

/// One file that cannot be set aside (Quarantine/ is a link) blocks nothing: the genuine
/// approval next to it runs, the bad file stays, unrunnable, and both the refusal and the
/// adoption report say why.
#[test]
fn approvals_one_bad_file_never_blocks_another() {
    let fx = Fixture::new();
    let bait = fx.bait_link("Quarantine");
    let good = fx.approved("good");
    let moved = fx.draft("moved");
    fx.move_file("Pending_Approval/email/moved.md", "Approved/moved.md")
        .expect("mv");
    fs::write(fx.path("Approved/junk.md"), "no front matter at all\n").expect("junk");
    let (approvals, _) = accepting(&fx, &["junk", "moved"]);
    let report = approvals
        .adopt_hand_moves(Zone::Local, "owner", &[id("junk"), moved.clone()])
        .expect("adopt");
    assert_eq!(report.adopted, vec![moved.clone()]);
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(
        report.problems[0].1.contains("could not be set aside"),
        "{report:?}"
    );
    let refused = refusal(approvals.authorize(&id("junk"), "email_send", &reply()));
    assert!(refused.set_aside.is_none());
    assert!(
        refused
            .to_string()
            .contains("stays where it is and can never run"),
        "{refused}"
    );
    assert!(fx.exists("Approved/junk.md"));
    approvals
        .authorize(&good, "email_send", &reply())
        .expect("the genuine approval runs");
    approvals
        .authorize(&moved, "email_send", &reply())
        .expect("the adopted one runs");
    assert_eq!(fs::read_dir(&bait).expect("bait").count(), 0);
}

/// An approval lasts at most the configured lifetime from its decision, whatever the file
/// says (year 9022 included): `approve` and adoption write the capped expiry, `show` shows
/// it, `authorize` enforces it, and the unchanged file still matches the ledger. A stricter
/// config at authorization also bounds approvals given before.
#[test]
fn approvals_lifetime_is_capped_by_the_local_config() {
    let fx = Fixture::new();
    let far = chrono::DateTime::parse_from_rfc3339("9022-01-01T00:00:00Z")
        .expect("time")
        .to_utc();
    let file_far = |raw: &str| {
        let mut request = request(raw, &reply(), TimeDelta::hours(1));
        request.meta.expires_at = far;
        fx.vault()
            .write_approval_request(&request)
            .expect("write request");
        id(raw)
    };
    let day = TimeDelta::hours(24);
    let approvals = fx.reopen().expect("open").with_max_lifetime(day);
    let now = chrono::Utc::now();

    let a1 = file_far("a1");
    let pending = approvals.show(&a1).expect("show").to_string();
    assert!(
        pending.contains("approved now, it would be valid until"),
        "{pending}"
    );
    approvals
        .approve_at(&a1, "owner", &as_shown(&approvals, &a1), now)
        .expect("approve");
    let approved = fx
        .ledger_state()
        .get(&a1)
        .cloned()
        .unwrap()
        .approved
        .unwrap();
    assert!(
        approved.expires_at <= now + day && approved.expires_at > now + day - TimeDelta::seconds(2)
    );
    assert_eq!(approved.requested_expires_at, Some(far));
    let shown = approvals.show(&a1).expect("show");
    assert_eq!(shown.valid_until, Some(approved.expires_at));
    assert!(shown.to_string().contains("max_lifetime_hours"), "{shown}");
    let later = now + day + TimeDelta::minutes(1);
    let refused = refusal(approvals.authorize_at(&a1, "email_send", &reply(), later));
    assert_refused!(refused, Refusal::Expired { .. });
    let a1b = file_far("a1b");
    approvals
        .approve_at(&a1b, "owner", &as_shown(&approvals, &a1b), now)
        .expect("approve");
    approvals
        .authorize_at(&a1b, "email_send", &reply(), now + TimeDelta::hours(1))
        .expect("within the cap, the unchanged file matches the ledger");

    // Adopted by hand: capped the same way.
    let a2 = file_far("a2");
    fx.move_file("Pending_Approval/email/a2.md", "Approved/a2.md")
        .expect("mv");
    approvals
        .adopt_at(Zone::Local, "owner", std::slice::from_ref(&a2), now)
        .expect("adopt");
    let adopted = fx
        .ledger_state()
        .get(&a2)
        .cloned()
        .unwrap()
        .approved
        .unwrap();
    assert!(adopted.expires_at <= now + day);

    // Approved under the 7-day default, authorized under a 1-hour config: the stricter wins.
    let a3 = file_far("a3");
    fx.approvals
        .approve_at(&a3, "owner", &as_shown(&fx.approvals, &a3), now)
        .expect("approve");
    let strict = fx
        .reopen()
        .expect("open")
        .with_max_lifetime(TimeDelta::hours(1));
    let refused =
        refusal(strict.authorize_at(&a3, "email_send", &reply(), now + TimeDelta::hours(2)));
    assert_refused!(refused, Refusal::Expired { .. });
    assert_eq!(fx.status(&a2), ApprovalStatus::Approved);
}

/// An approval for other arguments or another tool does not cover this call; the approval
/// itself stays usable for the approved call.
#[test]
fn approvals_refuse_other_arguments() {
    let fx = Fixture::new();
    let a1 = fx.approved("a1");
    let mut other = reply();
    other["to"] = json!("mallory@example.org");
    let refused = refusal(fx.approvals.authorize(&a1, "email_send", &other));
    assert_refused!(refused, Refusal::ArgumentsDiffer { .. });
    assert!(refused.set_aside.is_none());
    let refused = refusal(fx.approvals.authorize(&a1, "payments_execute", &reply()));
    match &refused.refusal {
        Refusal::ArgumentsDiffer { detail } => {
            assert!(detail.contains("payments_execute"), "{detail}")
        }
        other => panic!("expected ArgumentsDiffer, got {other}"),
    }
    fx.assert_unused(&a1);
    // Key order is not a difference: the hash is over canonical JSON.
    let reordered: Value = serde_json::from_str(
        r#"{"body":"Paid, thanks.","subject":"Re: invoice","to":"alice@example.org"}"#,
    )
    .expect("json");
    fx.approvals
        .authorize(&a1, "email_send", &reordered)
        .expect("the approved call");
}

/// A ledger line whose MAC does not verify authorizes nothing: the approval it names is
/// refused as forged, and every other one as a damaged ledger.
#[test]
fn approvals_refuse_bad_mac() {
    let fx = Fixture::new();
    let a1 = fx.approved("a1");
    // Forge an approval for a2 by copying a1's authentic line under another id.
    let a2 = fx.arrive("a2");
    let forged = fx.ledger_lines()[0]
        .replace("\"approval_id\":\"a1\"", "\"approval_id\":\"a2\"")
        .replace("\"seq\":1", "\"seq\":2");
    fx.append_ledger(&format!("{forged}\n"));
    let refused = refusal(fx.authorize(&a2));
    assert_refused!(refused, Refusal::BadMac);
    assert_eq!(refused.set_aside.as_deref(), Some("Quarantine/a2.md"));
    let refused = refusal(fx.authorize(&a1));
    assert_refused!(refused, Refusal::LedgerDamaged { .. });
    assert!(refused.set_aside.is_none(), "a1's own file is not at fault");
    fx.assert_unused(&a1);
    fx.assert_unused(&a2);
    let state = fx.ledger_state();
    assert_eq!(state.problems[0].kind, ProblemKind::BadMac);
    assert!(
        fx.approvals
            .show(&a1)
            .expect("show")
            .to_string()
            .contains("DAMAGED")
    );
    let a3 = fx.draft("a3");
    let err = fx
        .approvals
        .approve(&a3, "owner", &as_shown(&fx.approvals, &a3))
        .expect_err("damaged");
    assert_error!(err, ApprovalError::LedgerDamaged { .. });
}

/// An authentic line altered in place (a1's approved hash) fails its MAC too.
#[test]
fn approvals_refuse_altered_ledger_line() {
    let fx = Fixture::new();
    let a1 = fx.approved("a1");
    let mut lines = fx.ledger_lines();
    let mut entry: Value = serde_json::from_str(&lines[0]).expect("json");
    entry["payload_sha256"] = json!(crate::vault::payload_sha256(&json!({"to": "mallory"})));
    lines[0] = serde_json::to_string(&entry).expect("encode");
    fx.write_ledger(&lines);
    let refused = refusal(
        fx.approvals
            .authorize(&a1, "email_send", &json!({"to": "mallory"})),
    );
    assert_refused!(refused, Refusal::BadMac);
    fx.assert_unused(&a1);
}

/// A crash between the used marker and the result leaves the approval in doubt: never
/// retried, shown to the human, settled only by a recorded result.
#[test]
fn approvals_crash_between_used_and_result_is_in_doubt() {
    let fx = Fixture::new();
    let a1 = fx.approved("a1");
    fx.authorize(&a1).expect("authorized");
    // The process dies here, before the server answers. A new one starts:
    let restarted = fx.reopen().expect("reopen");
    let refused = refusal(restarted.authorize(&a1, "email_send", &reply()));
    assert_refused!(refused, Refusal::InDoubt { .. });
    assert!(refused.set_aside.is_none());
    assert!(fx.exists("Approved/a1.md"), "left for the human to see");
    assert_eq!(fx.used_entries(&a1), 1);
    assert_eq!(restarted.in_doubt().expect("in doubt").len(), 1);
    let view = restarted.show(&a1).expect("show");
    assert_eq!(view.status, ApprovalStatus::InDoubt);
    assert!(view.to_string().contains("never retried"), "{view}");
    // The server said it timed out: still in doubt, still refused.
    restarted
        .record_result(&a1, Outcome::InDoubt, "timeout after 30s", &agent())
        .expect("in doubt");
    let refused = refusal(restarted.authorize(&a1, "email_send", &reply()));
    assert_refused!(refused, Refusal::InDoubt { .. });
    // The human checked the outbox: it was sent.
    restarted
        .record_result(&a1, Outcome::Ok, "found in Sent", &agent())
        .expect("settled");
    assert!(restarted.in_doubt().expect("in doubt").is_empty());
    assert!(fx.exists("Done/approvals/a1.md"));
}

/// A failed execution never runs again: its file is set aside.
#[test]
fn approvals_failed_result_sets_aside() {
    let fx = Fixture::new();
    let a1 = fx.approved("a1");
    fx.authorize(&a1).expect("authorized");
    let out = fx
        .record_result(&a1, Outcome::Error, "550 mailbox unavailable")
        .expect("result");
    assert_eq!(out.moved_to.as_deref(), Some("Quarantine/a1.md"));
    assert_eq!(fx.status(&a1), ApprovalStatus::Failed);
    let none = fx.record_result(&id("a9"), Outcome::Ok, "");
    assert!(
        matches!(none, Err(ApprovalError::NotStarted { .. })),
        "{none:?}"
    );
}

/// A removed ledger line leaves a gap in seq: the ledger authorizes nothing.
#[test]
fn approvals_ledger_gap_is_damage() {
    let fx = Fixture::new();
    for raw in ["a1", "a2", "a3"] {
        fx.approved(raw);
    }
    let mut lines = fx.ledger_lines();
    lines.remove(1);
    fx.write_ledger(&lines);
    let refused = refusal(fx.authorize(&id("a3")));
    match &refused.refusal {
        Refusal::LedgerDamaged { detail } => {
            assert!(detail.contains("seq 3 follows seq 1"), "{detail}")
        }
        other => panic!("expected LedgerDamaged, got {other}"),
    }
    fx.assert_unused(&id("a3"));
}

/// A line torn by a crash mid-append never counted; the ledger goes on after it.
#[test]
fn approvals_torn_ledger_line_is_harmless() {
    let fx = Fixture::new();
    let a1 = fx.approved("a1");
    fx.append_ledger("{\"approval_id\":\"a1\",\"at\":\"2025-");
    let a2 = fx.approved("a2");
    let state = fx.ledger_state();
    assert_eq!(state.problems.len(), 1);
    assert_eq!(state.problems[0].kind, ProblemKind::Torn);
    assert!(state.damage().is_none());
    fx.authorize(&a1).expect("a1");
    fx.authorize(&a2).expect("a2");
}

/// The key is 32 private bytes, made once and kept; a loose or damaged key is refused.
#[test]
fn approvals_key_is_private_and_stable() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::new();
    let a1 = fx.approved("a1");
    let key = fx.state().join(KEY_FILE);
    let meta = fs::metadata(&key).expect("key");
    assert_eq!(meta.len(), 32);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let reopened = fx.reopen().expect("reopen");
    reopened
        .authorize(&a1, "email_send", &reply())
        .expect("same key verifies old entries");

    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
    let loose = fx.reopen().expect_err("loose key");
    assert_error!(loose, ApprovalError::KeyPermissions { .. });
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::write(&key, b"short").expect("damage");
    let bad = fx.reopen().expect_err("bad key");
    assert_error!(bad, ApprovalError::BadKey { .. });
}

/// A pending file edited after drafting cannot be approved; nothing is recorded.
#[test]
fn approvals_approve_refuses_edited_request() {
    let fx = Fixture::new();
    let a1 = fx.draft("a1");
    let path = fx.path("Pending_Approval/email/a1.md");
    let text = fs::read_to_string(&path).expect("read");
    fs::write(
        &path,
        text.replace("alice@example.org", "mallory@example.org"),
    )
    .expect("edit");
    let err = fx
        .approvals
        .approve(&a1, "owner", &as_shown(&fx.approvals, &a1))
        .expect_err("edited");
    assert_error!(err, ApprovalError::PayloadMismatch { .. });
    assert!(fx.ledger_state().get(&a1).is_none());
    let listing = fx.approvals.list_pending().expect("list");
    assert!(listing.to_string().contains("EDITED"), "{listing}");
    fx.approvals
        .reject(&a1, "owner", "edited")
        .expect("an edited file can still be rejected");
}

/// A crash between the ledger entry and the move leaves the file pending; approving again
/// finishes the move, and only then can it run.
#[test]
fn approvals_interrupted_approve_is_finished() {
    let fx = Fixture::new();
    let a1 = fx.approved("a1");
    fx.move_file("Approved/a1.md", "Pending_Approval/email/a1.md")
        .expect("undo move");
    let refused = refusal(fx.authorize(&a1));
    assert_refused!(refused, Refusal::NotApproved { .. });
    let decided = fx
        .approvals
        .approve(&a1, "owner", &as_shown(&fx.approvals, &a1))
        .expect("finish");
    assert_eq!(decided.path, "Approved/a1.md");
    fx.authorize(&a1).expect("authorized");
}

/// A `Quarantine` that is a link is never moved into: the refusal stands, the bait stays
/// empty, the file stays where it was.
#[test]
fn approvals_never_set_aside_through_a_link() {
    let fx = Fixture::new();
    let bait = fx.bait_link("Quarantine");
    let a1 = fx.arrive("a1");
    let refused = refusal(fx.authorize(&a1));
    assert_refused!(refused, Refusal::NoLedgerEntry { .. });
    assert!(refused.set_aside.is_none());
    assert!(refused.not_set_aside.is_some(), "{refused}");
    assert_eq!(fs::read_dir(&bait).expect("bait").count(), 0);
    assert!(fx.exists("Approved/a1.md"));
}

/// `list` prints one request a line, id first, and names unreadable files.
#[test]
fn approvals_list_pending_lines() {
    let fx = Fixture::new();
    fx.draft("b2");
    fx.draft("a1");
    fs::write(
        fx.path("Pending_Approval/social/broken.md"),
        "no front matter",
    )
    .expect("broken");
    let listing = fx.approvals.list_pending().expect("list");
    assert_eq!(listing.pending.len(), 2);
    let text = listing.to_string();
    let firsts: Vec<&str> = text
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(firsts.len(), 3, "{text}");
    assert!(
        firsts.contains(&"a1") && firsts.contains(&"b2") && firsts.contains(&"broken"),
        "{text}"
    );
    assert!(
        text.contains("UNREADABLE  Pending_Approval/social/broken.md"),
        "{text}"
    );
    let missing = fx.approvals.show(&id("zz")).expect_err("missing");
    assert_error!(missing, ApprovalError::NotFound { .. });
}

/// A `Done` that is a link is never moved into: the result is recorded, the move is
/// reported as a problem, and nothing appears inside the link's target.
#[test]
fn approvals_never_file_done_through_a_link() {
    let fx = Fixture::new();
    let a1 = fx.approved("a1");
    fs::remove_dir_all(fx.path("Done")).expect("done");
    let bait = fx.bait_link("Done");
    fx.authorize(&a1).expect("authorized");
    let out = fx.record_result(&a1, Outcome::Ok, "sent").expect("result");
    assert!(out.moved_to.is_none());
    assert!(out.problems[0].contains("link"), "{:?}", out.problems);
    assert_eq!(fs::read_dir(&bait).expect("bait").count(), 0);
    assert_eq!(fx.status(&a1), ApprovalStatus::Done);
}

/// Set in a child process to the vault it authorizes in (see [`authorize_child_process`]).
const CHILD_VAULT_ENV: &str = "AIE_APPROVALS_TEST_CHILD_VAULT";
/// Set in a child process to the state folder it shares with its siblings.
const CHILD_STATE_ENV: &str = "AIE_APPROVALS_TEST_CHILD_STATE";
/// Approvals contended for across processes.
const CONTENDED: usize = 20;

/// Not a test on its own: the child of [`approvals_at_most_once_across_processes`]. Four
/// threads try every contended approval and print the ones they won.
#[test]
fn authorize_child_process() {
    let (Ok(root), Ok(state)) = (
        std::env::var(CHILD_VAULT_ENV),
        std::env::var(CHILD_STATE_ENV),
    ) else {
        return;
    };
    let vault = Vault::open(root).expect("child opens vault");
    let approvals = Approvals::open(vault, Path::new(&state)).expect("child opens ledger");
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let approvals = approvals.clone();
            thread::spawn(move || {
                (0..CONTENDED)
                    .filter_map(|i| {
                        let a = id(&format!("c{i:02}"));
                        approvals.authorize(&a, "email_send", &reply()).ok()
                    })
                    .map(|go| go.approval_id.to_string())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for won in handles.into_iter().flat_map(|h| h.join().expect("thread")) {
        println!("WIN {won}");
    }
}

/// Four processes of four threads each, sharing one state folder (as `aie approvals` and a
/// running stack do): every approval is authorized exactly once, and the ledger stays sound.
#[test]
fn approvals_at_most_once_across_processes() {
    let fx = Fixture::new();
    for i in 0..CONTENDED {
        fx.approved(&format!("c{i:02}"));
    }
    let exe = std::env::current_exe().expect("test binary");
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["--exact", "approvals::tests::authorize_child_process"])
                .args(["--nocapture", "--test-threads", "1"])
                .env(CHILD_VAULT_ENV, fx.vault().root())
                .env(CHILD_STATE_ENV, fx.state())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    let mut wins = Vec::new();
    for child in children {
        let output = child.wait_with_output().expect("child output");
        assert!(output.status.success(), "child failed");
        let stdout = String::from_utf8_lossy(&output.stdout);
        wins.extend(
            stdout
                .lines()
                // The harness may print the test's name on the same line as the first win.
                .filter_map(|l| l.split_once("WIN ").map(|(_, won)| won.trim().to_owned())),
        );
    }
    wins.sort();
    let expected: Vec<String> = (0..CONTENDED).map(|i| format!("c{i:02}")).collect();
    assert_eq!(wins, expected, "each approval won exactly once");
    fx.assert_ledger_sound();
    for i in 0..CONTENDED {
        assert_eq!(fx.used_entries(&id(&format!("c{i:02}"))), 1);
    }
}

/// The `NotReleasable` reason of a refused release.
fn not_releasable(result: Result<(), ApprovalError>) -> String {
    match result {
        Err(ApprovalError::NotReleasable { why, .. }) => why,
        other => panic!("expected NotReleasable, got {other:?}"),
    }
}

/// A use given back (the server certified nothing ran) leaves the approval valid and unused:
/// its file stays in `Approved/`, its task where it is, the ledger keeps the story, and the
/// next call runs it once.
#[test]
fn approvals_release_after_use_makes_it_usable_again() {
    let fx = Fixture::new();
    let a1 = fx.draft_for_task("a1", "t1");
    fx.approvals
        .approve(&a1, "owner", &as_shown(&fx.approvals, &a1))
        .expect("approve");
    let go = fx.authorize(&a1).expect("authorized");
    fx.approvals
        .release(&a1, go.use_seq, "email_send: not sent: SMTP server down")
        .expect("released");
    assert!(fx.exists("Approved/a1.md"), "the file stays");
    assert!(
        fx.exists("Needs_Action/email/t1.md"),
        "the task does not move"
    );
    let record = fx.ledger_state().get(&a1).cloned().expect("record");
    assert!(record.used_at.is_none(), "unused again");
    assert_eq!(record.released.len(), 1);
    assert_eq!(record.released[0].used_at, go.used_at);
    assert!(record.result.is_none());
    let view = fx.approvals.show(&a1).expect("show");
    assert_eq!(view.status, ApprovalStatus::Approved);
    assert!(
        view.to_string().contains("given back at ")
            && view.to_string().contains("not sent: SMTP server down"),
        "{view}"
    );
    assert!(fx.approvals.in_doubt().expect("in doubt").is_empty());

    let again = fx.authorize(&a1).expect("usable again");
    assert!(again.use_seq > go.use_seq);
    let running = refusal(fx.authorize(&a1));
    assert_refused!(running, Refusal::AlreadyUsed { .. });
    fx.record_result(&a1, Outcome::Ok, "sent").expect("result");
    assert!(fx.exists("Done/approvals/a1.md"));
    assert!(fx.exists("Done/t1.md"));
    fx.assert_ledger_sound();
}

/// A release follows only the matching use of a running execution: never without a use,
/// never twice, never after a result (in doubt included), never for an older use, and never
/// for a use a crashed process left behind. Each refusal says why and writes nothing.
#[test]
fn approvals_release_refused_unless_it_follows_its_use() {
    let fx = Fixture::new();
    let a1 = fx.approved("a1");
    let why = not_releasable(fx.approvals.release(&a1, 1, "never used"));
    assert!(why.contains("not in use"), "{why}");

    let go = fx.give_back(&a1);
    let why = not_releasable(fx.approvals.release(&a1, go.use_seq, "twice"));
    assert!(why.contains("not in use"), "{why}");

    // An older use named after a new one began.
    let second = fx.authorize(&a1).expect("authorized again");
    let why = not_releasable(fx.approvals.release(&a1, go.use_seq, "stale"));
    assert!(why.contains("not its current use"), "{why}");
    fx.record_result(&a1, Outcome::Ok, "sent").expect("result");
    let why = not_releasable(fx.approvals.release(&a1, second.use_seq, "after ok"));
    assert!(why.contains("already has a result (ok)"), "{why}");

    // A timeout recorded in doubt is not given back either.
    let a2 = fx.approved("a2");
    let go = fx.authorize(&a2).expect("authorized");
    fx.record_result(&a2, Outcome::InDoubt, "timeout")
        .expect("in doubt");
    let why = not_releasable(fx.approvals.release(&a2, go.use_seq, "late"));
    assert!(why.contains("already has a result (in doubt)"), "{why}");

    // A crash between the use and its outcome: the restarted process cannot give it back.
    let a3 = fx.approved("a3");
    let go = fx.authorize(&a3).expect("authorized");
    let restarted = fx.reopen().expect("reopen");
    let why = not_releasable(restarted.release(&a3, go.use_seq, "after a crash"));
    assert!(
        why.contains("a use left by a crash stays in doubt"),
        "{why}"
    );
    let refused = refusal(restarted.authorize(&a3, "email_send", &reply()));
    assert_refused!(refused, Refusal::InDoubt { .. });

    let lines = fx.ledger_lines();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("\"event\":\"released\""))
            .count(),
        1,
        "only the one good release was written"
    );
    fx.assert_ledger_sound();
}

/// A release line altered in place, or copied to name another approval, fails its MAC like
/// any other entry: the ledger authorizes nothing until a person looks.
#[test]
fn approvals_tampered_release_line_is_caught() {
    let fx = Fixture::new();
    let a1 = fx.approved("a1");
    fx.give_back(&a1);
    let mut lines = fx.ledger_lines();
    let last = lines.len() - 1;
    assert!(
        lines[last].contains("\"event\":\"released\""),
        "{}",
        lines[last]
    );
    let mut entry: Value = serde_json::from_str(&lines[last]).expect("json");
    entry["detail"] = json!("edited");
    lines[last] = serde_json::to_string(&entry).expect("encode");
    fx.write_ledger(&lines);
    let state = fx.ledger_state();
    assert_eq!(
        state.problems[0].kind,
        ProblemKind::BadMac,
        "{:?}",
        state.problems
    );
    let refused = refusal(fx.authorize(&a1));
    assert_refused!(refused, Refusal::BadMac);

    // A forged release for an approval in use elsewhere: caught the same way.
    let fx = Fixture::new();
    let b1 = fx.approved("b1");
    let b2 = fx.approved("b2");
    fx.give_back(&b1);
    fx.authorize(&b2).expect("authorized");
    let released = fx
        .ledger_lines()
        .into_iter()
        .find(|l| l.contains("\"event\":\"released\""))
        .expect("release line");
    let mut forged: Value = serde_json::from_str(&released).expect("json");
    forged["approval_id"] = json!("b2");
    forged["seq"] = json!(fx.ledger_lines().len() + 1);
    fx.append_ledger(&format!(
        "{}\n",
        serde_json::to_string(&forged).expect("encode")
    ));
    let restarted = fx.reopen().expect("reopen");
    let refused = refusal(restarted.authorize(&b2, "email_send", &reply()));
    assert_refused!(refused, Refusal::BadMac);
    assert_eq!(fx.used_entries(&b2), 1, "never used twice");
}

/// An authentic release that does not follow its use (written by a bug, not through
/// `release`) is a conflict: the ledger is damaged and authorizes nothing.
#[test]
fn approvals_release_without_use_is_a_conflict() {
    let fx = Fixture::new();
    let a1 = fx.approved("a1");
    {
        let mut locked = fx.approvals.ledger().lock().expect("lock");
        locked
            .append(
                &a1,
                ledger::Event::Released {
                    use_seq: 1,
                    detail: "no use".into(),
                },
            )
            .expect("append");
    }
    let state = fx.ledger_state();
    let damage = state.damage().expect("damaged");
    assert_eq!(damage.kind, ProblemKind::Conflict);
    assert!(damage.detail.contains("release"), "{damage}");
    let refused = refusal(fx.authorize(&a1));
    assert_refused!(refused, Refusal::LedgerDamaged { .. });
}

/// Given back, an approval is contended for again: of eight threads exactly one runs it.
#[test]
fn approvals_released_approval_still_has_one_winner() {
    let fx = Fixture::new();
    let a1 = fx.approved("a1");
    fx.give_back(&a1);
    let winners = race(&fx.approvals, &a1)
        .into_iter()
        .filter(Result::is_ok)
        .count();
    assert_eq!(winners, 1);
    assert_eq!(fx.used_entries(&a1), 2, "the released use and the winner's");
}

/// `list` names every approval in doubt after the pending ones, id first and marked IN
/// DOUBT; a released one is not in doubt.
#[test]
fn approvals_list_shows_in_doubt() {
    let fx = Fixture::new();
    fx.draft("p1");
    let a1 = fx.approved("a1");
    fx.authorize(&a1).expect("authorized");
    let a2 = fx.approved("a2");
    fx.give_back(&a2);
    // Running in this process: not in doubt here.
    assert!(
        fx.approvals
            .list_pending()
            .expect("list")
            .in_doubt
            .is_empty()
    );
    // After a crash, another process (`aie approvals list`) sees it in doubt.
    let restarted = fx.reopen().expect("reopen");
    let listing = restarted.list_pending().expect("list");
    assert_eq!(listing.in_doubt.len(), 1, "{listing}");
    let text = listing.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("p1  email"), "{text}");
    assert!(
        lines[1].starts_with("a1  IN DOUBT  email_send  since "),
        "{text}"
    );
    assert!(lines[1].contains("never retried"), "{text}");
}

/// Approve is bound to the payload shown: the same request pushed again with another
/// recipient and its hash recomputed (a consistent file) is refused with the hash shown,
/// nothing written to the ledger, the file left pending; the new version's own hash approves.
#[test]
fn approvals_approve_binds_to_the_shown_payload() {
    let fx = Fixture::new();
    let a1 = fx.draft("a1");
    let shown = as_shown(&fx.approvals, &a1);
    let mut swapped = reply();
    swapped["to"] = json!("mallory@evil.example");
    let forged = request("a1", &swapped, TimeDelta::hours(1))
        .render()
        .expect("render");
    fs::write(fx.path("Pending_Approval/email/a1.md"), forged).expect("push");

    let err = fx
        .approvals
        .approve(&a1, "owner", &shown)
        .expect_err("not the payload shown");
    assert_error!(err, ApprovalError::NotAsShown { .. });
    let message = err.to_string();
    assert!(
        message.contains(&crate::vault::payload_sha256(&swapped))
            && message.contains(shown.as_str())
            && !message.contains('\n'),
        "{message}"
    );
    assert!(fx.ledger_state().get(&a1).is_none());
    assert!(fx.exists("Pending_Approval/email/a1.md"));

    let decided = fx
        .approvals
        .approve(&a1, "owner", &as_shown(&fx.approvals, &a1))
        .expect("the version shown now");
    assert_eq!(decided.path, "Approved/a1.md");
    let approved = fx
        .ledger_state()
        .get(&a1)
        .cloned()
        .unwrap()
        .approved
        .unwrap();
    assert_eq!(
        approved.payload_sha256,
        crate::vault::payload_sha256(&swapped)
    );
}

/// `--sha256` takes 8 to 64 hex digits, in either case; anything else is refused.
#[test]
fn approvals_shown_hash_needs_eight_hex_digits() {
    assert!(ShownHash::new("0123abcd").is_ok());
    assert_eq!(
        ShownHash::new(" 0123ABCD ").expect("hex").as_str(),
        "0123abcd"
    );
    for bad in [
        "",
        "0123abc",
        "0123abcg",
        &"a".repeat(65),
        "\u{1b}[2J1234567",
    ] {
        let err = ShownHash::new(bad).expect_err(bad);
        assert_error!(err, ApprovalError::BadShownHash { .. });
        assert!(!err.to_string().contains('\u{1b}'), "{err}");
    }
}

/// `show` and `list` print a payload holding a clear-screen sequence, a bidi override and a
/// look-alike address escaped, with the look-alike flagged; `show` gives the fields and the
/// hash `approve --sha256` takes.
#[test]
fn approvals_show_escapes_and_flags_lookalikes() {
    let fx = Fixture::new();
    let payload = json!({
        "to": ["alice@\u{0441}ustomer.example"],
        "subject": "Invoice \u{202e}fdp.exe",
        "body": "\u{1b}[2J\u{1b}[Ha1  pending  email_send\n\u{1b}[30;40mpay mallory\u{1b}[0m",
    });
    fx.vault()
        .write_approval_request(
            &request("a1", &payload, TimeDelta::hours(1)).with_preview("\u{1b}]0;owned\u{7}hi"),
        )
        .expect("write");
    let view = fx.approvals.show(&id("a1")).expect("show");
    let hash = crate::vault::payload_sha256(&payload);
    assert_eq!(view.payload_sha256.as_deref(), Some(hash.as_str()));
    assert_eq!(view.tool.as_deref(), Some("email_send"));
    assert_eq!(view.payload.as_ref(), Some(&payload));
    let text = view.to_string();
    let listing = fx.approvals.list_pending().expect("list").to_string();
    for out in [&text, &listing] {
        assert!(
            !out.chars()
                .any(|c| c != '\n' && crate::render::is_hidden(c)),
            "{out}"
        );
    }
    assert!(
        text.contains(
            "WARNING: the address alice@\u{0441}ustomer.example (to[0]) mixes Latin and Cyrillic"
        ),
        "{text}"
    );
    assert!(
        text.contains("it looks like alice@customer.example"),
        "{text}"
    );
    assert!(
        text.contains("  subject: \"Invoice \\u{202e}fdp.exe\""),
        "{text}"
    );
    assert!(
        text.contains("    | \\u{1b}[2J\\u{1b}[Ha1  pending"),
        "{text}"
    );
    assert!(text.contains(&format!("payload_sha256: {hash}")), "{text}");
    assert!(listing.contains("WARNING: 3 look-alike"), "{listing}");
    let json = crate::render::json(&view).expect("json");
    assert!(
        !json
            .chars()
            .any(|c| c != '\n' && crate::render::is_hidden(c)),
        "{json}"
    );
}
