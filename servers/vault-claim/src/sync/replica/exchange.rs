//! A replica's git work: committing, the fetch–merge–push loop, checking a merge out, and
//! finding tasks in commits.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use aie_shared::vault::{
    AgentName, Domain, Task, TaskId,
    layout::{CONFLICTS, DONE, IN_PROGRESS, NEEDS_ACTION},
};
use chrono::Utc;
use git2::{CheckoutNotificationType, ErrorCode, Oid, Repository, build::CheckoutBuilder};

use super::{
    Git, NO_REMOTE, PUSH_ATTEMPTS, Replica,
    journal::{CheckoutJournal, changed_paths, restore},
    setup::checked_kind,
    setup::configured_url,
};
use crate::sync::{
    SyncError, incoming,
    merge::{MergeContext, conflict_copy_name, merge},
    paths::{State, classify},
    repo::{
        self, BRANCH, FlattenError, PushError, TRACKING, files_of, ref_target, signature,
        write_files,
    },
    report::{LostClaim, Refused, SyncReport},
    secrets::secret_name_reason,
    stage::{stage_changes, working_changes},
};

impl Replica {
    /// Stamps new claims, stages every change in the working tree and commits it.
    pub(super) fn commit_all(
        &self,
        git: &mut Git,
        report: &mut SyncReport,
        what: &str,
    ) -> Result<(), SyncError> {
        self.finish_interrupted_checkout(git, report)?;
        self.offer_hand_moves();
        let root = self.vault.root();
        let changes = working_changes(&git.repo, root)?;
        // Claims made since the last commit are committed with their owner and lease.
        self.vault.stamp_claims(&changes.held())?;
        let staging = stage_changes(&git.repo, root, changes)?;
        git.blocked = staging.blocked.clone();
        report.blocked = staging.blocked;
        self.commit(git, staging.tree, what)?;
        Ok(())
    }

    /// Commits `tree` on `main` unless it is what `main` already holds; the vault is flushed
    /// before `main` moves (see [`Replica::move_main`]).
    pub(super) fn commit(
        &self,
        git: &mut Git,
        tree: Oid,
        what: &str,
    ) -> Result<Option<Oid>, SyncError> {
        let root = self.vault.root();
        let gitx = |action| SyncError::git(action, root);
        let repo = &git.repo;
        let head = ref_target(repo, BRANCH);
        let parent = match head {
            Some(head) => Some(repo.find_commit(head).map_err(gitx("commit"))?),
            None => None,
        };
        if parent.as_ref().is_some_and(|p| p.tree_id() == tree) {
            return Ok(None);
        }
        let tree = repo.find_tree(tree).map_err(gitx("commit"))?;
        let sig = signature(self.agent.as_str()).map_err(gitx("commit"))?;
        let parents: Vec<_> = parent.iter().collect();
        let message = format!("aie {}: {what}", self.agent);
        let commit = repo
            .commit(None, &sig, &sig, &message, &tree, &parents)
            .map_err(gitx("commit"))?;
        self.move_main(repo, head, commit, &format!("commit: {what}"))?;
        Ok(Some(commit))
    }

    /// Moves `main` from `from` to `to`, flushing the vault first.
    ///
    /// What `to` records was read from the working tree (or checked out into it) before this
    /// call, and its objects are written; the flush puts all of that on disk before `main`
    /// says so. A crash can then leave `main` behind the files, never ahead of them, so the
    /// next commit only records later changes and never undoes a claim or a merge that `main`
    /// (and perhaps the remote) already holds (`specs/sync.md`, "Durability").
    pub(super) fn move_main(
        &self,
        repo: &Repository,
        from: Option<Oid>,
        to: Oid,
        log: &str,
    ) -> Result<(), SyncError> {
        (self.flush)(&self.vault)?;
        // Only this replica moves `main`, under its lock; the compare guards that anyway.
        repo.reference_matching(BRANCH, to, true, from.unwrap_or(Oid::ZERO_SHA1), log)
            .map(drop)
            .map_err(SyncError::git("update main", self.vault.root()))
    }

