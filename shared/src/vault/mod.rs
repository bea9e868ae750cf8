//! The vault: an Obsidian-style folder of markdown files with YAML front matter, shared by
//! the cloud and local zones through git. This module is its model on one machine.
//!
//! # Layout
//! - [`layout`]: the contract's folders and domains, and the files `init` writes.
//! - [`id`]: [`TaskId`], [`AgentName`] and [`ApprovalId`]: the only strings that become path
//!   components, each a validated safe file stem.
//! - [`task`]: a task file ([`Task`]): typed front matter that keeps unknown keys, and a body.
//! - [`approval`]: an approval request file ([`ApprovalRequest`]) and the canonical JSON its
//!   payload hash is taken over.
//! - [`store`]: reading and listing tasks; broken files are reported, never touched.
//! - [`claim`]: claim-by-move (`renameat2(RENAME_NOREPLACE)`), release, complete, leases.
//! - [`maintain`]: `init`, `check` and `repair`, which never delete anything.
//! - [`nofollow`]: the guard every write, move, append and quoting read passes: no part of
//!   the path below the root may be a link ([`PathRefused`]).
//! - `frontmatter` and `fsio` (private): the `---` split and the filesystem primitives.
//!
//! Everything here is blocking filesystem work; async callers use `spawn_blocking`.
//! `specs/vault.md` is the prose version of this module.

use std::path::{Path, PathBuf};

use chrono::TimeDelta;

pub mod approval;
pub use approval::{ApprovalMeta, ApprovalRequest, canonical_json, payload_sha256};

pub mod claim;
pub use claim::{Claim, StaleLease};

mod error;
pub use error::VaultError;

mod frontmatter;
pub(crate) mod fsio;

pub mod id;
pub use id::{AgentName, ApprovalId, MAX_ID_LEN, TaskId};

pub mod layout;
pub use layout::{Domain, TaskFolder};

pub mod maintain;
pub use maintain::{Finding, RepairReport};

pub mod nofollow;
pub use nofollow::{PathRefused, Refusal};

pub mod store;
pub use store::{BrokenFile, StoredTask, TaskFilter, TaskListing, TaskSummary};

pub mod task;
pub use task::{Task, TaskMeta};

#[cfg(test)]
mod tests;

/// How long a claim holds before it counts as stale, unless the vault is opened with another.
pub const DEFAULT_LEASE: TimeDelta = TimeDelta::minutes(30);

/// A vault opened on a directory: every path it touches is built from its root and validated ids.
#[derive(Debug, Clone)]
pub struct Vault {
    root: PathBuf,
    lease: TimeDelta,
}

impl Vault {
    /// Opens an existing vault directory; missing folders are created on demand or by `repair`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, VaultError> {
        let root = root.into();
        if !root.is_dir() {
            return Err(VaultError::NotAVault { path: root });
        }
        Ok(Self {
            root,
            lease: DEFAULT_LEASE,
        })
    }

    /// The same vault with another claim lease.
    pub fn with_lease(mut self, lease: TimeDelta) -> Self {
        self.lease = lease;
        self
    }

    /// The vault's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The lease a new claim gets.
    pub fn lease(&self) -> TimeDelta {
        self.lease
    }

    /// Makes every change made so far in the vault durable (one `syncfs(2)` on Linux).
    ///
    /// Claims, releases and completions sync their file's content but leave their renames to
    /// this flush, which the sync makes before git records anything (`specs/vault.md`,
    /// "Durability"). A caller that answers for a change without a sync behind it (a vault
    /// without git) flushes before it answers.
    pub fn flush(&self) -> Result<(), VaultError> {
        fsio::flush_filesystem(&self.root).map_err(|source| VaultError::Flush {
            path: self.root.clone(),
            source,
        })
    }

    /// `path` relative to the root with `/` separators: how files are named in messages.
    pub(crate) fn rel(&self, path: &Path) -> String {
        let inner = path.strip_prefix(&self.root).unwrap_or(path);
        let parts: Vec<_> = inner
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect();
        if parts.is_empty() {
            ".".to_owned()
        } else {
            parts.join("/")
        }
    }

    /// Wraps an I/O error with the vault-relative path it happened on; a refusal of the
    /// link guard becomes [`VaultError::Refused`], which names the refused part itself.
    pub(crate) fn io(&self, path: &Path, source: std::io::Error) -> VaultError {
        if let Some(refused) = nofollow::refusal(&source) {
            return VaultError::Refused(refused.clone());
        }
        VaultError::Io {
            path: self.rel(path),
            source,
        }
    }
}
