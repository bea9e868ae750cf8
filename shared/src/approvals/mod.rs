//! The human's approvals: the only way an `execute` tool ever runs.
//!
//! A draft tool files an [`ApprovalRequest`](crate::vault::ApprovalRequest) in
//! `Pending_Approval/<domain>/`. On the local machine the human approves or rejects it
//! (`aie approvals approve ID --sha256 HEX`, which approves only the payload `show` printed,
//! or `reject ID`; or, when the config allows it, by moving the file into
//! `Approved/` by hand, which only the vault's git state can tell from a file that came
//! through a commit). Each
//! decision is written first to the **approval ledger** in the local state folder, which
//! never syncs and whose entries are authenticated with a key that never leaves the
//! machine; only then does the file move. When an execute tool is called, [`Approvals::authorize`]
//! checks the ledger and the file together and marks the approval used before the server is
//! called, so each approval runs at most once; [`Approvals::record_result`] records how it
//! ended, or [`Approvals::release`] gives the use back when its server certified that
//! nothing ran. Whatever may not run is set aside into `Quarantine/` and the refusal names why.
//!
//! # Layout
//! - [`ledger`]: `<state>/approvals.jsonl` and `<state>/approval.key`: HMAC-authenticated,
//!   append-only entries, folded into each approval's record.
//! - [`lifecycle`]: approve, reject, adopt hand-moved approvals (the caller tells which
//!   they are, [`HandMoveCheck`]), authorize, record results, set aside; every approval's
//!   lifetime capped by the local config.
//! - [`listing`]: `list_pending` and `show`, what `aie approvals list|show` print.
//! - `error` (private): [`ApprovalError`], [`Refusal`] and [`Refused`].
//!
//! Everything here is blocking file I/O; async callers use `spawn_blocking`.
//! `specs/approvals.md` is the prose version of this module.

mod error;
pub use error::{ApprovalError, Refusal, Refused};

pub mod ledger;
pub use ledger::{ApprovalLedger, LedgerRecord, LedgerState, Outcome, ReleasedUse};

pub mod lifecycle;
pub use lifecycle::{
    AdoptReport, Approvals, Authorized, DEFAULT_MAX_LIFETIME, Decided, HandMoveCheck, Place,
    QUARANTINE, ResultRecorded, ShownHash,
};

pub mod listing;
pub use listing::{
    ApprovalStatus, ApprovalView, InDoubtSummary, PendingListing, PendingSummary, list_pending,
};

#[cfg(test)]
mod tests;

/// The local user's name for `decided_by`: `$USER`, else `$LOGNAME`, else `unknown`.
pub fn local_user() -> String {
    ["USER", "LOGNAME"]
        .into_iter()
        .filter_map(|key| std::env::var(key).ok())
        .find(|name| !name.trim().is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