    /// Fetch, merge and push until the remote holds this replica's commits, at most
    /// [`PUSH_ATTEMPTS`] pushes. `fetch_first: false` tries the push first (a claim's
    /// fast path: one round trip when nobody else pushed). With `claimed`, it stops as soon
    /// as a merge shows that task lost: the claim's answer is known, and the merge commit
    /// can wait for the next sync.
    pub(super) fn exchange(
        &self,
        git: &mut Git,
        report: &mut SyncReport,
        fetch_first: bool,
        claimed: Option<&TaskId>,
    ) -> Result<(), SyncError> {
        let root = self.vault.root();
        let Some(url) = configured_url(&git.repo) else {
            report.offline = Some(NO_REMOTE.to_owned());
            return Ok(());
        };
        let kind = checked_kind(&url)?;
        let mut fetch_now = fetch_first;
        // A sync has committed everything already; a claim only its own paths, so before
        // its first merge it commits the rest, which the merge then treats like any change.
        let mut all_committed = fetch_first;
        for attempt in 0..PUSH_ATTEMPTS {
            if fetch_now {
                if attempt > 0 {
                    backoff(attempt);
                }
                if !all_committed {
                    self.commit_all(git, report, "local changes")?;
                    all_committed = true;
                }
                let first_contact = ref_target(&git.repo, TRACKING).is_none();
                if let Err(reason) = repo::fetch(&git.repo) {
                    report.offline = Some(format!("cannot reach {url}: {reason}"));
                    return Ok(());
                }
                self.integrate(git, &url, first_contact, report)?;
                if claimed.is_some_and(|id| report.lost_claims.iter().any(|l| &l.task_id == id)) {
                    return Ok(());
                }
            }
            fetch_now = true;
            let Some(head) = ref_target(&git.repo, BRANCH) else {
                return Ok(());
            };
            let remote = ref_target(&git.repo, TRACKING);
            if remote == Some(head) {
                return Ok(());
            }
            let ahead = match remote {
                Some(remote) => git
                    .repo
                    .graph_ahead_behind(head, remote)
                    .map(|(ahead, _)| ahead)
                    .unwrap_or(0),
                None => count_commits(&git.repo, head, root)?,
            };
            match repo::push(&git.repo, &kind, head, remote) {
                Ok(()) => {
                    report.pushed += ahead;
                    return Ok(());
                }
                // Someone pushed first: fetch, merge, try again.
                Err(PushError::Rejected(reason)) => {
                    tracing::debug!(agent = %self.agent, %reason, "push refused; merging first");
                }
                Err(PushError::Unreachable(reason)) => {
                    report.offline = Some(format!("cannot push to {url}: {reason}"));
                    return Ok(());
                }
            }
        }
        Err(SyncError::RemoteKeptMoving {
            url,
            attempts: PUSH_ATTEMPTS,
        })
    }

