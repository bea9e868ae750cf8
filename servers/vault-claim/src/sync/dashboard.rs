//! `Dashboard.md`, rebuilt by the local zone from the vault: what waits for the owner, what
//! the agents hold, the latest notes from `Updates/`. Plain markdown tables and `[[...]]`
//! links, so it reads well in Obsidian. Nothing in it depends on the time of the rebuild, so
//! an unchanged vault gives an unchanged file and no commit.
//!
//! Everything in it comes from vault files that the remote or a mail's sender may have
//! written, so the whole text goes through `aie_shared::render` once it is built: a control,
//! bidi or invisible character is written as its `\u{..}` escape, never as it came.
//!
//! Nothing here goes through a link: a folder or note reached through one is not counted,
//! listed or quoted (it could hold any file of this machine, and the dashboard is pushed),
//! and a `Dashboard.md` that is a link is refused, not written through or replaced.

use std::{
    fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

use aie_shared::vault::{
    ApprovalRequest, Domain, TaskFilter, TaskFolder, Vault, VaultError,
    layout::{
        APPROVED, CONFLICTS, DASHBOARD, DONE, IN_PROGRESS, NEEDS_ACTION, PENDING_APPROVAL,
        REJECTED, UPDATES,
    },
    nofollow,
};
use chrono::{DateTime, Utc};

use super::{SyncError, report::FolderCounts};

/// How many entries "Recent activity" shows.
const RECENT: usize = 20;
/// How much of a note's text the dashboard quotes.
const EXCERPT: usize = 200;

/// Counts the files in each folder (visible markdown files; links are not followed).
pub(crate) fn count_folders(root: &Path) -> FolderCounts {
    let count = |dir: PathBuf| markdown_files(root, &dir).len();
    let per_sub = |parent: &str| -> usize {
        subfolders(root, &root.join(parent))
            .into_iter()
            .filter(|dir| dir.file_name().is_some_and(|n| n != CONFLICTS))
            .map(count)
            .sum()
    };
    FolderCounts {
        needs_action: Domain::ALL
            .iter()
            .map(|d| count(root.join(NEEDS_ACTION).join(d.as_str())))
            .sum(),
        in_progress: per_sub(IN_PROGRESS),
        pending_approval: Domain::ALL
            .iter()
            .map(|d| count(root.join(PENDING_APPROVAL).join(d.as_str())))
            .sum(),
        approved: count(root.join(APPROVED)),
        rejected: count(root.join(REJECTED)),
        done: count(root.join(DONE)),
        updates: count(root.join(UPDATES)),
        conflicts: count(root.join(NEEDS_ACTION).join(CONFLICTS)),
    }
}

/// The files waiting in `Needs_Action/conflicts/`, relative to the vault root.
pub(crate) fn conflict_files(root: &Path) -> Vec<String> {
    markdown_files(root, &root.join(NEEDS_ACTION).join(CONFLICTS))
        .into_iter()
        .filter_map(|p| {
            p.file_name()
                .map(|n| format!("{NEEDS_ACTION}/{CONFLICTS}/{}", n.to_string_lossy()))
        })
        .collect()
}

/// Real subfolders of `dir` (links excluded), sorted; none when `dir` is reached through a
/// link.
fn subfolders(root: &Path, dir: &Path) -> Vec<PathBuf> {
    nofollow::plain_subfolders(root, dir).unwrap_or_default()
}

/// Visible regular `.md` files directly in `dir`, sorted; a missing folder, or one reached
/// through a link, has none.
fn markdown_files(root: &Path, dir: &Path) -> Vec<PathBuf> {
    nofollow::plain_files(root, dir, ".md").unwrap_or_default()
}

/// A note's text, read without following a link; `None` when it cannot be read as text.
fn read_note(root: &Path, path: &Path) -> Option<String> {
    let bytes = nofollow::read_plain(root, path).ok()?;
    String::from_utf8(bytes).ok()
}

/// Wraps an I/O error on `path`; a refusal of the link guard names the link itself.
fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SyncError {
    let path = path.to_path_buf();
    move |source| match nofollow::refusal(&source) {
        Some(refused) => SyncError::Vault(VaultError::Refused(refused.clone())),
        None => SyncError::Io { path, source },
    }
}

/// Rebuilds `Dashboard.md`; returns whether its text changed.
pub(crate) fn refresh(vault: &Vault) -> Result<bool, SyncError> {
    let text = render(vault)?;
    let path = vault.root().join(DASHBOARD);
    if read_note(vault.root(), &path).is_some_and(|old| old == text) {
        return Ok(false);
    }
    // Temporary file then rename: Obsidian (or a sync) never reads half a dashboard. Durable
    // with the sync's flush before its commit, like the vault's other renames; a link at
    // `Dashboard.md` is refused, never written through or replaced.
    vault
        .write_replacing_unflushed(&path, text.as_bytes())
        .map_err(io_error(&path))?;
    Ok(true)
}

/// The dashboard's text.
fn render(vault: &Vault) -> Result<String, SyncError> {
    let root = vault.root();
    let listing = vault.list_tasks(TaskFilter::default())?;
    let title_of = |id: &str| {
        listing
            .tasks
            .iter()
            .find(|t| t.id.as_str() == id)
            .map(|t| t.title.clone())
    };
    let mut out = String::from(
        "# Dashboard\n\nRebuilt by the local zone from the vault; edits here are replaced at \
         the next refresh.\n\n## Waiting for you\n\n",
    );

    let mut pending = Vec::new();
    for domain in Domain::ALL {
        for path in markdown_files(root, &root.join(PENDING_APPROVAL).join(domain.as_str())) {
            let rel = relative(root, &path);
            match read_note(root, &path).and_then(|t| ApprovalRequest::parse(&t).ok()) {
                Some(request) => pending.push((rel, Some(request))),
                None => pending.push((rel, None)),
            }
        }
    }
    if pending.is_empty() {
        out.push_str("Nothing waits for you.\n\n");
    } else {
        out.push_str("| Request | Domain | Action | About | Expires |\n|---|---|---|---|---|\n");
        for (rel, request) in &pending {
            let link = table_link(rel);
            match request {
                Some(r) => {
                    let about = r
                        .meta
                        .task_id
                        .as_ref()
                        .and_then(|id| title_of(id.as_str()))
                        .unwrap_or_else(|| first_line(&r.preview));
                    out.push_str(&format!(
                        "| {link} | {} | {} | {} | {} |\n",
                        r.meta.domain,
                        cell(&r.meta.tool),
                        cell(&about),
                        r.meta.expires_at.format("%Y-%m-%d %H:%M UTC"),
                    ));
                }
                None => out.push_str(&format!(
                    "| {link} | | | (cannot be read; `aie vault check` says why) | |\n"
                )),
            }
        }
        out.push_str("\nDecide on this machine: `aie approvals show ID` prints the exact payload and its payload_sha256, then `aie approvals approve ID --sha256 HEX` (or `aie approvals reject ID`).\n\n");
    }

    let counts = count_folders(root);
    out.push_str("## Counts\n\n| Folder | Files |\n|---|---:|\n");
    for (name, n) in [
        (NEEDS_ACTION, counts.needs_action),
        (IN_PROGRESS, counts.in_progress),
        (PENDING_APPROVAL, counts.pending_approval),
        (APPROVED, counts.approved),
        (REJECTED, counts.rejected),
        (DONE, counts.done),
        (UPDATES, counts.updates),
    ] {
        out.push_str(&format!("| {name} | {n} |\n"));
    }
    out.push_str(&format!(
        "| {NEEDS_ACTION}/{CONFLICTS} | {} |\n\n",
        counts.conflicts
    ));

    out.push_str("## In progress\n\n");
    let held: Vec<_> = listing
        .tasks
        .iter()
        .filter(|t| t.folder == TaskFolder::InProgress)
        .collect();
    if held.is_empty() {
        out.push_str("No agent holds a task.\n\n");
    } else {
        out.push_str("| Task | Agent | Title |\n|---|---|---|\n");
        for task in held {
            let owner = task
                .owner
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            out.push_str(&format!(
                "| {} | {owner} | {} |\n",
                table_link(&task.path),
                cell(&task.title)
            ));
        }
        out.push('\n');
    }

    let conflicts = conflict_files(root);
    if !conflicts.is_empty() {
        out.push_str("## Sync conflicts\n\nBoth replicas changed these; each note says which copies to compare.\n\n");
        for path in conflicts {
            out.push_str(&format!("- {}\n", link(&path)));
        }
        out.push('\n');
    }

    out.push_str("## Recent activity\n\n");
    let activity = recent_activity(vault, &listing)?;
    if activity.is_empty() {
        out.push_str("Nothing yet.\n");
    }
    for (when, line) in activity {
        out.push_str(&format!(
            "- {} · {line}\n",
            when.format("%Y-%m-%d %H:%M UTC")
        ));
    }
    Ok(aie_shared::render::text(&out).into_owned())
}

/// The latest `Updates/` notes and completed tasks, newest first, at most [`RECENT`].
fn recent_activity(
    vault: &Vault,
    listing: &aie_shared::vault::TaskListing,
) -> Result<Vec<(DateTime<Utc>, String)>, SyncError> {
    let root = vault.root();
    let mut items: Vec<(DateTime<Utc>, String)> = Vec::new();
    for path in markdown_files(root, &root.join(UPDATES)) {
        let Some(text) = read_note(root, &path) else {
            continue;
        };
        let (created, body) = note_parts(&text);
        let when = created.unwrap_or_else(|| modified(&path));
        let rel = relative(root, &path);
        let excerpt = excerpt(body);
        items.push((when, format!("{}: {excerpt}", link(&rel))));
    }
    for task in listing
        .tasks
        .iter()
        .filter(|t| t.folder == TaskFolder::Done)
    {
        let Ok(stored) = vault.read_task(&task.id) else {
            continue;
        };
        let when = stored
            .task
            .meta
            .completed_at
            .unwrap_or(stored.task.meta.created);
        let by = task
            .owner
            .as_ref()
            .map(|o| format!(" by {o}"))
            .unwrap_or_default();
        items.push((
            when,
            format!(
                "done{by}: {} {}",
                link(&task.path),
                task.title.replace('\n', " ")
            ),
        ));
    }
    // Newest first; equal times in a stable order so an unchanged vault renders the same.
    items.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    items.truncate(RECENT);
    Ok(items)
}

/// A note's `created` (or `date`) from its front matter, if any, and its body.
fn note_parts(text: &str) -> (Option<DateTime<Utc>>, &str) {
    let Some(rest) = text.strip_prefix("---\n") else {
        return (None, text);
    };
    let Some(end) = rest.find("\n---\n") else {
        return (None, text);
    };
    let (yaml, body) = (&rest[..end], &rest[end + 5..]);
    let created = yaml_serde::from_str::<yaml_serde::Mapping>(yaml)
        .ok()
        .and_then(|m| {
            ["created", "date"]
                .iter()
                .find_map(|k| m.get(*k).and_then(|v| v.as_str()).and_then(parse_time))
        });
    (created, body)
}

/// An RFC 3339 time or a bare date, as people type them.
fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
        })
}

