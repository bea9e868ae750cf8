//! The approval ledger: `<state>/approvals.jsonl`, the local machine's record of every
//! human decision and every use of an approval. It lives in the state folder, never in the
//! vault, so nothing that syncs can add to it.
//!
//! Each line is one entry in canonical JSON with a `mac`: HMAC-SHA256, under the key in
//! `<state>/approval.key`, of the entry's canonical JSON without `mac`. Entries are appended
//! and flushed to disk, never rewritten; what the ledger says about an approval is the fold
//! of its entries in order. Every entry has a `seq` one more than the one before, so a line
//! taken out shows as a gap.
//!
//! A ledger that fails its checks (a line whose MAC does not verify, a gap, an unreadable
//! whole line, entries that contradict each other) authorizes nothing until a person looks:
//! see [`LedgerState::damage`].
//!
//! Each [`ApprovalLedger`] (and its clones) keeps the fold it last made and what it was made
//! from (`Seen`): under the lock, when the file is still the same file, no shorter, and its
//! last line is still there byte for byte, only the bytes appended since are read and
//! verified; anything else reads the whole file again. `specs/approvals.md` ("Reading
//! only what was appended") says what this notices and when the whole file is compared.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    fs::{self, File, Metadata, OpenOptions},
    io::{self, Read, Seek, SeekFrom, Write},
    mem,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use hmac::{Hmac, KeyInit, Mac};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::ApprovalError;
use crate::{
    audit::to_hex,
    vault::{ApprovalId, TaskId, canonical_json, fsio},
};

/// The ledger's file name in the state folder.
pub const LEDGER_FILE: &str = "approvals.jsonl";
/// The ledger key's file name in the state folder.
pub const KEY_FILE: &str = "approval.key";
/// Bytes in the ledger key.
const KEY_LEN: usize = 32;
/// How often a process that keeps a fold compares the whole part of the file it folded (by
/// its SHA-256) with what it read: an edit before the last line is noticed within this.
pub const WHOLE_FILE_CHECK_EVERY: Duration = Duration::from_secs(60);

/// HMAC-SHA256, the ledger's authentication.
type HmacSha256 = Hmac<Sha256>;

/// How an approved action ended, as its server said (or did not).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It happened.
    Ok,
    /// It failed and did not happen.
    Error,
    /// Nobody knows (a timeout, a lost connection): for the human, never retried.
    InDoubt,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::InDoubt => "in doubt",
        })
    }
}

/// How the human gave an approval.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum HowApproved {
    /// `aie approvals approve ID`.
    Command,
    /// The file moved by hand into `Approved/` on this machine, recognised from the vault's
    /// git state (see `Approvals::adopt_hand_moves`).
    MovedByHand,
}

/// What one ledger entry records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The human approved this exact request.
    Approved {
        /// The approved payload's hash.
        payload_sha256: String,
        /// The execute tool that may run it.
        tool: String,
        /// After this it may not run: the request's own expiry, or the local config's
        /// longest lifetime from the decision if that comes first.
        expires_at: DateTime<Utc>,
        /// The request file's own `expires_at`, when the lifetime cap cut it short (absent
        /// when the two are the same): what an unchanged file still says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requested_expires_at: Option<DateTime<Utc>>,
        /// The task it serves.
        task_id: Option<TaskId>,
        /// The local user who decided.
        decided_by: String,
        /// Through the command or by moving the file.
        how: HowApproved,
    },
    /// The human rejected the request (or revoked an unused approval).
    Rejected {
        /// The rejected payload's hash (empty when the file could not be read).
        payload_sha256: String,
        /// The local user who decided.
        decided_by: String,
        /// The human's reason.
        reason: String,
    },
    /// The approval was taken for one execution; written before the server is called.
    Used {
        /// The payload handed to the server.
        payload_sha256: String,
        /// The tool that ran it.
        tool: String,
    },
    /// The execution that took the approval did nothing, as its server certified (the
    /// server was down before anything left, the arguments were refused): the approval is
    /// valid and unused again. Follows only the `used` entry it names, before any result.
    Released {
        /// The `seq` of the `used` entry it gives back.
        use_seq: u64,
        /// What the server said; never a message body.
        detail: String,
    },
    /// How the execution ended.
    Result {
        /// Ok, error or in doubt.
        outcome: Outcome,
        /// A short note from the server (a message id, an error); never a message body.
        detail: String,
    },
    /// The request's file was set aside into `Quarantine/` so it can never cause an action.
    SetAside {
        /// Why.
        reason: String,
        /// Where it went, relative to the vault root.
        path: String,
    },
}

