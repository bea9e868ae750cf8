//! The fold a ledger handle keeps between operations: always the fold a fresh handle makes
//! of the file as it is now, read from only what was appended while the file is the one it
//! was folded from, and read whole when it is not.

use std::{
    fs::{self, OpenOptions},
    io::Write,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::atomic::Ordering,
};

use chrono::TimeDelta;
use serde_json::{Value, json};
use tempfile::TempDir;

use super::{ApprovalLedger, LedgerState, ProblemKind};
use crate::{
    approvals::{Approvals, Outcome, ShownHash},
    vault::{AgentName, ApprovalId, ApprovalRequest, Domain, Vault, payload_sha256},
};

/// A vault and a state folder, with two handles on them as two processes hold them: the
/// running stack's and the `aie approvals` command's.
struct Two {
    dir: TempDir,
    stack: Approvals,
    command: Approvals,
}

impl Two {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::init(dir.path().join("vault")).expect("init");
        let state = dir.path().join("state");
        let stack = Approvals::open(vault.clone(), &state).expect("open");
        let command = Approvals::open(vault, &state).expect("open");
        Self {
            dir,
            stack,
            command,
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn file(&self) -> PathBuf {
        self.stack.ledger().path().to_path_buf()
    }

    /// Files `Pending_Approval/email/<raw>.md`.
    fn draft(&self, raw: &str) -> ApprovalId {
        let request = ApprovalRequest::new(
            id(raw),
            Domain::Email,
            "email_send",
            reply(),
            AgentName::new("cloud").expect("agent"),
            chrono::Utc::now() + TimeDelta::hours(1),
        );
        self.stack
            .vault()
            .write_approval_request(&request)
            .expect("draft");
        id(raw)
    }

    /// Drafts `raw` and approves it through `by`.
    fn approved(&self, by: &Approvals, raw: &str) -> ApprovalId {
        let id = self.draft(raw);
        by.approve(&id, "owner", &shown()).expect("approve");
        id
    }

    /// The fold a handle opened now makes: the whole file, read and checked.
    fn fresh(&self) -> LedgerState {
        ApprovalLedger::open(&self.state())
            .expect("open")
            .read()
            .expect("read")
    }

    /// Asserts `handle`'s kept fold, brought up to date, is the fresh fold.
    fn assert_current(&self, handle: &Approvals, context: &str) {
        let kept = handle.ledger().read().expect("read");
        assert_eq!(kept, self.fresh(), "{context}");
    }

    /// Appends raw bytes to the ledger, as a crash mid-write or a person leaves them.
    fn append_raw(&self, bytes: &str) {
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.file())
            .expect("ledger")
            .write_all(bytes.as_bytes())
            .expect("append");
    }

    fn lines(&self) -> Vec<String> {
        fs::read_to_string(self.file())
            .expect("ledger")
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// How many times `handle` has read the whole ledger file.
fn whole_reads(handle: &Approvals) -> usize {
    handle.ledger().whole_reads.load(Ordering::Relaxed)
}

fn id(raw: &str) -> ApprovalId {
    ApprovalId::new(raw).expect("approval id")
}

fn reply() -> Value {
    json!({"to": "alice@example.org", "subject": "Re: invoice", "body": "Paid, thanks."})
}

/// The hash the owner was shown for [`reply`].
fn shown() -> ShownHash {
    ShownHash::new(&payload_sha256(&reply())).expect("hash")
}

fn agent() -> AgentName {
    AgentName::new("local").expect("agent")
}

/// Flips one hex digit of the MAC on line `index` (from 0), in place: same file, same
/// length, the last line untouched when `index` is not the last.
fn alter_mac_in_place(file: &Path, index: usize) {
    let text = fs::read_to_string(file).expect("ledger");
    let offset: usize = text.split_inclusive('\n').take(index).map(str::len).sum();
    let line = text.split_inclusive('\n').nth(index).expect("line");
    let at = offset + line.find("\"mac\":\"").expect("mac") + "\"mac\":\"".len();
    let digit = if text.as_bytes()[at] == b'0' {
        b"1"
    } else {
        b"0"
    };
    let handle = OpenOptions::new().write(true).open(file).expect("ledger");
    handle.write_all_at(digit, at as u64).expect("alter");
}

/// splitmix64: a reproducible sequence of operations per seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len())])
    }
}

