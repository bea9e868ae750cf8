//! What can go wrong with approvals: [`ApprovalError`] for the human's commands and the
//! ledger's storage, [`Refusal`] for an execute call that may not run.

use std::{fmt, io, path::PathBuf};

use chrono::{DateTime, Utc};

use crate::vault::{ApprovalId, VaultError};

/// A decision or ledger operation that failed; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// A filesystem error on a named path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },

    /// A vault operation failed (reading a request, moving a task).
    #[error(transparent)]
    Vault(#[from] VaultError),

    /// The ledger key file is not 32 bytes.
    #[error(
        "{}: {reason}; the ledger cannot be checked without its key (move the ledger and the key aside to start over: every approval given so far is then set aside, never run)",
        path.display()
    )]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The ledger key can be read or written by other users.
    #[error("{}: readable or writable by other users (mode {mode:o}); run `chmod 600` on it", path.display())]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// The operating system gave no random bytes for a new key.
    #[error("cannot make the approval ledger key: no random bytes from the system: {0}")]
    Random(String),

    /// No approval request with this id in any approval folder.
    #[error(
        "approval request `{id}` not found in Pending_Approval, Approved, Rejected, Done or Quarantine"
    )]
    NotFound {
        /// The id asked for.
        id: ApprovalId,
    },

    /// The same approval id in several files.
    #[error("approval request `{id}` is in more than one place: {}; a person must decide which one is real", .paths.join(", "))]
    Duplicate {
        /// The id.
        id: ApprovalId,
        /// Every file carrying it.
        paths: Vec<String>,
    },

    /// The request is not waiting for a decision.
    #[error("approval request `{id}` is in {place}, not waiting for a decision")]
    NotPending {
        /// The id.
        id: ApprovalId,
        /// Where it is.
        place: String,
    },

    /// The ledger already holds a decision for this request.
    #[error(
        "approval request `{id}` was already {decision} by {by} at {}",
        rfc3339(at)
    )]
    AlreadyDecided {
        /// The id.
        id: ApprovalId,
        /// `approved` or `rejected`.
        decision: &'static str,
        /// Who decided.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },

    /// The approval was already used, so it can no longer be decided on.
    #[error(
        "approval `{id}` was already used at {}; it can no longer be rejected",
        rfc3339(at)
    )]
    AlreadyUsed {
        /// The id.
        id: ApprovalId,
        /// When it was used.
        at: DateTime<Utc>,
    },

    /// The request file's payload does not match its own hash: it was edited.
    #[error(
        "{path}: the payload does not match its payload_sha256, so the file was edited after it was drafted; it cannot be approved, have it drafted again"
    )]
    PayloadMismatch {
        /// The request file.
        path: String,
    },

    /// `--sha256` is not a hash prefix the owner can have been shown.
    #[error(
        "--sha256 `{given}`: give the first 8 or more hex digits of the payload_sha256 that `aie approvals show ID` prints"
    )]
    BadShownHash {
        /// What was given.
        given: String,
    },

    /// The request's payload is not the one the owner was shown: it changed after `show`.
    #[error(
        "approval request `{id}` not approved: its payload_sha256 is now {now}, not the {shown}… you were shown, so the request changed after you looked (a sync brought another version); run `aie approvals show {id}` again and decide on what it shows"
    )]
    NotAsShown {
        /// The id.
        id: ApprovalId,
        /// The hash prefix the owner approved.
        shown: String,
        /// The payload's hash now.
        now: String,
    },

    /// The request expired before it was decided.
    #[error(
        "approval request `{id}` expired at {}; it cannot be approved, have it drafted again",
        rfc3339(at)
    )]
    Expired {
        /// The id.
        id: ApprovalId,
        /// When it expired.
        at: DateTime<Utc>,
    },

    /// A request file that cannot be read.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },

    /// Approvals are the local machine's alone.
    #[error("approvals are given on the local machine only; this stack runs in the cloud zone")]
    NotLocal,

    /// The ledger fails its checks, so it decides nothing until a person looks.
    #[error(
        "the approval ledger {} is damaged: {detail}; nothing is authorized until a person checks it (moving it aside starts over: every approval given so far is then set aside, never run)",
        path.display()
    )]
    LedgerDamaged {
        /// The ledger file.
        path: PathBuf,
        /// The first problem found.
        detail: String,
    },

    /// A result for an approval that was never started.
    #[error(
        "approval `{id}` was not started (no used marker in the ledger), so it has no result to record"
    )]
    NotStarted {
        /// The id.
        id: ApprovalId,
    },

    /// A use that cannot be given back (see `Approvals::release`).
    #[error("approval `{id}` cannot be given back: {why}")]
    NotReleasable {
        /// The id.
        id: ApprovalId,
        /// Why not.
        why: String,
    },

    /// A second final result for one approval.
    #[error("approval `{id}` already has its result ({outcome}); results are recorded once")]
    ResultExists {
        /// The id.
        id: ApprovalId,
        /// The result already recorded.
        outcome: String,
    },

    /// A folder the lifecycle moves files into is a link: files are never moved through one.
    #[error("{path}: a link or not a folder; approval files are never moved through a link")]
    LinkedFolder {
        /// The folder, relative to the vault root.
        path: String,
    },

    /// A ledger entry that cannot be written as JSON (cannot happen with the types used).
    #[error("cannot encode a ledger entry: {0}")]
    Encode(String),
}

