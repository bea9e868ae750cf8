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
    cell::OnceCell,
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

/// The hand moves among `only` (or among every file in `Approved/`). The cheap checks
/// (the files, `main`'s tree) come first; the index, read whole, only for a file that
/// passes them.
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
    if found.is_empty() {
        return Ok(found);
    }
    // A git operation that began meanwhile may have written files the index and `main` do
    // not show yet: then nothing here is trusted.
    match At::now(&repo, root)? {
        Some(after) if after == before.at => Ok(found),
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

/// Where a repository at rest stands: `main`'s commit, checked out, and the index file's
/// identity (git replaces the file by a rename on every write). Two equal readings mean
/// nothing moved in between.
#[derive(Debug, PartialEq, Eq)]
struct At {
    head: Oid,
    index_stamp: Option<IndexStamp>,
}

impl At {
    /// Where the repository stands, or `None` when a git operation is under way or `main`
    /// is not what is checked out (or has no commit).
    fn now(repo: &Repository, root: &Path) -> Result<Option<Self>, SyncError> {
        let git_dir = repo.path();
        let busy = [CHECKOUT_JOURNAL, "index.lock", "HEAD.lock"]
            .iter()
            .any(|name| fs::symlink_metadata(git_dir.join(name)).is_ok());
        if busy || repo.state() != RepositoryState::Clean {
            return Ok(None);
        }
        // Before `main` is read: an index written after this shows as another stamp.
        let index_stamp = index_stamp(&git_dir.join("index"));
        let head = match repo.head() {
            Ok(head) => head,
            Err(e) if matches!(e.code(), ErrorCode::UnbornBranch | ErrorCode::NotFound) => {
                return Ok(None);
            }
            Err(e) => return Err(SyncError::git("read HEAD", root)(e)),
        };
        if head.name().ok() != Some(BRANCH) {
            return Ok(None);
        }
        let Some(head) = head.target() else {
            return Ok(None);
        };
        Ok(Some(Self { head, index_stamp }))
    }
}

/// The repository at rest: where it stands, `main`'s tree, and (read when first needed)
/// the index as on disk.
struct Settled<'r> {
    at: At,
    tree: Tree<'r>,
    /// `main`'s `Approved/`, parsed once (libgit2 does not cache a large tree, so a lookup
    /// by path would parse it again each time).
    approved: Option<Tree<'r>>,
    index: OnceCell<Index>,
}

/// What tells one index file from the next: inode, size and modification time.
#[derive(Debug, PartialEq, Eq)]
struct IndexStamp {
    inode: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl<'r> Settled<'r> {
    /// The repository at rest, or `None` when a git operation is under way or `main` is not
    /// what is checked out (or has no commit).
    fn read(repo: &'r Repository, root: &Path) -> Result<Option<Self>, SyncError> {
        let gitx = |action| SyncError::git(action, root);
        let Some(at) = At::now(repo, root)? else {
            return Ok(None);
        };
        let tree = repo
            .find_commit(at.head)
            .and_then(|commit| commit.tree())
            .map_err(gitx("read HEAD"))?;
        let approved = match tree.get_name(APPROVED) {
            Some(entry) if entry.kind() == Some(ObjectType::Tree) => {
                Some(repo.find_tree(entry.id()).map_err(gitx("read HEAD"))?)
            }
            _ => None,
        };
        Ok(Some(Self {
            at,
            tree,
            approved,
            index: OnceCell::new(),
        }))
    }

    /// The index as on disk, read once.
    fn index(&self, repo: &Repository, root: &Path) -> Result<&Index, SyncError> {
        if let Some(index) = self.index.get() {
            return Ok(index);
        }
        let gitx = |action| SyncError::git(action, root);
        let mut index = repo.index().map_err(gitx("read the index"))?;
        // The repository object may hold an index read earlier: the file is what counts.
        index.read(true).map_err(gitx("read the index"))?;
        Ok(self.index.get_or_init(|| index))
    }

    /// The rules of the module doc, for one id, cheapest first.
    fn is_hand_move(
        &self,
        repo: &Repository,
        root: &Path,
        id: &ApprovalId,
    ) -> Result<bool, SyncError> {
        let name = id.file_name();
        let on_disk = root.join(APPROVED).join(&name);
        let committed = self
            .approved
            .as_ref()
            .is_some_and(|tree| tree.get_name(&name).is_some());
        if committed || !fs::symlink_metadata(&on_disk).is_ok_and(|m| m.is_file()) {
            return Ok(false);
        }
        let mut pending = Domain::ALL.into_iter().filter_map(|domain| {
            let path = format!("{PENDING_APPROVAL}/{domain}/{name}");
            let entry = self.tree.get_path(Path::new(&path)).ok()?;
            Some((path, entry.id(), entry.filemode(), entry.kind()))
        });
        let (Some((path, blob, mode, kind)), None) = (pending.next(), pending.next()) else {
            return Ok(false);
        };
        if kind != Some(ObjectType::Blob)
            || !REGULAR.contains(&mode)
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
        if bytes != committed.content() {
            return Ok(false);
        }
        let index = self.index(repo, root)?;
        let approved = format!("{APPROVED}/{name}");
        let staged = index.get_path(Path::new(&path), 0);
        Ok(index.get_path(Path::new(&approved), 0).is_none()
            && staged.is_some_and(|e| e.id == blob))
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
