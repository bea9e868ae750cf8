//! Hand moves: which files in `Approved/` the owner moved there by hand on this machine, as
//! the vault's own git state shows it (contract invariant 3; `specs/approvals.md`,
//! "Hand-moved approvals").
//!
//! Whatever reaches a replica through git (aie's sync, a merge, a rebase, a plain `git pull`
//! by another tool such as obsidian-git) comes as a commit, and a commit leaves the working
//! tree, the index and `main` in agreement. A move the owner makes with `mv` or a file
//! manager touches the working tree alone. So `Approved/<id>.md` is a **hand move** when all
//! of these hold:
//! - it is a plain file in the working tree, with a name that is an approval id;
//! - `main` (checked out as `HEAD`) has no `Approved/<id>.md`, and has exactly one
//!   `Pending_Approval/<domain>/<id>.md`, a regular file;
//! - the index agrees with `main` on both paths: nothing staged at `Approved/<id>.md`, the
//!   pending file staged as committed (a merge, a rebase, a checkout, a `git add` or
//!   `git mv` stages what it brings);
//! - that pending file is gone from the working tree;
//! - the bytes on disk are exactly the pending file's committed blob;
//! - no git operation is under way: no merge, rebase, cherry-pick, revert or bisect, no
//!   `index.lock`, no checkout of aie's sync in progress or interrupted
//!   (`.git/aie-checkout.json`); looked at before and after, with `HEAD` and the index
//!   file unchanged in between, so a `git pull` or a sync running at the same moment
//!   (which writes files before it moves the index and `main`) is never taken for a hand.
//!
//! Once the move is committed it is no longer a hand move, so adoption happens before the
//! sync stages it (`Replica::set_before_commit`) or when the approval is first authorized.
//! A vault with no git repository, or with no commit yet, has no hand moves.

use std::{
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
};

use aie_shared::{
    approvals::HandMoveCheck,
    vault::{
        ApprovalId, Domain,
        layout::{APPROVED, PENDING_APPROVAL},
    },
};
use git2::{ErrorCode, Index, ObjectType, Oid, Repository, RepositoryState, Tree};

use super::{SyncError, repo::BRANCH};

/// The checkout journal aie's sync writes in `.git/` for as long as a checkout runs (see
/// `replica::journal`): while it is there the working tree may be ahead of the index.
const CHECKOUT_JOURNAL: &str = "aie-checkout.json";

/// Git file modes of a regular file.
const REGULAR: [i32; 2] = [0o100644, 0o100755];

/// The vault's git state as the approvals' [`HandMoveCheck`]: what `authorize` asks, for
/// the one approval it authorizes, when `[approvals] accept_hand_moves` is on.
#[derive(Debug, Clone)]
pub struct GitHandMoves {
    root: PathBuf,
}

impl GitHandMoves {
    /// The check for the vault at `vault_root`.
    pub fn new(vault_root: &Path) -> Self {
        Self {
            root: vault_root.to_path_buf(),
        }
    }
}

impl HandMoveCheck for GitHandMoves {
    fn is_hand_move(&self, id: &ApprovalId) -> Result<bool, String> {
        is_hand_move(&self.root, id).map_err(|e| e.to_string())
    }
}

/// Whether `Approved/<id>.md` in the vault at `vault_root` is the owner's hand move of a
/// pending request (see the module doc). `false` in a vault without git.
pub fn is_hand_move(vault_root: &Path, id: &ApprovalId) -> Result<bool, SyncError> {
    Ok(!scan(vault_root, Some(id))?.is_empty())
}

/// Every hand move in `Approved/` of the vault at `vault_root` (see the module doc), in name
/// order. None in a vault without git.
pub fn hand_moves(vault_root: &Path) -> Result<Vec<ApprovalId>, SyncError> {
    scan(vault_root, None)
}

/// The hand moves among `only` (or among every file in `Approved/`).
fn scan(root: &Path, only: Option<&ApprovalId>) -> Result<Vec<ApprovalId>, SyncError> {
    let repo = match Repository::open(root) {
        Ok(repo) => repo,
        Err(e) if e.code() == ErrorCode::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(SyncError::git("open", root)(e)),
    };
    let Some(before) = Settled::read(&repo, root)? else {
        return Ok(Vec::new());
    };
    let candidates = match only {
        Some(id) => vec![id.clone()],
        None => approved_files(root)?,
    };
    let mut found = Vec::new();
    for id in candidates {
        if before.is_hand_move(&repo, root, &id)? {
            found.push(id);
        }
    }
    // A git operation that began meanwhile may have written files the index and `main` do
    // not show yet: then nothing here is trusted.
    match Settled::read(&repo, root)? {
        Some(after) if after.same_as(&before) => Ok(found),
        _ => Ok(Vec::new()),
    }
}

