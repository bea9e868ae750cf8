//! The contract's vault layout: folder names, domains, and the files `init` writes.
//!
//! ```text
//! Needs_Action/<domain>/   Plans/<domain>/   In_Progress/<agent>/   Pending_Approval/<domain>/
//! Approved/   Rejected/   Done/   Updates/   Logs/<agent>/YYYY-MM-DD.jsonl   Dashboard.md
//! ```

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{AgentName, Vault, VaultError};

/// New work, one folder per domain.
pub const NEEDS_ACTION: &str = "Needs_Action";
/// Plans for tasks, one folder per domain.
pub const PLANS: &str = "Plans";
/// Claimed work, one folder per agent.
pub const IN_PROGRESS: &str = "In_Progress";
/// Approval requests waiting for the human, one folder per domain.
pub const PENDING_APPROVAL: &str = "Pending_Approval";
/// Approval requests the human approved.
pub const APPROVED: &str = "Approved";
/// Approval requests the human rejected.
pub const REJECTED: &str = "Rejected";
/// Finished tasks.
pub const DONE: &str = "Done";
/// The cloud zone's notes to the owner.
pub const UPDATES: &str = "Updates";
/// Audit logs, one folder per agent.
pub const LOGS: &str = "Logs";
/// The owner's summary, written only by the local zone.
pub const DASHBOARD: &str = "Dashboard.md";
/// Sync conflicts set aside for the human, under `Needs_Action/`.
pub const CONFLICTS: &str = "conflicts";
/// Lines `init` and `repair` keep in the vault's `.gitignore`, so secrets never reach a commit.
pub const GITIGNORE_LINES: &[&str] = &[
    ".env",
    ".env.*",
    "*.env",
    "*credentials*",
    "*token*",
    "*session*",
    "secrets/",
    "*.pem",
    "*.key",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*.ppk",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    ".netrc",
    ".pgpass",
    ".obsidian/workspace*",
];

/// The note `init` leaves for someone who opens the vault in Obsidian.
pub const README: &str = "\
# aie vault

This folder is shared by the aie agents (cloud and local) and synced through git.
You can read and edit it in Obsidian.

- `Needs_Action/<domain>/`: new tasks. `In_Progress/<agent>/`: tasks an agent holds.
  `Done/`: finished tasks.
- `Pending_Approval/<domain>/`: actions waiting for your decision; decide with
  `aie approvals approve|reject ID` on your own machine. Editing an approval file
  voids it.
- `Updates/`: notes from the cloud agent; `Dashboard.md` is rebuilt from them locally.
- `Logs/<agent>/`: audit logs; each file has one writer.

Keep the YAML front matter (between the `---` lines) valid: a task whose front matter
cannot be read is reported and left alone. Never put secrets here: `.gitignore` keeps
`.env`, tokens, sessions and keys out of commits.
";

/// What `init` writes as the first `Dashboard.md`.
pub const DASHBOARD_SEED: &str = "# Dashboard\n\nRebuilt by the local zone from `Updates/`.\n";

/// A task's business area; each has its folders under `Needs_Action/`, `Plans/` and
/// `Pending_Approval/`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Domain {
    /// Mail.
    Email,
    /// Social media posts.
    Social,
    /// WhatsApp messages.
    Whatsapp,
    /// Payments.
    Payments,
}

impl Domain {
    /// Every domain, in the contract's order.
    pub const ALL: [Domain; 4] = [
        Domain::Email,
        Domain::Social,
        Domain::Whatsapp,
        Domain::Payments,
    ];

    /// The domain's folder name.
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Email => "email",
            Domain::Social => "social",
            Domain::Whatsapp => "whatsapp",
            Domain::Payments => "payments",
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Domain {
    type Err = VaultError;
    fn from_str(raw: &str) -> Result<Self, VaultError> {
        Domain::ALL
            .into_iter()
            .find(|d| d.as_str() == raw)
            .ok_or_else(|| VaultError::UnknownDomain(raw.to_owned()))
    }
}

/// The state folders a task moves through; a task is in exactly one of them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum TaskFolder {
    /// `Needs_Action/<domain>/`: waiting to be claimed.
    #[serde(rename = "Needs_Action")]
    NeedsAction,
    /// `In_Progress/<agent>/`: held by one agent.
    #[serde(rename = "In_Progress")]
    InProgress,
    /// `Done/`: finished.
    #[serde(rename = "Done")]
    Done,
}

impl TaskFolder {
    /// Every task folder, in lifecycle order.
    pub const ALL: [TaskFolder; 3] = [
        TaskFolder::NeedsAction,
        TaskFolder::InProgress,
        TaskFolder::Done,
    ];

    /// The folder's name in the vault.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskFolder::NeedsAction => NEEDS_ACTION,
            TaskFolder::InProgress => IN_PROGRESS,
            TaskFolder::Done => DONE,
        }
    }
}

impl fmt::Display for TaskFolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskFolder {
    type Err = VaultError;
    fn from_str(raw: &str) -> Result<Self, VaultError> {
        TaskFolder::ALL
            .into_iter()
            .find(|f| f.as_str() == raw)
            .ok_or_else(|| VaultError::UnknownFolder(raw.to_owned()))
    }
}

impl Vault {
    /// `Needs_Action/<domain>/`.
    pub fn needs_action_dir(&self, domain: Domain) -> PathBuf {
        self.root.join(NEEDS_ACTION).join(domain.as_str())
    }

    /// `Needs_Action/conflicts/`, where sync conflicts are set aside.
    pub fn conflicts_dir(&self) -> PathBuf {
        self.root.join(NEEDS_ACTION).join(CONFLICTS)
    }

    /// `In_Progress/`, the parent of every agent's folder.
    pub fn in_progress_root(&self) -> PathBuf {
        self.root.join(IN_PROGRESS)
    }

    /// `In_Progress/<agent>/`.
    pub fn in_progress_dir(&self, agent: &AgentName) -> PathBuf {
        self.in_progress_root().join(agent.as_str())
    }

    /// `Done/`.
    pub fn done_dir(&self) -> PathBuf {
        self.root.join(DONE)
    }

    /// `Pending_Approval/<domain>/`.
    pub fn pending_approval_dir(&self, domain: Domain) -> PathBuf {
        self.root.join(PENDING_APPROVAL).join(domain.as_str())
    }

    /// `Logs/<agent>/`.
    pub fn logs_dir(&self, agent: &AgentName) -> PathBuf {
        self.root.join(LOGS).join(agent.as_str())
    }

    /// The vault's `.gitignore`.
    pub fn gitignore_path(&self) -> PathBuf {
        self.root.join(".gitignore")
    }

    /// Every folder a complete vault has, relative to the root (agent folders come on demand).
    pub fn layout_dirs() -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        for parent in [NEEDS_ACTION, PLANS, PENDING_APPROVAL] {
            for domain in Domain::ALL {
                dirs.push(Path::new(parent).join(domain.as_str()));
            }
        }
        dirs.push(Path::new(NEEDS_ACTION).join(CONFLICTS));
        for flat in [IN_PROGRESS, APPROVED, REJECTED, DONE, UPDATES, LOGS] {
            dirs.push(PathBuf::from(flat));
        }
        dirs
    }
}
