//! The semantic three-way merge: files are merged by what they mean in the vault, never line
//! by line, and the result is decided without asking anyone, so no commit ever holds an
//! unresolved conflict.
//!
//! State files (tasks and approval requests) are grouped by id across every state folder,
//! so a move is one change, not a deletion plus an addition. Per id: a side that did not
//! change gives way to the one that did; when both changed, the later state wins (Done >
//! Rejected > Approved > Pending_Approval > In_Progress > Needs_Action) and on a tie the
//! remote's version wins, because it reached the remote first: the push is the
//! compare-and-swap. Whatever the losing side wrote beyond a claim (owner, lease) is kept as
//! a conflict copy in `Needs_Action/conflicts/`. Other files are merged path by path with the
//! rules in `specs/sync.md`.

use std::collections::{BTreeMap, BTreeSet};

use aie_shared::vault::{
    AgentName, Task, TaskId,
    layout::{CONFLICTS, DASHBOARD, LOGS, NEEDS_ACTION, UPDATES},
};
use chrono::{DateTime, Utc};
use git2::Repository;
use serde::Serialize;

use super::{
    paths::{Lifecycle, State, classify},
    repo::{Entry, Files},
    report::{LostClaim, Zone},
};

/// Who is merging, and when: conflict copies are named after the agent and the time.
pub(crate) struct MergeContext<'a> {
    /// Where blobs are read and new ones written.
    pub(crate) repo: &'a Repository,
    /// This replica's agent: the local side's author.
    pub(crate) agent: &'a AgentName,
    /// This replica's zone, which decides `Dashboard.md`.
    pub(crate) zone: Zone,
    /// The time of the merge.
    pub(crate) now: DateTime<Utc>,
}

/// The merge's result: the new tree's files and what the merge settled.
#[derive(Debug, Default)]
pub(crate) struct Merged {
    /// Path → entry of the merged tree.
    pub(crate) files: Files,
    /// One line per conflict settled, for the report.
    pub(crate) conflicts: Vec<String>,
    /// This agent's claims that the merge gave to another.
    pub(crate) lost_claims: Vec<LostClaim>,
}

/// Merges `local` and `remote`, both descended from `base`.
pub(crate) fn merge(
    cx: &MergeContext<'_>,
    base: &Files,
    local: &Files,
    remote: &Files,
) -> Result<Merged, git2::Error> {
    let mut groups: BTreeMap<(Lifecycle, String), Group> = BTreeMap::new();
    let mut plain: BTreeSet<&String> = BTreeSet::new();
    for (side, files) in [
        (Side::Base, base),
        (Side::Local, local),
        (Side::Remote, remote),
    ] {
        for (path, entry) in files {
            match classify(path) {
                Some(file) => {
                    let group = groups.entry(file.key()).or_default();
                    group.side_mut(side).insert(path.clone(), *entry);
                }
                None => {
                    plain.insert(path);
                }
            }
        }
    }
    let mut merger = Merger {
        cx,
        stamp: cx.now.format("%Y%m%dT%H%M%SZ").to_string(),
        taken: base
            .keys()
            .chain(local.keys())
            .chain(remote.keys())
            .cloned()
            .collect(),
        out: Merged::default(),
    };
    for path in plain {
        merger.plain(path, base.get(path), local.get(path), remote.get(path))?;
    }
    for ((lifecycle, id), group) in groups {
        merger.group(lifecycle, &id, &group)?;
    }
    Ok(merger.out)
}

/// The three sides of a merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The merge base.
    Base,
    /// This replica.
    Local,
    /// The remote.
    Remote,
}

/// One id's files on each side (normally at most one per side).
#[derive(Debug, Default)]
struct Group {
    /// In the merge base.
    base: Files,
    /// Here.
    local: Files,
    /// On the remote.
    remote: Files,
}

impl Group {
    /// The files of one side.
    fn side_mut(&mut self, side: Side) -> &mut Files {
        match side {
            Side::Base => &mut self.base,
            Side::Local => &mut self.local,
            Side::Remote => &mut self.remote,
        }
    }
}

/// A state file picked out of a side: path, entry and state.
struct Located<'a> {
    /// Its path.
    path: &'a String,
    /// Its blob.
    entry: Entry,
    /// Its folder's state.
    state: State,
}

