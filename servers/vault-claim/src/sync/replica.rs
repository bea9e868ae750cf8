//! The replica: a vault directory that is a git clone of the remote, and the operations
//! that keep it in step with the other replicas: sync, claims that hold across replicas,
//! stale-claim release, status and the dashboard.
//!
//! Every operation here is blocking (git2 and the filesystem); async callers use
//! `spawn_blocking`, as [`spawn_sync_loop`] does. One mutex serialises a replica's git work,
//! so a sync never checks out files under a claim that is being committed.
//!
//! This file holds the public operations; `setup` (opening: clone, init, adopt) and
//! `exchange` (commit, the fetch–merge–push loop, checkout) hold the git work they share.

use std::{
    collections::BTreeSet,
    path::Path,
    sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError},
    time::Duration,
};

use aie_shared::{
    audit::{AuditLog, ToolCall},
    policy::EffectClass,
    vault::{AgentName, TaskId, Vault, VaultError, layout::IN_PROGRESS},
};
use chrono::{DateTime, TimeDelta, Utc};
use git2::Repository;

use super::{
    SyncError, dashboard,
    paths::claim_paths,
    repo::{BRANCH, TRACKING, ref_target},
    report::{Blocked, ClaimOutcome, Refused, Released, ReplicaStatus, SyncReport, Zone},
    stage::stage_paths,
};

mod exchange;
use exchange::{count_commits, locate, tree_has};

mod journal;

mod setup;
#[cfg(test)]
mod tests;
use setup::{
    DirState, check_branch, checked_kind, clear_dir, clone_into, configured_url, init_repo, probe,
    set_origin, unfinished_clone,
};

/// How many times a push refused by a moving remote is retried (each after a fetch and a
/// merge) before the operation gives up and leaves its commits for the next sync.
const PUSH_ATTEMPTS: usize = 10;

/// The offline reason of a replica without a remote.
const NO_REMOTE: &str = "no remote configured; commits stay in this vault";

/// A vault directory kept in step with the other replicas through one git remote.
#[derive(Debug)]
pub struct Replica {
    /// The vault, for the claim-by-move and listings.
    vault: Vault,
    /// The agent this replica acts for; its claims live in `In_Progress/<agent>/`.
    agent: AgentName,
    /// The zone it runs in.
    zone: Zone,
    /// Told the owner's hand moves into `Approved/` before each full commit records them.
    before_commit: std::sync::OnceLock<BeforeCommit>,
    /// The repository and sync state; the lock serialises this replica's git work.
    git: Mutex<Git>,
    /// Makes the vault durable before `main` moves ([`Vault::flush`]); a field so tests can
    /// watch when it runs.
    flush: fn(&Vault) -> Result<(), VaultError>,
    /// Where syncs record what they refused from the remote, once attached.
    audit: OnceLock<AuditLog>,
}

/// The repository and what the replica remembers between syncs.
struct Git {
    /// The vault's git repository.
    repo: Repository,
    /// When a sync last reached the remote.
    last_sync: Option<DateTime<Utc>>,
    /// The last failure or offline reason.
    last_error: Option<String>,
    /// Files held back at the last full commit.
    blocked: Vec<Blocked>,
    /// What the remote brought that this replica last refused, and when.
    refused: Vec<Refused>,
    /// When something from the remote was last refused.
    last_refused_at: Option<DateTime<Utc>>,
    /// Claims committed locally and not yet seen on the remote.
    pending: BTreeSet<TaskId>,
    /// What merges made during claims and releases settled, handed out with the next sync
    /// report so no lost claim or conflict goes unreported.
    carry: SyncReport,
}

