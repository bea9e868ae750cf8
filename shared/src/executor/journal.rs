//! An executor's journal: `<state>/<file>.jsonl`, one JSON line per step of an execution,
//! flushed to disk (`fdatasync`) before the next step, so that after any crash the journal
//! says what may have happened.
//!
//! An execution writes `started` before it acts and `done`, `not_executed` (nothing
//! happened) or `in_doubt` (the service failed while the action was on its way) after. An
//! approval whose last line is `started` or `in_doubt` is **in doubt**: the action may or may
//! not have happened. It is reported and never tried again; only a read-back from the service
//! settles it (`read_back: true` on the line that does).
//!
//! Lines written before the executor moved into `aie_shared` (the email server's
//! `send-journal.jsonl`: `sending`, `sent`, `failed`, `message_id`, `transport`) read as the
//! same states and fields, so an existing state folder's journal is read as it is.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::vault::Domain;

/// What the executor of one server is called, where its journal is and how people are told
/// about it. A server declares one as a `static`; the composition root's server table lists
/// them, so `aie approvals` and `aie up` find every journal without naming a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalSpec {
    /// The executor's name, e.g. `email`: crash points may be scoped by it.
    pub name: &'static str,
    /// The journal's file in the state folder, e.g. `send-journal.jsonl`.
    pub file: &'static str,
    /// The execute tools whose approvals it carries out, e.g. `email_send`.
    pub tools: &'static [&'static str],
    /// The domain of those approvals.
    pub domain: Domain,
    /// The words its messages use.
    pub labels: Labels,
}

/// The words an executor's messages use, so one text serves every effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Labels {
    /// Who keeps the journal: `email server`.
    pub server: &'static str,
    /// What the journal is called: `send journal`.
    pub journal: &'static str,
    /// One execution, as a noun: `send`.
    pub action: &'static str,
    /// What a done execution was: `sent`.
    pub done: &'static str,
    /// What the effect's id is called: `Message-ID`.
    pub effect_id: &'static str,
    /// What the owner does about an execution in doubt: `look for it at the recipient or in
    /// the mail server's log`.
    pub check: &'static str,
}

/// One step of an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JournalState {
    /// About to act (written, and flushed, before anything is handed to the service).
    #[serde(alias = "sending")]
    Started,
    /// The service took it (or a read-back found it).
    #[serde(alias = "sent")]
    Done,
    /// Nothing happened: the service refused or could not be reached before the action (or
    /// a read-back found nothing).
    #[serde(alias = "failed")]
    NotExecuted,
    /// The service failed while the action was on its way: it may have happened.
    InDoubt,
}

impl JournalState {
    /// True when the action may or may not have happened.
    pub fn is_in_doubt(self) -> bool {
        matches!(self, JournalState::Started | JournalState::InDoubt)
    }
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// When (RFC 3339).
    pub ts: String,
    /// The approval being carried out.
    pub approval_id: String,
    /// The step.
    pub state: JournalState,
    /// The effect's own id, derived from the approval before acting (a Message-ID, a
    /// `customerTransactionId`), so a read-back can find it.
    #[serde(alias = "message_id")]
    pub effect_id: String,
    /// The approved payload's hash.
    pub payload_sha256: String,
    /// Where it acts: `smtp://host:port`, `outbox`, an API's base URL.
    #[serde(alias = "transport")]
    pub target: String,
    /// What the service answered with, when it names the result (a `wamid`, a transfer id,
    /// a post id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    /// True on a line that settles an execution in doubt by reading back from the service.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_back: bool,
    /// The service's answer or error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl JournalEntry {
    /// When it was written, if its `ts` reads.
    pub fn at(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.ts)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// An execution that may or may not have happened, as the owner is shown it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct InDoubt {
    /// The executor whose journal holds it (`email`).
    pub executor: String,
    /// The approval.
    pub approval_id: String,
    /// The effect's id, to look for at the service.
    pub effect_id: String,
    /// Where it was acting.
    pub target: String,
    /// When its last line was written.
    pub since: String,
    /// What is known.
    pub detail: String,
}

/// A journal: the file and the last line per approval.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    executor: &'static str,
    last: HashMap<String, JournalEntry>,
    /// Why the journal cannot be trusted, if a line other than the last is unreadable.
    damaged: Option<String>,
    /// The length to cut the file back to before the next append, when its last line is
    /// torn: an append must never continue a torn line into a line that reads as damage.
    torn_at: Option<u64>,
}

