//! Staging the working tree for a commit, file by file, leaving secrets out.
//!
//! The changes are listed first ([`working_changes`]) so the caller can stamp the claims among
//! them before they are staged ([`Changes::held`]).
//!
//! Never a blind add-all: each new or changed file is checked by name (the contract's
//! patterns, whatever `.gitignore` says) and by content (key and token shapes) before it is
//! staged, from the very bytes that were scanned. A blocked file is reported and left out of
//! the commit, and stays on disk untouched. libgit2's status (with the index's stat cache)
//! finds what changed, so a sync of a 10,000-note vault reads only the changed files.

use std::{collections::BTreeSet, fs, io, path::Path};

use aie_shared::vault::{AgentName, TaskId};
use git2::{Index, IndexEntry, IndexTime, Oid, Repository, StatusOptions, StatusShow};

use super::{
    SyncError,
    paths::classify,
    report::Blocked,
    secrets::{secret_content_reason, secret_name_reason},
};

/// The index after staging: its tree, and the files left out.
#[derive(Debug)]
pub(crate) struct Staging {
    /// The tree the index now describes.
    pub(crate) tree: Oid,
    /// Files held back, with the reason.
    pub(crate) blocked: Vec<Blocked>,
}

/// What happened to one path.
enum Staged {
    /// Its content is in the index.
    Added,
    /// It is gone from disk, so from the index too (unless the deletion is held back).
    Deleted,
    /// Held back: the reason.
    Blocked(String),
    /// Nothing to stage (not a regular file, or a write in flight).
    Skipped,
}

/// The working tree's changes since the index, ignored files included: what
/// [`stage_changes`] stages, listed first so that claims can be stamped before
/// ([`Changes::held`]).
pub(crate) struct Changes(Vec<(Result<String, String>, git2::Status)>);

/// Lists every change in the working tree (libgit2's status, trusting the index's stat cache).
pub(crate) fn working_changes(repo: &Repository, root: &Path) -> Result<Changes, SyncError> {
    let mut options = StatusOptions::new();
    options
        .show(StatusShow::Workdir)
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        // Ignored files are listed too, so secrets that `.gitignore` hides are still reported.
        .include_ignored(true)
        .recurse_ignored_dirs(true)
        .exclude_submodules(true);
    let changes = repo
        .statuses(Some(&mut options))
        .map_err(SyncError::git("status", root))?
        .iter()
        .map(|entry| {
            let path = std::str::from_utf8(entry.path_bytes())
                .map(str::to_owned)
                .map_err(|_| String::from_utf8_lossy(entry.path_bytes()).into_owned());
            (path, entry.status())
        })
        .collect();
    Ok(Changes(changes))
}

impl Changes {
    /// The new or changed task files in agents' `In_Progress/` folders: the claims (and
    /// renewals) made since the last commit, whose stamps the commit should carry.
    pub(crate) fn held(&self) -> Vec<(AgentName, TaskId)> {
        self.0
            .iter()
            .filter(|(_, status)| status.is_wt_new() || status.is_wt_modified())
            .filter_map(|(path, _)| classify(path.as_deref().ok()?))
            .filter_map(|file| {
                let agent = file.state.holder()?.clone();
                Some((agent, TaskId::new(file.id).ok()?))
            })
            .collect()
    }
}

/// Stages every change listed, each from the file as it is now.
pub(crate) fn stage_changes(
    repo: &Repository,
    root: &Path,
    changes: Changes,
) -> Result<Staging, SyncError> {
    let mut index = repo.index().map_err(SyncError::git("index", root))?;
    let mut pass = Pass::default();
    for (path, status) in changes.0 {
        let path = match path {
            Ok(path) => path,
            Err(lossy) => {
                pass.block(lossy, "file name is not UTF-8, which a vault path never is");
                continue;
            }
        };
        if status.is_ignored() {
            // Ignored and not a secret (an Obsidian workspace file): ignored quietly.
            if let Some(reason) = secret_name_reason(&path) {
                pass.block(path, &reason);
            }
            continue;
        }
        if status.is_wt_new() || status.is_wt_modified() || status.is_wt_typechange() {
            pass.stage(&mut index, root, path)?;
        } else if status.is_wt_deleted() {
            pass.deleted.push(path);
        }
    }
    pass.finish(&mut index, root)
}

/// Stages just these paths (a claim's source and destination), so a claim in a large vault
/// does not scan it all.
pub(crate) fn stage_paths(
    repo: &Repository,
    root: &Path,
    paths: &[String],
) -> Result<Staging, SyncError> {
    let mut index = repo.index().map_err(SyncError::git("index", root))?;
    let mut pass = Pass::default();
    for path in paths {
        let tracked = index.get_path(Path::new(path), 0).is_some();
        if tracked || fs::symlink_metadata(root.join(path)).is_ok() {
            pass.stage(&mut index, root, path.clone())?;
        }
    }
    pass.finish(&mut index, root)
}

/// One staging pass: what was blocked, and the deletions to apply at the end.
#[derive(Default)]
struct Pass {
    /// Files held back.
    blocked: Vec<Blocked>,
    /// Paths gone from disk.
    deleted: Vec<String>,
}