impl std::fmt::Debug for Git {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Git")
            .field("repo", &self.repo.path())
            .field("last_sync", &self.last_sync)
            .field("last_error", &self.last_error)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// Opens the vault at `vault_dir` as a replica of `remote_url` (branch `main`).
    ///
    /// A missing or empty folder is cloned from the remote, or laid out, committed and pushed
    /// when the remote has no commits yet. A vault that is not yet a git repository gets one,
    /// with the remote configured, and is merged with what the remote holds. A remote that
    /// cannot be reached while setting up (or that replaces the configured one) is an error
    /// naming the URL, and the vault is left as it was; once set up, an unreachable remote
    /// only makes syncs report `offline`.
    pub fn open(
        vault_dir: impl AsRef<Path>,
        remote_url: Option<&str>,
        agent: AgentName,
        zone: Zone,
    ) -> Result<Self, SyncError> {
        let root = vault_dir.as_ref().to_path_buf();
        // A clone a crash cut off holds nothing of this replica's: start it over, from the
        // remote it was cloning unless another is given.
        let resumed = unfinished_clone(&root);
        if let Some(from) = &resumed {
            tracing::warn!(vault = %root.display(), url = ?from.url, "a clone did not finish; cloning again");
            clear_dir(&root)?;
        }
        let remote_url = remote_url.or(resumed.as_ref().and_then(|from| from.url.as_deref()));
        let remote = match remote_url {
            Some(url) => Some((url.to_owned(), checked_kind(url)?)),
            None => None,
        };
        let layout = DirState::of(&root)?;
        let existing = match layout {
            DirState::Git => Some(Repository::open(&root).map_err(SyncError::git("open", &root))?),
            _ => None,
        };
        let configured = existing.as_ref().and_then(configured_url);
        // Look at a new remote before touching anything, so a wrong URL changes nothing.
        let mut remote_has_main = false;
        if let Some((url, kind)) = &remote
            && configured.as_deref() != Some(url.as_str())
        {
            remote_has_main = probe(&root, url, kind)?.is_some();
        }
        let mut cloned_refused = Vec::new();
        let (repo, first_sync) = match (layout, existing, &remote) {
            (DirState::Git, Some(repo), _) => {
                check_branch(&repo, &root)?;
                if let Some((url, _)) = &remote {
                    set_origin(&repo, url, &root)?;
                }
                (repo, false)
            }
            (DirState::Missing | DirState::Empty, _, Some((url, _))) => {
                let (repo, refused) =
                    clone_into(&root, url, remote_has_main, layout == DirState::Missing)?;
                cloned_refused = refused;
                // An empty remote gets the new layout right away.
                (repo, !remote_has_main)
            }
            (_, _, remote) => {
                // No remote to clone from, or a plain folder to adopt: init in place.
                let repo = init_repo(&root)?;
                if let Some((url, _)) = remote {
                    set_origin(&repo, url, &root)?;
                }
                (repo, remote.is_some())
            }
        };
        // Lays out whatever is missing; never replaces a file.
        let vault = Vault::init(&root)?;
        let replica = Self {
            vault,
            agent,
            zone,
            git: Mutex::new(Git {
                repo,
                last_sync: None,
                last_error: None,
                blocked: Vec::new(),
                refused: Vec::new(),
                last_refused_at: None,
                pending: BTreeSet::new(),
                carry: SyncReport::default(),
            }),
            before_commit: std::sync::OnceLock::new(),
            flush: Vault::flush,
            audit: OnceLock::new(),
        };
        if !cloned_refused.is_empty() {
            let mut git = replica.lock();
            git.last_refused_at = Some(Utc::now());
            git.refused.clone_from(&cloned_refused);
            git.carry.refused = cloned_refused;
        }
        if first_sync {
            // Commit and push the new or adopted vault. Failing here is not fatal: the
            // remote was reachable a moment ago, and the next sync tries again.
            if let Err(e) = replica.sync() {
                replica.lock().last_error = Some(e.to_string());
            }
        } else {
            let mut git = replica.lock();
            let mut report = std::mem::take(&mut git.carry);
            replica.commit_all(&mut git, &mut report, "local changes")?;
            // What opening settled (an interrupted checkout undone) is told by the next sync.
            git.carry = report;
        }
        Ok(replica)
    }