/// One ledger line, without its `mac`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// 1 for the first entry, then one more each time.
    pub seq: u64,
    /// The approval it is about.
    pub approval_id: ApprovalId,
    /// When it was written.
    pub at: DateTime<Utc>,
    /// What it records.
    #[serde(flatten)]
    pub event: Event,
}

/// The human's approval, as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Approval {
    /// The approved payload's hash.
    pub payload_sha256: String,
    /// The execute tool that may run it.
    pub tool: String,
    /// After this it may not run (the lifetime cap at the decision applied).
    pub expires_at: DateTime<Utc>,
    /// The request file's own `expires_at`, when the lifetime cap cut it short.
    pub requested_expires_at: Option<DateTime<Utc>>,
    /// The task it serves.
    pub task_id: Option<TaskId>,
    /// Who approved it.
    pub decided_by: String,
    /// When.
    pub decided_at: DateTime<Utc>,
    /// Through the command or by moving the file.
    pub how: HowApproved,
}

/// The human's rejection, as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Rejection {
    /// The rejected payload's hash.
    pub payload_sha256: String,
    /// Who rejected it.
    pub decided_by: String,
    /// When.
    pub decided_at: DateTime<Utc>,
    /// Why.
    pub reason: String,
}

/// An execution's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Finished {
    /// Ok, error or in doubt.
    pub outcome: Outcome,
    /// The server's short note.
    pub detail: String,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

/// A use given back: the execution did nothing, so the approval became unused again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ReleasedUse {
    /// When the approval had been taken.
    pub used_at: DateTime<Utc>,
    /// When it was given back.
    pub at: DateTime<Utc>,
    /// What the server said.
    pub detail: String,
}

/// A set-aside of the request's file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct SetAside {
    /// Why.
    pub reason: String,
    /// Where it went.
    pub path: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// Everything the ledger says about one approval: the fold of its entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct LedgerRecord {
    /// The approval, if given.
    pub approved: Option<Approval>,
    /// The rejection, if any; it outranks an approval (a revoked approval).
    pub rejected: Option<Rejection>,
    /// When it was taken for the execution in progress or done (none when unused, or
    /// released since).
    pub used_at: Option<DateTime<Utc>>,
    /// The `seq` of that `used` entry: what a release must name.
    pub use_seq: Option<u64>,
    /// Earlier uses given back because nothing ran, oldest first.
    pub released: Vec<ReleasedUse>,
    /// How that execution ended, once known.
    pub result: Option<Finished>,
    /// Every time its file was set aside.
    pub set_aside: Vec<SetAside>,
}

/// What kind of problem a ledger line has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A line cut short by a crash mid-write; harmless, since the entry never counted.
    Torn,
    /// A whole line that is not an entry.
    Unreadable,
    /// A line whose MAC does not verify: altered or forged.
    BadMac,
    /// A `seq` that does not follow the one before: a line was removed or moved.
    Gap,
    /// An authentic entry that contradicts earlier ones (two decisions, two uses).
    Conflict,
}

/// A ledger line that was ignored, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct LedgerProblem {
    /// Its line number, from 1.
    pub line: usize,
    /// What is wrong.
    pub kind: ProblemKind,
    /// The details.
    pub detail: String,
}

impl fmt::Display for LedgerProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{LEDGER_FILE} line {}: {}", self.line, self.detail)
    }
}

