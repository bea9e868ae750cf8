//! The audit log on real files: a clean chain verifies; an edited, removed, reordered or
//! cut-off record is named; a torn write is survived; concurrent appends keep one chain.

use std::{
    collections::BTreeSet,
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Barrier},
    thread,
};

use serde_json::{Value, json};
use tempfile::TempDir;

use super::*;

/// A fresh vault and state folder in one temporary directory.
fn setup() -> (TempDir, Vault, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::init(dir.path().join("vault")).expect("init");
    let state = dir.path().join("state");
    (dir, vault, state)
}

fn agent(name: &str) -> AgentName {
    AgentName::new(name).expect("agent name")
}

/// A refused execute call with a secret-looking body among its arguments.
fn call(n: usize) -> ToolCall {
    ToolCall::new(
        Zone::Local,
        "claude",
        format!("req-{n}"),
        "email_send",
        EffectClass::Execute,
        &json!({"approval_id": format!("a{n}"), "body": "TOP SECRET BODY"}),
    )
    .latency_ms(3)
}

/// Opens `name`'s log and appends `n` records.
fn write_log(vault: &Vault, state: &Path, name: &str, n: usize) -> PathBuf {
    let log = AuditLog::open(vault, state, agent(name)).expect("open");
    for i in 0..n {
        log.append(call(i)).expect("append");
    }
    let files = day_files(&vault.logs_dir(&agent(name))).expect("files");
    files.last().expect("a day file").1.clone()
}

fn read_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(path, text).expect("write");
}

/// Rewrites log file `path` with `edit` applied to its lines, as someone tampering would;
/// what `edit` returned.
fn edit_lines<T>(path: &Path, edit: impl FnOnce(&mut Vec<String>) -> T) -> T {
    let mut lines = read_lines(path);
    let out = edit(&mut lines);
    write_lines(path, &lines);
    out
}

/// Verifies the logs (against the heads in `state`, if given), asserting they hold.
fn verify_ok(vault: &Vault, state: Option<&Path>) -> VerifyReport {
    let report = verify(vault, state).expect("verify");
    assert!(report.ok(), "{report}");
    report
}

/// Verifies the logs (against the heads in `state`, if given): the first break found.
fn first_break(vault: &Vault, state: Option<&Path>) -> ChainBreak {
    verify(vault, state)
        .expect("verify")
        .first_break()
        .cloned()
        .expect("broken")
}

/// The one agent's chain from a report.
fn only_chain(report: &VerifyReport) -> &AgentChain {
    assert_eq!(report.agents.len(), 1, "{report}");
    &report.agents[0]
}

/// Appended records verify, with and without the state folder, and the head matches.
#[test]
fn audit_clean_log_verifies() {
    let (_dir, vault, state) = setup();
    write_log(&vault, &state, "local", 10);
    let report = verify_ok(&vault, Some(&state));
    let chain = only_chain(&report);
    assert_eq!(chain.records, 10);
    assert!(chain.head_checked);
    assert!(chain.torn.is_empty());
    verify_ok(&vault, None);
    assert!(
        report
            .to_string()
            .contains("local: 10 records in 1 file, chain intact")
    );
}

/// The record is the contract's, chained from 64 zeros, and keeps no argument text.
#[test]
fn audit_record_fields_and_no_bodies() {
    let (_dir, vault, state) = setup();
    let log = AuditLog::open(&vault, &state, agent("local")).expect("open");
    let first = log
        .append(call(1).refused("cloud may not execute"))
        .expect("append");
    let second = log
        .append(call(2).approval(ApprovalId::new("a2").expect("id")))
        .expect("append");
    assert_eq!((first.seq, first.prev.as_str()), (1, GENESIS));
    assert_eq!((second.seq, &second.prev), (2, &first.hash));
    assert_eq!(first.decision, CallDecision::Refused);
    assert_eq!(first.status, CallStatus::Refused);
    let args = json!({"approval_id": "a1", "body": "TOP SECRET BODY"});
    assert_eq!(first.args_sha256, args_sha256(&args));
    let text = fs::read_to_string(
        day_files(&vault.logs_dir(&agent("local"))).expect("files")[0]
            .1
            .clone(),
    )
    .expect("read");
    assert!(!text.contains("TOP SECRET"), "{text}");
    let line: Value = serde_json::from_str(text.lines().next().expect("line")).expect("json");
    for key in [
        "ts",
        "agent",
        "zone",
        "client",
        "correlation_id",
        "tool",
        "class",
        "args_sha256",
        "decision",
        "reason",
        "approval_id",
        "status",
        "latency_ms",
        "seq",
        "prev",
        "hash",
    ] {
        assert!(line.get(key).is_some(), "missing {key}: {line}");
    }
    assert_eq!(line["hash"], json!(record_hash(&line)));
    assert_eq!(line["class"], json!("execute"));
    assert_eq!(line["zone"], json!("local"));
}