impl Journal {
    /// Reads the journal `spec` names in `state_dir` (none yet is empty). A torn last line
    /// is a crash while writing it and is ignored: `started` is written before anything is
    /// acted on, and a torn outcome leaves its `started` line behind, so the approval stays
    /// in doubt.
    pub fn open(state_dir: &Path, spec: &JournalSpec) -> io::Result<Self> {
        let path = state_dir.join(spec.file);
        let mut journal = Journal {
            path,
            executor: spec.name,
            last: HashMap::new(),
            damaged: None,
            torn_at: None,
        };
        let bytes = match std::fs::read(&journal.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(journal),
            Err(e) => return Err(e),
        };
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.split('\n').collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<JournalEntry>(line) {
                Ok(entry) => {
                    journal.last.insert(entry.approval_id.clone(), entry);
                }
                // No newline after it: the write of this line never finished.
                Err(_) if i + 1 == lines.len() => {
                    tracing::warn!(
                        file = %journal.path.display(),
                        "the journal's last line is torn (a crash while writing it); ignoring it"
                    );
                    let kept = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |n| n + 1);
                    journal.torn_at = Some(kept as u64);
                }
                Err(e) if journal.damaged.is_none() => {
                    journal.damaged = Some(format!(
                        "{} line {}: {e}; executing is stopped until a person repairs or moves the file",
                        journal.path.display(),
                        i + 1
                    ));
                }
                Err(_) => {}
            }
        }
        Ok(journal)
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why the journal cannot be trusted, if it cannot.
    pub fn damaged(&self) -> Option<&str> {
        self.damaged.as_deref()
    }

    /// The last line written for `approval_id`.
    pub fn last(&self, approval_id: &str) -> Option<&JournalEntry> {
        self.last.get(approval_id)
    }

    /// The last line of every approval the journal knows.
    pub fn lines(&self) -> impl Iterator<Item = &JournalEntry> {
        self.last.values()
    }

    /// Appends one line and flushes it to disk before returning. Blocking.
    pub fn append(&mut self, entry: JournalEntry) -> io::Result<()> {
        let mut line = serde_json::to_string(&entry).map_err(io::Error::other)?;
        line.push('\n');
        let created = !self.path.exists();
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        if let Some(len) = self.torn_at {
            // The torn fragment never counted; cut it, durably, before writing after it.
            file.set_len(len)?;
            file.sync_data()?;
            self.torn_at = None;
        }
        file.write_all(line.as_bytes())?;
        file.sync_data()?;
        if created && let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.last.insert(entry.approval_id.clone(), entry);
        Ok(())
    }

    /// Every approval in doubt, oldest first.
    pub fn in_doubt(&self) -> Vec<InDoubt> {
        let mut out: Vec<InDoubt> =
            self.last
                .values()
                .filter(|e| e.state.is_in_doubt())
                .map(|e| InDoubt {
                    executor: self.executor.to_owned(),
                    approval_id: e.approval_id.clone(),
                    effect_id: e.effect_id.clone(),
                    target: e.target.clone(),
                    since: e.ts.clone(),
                    detail: match (&e.state, &e.detail) {
                        (JournalState::InDoubt, Some(d)) => d.clone(),
                        _ => "the server stopped while acting; whether it happened is unknown"
                            .to_owned(),
                    },
                })
                .collect();
        out.sort_by(|a, b| (&a.since, &a.approval_id).cmp(&(&b.since, &b.approval_id)));
        out
    }
}