/// The ledger read and folded: each approval's record, and the lines that did not count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LedgerState {
    /// Every approval the ledger knows, by id.
    pub approvals: BTreeMap<ApprovalId, LedgerRecord>,
    /// Lines ignored, in file order.
    pub problems: Vec<LedgerProblem>,
    /// The approval ids named by lines whose MAC does not verify.
    pub bad_mac_ids: BTreeSet<String>,
    /// The last authentic entry's seq.
    #[serde(skip)]
    last_seq: u64,
    /// The file ends in an unterminated (torn) line.
    #[serde(skip)]
    needs_newline: bool,
    /// Complete (newline-terminated) lines folded.
    #[serde(skip)]
    lines: usize,
    /// Unreadable lines waiting for the next entry: if it continues the chain of seqs they
    /// were torn writes, else something was lost.
    #[serde(skip)]
    pending: Vec<usize>,
    /// How many of `problems` stand whatever is appended; the rest say what the pending
    /// lines are as the file ends now.
    #[serde(skip)]
    settled: usize,
    /// Approvals taken for an execution whose outcome is open (no result, or `in_doubt`),
    /// so the approvals in doubt are found without looking at every record.
    #[serde(skip)]
    open_uses: BTreeSet<ApprovalId>,
}

impl Approval {
    /// When it stops being valid under a longest lifetime of `max_lifetime` from the
    /// decision: its own expiry, or sooner when the config in force now is stricter than the
    /// one it was approved under.
    pub fn valid_until(&self, max_lifetime: TimeDelta) -> DateTime<Utc> {
        self.decided_at
            .checked_add_signed(max_lifetime)
            .map_or(self.expires_at, |cap| cap.min(self.expires_at))
    }

    /// The `expires_at` an unchanged request file still carries.
    pub fn file_expires_at(&self) -> DateTime<Utc> {
        self.requested_expires_at.unwrap_or(self.expires_at)
    }
}

impl LedgerState {
    /// What the ledger says about `id`.
    pub fn get(&self, id: &ApprovalId) -> Option<&LedgerRecord> {
        self.approvals.get(id)
    }

    /// The first problem that makes the ledger untrustworthy (anything but a torn line);
    /// while there is one, nothing is authorized.
    pub fn damage(&self) -> Option<&LedgerProblem> {
        self.problems.iter().find(|p| p.kind != ProblemKind::Torn)
    }

    /// The approvals taken for an execution whose outcome is open (used, with no result or
    /// an `in_doubt` one), by id, with when they were taken.
    pub fn open_uses(&self) -> impl Iterator<Item = (&ApprovalId, DateTime<Utc>)> {
        self.open_uses.iter().filter_map(|id| {
            let used_at = self.approvals.get(id)?.used_at?;
            Some((id, used_at))
        })
    }

    /// Records a problem with a line.
    fn problem(&mut self, line: usize, kind: ProblemKind, detail: impl Into<String>) {
        self.problems.push(LedgerProblem {
            line,
            kind,
            detail: detail.into(),
        });
    }