/// A client's overlong strings are cut, so the log cannot be flooded through them.
#[test]
fn audit_long_fields_are_capped() {
    let (_dir, vault, state) = setup();
    let log = AuditLog::open(&vault, &state, agent("local")).expect("open");
    let mut long = call(1);
    long.tool = "x".repeat(10_000);
    long.reason = "é".repeat(10_000);
    let record = log.append(long).expect("append");
    assert_eq!(record.tool.chars().count(), MAX_SHORT_FIELD + 1);
    assert_eq!(record.reason.chars().count(), MAX_REASON + 1);
    verify_ok(&vault, Some(&state));
}

/// A record whose content was changed is named, with its file, line and seq.
#[test]
fn audit_edited_record_is_caught() {
    let (_dir, vault, state) = setup();
    let file = write_log(&vault, &state, "local", 10);
    edit_lines(&file, |lines| {
        lines[4] = lines[4].replace("\"status\":\"ok\"", "\"status\":\"error\"")
    });
    let report = verify(&vault, None).expect("verify");
    let broken = report.first_break().expect("broken");
    assert_eq!(broken.kind, BreakKind::Edited);
    assert_eq!(broken.seq, Some(5));
    assert_eq!(broken.at.line, 5);
    assert!(broken.at.file.starts_with("Logs/local/"), "{broken}");
    assert!(
        broken.detail.contains("does not match its hash"),
        "{broken}"
    );
    assert!(!report.ok());
}

/// An edit that also recomputes the record's hash breaks the next record's link.
#[test]
fn audit_edited_and_rehashed_record_is_caught() {
    let (_dir, vault, state) = setup();
    let file = write_log(&vault, &state, "local", 10);
    edit_lines(&file, |lines| {
        let mut record: Value = serde_json::from_str(&lines[4]).expect("json");
        record["reason"] = json!("nothing to see");
        record["hash"] = json!(record_hash(&record));
        lines[4] = serde_json::to_string(&record).expect("encode");
    });
    let broken = first_break(&vault, None);
    assert_eq!((broken.kind, broken.seq), (BreakKind::Edited, Some(6)));
    assert!(broken.detail.contains("seq 5"), "{broken}");
}

/// A record taken out leaves a gap in seq, named at the record after it.
#[test]
fn audit_removed_record_is_caught() {
    let (_dir, vault, state) = setup();
    let file = write_log(&vault, &state, "local", 10);
    edit_lines(&file, |lines| lines.remove(4));
    let broken = first_break(&vault, None);
    assert_eq!(
        (broken.kind, broken.seq, broken.at.line),
        (BreakKind::Removed, Some(6), 5)
    );
    assert!(broken.detail.contains("seq 5 is missing"), "{broken}");
}

/// The first records taken out: the log must start at seq 1.
#[test]
fn audit_removed_first_records_are_caught() {
    let (_dir, vault, state) = setup();
    let file = write_log(&vault, &state, "local", 5);
    edit_lines(&file, |lines| {
        lines.drain(..2);
    });
    let broken = first_break(&vault, None);
    assert_eq!((broken.kind, broken.seq), (BreakKind::Removed, Some(3)));
    assert!(broken.detail.contains("seq 1 to 2 are missing"), "{broken}");
}

/// Two records swapped are reported as reordered, not as removed.
#[test]
fn audit_reordered_records_are_caught() {
    let (_dir, vault, state) = setup();
    let file = write_log(&vault, &state, "local", 10);
    edit_lines(&file, |lines| lines.swap(3, 4));
    let broken = first_break(&vault, None);
    assert_eq!(
        (broken.kind, broken.seq, broken.at.line),
        (BreakKind::Reordered, Some(5), 4)
    );
    // A record repeated later is reordered too.
    edit_lines(&file, |lines| {
        lines.swap(3, 4);
        let again = lines[2].clone();
        lines.push(again);
    });
    let broken = first_break(&vault, None);
    assert_eq!((broken.kind, broken.seq), (BreakKind::Reordered, Some(3)));
}