    /// The same replica with another claim lease for new claims.
    pub fn with_lease(mut self, lease: TimeDelta) -> Self {
        self.vault = self.vault.with_lease(lease);
        self
    }

    /// The vault, for reads. Changes should go through [`Replica::with_vault`].
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// Runs `f` on the vault while no git work runs, so a checkout never meets a move.
    pub fn with_vault<T>(&self, f: impl FnOnce(&Vault) -> T) -> T {
        let _git = self.lock();
        f(&self.vault)
    }

    /// This replica's agent.
    pub fn agent(&self) -> &AgentName {
        &self.agent
    }

    /// This replica's zone.
    pub fn zone(&self) -> Zone {
        self.zone
    }

    /// The configured remote's URL, if any.
    pub fn remote_url(&self) -> Option<String> {
        configured_url(&self.lock().repo)
    }

    /// Points the replica at another remote URL, without looking at it: an unreachable one
    /// shows up as `offline` at the next sync.
    pub fn set_remote_url(&self, url: &str) -> Result<(), SyncError> {
        checked_kind(url)?;
        let git = self.lock();
        set_origin(&git.repo, url, self.vault.root())
    }

    /// Commits local changes (secrets left out), fetches, merges by task id, and pushes.
    ///
    /// An unreachable remote is not an error: the commits wait, and `offline` says why.
    pub fn sync(&self) -> Result<SyncReport, SyncError> {
        let mut git = self.lock();
        let mut report = std::mem::take(&mut git.carry);
        let result = self
            .commit_all(&mut git, &mut report, "local changes")
            .and_then(|()| self.exchange(&mut git, &mut report, true, None))
            .and_then(|()| self.settle_pending(&mut git, &mut report));
        self.record(&mut git, &report, result.as_ref().err());
        self.audit_refused(&report);
        result.map(|()| report)
    }

    /// Attaches the audit log that syncs record refusals in (`specs/sync.md`, "What a replica
    /// accepts from the remote"); the first one attached stays.
    pub fn set_audit(&self, log: AuditLog) {
        let _ = self.audit.set(log);
    }

    /// One audit record naming what a sync refused from the remote, if anything.
    fn audit_refused(&self, report: &SyncReport) {
        let Some(log) = self.audit.get() else {
            return;
        };
        if report.refused.is_empty() {
            return;
        }
        let names: Vec<String> = report
            .refused
            .iter()
            .map(|r| format!("{}: {}", r.path, r.reason))
            .collect();
        let call = ToolCall::new(
            self.zone,
            "sync",
            "",
            "vault_sync",
            EffectClass::Draft,
            &serde_json::Value::Null,
        )
        .reason(format!("refused from the remote: {}", names.join("; ")));
        if let Err(e) = log.append(call) {
            tracing::error!(agent = %self.agent, error = %e, "cannot audit what the sync refused");
        }
    }