    /// Folds one authentic entry in; one that contradicts the record so far is a conflict.
    fn apply(&mut self, line: usize, entry: LedgerEntry) {
        let id = entry.approval_id.clone();
        let record = self.approvals.entry(id.clone()).or_default();
        let conflict = match entry.event {
            Event::Approved {
                payload_sha256,
                tool,
                expires_at,
                requested_expires_at,
                task_id,
                decided_by,
                how,
            } => {
                if record.approved.is_some() || record.rejected.is_some() {
                    Some("a second decision")
                } else {
                    record.approved = Some(Approval {
                        payload_sha256,
                        tool,
                        expires_at,
                        requested_expires_at,
                        task_id,
                        decided_by,
                        decided_at: entry.at,
                        how,
                    });
                    None
                }
            }
            Event::Rejected {
                payload_sha256,
                decided_by,
                reason,
            } => {
                if record.rejected.is_some() || record.used_at.is_some() {
                    Some("a rejection after a rejection or a use")
                } else {
                    record.rejected = Some(Rejection {
                        payload_sha256,
                        decided_by,
                        decided_at: entry.at,
                        reason,
                    });
                    None
                }
            }
            Event::Used { .. } => {
                if record.approved.is_none() || record.rejected.is_some() {
                    Some("a use without a standing approval")
                } else if record.used_at.is_some() {
                    Some("a second use")
                } else {
                    record.used_at = Some(entry.at);
                    record.use_seq = Some(entry.seq);
                    self.open_uses.insert(id.clone());
                    None
                }
            }
            Event::Released { use_seq, detail } => match record.used_at {
                Some(used_at) if record.result.is_none() && record.use_seq == Some(use_seq) => {
                    record.released.push(ReleasedUse {
                        used_at,
                        at: entry.at,
                        detail,
                    });
                    record.used_at = None;
                    record.use_seq = None;
                    self.open_uses.remove(&id);
                    None
                }
                _ => Some("a release that does not follow its use, or after a result"),
            },
            Event::Result { outcome, detail } => {
                let settled = record
                    .result
                    .as_ref()
                    .is_some_and(|r| r.outcome != Outcome::InDoubt);
                if record.used_at.is_none() || settled {
                    Some("a result without a use, or a second result")
                } else {
                    record.result = Some(Finished {
                        outcome,
                        detail,
                        at: entry.at,
                    });
                    if outcome != Outcome::InDoubt {
                        self.open_uses.remove(&id);
                    }
                    None
                }
            }
            Event::SetAside { reason, path } => {
                record.set_aside.push(SetAside {
                    reason,
                    path,
                    at: entry.at,
                });
                None
            }
        };
        if let Some(what) = conflict {
            self.problem(
                line,
                ProblemKind::Conflict,
                format!("{what} for approval `{id}`: ignored"),
            );
        }
    }
}

/// The ledger of one state folder, with its key. Cheap to clone; clones share the fold
/// kept between operations.
#[derive(Clone)]
pub struct ApprovalLedger {
    path: PathBuf,
    mac: HmacSha256,
    /// The fold this handle last made, and what it was made from; `None` until the first
    /// operation, and after anything that leaves it unsure of the file (a failed write, a
    /// panic), so the next operation reads the whole file.
    kept: Arc<Mutex<Option<Kept>>>,
    /// Set by [`ApprovalLedger::check_whole_file_next`]: compare at the next operation.
    compare_next: Arc<AtomicBool>,
    /// How many times this handle read the whole file: what the tests count.
    #[cfg(test)]
    whole_reads: Arc<std::sync::atomic::AtomicUsize>,
}

/// A fold kept between operations.
struct Kept {
    state: LedgerState,
    seen: Seen,
}

/// What a kept fold was made from: enough to tell, without reading the whole file, that the
/// file on disk is still that file with bytes only added after it.
///
/// Checked under the lock before every operation: the file's identity, that it is no
/// shorter, and that its last line with content is still there, byte for byte (that line
/// carries the last `seq` and its MAC, so no other ledger has it at that offset). That
/// notices a file moved aside or replaced, a truncation, and any change from the last line
/// on. An edit before the last line that keeps the length and the last line (only possible
/// by hand, in the state folder) is noticed by `prefix`, compared every
/// [`WHOLE_FILE_CHECK_EVERY`]: that reads the folded part again and hashes it, cheaper than
/// a fold, and equal bytes fold the same.
#[derive(Clone)]
struct Seen {
    /// The file's device and inode, where the platform has them.
    identity: Option<(u64, u64)>,
    /// Bytes folded: the file as it was, an unterminated last line included.
    len: u64,
    /// Where the last line with content starts (0 while there is none)...
    last_at: u64,
    /// ...and the bytes from there to `len`, which must still be there.
    last: Vec<u8>,
    /// SHA-256 of the `len` bytes folded.
    prefix: Sha256,
    /// When the whole folded part was last read.
    checked_at: Instant,
}

impl Seen {
    /// Nothing folded yet, of the file `identity`.
    fn new(identity: Option<(u64, u64)>) -> Self {
        Self {
            identity,
            len: 0,
            last_at: 0,
            last: Vec::new(),
            prefix: Sha256::new(),
            checked_at: Instant::now(),
        }
    }

