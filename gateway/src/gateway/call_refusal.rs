//! [`CallRefusal`]: every reason the policy guard refuses a `tools/call`, one variant each,
//! with the text the client reads (an `isError` result `refused: <text>`) and the audit
//! record's reason.

use aie_shared::approvals::Refused;
use serde_json::Value;

use super::limits::{BudgetRefusal, RateRefusal, SpendRefusal};

/// Why the guard refused a call before it was forwarded; nothing ran.
#[derive(Debug, thiserror::Error)]
pub enum CallRefusal {
    /// A client's or a tool's rate limit.
    #[error(transparent)]
    Rate(#[from] RateRefusal),
    /// The operator's policy: the zone, the client's role, the tool's class
    /// (`aie_shared::policy::Policy::decide` words it).
    #[error("{0}")]
    Policy(String),
    /// An execute call without an approval id.
    #[error(
        "{tool} is an execute tool: it runs only with the approval_id of a request the owner approved on the local machine (`aie approvals list`, then `aie approvals approve ID`); draft one first"
    )]
    NoApprovalId {
        /// The tool called.
        tool: String,
    },
    /// An approval id that is not one.
    #[error("approval_id must be an approval id string, got {raw}")]
    BadApprovalId {
        /// What the call sent.
        raw: Value,
    },
    /// An execute call in a zone that has no approvals (the cloud).
    #[error("{tool} belongs to the local executive")]
    NotLocal {
        /// The tool called.
        tool: String,
    },
    /// A payment whose payload cannot be counted against the budgets.
    #[error(transparent)]
    Spend(#[from] SpendRefusal),
    /// An effect budget it would exceed.
    #[error(transparent)]
    Budget(#[from] BudgetRefusal),
    /// The approval ledger's refusal (with where the file was set aside).
    #[error(transparent)]
    Approval(#[from] Refused),
    /// The approval check itself stopped (a panicked blocking task).
    #[error("the approval check stopped: {0}")]
    CheckStopped(String),
    /// Authorized, but the audit record of the intent could not be written, so the call
    /// was not forwarded and the approval was given back (the text says how that went).
    #[error("{0}")]
    NotForwarded(String),
}
