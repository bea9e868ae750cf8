//! Paths that never go through a link: the one guard every write, move, append and quoting
//! read of the vault passes.
//!
//! A synced vault is untrusted input, and a symbolic link in it (committed by the remote,
//! left by an older build, made by hand) could point `Updates`, `In_Progress/<agent>` or a
//! day's log file anywhere on this machine: a write would land outside the vault, a read
//! would quote a local file into `Dashboard.md` and on to the remote. So before it touches a
//! path the vault looks at each part of it below the root with `lstat`, and refuses when one
//! is a link, a folder on the way is no folder, or the file itself is no plain file; the
//! final file is then opened with `O_NOFOLLOW` (or created with `O_EXCL`, which never
//! follows), and renames never follow their last part. The vault's root itself is the
//! owner's choice and may be a link.
//!
//! The look and the write are two steps: a process on this machine that swaps a folder for a
//! link between them is not caught (the final file's `O_NOFOLLOW` still is). What this
//! guards against is a link already in the tree, whatever put it there.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read},
    path::{Component, Path, PathBuf},
};

use super::{Vault, fsio};

/// What is wrong with a refused part of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It is a symbolic link.
    Link,
    /// A folder was needed and it is something else (a file, a device, a socket).
    NotAFolder,
    /// A plain file was needed and it is something else (a folder, a device, a socket).
    NotAFile,
    /// The path does not lie below the vault's root (or climbs out with `..`).
    Outside,
}

impl Refusal {
    /// The rest of the sentence after the path.
    fn describe(self) -> &'static str {
        match self {
            Refusal::Link => "is a link; aie never writes through links",
            Refusal::NotAFolder => "is not a plain folder; aie writes only into plain folders",
            Refusal::NotAFile => "is not a plain file; aie writes only plain files",
            Refusal::Outside => "is not inside the vault; aie writes only inside it",
        }
    }
}

/// A path the vault refused to write, move, append to or quote: the first part that is a
/// link or not what it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{path}` {}", reason.describe())]
pub struct PathRefused {
    /// The refused part, relative to the vault root with `/` separators.
    pub path: String,
    /// What is wrong with it.
    pub reason: Refusal,
}

/// The refusal an I/O error carries, when the guard made it.
pub fn refusal(error: &io::Error) -> Option<&PathRefused> {
    error
        .get_ref()
        .and_then(|e| e.downcast_ref::<PathRefused>())
}

/// What the last part of a checked path must be, if it exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Last {
    File,
    Folder,
}

/// `path` relative to `root`, `/`-separated, for messages.
fn relative(root: &Path, path: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(inner) => inner
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/"),
        Err(_) => path.display().to_string(),
    }
}

/// The I/O error for a refused part.
fn refused(root: &Path, part: &Path, reason: Refusal) -> io::Error {
    io::Error::other(PathRefused {
        path: relative(root, part),
        reason,
    })
}