    /// Takes in `bytes`, folded after what was seen; `last_line` is where in them the last
    /// line with content starts, if they have one.
    fn advance(&mut self, bytes: &[u8], last_line: Option<usize>) {
        self.prefix.update(bytes);
        match last_line {
            Some(at) => {
                self.last_at = self.len + at as u64;
                self.last = bytes[at..].to_vec();
            }
            None => self.last.extend_from_slice(bytes),
        }
        self.len += bytes.len() as u64;
    }
}

impl fmt::Debug for ApprovalLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("ApprovalLedger")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ApprovalLedger {
    /// Opens the ledger in `state_dir`, making the folder (mode 0700) and the key (32 random
    /// bytes, mode 0600) on first use.
    pub fn open(state_dir: &Path) -> Result<Self, ApprovalError> {
        make_private_dir(state_dir)?;
        let key_path = state_dir.join(KEY_FILE);
        let key = load_or_create_key(&key_path)?;
        let mac = HmacSha256::new_from_slice(&key).map_err(|e| ApprovalError::BadKey {
            path: key_path,
            reason: e.to_string(),
        })?;
        Ok(Self {
            path: state_dir.join(LEDGER_FILE),
            mac,
            kept: Arc::default(),
            compare_next: Arc::default(),
            #[cfg(test)]
            whole_reads: Arc::default(),
        })
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and folds the ledger (what was appended since this handle last looked: see
    /// the module doc), and returns a copy of the fold.
    pub fn read(&self) -> Result<LedgerState, ApprovalError> {
        Ok(self.lock()?.state.clone())
    }

    /// Calls `f` with the fold as it is now, without copying it. `f` runs under the lock,
    /// which is process-wide: it must not use an approval ledger itself.
    pub fn with_state<T>(&self, f: impl FnOnce(&LedgerState) -> T) -> Result<T, ApprovalError> {
        Ok(f(&self.lock()?.state))
    }

    /// Makes the next operation compare the whole folded part of the file with what was
    /// read (as it does every [`WHOLE_FILE_CHECK_EVERY`]), so an edit before the last line
    /// is noticed then.
    pub fn check_whole_file_next(&self) {
        self.compare_next.store(true, Ordering::Relaxed);
    }

    /// The kept fold (a panicked holder left `None` or a whole one).
    fn kept(&self) -> MutexGuard<'_, Option<Kept>> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the ledger for a read-check-append: the process-wide mutex, then an exclusive
    /// `flock` on the file (so the `aie approvals` command and a running stack take turns),
    /// then the fold of what is there now.
    pub(crate) fn lock(&self) -> Result<Locked<'_>, ApprovalError> {
        // One ledger user at a time in this process: `flock` alone would also serialise
        // threads (each `open` is its own lock), but the mutex makes that independent of the
        // platform's lock semantics.
        static LEDGER_LOCK: Mutex<()> = Mutex::new(());
        let guard = LEDGER_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        // Opened by its name each time: a ledger moved aside is a new, empty file.
        let mut file = private_file_options()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(|e| ApprovalError::io(&self.path, e))?;
        lock_exclusive(&file).map_err(|e| ApprovalError::io(&self.path, e))?;
        // Taken out while locked; put back when the lock is dropped, if still sure.
        let kept = self.kept().take();
        let kept = self
            .catch_up(&mut file, kept)
            .map_err(|e| ApprovalError::io(&self.path, e))?;
        Ok(Locked {
            ledger: self,
            file,
            state: kept.state,
            seen: Some(kept.seen),
            _guard: guard,
        })
    }

    /// The fold of the file as it is now: `kept` brought up to date when the file is still
    /// the one it was made from with bytes only added, else the whole file read again.
    fn catch_up(&self, file: &mut File, kept: Option<Kept>) -> io::Result<Kept> {
        let meta = file.metadata()?;
        let identity = identity(&meta);
        let compare = self.compare_next.swap(false, Ordering::Relaxed);
        if let Some(mut kept) = kept
            && self.read_appended(file, &mut kept, identity, meta.len(), compare)?
        {
            return Ok(kept);
        }
        #[cfg(test)]
        self.whole_reads.fetch_add(1, Ordering::Relaxed);
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0))?;
        file.read_to_end(&mut bytes)?;
        let mut kept = Kept {
            state: LedgerState::default(),
            seen: Seen::new(identity),
        };
        self.fold(&mut kept.state, &mut kept.seen, &bytes);
        Ok(kept)
    }

    /// Folds into `kept` what was appended to the file since it was made, when the file is
    /// still that file (same identity, no shorter, the last line with content still there,
    /// an unterminated last line not written on, and, when due or asked to `compare`, the
    /// whole folded part unchanged); false, with nothing folded, when it is not.
    fn read_appended(
        &self,
        file: &mut File,
        kept: &mut Kept,
        identity: Option<(u64, u64)>,
        len: u64,
        compare: bool,
    ) -> io::Result<bool> {
        let seen = &mut kept.seen;
        if seen.identity != identity || len < seen.len {
            return Ok(false);
        }
        file.seek(SeekFrom::Start(seen.last_at))?;
        let mut bytes = Vec::new();
        file.take(len.saturating_sub(seen.last_at))
            .read_to_end(&mut bytes)?;
        let Some(appended) = bytes.strip_prefix(seen.last.as_slice()) else {
            return Ok(false);
        };
        if kept.state.needs_newline && appended.first().is_some_and(|&b| b != b'\n') {
            // Written on after a torn line, as no writer does: that line is another now.
            return Ok(false);
        }
        if compare || seen.checked_at.elapsed() >= WHOLE_FILE_CHECK_EVERY {
            if !prefix_unchanged(file, seen)? {
                return Ok(false);
            }
            seen.checked_at = Instant::now();
        }
        if !appended.is_empty() {
            self.fold(&mut kept.state, &mut kept.seen, appended);
        }
        Ok(true)
    }

    /// The entry's MAC: hex HMAC-SHA256 of its canonical JSON without `mac`.
    fn mac_hex(&self, entry: &Value) -> String {
        let mut mac = self.mac.clone();
        mac.update(canonical_json(entry).as_bytes());
        to_hex(&mac.finalize().into_bytes())
    }

    /// Whether `tag` (hex) is the MAC of `entry`, compared in constant time.
    fn mac_verifies(&self, entry: &Value, tag: &str) -> bool {
        let Some(tag) = from_hex(tag) else {
            return false;
        };
        let mut mac = self.mac.clone();
        mac.update(canonical_json(entry).as_bytes());
        mac.verify_slice(&tag).is_ok()
    }

    /// Folds `bytes`, the ledger's bytes after the `seen.len` already in `state` (from the
    /// start of the file for a fresh fold): each line in order, an unterminated last line
    /// as far as it goes. Folding a file in two parts, cut where a writer stopped (after a
    /// newline, or after a torn line that the next append starts a new line after), gives
    /// the same state as folding it whole.
    fn fold(&self, state: &mut LedgerState, seen: &mut Seen, bytes: &[u8]) {
        // What the pending lines are as the file ended: said again below.
        state.problems.truncate(state.settled);
        let mut rest = bytes;
        if state.needs_newline
            && let Some(after) = rest.strip_prefix(b"\n")
        {
            // The unterminated line, folded as far as it went, is a whole line now.
            state.lines += 1;
            state.needs_newline = false;
            rest = after;
        }
        let mut last_line = None;
        let mut start = bytes.len() - rest.len();
        let mut segments = rest.split(|&b| b == b'\n').peekable();
        while let Some(segment) = segments.next() {
            let terminated = segments.peek().is_some();
            let text = String::from_utf8_lossy(segment);
            if !text.trim().is_empty() {
                last_line = Some(start);
                self.fold_line(state, state.lines + 1, &text);
            }
            if terminated {
                state.lines += 1;
            } else {
                state.needs_newline = !segment.is_empty();
            }
            start += segment.len() + 1;
        }
        seen.advance(bytes, last_line);
        state.settled = state.problems.len();
        for at in state.pending.clone() {
            if at > state.lines {
                state.problem(
                    at,
                    ProblemKind::Torn,
                    "a line cut short by an interrupted write",
                );
            } else {
                state.problem(at, ProblemKind::Unreadable, "not a ledger entry");
            }
        }
    }

    /// Folds line number `line`, with content `text`; one that does not count becomes a
    /// problem, or waits in `pending` when it cannot be read.
    fn fold_line(&self, state: &mut LedgerState, line: usize, text: &str) {
        let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(text) else {
            state.pending.push(line);
            return;
        };
        let tag = map.remove("mac");
        let named = map
            .get("approval_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let value = Value::Object(map);
        let authentic = tag
            .as_ref()
            .and_then(Value::as_str)
            .is_some_and(|tag| self.mac_verifies(&value, tag));
        if !authentic {
            state.problem(
                line,
                ProblemKind::BadMac,
                format!("the MAC does not verify (entry about approval {named:?}): the line was altered or forged"),
            );
            state.bad_mac_ids.insert(named);
            return;
        }
        let entry: LedgerEntry = match serde_json::from_value(value) {
            Ok(entry) => entry,
            Err(e) => {
                // Authentic but not understood: written by a newer aie, perhaps. Not
                // knowing what it says, nothing may be decided on the ledger.
                state.problem(
                    line,
                    ProblemKind::Unreadable,
                    format!("an authentic entry this version cannot read: {e}"),
                );
                return;
            }
        };
        let follows = entry.seq == state.last_seq + 1;
        for at in mem::take(&mut state.pending) {
            if follows {
                state.problem(
                    at,
                    ProblemKind::Torn,
                    "a line cut short by an interrupted write",
                );
            } else {
                state.problem(at, ProblemKind::Unreadable, "not a ledger entry");
            }
        }
        if !follows {
            state.problem(
                line,
                ProblemKind::Gap,
                format!(
                    "seq {} follows seq {}: entries were removed or moved",
                    entry.seq, state.last_seq
                ),
            );
            if entry.seq <= state.last_seq {
                // A repeated or moved-back entry: counted once already, or out of order.
                return;
            }
        }
        state.last_seq = entry.seq;
        state.apply(line, entry);
    }
}

