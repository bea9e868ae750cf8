//! What the replica answers: sync reports, claim outcomes, status. These are the shapes the
//! `vault_sync`, `vault_claim_task` and `vault_status` tools return.

use aie_shared::vault::{AgentName, Claim, TaskId};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Serialize;

/// Where a stack runs; the policy engine's zone (`aie_shared::Zone`), re-exported here.
pub use aie_shared::Zone;

/// A file held back from commits because it looks like a secret; it stays on disk.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
pub struct Blocked {
    /// The file, relative to the vault root.
    pub path: String,
    /// Why (the name pattern or what the content scan found).
    pub reason: String,
}

/// Something the remote brought that this replica did not take: an entry that is no plain
/// file or folder, an unsafe name, a file over the size limit, or a change to a path this
/// replica writes alone. It never reaches the working tree; the rest of the sync goes on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
pub struct Refused {
    /// The path as the remote's tree names it, relative to the vault root (bytes that are
    /// not UTF-8 shown as U+FFFD).
    pub path: String,
    /// Why it was not taken.
    pub reason: String,
}

/// A claim this replica's agent made that another replica's change overrode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct LostClaim {
    /// The task.
    pub task_id: TaskId,
    /// The agent that holds or finished it now; none when it went back to `Needs_Action`
    /// (its stale claim was released).
    pub owner: Option<AgentName>,
    /// Where the task is now, relative to the vault root.
    pub path: String,
}

/// What one sync did: the contract's `{pushed, pulled, conflicts, lost_claims}` and more.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct SyncReport {
    /// Commits the remote gained from this replica.
    pub pushed: usize,
    /// Commits this replica gained from the remote.
    pub pulled: usize,
    /// Conflicts the merge settled, one line each, naming the file and the kept copy.
    pub conflicts: Vec<String>,
    /// This agent's claims that another replica's change overrode.
    pub lost_claims: Vec<LostClaim>,
    /// Claims made while offline that this sync put on the remote.
    pub confirmed_claims: Vec<TaskId>,
    /// Files left out of the commit because they look like secrets.
    pub blocked: Vec<Blocked>,
    /// What the remote brought that this replica did not take (see [`Refused`]).
    pub refused: Vec<Refused>,
    /// Why the remote could not be reached; local commits wait for the next sync.
    pub offline: Option<String>,
}

impl SyncReport {
    /// Adds a lost claim once.
    pub(crate) fn lose(&mut self, lost: LostClaim) {
        if !self.lost_claims.iter().any(|l| l.task_id == lost.task_id) {
            self.lost_claims.push(lost);
        }
    }
}

/// The answer to a claim across replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ClaimOutcome {
    /// The claim's commit is on the remote: the task is this agent's.
    Confirmed {
        /// The claim as made locally.
        claim: Claim,
    },
    /// Committed locally but not yet on the remote (unreachable); a later sync confirms it or
    /// reports it in `lost_claims`. Do not act on the task before then.
    Pending {
        /// The claim as made locally.
        claim: Claim,
        /// Why it could not be pushed.
        reason: String,
    },
    /// Another agent holds the task ("claimed by `owner`").
    Lost {
        /// The task.
        task_id: TaskId,
        /// The agent that holds or finished it; none if it is nowhere to be claimed.
        owner: Option<AgentName>,
    },
}

impl ClaimOutcome {
    /// Whether this agent may act on the task now.
    pub fn confirmed(&self) -> bool {
        matches!(self, ClaimOutcome::Confirmed { .. })
    }

    /// The agent holding the task as far as this replica knows.
    pub fn owner(&self) -> Option<&AgentName> {
        match self {
            ClaimOutcome::Confirmed { claim } | ClaimOutcome::Pending { claim, .. } => {
                Some(&claim.owner)
            }
            ClaimOutcome::Lost { owner, .. } => owner.as_ref(),
        }
    }
}

/// A stale claim given back to `Needs_Action`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Released {
    /// The task.
    pub task_id: TaskId,
    /// The agent whose claim it was.
    pub previous_owner: AgentName,
    /// Its file now, relative to the vault root.
    pub path: String,
    /// Why the release is not on the remote yet, if it is not.
    pub offline: Option<String>,
}

/// How many files each folder holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct FolderCounts {
    /// Tasks in `Needs_Action/<domain>/`.
    pub needs_action: usize,
    /// Tasks in `In_Progress/<agent>/`.
    pub in_progress: usize,
    /// Requests in `Pending_Approval/<domain>/`.
    pub pending_approval: usize,
    /// Requests in `Approved/`.
    pub approved: usize,
    /// Requests in `Rejected/`.
    pub rejected: usize,
    /// Tasks in `Done/`.
    pub done: usize,
    /// Notes in `Updates/`.
    pub updates: usize,
    /// Files in `Needs_Action/conflicts/`, waiting for the human.
    pub conflicts: usize,
}

/// The replica's sync state: the `vault_status` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ReplicaStatus {
    /// This replica's agent.
    pub agent: AgentName,
    /// Its zone.
    pub zone: Zone,
    /// The remote's URL, if one is configured.
    pub remote: Option<String>,
    /// Local commits the remote does not have (as of the last fetch).
    pub ahead: usize,
    /// Remote commits not merged here (as of the last fetch).
    pub behind: usize,
    /// When a sync last reached the remote.
    pub last_sync: Option<DateTime<Utc>>,
    /// The last sync's failure or offline reason, cleared by a sync that reaches the remote.
    pub last_error: Option<String>,
    /// Files held back as secrets at the last commit.
    pub blocked: Vec<Blocked>,
    /// What the remote brought that the last merge of it did not take, with when that was.
    pub refused: Vec<Refused>,
    /// When the remote last brought something this replica refused.
    pub last_refused_at: Option<DateTime<Utc>>,
    /// Claims committed locally and not yet confirmed on the remote.
    pub pending_claims: Vec<TaskId>,
    /// Files per folder.
    pub counts: FolderCounts,
    /// The files in `Needs_Action/conflicts/`, relative to the vault root.
    pub conflicts: Vec<String>,
}
