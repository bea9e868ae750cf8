//! The filesystem primitives the vault's guarantees rest on: a move that never replaces, and
//! writes that never leave a half-written file behind.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

/// Marks the temporary files this module writes (`.<name>.<pid>.<n>.tmp`): hidden from
/// listings by the leading dot, and recognisable by `check` if a crash leaves one behind.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

/// Moves `from` to `to`, failing with `AlreadyExists` rather than replacing `to`, and with
/// `NotFound` when `from` is gone (another agent moved it first).
///
/// Uses `renameat2(RENAME_NOREPLACE)`, one atomic step; where the filesystem does not
/// support the flag, falls back to [`link_then_unlink`].
pub(crate) fn move_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    match rename_no_replace(from, to) {
        Err(e) if e.kind() == io::ErrorKind::Unsupported => link_then_unlink(from, to),
        other => other,
    }
}

/// `renameat2(RENAME_NOREPLACE)`; `Unsupported` when this filesystem or kernel lacks the flag.
#[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    rename_with(from, to, rustix::fs::RenameFlags::NOREPLACE)
}

/// No atomic no-replace rename on this platform: always the fallback.
#[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
fn rename_no_replace(_from: &Path, _to: &Path) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// `renameat2` with `flags` (macOS: `renamex_np`); `Unsupported` when the filesystem or
/// kernel lacks the flag.
#[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
fn rename_with(from: &Path, to: &Path, flags: rustix::fs::RenameFlags) -> io::Result<()> {
    use rustix::{
        fs::{CWD, renameat_with},
        io::Errno,
    };
    match renameat_with(CWD, from, CWD, to, flags) {
        Ok(()) => Ok(()),
        // Linux answers EINVAL when the filesystem lacks the flag, very old kernels ENOSYS,
        // macOS ENOTSUP: none of these is a refusal, so the caller falls back.
        Err(e) if e == Errno::INVAL || e == Errno::NOSYS || e == Errno::NOTSUP => {
            Err(io::ErrorKind::Unsupported.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// The fallback move: hard-link `to` (which refuses an existing name), then unlink `from`.
///
/// Of several movers of one source, each may create its own link, but only one unlink of the
/// source succeeds; the others see `NotFound`, remove their link and lose. Between link and
/// unlink the file is briefly visible at both names, which `check` would report as a duplicate.
pub(crate) fn link_then_unlink(from: &Path, to: &Path) -> io::Result<()> {
    fs::hard_link(from, to)?;
    match fs::remove_file(from) {
        Ok(()) => Ok(()),
        Err(e) => {
            // We lost (or cannot finish): take back our link so the task has one home.
            // If removing our own fresh link fails too there is nothing safer to do; the
            // first error is the one the caller can act on.
            let _ = fs::remove_file(to);
            Err(e)
        }
    }
}

/// Replaces `path` with `bytes` atomically: a reader sees the old file or the new one, never
/// a mix, and after a crash the file is one or the other.
///
/// Only for a file the caller owns (its own `In_Progress/<agent>/` file), since it replaces.
pub(crate) fn write_replacing(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = write_temp(path, bytes)?;
    // Replacing is the point here: std's rename is the atomic replace.
    if let Err(e) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    sync_parent(path)
}

/// Replaces `path` with `bytes` like [`write_replacing`], but leaves the durability of the
/// new name to the next [`flush_filesystem`]: one data sync instead of two syncs.
///
/// The new content is on disk before the rename is issued, so after a crash the file is
/// whole, the old version or the new one, never empty or torn; only which of the two is
/// left open until the flush. For the vault's task files, whose every rename the sync
/// flushes before git records it (`specs/vault.md`, "Durability").
pub(crate) fn write_replacing_unflushed(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = write_temp(path, bytes)?;
    if let Err(e) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    Ok(())
}

/// Writes `bytes` to a fresh temporary file beside `path` without syncing it; returns its
/// name. The caller makes it durable ([`flush_filesystem`]) before it takes `path`'s place
/// ([`swap_in_if_unchanged`]), so many such files cost one flush together.
pub(crate) fn write_temp_unsynced(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    create_temp(path, bytes).map(|(temp, _)| temp)
}

/// Puts `temp` in `path`'s place if `path` still holds exactly `expected`; returns whether it
/// did. Either way `temp` is gone afterwards.
///
/// Never brings back a file that was moved away meanwhile, and never drops an edit made
/// since `expected` was read: on Linux the two names are swapped in one step
/// (`renameat2(RENAME_EXCHANGE)`, which fails when `path` is gone), the old content is then
/// compared and swapped back if it changed (macOS: `RENAME_SWAP`). Elsewhere the check comes
/// just before a plain rename, which leaves a window of microseconds.
pub(crate) fn swap_in_if_unchanged(temp: &Path, path: &Path, expected: &[u8]) -> io::Result<bool> {
    let swapped = match exchange(temp, path) {
        Err(e) if e.kind() == io::ErrorKind::Unsupported => {
            return replace_if_unchanged(temp, path, expected);
        }
        other => other,
    };
    let result = match swapped {
        Ok(()) => match fs::read(temp) {
            // `temp` now holds what `path` held.
            Ok(old) if old == expected => Ok(true),
            Ok(_) => exchange(temp, path).map(|()| false),
            Err(e) => exchange(temp, path).and(Err(e)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    };
    match fs::remove_file(temp) {
        Err(e) if result.is_ok() && e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => result,
    }
}

/// The fallback of [`swap_in_if_unchanged`]: compare, then rename over.
fn replace_if_unchanged(temp: &Path, path: &Path, expected: &[u8]) -> io::Result<bool> {
    let unchanged = fs::read(path).is_ok_and(|now| now == expected);
    if unchanged {
        fs::rename(temp, path)?;
    } else {
        fs::remove_file(temp)?;
    }
    Ok(unchanged)
}

/// `renameat2(RENAME_EXCHANGE)`: swaps two existing names; `Unsupported` where the
/// filesystem or kernel lacks it.
#[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    rename_with(a, b, rustix::fs::RenameFlags::EXCHANGE)
}

/// No atomic exchange on this platform.
#[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
fn exchange(_a: &Path, _b: &Path) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Sets the file's modification time (not following a link): a claim's time, kept in the
/// inode so that a claim writes no data (`specs/vault.md`, "Claims").
#[cfg(unix)]
pub(crate) fn set_modified(path: &Path, at: std::time::SystemTime) -> io::Result<()> {
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, UTIME_OMIT, utimensat};
    let since_epoch = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "time before 1970"))?;
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: since_epoch.as_secs() as _,
            tv_nsec: since_epoch.subsec_nanos() as _,
        },
    };
    utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(io::Error::from)
}