impl Pass {
    /// Records a blocked file.
    fn block(&mut self, path: String, reason: &str) {
        self.blocked.push(Blocked {
            path,
            reason: reason.to_owned(),
        });
    }

    /// Stages one path, or records why not.
    fn stage(&mut self, index: &mut Index, root: &Path, path: String) -> Result<(), SyncError> {
        match stage_file(index, root, &path)? {
            Staged::Added | Staged::Skipped => {}
            Staged::Deleted => self.deleted.push(path),
            Staged::Blocked(reason) => self.block(path, &reason),
        }
        Ok(())
    }

    /// Applies the deletions and writes the index; returns its tree.
    ///
    /// A task moved into a blocked file must not become a deletion in the commit (the remote
    /// would lose the task), so deletions of a state file whose id is blocked elsewhere are
    /// held back too.
    fn finish(mut self, index: &mut Index, root: &Path) -> Result<Staging, SyncError> {
        let git = |action| SyncError::git(action, root);
        let blocked_ids: BTreeSet<_> = self
            .blocked
            .iter()
            .filter_map(|b| classify(&b.path))
            .map(|f| f.key())
            .collect();
        for path in &self.deleted {
            if classify(path).is_some_and(|f| blocked_ids.contains(&f.key())) {
                continue;
            }
            if index.get_path(Path::new(path), 0).is_some() {
                index.remove_path(Path::new(path)).map_err(git("index"))?;
            }
        }
        index.write().map_err(git("index write"))?;
        let tree = index.write_tree().map_err(git("write-tree"))?;
        self.blocked.sort_by(|a, b| a.path.cmp(&b.path));
        self.blocked.dedup();
        Ok(Staging {
            tree,
            blocked: self.blocked,
        })
    }
}

/// Checks and stages one vault-relative path from disk.
fn stage_file(index: &mut Index, root: &Path, rel: &str) -> Result<Staged, SyncError> {
    if let Some(reason) = secret_name_reason(rel) {
        return Ok(Staged::Blocked(reason));
    }
    let file_name = rel.rsplit('/').next().unwrap_or(rel);
    if file_name.starts_with('.') && file_name.ends_with(".tmp") {
        // A vault write in flight (`.<name>.<pid>.<n>.tmp`): its final name comes next round.
        return Ok(Staged::Skipped);
    }
    let path = root.join(rel);
    let meta = match fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Staged::Deleted),
        Err(e) => return Err(SyncError::io(&path)(e)),
    };
    if meta.file_type().is_symlink() {
        return Ok(Staged::Blocked(
            "symbolic link; the vault never syncs links".to_owned(),
        ));
    }
    if meta.is_dir() {
        // Was a file, is now a folder: the file is gone; the folder's files come one by one.
        return Ok(Staged::Deleted);
    }
    if !meta.is_file() {
        return Ok(Staged::Skipped);
    }
    // The stat is taken before the read: if the file changes after it, the next status
    // sees a newer stat and looks again.
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Staged::Deleted),
        Err(e) => return Err(SyncError::io(&path)(e)),
    };
    if let Some(reason) = secret_content_reason(&bytes) {
        return Ok(Staged::Blocked(format!("content looks like {reason}")));
    }
    index
        .add_frombuffer(&index_entry(&meta, rel), &bytes)
        .map_err(SyncError::git("add", root))?;
    Ok(Staged::Added)
}

/// An index entry carrying the file's stat, so the next status can trust it unchanged
/// without reading it again. Git's index fields are 32 bits wide; git truncates the same way.
#[cfg(unix)]
fn index_entry(meta: &fs::Metadata, rel: &str) -> IndexEntry {
    use std::os::unix::fs::MetadataExt;
    let mode = if meta.mode() & 0o111 != 0 {
        0o100_755
    } else {
        0o100_644
    };
    IndexEntry {
        ctime: IndexTime::new(meta.ctime() as i32, meta.ctime_nsec() as u32),
        mtime: IndexTime::new(meta.mtime() as i32, meta.mtime_nsec() as u32),
        dev: meta.dev() as u32,
        ino: meta.ino() as u32,
        mode,
        uid: meta.uid(),
        gid: meta.gid(),
        file_size: meta.len() as u32,
        id: Oid::ZERO_SHA1,
        flags: 0,
        flags_extended: 0,
        path: rel.as_bytes().to_vec(),
    }
}

/// Elsewhere no stat is kept, so status reads the file each time.
#[cfg(not(unix))]
fn index_entry(meta: &fs::Metadata, rel: &str) -> IndexEntry {
    let zero = IndexTime::new(0, 0);
    IndexEntry {
        ctime: zero,
        mtime: zero,
        dev: 0,
        ino: 0,
        mode: 0o100_644,
        uid: 0,
        gid: 0,
        file_size: meta.len() as u32,
        id: Oid::ZERO_SHA1,
        flags: 0,
        flags_extended: 0,
        path: rel.as_bytes().to_vec(),
    }
}