/// What one executor's journal in `state_dir` holds in doubt, for `aie approvals` and
/// `aie up`: the list, and why the journal cannot be trusted if it cannot. Blocking.
pub fn read_in_doubt(
    state_dir: &Path,
    spec: &JournalSpec,
) -> io::Result<(Vec<InDoubt>, Option<String>)> {
    let journal = Journal::open(state_dir, spec)?;
    Ok((journal.in_doubt(), journal.damaged.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: JournalSpec = JournalSpec {
        name: "test",
        file: "test-journal.jsonl",
        tools: &["test_execute"],
        domain: Domain::Email,
        labels: Labels {
            server: "test server",
            journal: "test journal",
            action: "test",
            done: "done",
            effect_id: "id",
            check: "look",
        },
    };

    fn entry(id: &str, state: JournalState) -> JournalEntry {
        JournalEntry {
            ts: "2025-01-31T09:00:00Z".into(),
            approval_id: id.into(),
            state,
            effect_id: format!("<aie.{id}@x>"),
            payload_sha256: "00".into(),
            target: "outbox".into(),
            receipt: None,
            read_back: false,
            detail: None,
        }
    }

    /// `started` without an outcome survives a reopen as in doubt; outcomes clear it.
    #[test]
    fn journal_started_without_outcome_is_in_doubt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut j = Journal::open(dir.path(), &SPEC).expect("open");
        j.append(entry("a", JournalState::Started)).expect("a");
        j.append(entry("b", JournalState::Started)).expect("b");
        j.append(entry("b", JournalState::Done)).expect("b done");
        let j = Journal::open(dir.path(), &SPEC).expect("reopen");
        let doubts: Vec<_> = j.in_doubt().into_iter().map(|d| d.approval_id).collect();
        assert_eq!(doubts, ["a"]);
        assert_eq!(j.last("b").map(|e| e.state), Some(JournalState::Done));
    }

    /// A torn last line is ignored and cut before the next append, so it never turns into
    /// damage; an unreadable line in the middle stops executing.
    #[test]
    fn journal_torn_and_damaged_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut j = Journal::open(dir.path(), &SPEC).expect("open");
        j.append(entry("a", JournalState::Started)).expect("a");
        let path = j.path().to_path_buf();
        let mut text = std::fs::read_to_string(&path).expect("read");
        let whole = text.clone();
        text.push_str("{\"ts\":\"2025");
        std::fs::write(&path, &text).expect("torn");
        let mut j = Journal::open(dir.path(), &SPEC).expect("reopen");
        assert!(j.damaged().is_none());
        assert_eq!(j.in_doubt().len(), 1);
        j.append(entry("a", JournalState::Done))
            .expect("after a torn line");
        let j = Journal::open(dir.path(), &SPEC).expect("reopen");
        assert!(j.damaged().is_none(), "{:?}", j.damaged());
        assert!(j.in_doubt().is_empty());
        std::fs::write(&path, format!("garbage\n{whole}\n")).expect("damage");
        let j = Journal::open(dir.path(), &SPEC).expect("reopen");
        assert!(j.damaged().is_some_and(|d| d.contains("line 1")));
    }

    /// The email server's journal as it was written before the executor moved (states
    /// `sending`, `sent`, `failed`; fields `message_id`, `transport`) reads as the same steps.
    #[test]
    fn journal_reads_the_send_journal_written_before_the_move() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = [
            r#"{"ts":"2025-01-31T09:00:00.000Z","approval_id":"r1","state":"sending","message_id":"<aie.r1@x>","payload_sha256":"aa","transport":"smtp://127.0.0.1:25"}"#,
            r#"{"ts":"2025-01-31T09:00:01.000Z","approval_id":"r1","state":"sent","message_id":"<aie.r1@x>","payload_sha256":"aa","transport":"smtp://127.0.0.1:25","detail":"250 ok"}"#,
            r#"{"ts":"2025-01-31T09:01:00.000Z","approval_id":"r2","state":"sending","message_id":"<aie.r2@x>","payload_sha256":"bb","transport":"outbox"}"#,
            r#"{"ts":"2025-01-31T09:01:01.000Z","approval_id":"r2","state":"failed","message_id":"<aie.r2@x>","payload_sha256":"bb","transport":"outbox","detail":"no"}"#,
            r#"{"ts":"2025-01-31T09:02:00.000Z","approval_id":"r3","state":"sending","message_id":"<aie.r3@x>","payload_sha256":"cc","transport":"smtp://127.0.0.1:25"}"#,
        ];
        std::fs::write(dir.path().join(SPEC.file), old.join("\n") + "\n").expect("old");
        let j = Journal::open(dir.path(), &SPEC).expect("open");
        assert!(j.damaged().is_none(), "{:?}", j.damaged());
        assert_eq!(j.last("r1").map(|e| e.state), Some(JournalState::Done));
        assert_eq!(
            j.last("r2").map(|e| e.state),
            Some(JournalState::NotExecuted)
        );
        let doubt = j.in_doubt();
        assert_eq!(doubt.len(), 1);
        assert_eq!(
            (doubt[0].approval_id.as_str(), doubt[0].effect_id.as_str()),
            ("r3", "<aie.r3@x>")
        );
        assert_eq!(doubt[0].target, "smtp://127.0.0.1:25");
    }
}
