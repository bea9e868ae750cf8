//! Setting a replica up: what is at the vault path, the remote's URL and a first look at
//! it, `git init`, and cloning into an empty folder (undone on failure).

use std::{fs, io, path::Path};

use aie_shared::vault::{Vault, VaultError};
use git2::{Oid, Repository, RepositoryInitOptions, build::CheckoutBuilder};

use crate::sync::{
    SyncError, incoming,
    repo::{self, BRANCH, REMOTE, RemoteKind, TRACKING, ref_target, remote_kind},
    report::Refused,
};

/// What is at the vault path before `open`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DirState {
    /// Nothing.
    Missing,
    /// An empty folder.
    Empty,
    /// A git repository.
    Git,
    /// A folder with files but no git repository.
    Plain,
}

impl DirState {
    /// Looks at the path.
    pub(super) fn of(root: &Path) -> Result<Self, SyncError> {
        match fs::metadata(root) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(DirState::Missing),
            Err(e) => return Err(SyncError::io(root)(e)),
            Ok(meta) if !meta.is_dir() => {
                return Err(VaultError::NotAVault {
                    path: root.to_path_buf(),
                }
                .into());
            }
            Ok(_) => {}
        }
        if fs::symlink_metadata(root.join(".git")).is_ok() {
            return Ok(DirState::Git);
        }
        let mut entries = fs::read_dir(root).map_err(SyncError::io(root))?;
        Ok(if entries.next().is_none() {
            DirState::Empty
        } else {
            DirState::Plain
        })
    }
}

/// Validates a remote URL, and readies the network transports when it needs them.
pub(super) fn checked_kind(url: &str) -> Result<RemoteKind, SyncError> {
    let kind = remote_kind(url).map_err(|reason| SyncError::InvalidRemoteUrl {
        url: url.to_owned(),
        reason,
    })?;
    if kind == RemoteKind::Network {
        crate::transport::register().map_err(|e| SyncError::InvalidRemoteUrl {
            url: url.to_owned(),
            reason: format!("the git network transports could not start: {e}"),
        })?;
    }
    Ok(kind)
}

/// Looks at a remote while setting up; an unreachable or unsuitable one is an error.
pub(super) fn probe(root: &Path, url: &str, kind: &RemoteKind) -> Result<Option<Oid>, SyncError> {
    repo::probe(url, kind).map_err(|e| match e {
        repo::ProbeError::NotBare => SyncError::RemoteNotBare {
            url: url.to_owned(),
        },
        repo::ProbeError::Unreachable(reason) => SyncError::RemoteUnreachable {
            url: url.to_owned(),
            vault: root.to_path_buf(),
            reason,
        },
    })
}

/// The URL of the configured remote, if there is one.
pub(super) fn configured_url(repo: &Repository) -> Option<String> {
    repo.find_remote(REMOTE)
        .ok()
        .and_then(|r| r.url().ok().map(str::to_owned))
}

/// Creates or repoints the remote.
pub(super) fn set_origin(repo: &Repository, url: &str, root: &Path) -> Result<(), SyncError> {
    let result = match repo.find_remote(REMOTE) {
        Ok(_) => repo.remote_set_url(REMOTE, url),
        Err(_) => repo.remote(REMOTE, url).map(|_| ()),
    };
    result.map_err(SyncError::git("remote", root))
}

/// Refuses a repository checked out on another branch than `main`.
pub(super) fn check_branch(repo: &Repository, root: &Path) -> Result<(), SyncError> {
    let head = repo
        .find_reference("HEAD")
        .map_err(SyncError::git("open", root))?;
    match head.symbolic_target().ok().flatten() {
        Some(BRANCH) => Ok(()),
        other => Err(SyncError::WrongBranch {
            vault: root.to_path_buf(),
            head: other.unwrap_or("a detached commit").to_owned(),
        }),
    }
}

/// `git init` with `main` as the first branch.
pub(super) fn init_repo(root: &Path) -> Result<Repository, SyncError> {
    let mut options = RepositoryInitOptions::new();
    options.initial_head("main").mkpath(true);
    Repository::init_opts(root, &options).map_err(SyncError::git("init", root))
}