    /// Claims a task for this replica's agent across replicas: the claim-by-move, a commit,
    /// and a push. It holds ([`ClaimOutcome::Confirmed`]) only once its commit is on the
    /// remote; if another agent's claim got there first, the task is given up here and the
    /// answer is [`ClaimOutcome::Lost`] naming that agent; if the remote cannot be reached,
    /// the claim is [`ClaimOutcome::Pending`] until a sync confirms it or reports it lost.
    pub fn claim(&self, id: &TaskId) -> Result<ClaimOutcome, SyncError> {
        let mut git = self.lock();
        self.finish_checkout_for_next_sync(&mut git)?;
        let claim = match self.vault.claim(id, &self.agent) {
            Ok(claim) => claim,
            Err(VaultError::AlreadyClaimed { owner, .. }) => {
                return Ok(ClaimOutcome::Lost {
                    task_id: id.clone(),
                    owner: Some(owner),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let root = self.vault.root();
        // The commit carries the claim's owner and lease; a renewal wrote them already.
        self.vault
            .stamp_claims(&[(self.agent.clone(), id.clone())])?;
        let staging = stage_paths(&git.repo, root, &claim_paths(id, &self.agent))?;
        if let Some(blocked) = staging.blocked.iter().find(|b| b.path == claim.path) {
            // The claimed file can never be committed: give the claim back rather than hold a
            // task no other replica can see.
            let _ = self.vault.release(id, &self.agent);
            return Err(SyncError::ClaimBlocked {
                id: id.clone(),
                path: blocked.path.clone(),
                reason: blocked.reason.clone(),
            });
        }
        let verb = if claim.renewed {
            "renew claim on"
        } else {
            "claim"
        };
        self.commit(&mut git, staging.tree, &format!("{verb} {id}"))?;
        let mut report = SyncReport::default();
        let exchanged = self.exchange(&mut git, &mut report, false, Some(id));
        let outcome = self.claim_outcome(&mut git, id, claim, &report, exchanged);
        self.carry_over(&mut git, report, Some(id));
        outcome
    }

    /// Where a claim stands after its push (or failed push).
    fn claim_outcome(
        &self,
        git: &mut Git,
        id: &TaskId,
        claim: aie_shared::vault::Claim,
        report: &SyncReport,
        exchanged: Result<(), SyncError>,
    ) -> Result<ClaimOutcome, SyncError> {
        let reason = match exchanged {
            Ok(()) => report.offline.clone(),
            // Merges and pushes kept failing to land: the local commit waits for a sync.
            Err(e @ SyncError::RemoteKeptMoving { .. }) => Some(e.to_string()),
            Err(e) => return Err(e),
        };
        let head = ref_target(&git.repo, BRANCH);
        let mine = format!("{IN_PROGRESS}/{}/{}", self.agent, id.file_name());
        if !tree_has(&git.repo, head, &mine) {
            // A merge gave the task to the agent whose claim reached the remote first.
            git.pending.remove(id);
            let owner = match report.lost_claims.iter().find(|l| &l.task_id == id) {
                Some(lost) => lost.owner.clone(),
                None => locate(&git.repo, head, id.as_str())
                    .ok()
                    .flatten()
                    .and_then(|found| found.owner),
            };
            return Ok(ClaimOutcome::Lost {
                task_id: id.clone(),
                owner,
            });
        }
        match reason {
            // Without a remote there is no other replica: the local claim is the claim.
            Some(reason) if reason != NO_REMOTE => {
                git.pending.insert(id.clone());
                git.last_error = Some(reason.clone());
                Ok(ClaimOutcome::Pending { claim, reason })
            }
            _ => {
                git.pending.remove(id);
                Ok(ClaimOutcome::Confirmed { claim })
            }
        }
    }

    /// Returns a stale claim to `Needs_Action/`: the holder may, and so may the local zone
    /// for anyone's claim. Only a claim whose lease ran out (or that has none) is released.
    pub fn release_stale(&self, id: &TaskId) -> Result<Released, SyncError> {
        let mut git = self.lock();
        self.finish_checkout_for_next_sync(&mut git)?;
        let stored = self.vault.read_task(id)?;
        let Some(owner) = stored.holder.clone() else {
            return Err(SyncError::NotClaimed {
                id: id.clone(),
                folder: stored.path,
            });
        };
        if owner != self.agent && self.zone != Zone::Local {
            return Err(SyncError::NotAllowedToRelease {
                id: id.clone(),
                owner,
            });
        }
        if let Some(until) = stored.task.meta.lease_until.filter(|u| *u >= Utc::now()) {
            return Err(SyncError::LeaseNotStale {
                id: id.clone(),
                owner,
                lease_until: until.to_rfc3339(),
            });
        }
        let path = self.vault.release(id, &owner)?;
        let staging = stage_paths(&git.repo, self.vault.root(), &claim_paths(id, &owner))?;
        self.commit(
            &mut git,
            staging.tree,
            &format!("release stale claim of {owner} on {id}"),
        )?;
        let mut report = SyncReport::default();
        let exchanged = self.exchange(&mut git, &mut report, false, None);
        let offline = match exchanged {
            Ok(()) => report.offline.clone().filter(|r| r != NO_REMOTE),
            Err(e @ SyncError::RemoteKeptMoving { .. }) => Some(e.to_string()),
            Err(e) => return Err(e),
        };
        self.carry_over(&mut git, report, None);
        Ok(Released {
            task_id: id.clone(),
            previous_owner: owner,
            path,
            offline,
        })
    }

    /// The replica's sync state: ahead and behind, last sync and error, blocked files,
    /// pending claims, counts per folder.
    pub fn status(&self) -> Result<ReplicaStatus, SyncError> {
        let git = self.lock();
        let root = self.vault.root();
        let head = ref_target(&git.repo, BRANCH);
        let tracking = ref_target(&git.repo, TRACKING);
        let (ahead, behind) = match (head, tracking) {
            (Some(h), Some(t)) => git
                .repo
                .graph_ahead_behind(h, t)
                .map_err(SyncError::git("ahead-behind", root))?,
            (Some(h), None) => (count_commits(&git.repo, h, root)?, 0),
            (None, Some(t)) => (0, count_commits(&git.repo, t, root)?),
            (None, None) => (0, 0),
        };
        Ok(ReplicaStatus {
            agent: self.agent.clone(),
            zone: self.zone,
            remote: configured_url(&git.repo),
            ahead,
            behind,
            last_sync: git.last_sync,
            last_error: git.last_error.clone(),
            blocked: git.blocked.clone(),
            refused: git.refused.clone(),
            last_refused_at: git.last_refused_at,
            pending_claims: git.pending.iter().cloned().collect(),
            counts: dashboard::count_folders(root),
            conflicts: dashboard::conflict_files(root),
        })
    }

    /// Rebuilds `Dashboard.md` from the vault (local zone only); returns whether it changed.
    /// The change is committed by the next sync.
    pub fn refresh_dashboard(&self) -> Result<bool, SyncError> {
        if self.zone != Zone::Local {
            return Err(SyncError::DashboardIsLocal);
        }
        let _git = self.lock();
        dashboard::refresh(&self.vault)
    }

    /// One round of the sync loop: sync, and in the local zone rebuild the dashboard and
    /// sync again if it changed.
    pub fn sync_round(&self) -> Result<SyncReport, SyncError> {
        let mut report = self.sync()?;
        if self.zone == Zone::Local && self.refresh_dashboard()? {
            let again = self.sync()?;
            report.pushed += again.pushed;
            report.pulled += again.pulled;
            report.conflicts.extend(again.conflicts);
            for lost in again.lost_claims {
                report.lose(lost);
            }
            report.confirmed_claims.extend(again.confirmed_claims);
            report.blocked = again.blocked;
            report.refused.extend(again.refused);
            report.offline = again.offline;
        }
        Ok(report)
    }

    /// Locks the git state. A panic while it was held leaves nothing half-done that the
    /// next operation cannot see on disk, so a poisoned lock is taken over.
    fn lock(&self) -> MutexGuard<'_, Git> {
        self.git.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers the outcome of a sync for `status`.
    fn record(&self, git: &mut Git, report: &SyncReport, error: Option<&SyncError>) {
        match (error, &report.offline) {
            (Some(e), _) => git.last_error = Some(e.to_string()),
            (None, Some(reason)) => git.last_error = Some(reason.clone()),
            (None, None) => {
                git.last_error = None;
                git.last_sync = Some(Utc::now());
            }
        }
    }

    /// Undoes an interrupted checkout before an operation that commits on its own (a claim,
    /// a stale release); what that settled is told by the next sync.
    fn finish_checkout_for_next_sync(&self, git: &mut Git) -> Result<(), SyncError> {
        let mut settled = SyncReport::default();
        self.finish_interrupted_checkout(git, &mut settled)?;
        self.carry_over(git, settled, None);
        Ok(())
    }

    /// Keeps what a claim's or release's merges settled (conflicts, other lost claims) for
    /// the next sync report; the claimed task's own loss is answered by the claim itself.
    fn carry_over(&self, git: &mut Git, report: SyncReport, answered: Option<&TaskId>) {
        git.carry.conflicts.extend(report.conflicts);
        git.carry.refused.extend(report.refused);
        for lost in report.lost_claims {
            if Some(&lost.task_id) != answered {
                git.carry.lose(lost);
            }
        }
    }
}

/// What a replica calls with the hand moves it finds in `Approved/` before a full commit
/// (see [`Replica::set_before_commit`]).
pub type BeforeCommitHook = Box<dyn Fn(&[aie_shared::vault::ApprovalId]) + Send + Sync>;

/// The installed [`BeforeCommitHook`].
struct BeforeCommit(BeforeCommitHook);

impl std::fmt::Debug for BeforeCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeCommit(..)")
    }
}

impl Replica {
    /// Installs `hook`, called with the owner's hand moves into `Approved/` (uncommitted
    /// moves of pending requests, [`super::hand_moves`]) at the start of every full commit,
    /// under the replica's lock: once committed, a move is no longer a hand move, so this is
    /// where the local zone adopts them (`[approvals] accept_hand_moves`). Called only when
    /// there is at least one. One hook per replica: returns `false`, installing nothing,
    /// when one is installed already.
    pub fn set_before_commit(&self, hook: BeforeCommitHook) -> bool {
        self.before_commit.set(BeforeCommit(hook)).is_ok()
    }

    /// Tells the before-commit hook, if any, the hand moves in `Approved/` now.
    fn offer_hand_moves(&self) {
        let Some(BeforeCommit(hook)) = self.before_commit.get() else {
            return;
        };
        match super::hand_moves::hand_moves(self.vault.root()) {
            Ok(ids) if ids.is_empty() => {}
            Ok(ids) => hook(&ids),
            Err(e) => {
                tracing::warn!(agent = %self.agent, error = %e, "cannot look for hand moves into Approved/; any there will be committed and set aside")
            }
        }
    }
}

/// Runs [`Replica::sync_round`] every `interval` until `shutdown` completes; each round runs
/// on the blocking pool. Failures and offline rounds are logged and the loop goes on.
pub fn spawn_sync_loop<F>(
    replica: Arc<Replica>,
    interval: Duration,
    shutdown: F,
) -> tokio::task::JoinHandle<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(interval);
        // A slow round (a large merge) delays the next one instead of bunching them up.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = ticker.tick() => {}
            }
            let round = replica.clone();
            match tokio::task::spawn_blocking(move || round.sync_round()).await {
                Ok(Ok(report)) => log_report(&replica, &report),
                Ok(Err(e)) => {
                    tracing::warn!(agent = %replica.agent(), error = %e, "vault sync failed")
                }
                Err(e) => {
                    tracing::error!(agent = %replica.agent(), error = %e, "vault sync round panicked")
                }
            }
        }
    })
}

/// Logs what a sync round did, at a level that matches.
fn log_report(replica: &Replica, report: &SyncReport) {
    let agent = replica.agent();
    if let Some(reason) = &report.offline {
        tracing::info!(%agent, %reason, "vault sync offline; commits kept locally");
    }
    for lost in &report.lost_claims {
        let owner = lost
            .owner
            .as_ref()
            .map_or("nobody".to_owned(), ToString::to_string);
        tracing::warn!(%agent, task = %lost.task_id, %owner, "claim lost to another replica");
    }
    for conflict in &report.conflicts {
        tracing::warn!(%agent, %conflict, "vault sync conflict settled");
    }
    for blocked in &report.blocked {
        tracing::warn!(%agent, path = %blocked.path, reason = %blocked.reason, "file kept out of git");
    }
    if report.pushed + report.pulled > 0 {
        tracing::debug!(%agent, pushed = report.pushed, pulled = report.pulled, "vault synced");
    }
}