/// The side's file in the latest state (the one that counts if a side holds duplicates).
fn top(files: &Files) -> Option<Located<'_>> {
    files
        .iter()
        .filter_map(|(path, entry)| {
            classify(path).map(|f| Located {
                path,
                entry: *entry,
                state: f.state,
            })
        })
        .reduce(|best, next| {
            if next.state.rank() > best.state.rank() {
                next
            } else {
                best
            }
        })
}

/// The merge in progress.
struct Merger<'a> {
    /// Who and when.
    cx: &'a MergeContext<'a>,
    /// The merge's time as it appears in file names (`20250131T090000Z`).
    stamp: String,
    /// Every path in use, so conflict copies never take an existing name.
    taken: BTreeSet<String>,
    /// The result so far.
    out: Merged,
}

impl Merger<'_> {
    /// Puts a file in the result.
    fn keep(&mut self, path: &str, entry: Entry) {
        self.taken.insert(path.to_owned());
        self.out.files.insert(path.to_owned(), entry);
    }

    /// A free path built from `name(suffix)`, trying `""`, `-2`, `-3`, ...
    fn free_path(&mut self, name: impl Fn(&str) -> String) -> String {
        let mut n = 1;
        loop {
            let suffix = if n == 1 {
                String::new()
            } else {
                format!("-{n}")
            };
            let path = name(&suffix);
            if !self.taken.contains(&path) {
                self.taken.insert(path.clone());
                return path;
            }
            n += 1;
        }
    }

    /// Merges an ordinary file (not a task or approval request).
    fn plain(
        &mut self,
        path: &str,
        base: Option<&Entry>,
        local: Option<&Entry>,
        remote: Option<&Entry>,
    ) -> Result<(), git2::Error> {
        let chosen = match (local, remote) {
            _ if local == remote || local == base => remote,
            _ if remote == base => local,
            // Deleted on one side, changed on the other: the change is kept, nothing is lost.
            (None, _) => remote,
            (_, None) => local,
            (Some(l), Some(r)) => return self.plain_conflict(path, *l, *r),
        };
        if let Some(entry) = chosen {
            self.keep(path, *entry);
        }
        Ok(())
    }

    /// Both sides changed an ordinary file in different ways.
    fn plain_conflict(
        &mut self,
        path: &str,
        local: Entry,
        remote: Entry,
    ) -> Result<(), git2::Error> {
        if path == DASHBOARD {
            // One writer: the local zone. The other side's edit is dropped, and said so.
            let (kept, dropped) = match self.cx.zone {
                Zone::Local => (local, "the remote's"),
                Zone::Cloud => (remote, "this cloud replica's"),
            };
            self.keep(path, kept);
            self.out.conflicts.push(format!(
                "{DASHBOARD}: {dropped} edit was dropped; only the local zone writes it"
            ));
            return Ok(());
        }
        if let Some(writer) = path
            .strip_prefix(&format!("{LOGS}/"))
            .and_then(|rest| rest.split_once('/'))
            .map(|(writer, _)| writer)
        {
            // Each log has one writer, its agent: that agent's side is the truth.
            let mine = writer == self.cx.agent.as_str();
            self.keep(path, if mine { local } else { remote });
            return Ok(());
        }
        self.keep(path, remote);
        let agent = self.cx.agent.clone();
        let stamp = self.stamp.clone();
        let copy = self.free_path(|suffix| conflict_copy_name(path, &agent, &stamp, suffix));
        self.keep(&copy, local);
        if path.starts_with(&format!("{UPDATES}/")) {
            // Notes to the owner: both are kept side by side, and both reach the dashboard.
            return Ok(());
        }
        let note = self.file_conflict_note(path, &copy)?;
        self.out.conflicts.push(format!(
            "{path}: both replicas changed it; kept the remote's version in place and agent \
             `{agent}`'s as {copy}; see {note}"
        ));
        Ok(())
    }

    /// Files a note in `Needs_Action/conflicts/` telling the human about a kept-both file.
    fn file_conflict_note(&mut self, path: &str, copy: &str) -> Result<String, git2::Error> {
        let slug: String = path
            .strip_suffix(".md")
            .unwrap_or(path)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(80)
            .collect();
        let stamp = self.stamp.clone();
        let note = self.free_path(|suffix| {
            format!("{NEEDS_ACTION}/{CONFLICTS}/sync-{stamp}-{slug}{suffix}.md")
        });
        let id = note
            .rsplit('/')
            .next()
            .and_then(|name| name.strip_suffix(".md"))
            .unwrap_or_default()
            .to_owned();
        let front = ConflictNote {
            id,
            title: format!("Sync conflict: {path}"),
            created: self.cx.now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            kind: "sync_conflict",
            path: path.to_owned(),
            copy: copy.to_owned(),
            agent: self.cx.agent.to_string(),
        };
        let yaml =
            yaml_serde::to_string(&front).map_err(|e| git2::Error::from_str(&e.to_string()))?;
        let text = format!(
            "---\n{yaml}---\nTwo replicas changed `{path}` since they last agreed, so both \
             versions are kept:\n\n\
             - [[{path}]]: the version that reached the remote first, in place.\n\
             - [[{copy}]]: agent `{agent}`'s version.\n\n\
             Keep what you need in `{path}`, then delete the copy and this note.\n",
            agent = self.cx.agent,
        );
        let oid = self.cx.repo.blob(text.as_bytes())?;
        self.keep(
            &note,
            Entry {
                oid,
                mode: 0o100_644,
            },
        );
        Ok(note)
    }

    /// Merges one task's or approval request's files.
    fn group(&mut self, lifecycle: Lifecycle, id: &str, group: &Group) -> Result<(), git2::Error> {
        let (base, local, remote) = (&group.base, &group.local, &group.remote);
        let (chosen, loser) = if local == remote || local == base {
            (remote, None)
        } else if remote == base || remote.is_empty() {
            (local, None)
        } else if local.is_empty() {
            // Deleted here, changed there: the change is kept.
            (remote, None)
        } else {
            let local_rank = top(local).map_or(0, |t| t.state.rank());
            let remote_rank = top(remote).map_or(0, |t| t.state.rank());
            // Ties go to the remote: it got there first.
            if local_rank > remote_rank {
                (local, Some((Side::Remote, remote)))
            } else {
                (remote, Some((Side::Local, local)))
            }
        };
        for (path, entry) in chosen {
            self.keep(path, *entry);
        }
        if let Some((side, lost)) = loser {
            self.keep_losing_version(lifecycle, id, side, lost, base, chosen)?;
        }
        self.note_lost_claim(lifecycle, id, local, chosen)
    }

    /// Keeps the losing side's version of a state file as a conflict copy, unless all it
    /// changed was the claim (owner and lease), which the winner's state replaces anyway.
    fn keep_losing_version(
        &mut self,
        lifecycle: Lifecycle,
        id: &str,
        side: Side,
        lost: &Files,
        base: &Files,
        winner: &Files,
    ) -> Result<(), git2::Error> {
        let mut known = BTreeSet::new();
        for entry in base.values().chain(winner.values()) {
            known.insert(self.essence(lifecycle, entry)?);
        }
        let winner_path = top(winner).map(|t| t.path.clone()).unwrap_or_default();
        for (path, entry) in lost {
            if known.contains(&self.essence(lifecycle, entry)?) {
                continue;
            }
            let author = match side {
                Side::Local => self.cx.agent.to_string(),
                _ => classify(path)
                    .and_then(|f| f.state.holder().map(ToString::to_string))
                    .unwrap_or_else(|| "remote".to_owned()),
            };
            let stamp = self.stamp.clone();
            let copy = self.free_path(|suffix| {
                format!("{NEEDS_ACTION}/{CONFLICTS}/{id}.conflict-{author}-{stamp}{suffix}.md")
            });
            self.keep(&copy, *entry);
            self.out.conflicts.push(format!(
                "{path}: both replicas changed `{id}`; kept {winner_path}, and {author}'s \
                 version as {copy}"
            ));
        }
        Ok(())
    }

    /// Records a lost claim when this agent held the task here and no longer does.
    fn note_lost_claim(
        &mut self,
        lifecycle: Lifecycle,
        id: &str,
        local: &Files,
        chosen: &Files,
    ) -> Result<(), git2::Error> {
        if lifecycle != Lifecycle::Task {
            return Ok(());
        }
        let held_here = local
            .keys()
            .any(|p| classify(p).is_some_and(|f| f.state.holder() == Some(self.cx.agent)));
        let held_now = chosen
            .keys()
            .any(|p| classify(p).is_some_and(|f| f.state.holder() == Some(self.cx.agent)));
        if !held_here || held_now {
            return Ok(());
        }
        let Ok(task_id) = TaskId::new(id) else {
            return Ok(());
        };
        let (owner, path) = match top(chosen) {
            Some(now) => {
                let owner = match &now.state {
                    State::InProgress(agent) => Some(agent.clone()),
                    State::Done => self.task(&now.entry)?.and_then(|t| t.meta.owner),
                    _ => None,
                };
                (owner, now.path.clone())
            }
            None => (None, String::new()),
        };
        self.out.lost_claims.push(LostClaim {
            task_id,
            owner,
            path,
        });
        Ok(())
    }

    /// A blob parsed as a task, if it is one.
    fn task(&self, entry: &Entry) -> Result<Option<Task>, git2::Error> {
        let blob = self.cx.repo.find_blob(entry.oid)?;
        Ok(std::str::from_utf8(blob.content())
            .ok()
            .and_then(|text| Task::parse(text).ok()))
    }

    /// What a version says beyond where it is and who holds it: a task's text with owner,
    /// claim, lease and completion time cleared (a request's text as it is). Two versions
    /// with one essence differ only by a move, so neither holds work the other lacks.
    fn essence(&self, lifecycle: Lifecycle, entry: &Entry) -> Result<Vec<u8>, git2::Error> {
        let blob = self.cx.repo.find_blob(entry.oid)?;
        if lifecycle == Lifecycle::Task
            && let Some(mut task) = self.task(entry)?
        {
            task.meta.owner = None;
            task.meta.claimed_at = None;
            task.meta.lease_until = None;
            task.meta.completed_at = None;
            if let Ok(text) = task.render() {
                return Ok(text.into_bytes());
            }
        }
        Ok(blob.content().to_vec())
    }
}