/// Clones the remote into a missing or empty folder. On failure, everything this made is
/// removed again (the folder was empty or missing, so nothing else is touched).
///
/// The remote's tree is checked as every incoming tree is ([`incoming`]): when it holds
/// something a vault never takes, what may be taken is committed on top of the remote's
/// `main` and checked out instead, and the refusals are returned for the first report.
pub(super) fn clone_into(
    root: &Path,
    url: &str,
    remote_has_main: bool,
    created: bool,
) -> Result<(Repository, Vec<Refused>), SyncError> {
    let mut refused = Vec::new();
    let mut attempt = || -> Result<Repository, SyncError> {
        let repo = init_repo(root)?;
        set_origin(&repo, url, root)?;
        mark_cloning(&repo).map_err(SyncError::io(&repo.path().join(CLONING)))?;
        if remote_has_main {
            repo::fetch(&repo).map_err(|reason| SyncError::RemoteUnreachable {
                url: url.to_owned(),
                vault: root.to_path_buf(),
                reason,
            })?;
            let tip = ref_target(&repo, TRACKING).ok_or_else(|| SyncError::RemoteUnreachable {
                url: url.to_owned(),
                vault: root.to_path_buf(),
                reason: "the fetch brought no `main`".to_owned(),
            })?;
            let gitx = |action| SyncError::git(action, root);
            // Files first, flushed, then `main`: a crash never leaves `main` naming files the
            // disk lost, which the next commit would record as deleted.
            let mut tip = tip;
            let mut tree = repo
                .find_commit(tip)
                .and_then(|c| c.tree())
                .map_err(gitx("clone"))?;
            refused = incoming::check_tree(&repo, None, &tree);
            if !refused.is_empty() {
                tip = take_what_may_be_taken(&repo, tip, &tree, url, &refused)
                    .map_err(gitx("clone"))?;
                tree = repo
                    .find_commit(tip)
                    .and_then(|c| c.tree())
                    .map_err(gitx("clone"))?;
            }
            let mut options = CheckoutBuilder::new();
            options.force();
            repo.checkout_tree(tree.as_object(), Some(&mut options))
                .map_err(gitx("checkout"))?;
            Vault::open(root).and_then(|v| v.flush())?;
            repo.reference(BRANCH, tip, true, "aie: clone")
                .map_err(gitx("clone"))?;
        }
        fs::remove_file(repo.path().join(CLONING))
            .map_err(SyncError::io(&repo.path().join(CLONING)))?;
        Ok(repo)
    };
    let cloned = attempt();
    cloned.map(|repo| (repo, refused)).inspect_err(|_| {
        if created {
            let _ = fs::remove_dir_all(root);
        } else if let Ok(entries) = fs::read_dir(root) {
            for entry in entries.flatten() {
                let path = entry.path();
                let _ = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
            }
        }
    })
}

/// Commits, on top of `tip`, its tree without the entries `refused` names.
fn take_what_may_be_taken(
    repo: &Repository,
    tip: Oid,
    tree: &git2::Tree<'_>,
    url: &str,
    refused: &[Refused],
) -> Result<Oid, git2::Error> {
    let files = incoming::plain_files(repo, tree);
    let tree = repo.find_tree(repo::write_files(repo, &files)?)?;
    let mut message = format!("aie: take what may be taken from {url}");
    for r in refused {
        message.push_str(&format!("\n\nrefused: {}: {}", r.path, r.reason));
    }
    let sig = repo::signature("aie")?;
    let parent = repo.find_commit(tip)?;
    repo.commit(None, &sig, &sig, &message, &tree, &[&parent])
}

/// Marks a clone in progress in the new repository's `.git/`, removed once `main` is set.
/// libgit2 writes the checked-out files in place, so a clone a crash cut off can leave
/// files cut short; a vault found with the mark is cleared and cloned again
/// ([`unfinished_clone`]).
const CLONING: &str = "aie-clone-incomplete";

/// Writes the clone mark, durably.
fn mark_cloning(repo: &Repository) -> io::Result<()> {
    fs::File::create(repo.path().join(CLONING))?.sync_all()?;
    fs::File::open(repo.path())?.sync_all()
}

/// A clone that did not finish: its files may be cut short and `main` was never set, so
/// nothing in it is this replica's work.
pub(super) struct UnfinishedClone {
    /// The remote it was cloning from, if its configuration says.
    pub(super) url: Option<String>,
}

/// The clone `root` holds, when it did not finish.
pub(super) fn unfinished_clone(root: &Path) -> Option<UnfinishedClone> {
    if !root.join(".git").join(CLONING).exists() {
        return None;
    }
    let url = Repository::open(root)
        .ok()
        .and_then(|repo| configured_url(&repo));
    Some(UnfinishedClone { url })
}

/// Empties `root` (an unfinished clone), leaving the folder itself.
pub(super) fn clear_dir(root: &Path) -> Result<(), SyncError> {
    for entry in fs::read_dir(root).map_err(SyncError::io(root))? {
        let path = entry.map_err(SyncError::io(root))?.path();
        let removed = if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(SyncError::io(&path))?;
    }
    Ok(())
}