/// The file's device and inode, where the platform has them.
fn identity(meta: &Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// Whether the first `seen.len` bytes of `file` still hash to `seen.prefix`.
fn prefix_unchanged(file: &mut File, seen: &Seen) -> io::Result<bool> {
    file.seek(SeekFrom::Start(0))?;
    let mut hash = Sha256::new();
    let mut part = file.take(seen.len);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut read = 0u64;
    loop {
        let n = part.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hash.update(&buffer[..n]);
        read += n as u64;
    }
    Ok(read == seen.len && hash.finalize() == seen.prefix.clone().finalize())
}

/// The ledger taken for a read-check-append; dropping it keeps the fold for the next
/// operation, then releases the file lock, then the process-wide mutex (fields drop in
/// order, after `drop`).
pub(crate) struct Locked<'a> {
    ledger: &'a ApprovalLedger,
    file: File,
    /// The ledger as folded when it was taken, plus what was appended since.
    pub(crate) state: LedgerState,
    /// What `state` was folded from; `None` once a write failed, when the file may hold
    /// part of a line nobody folded.
    seen: Option<Seen>,
    _guard: MutexGuard<'static, ()>,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // Unsure after a panic mid-fold or a failed write: the next lock reads it all.
        let kept = match self.seen.take() {
            Some(seen) if !std::thread::panicking() => Some(Kept {
                state: mem::take(&mut self.state),
                seen,
            }),
            _ => None,
        };
        *self.ledger.kept() = kept;
    }
}

