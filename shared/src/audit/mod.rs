//! The audit log: one JSON line per tool call, hash-chained per agent, so an altered, removed
//! or reordered record shows.
//!
//! Each agent writes `Logs/<agent>/YYYY-MM-DD.jsonl` in the vault and nobody else does, so
//! logs never conflict in a git merge. Every record carries `seq` (1, 2, 3, … per agent,
//! across days), `prev` (the previous record's `hash`; 64 zeros for the first) and `hash`
//! (hex SHA-256 of the record's canonical JSON without `hash`, see
//! [`canonical_json`](crate::vault::canonical_json)).
//!
//! A chain alone cannot show that its end was cut off, or that someone else extended it, so
//! every append first records the record it is about to write (its `seq`, its `hash` and the
//! `hash` before it) in the local state folder (`<state>/audit-heads.json`), which never
//! syncs, and only then writes the line. The log can then end at that head, or one record
//! before it (a crash between the two writes), and nowhere else: [`verify`] calls any other
//! end a break (cut off, rewritten, or extended by someone who is not this machine), and
//! [`AuditLog::open`] refuses to extend such a log.
//!
//! The log holds no secrets and no message bodies: a call's arguments go in only as their
//! SHA-256 ([`args_sha256`]). `specs/audit.md` is the prose version of this module.

use std::{
    collections::{BTreeMap, HashMap},
    fs::{self, File},
    io::{self, Read, Write},
    path::{Path, PathBuf},
    sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak},
};

use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::vault::{AgentName, ApprovalId, Vault, fsio, payload_sha256};
// The policy's own types, so a record says exactly what the policy decided with.
use crate::policy::{EffectClass, Zone};

mod verify;
pub use verify::{AgentChain, BreakKind, ChainBreak, LineRef, VerifyReport, verify};

#[cfg(test)]
mod tests;

/// The `prev` of an agent's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The file in the state folder that remembers each agent's last record.
pub const HEADS_FILE: &str = "audit-heads.json";

/// Longest kept text for the short fields a client controls (`tool`, `client`,
/// `correlation_id`); longer values are cut, so a hostile client cannot flood the log.
const MAX_SHORT_FIELD: usize = 128;
/// Longest kept `reason`.
const MAX_REASON: usize = 1024;

/// Whether the gateway let a call through.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum CallDecision {
    /// The call went to its server.
    Allowed,
    /// The call was refused before reaching any server.
    Refused,
}

/// How a call ended.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// The server answered with a result.
    Ok,
    /// The server answered with an error.
    Error,
    /// The gateway refused the call.
    Refused,
    /// Nobody knows whether it happened (timeout, crash): for the human, never retried.
    InDoubt,
}

/// The caller's part of an audit record: what was called, by whom, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The zone the gateway runs in.
    pub zone: Zone,
    /// The MCP client's configured name (never its token).
    pub client: String,
    /// Ties the record to the request's trace and the server's logs.
    pub correlation_id: String,
    /// The exposed tool name as called (an unknown one too).
    pub tool: String,
    /// The effect class the policy gave it.
    pub class: EffectClass,
    /// Hex SHA-256 of the arguments' canonical JSON; see [`args_sha256`].
    pub args_sha256: String,
    /// Let through or refused.
    pub decision: CallDecision,
    /// Why it was refused, or a short note; empty when there is nothing to say.
    pub reason: String,
    /// The approval an execute call ran under.
    pub approval_id: Option<ApprovalId>,
    /// How it ended.
    pub status: CallStatus,
    /// Wall time from receipt to answer.
    pub latency_ms: u64,
}

impl ToolCall {
    /// An allowed call that ended `ok`; the arguments are only hashed, never kept.
    pub fn new(
        zone: Zone,
        client: impl Into<String>,
        correlation_id: impl Into<String>,
        tool: impl Into<String>,
        class: EffectClass,
        args: &Value,
    ) -> Self {
        Self {
            zone,
            client: client.into(),
            correlation_id: correlation_id.into(),
            tool: tool.into(),
            class,
            args_sha256: args_sha256(args),
            decision: CallDecision::Allowed,
            reason: String::new(),
            approval_id: None,
            status: CallStatus::Ok,
            latency_ms: 0,
        }
    }