/// Whatever the two handles do to one ledger, in any order, with torn lines, arrivals
/// through sync, restarts and whole-file checks among them, each handle's kept fold is the
/// fold a fresh handle makes of the file.
#[test]
fn ledger_kept_fold_equals_a_fresh_fold_after_random_operations_from_two_handles() {
    for seed in 1..=6u64 {
        let mut two = Two::new();
        let mut rng = Rng(seed);
        let mut ids: Vec<ApprovalId> = Vec::new();
        // (which handle, approval, use) of executions under way.
        let mut running: Vec<(usize, ApprovalId, u64)> = Vec::new();
        let mut log: Vec<String> = Vec::new();
        for step in 0..100 {
            let which = rng.below(2);
            let handle = if which == 0 { &two.stack } else { &two.command };
            let op = rng.below(14);
            log.push(format!("{step}: op {op} by {which}"));
            match op {
                0..=2 => ids.push(two.draft(&format!("a{step}"))),
                3..=5 => {
                    if let Some(id) = rng.pick(&ids) {
                        let done = handle.approve(id, "owner", &shown()).is_ok();
                        log.push(format!("  approve {id}: {done}"));
                    }
                }
                6 | 7 => {
                    if let Some(id) = rng.pick(&ids)
                        && let Ok(go) = handle.authorize(id, "email_send", &reply())
                    {
                        running.push((which, id.clone(), go.use_seq));
                    }
                }
                8 if !running.is_empty() => {
                    let (by, id, _) = running.swap_remove(rng.below(running.len()));
                    let by = if by == 0 { &two.stack } else { &two.command };
                    let outcome = [Outcome::Ok, Outcome::Error, Outcome::InDoubt][rng.below(3)];
                    let done = by.record_result(&id, outcome, "done", &agent()).is_ok();
                    log.push(format!("  {outcome} {id}: {done}"));
                }
                9 if !running.is_empty() => {
                    let (by, id, use_seq) = running.swap_remove(rng.below(running.len()));
                    let by = if by == 0 { &two.stack } else { &two.command };
                    let done = by.release(&id, use_seq, "down").is_ok();
                    log.push(format!("  release {id}: {done}"));
                }
                10 => {
                    if let Some(id) = rng.pick(&ids) {
                        let done = handle.reject(id, "owner", "no").is_ok();
                        log.push(format!("  reject {id}: {done}"));
                    }
                }
                11 => match rng.below(3) {
                    // A crash mid-append (another one may join it: a torn line written on).
                    0 => two.append_raw("{\"approval_id\":\"a1\",\"at\":\"2025-"),
                    // A file that came through sync, set aside when asked for.
                    1 => {
                        let raw = format!("s{step}");
                        let arrived = two.draft(&raw);
                        let _ = fs::rename(
                            two.stack
                                .vault()
                                .root()
                                .join(format!("Pending_Approval/email/{raw}.md")),
                            two.stack.vault().root().join(format!("Approved/{raw}.md")),
                        );
                        let _ = handle.authorize(&arrived, "email_send", &reply());
                    }
                    _ => handle.ledger().check_whole_file_next(),
                },
                12 => {
                    // A restart: a new handle, nothing kept, nothing running.
                    let reopened =
                        Approvals::open(two.stack.vault().clone(), &two.state()).expect("reopen");
                    running.retain(|(by, _, _)| *by != which);
                    if which == 0 {
                        two.stack = reopened;
                    } else {
                        two.command = reopened;
                    }
                }
                _ => {}
            }
            if rng.below(2) == 0 {
                let handle = if rng.below(2) == 0 {
                    &two.stack
                } else {
                    &two.command
                };
                two.assert_current(handle, &format!("seed {seed}, after\n{}", log.join("\n")));
            }
        }
        let context = format!("seed {seed}, at the end of\n{}", log.join("\n"));
        two.assert_current(&two.stack, &context);
        two.assert_current(&two.command, &context);
        assert!(
            two.lines().len() > 10,
            "seed {seed} did too little: {log:?}"
        );
    }
}