impl Locked<'_> {
    /// Appends one entry and flushes it to disk before returning.
    pub(crate) fn append(
        &mut self,
        approval_id: &ApprovalId,
        event: Event,
    ) -> Result<LedgerEntry, ApprovalError> {
        let entry = LedgerEntry {
            seq: self.state.last_seq + 1,
            approval_id: approval_id.clone(),
            at: Utc::now().trunc_subsecs(3),
            event,
        };
        let encode = |e: serde_json::Error| ApprovalError::Encode(e.to_string());
        let mut value = serde_json::to_value(&entry).map_err(encode)?;
        let mac = self.ledger.mac_hex(&value);
        if let Value::Object(map) = &mut value {
            map.insert("mac".to_owned(), Value::String(mac));
        }
        let mut line = canonical_json(&value);
        line.push('\n');
        if self.state.needs_newline {
            // Start after a torn line instead of joining it.
            line.insert(0, '\n');
        }
        let path = &self.ledger.path;
        let written = self
            .file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            self.state.needs_newline = true;
            self.seen = None;
            return Err(ApprovalError::io(path, e));
        }
        match &mut self.seen {
            // Folded as the next read would fold it, line number and all.
            Some(seen) => self.ledger.fold(&mut self.state, seen, line.as_bytes()),
            // After a failed write this lock no longer knows the file's bytes; the next
            // lock reads it all.
            None => {
                self.state.needs_newline = false;
                self.state.last_seq = entry.seq;
                self.state.apply(0, entry.clone());
            }
        }
        debug_assert_eq!(self.state.last_seq, entry.seq, "the entry just written");
        Ok(entry)
    }
}

