//! The checkout journal: what a checkout is about to write, so that a checkout a crash (or
//! an error) interrupted can be undone by the next operation on the replica.
//!
//! libgit2 writes each file of a checkout in place: it truncates the file, then writes the
//! new content. A crash in between leaves the file empty or cut short, while `main` still
//! names the commit before (`main` moves only after the files are flushed). Left alone, the
//! next commit would record the cut file as a change made here. So before a checkout the
//! replica writes `.git/aie-checkout.json`, durably: the commit `main` is at, the commit
//! being checked out, and every path that differs between the two. The journal is removed
//! once `main` and the index follow the new commit. Finding it means the checkout did not
//! finish; [`Replica::finish_interrupted_checkout`] then puts the listed files back as
//! `main` records them (`specs/sync.md`, "Durability"), and the next sync checks the new
//! commit out again.

use std::{
    fs::{self, File},
    io::{self, Write},
    path::{Path, PathBuf},
};

use aie_shared::vault::Vault;
use git2::{Oid, Repository, Tree};
use serde::{Deserialize, Serialize};

use super::{Git, Replica};
use crate::sync::{
    SyncError,
    repo::{BRANCH, ref_target},
    report::SyncReport,
};

/// The journal's file name in the repository's `.git/` folder (never in the working tree,
/// so never committed).
const JOURNAL: &str = "aie-checkout.json";

/// A checkout in progress, as written before it starts.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct CheckoutJournal {
    /// The commit `main` was at (none in a repository without commits).
    from: Option<String>,
    /// The commit being checked out.
    to: String,
    /// Every vault path that differs between the two: all the checkout may write.
    paths: Vec<String>,
}

impl CheckoutJournal {
    /// Writes the journal of a checkout from `from` to `to`, durably, before it starts.
    pub(super) fn begin(
        repo: &Repository,
        from: Option<Oid>,
        to: Oid,
        paths: Vec<String>,
    ) -> io::Result<()> {
        let journal = Self {
            from: from.map(|oid| oid.to_string()),
            to: to.to_string(),
            paths,
        };
        let bytes = serde_json::to_vec(&journal).map_err(io::Error::other)?;
        let path = journal_path(repo);
        let temp = path.with_extension("json.tmp");
        let mut file = File::create(&temp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&temp, &path)?;
        File::open(repo.path())?.sync_all()
    }

