//! Everything that can go wrong in sync, each with a message naming what to fix.

use std::path::PathBuf;

use aie_shared::vault::{AgentName, TaskId, VaultError};

/// A sync, claim or replica operation that failed. Files are named relative to the vault
/// root, remotes by their URL.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A remote URL that is malformed or uses a scheme aie does not speak.
    #[error("remote URL {url:?} is not usable: {reason}")]
    InvalidRemoteUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The remote could not be reached while setting the vault up; nothing was changed.
    #[error(
        "cannot reach the vault remote {url}: {reason}; the vault at {} was left as it was \
         (check --remote)",
        vault.display()
    )]
    RemoteUnreachable {
        /// The remote's URL.
        url: String,
        /// The vault directory.
        vault: PathBuf,
        /// Why it could not be reached.
        reason: String,
    },

    /// A local remote that is not a bare repository: pushing to it would desync its files.
    #[error(
        "the vault remote {url} is not a bare git repository; aie pushes only to bare \
         repositories (make one with `git init --bare`)"
    )]
    RemoteNotBare {
        /// The remote's URL.
        url: String,
    },

    /// The vault is a git repository checked out on another branch than `main`.
    #[error("{}: the git repository is on `{head}`; aie syncs the vault on branch `main`", vault.display())]
    WrongBranch {
        /// The vault directory.
        vault: PathBuf,
        /// What HEAD points at.
        head: String,
    },

    /// The remote's history shares nothing with what this replica synced before.
    #[error(
        "the vault remote {url} has a history unrelated to the one {} synced with before: it \
         was replaced, or it is another vault. Nothing was merged; check the remote URL",
        vault.display()
    )]
    UnrelatedHistory {
        /// The remote's URL.
        url: String,
        /// The vault directory.
        vault: PathBuf,
    },

    /// Every push was refused because other replicas kept pushing first.
    #[error(
        "the vault remote {url} kept changing: {attempts} pushes in a row were refused; the \
         local commits are kept and the next sync tries again"
    )]
    RemoteKeptMoving {
        /// The remote's URL.
        url: String,
        /// How many pushes were tried.
        attempts: usize,
    },

    /// A git operation on the vault's repository failed.
    #[error("git {action} in {}: {source}", vault.display())]
    Git {
        /// What was being done (`commit`, `checkout`, ...).
        action: &'static str,
        /// The vault directory.
        vault: PathBuf,
        /// libgit2's error.
        #[source]
        source: git2::Error,
    },

    /// A file name in the remote's tree that is not UTF-8, which no vault path can be.
    #[error(
        "the vault remote {url} holds a file whose name is not UTF-8 ({name:?}); rename it there"
    )]
    NonUtf8Path {
        /// The remote's URL.
        url: String,
        /// The name, with the bad bytes replaced.
        name: String,
    },

    /// A vault operation (claim, release, read) refused or failed.
    #[error(transparent)]
    Vault(#[from] VaultError),

    /// A filesystem error on a named path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// `Dashboard.md` asked of a cloud replica.
    #[error("only the local zone writes Dashboard.md; this replica runs in the cloud zone")]
    DashboardIsLocal,

    /// A stale-claim release by an agent that is neither the holder nor the local zone.
    #[error(
        "task `{id}` is held by agent `{owner}`; only `{owner}` or the local zone may release \
         its stale claim"
    )]
    NotAllowedToRelease {
        /// The task.
        id: TaskId,
        /// Its holder.
        owner: AgentName,
    },

    /// A stale-claim release of a claim whose lease still runs.
    #[error("task `{id}` held by `{owner}` is not stale: its lease runs until {lease_until}")]
    LeaseNotStale {
        /// The task.
        id: TaskId,
        /// Its holder.
        owner: AgentName,
        /// When the lease ends (RFC 3339).
        lease_until: String,
    },

    /// A stale-claim release of a task nobody holds.
    #[error("task `{id}` is not claimed by anyone: it is in {folder}")]
    NotClaimed {
        /// The task.
        id: TaskId,
        /// Where it is.
        folder: String,
    },

    /// A claim whose file now looks like it holds a secret, so it can never be committed.
    #[error(
        "task `{id}` cannot be claimed: {path} looks like it holds a secret ({reason}), so it \
         can never be synced; the claim was given back. Remove the secret from the file"
    )]
    ClaimBlocked {
        /// The task.
        id: TaskId,
        /// The claimed file.
        path: String,
        /// What the content scan found.
        reason: String,
    },
}

impl SyncError {
    /// A closure wrapping a git error with what was being done and the vault it happened in.
    pub(crate) fn git(
        action: &'static str,
        vault: &std::path::Path,
    ) -> impl FnOnce(git2::Error) -> Self {
        let vault = vault.to_path_buf();
        move |source| SyncError::Git {
            action,
            vault,
            source,
        }
    }

    /// A closure wrapping an I/O error with the path it happened on.
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| SyncError::Io { path, source }
    }
}