/// Once a handle has read the file, each operation reads only what was appended: the other
/// handle's lines are taken in without reading the whole file again.
#[test]
fn ledger_kept_fold_reads_only_what_was_appended() {
    let two = Two::new();
    let a1 = two.approved(&two.stack, "a1");
    assert_eq!(
        whole_reads(&two.stack),
        1,
        "the first operation reads it all"
    );
    for n in 2..12 {
        let by = if n % 2 == 0 { &two.command } else { &two.stack };
        two.approved(by, &format!("a{n}"));
    }
    // a10, approved by the command, is authorized by the stack.
    let go = two
        .stack
        .authorize(&id("a10"), "email_send", &reply())
        .expect("authorized");
    two.stack
        .record_result(&id("a10"), Outcome::Ok, "sent", &agent())
        .expect("result");
    assert!(go.use_seq > 10);
    two.stack
        .authorize(&a1, "email_send", &reply())
        .expect("a1");
    assert_eq!(two.stack.in_doubt().expect("in doubt"), vec![]);
    assert_eq!(whole_reads(&two.stack), 1, "never the whole file again");
    assert_eq!(whole_reads(&two.command), 1);
    two.assert_current(&two.stack, "stack");
    two.assert_current(&two.command, "command");
}

/// A line the other process appended is in the fold the next operation decides on: the
/// command's approval runs, the command's use of an approval is never a second one.
#[test]
fn ledger_kept_fold_takes_in_a_line_the_other_handle_appended() {
    let two = Two::new();
    two.approved(&two.stack, "a0");
    let a1 = two.approved(&two.command, "a1");
    two.stack
        .authorize(&a1, "email_send", &reply())
        .expect("approved by the command, seen by the stack");
    let refused = two
        .command
        .authorize(&a1, "email_send", &reply())
        .expect_err("used by the stack");
    assert!(
        matches!(refused.refusal, crate::approvals::Refusal::InDoubt { .. }),
        "{refused}"
    );
    two.assert_current(&two.stack, "stack");
    two.assert_current(&two.command, "command");
    assert_eq!(whole_reads(&two.stack), 1);
}

/// A torn last line (a crash mid-append) is folded as far as it goes and, when the next
/// entry starts a new line after it, becomes a whole torn line, as a fresh read sees it;
/// nothing is read whole again.
#[test]
fn ledger_kept_fold_goes_on_after_a_torn_last_line() {
    let two = Two::new();
    let a1 = two.approved(&two.stack, "a1");
    two.append_raw("{\"approval_id\":\"a1\",\"at\":\"2025-");
    two.assert_current(&two.stack, "torn tail");
    let state = two.stack.ledger().read().expect("read");
    assert_eq!(state.problems.len(), 1);
    assert_eq!(state.problems[0].kind, ProblemKind::Torn);
    assert!(state.damage().is_none());
    two.approved(&two.command, "a2");
    two.assert_current(&two.stack, "after the command's entry");
    two.stack
        .authorize(&a1, "email_send", &reply())
        .expect("a1");
    two.stack
        .authorize(&id("a2"), "email_send", &reply())
        .expect("a2");
    two.assert_current(&two.stack, "after two uses");
    assert_eq!(two.stack.ledger().read().expect("read").problems[0].line, 2);
    assert_eq!(whole_reads(&two.stack), 1);
}

/// A torn last line that someone writes on without starting a new line is another line
/// now: the file is read whole again (here it becomes a forged entry).
#[test]
fn ledger_torn_line_written_on_is_read_whole_again() {
    let two = Two::new();
    let a1 = two.approved(&two.stack, "a1");
    two.append_raw("{\"approval_id\":\"a1\",");
    two.assert_current(&two.stack, "torn tail");
    two.append_raw("\"event\":\"used\",\"seq\":2}\n");
    two.assert_current(&two.stack, "written on");
    assert_eq!(whole_reads(&two.stack), 2);
    let refused = two
        .stack
        .authorize(&a1, "email_send", &reply())
        .expect_err("forged line");
    assert!(
        matches!(refused.refusal, crate::approvals::Refusal::BadMac),
        "{refused}"
    );
}