/// Cutting records off the end passes the chain alone but not the head in the state folder,
/// and the log refuses to be extended from the cut.
#[test]
fn audit_truncated_tail_is_caught() {
    let (_dir, vault, state) = setup();
    let file = write_log(&vault, &state, "local", 10);
    edit_lines(&file, |lines| lines.truncate(7));
    // The chain by itself cannot know: that is what the head is for.
    verify_ok(&vault, None);
    let broken = first_break(&vault, Some(&state));
    assert_eq!(
        (broken.kind, broken.seq, broken.at.line),
        (BreakKind::Truncated, Some(7), 7)
    );
    assert!(broken.detail.contains("up to seq 10"), "{broken}");
    let refused = AuditLog::open(&vault, &state, agent("local")).expect_err("must refuse");
    assert!(
        matches!(
            refused,
            AuditError::Truncated {
                log_seq: 7,
                head_seq: 10,
                ..
            }
        ),
        "{refused}"
    );
    // The whole log gone is a cut-off end too.
    fs::remove_file(&file).expect("remove");
    assert_eq!(first_break(&vault, Some(&state)).kind, BreakKind::Truncated);
}

/// A tail cut off and rewritten with a valid-looking chain differs from the head.
#[test]
fn audit_rewritten_tail_is_caught() {
    let (_dir, vault, state) = setup();
    let file = write_log(&vault, &state, "local", 10);
    edit_lines(&file, |lines| {
        lines.truncate(7);
        let mut prev: Value = serde_json::from_str(&lines[6]).expect("json");
        for seq in 8..=10 {
            let mut record = prev.clone();
            record["seq"] = json!(seq);
            record["prev"] = prev["hash"].clone();
            record["reason"] = json!("forged");
            record["hash"] = json!(record_hash(&record));
            lines.push(serde_json::to_string(&record).expect("encode"));
            prev = record;
        }
    });
    verify_ok(&vault, None);
    let broken = first_break(&vault, Some(&state));
    assert_eq!(
        (broken.kind, broken.seq, broken.at.line),
        (BreakKind::Edited, Some(10), 10)
    );
    let refused = AuditLog::open(&vault, &state, agent("local")).expect_err("must refuse");
    assert!(
        matches!(refused, AuditError::Rewritten { seq: 10, .. }),
        "{refused}"
    );
}