/// Looks at every part of `path` below `root` without following a link: each folder on the
/// way must be a real folder, and the last part (if it exists) a plain file or a real
/// folder as `last` says. A missing part ends the look: there is nothing there to follow,
/// and whatever creates it does so without following either.
fn check_beneath(root: &Path, path: &Path, last: Last) -> io::Result<()> {
    let Ok(inner) = path.strip_prefix(root) else {
        return Err(refused(root, path, Refusal::Outside));
    };
    let parts: Vec<Component<'_>> = inner.components().collect();
    if parts.is_empty() && last == Last::File {
        return Err(refused(root, path, Refusal::NotAFile));
    }
    let mut at = root.to_path_buf();
    for (index, part) in parts.iter().enumerate() {
        let Component::Normal(name) = part else {
            return Err(refused(root, path, Refusal::Outside));
        };
        at.push(name);
        let kind = match fs::symlink_metadata(&at) {
            Ok(meta) => meta.file_type(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let wanted_file = index + 1 == parts.len() && last == Last::File;
        let reason = if kind.is_symlink() {
            Some(Refusal::Link)
        } else if wanted_file {
            (!kind.is_file()).then_some(Refusal::NotAFile)
        } else {
            (!kind.is_dir()).then_some(Refusal::NotAFolder)
        };
        if let Some(reason) = reason {
            return Err(refused(root, &at, reason));
        }
    }
    Ok(())
}

/// Whether `dir` exists below `root` as a real folder, reached through real folders only.
pub fn is_plain_dir(root: &Path, dir: &Path) -> bool {
    // The root itself may be a link (the owner's choice); only what lies below it may not.
    let kind = if dir == root {
        fs::metadata(dir)
    } else {
        fs::symlink_metadata(dir)
    };
    check_beneath(root, dir, Last::Folder).is_ok() && kind.is_ok_and(|m| m.is_dir())
}

/// Whether `path` exists below `root` as a plain file in real folders.
pub fn is_plain_file(root: &Path, path: &Path) -> bool {
    check_beneath(root, path, Last::File).is_ok()
        && fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

/// The visible (no leading dot) plain files directly in `dir` whose names end in
/// `extension`, sorted; none when `dir` is missing or reached through a link. Links inside
/// are skipped too: they are no file of the vault.
pub fn plain_files(root: &Path, dir: &Path, extension: &str) -> io::Result<Vec<PathBuf>> {
    if !is_plain_dir(root, dir) {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // The entry's own type, from the directory: a link is a link here, never its target.
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && !name.starts_with('.') && name.ends_with(extension) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// The real subfolders (no links) directly in `dir`, sorted; none when `dir` is missing or
/// reached through a link.
pub fn plain_subfolders(root: &Path, dir: &Path) -> io::Result<Vec<PathBuf>> {
    if !is_plain_dir(root, dir) {
        return Ok(Vec::new());
    }
    let mut dirs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Reads a plain file below `root`, refusing a link anywhere on the way or at the file.
pub fn read_plain(root: &Path, path: &Path) -> io::Result<Vec<u8>> {
    check_beneath(root, path, Last::File)?;
    let mut file = no_follow(OpenOptions::new().read(true)).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(refused(root, path, Refusal::NotAFile));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Adds `O_NOFOLLOW`: opening a link fails (`ELOOP`) instead of opening its target.
#[cfg(unix)]
fn no_follow(options: &mut OpenOptions) -> &mut OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    options.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits().cast_signed())
}

/// No `O_NOFOLLOW` here: the `lstat` look before the open is the whole guard.
#[cfg(not(unix))]
fn no_follow(options: &mut OpenOptions) -> &mut OpenOptions {
    options
}

impl Vault {
    /// Refuses `path`, a file about to be written, created, replaced or moved, when a part
    /// of it below the root is a link, a folder on the way is no folder, or the file exists
    /// and is no plain file.
    pub fn check_file_path(&self, path: &Path) -> io::Result<()> {
        check_beneath(&self.root, path, Last::File)
    }

    /// Makes `dir` (inside the vault) and any missing parents, refusing to make anything
    /// through a link: every existing part must be a real folder.
    pub fn make_dir(&self, dir: &Path) -> io::Result<()> {
        let Ok(inner) = dir.strip_prefix(&self.root) else {
            return Err(refused(&self.root, dir, Refusal::Outside));
        };
        let mut at = self.root.clone();
        for part in inner.components() {
            let Component::Normal(name) = part else {
                return Err(refused(&self.root, dir, Refusal::Outside));
            };
            at.push(name);
            let kind = match fs::symlink_metadata(&at) {
                Ok(meta) => meta.file_type(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match fs::create_dir(&at) {
                        // Made meanwhile by someone else: looked at below all the same.
                        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                        _ => fs::symlink_metadata(&at)?.file_type(),
                    }
                }
                Err(e) => return Err(e),
            };
            if kind.is_symlink() {
                return Err(refused(&self.root, &at, Refusal::Link));
            }
            if !kind.is_dir() {
                return Err(refused(&self.root, &at, Refusal::NotAFolder));
            }
        }
        Ok(())
    }

    /// Creates `path` with `bytes`, whole or not at all, never replacing a file
    /// (`AlreadyExists`) and never through a link.
    pub fn write_new_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.check_file_path(path)?;
        fsio::write_new(path, bytes)
    }

    /// Replaces `path` with `bytes` atomically and durably, never through a link: a link at
    /// `path` is refused, not replaced.
    pub fn write_replacing_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.check_file_path(path)?;
        fsio::write_replacing(path, bytes)
    }

    /// Replaces `path` with `bytes` atomically (a reader sees the old file or the new one),
    /// never through a link; the new content is on disk before the rename, and the rename is
    /// durable at the next [`Vault::flush`], which the sync makes before it commits.
    pub fn write_replacing_unflushed(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.check_file_path(path)?;
        fsio::write_replacing_unflushed(path, bytes)
    }

    /// Writes `bytes` to a fresh temporary file beside `path` (not synced; see
    /// `fsio::write_temp_unsynced`), never through a link; returns its name.
    pub(crate) fn write_temp_beside(&self, path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
        self.check_file_path(path)?;
        fsio::write_temp_unsynced(path, bytes)
    }

    /// Moves a plain file `from` to `to` without replacing anything (`AlreadyExists`; gone:
    /// `NotFound`), refusing when either path goes through a link or `from` is no plain file.
    pub fn move_file(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check_file_path(from)?;
        self.check_file_path(to)?;
        fsio::move_no_replace(from, to)
    }

    /// Opens `path` for appending, creating it if missing, never through a link.
    pub fn open_append(&self, path: &Path) -> io::Result<File> {
        self.check_file_path(path)?;
        let file = no_follow(OpenOptions::new().create(true).append(true)).open(path)?;
        if !file.metadata()?.is_file() {
            return Err(refused(&self.root, path, Refusal::NotAFile));
        }
        Ok(file)
    }

    /// Reads a plain file of the vault, refusing a link anywhere on the way or at the file:
    /// what is quoted to the owner or to the remote comes from the vault and nowhere else.
    pub fn read_plain_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        read_plain(&self.root, path)
    }
}