/// Takes an exclusive advisory lock on the open ledger, waiting for other processes.
#[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
fn lock_exclusive(file: &File) -> io::Result<()> {
    rustix::fs::flock(file, rustix::fs::FlockOperation::LockExclusive).map_err(io::Error::from)
}

/// No `flock` through rustix here: the process-wide mutex is the only lock.
#[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
fn lock_exclusive(_file: &File) -> io::Result<()> {
    Ok(())
}

/// Open options for files only the owner may read: the key, the ledger.
fn private_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Creates the state folder (mode 0700) if it is missing.
fn make_private_dir(dir: &Path) -> Result<(), ApprovalError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| ApprovalError::io(dir, e))
}

/// Reads the key, or makes it: 32 random bytes written to a private temporary file, then
/// moved into place without replacing, so two first uses agree on one key.
fn load_or_create_key(path: &Path) -> Result<Vec<u8>, ApprovalError> {
    match read_key(path) {
        Err(ApprovalError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key).map_err(|e| ApprovalError::Random(e.to_string()))?;
    let temp = path.with_file_name(format!(".{KEY_FILE}.{}.tmp", std::process::id()));
    let written = private_file_options()
        .write(true)
        .create_new(true)
        .open(&temp)
        .and_then(|mut file| file.write_all(&key).and_then(|()| file.sync_all()));
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(ApprovalError::io(&temp, e));
    }
    match fsio::move_no_replace(&temp, path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| ApprovalError::io(dir, e))?;
            }
            Ok(key.to_vec())
        }
        Err(e) => {
            let _ = fs::remove_file(&temp);
            if e.kind() == io::ErrorKind::AlreadyExists {
                // Another process made it first: use theirs.
                read_key(path)
            } else {
                Err(ApprovalError::io(path, e))
            }
        }
    }
}

/// Reads an existing key, refusing a link, a wrong length or loose permissions.
fn read_key(path: &Path) -> Result<Vec<u8>, ApprovalError> {
    let meta = fs::symlink_metadata(path).map_err(|e| ApprovalError::io(path, e))?;
    if !meta.is_file() {
        return Err(ApprovalError::BadKey {
            path: path.to_path_buf(),
            reason: "not a plain file (a link?)".into(),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(ApprovalError::KeyPermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    let key = fs::read(path).map_err(|e| ApprovalError::io(path, e))?;
    if key.len() != KEY_LEN {
        return Err(ApprovalError::BadKey {
            path: path.to_path_buf(),
            reason: format!("{} bytes, expected {KEY_LEN}", key.len()),
        });
    }
    Ok(key)
}

/// Bytes from lower- or upper-case hex; `None` if it is not hex.
fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests;