    /// The same call, refused for `reason`.
    pub fn refused(mut self, reason: impl Into<String>) -> Self {
        self.decision = CallDecision::Refused;
        self.status = CallStatus::Refused;
        self.reason = reason.into();
        self
    }

    /// The same call with another ending.
    pub fn status(mut self, status: CallStatus) -> Self {
        self.status = status;
        self
    }

    /// The same call with a note (why it failed, what it was).
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    /// The same call, run under an approval.
    pub fn approval(mut self, id: ApprovalId) -> Self {
        self.approval_id = Some(id);
        self
    }

    /// The same call with its latency.
    pub fn latency_ms(mut self, latency_ms: u64) -> Self {
        self.latency_ms = latency_ms;
        self
    }
}

/// One line of the log, in the order its fields are written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditRecord {
    /// Position in the agent's chain: 1 for its first record, then one more each time.
    pub seq: u64,
    /// When the record was written (RFC 3339, UTC, milliseconds).
    pub ts: DateTime<Utc>,
    /// The writing agent; also the log's folder.
    pub agent: AgentName,
    /// See [`ToolCall::zone`].
    pub zone: Zone,
    /// See [`ToolCall::client`].
    pub client: String,
    /// See [`ToolCall::correlation_id`].
    pub correlation_id: String,
    /// See [`ToolCall::tool`].
    pub tool: String,
    /// See [`ToolCall::class`].
    pub class: EffectClass,
    /// See [`ToolCall::args_sha256`].
    pub args_sha256: String,
    /// See [`ToolCall::decision`].
    pub decision: CallDecision,
    /// See [`ToolCall::reason`].
    pub reason: String,
    /// See [`ToolCall::approval_id`].
    pub approval_id: Option<ApprovalId>,
    /// See [`ToolCall::status`].
    pub status: CallStatus,
    /// See [`ToolCall::latency_ms`].
    pub latency_ms: u64,
    /// The previous record's `hash`; [`GENESIS`] for the first.
    pub prev: String,
    /// Hex SHA-256 of this record's canonical JSON without `hash`.
    pub hash: String,
}

/// Hex SHA-256 of the canonical JSON of a call's arguments: all the log keeps of them.
pub fn args_sha256(args: &Value) -> String {
    payload_sha256(args)
}

/// The hash a record must carry: SHA-256 of its canonical JSON without the `hash` key.
/// Works on the parsed line, so a field added by a later version is covered too.
pub(crate) fn record_hash(record: &Value) -> String {
    let mut without = record.clone();
    if let Value::Object(map) = &mut without {
        map.remove("hash");
    }
    payload_sha256(&without)
}

/// Lower-case hex of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Everything that can stop the audit log from being written or read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A filesystem error on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The operating system's error.
        source: io::Error,
    },

    /// The agent's log folder is a link or not a folder: the log is never written through one.
    #[error("{path}: not a plain folder (a link?); the audit log is never written through a link")]
    NotAFolder {
        /// The folder, relative to the vault root.
        path: String,
    },

    /// The heads file in the state folder cannot be read.
    #[error(
        "{path}: cannot read the audit heads ({reason}); move the file aside to start over (truncation of the logs' ends then goes unnoticed once)"
    )]
    BadHeads {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },

    /// The log ends before the last record this machine wrote: records were removed from its end.
    #[error(
        "audit log of agent `{agent}` ends at seq {log_seq}, but {heads} says this machine wrote up to seq {head_seq}: records were removed from its end; run `aie audit verify`, and to accept the log as it is now, delete the `{agent}` entry from {heads}"
    )]
    Truncated {
        /// The agent.
        agent: AgentName,
        /// The last seq found in the log (0 when it is empty).
        log_seq: u64,
        /// The last seq the heads file recorded.
        head_seq: u64,
        /// The heads file.
        heads: String,
    },

    /// The log goes on past the last record this machine wrote: someone else extended it.
    #[error(
        "audit log of agent `{agent}` goes on to seq {log_seq}, but {heads} says this machine wrote only up to seq {head_seq}: the records after it were not written by this machine; run `aie audit verify`, and to accept the log as it is now, delete the `{agent}` entry from {heads}"
    )]
    Extended {
        /// The agent.
        agent: AgentName,
        /// The last seq found in the log.
        log_seq: u64,
        /// The last seq this machine wrote.
        head_seq: u64,
        /// The heads file.
        heads: String,
    },

    /// The record at the remembered head differs from the one this machine wrote.
    #[error(
        "audit log of agent `{agent}`: record seq {seq} is not the one this machine wrote ({heads} has another hash): the log was rewritten; run `aie audit verify`, and to accept the log as it is now, delete the `{agent}` entry from {heads}"
    )]
    Rewritten {
        /// The agent.
        agent: AgentName,
        /// The seq whose hash differs.
        seq: u64,
        /// The heads file.
        heads: String,
    },

    /// A record that cannot be written as JSON (cannot happen with the types used).
    #[error("cannot encode an audit record: {0}")]
    Encode(String),
}