/// A ledger replaced by another file (moved aside and a copy put back, edited before its
/// last line) is read whole at the next operation: the identity of the file tells, though
/// the length and the last line are the same.
#[test]
fn ledger_replaced_file_is_read_whole_again() {
    let two = Two::new();
    for raw in ["a1", "a2", "a3"] {
        two.approved(&two.stack, raw);
    }
    let copy = two.state().join("copy.jsonl");
    fs::copy(two.file(), &copy).expect("copy");
    alter_mac_in_place(&copy, 0);
    fs::rename(&copy, two.file()).expect("replace");
    let refused = two
        .stack
        .authorize(&id("a1"), "email_send", &reply())
        .expect_err("a1's line is forged now");
    assert!(
        matches!(refused.refusal, crate::approvals::Refusal::BadMac),
        "{refused}"
    );
    two.assert_current(&two.stack, "replaced");
    assert_eq!(whole_reads(&two.stack), 2);

    // Moved aside (the way out of a damaged ledger): a new, empty ledger.
    fs::rename(two.file(), two.state().join("approvals.jsonl.damaged")).expect("aside");
    let refused = two
        .stack
        .authorize(&id("a2"), "email_send", &reply())
        .expect_err("no ledger entry now");
    assert!(
        matches!(
            refused.refusal,
            crate::approvals::Refusal::NoLedgerEntry { .. }
        ),
        "{refused}"
    );
    two.assert_current(&two.stack, "moved aside");
}

/// A ledger cut short is read whole again: the entries cut off count no more (an entry
/// cut from the very end leaves no gap, as for a fresh read).
#[test]
fn ledger_truncated_file_is_read_whole_again() {
    let two = Two::new();
    for raw in ["a1", "a2", "a3"] {
        two.approved(&two.stack, raw);
    }
    let first = two.lines()[0].len() as u64 + 1;
    OpenOptions::new()
        .write(true)
        .open(two.file())
        .expect("ledger")
        .set_len(first)
        .expect("truncate");
    two.assert_current(&two.stack, "truncated");
    let state = two.stack.ledger().read().expect("read");
    assert!(state.get(&id("a1")).is_some());
    assert!(state.get(&id("a3")).is_none(), "cut off");
    assert_eq!(whole_reads(&two.stack), 2);
}

/// A ledger cut short and written again past its old length (same file) is read whole
/// again: its last line is not where it was.
#[test]
fn ledger_file_rewritten_past_its_old_length_is_read_whole_again() {
    let two = Two::new();
    for raw in ["a1", "a2", "a3"] {
        two.approved(&two.stack, raw);
    }
    let old = two.lines();
    let mut rewritten = vec![old[0].clone()];
    rewritten.extend(
        old[1..]
            .iter()
            .map(|l| l.replace("\"owner\"", "\"other-owner\"")),
    );
    fs::write(two.file(), rewritten.join("\n") + "\n").expect("rewrite");
    two.assert_current(&two.stack, "rewritten");
    let state = two.stack.ledger().read().expect("read");
    assert_eq!(state.damage().map(|d| d.kind), Some(ProblemKind::BadMac));
    assert_eq!(whole_reads(&two.stack), 2);
}

/// A line altered by hand before the last one (same file, same length) is not noticed by
/// a kept fold until the whole folded part is compared again (every
/// `WHOLE_FILE_CHECK_EVERY`, or when asked): then the ledger is damaged, as a fresh read
/// (the `aie approvals` command) sees it at once.
#[test]
fn ledger_line_altered_before_the_last_is_noticed_at_the_whole_file_check() {
    let two = Two::new();
    for raw in ["a1", "a2", "a3"] {
        two.approved(&two.stack, raw);
    }
    alter_mac_in_place(&two.file(), 1);
    let fresh = two.fresh();
    assert_eq!(fresh.damage().map(|d| d.kind), Some(ProblemKind::BadMac));
    let kept = two.stack.ledger().read().expect("read");
    assert!(
        kept.damage().is_none(),
        "not noticed before the whole-file check"
    );
    assert!(kept.get(&id("a2")).is_some_and(|r| r.approved.is_some()));
    two.stack.ledger().check_whole_file_next();
    two.assert_current(&two.stack, "after the whole-file check");
    let refused = two
        .stack
        .authorize(&id("a2"), "email_send", &reply())
        .expect_err("a2's line is altered");
    assert!(
        matches!(refused.refusal, crate::approvals::Refusal::BadMac),
        "{refused}"
    );
    assert_eq!(whole_reads(&two.stack), 2);
}