/// `dir/name.conflict-<agent>-<stamp><suffix>.ext`: the kept-both copy, beside the original.
pub(crate) fn conflict_copy_name(
    path: &str,
    agent: &AgentName,
    stamp: &str,
    suffix: &str,
) -> String {
    let (dir, file) = match path.rsplit_once('/') {
        Some((dir, file)) => (format!("{dir}/"), file),
        None => (String::new(), path),
    };
    // A leading dot is a hidden name, not an extension.
    let (stem, ext) = match file.rfind('.').filter(|&i| i > 0) {
        Some(i) => (&file[..i], &file[i..]),
        None => (file, ""),
    };
    format!("{dir}{stem}.conflict-{agent}-{stamp}{suffix}{ext}")
}

/// The front matter of a conflict note.
#[derive(Serialize)]
struct ConflictNote {
    /// The note's id (its file stem).
    id: String,
    /// One line for listings.
    title: String,
    /// When the merge filed it.
    created: String,
    /// Always `sync_conflict`.
    kind: &'static str,
    /// The file both replicas changed.
    path: String,
    /// Where the other version was kept.
    copy: String,
    /// The agent whose version is the copy.
    agent: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copies keep the extension and the folder, and a hidden file stays hidden.
    #[test]
    fn sync_conflict_copy_names() {
        let agent = AgentName::new("local").expect("agent");
        let stamp = "20250131T090000Z";
        assert_eq!(
            conflict_copy_name("Plans/email/p.md", &agent, stamp, ""),
            "Plans/email/p.conflict-local-20250131T090000Z.md"
        );
        assert_eq!(
            conflict_copy_name("README", &agent, stamp, "-2"),
            "README.conflict-local-20250131T090000Z-2"
        );
        assert_eq!(
            conflict_copy_name("a/.gitkeep", &agent, stamp, ""),
            "a/.gitkeep.conflict-local-20250131T090000Z"
        );
    }
}