/// A crash mid-write leaves a torn last line: reopening continues the chain after it on a
/// new line, and verify reports the torn line without calling the chain broken.
#[test]
fn audit_append_after_torn_line() {
    let (_dir, vault, state) = setup();
    let file = write_log(&vault, &state, "local", 5);
    let mut handle = fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .expect("open");
    handle
        .write_all(br#"{"seq":6,"ts":"2025-01-"#)
        .expect("torn write");
    drop(handle);
    // Before anyone appends again, the torn line is the file's unterminated end.
    let report = verify_ok(&vault, Some(&state));
    assert_eq!(only_chain(&report).torn.len(), 1);
    let log = AuditLog::open(&vault, &state, agent("local")).expect("reopen");
    let record = log.append(call(6)).expect("append");
    assert_eq!(record.seq, 6);
    let report = verify_ok(&vault, Some(&state));
    let chain = only_chain(&report);
    assert_eq!(chain.records, 6);
    assert_eq!(
        chain.torn.iter().map(|t| t.line).collect::<Vec<_>>(),
        vec![6]
    );
    assert!(report.to_string().contains(":6: torn line"), "{report}");
    let lines = read_lines(&file);
    assert_eq!(lines.len(), 7);
}

/// A record written whole but for its line break counts: the next one follows it.
#[test]
fn audit_unterminated_whole_record_is_kept() {
    let (_dir, vault, state) = setup();
    let file = write_log(&vault, &state, "local", 3);
    let text = fs::read_to_string(&file).expect("read");
    fs::write(&file, text.trim_end()).expect("write");
    let log = AuditLog::open(&vault, &state, agent("local")).expect("reopen");
    assert_eq!(log.append(call(4)).expect("append").seq, 4);
    let report = verify_ok(&vault, Some(&state));
    assert_eq!(only_chain(&report).records, 4);
    assert!(only_chain(&report).torn.is_empty());
}

/// An unreadable line that is not a crash's torn end (the chain does not go on past it) is
/// an edit.
#[test]
fn audit_garbled_record_is_caught() {
    let (_dir, vault, state) = setup();
    let file = write_log(&vault, &state, "local", 5);
    edit_lines(&file, |lines| lines[2] = "not json at all".to_owned());
    let broken = first_break(&vault, None);
    assert_eq!(
        (broken.kind, broken.seq, broken.at.line),
        (BreakKind::Edited, None, 3)
    );
    edit_lines(&file, |lines| {
        lines.truncate(2);
        lines.push("garbage".to_owned());
    });
    let broken = first_break(&vault, None);
    assert_eq!((broken.kind, broken.at.line), (BreakKind::Edited, 3));
}

/// A record copied from another agent's log does not belong in this one.
#[test]
fn audit_record_of_another_agent_is_caught() {
    let (_dir, vault, state) = setup();
    let ours = write_log(&vault, &state, "local", 3);
    let theirs = write_log(&vault, &state, "cloud", 3);
    edit_lines(&ours, |lines| lines[2] = read_lines(&theirs)[2].clone());
    let report = verify(&vault, None).expect("verify");
    let broken = report.first_break().expect("broken");
    assert!(broken.detail.contains("names agent \"cloud\""), "{broken}");
    assert_eq!(report.agents.len(), 2);
    assert!(report.agents[0].broken.is_none(), "cloud's own log holds");
}

/// The chain continues across day files, oldest first, and reopening picks up its end.
#[test]
fn audit_chain_spans_day_files() {
    let (_dir, vault, state) = setup();
    let file = write_log(&vault, &state, "local", 3);
    let older = file.with_file_name("2020-01-01.jsonl");
    fs::rename(&file, &older).expect("rename");
    write_log(&vault, &state, "local", 2);
    let report = verify_ok(&vault, Some(&state));
    assert_eq!(
        (only_chain(&report).records, only_chain(&report).files),
        (5, 2)
    );
    // Moving a record into another day's file breaks the order.
    let moved = edit_lines(&older, |lines| lines.remove(1));
    edit_lines(&file, |newest| newest.insert(0, moved));
    let broken = first_break(&vault, None);
    assert_eq!(broken.kind, BreakKind::Reordered);
}

/// Eight threads appending a thousand records each, through clones and through separate
/// opens, leave one unbroken chain of 8,000.
#[test]
fn audit_concurrent_appends_keep_one_chain() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 1000;
    let (_dir, vault, state) = setup();
    let log = AuditLog::open(&vault, &state, agent("local")).expect("open");
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            // Half share a clone, half open the log themselves: both must share one chain end.
            let log = if t % 2 == 0 {
                log.clone()
            } else {
                AuditLog::open(&vault, &state, agent("local")).expect("open")
            };
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                (0..PER_THREAD)
                    .map(|i| log.append(call(t * PER_THREAD + i)).expect("append").seq)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let seqs: BTreeSet<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("thread"))
        .collect();
    let total = (THREADS * PER_THREAD) as u64;
    assert_eq!(seqs, (1..=total).collect());
    let report = verify_ok(&vault, Some(&state));
    assert_eq!(only_chain(&report).records, total);
    assert!(only_chain(&report).head_checked);
}

/// A log folder that is a link (the agent's, or `Logs/` itself) is never written through,
/// and nothing is created inside the link's target.
#[test]
fn audit_refuses_linked_log_folder() {
    let (dir, vault, state) = setup();
    let bait = dir.path().join("bait");
    fs::create_dir_all(&bait).expect("bait");
    std::os::unix::fs::symlink(&bait, vault.logs_dir(&agent("evil"))).expect("link");
    let refused = AuditLog::open(&vault, &state, agent("evil")).expect_err("must refuse");
    assert!(
        matches!(refused, AuditError::NotAFolder { .. }),
        "{refused}"
    );
    fs::remove_file(vault.logs_dir(&agent("evil"))).expect("unlink");
    fs::remove_dir_all(vault.root().join("Logs")).expect("logs");
    std::os::unix::fs::symlink(&bait, vault.root().join("Logs")).expect("link");
    let refused = AuditLog::open(&vault, &state, agent("local")).expect_err("must refuse");
    assert!(
        matches!(refused, AuditError::NotAFolder { .. }),
        "{refused}"
    );
    assert_eq!(fs::read_dir(&bait).expect("bait").count(), 0);
    let report = verify(&vault, None).expect("verify");
    assert!(report.agents.is_empty());
    assert!(report.to_string().contains("Logs: a link"), "{report}");
}