/// A time in messages as the files write it: RFC 3339, UTC, whole seconds.
fn rfc3339(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl ApprovalError {
    /// Wraps an I/O error with the path it happened on.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        ApprovalError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Why an execute call may not run under an approval: each a thing a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No human approval for it (yet).
    #[error("it has not been approved: {detail}")]
    NotApproved {
        /// Where it stands.
        detail: String,
    },

    /// The human rejected it (or revoked the approval).
    #[error("{by} rejected it: {reason}")]
    Rejected {
        /// The human's reason.
        reason: String,
        /// Who rejected it.
        by: String,
    },

    /// Its time ran out.
    #[error("it expired at {}; have it drafted again", rfc3339(at))]
    Expired {
        /// When it expired.
        at: DateTime<Utc>,
    },

    /// It already ran (or is running now).
    #[error(
        "it was already used at {}; an approval runs once, so have it drafted again to act again",
        rfc3339(at)
    )]
    AlreadyUsed {
        /// When it was used.
        at: DateTime<Utc>,
    },

    /// The approved file was edited after the approval.
    #[error("its file was changed after it was approved ({detail}); have it drafted again")]
    PayloadChanged {
        /// What differs.
        detail: String,
    },

    /// The call's tool or arguments are not the approved ones.
    #[error("this call is not the approved action ({detail})")]
    ArgumentsDiffer {
        /// What differs.
        detail: String,
    },

    /// A file in `Approved/` with no approval given on this machine.
    #[error("it is in Approved/ but no approval was given for it on this machine: {detail}")]
    NoLedgerEntry {
        /// How it may have got there, and what the owner does instead.
        detail: String,
    },

    /// A file the owner moved into `Approved/` by hand that cannot be approved.
    #[error(
        "it was moved into Approved/ by hand but cannot be approved: {detail}; have it drafted again"
    )]
    NotApprovable {
        /// Why (unreadable, edited, expired).
        detail: String,
    },

    /// It was started and nobody knows whether it happened.
    #[error(
        "it was started at {} and whether it happened is unknown (a crash, a timeout or a lost connection); check by hand, it is never retried",
        rfc3339(since)
    )]
    InDoubt {
        /// When it was started.
        since: DateTime<Utc>,
    },

    /// A ledger line about it fails its authentication check.
    #[error(
        "a line about it in the approval ledger fails its authentication check (altered or forged); nothing is authorized until a person checks the ledger"
    )]
    BadMac,

    /// The ledger fails its checks elsewhere.
    #[error(
        "the approval ledger is damaged ({detail}); nothing is authorized until a person checks it"
    )]
    LedgerDamaged {
        /// The first problem found.
        detail: String,
    },

    /// The approval could not be checked at all (storage error): refused to be safe.
    #[error("it could not be checked: {0}")]
    Unavailable(Box<ApprovalError>),
}

/// A refused execute call: the approval, the reason, and where its file was set aside.
#[derive(Debug, thiserror::Error)]
pub struct Refused {
    /// The approval the call named.
    pub approval_id: ApprovalId,
    /// Why it may not run.
    pub refusal: Refusal,
    /// Where its file was moved so it cannot cause an action (vault-relative), if it was.
    pub set_aside: Option<String>,
    /// Why its file, which may never run, could not be moved (`Quarantine/` is a link or no
    /// folder, a write failed): it stays where it is, and still never runs.
    pub not_set_aside: Option<String>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "approval `{}` refused: {}",
            self.approval_id, self.refusal
        )?;
        if let Some(path) = &self.set_aside {
            write!(f, "; its file was set aside to {path}")?;
        }
        if let Some(why) = &self.not_set_aside {
            write!(
                f,
                "; its file could not be set aside ({why}), so it stays where it is and can never run"
            )?;
        }
        Ok(())
    }
}