    /// The journal of an unfinished checkout, if there is one.
    pub(super) fn read(repo: &Repository) -> io::Result<Option<Self>> {
        match fs::read(journal_path(repo)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes the journal: the checkout finished, or was undone.
    pub(super) fn end(repo: &Repository) -> io::Result<()> {
        match fs::remove_file(journal_path(repo)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// `.git/aie-checkout.json`.
fn journal_path(repo: &Repository) -> PathBuf {
    repo.path().join(JOURNAL)
}

/// The paths whose content differs between two trees (`from` none: every path of `to`).
pub(super) fn changed_paths(
    repo: &Repository,
    from: Option<&Tree<'_>>,
    to: &Tree<'_>,
) -> Result<Vec<String>, git2::Error> {
    let diff = repo.diff_tree_to_tree(from, Some(to), None)?;
    let mut paths = Vec::new();
    for delta in diff.deltas() {
        for file in [delta.old_file(), delta.new_file()] {
            if let Some(path) = file.path().and_then(Path::to_str) {
                paths.push(path.to_owned());
            }
        }
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

impl Replica {
    /// Undoes a checkout that did not finish (see the module's documentation); does nothing
    /// without a journal.
    ///
    /// - `main` at the new commit: the files were flushed before it moved; only the index
    ///   may lag, and is brought up to date.
    /// - `main` at the old commit: each listed file is put back as that commit records it.
    ///   A file that holds the old version, the new one, a beginning of the new one (cut off
    ///   by the crash) or nothing is simply restored: all of that is in git. A file that
    ///   holds anything else was changed meanwhile, and is kept as a conflict copy before
    ///   the old version takes its place.
    ///
    /// The restored files are flushed before the journal goes, so a crash here only means
    /// doing it again.
    pub(super) fn finish_interrupted_checkout(
        &self,
        git: &mut Git,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let root = self.vault.root();
        let repo = &git.repo;
        let journal_error = |e| SyncError::io(&repo.path().join(JOURNAL))(e);
        let Some(journal) = CheckoutJournal::read(repo).map_err(journal_error)? else {
            return Ok(());
        };
        let gitx = |action| SyncError::git(action, root);
        let oid = |hex: &str| Oid::from_str(hex).map_err(gitx("checkout journal"));
        let to = oid(&journal.to)?;
        let from = journal.from.as_deref().map(oid).transpose()?;
        let head = ref_target(repo, BRANCH);
        if head == Some(to) {
            let tree = repo
                .find_commit(to)
                .and_then(|c| c.tree())
                .map_err(gitx("checkout journal"))?;
            let mut index = repo.index().map_err(gitx("index"))?;
            index.read_tree(&tree).map_err(gitx("index"))?;
            index.write().map_err(gitx("index write"))?;
            return CheckoutJournal::end(repo).map_err(journal_error);
        }
        if head != from {
            // `main` moved elsewhere since (by hand): the journal no longer describes it.
            tracing::warn!(journal = ?journal, "stale checkout journal dropped");
            return CheckoutJournal::end(repo).map_err(journal_error);
        }
        let old_tree = match from {
            Some(commit) => repo.find_commit(commit).and_then(|c| c.tree()),
            None => repo
                .treebuilder(None)
                .and_then(|b| b.write())
                .and_then(|t| repo.find_tree(t)),
        }
        .map_err(gitx("checkout journal"))?;
        // The new commit's objects may not have reached the disk before the crash.
        let new_tree = repo.find_commit(to).and_then(|c| c.tree()).ok();
        let content = |tree: &Tree<'_>, rel: &str| {
            tree.get_path(Path::new(rel))
                .and_then(|entry| repo.find_blob(entry.id()))
                .map(|blob| blob.content().to_vec())
                .ok()
        };
        let mut kept = Vec::new();
        for rel in &journal.paths {
            let local = root.join(rel);
            let working = fs::symlink_metadata(&local)
                .is_ok_and(|m| m.is_file())
                .then(|| fs::read(&local))
                .transpose()
                .map_err(SyncError::io(&local))?;
            let old = content(&old_tree, rel);
            if working == old {
                continue;
            }
            let new = new_tree.as_ref().and_then(|tree| content(tree, rel));
            // Nothing, or a beginning of the new version (the checkout's write, cut off) or
            // of the old one (an earlier recovery's, cut off): nothing but what git holds.
            let from_checkout = working.as_ref().is_none_or(|working| {
                new.as_ref().is_some_and(|new| new.starts_with(working))
                    || old.as_ref().is_some_and(|old| old.starts_with(working))
            });
            if from_checkout {
                restore(&self.vault, &local, old.as_deref())?;
            } else if let Some(copy) = self.set_aside(repo, &old_tree, Path::new(rel))? {
                kept.push(format!("{rel} (kept as {copy})"));
            }
        }
        let mut index = repo.index().map_err(gitx("index"))?;
        index.read_tree(&old_tree).map_err(gitx("index"))?;
        index.write().map_err(gitx("index write"))?;
        (self.flush)(&self.vault)?;
        CheckoutJournal::end(repo).map_err(journal_error)?;
        let mut line = format!(
            "a sync was interrupted while writing {} file(s); they are back as this replica's \
             last commit records them, and the next sync brings the newer versions",
            journal.paths.len()
        );
        if !kept.is_empty() {
            line.push_str(&format!(
                "; changed meanwhile, so kept: {}",
                kept.join(", ")
            ));
        }
        report.conflicts.push(line);
        Ok(())
    }
}

/// Puts `old` back at `local` through a hidden temporary file and a rename, so a reader
/// never sees it half-written, or removes `local` when `old` is none. Not synced: the caller
/// flushes before anything depends on it.
pub(super) fn restore(vault: &Vault, local: &Path, old: Option<&[u8]>) -> Result<(), SyncError> {
    // Never through a link: a folder on the way that is a link (whatever put it there) is
    // refused, so nothing is written or removed outside the vault.
    match old {
        Some(bytes) => {
            if let Some(dir) = local.parent() {
                vault.make_dir(dir).map_err(SyncError::io(dir))?;
            }
            vault
                .write_replacing_unflushed(local, bytes)
                .map_err(SyncError::io(local))
        }
        None => {
            if let Some(dir) = local.parent()
                && dir != vault.root()
                && !aie_shared::vault::nofollow::is_plain_dir(vault.root(), dir)
            {
                if fs::symlink_metadata(dir).is_err() {
                    return Ok(()); // Gone already: nothing to remove.
                }
                return Err(SyncError::io(local)(io::Error::other(format!(
                    "`{}` is a link or not a folder; aie never writes through links",
                    dir.strip_prefix(vault.root()).unwrap_or(dir).display()
                ))));
            }
            match fs::remove_file(local) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(SyncError::io(local)(e)),
                _ => Ok(()),
            }
        }
    }
}