    /// Brings the fetched remote `main` into local `main`: nothing, a fast-forward, or the
    /// semantic merge and a merge commit. The result is checked out.
    ///
    /// The remote's tree is checked first ([`incoming`]): what this replica does not take
    /// (links, unsafe names, oversized files, changes to the paths it writes alone) is
    /// undone in what it merges, reported in `refused`, and the result is a merge commit even
    /// where a fast-forward would do, so the next push takes the refused entries off the
    /// remote's tip.
    fn integrate(
        &self,
        git: &mut Git,
        url: &str,
        first_contact: bool,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let root = self.vault.root();
        let gitx = |action| SyncError::git(action, root);
        let repo = &git.repo;
        let Some(remote) = ref_target(repo, TRACKING) else {
            return Ok(()); // The remote has no commits yet.
        };
        let tree_of = |commit: Oid| repo.find_commit(commit).and_then(|c| c.tree());
        let remote_tree = tree_of(remote).map_err(gitx("read tree"))?;
        let Some(local) = ref_target(repo, BRANCH) else {
            // Nothing here yet: the remote's tree is all there is, checked whole.
            report.pulled += count_commits(repo, remote, root)?;
            let refused = incoming::check_tree(repo, None, &remote_tree);
            if refused.is_empty() {
                return self.check_out(git, remote, report);
            }
            let files = incoming::plain_files(repo, &remote_tree);
            let commit = self.commit_accepted(repo, &files, &[remote], url, &refused)?;
            note_refused(
                &self.agent,
                &mut git.refused,
                &mut git.last_refused_at,
                report,
                refused,
            );
            return self.check_out(git, commit, report);
        };
        if local == remote {
            return Ok(());
        }
        let base = match repo.merge_base(local, remote) {
            Ok(base) => Some(base),
            // Unrelated histories are merged only at first contact (adopting a vault that
            // was laid out before it had a remote); later they mean a replaced remote.
            Err(e) if e.code() == ErrorCode::NotFound && first_contact => None,
            Err(e) if e.code() == ErrorCode::NotFound => {
                return Err(SyncError::UnrelatedHistory {
                    url: url.to_owned(),
                    vault: root.to_path_buf(),
                });
            }
            Err(e) => return Err(gitx("merge-base")(e)),
        };
        if base == Some(remote) {
            return Ok(()); // Only we moved on: nothing to bring in.
        }
        let (_, behind) = repo
            .graph_ahead_behind(local, remote)
            .map_err(gitx("ahead-behind"))?;
        report.pulled += behind;
        let base_tree = base.map(tree_of).transpose().map_err(gitx("read tree"))?;
        let mut refused = incoming::check_tree(repo, base_tree.as_ref(), &remote_tree);
        let clean = refused.is_empty()
            && !incoming::touches_own_paths(
                base_tree.as_ref(),
                &remote_tree,
                self.zone,
                &self.agent,
            );
        if clean && base == Some(local) {
            // Only the remote moved on: fast-forward, noting claims of ours it ended.
            for lost in lost_in_fast_forward(repo, local, remote, &self.agent)? {
                report.lose(lost);
            }
            return self.check_out(git, remote, report);
        }
        let flat = |commit| flat_files(repo, commit, url, root);
        let base_files = flat(base)?;
        let remote_files = if clean {
            flat(Some(remote))?
        } else {
            let plain = incoming::plain_files(repo, &remote_tree);
            incoming::accepted(&base_files, plain, self.zone, &self.agent, &mut refused)
        };
        let cx = MergeContext {
            repo,
            agent: &self.agent,
            zone: self.zone,
            now: Utc::now(),
        };
        let mut merged =
            merge(&cx, &base_files, &flat(Some(local))?, &remote_files).map_err(gitx("merge"))?;
        incoming::keep_plain(&mut merged.files, &mut refused);
        let tree = write_files(repo, &merged.files).map_err(gitx("merge"))?;
        let tree = repo.find_tree(tree).map_err(gitx("merge"))?;
        let parents = [
            repo.find_commit(local).map_err(gitx("merge"))?,
            repo.find_commit(remote).map_err(gitx("merge"))?,
        ];
        let mut message = format!("aie {}: merge {behind} commit(s) from {url}", self.agent);
        for line in merged.conflicts.iter() {
            message.push_str(&format!("\n\nconflict: {line}"));
        }
        for lost in &merged.lost_claims {
            let owner = lost
                .owner
                .as_ref()
                .map_or("nobody".to_owned(), ToString::to_string);
            message.push_str(&format!("\n\nlost claim: {} (now {owner})", lost.task_id));
        }
        for r in &refused {
            message.push_str(&format!("\n\nrefused: {}: {}", r.path, r.reason));
        }
        let sig = signature(self.agent.as_str()).map_err(gitx("merge"))?;
        let commit = repo
            .commit(
                None,
                &sig,
                &sig,
                &message,
                &tree,
                &[&parents[0], &parents[1]],
            )
            .map_err(gitx("merge"))?;
        report.conflicts.extend(merged.conflicts);
        for lost in merged.lost_claims {
            report.lose(lost);
        }
        note_refused(
            &self.agent,
            &mut git.refused,
            &mut git.last_refused_at,
            report,
            refused,
        );
        self.check_out(git, commit, report)
    }

