//! Everything that can go wrong in the vault, each with a message naming what to fix.

use std::path::PathBuf;

use super::{AgentName, ApprovalId, PathRefused, TaskFolder, TaskId};

/// A vault operation that failed; files are named relative to the vault root.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// A task id, agent name or approval id that is not a safe file stem.
    #[error("invalid {kind} {id}: {reason}")]
    InvalidId {
        /// Which kind of id (`task id`, `agent name`, `approval id`).
        kind: &'static str,
        /// The refused id, quoted and escaped.
        id: String,
        /// What makes it unsafe.
        reason: String,
    },

    /// A domain name outside the contract's four.
    #[error("unknown domain {0:?}: expected one of email, social, whatsapp, payments")]
    UnknownDomain(String),

    /// A task folder name outside `Needs_Action`, `In_Progress`, `Done`.
    #[error("unknown task folder {0:?}: expected one of Needs_Action, In_Progress, Done")]
    UnknownFolder(String),

    /// The vault path is missing or not a directory.
    #[error("{}: not a vault directory", path.display())]
    NotAVault {
        /// The path given.
        path: PathBuf,
    },

    /// A file whose front matter cannot be read; the file is left as it is.
    #[error("{path}: front matter: {reason}")]
    BadFrontMatter {
        /// The file.
        path: String,
        /// What is wrong, naming the field when there is one.
        reason: String,
    },

    /// A file whose front matter names another id than its file name.
    #[error("{path}: front matter says id `{found}` but the file name says `{expected}`")]
    IdMismatch {
        /// The file.
        path: String,
        /// The id in the front matter.
        found: String,
        /// The id from the file name.
        expected: String,
    },

    /// No task with this id in any state folder.
    #[error("task `{id}` not found in Needs_Action, In_Progress or Done")]
    TaskNotFound {
        /// The id asked for.
        id: TaskId,
    },

    /// No approval request with this id in any approval folder.
    #[error("approval request `{id}` not found in Pending_Approval, Approved or Rejected")]
    ApprovalNotFound {
        /// The id asked for.
        id: ApprovalId,
    },

    /// The same approval id in more than one place.
    #[error("approval request `{id}` is in more than one place: {}", .paths.join(", "))]
    DuplicateApproval {
        /// The request.
        id: ApprovalId,
        /// Every file carrying it.
        paths: Vec<String>,
    },

    /// The task is already held by another agent.
    #[error("task `{id}` is already claimed by agent `{owner}`")]
    AlreadyClaimed {
        /// The task.
        id: TaskId,
        /// The agent that holds it.
        owner: AgentName,
    },

    /// The task kept moving while this claim tried to take it; trying again is safe.
    #[error("task `{id}` was moved by another agent while being claimed; try again")]
    ClaimRace {
        /// The task.
        id: TaskId,
    },

    /// The task is in a folder it cannot be claimed from.
    #[error("task `{id}` is in {folder}, so it cannot be claimed")]
    NotClaimable {
        /// The task.
        id: TaskId,
        /// Where it is.
        folder: TaskFolder,
    },

    /// A release or completion by an agent that does not hold the task.
    #[error("task `{id}` is not held by agent `{agent}`: {state}")]
    NotHeld {
        /// The task.
        id: TaskId,
        /// The agent that asked.
        agent: AgentName,
        /// Where the task is instead.
        state: String,
    },

    /// The same task id in more than one place: `check` lists it, a human resolves it.
    #[error("task `{id}` is in more than one place: {}", .paths.join(", "))]
    DuplicateTask {
        /// The task.
        id: TaskId,
        /// Every file carrying it.
        paths: Vec<String>,
    },

    /// A file that this operation would have to replace, which it never does.
    #[error("{path} already exists; not replacing it")]
    AlreadyExists {
        /// The file.
        path: String,
    },

    /// Front matter that cannot be written back (a value YAML cannot hold).
    #[error("{path}: cannot write front matter: {reason}")]
    Encode {
        /// The file.
        path: String,
        /// The serializer's reason.
        reason: String,
    },

    /// The vault could not be flushed to disk (a write-back error): nothing that needed the
    /// flush went ahead.
    #[error("{}: flushing the vault to disk failed: {source}", path.display())]
    Flush {
        /// The vault's root.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// A path that goes through a link (or a part that is no plain folder or file): refused
    /// before anything was written, moved or read.
    #[error(transparent)]
    Refused(#[from] PathRefused),

    /// A filesystem error on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl VaultError {
    /// The message without its leading file name, for reports that name the file apart.
    pub fn detail(&self) -> String {
        match self {
            VaultError::BadFrontMatter { reason, .. } => format!("front matter: {reason}"),
            VaultError::IdMismatch {
                found, expected, ..
            } => format!("front matter says id `{found}` but the file name says `{expected}`"),
            VaultError::Io { source, .. } => source.to_string(),
            other => other.to_string(),
        }
    }
}