/// The ids of the plain `*.md` files in `Approved/` (none when it is no real folder).
fn approved_files(root: &Path) -> Result<Vec<ApprovalId>, SyncError> {
    let dir = root.join(APPROVED);
    if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        return Ok(Vec::new());
    }
    let mut ids = Vec::new();
    for entry in fs::read_dir(&dir).map_err(SyncError::io(&dir))? {
        let entry = entry.map_err(SyncError::io(&dir))?;
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        let name = entry.file_name();
        let stem = name.to_str().and_then(|n| n.strip_suffix(".md"));
        if let (true, Some(Ok(id))) = (is_file, stem.map(ApprovalId::new)) {
            ids.push(id);
        }
    }
    ids.sort();
    Ok(ids)
}

/// The repository at rest: `main` checked out, its tree, and the index as on disk.
struct Settled<'r> {
    head: Oid,
    tree: Tree<'r>,
    index: Index,
    /// The index file's identity: git replaces it by a rename on every write.
    index_stamp: Option<IndexStamp>,
}

/// What tells one index file from the next: inode, size and modification time.
#[derive(Debug, PartialEq, Eq)]
struct IndexStamp {
    inode: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl<'r> Settled<'r> {
    /// The repository's state, or `None` when a git operation is under way or `main` is
    /// not what is checked out (or has no commit).
    fn read(repo: &'r Repository, root: &Path) -> Result<Option<Self>, SyncError> {
        let gitx = |action| SyncError::git(action, root);
        let git_dir = repo.path();
        let busy = [CHECKOUT_JOURNAL, "index.lock", "HEAD.lock"]
            .iter()
            .any(|name| fs::symlink_metadata(git_dir.join(name)).is_ok());
        if busy || repo.state() != RepositoryState::Clean {
            return Ok(None);
        }
        let head = match repo.head() {
            Ok(head) => head,
            Err(e) if matches!(e.code(), ErrorCode::UnbornBranch | ErrorCode::NotFound) => {
                return Ok(None);
            }
            Err(e) => return Err(gitx("read HEAD")(e)),
        };
        if head.name().ok() != Some(BRANCH) {
            return Ok(None);
        }
        let commit = head.peel_to_commit().map_err(gitx("read HEAD"))?;
        let tree = commit.tree().map_err(gitx("read HEAD"))?;
        let mut index = repo.index().map_err(gitx("read the index"))?;
        // The repository object may hold an index read earlier: the file is what counts.
        index.read(true).map_err(gitx("read the index"))?;
        Ok(Some(Self {
            head: commit.id(),
            tree,
            index,
            index_stamp: index_stamp(&git_dir.join("index")),
        }))
    }

    /// Whether nothing moved between two readings.
    fn same_as(&self, other: &Self) -> bool {
        self.head == other.head && self.index_stamp == other.index_stamp
    }

    /// The rules of the module doc, for one id.
    fn is_hand_move(
        &self,
        repo: &Repository,
        root: &Path,
        id: &ApprovalId,
    ) -> Result<bool, SyncError> {
        let approved = format!("{APPROVED}/{}", id.file_name());
        let on_disk = root.join(&approved);
        if !fs::symlink_metadata(&on_disk).is_ok_and(|m| m.is_file())
            || self.tree.get_path(Path::new(&approved)).is_ok()
            || self.index.get_path(Path::new(&approved), 0).is_some()
        {
            return Ok(false);
        }
        let mut pending = Domain::ALL.into_iter().filter_map(|domain| {
            let path = format!("{PENDING_APPROVAL}/{domain}/{}", id.file_name());
            let entry = self.tree.get_path(Path::new(&path)).ok()?;
            Some((path, entry.id(), entry.filemode(), entry.kind()))
        });
        let (Some((path, blob, mode, kind)), None) = (pending.next(), pending.next()) else {
            return Ok(false);
        };
        let staged = self.index.get_path(Path::new(&path), 0);
        if kind != Some(ObjectType::Blob)
            || !REGULAR.contains(&mode)
            || staged.is_none_or(|e| e.id != blob)
            || fs::symlink_metadata(root.join(&path)).is_ok()
        {
            return Ok(false);
        }
        let bytes = match read_plain(&on_disk) {
            Ok(bytes) => bytes,
            // Moved on since (set aside, executed): not here any more.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(SyncError::io(&on_disk)(e)),
        };
        let committed = repo
            .find_blob(blob)
            .map_err(SyncError::git("read blob", root))?;
        Ok(bytes == committed.content())
    }
}

/// The index file's identity, if it exists.
fn index_stamp(path: &Path) -> Option<IndexStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(path).ok()?;
    Some(IndexStamp {
        inode: meta.ino(),
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

/// A plain file's bytes; a link (or anything else) in its place is refused, even one put
/// there between the look and the read (the opened file must be the one looked at).
fn read_plain(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::{io::Read, os::unix::fs::MetadataExt};
    let looked = fs::symlink_metadata(path)?;
    let mut file = fs::File::open(path)?;
    let opened = file.metadata()?;
    if !looked.is_file() || (looked.dev(), looked.ino()) != (opened.dev(), opened.ino()) {
        return Err(std::io::Error::new(
            ErrorKind::InvalidInput,
            "not a plain file",
        ));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests;