    /// Commits `files` on top of `parents` with the refusals in its message: what this
    /// replica took of a remote tree it could not take whole.
    fn commit_accepted(
        &self,
        repo: &Repository,
        files: &repo::Files,
        parents: &[Oid],
        url: &str,
        refused: &[Refused],
    ) -> Result<Oid, SyncError> {
        let gitx = |action| SyncError::git(action, self.vault.root());
        let tree = write_files(repo, files).map_err(gitx("merge"))?;
        let tree = repo.find_tree(tree).map_err(gitx("merge"))?;
        let parents = parents
            .iter()
            .map(|p| repo.find_commit(*p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(gitx("merge"))?;
        let mut message = format!("aie {}: take what may be taken from {url}", self.agent);
        for r in refused {
            message.push_str(&format!("\n\nrefused: {}: {}", r.path, r.reason));
        }
        let sig = signature(self.agent.as_str()).map_err(gitx("merge"))?;
        repo.commit(
            None,
            &sig,
            &sig,
            &message,
            &tree,
            &parents.iter().collect::<Vec<_>>(),
        )
        .map_err(gitx("merge"))
    }

    /// Checks `commit` out into the working tree and moves `main` to it, once the files are
    /// flushed to disk ([`Replica::move_main`]).
    ///
    /// Safe mode: a file that differs from the last commit is never overwritten or deleted,
    /// and neither is an ignored file. Local changes are committed before any merge, so
    /// such a file was changed during the sync, or is a blocked file: it is set aside as a
    /// conflict copy and the merged version put in its place, so a task never ends up in
    /// two places (see [`Replica::set_aside`]).
    fn check_out(&self, git: &Git, commit: Oid, report: &mut SyncReport) -> Result<(), SyncError> {
        let root = self.vault.root();
        let gitx = |action| SyncError::git(action, root);
        let repo = &git.repo;
        let tree = repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(gitx("checkout"))?;
        let from = ref_target(repo, BRANCH);
        let old_tree = match from {
            Some(commit) => Some(
                repo.find_commit(commit)
                    .and_then(|c| c.tree())
                    .map_err(gitx("checkout"))?,
            ),
            None => None,
        };
        let paths = changed_paths(repo, old_tree.as_ref(), &tree).map_err(gitx("checkout"))?;
        CheckoutJournal::begin(repo, from, commit, paths).map_err(SyncError::io(repo.path()))?;
        let skipped = std::cell::RefCell::new(Vec::<PathBuf>::new());
        let mut options = CheckoutBuilder::new();
        options
            .safe()
            .allow_conflicts(true)
            .overwrite_ignored(false)
            .notify_on(CheckoutNotificationType::CONFLICT)
            .notify(|_, path, _, _, _| {
                if let Some(path) = path {
                    skipped.borrow_mut().push(path.to_path_buf());
                }
                true
            });
        repo.checkout_tree(tree.as_object(), Some(&mut options))
            .map_err(gitx("checkout"))?;
        drop(options);
        for path in skipped.into_inner() {
            if let Some(copy) = self.set_aside(repo, &tree, &path)? {
                report.conflicts.push(format!(
                    "{}: changed here while the sync was merging; the merged version is in \
                     place and this replica's is kept as {copy}",
                    path.display()
                ));
            }
        }
        self.move_main(repo, from, commit, "aie: sync")?;
        // The index follows the new commit; entries whose blob did not change keep their
        // stat, so the next status does not read unchanged files again.
        let mut index = repo.index().map_err(gitx("index"))?;
        index.read_tree(&tree).map_err(gitx("index"))?;
        index.write().map_err(gitx("index write"))?;
        CheckoutJournal::end(repo).map_err(SyncError::io(repo.path()))
    }

    /// Sets aside a file the checkout could not update: this replica's version becomes a
    /// conflict copy (a task's in `Needs_Action/conflicts/`, any other file's beside it) and
    /// `tree`'s version takes its place. Returns the copy's path; `None` when nothing was
    /// moved: not a file, or a file whose name marks it as a secret (a copy could lose the
    /// name that keeps it out of commits).
    pub(super) fn set_aside(
        &self,
        repo: &Repository,
        tree: &git2::Tree<'_>,
        path: &Path,
    ) -> Result<Option<String>, SyncError> {
        let root = self.vault.root();
        let Some(rel) = path.to_str().map(str::to_owned) else {
            return Ok(None);
        };
        let local = root.join(&rel);
        let is_file = fs::symlink_metadata(&local).is_ok_and(|m| m.is_file());
        if secret_name_reason(&rel).is_some() || !is_file {
            return Ok(None);
        }
        let stamp = Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let name = |suffix: &str| match classify(&rel) {
            Some(file) => format!(
                "{NEEDS_ACTION}/{CONFLICTS}/{}.conflict-{}-{stamp}{suffix}.md",
                file.id, self.agent
            ),
            None => conflict_copy_name(&rel, &self.agent, &stamp, suffix),
        };
        let mut n = 1;
        let copy = loop {
            let candidate = name(&if n == 1 {
                String::new()
            } else {
                format!("-{n}")
            });
            let free = fs::symlink_metadata(root.join(&candidate)).is_err()
                && tree.get_path(Path::new(&candidate)).is_err();
            if free {
                break candidate;
            }
            n += 1;
        };
        let copy_path = root.join(&copy);
        if let Some(dir) = copy_path.parent() {
            self.vault.make_dir(dir).map_err(SyncError::io(dir))?;
        }
        // Never through a link, on either side.
        self.vault
            .move_file(&local, &copy_path)
            .map_err(SyncError::io(&local))?;
        if let Ok(entry) = tree.get_path(path) {
            let blob = repo
                .find_blob(entry.id())
                .map_err(SyncError::git("checkout", root))?;
            restore(&self.vault, &local, Some(blob.content()))?;
        }
        Ok(Some(copy))
    }

    /// After a sync that reached the remote, pending claims still held are confirmed (the
    /// lost ones were reported by the merge).
    pub(super) fn settle_pending(
        &self,
        git: &mut Git,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let head = ref_target(&git.repo, BRANCH);
        let on_remote = report.offline.is_none() && head == ref_target(&git.repo, TRACKING);
        if !on_remote {
            return Ok(());
        }
        for id in std::mem::take(&mut git.pending) {
            let mine = format!("{IN_PROGRESS}/{}/{}", self.agent, id.file_name());
            if tree_has(&git.repo, head, &mine) {
                report.confirmed_claims.push(id);
            }
        }
        Ok(())
    }
}

/// Reports what was refused: in the sync report, in `status` (`last`, with its time), and in
/// the log.
fn note_refused(
    agent: &AgentName,
    last: &mut Vec<Refused>,
    last_at: &mut Option<chrono::DateTime<Utc>>,
    report: &mut SyncReport,
    refused: Vec<Refused>,
) {
    if refused.is_empty() {
        return;
    }
    for r in &refused {
        tracing::warn!(%agent, path = %r.path, reason = %r.reason, "the remote's change was refused");
    }
    last.clone_from(&refused);
    *last_at = Some(Utc::now());
    report.refused.extend(refused);
}

/// Waits a little before retrying a refused push, longer each time and never the same for
/// two replicas, so replicas racing for the remote take turns instead of colliding again.
fn backoff(attempt: usize) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let ceiling_ms = 1u64 << attempt.min(6);
    let jitter_ms = u64::from(nanos) % ceiling_ms;
    std::thread::sleep(Duration::from_millis(1 + jitter_ms));
}

/// Flattens a commit's tree for the merge, naming the remote if a name is not UTF-8.
fn flat_files(
    repo: &Repository,
    commit: Option<Oid>,
    url: &str,
    root: &Path,
) -> Result<repo::Files, SyncError> {
    files_of(repo, commit).map_err(|e| match e {
        FlattenError::Git(e) => SyncError::git("read tree", root)(e),
        FlattenError::NonUtf8(name) => SyncError::NonUtf8Path {
            url: url.to_owned(),
            name,
        },
    })
}

/// How many commits are reachable from `tip`.
pub(super) fn count_commits(repo: &Repository, tip: Oid, root: &Path) -> Result<usize, SyncError> {
    let gitx = |action| SyncError::git(action, root);
    let mut walk = repo.revwalk().map_err(gitx("log"))?;
    walk.push(tip).map_err(gitx("log"))?;
    Ok(walk.count())
}

/// Whether the commit's tree has a file at `path`.
pub(super) fn tree_has(repo: &Repository, commit: Option<Oid>, path: &str) -> bool {
    commit
        .and_then(|c| repo.find_commit(c).ok())
        .and_then(|c| c.tree().ok())
        .is_some_and(|tree| tree.get_path(Path::new(path)).is_ok())
}

/// Where a task is in a commit's tree, and who holds or finished it.
pub(super) struct Found {
    /// Its path.
    pub(super) path: String,
    /// Its holder (`In_Progress/<agent>/`) or finisher (`owner` of its `Done/` file).
    pub(super) owner: Option<AgentName>,
}

/// Finds a task in a commit's tree, in its latest state if it is in several.
pub(super) fn locate(
    repo: &Repository,
    commit: Option<Oid>,
    id: &str,
) -> Result<Option<Found>, git2::Error> {
    let Some(commit) = commit else {
        return Ok(None);
    };
    let tree = repo.find_commit(commit)?.tree()?;
    let file = format!("{id}.md");
    let mut candidates: Vec<String> = vec![format!("{DONE}/{file}")];
    if let Ok(entry) = tree.get_path(Path::new(IN_PROGRESS)) {
        for agent in repo.find_tree(entry.id())?.iter() {
            if let Ok(name) = agent.name() {
                candidates.push(format!("{IN_PROGRESS}/{name}/{file}"));
            }
        }
    }
    for domain in Domain::ALL {
        candidates.push(format!("{NEEDS_ACTION}/{domain}/{file}"));
    }
    for path in candidates {
        let Ok(entry) = tree.get_path(Path::new(&path)) else {
            continue;
        };
        let owner = match classify(&path).map(|f| f.state) {
            Some(State::InProgress(agent)) => Some(agent),
            Some(State::Done) => repo
                .find_blob(entry.id())
                .ok()
                .and_then(|b| std::str::from_utf8(b.content()).ok().map(Task::parse))
                .and_then(Result::ok)
                .and_then(|t| t.meta.owner),
            _ => None,
        };
        return Ok(Some(Found { path, owner }));
    }
    Ok(None)
}

/// The claims `agent` held at `local` that the fast-forward to `remote` ends.
fn lost_in_fast_forward(
    repo: &Repository,
    local: Oid,
    remote: Oid,
    agent: &AgentName,
) -> Result<Vec<LostClaim>, SyncError> {
    let root = repo.workdir().unwrap_or_else(|| repo.path()).to_path_buf();
    let gitx = |action| SyncError::git(action, &root);
    let held = |commit: Oid| -> Result<BTreeSet<String>, git2::Error> {
        let tree = repo.find_commit(commit)?.tree()?;
        let Ok(entry) = tree.get_path(&PathBuf::from(IN_PROGRESS).join(agent.as_str())) else {
            return Ok(BTreeSet::new());
        };
        Ok(repo
            .find_tree(entry.id())?
            .iter()
            .filter_map(|e| e.name().ok()?.strip_suffix(".md").map(str::to_owned))
            .filter(|stem| TaskId::new(stem.as_str()).is_ok())
            .collect())
    };
    let before = held(local).map_err(gitx("read tree"))?;
    let after = held(remote).map_err(gitx("read tree"))?;
    let mut lost = Vec::new();
    for id in before.difference(&after) {
        let Ok(task_id) = TaskId::new(id.as_str()) else {
            continue;
        };
        let found = locate(repo, Some(remote), id).map_err(gitx("read tree"))?;
        lost.push(LostClaim {
            task_id,
            owner: found.as_ref().and_then(|f| f.owner.clone()),
            path: found.map(|f| f.path).unwrap_or_default(),
        });
    }
    Ok(lost)
}
