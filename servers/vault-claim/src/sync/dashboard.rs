//! `Dashboard.md`, rebuilt by the local zone from the vault: what waits for the owner, what
//! the agents hold, the latest notes from `Updates/`. Plain markdown tables and `[[...]]`
//! links, so it reads well in Obsidian. Nothing in it depends on the time of the rebuild, so
//! an unchanged vault gives an unchanged file and no commit.

use std::{
    fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

use aie_shared::vault::{
    ApprovalRequest, Domain, TaskFilter, TaskFolder, Vault,
    layout::{
        APPROVED, CONFLICTS, DASHBOARD, DONE, IN_PROGRESS, NEEDS_ACTION, PENDING_APPROVAL,
        REJECTED, UPDATES,
    },
};
use chrono::{DateTime, Utc};

use super::{SyncError, report::FolderCounts};

/// How many entries "Recent activity" shows.
const RECENT: usize = 20;
/// How much of a note's text the dashboard quotes.
const EXCERPT: usize = 200;

/// Counts the files in each folder (visible markdown files; links are not followed).
pub(crate) fn count_folders(root: &Path) -> FolderCounts {
    let count = |dir: PathBuf| markdown_files(&dir).len();
    let per_sub = |parent: &str| -> usize {
        subfolders(&root.join(parent))
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
    markdown_files(&root.join(NEEDS_ACTION).join(CONFLICTS))
        .into_iter()
        .filter_map(|p| {
            p.file_name()
                .map(|n| format!("{NEEDS_ACTION}/{CONFLICTS}/{}", n.to_string_lossy()))
        })
        .collect()
}

/// Real subfolders of `dir` (links excluded), sorted.
fn subfolders(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// Visible regular `.md` files directly in `dir`, sorted; a missing folder has none.
fn markdown_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            !name.starts_with('.') && name.ends_with(".md")
        })
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

/// Rebuilds `Dashboard.md`; returns whether its text changed.
pub(crate) fn refresh(vault: &Vault) -> Result<bool, SyncError> {
    let text = render(vault)?;
    let path = vault.root().join(DASHBOARD);
    if fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    // Temporary file then rename: Obsidian (or a sync) never reads half a dashboard.
    let temp = vault
        .root()
        .join(format!(".{DASHBOARD}.{}.tmp", std::process::id()));
    fs::write(&temp, &text).map_err(SyncError::io(&temp))?;
    fs::rename(&temp, &path).map_err(SyncError::io(&path))?;
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
        for path in markdown_files(&root.join(PENDING_APPROVAL).join(domain.as_str())) {
            let rel = relative(root, &path);
            match fs::read_to_string(&path)
                .ok()
                .and_then(|t| ApprovalRequest::parse(&t).ok())
            {
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
        out.push_str("\nDecide with `aie approvals approve ID` or `aie approvals reject ID` on this machine.\n\n");
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
    Ok(out)
}

/// The latest `Updates/` notes and completed tasks, newest first, at most [`RECENT`].
fn recent_activity(
    vault: &Vault,
    listing: &aie_shared::vault::TaskListing,
) -> Result<Vec<(DateTime<Utc>, String)>, SyncError> {
    let root = vault.root();
    let mut items: Vec<(DateTime<Utc>, String)> = Vec::new();
    for path in markdown_files(&root.join(UPDATES)) {
        let Ok(text) = fs::read_to_string(&path) else {
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
    fs::metadata(path)
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