/// Sets the file's modification time, through an open handle where there is no `utimensat`.
#[cfg(not(unix))]
pub(crate) fn set_modified(path: &Path, at: std::time::SystemTime) -> io::Result<()> {
    OpenOptions::new().write(true).open(path)?.set_modified(at)
}

/// Creates `path` with `bytes`, failing with `AlreadyExists` if it exists; the file appears
/// whole or not at all.
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = write_temp(path, bytes)?;
    if let Err(e) = move_no_replace(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    sync_parent(path)
}

/// Writes `bytes` to a fresh temporary file beside `path` and flushes it to disk.
fn write_temp(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let (temp, file) = create_temp(path, bytes)?;
    // The data (and the size that makes it readable) is all a rename needs on disk first.
    if let Err(e) = file.sync_data() {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    Ok(temp)
}

/// Creates a fresh temporary file beside `path` holding `bytes`, not yet synced.
fn create_temp(path: &Path, bytes: &[u8]) -> io::Result<(PathBuf, File)> {
    let temp = temp_path(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)?;
    if let Err(e) = file.write_all(bytes) {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    Ok((temp, file))
}

/// A temporary name in the same directory as `path` (so the final rename stays on one
/// filesystem), unique per process and call.
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{n}{TEMP_SUFFIX}", std::process::id()))
}

/// Makes every change made so far under `root` durable: file contents, names and folders.
///
/// On Linux one `syncfs(2)` of the filesystem holding `root`: it also writes back whatever
/// else is pending on that filesystem, so it is cheap on a quiet disk and slower when other
/// programs have much unwritten data there. It reports a write-back error (Linux 5.8 on).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn flush_filesystem(root: &Path) -> io::Result<()> {
    let dir = File::open(root)?;
    rustix::fs::syncfs(&dir).map_err(io::Error::from)
}

/// Makes every change made so far under `root` durable: without `syncfs(2)`, every file and
/// folder under `root` is fsynced, folders after their contents; links are not followed.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn flush_filesystem(root: &Path) -> io::Result<()> {
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            flush_filesystem(&entry.path())?;
        } else if kind.is_file() {
            File::open(entry.path())?.sync_all()?;
        }
    }
    File::open(root)?.sync_all()
}