/// Appends to `file` a record that continues the chain correctly (right `seq`, `prev` and
/// `hash`) but was never written by this machine: what a forger with the vault could add.
fn append_forged(file: &Path) -> u64 {
    edit_lines(file, |lines| {
        let last: Value = serde_json::from_str(lines.last().expect("a record")).expect("json");
        let mut forged = last.clone();
        let seq = last["seq"].as_u64().expect("seq") + 1;
        forged["seq"] = json!(seq);
        forged["prev"] = last["hash"].clone();
        forged["tool"] = json!("email_send");
        forged["decision"] = json!("allowed");
        forged["status"] = json!("ok");
        forged["hash"] = json!(record_hash(&forged));
        lines.push(serde_json::to_string(&forged).expect("encode"));
        seq
    })
}

/// A well-chained record appended past this machine's head passes the chain alone, but
/// verify with the state folder calls it not written by this machine, and the log refuses
/// to be extended (which would take the forged record into the chain for good).
#[test]
fn audit_forged_extension_is_caught() {
    let (_dir, vault, state) = setup();
    let file = write_log(&vault, &state, "local", 5);
    let forged = append_forged(&file);
    assert_eq!(forged, 6);
    verify_ok(&vault, None);
    let broken = first_break(&vault, Some(&state));
    assert_eq!(
        (broken.kind, broken.seq, broken.at.line),
        (BreakKind::Extended, Some(6), 6)
    );
    assert!(
        broken.detail.contains("not written by this machine"),
        "{broken}"
    );
    let refused = AuditLog::open(&vault, &state, agent("local")).expect_err("must refuse");
    assert!(
        matches!(
            refused,
            AuditError::Extended {
                log_seq: 6,
                head_seq: 5,
                ..
            }
        ),
        "{refused}"
    );
    // Two forged records are caught at the first of them.
    append_forged(&file);
    let broken = first_break(&vault, Some(&state));
    assert_eq!((broken.kind, broken.seq), (BreakKind::Extended, Some(6)));
}

/// A crash that lost this machine's very first line takes the head back to before the
/// first record, not to nothing: a forged first record put in afterwards is still foreign.
#[test]
fn audit_forged_record_after_lost_first_line_is_caught() {
    let (_dir, vault, state) = setup();
    let local = agent("local");
    let begun = Head {
        seq: 1,
        hash: "ab".repeat(32),
        prev: Some(GENESIS.to_owned()),
    };
    fs::create_dir_all(&state).expect("state");
    write_head(&state, &local, &begun).expect("head");
    drop(AuditLog::open(&vault, &state, local.clone()).expect("opens after the crash"));
    let head = read_heads(&state).expect("heads")["local"].clone();
    assert_eq!((head.seq, head.hash.as_str()), (0, GENESIS));
    // A valid first record, written elsewhere, copied in.
    let (_other_dir, other, other_state) = setup();
    let source = write_log(&other, &other_state, "local", 1);
    let name = source.file_name().expect("name");
    fs::copy(&source, vault.logs_dir(&local).join(name)).expect("copy");
    verify_ok(&vault, None);
    let broken = first_break(&vault, Some(&state));
    assert_eq!((broken.kind, broken.seq), (BreakKind::Extended, Some(1)));
    let refused = AuditLog::open(&vault, &state, local).expect_err("refused");
    assert!(matches!(refused, AuditError::Extended { .. }), "{refused}");
}

