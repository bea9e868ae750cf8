//! Small durable file writes for the state folder: a file appears whole or not at all, and
//! survives a crash once the call returns.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

/// A temporary name beside `path`, unique per process and call.
fn temp_beside(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Writes `bytes` to a flushed temporary file beside `path`; returns its name.
fn write_temp(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let temp = temp_beside(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)?;
    if let Err(e) = file.write_all(bytes).and_then(|()| file.sync_all()) {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    Ok(temp)
}

/// Flushes a folder's entries, so a rename in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` atomically and durably.
pub(crate) fn write_replacing(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = write_temp(path, bytes)?;
    if let Err(e) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    path.parent().map_or(Ok(()), sync_dir)
}

/// Creates `path` with `bytes`, durably, failing with `AlreadyExists` if it exists: a hard
/// link never replaces its target.
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = write_temp(path, bytes)?;
    let linked = fs::hard_link(&temp, path);
    let _ = fs::remove_file(&temp);
    linked?;
    path.parent().map_or(Ok(()), sync_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `write_new` never replaces; `write_replacing` does; neither leaves a temporary file.
    #[test]
    fn fsutil_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("f");
        write_new(&path, b"one").expect("new");
        let again = write_new(&path, b"two").expect_err("exists");
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        write_replacing(&path, b"three").expect("replace");
        assert_eq!(fs::read(&path).expect("read"), b"three");
        assert_eq!(
            fs::read_dir(path.parent().expect("dir"))
                .expect("dir")
                .count(),
            1
        );
    }
}