/// Flushes a directory entry change (a rename) to disk, so the file's new name survives a crash.
fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    /// The claim's move refuses to replace an existing file and leaves both untouched.
    #[test]
    fn vault_move_no_replace_never_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, "A").expect("a");
        fs::write(&b, "B").expect("b");
        let err = move_no_replace(&a, &b).expect_err("must refuse");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        let err = link_then_unlink(&a, &b).expect_err("fallback must refuse");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&a).expect("a"), b"A");
        assert_eq!(fs::read(&b).expect("b"), b"B");
        let gone = move_no_replace(&dir.path().join("missing"), &dir.path().join("c"));
        assert_eq!(gone.expect_err("missing").kind(), io::ErrorKind::NotFound);
    }

    /// Both the atomic rename and the link fallback give one source to exactly one of 16
    /// concurrent movers, and the losers leave nothing behind.
    #[test]
    fn vault_move_no_replace_one_winner() {
        type Mover = fn(&Path, &Path) -> io::Result<()>;
        for (name, mover) in [
            ("rename", move_no_replace as Mover),
            ("link", link_then_unlink as Mover),
        ] {
            for round in 0..50 {
                let dir = tempfile::tempdir().expect("tempdir");
                let src = dir.path().join("task.md");
                fs::write(&src, "body").expect("src");
                let barrier = Arc::new(Barrier::new(16));
                let handles: Vec<_> = (0..16)
                    .map(|i| {
                        let (src, barrier) = (src.clone(), barrier.clone());
                        let dest = dir.path().join(format!("dest{i}.md"));
                        std::thread::spawn(move || {
                            barrier.wait();
                            mover(&src, &dest).is_ok()
                        })
                    })
                    .collect();
                let wins = handles
                    .into_iter()
                    .map(|h| h.join().expect("join"))
                    .filter(|won| *won)
                    .count();
                assert_eq!(wins, 1, "{name} round {round}");
                let left: Vec<_> = fs::read_dir(dir.path()).expect("dir").collect();
                assert_eq!(left.len(), 1, "{name} round {round}: one file remains");
            }
        }
    }

    /// Atomic writes leave no temporary file behind, `write_new` refuses an existing file, and
    /// the flush succeeds.
    #[test]
    fn vault_atomic_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.md");
        write_new(&path, b"one").expect("new");
        let again = write_new(&path, b"two").expect_err("exists");
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        write_replacing(&path, b"three").expect("replace");
        assert_eq!(fs::read(&path).expect("read"), b"three");
        write_replacing_unflushed(&path, b"four").expect("replace unflushed");
        assert_eq!(fs::read(&path).expect("read"), b"four");
        flush_filesystem(dir.path()).expect("flush");
        assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 1);
    }

    /// A stamp takes a file's place only if the file is still there and unchanged: it never
    /// brings back a file moved away, never drops an edit, and leaves no temporary file.
    #[test]
    fn vault_swap_in_only_over_the_unchanged_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.md");
        let stamp = |text: &[u8]| write_temp_unsynced(&path, text).expect("temp");

        fs::write(&path, "old").expect("old");
        assert!(swap_in_if_unchanged(&stamp(b"new"), &path, b"old").expect("swap"));
        assert_eq!(fs::read(&path).expect("read"), b"new");

        fs::write(&path, "edited").expect("edit");
        assert!(!swap_in_if_unchanged(&stamp(b"stamped"), &path, b"new").expect("swap"));
        assert_eq!(fs::read(&path).expect("read"), b"edited", "the edit wins");

        let temp = stamp(b"stamped");
        fs::remove_file(&path).expect("moved away");
        assert!(!swap_in_if_unchanged(&temp, &path, b"edited").expect("swap"));
        assert!(!path.exists(), "a moved file is not brought back");
        assert_eq!(
            fs::read_dir(dir.path()).expect("dir").count(),
            0,
            "no temp left"
        );
    }

    /// Setting a file's modification time changes nothing else about it.
    #[cfg(unix)]
    #[test]
    fn vault_set_modified_keeps_the_file() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.md");
        fs::write(&path, "body").expect("write");
        let before = fs::metadata(&path).expect("meta");
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        set_modified(&path, at).expect("set");
        let after = fs::metadata(&path).expect("meta");
        assert_eq!(after.modified().expect("mtime"), at);
        assert_eq!((after.ino(), after.len()), (before.ino(), before.len()));
        assert_eq!(fs::read(&path).expect("read"), b"body");
    }
}