/// Wraps an I/O error with the path it happened on.
fn io_error(path: &Path, source: io::Error) -> AuditError {
    AuditError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// An agent's last record, as the heads file keeps it.
///
/// This version records the head *before* it writes the record's line, so the log ends at
/// the head or, after a crash between the two writes, at the record before it (`seq - 1`,
/// whose hash is `prev`). Versions before it recorded the head *after* the line, with no
/// `prev`: such a head may lag one record behind the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Head {
    /// Its seq.
    pub(crate) seq: u64,
    /// Its hash.
    pub(crate) hash: String,
    /// The hash of the record before it (the previous head); absent in a head an older
    /// version wrote after the line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) prev: Option<String>,
}

impl Head {
    /// Where a log written by this machine may end, given this head: exactly at it, or
    /// (a crash between the head and the line) one record before it, or (a head an older
    /// version wrote after the line) one record past it.
    pub(crate) fn accepts_end(&self, seq: u64, hash: &str, hash_at_head: Option<&str>) -> End {
        if seq == self.seq {
            return if hash == self.hash {
                End::AtHead
            } else {
                End::Rewritten
            };
        }
        match &self.prev {
            // Compared without `+ 1` on `seq`: a forged record may carry any seq at all.
            Some(prev) if self.seq.checked_sub(1) == Some(seq) => {
                if hash == prev {
                    End::LineLost
                } else {
                    End::Rewritten
                }
            }
            _ if seq < self.seq => End::Truncated,
            _ if hash_at_head != Some(self.hash.as_str()) => End::Rewritten,
            None if seq.checked_sub(1) == Some(self.seq) => End::OldHeadLagging,
            _ => End::Extended,
        }
    }
}

/// How a log's end stands to the head this machine remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The log ends at the head.
    AtHead,
    /// The log ends one record before the head: the head was recorded, then a crash (or a
    /// failed write) kept the line out of the log.
    LineLost,
    /// An older version's head, one record behind the log: a crash between its line and its
    /// head.
    OldHeadLagging,
    /// The log ends before the head (and not by one lost line).
    Truncated,
    /// The record at the head's seq (or the one before it) is not the one this machine wrote.
    Rewritten,
    /// Records past the head: not written by this machine.
    Extended,
}