/// A file's modification time (the note's time when its front matter has none).
fn modified(path: &Path) -> DateTime<Utc> {
    fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
        .into()
}

/// The first lines of a note's text, joined and cut to [`EXCERPT`] characters.
fn excerpt(body: &str) -> String {
    let joined = body
        .lines()
        .map(|l| l.trim().trim_start_matches('#').trim())
        .filter(|l| !l.is_empty())
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    if joined.chars().count() > EXCERPT {
        let cut: String = joined.chars().take(EXCERPT).collect();
        format!("{cut}…")
    } else {
        joined
    }
}

/// The first non-empty line of a text.
fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
        .to_owned()
}

/// A vault-relative path with `/` separators.
fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// An Obsidian link to a vault file, shown by its name.
fn link(rel: &str) -> String {
    let target = rel.strip_suffix(".md").unwrap_or(rel);
    let name = target.rsplit('/').next().unwrap_or(target);
    format!("[[{target}|{name}]]")
}

/// The same link inside a table cell, where the `|` must be escaped.
fn table_link(rel: &str) -> String {
    link(rel).replace('|', "\\|")
}

/// Text made safe for one table cell.
fn cell(text: &str) -> String {
    text.replace('\n', " ").replace('|', "\\|")
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// A fresh vault in a temporary directory, and a bait folder beside it (never a real
    /// system path) holding a note that must never reach the dashboard.
    fn vault_and_bait() -> (tempfile::TempDir, Vault, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::init(dir.path().join("vault")).expect("init");
        let bait = dir.path().join("bait");
        fs::create_dir_all(&bait).expect("bait");
        fs::write(
            bait.join("secret.md"),
            "---\ncreated: 2025-01-01\n---\nTOP SECRET local file\n",
        )
        .expect("secret");
        (dir, vault, bait)
    }

    /// `Updates` committed as a link to a folder of this machine, and a linked note inside a
    /// real folder: the dashboard neither quotes nor counts anything behind them.
    #[test]
    fn dashboard_never_quotes_through_links() {
        let (_dir, vault, bait) = vault_and_bait();
        let root = vault.root();
        let pending = root.join(PENDING_APPROVAL).join("email");
        std::os::unix::fs::symlink(bait.join("secret.md"), pending.join("a-1.md")).expect("link");
        fs::remove_dir_all(root.join(UPDATES)).expect("updates");
        std::os::unix::fs::symlink(&bait, root.join(UPDATES)).expect("link");

        let text = render(&vault).expect("render");
        assert!(
            !text.contains("SECRET") && !text.contains("secret"),
            "{text}"
        );
        let counts = count_folders(root);
        assert_eq!((counts.updates, counts.pending_approval), (0, 0));
        assert!(refresh(&vault).expect("refresh"));
        let written = fs::read_to_string(root.join(DASHBOARD)).expect("dashboard");
        assert!(!written.contains("SECRET"), "{written}");
    }

    /// A pending request whose preview starts with a clear-screen sequence and a task title
    /// holding a right-to-left override reach the dashboard escaped, never raw.
    #[test]
    fn dashboard_escapes_control_bidi_and_invisible_characters() {
        let (_dir, vault, _bait) = vault_and_bait();
        let request = ApprovalRequest::new(
            aie_shared::vault::ApprovalId::new("a-1").expect("id"),
            Domain::Email,
            "email_send",
            serde_json::json!({"to": ["alice@example.org"]}),
            aie_shared::vault::AgentName::new("cloud").expect("agent"),
            Utc::now() + chrono::TimeDelta::hours(1),
        )
        .with_preview("\u{1b}[2J\u{1b}[Hall fine\u{200b}");
        vault.write_approval_request(&request).expect("request");
        let text = render(&vault).expect("render");
        assert!(
            !text
                .chars()
                .any(|c| c != '\n' && aie_shared::render::is_hidden(c)),
            "{text:?}"
        );
        assert!(
            text.contains("\\u{1b}[2J\\u{1b}[Hall fine\\u{200b}"),
            "{text}"
        );
    }

    /// A `Dashboard.md` that is a link is refused, naming it; its target stays as it was and
    /// the link is not replaced.
    #[test]
    fn dashboard_refuses_linked_dashboard_file() {
        let (_dir, vault, bait) = vault_and_bait();
        let path = vault.root().join(DASHBOARD);
        fs::remove_file(&path).expect("seed dashboard");
        std::os::unix::fs::symlink(bait.join("secret.md"), &path).expect("link");
        let before = fs::read(bait.join("secret.md")).expect("bait");

        let err = refresh(&vault).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "`Dashboard.md` is a link; aie never writes through links"
        );
        assert_eq!(fs::read(bait.join("secret.md")).expect("bait"), before);
        assert!(fs::symlink_metadata(&path).expect("link").is_symlink());
    }
}
