//! The send journal, `<state>/send-journal.jsonl`: one JSON line per step of a send,
//! flushed to disk before the next step, so that after any crash the journal says what may
//! have left.
//!
//! A send writes `sending` before it touches the transport and `sent`, `failed` (nothing
//! left) or `in_doubt` (the transport failed while the message was on its way) after. An
//! approval whose last line is `sending` or `in_doubt` is **in doubt**: the message may or
//! may not have arrived. It is reported and never sent again by itself.

use std::{
    collections::HashMap,
    fs::OpenOptions,
    io::{self, Write},
    path::{Path, PathBuf},
};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::fsutil::sync_dir;

/// The journal's file name in the state folder.
pub const JOURNAL_FILE: &str = "send-journal.jsonl";

/// One step of a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JournalState {
    /// About to hand the message to the transport.
    Sending,
    /// The transport accepted it.
    Sent,
    /// Nothing left: the transport refused or could not be reached before the message.
    Failed,
    /// The transport failed while the message was on its way.
    InDoubt,
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
    /// The message's Message-ID.
    pub message_id: String,
    /// The approved payload's hash.
    pub payload_sha256: String,
    /// `smtp://host:port`, `smtps://host:port` or `outbox`.
    pub transport: String,
    /// The transport's answer or error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// An approval whose message may or may not have arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct InDoubt {
    /// The approval.
    pub approval_id: String,
    /// The message's Message-ID, to look for at the recipient or in the server's log.
    pub message_id: String,
    /// Where it was being sent.
    pub transport: String,
    /// When the send began.
    pub since: String,
    /// What is known.
    pub detail: String,
}

/// The journal: the file and the last line per approval.
#[derive(Debug)]
pub struct SendJournal {
    path: PathBuf,
    last: HashMap<String, JournalEntry>,
    /// Why the journal cannot be trusted, if a line other than the last is unreadable.
    damaged: Option<String>,
}

impl SendJournal {
    /// Reads the journal in `state_dir` (none yet is empty). A torn last line is a crash
    /// while writing it and is ignored: `sending` is written before anything leaves, and a
    /// torn outcome leaves its `sending` line behind, so the approval stays in doubt.
    pub fn open(state_dir: &Path) -> io::Result<Self> {
        let path = state_dir.join(JOURNAL_FILE);
        let mut journal = SendJournal {
            path,
            last: HashMap::new(),
            damaged: None,
        };
        let text = match std::fs::read(&journal.path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(journal),
            Err(e) => return Err(e),
        };
        let lines: Vec<&str> = text.split('\n').collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<JournalEntry>(line) {
                Ok(entry) => {
                    journal.last.insert(entry.approval_id.clone(), entry);
                }
                Err(_) if i + 1 == lines.len() => {
                    tracing::warn!(
                        file = %journal.path.display(),
                        "the send journal's last line is torn (a crash while writing it); ignoring it"
                    );
                }
                Err(e) if journal.damaged.is_none() => {
                    journal.damaged = Some(format!(
                        "{} line {}: {e}; sending is stopped until a person repairs or moves the file",
                        journal.path.display(),
                        i + 1
                    ));
                }
                Err(_) => {}
            }
        }
        for doubt in journal.in_doubt() {
            tracing::warn!(
                approval_id = %doubt.approval_id,
                message_id = %doubt.message_id,
                transport = %doubt.transport,
                "approval in doubt: its message may or may not have been delivered; it will not be sent again"
            );
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

    /// Appends one line and flushes it to disk before returning.
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
        file.write_all(line.as_bytes())?;
        file.sync_data()?;
        if created && let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        self.last.insert(entry.approval_id.clone(), entry);
        Ok(())
    }

    /// Every approval in doubt, oldest first.
    pub fn in_doubt(&self) -> Vec<InDoubt> {
        let mut out: Vec<InDoubt> = self
            .last
            .values()
            .filter(|e| matches!(e.state, JournalState::Sending | JournalState::InDoubt))
            .map(|e| InDoubt {
                approval_id: e.approval_id.clone(),
                message_id: e.message_id.clone(),
                transport: e.transport.clone(),
                since: e.ts.clone(),
                detail: match (&e.state, &e.detail) {
                    (JournalState::InDoubt, Some(d)) => d.clone(),
                    _ => "the server stopped while sending; whether the message left is unknown"
                        .to_owned(),
                },
            })
            .collect();
        out.sort_by(|a, b| a.since.cmp(&b.since));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, state: JournalState) -> JournalEntry {
        JournalEntry {
            ts: "2025-01-31T09:00:00Z".into(),
            approval_id: id.into(),
            state,
            message_id: format!("<aie.{id}@x>"),
            payload_sha256: "00".into(),
            transport: "outbox".into(),
            detail: None,
        }
    }

    /// `sending` without an outcome survives a reopen as in doubt; outcomes clear it.
    #[test]
    fn journal_sending_without_outcome_is_in_doubt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut j = SendJournal::open(dir.path()).expect("open");
        j.append(entry("a", JournalState::Sending)).expect("a");
        j.append(entry("b", JournalState::Sending)).expect("b");
        j.append(entry("b", JournalState::Sent)).expect("b sent");
        let j = SendJournal::open(dir.path()).expect("reopen");
        let doubts: Vec<_> = j.in_doubt().into_iter().map(|d| d.approval_id).collect();
        assert_eq!(doubts, ["a"]);
        assert_eq!(j.last("b").map(|e| e.state), Some(JournalState::Sent));
    }

    /// A torn last line is ignored; damage in the middle stops sending.
    #[test]
    fn journal_torn_and_damaged_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut j = SendJournal::open(dir.path()).expect("open");
        j.append(entry("a", JournalState::Sending)).expect("a");
        let path = j.path().to_path_buf();
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str("{\"ts\":\"2025");
        std::fs::write(&path, &text).expect("torn");
        let j = SendJournal::open(dir.path()).expect("reopen");
        assert!(j.damaged().is_none());
        assert_eq!(j.in_doubt().len(), 1);
        std::fs::write(&path, format!("garbage\n{text}\n")).expect("damage");
        let j = SendJournal::open(dir.path()).expect("reopen");
        assert!(j.damaged().is_some_and(|d| d.contains("line 1")));
    }
}