/// A crash after the head was recorded and before the line was written (simulated by
/// recording a head and writing no line) opens fine: the head is taken back to the log's
/// end, the next record takes the lost one's seq, and verify holds before and after.
#[test]
fn audit_crash_between_head_and_line_opens() {
    let (_dir, vault, state) = setup();
    let file = write_log(&vault, &state, "local", 5);
    let local = agent("local");
    let fifth = read_heads(&state).expect("heads")["local"].clone();
    assert_eq!(fifth.seq, 5);
    let begun = Head {
        seq: 6,
        hash: "ab".repeat(32),
        prev: Some(fifth.hash.clone()),
    };
    write_head(&state, &local, &begun).expect("head");
    // Before any restart: verify holds, and says what was lost.
    let report = verify_ok(&vault, Some(&state));
    let chain = only_chain(&report);
    assert!(chain.head_checked);
    assert!(chain.notes.iter().any(|n| n.contains("seq 6")), "{report}");
    // Torn or absent, the lost line is the same crash.
    let mut handle = fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .expect("open");
    handle.write_all(br#"{"seq":6,"ts":"#).expect("torn write");
    drop(handle);
    let log = AuditLog::open(&vault, &state, local.clone()).expect("opens after the crash");
    let head = read_heads(&state).expect("heads")["local"].clone();
    assert_eq!((head.seq, &head.hash), (5, &fifth.hash), "taken back");
    let record = log.append(call(6)).expect("append");
    assert_eq!((record.seq, &record.prev), (6, &fifth.hash));
    let report = verify_ok(&vault, Some(&state));
    assert_eq!(only_chain(&report).records, 6);
    assert!(only_chain(&report).head_checked);
}

/// The head is recorded before the line: when the head cannot be recorded, no line is
/// written, so the log never goes past what this machine remembers.
#[test]
fn audit_no_line_without_its_head() {
    let (_dir, vault, state) = setup();
    let file = write_log(&vault, &state, "local", 2);
    let log = AuditLog::open(&vault, &state, agent("local")).expect("open");
    // A heads file that cannot be read or replaced: the head write fails.
    let heads = state.join(HEADS_FILE);
    fs::remove_file(&heads).expect("remove heads");
    fs::create_dir(&heads).expect("heads as a folder");
    log.append(call(3)).expect_err("no head, no record");
    assert_eq!(read_lines(&file).len(), 2, "no line without its head");
    fs::remove_dir(&heads).expect("restore");
}

/// A heads file an older version wrote (no `prev`, recorded after the line) still reads:
/// a log one record past it is that version's crash window and is accepted (and the head
/// brought forward), two records past it is an extension by someone else.
#[test]
fn audit_old_heads_file_is_read() {
    let (_dir, vault, state) = setup();
    let file = write_log(&vault, &state, "local", 3);
    let lines = read_lines(&file);
    let second: Value = serde_json::from_str(&lines[1]).expect("json");
    let old = format!(
        "{{\n  \"local\": {{ \"seq\": 2, \"hash\": {} }}\n}}\n",
        second["hash"]
    );
    fs::write(state.join(HEADS_FILE), &old).expect("old heads");
    let report = verify_ok(&vault, Some(&state));
    assert!(only_chain(&report).head_checked);
    drop(AuditLog::open(&vault, &state, agent("local")).expect("open"));
    let head = read_heads(&state).expect("heads")["local"].clone();
    assert_eq!(head.seq, 3);
    assert_eq!(head.prev.as_deref(), second["hash"].as_str());

    fs::write(state.join(HEADS_FILE), &old).expect("old heads");
    append_forged(&file);
    let broken = first_break(&vault, Some(&state));
    assert_eq!((broken.kind, broken.seq), (BreakKind::Extended, Some(3)));
    let refused = AuditLog::open(&vault, &state, agent("local")).expect_err("refused");
    assert!(matches!(refused, AuditError::Extended { .. }), "{refused}");
}

/// Appends racing a verify never show up as foreign records: the heads are read before and
/// after the logs.
#[test]
fn audit_verify_during_appends_holds() {
    let (_dir, vault, state) = setup();
    let log = AuditLog::open(&vault, &state, agent("local")).expect("open");
    log.append(call(0)).expect("append");
    let writer = {
        let log = log.clone();
        thread::spawn(move || {
            for i in 1..300 {
                log.append(call(i)).expect("append");
            }
        })
    };
    for _ in 0..30 {
        let report = verify(&vault, Some(&state)).expect("verify");
        assert!(report.ok(), "{report}");
    }
    writer.join().expect("writer");
    verify_ok(&vault, Some(&state));
}

/// A day's log file committed as a link is never appended to: the record is refused naming
/// the link, its target stays as it was, and no head is recorded for it.
#[cfg(unix)]
#[test]
fn audit_refuses_linked_day_file() {
    let (dir, vault, state) = setup();
    let local = agent("local");
    let logs = vault.logs_dir(&local);
    fs::create_dir_all(&logs).expect("logs");
    let bait = dir.path().join("bait.jsonl");
    fs::write(&bait, "").expect("bait");
    // Today's and tomorrow's, so the test holds across midnight UTC.
    let today = Utc::now().date_naive();
    for day in [today, today.succ_opt().expect("tomorrow")] {
        std::os::unix::fs::symlink(&bait, logs.join(day_file_name(day))).expect("link");
    }
    let log = AuditLog::open(&vault, &state, local).expect("open");
    let err = log.append(call(1)).expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("is a link; aie never writes through links") && text.contains("Logs/local/"),
        "{text}"
    );
    assert_eq!(fs::read(&bait).expect("bait"), b"");
    assert!(read_heads(&state).expect("heads").is_empty());
}
