//! Maildir intake: each file in `DIR/new` becomes a task, then moves to `DIR/cur` with the
//! Seen flag (`:2,S`), as a mail client does when it has shown a mail.
//!
//! Why move rather than keep a list in the state folder: the Maildir itself then says what
//! was taken in, for any mail client and for mbsync, which carries the Seen flag back to
//! the server; and a restart needs no list that could be lost. The order is what makes it
//! safe: the task is written (and flushed) first, the file moved second. A crash between the
//! two leaves the file in `new/`; the next fetch makes the same task id, finds it, counts a
//! duplicate and moves the file then. Nothing is lost and nothing is doubled.
//!
//! A file larger than the limit is never read whole: its first 64 KiB give the headers for
//! a rejection task.

use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
};

use aie_shared::vault::Vault;

use super::{IntakeError, IntakeReport, Origin, REJECTED_HEAD_BYTES, ingest, too_large};
use crate::{message, triage::TriageRules};

/// Intake settings shared by every message of a fetch.
#[derive(Debug, Clone)]
pub struct IntakeLimits {
    /// Messages larger than this become rejection tasks.
    pub max_message_bytes: u64,
    /// Longest text kept in a task.
    pub max_body_bytes: usize,
}

/// The files waiting in `dir/new`, oldest name first (mbsync and offlineimap start names with
/// the delivery time). Hidden files and folders are skipped.
pub fn pending(dir: &Path) -> Result<Vec<PathBuf>, IntakeError> {
    let new = dir.join("new");
    if !new.is_dir() {
        return Err(IntakeError::NotAMaildir {
            path: dir.to_path_buf(),
        });
    }
    let io = |source| IntakeError::Io {
        path: new.clone(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(&new).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// How many files are taken in at once. Each task write waits on two fsyncs; a few writers
/// in parallel keep the disk busy instead of waiting on it one file at a time.
const WORKERS: usize = 4;

/// What became of one file.
enum FileOutcome {
    /// Gone before it was read.
    Gone,
    /// Taken in (new or duplicate), with an error if moving it to cur/ failed.
    Taken(super::Ingested, Option<String>),
    /// Not taken in; it stays in new/ for the next fetch.
    Failed(String),
}

/// Takes in every file in `dir/new`: blocking work, run it under `spawn_blocking`.
pub fn fetch(
    vault: &Vault,
    dir: &Path,
    rules: &TriageRules,
    limits: &IntakeLimits,
) -> Result<IntakeReport, IntakeError> {
    let files = pending(dir)?;
    let workers = WORKERS.min(files.len()).max(1);
    let mut outcomes: Vec<(usize, FileOutcome)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let files = &files;
                scope.spawn(move || {
                    files
                        .iter()
                        .enumerate()
                        .skip(w)
                        .step_by(workers)
                        .map(|(i, path)| (i, take(vault, dir, path, rules, limits)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(outcomes) => outcomes,
                Err(_) => vec![(
                    usize::MAX,
                    FileOutcome::Failed("internal error: an intake worker panicked".into()),
                )],
            })
            .collect()
    });
    // The report lists files in delivery order, whatever order the workers finished in.
    outcomes.sort_by_key(|(i, _)| *i);
    let mut report = IntakeReport::default();
    for (_, outcome) in outcomes {
        match outcome {
            FileOutcome::Gone => {}
            FileOutcome::Taken(ingested, move_error) => {
                report.count(&ingested);
                if let Some(e) = move_error {
                    report.fail(e);
                }
            }
            FileOutcome::Failed(e) => report.fail(e),
        }
    }
    Ok(report)
}

/// Takes in one file of `new/`.
fn take(
    vault: &Vault,
    dir: &Path,
    path: &Path,
    rules: &TriageRules,
    limits: &IntakeLimits,
) -> FileOutcome {
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mail = match read(path, limits) {
        Ok(Some(mail)) => mail,
        // Gone meanwhile: another reader took it; nothing to do.
        Ok(None) => return FileOutcome::Gone,
        Err(e) => return FileOutcome::Failed(format!("{}: cannot read: {e}", path.display())),
    };
    let origin = Origin::Maildir { file: file.clone() };
    match ingest(vault, &mail, &origin, rules) {
        // The task exists; if the move fails, the next fetch sees a duplicate and tries again.
        Ok(outcome) => FileOutcome::Taken(
            outcome,
            mark_seen(dir, &file).err().map(|e| {
                format!(
                    "{}: task made, but moving the file to cur/ failed: {e}",
                    path.display()
                )
            }),
        ),
        Err(e) => FileOutcome::Failed(format!("{}: no task made: {e}", path.display())),
    }
}

/// Reads one file: whole when within the limit, else its head for a rejection. `None` when
/// the file disappeared.
fn read(path: &Path, limits: &IntakeLimits) -> std::io::Result<Option<message::ParsedMail>> {
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let size = file.metadata()?.len();
    if size > limits.max_message_bytes {
        let mut head = Vec::with_capacity(REJECTED_HEAD_BYTES);
        file.by_ref()
            .take(REJECTED_HEAD_BYTES as u64)
            .read_to_end(&mut head)?;
        let reason = too_large(size, limits.max_message_bytes);
        return Ok(Some(message::parse_rejected(&head, size, reason)));
    }
    let mut raw = Vec::with_capacity(size as usize);
    // Bounded even if the file grows while it is read.
    file.take(limits.max_message_bytes + 1)
        .read_to_end(&mut raw)?;
    Ok(Some(message::parse(&raw, limits.max_body_bytes)))
}

/// Moves `new/<file>` to `cur/<file>:2,S` (adding `S` to flags it already has).
pub fn mark_seen(dir: &Path, file: &str) -> std::io::Result<()> {
    let target = match file.split_once(":2,") {
        Some((base, flags)) if flags.contains('S') => format!("{base}:2,{flags}"),
        Some((base, flags)) => {
            // Maildir flags are kept in ASCII order.
            let mut all: Vec<char> = flags.chars().chain(['S']).collect();
            all.sort_unstable();
            format!("{base}:2,{}", all.into_iter().collect::<String>())
        }
        None => format!("{file}:2,S"),
    };
    let cur = dir.join("cur");
    fs::create_dir_all(&cur)?;
    match fs::rename(dir.join("new").join(file), cur.join(target)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seen is added once, in flag order, and a file already gone is no error.
    #[test]
    fn maildir_mark_seen_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("new")).expect("new");
        for name in ["1.a", "2.b:2,F", "3.c:2,S"] {
            fs::write(dir.path().join("new").join(name), "x").expect("write");
            mark_seen(dir.path(), name).expect("move");
        }
        let mut names: Vec<_> = fs::read_dir(dir.path().join("cur"))
            .expect("cur")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["1.a:2,S", "2.b:2,FS", "3.c:2,S"]);
        mark_seen(dir.path(), "gone").expect("missing is fine");
    }
}