/// Reads `<state>/audit-heads.json`; a missing file is empty.
pub(crate) fn read_heads(state_dir: &Path) -> Result<BTreeMap<String, Head>, AuditError> {
    let path = state_dir.join(HEADS_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| AuditError::BadHeads {
            path: path.display().to_string(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(io_error(&path, e)),
    }
}

/// Records `head` as `agent`'s last record, keeping the other agents' entries.
fn write_head(state_dir: &Path, agent: &AgentName, head: &Head) -> Result<(), AuditError> {
    // Several agents' logs in one process share the file: one read-modify-write at a time.
    static HEADS_LOCK: Mutex<()> = Mutex::new(());
    let _guard = HEADS_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let mut heads = read_heads(state_dir)?;
    heads.insert(agent.to_string(), head.clone());
    let path = state_dir.join(HEADS_FILE);
    let text =
        serde_json::to_string_pretty(&heads).map_err(|e| AuditError::Encode(e.to_string()))?;
    // Replaced atomically and durably (data, then the rename) before the caller writes the
    // line: after a crash the file is the old map (and the line was never written) or the
    // new one (and the line may or may not be there; `open` accepts both).
    fsio::write_replacing(&path, format!("{text}\n").as_bytes()).map_err(|e| io_error(&path, e))
}

/// The name of the log file for `day`.
fn day_file_name(day: NaiveDate) -> String {
    format!("{}.jsonl", day.format("%Y-%m-%d"))
}

/// The day a log file is for, when its name is `YYYY-MM-DD.jsonl`.
pub(crate) fn parse_day_file(name: &str) -> Option<NaiveDate> {
    let stem = name.strip_suffix(".jsonl")?;
    // The strict shape, so `2025-1-5.jsonl` (which would sort out of order) is not a log file.
    if stem.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(stem, "%Y-%m-%d").ok()
}

/// The day files of one agent's log folder, oldest first; links are never log files.
pub(crate) fn day_files(dir: &Path) -> io::Result<Vec<(NaiveDate, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let (Some(day), true) = (
            parse_day_file(&name),
            entry.file_type().is_ok_and(|t| t.is_file()),
        ) {
            files.push((day, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// The chain's end as an appender needs it.
#[derive(Debug)]
struct Tail {
    /// The last record's seq (0 before the first).
    seq: u64,
    /// The last record's hash ([`GENESIS`] before the first).
    hash: String,
    /// The last record's `prev` ([`GENESIS`] before the first): the head before it.
    prev: String,
    /// The day file holding the last record: later records never go to an earlier file,
    /// even if the clock steps back, so files stay in chain order.
    day: Option<NaiveDate>,
    /// The open file for `day`, kept between appends.
    file: Option<(NaiveDate, File)>,
    /// The file's last line is unterminated (a torn write): the next record starts a new line.
    needs_newline: bool,
}

/// One agent's log as opened by this process; shared by every handle on it.
#[derive(Debug)]
struct Inner {
    agent: AgentName,
    /// The vault, whose link guard every day file's open passes.
    vault: Vault,
    dir: PathBuf,
    state_dir: PathBuf,
    tail: Mutex<Tail>,
}

/// An agent's audit log, open for appending. Cheap to clone; safe to share between threads.
#[derive(Debug, Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

/// The logs this process has open, so two `open`s of one agent's log share one chain end
/// instead of both extending the chain from the same record.
static OPEN_LOGS: LazyLock<Mutex<HashMap<PathBuf, Weak<Inner>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

impl AuditLog {
    /// Opens `agent`'s log in `vault` for appending, recovering the chain's end from the last
    /// readable record. Refuses a log that ends before (or differs from) the last record this
    /// machine wrote, as `<state_dir>/audit-heads.json` remembers it.
    pub fn open(vault: &Vault, state_dir: &Path, agent: AgentName) -> Result<Self, AuditError> {
        let dir = vault.logs_dir(&agent);
        // Never through a link: a synced vault could point `Logs/<agent>` anywhere.
        if !vault.create_real_dir(&dir).map_err(|e| io_error(&dir, e))? {
            return Err(AuditError::NotAFolder {
                path: vault.rel(&dir),
            });
        }
        fs::create_dir_all(state_dir).map_err(|e| io_error(state_dir, e))?;
        let key = fs::canonicalize(&dir).map_err(|e| io_error(&dir, e))?;
        let mut open = OPEN_LOGS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(inner) = open.get(&key).and_then(Weak::upgrade) {
            return Ok(Self { inner });
        }
        let tail = recover_tail(&dir)?;
        check_against_head(&dir, state_dir, &agent, &tail)?;
        let inner = Arc::new(Inner {
            agent,
            vault: vault.clone(),
            dir,
            state_dir: state_dir.to_path_buf(),
            tail: Mutex::new(tail),
        });
        open.retain(|_, weak| weak.strong_count() > 0);
        open.insert(key, Arc::downgrade(&inner));
        Ok(Self { inner })
    }

    /// The agent whose log this is.
    pub fn agent(&self) -> &AgentName {
        &self.inner.agent
    }

    /// Appends one record for `call` and flushes it to disk before returning it.
    ///
    /// On an error nothing is promised about the record; the chain stays intact either way
    /// (a partly written line is left as a torn line that the next record starts after).
    pub fn append(&self, call: ToolCall) -> Result<AuditRecord, AuditError> {
        let mut tail = self.lock_tail();
        let ts = Utc::now().trunc_subsecs(3);
        let day = tail.day.map_or(ts.date_naive(), |d| d.max(ts.date_naive()));
        let mut record = AuditRecord {
            seq: tail.seq + 1,
            ts,
            agent: self.inner.agent.clone(),
            zone: call.zone,
            client: cap(call.client, MAX_SHORT_FIELD),
            correlation_id: cap(call.correlation_id, MAX_SHORT_FIELD),
            tool: cap(call.tool, MAX_SHORT_FIELD),
            class: call.class,
            args_sha256: call.args_sha256,
            decision: call.decision,
            reason: cap(call.reason, MAX_REASON),
            approval_id: call.approval_id,
            status: call.status,
            latency_ms: call.latency_ms,
            prev: tail.hash.clone(),
            hash: String::new(),
        };
        let value = serde_json::to_value(&record).map_err(|e| AuditError::Encode(e.to_string()))?;
        record.hash = record_hash(&value);
        let mut line =
            serde_json::to_string(&record).map_err(|e| AuditError::Encode(e.to_string()))?;
        line.push('\n');
        if tail.needs_newline {
            line.insert(0, '\n');
        }
        let path = self.inner.dir.join(day_file_name(day));
        let file = self.day_file(&mut tail, day, &path)?;
        // The head first, durably: the log then never goes past what this machine
        // recorded, so a record past the head is one this machine did not write. A crash
        // before the line leaves the log one record short of the head, which `open`
        // recognises by `prev`. Under the tail lock, so heads never go backwards.
        let head = Head {
            seq: record.seq,
            hash: record.hash.clone(),
            prev: Some(record.prev.clone()),
        };
        write_head(&self.inner.state_dir, &self.inner.agent, &head)?;
        // One write of the whole line, then fdatasync: the record is on disk or, after a
        // crash, at worst a torn last line that the chain continues after.
        let written = file
            .write_all(line.as_bytes())
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            // Part of the line may be in the file; the next record must not join it.
            tail.needs_newline = true;
            tail.file = None;
            return Err(io_error(&path, e));
        }
        tail.needs_newline = false;
        tail.seq = record.seq;
        tail.prev = std::mem::replace(&mut tail.hash, record.hash.clone());
        tail.day = Some(day);
        Ok(record)
    }

    /// The tail, even if a thread panicked while holding it (the chain end is kept valid
    /// at every step, so a poisoned lock holds nothing half-done).
    fn lock_tail(&self) -> MutexGuard<'_, Tail> {
        self.inner
            .tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The open file for `day`, opening (and creating) it when the day changed.
    fn day_file<'a>(
        &self,
        tail: &'a mut Tail,
        day: NaiveDate,
        path: &Path,
    ) -> Result<&'a mut File, AuditError> {
        if tail
            .file
            .as_ref()
            .is_none_or(|(open_day, _)| *open_day != day)
        {
            let existed = fs::symlink_metadata(path).is_ok();
            // Never through a link: a day file (or folder) committed as one would take this
            // machine's records outside the vault.
            let file = self
                .inner
                .vault
                .open_append(path)
                .map_err(|e| io_error(path, e))?;
            if !existed {
                // A new file's name must survive a crash along with its first record.
                File::open(&self.inner.dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io_error(&self.inner.dir, e))?;
            }
            tail.file = Some((day, file));
        }
        match tail.file.as_mut() {
            Some((_, file)) => Ok(file),
            None => Err(io_error(path, io::ErrorKind::NotFound.into())),
        }
    }
}

/// `text` cut to at most `max` characters, marked with `…` when cut.
fn cap(text: String, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

/// A line as far as the chain cares: seq and hash, when it is a readable record.
pub(crate) fn chain_fields(line: &str) -> Option<(u64, String, Value)> {
    let value: Value = serde_json::from_str(line).ok()?;
    let seq = value.get("seq")?.as_u64()?;
    let hash = value.get("hash")?.as_str()?.to_owned();
    Some((seq, hash, value))
}

/// Finds the chain's end: the last readable record of the newest file that has one.
fn recover_tail(dir: &Path) -> Result<Tail, AuditError> {
    let files = day_files(dir).map_err(|e| io_error(dir, e))?;
    let mut tail = Tail {
        seq: 0,
        hash: GENESIS.to_owned(),
        prev: GENESIS.to_owned(),
        day: files.last().map(|(day, _)| *day),
        file: None,
        needs_newline: false,
    };
    for (index, (day, path)) in files.iter().enumerate().rev() {
        let text = read_lossy(path)?;
        if index + 1 == files.len() {
            // Only the newest file is appended to; a torn line there needs a line break first.
            tail.needs_newline = !text.is_empty() && !text.ends_with('\n');
        }
        // The last record, unterminated or not: a record written whole but for its line
        // break is complete, and a torn one does not parse.
        let last = text
            .lines()
            .rev()
            .filter_map(chain_fields)
            .find(|(_, hash, value)| *hash == record_hash(value));
        if let Some((seq, hash, value)) = last {
            tail.seq = seq;
            tail.hash = hash;
            tail.prev = value
                .get("prev")
                .and_then(Value::as_str)
                .unwrap_or(GENESIS)
                .to_owned();
            tail.day = Some(*day);
            return Ok(tail);
        }
    }
    Ok(tail)
}

/// A log file's text; bytes that are not UTF-8 (a torn multi-byte character) become U+FFFD.
pub(crate) fn read_lossy(path: &Path) -> Result<String, AuditError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| io_error(path, e))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Refuses to extend a log whose end is not where this machine's head says it may be
/// (behind it, different from it, or past it); takes the head back when the log is one
/// record short of it (a crash between the head and the line), and brings an older
/// version's head forward when the log is one record past it (a crash between its line and
/// its head).
fn check_against_head(
    dir: &Path,
    state_dir: &Path,
    agent: &AgentName,
    tail: &Tail,
) -> Result<(), AuditError> {
    let heads = read_heads(state_dir)?;
    let Some(head) = heads.get(agent.as_str()) else {
        return Ok(());
    };
    let heads_path = state_dir.join(HEADS_FILE).display().to_string();
    let at_head = if tail.seq > head.seq {
        find_hash(dir, head.seq)?
    } else {
        None
    };
    match head.accepts_end(tail.seq, &tail.hash, at_head.as_deref()) {
        End::AtHead => Ok(()),
        // The log as it is: its last record is this machine's, with its own `prev`.
        End::LineLost | End::OldHeadLagging => {
            let now = Head {
                seq: tail.seq,
                hash: tail.hash.clone(),
                prev: Some(tail.prev.clone()),
            };
            write_head(state_dir, agent, &now)
        }
        End::Truncated => Err(AuditError::Truncated {
            agent: agent.clone(),
            log_seq: tail.seq,
            head_seq: head.seq,
            heads: heads_path,
        }),
        End::Rewritten => Err(AuditError::Rewritten {
            agent: agent.clone(),
            seq: head.seq.min(tail.seq),
            heads: heads_path,
        }),
        End::Extended => Err(AuditError::Extended {
            agent: agent.clone(),
            log_seq: tail.seq,
            head_seq: head.seq,
            heads: heads_path,
        }),
    }
}

/// The hash of the record with `seq`, looking from the newest file back (the head is near
/// the end, so this reads one file in the usual case).
fn find_hash(dir: &Path, seq: u64) -> Result<Option<String>, AuditError> {
    if seq == 0 {
        return Ok(Some(GENESIS.to_owned()));
    }
    for (_, path) in day_files(dir).map_err(|e| io_error(dir, e))?.iter().rev() {
        let text = read_lossy(path)?;
        let mut lowest = None;
        for (found, hash, _) in text.lines().rev().filter_map(chain_fields) {
            if found == seq {
                return Ok(Some(hash));
            }
            lowest = Some(found);
        }
        if lowest.is_some_and(|low| low < seq) {
            return Ok(None);
        }
    }
    Ok(None)
}
