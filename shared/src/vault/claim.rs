//! Claim-by-move on one machine.
//!
//! A task is one file, and claiming it moves that file from `Needs_Action/<domain>/` to
//! `In_Progress/<agent>/` with a rename that never replaces. Of two agents racing for one
//! task, both renames name the same source; the first takes it, and the second finds the
//! source gone, looks again, and is told which agent won. The folder a task is in is the
//! truth about who holds it; `owner`, `claimed_at` and `lease_until` in the front matter are
//! written after the move, for people and for stale-lease checks.
//!
//! Durability: a claim costs one data sync (the stamped file's content, before it is renamed
//! into place). Its renames become durable at the next [`Vault::flush`], which the sync makes
//! before git records the claim; a crash before then can lose only a claim that never
//! counted, and never leaves a torn or empty task file (`specs/vault.md`, "Durability").

use std::fs;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Serialize;

use super::{
    AgentName, Domain, Task, TaskFolder, TaskId, Vault, VaultError, fsio,
    store::{Location, Place},
    task::now,
};

/// How often a claim looks again after losing a race for the file before giving up: a
/// task that keeps moving (claimed, released, claimed) is rare, and the caller may retry.
const CLAIM_ATTEMPTS: usize = 3;

/// A claim that holds: the contract's `{task_id, owner, claimed}` and the lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Claim {
    /// The task.
    pub task_id: TaskId,
    /// The agent that holds it now.
    pub owner: AgentName,
    /// Always true: a lost claim is an error, not a `Claim`.
    pub claimed: bool,
    /// True when the agent already held it and this claim only renewed the lease.
    pub renewed: bool,
    /// When it was first claimed.
    pub claimed_at: DateTime<Utc>,
    /// When the claim goes stale unless renewed.
    pub lease_until: DateTime<Utc>,
    /// Its file now, relative to the vault root.
    pub path: String,
}

/// A claim whose lease has run out: reported, never taken away automatically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct StaleLease {
    /// The task.
    pub task_id: TaskId,
    /// The agent whose folder holds it.
    pub owner: AgentName,
    /// When its lease ran out.
    pub lease_until: DateTime<Utc>,
    /// Its file, relative to the vault root.
    pub path: String,
}

impl Vault {
    /// Claims a task for `agent`: moves it to `In_Progress/<agent>/` and records the lease.
    ///
    /// Claiming a task the agent already holds renews its lease. A task held by another
    /// agent is refused with [`VaultError::AlreadyClaimed`] naming that agent.
    pub fn claim(&self, id: &TaskId, agent: &AgentName) -> Result<Claim, VaultError> {
        for _ in 0..CLAIM_ATTEMPTS {
            if let Some(claim) = self.try_claim(id, agent)? {
                return Ok(claim);
            }
        }
        // Nothing settled: either the task does not exist or it kept moving.
        if self.locate(id)?.is_empty() {
            Err(VaultError::TaskNotFound { id: id.clone() })
        } else {
            Err(VaultError::ClaimRace { id: id.clone() })
        }
    }

    /// One claim attempt; `None` when the task moved while we looked and it is worth
    /// looking again.
    ///
    /// The folders are looked at one by one, not atomically, so the order matters: holders
    /// first (a task held by anyone is never taken), then `Done/`, then `Needs_Action/`.
    fn try_claim(&self, id: &TaskId, agent: &AgentName) -> Result<Option<Claim>, VaultError> {
        let holders = self.holders(id)?;
        if let Some(other) = holders.iter().find(|h| *h != agent) {
            return Err(VaultError::AlreadyClaimed {
                id: id.clone(),
                owner: other.clone(),
            });
        }
        if !holders.is_empty() {
            let held = Location {
                place: Place::InProgress(agent.clone()),
                path: self.in_progress_dir(agent).join(id.file_name()),
            };
            return self.stamp_claim(&held, id, agent, true).map(Some);
        }
        if self.is_plain_file(&self.done_dir().join(id.file_name())) {
            return Err(VaultError::NotClaimable {
                id: id.clone(),
                folder: TaskFolder::Done,
            });
        }
        let sources = self.needs_action_copies(id);
        match sources.as_slice() {
            // Not there: claimed (or released) between our looks, or no such task.
            [] => Ok(None),
            [source] => self.take(source, id, agent),
            many => Err(self.duplicate(id, many)),
        }
    }

    /// The agents whose `In_Progress/` folder holds this task (normally none or one).
    ///
    /// Every claim attempt asks this, the losers of a race only this, so it costs one `lstat`
    /// per agent: [`Vault::agents`] lists only real folders (no links) of a real
    /// `In_Progress/`, which is what [`Vault::is_plain_file`] would check again per agent.
    pub(crate) fn holders(&self, id: &TaskId) -> Result<Vec<AgentName>, VaultError> {
        let name = id.file_name();
        Ok(self
            .agents()?
            .into_iter()
            .filter(|agent| {
                fs::symlink_metadata(self.in_progress_dir(agent).join(&name))
                    .is_ok_and(|m| m.is_file())
            })
            .collect())
    }

    /// The task's files under `Needs_Action/` (normally none or one).
    fn needs_action_copies(&self, id: &TaskId) -> Vec<Location> {
        Domain::ALL
            .into_iter()
            .map(|d| Location {
                place: Place::NeedsAction(d),
                path: self.needs_action_dir(d).join(id.file_name()),
            })
            .filter(|l| self.is_plain_file(&l.path))
            .collect()
    }

    /// Moves a task out of `Needs_Action/` into the agent's folder; `None` if another agent
    /// moved it first.
    fn take(
        &self,
        from: &Location,
        id: &TaskId,
        agent: &AgentName,
    ) -> Result<Option<Claim>, VaultError> {
        // Refuse a broken file before moving it: it stays where its author left it.
        match self.load(&from.path, id) {
            Ok(_) => {}
            // Gone since we looked: another agent took it. Look again to name it.
            Err(VaultError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        let dir = self.in_progress_dir(agent);
        fs::create_dir_all(&dir).map_err(|e| self.io(&dir, e))?;
        let to = Location {
            place: Place::InProgress(agent.clone()),
            path: dir.join(id.file_name()),
        };
        match fsio::move_no_replace(&from.path, &to.path) {
            Ok(()) => {}
            // The source vanished: another agent's rename won. Look again to name it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(self.duplicate(id, &[from.clone(), to]));
            }
            Err(e) => return Err(self.io(&to.path, e)),
        }
        // Our rename took the only unclaimed copy, so another holder now can only be a
        // duplicate that was already there (a sync); give ours back rather than share.
        if let Some(other) = self.holders(id)?.into_iter().find(|h| h != agent) {
            self.give_back(&to, from);
            return Err(VaultError::AlreadyClaimed {
                id: id.clone(),
                owner: other,
            });
        }
        match self.stamp_claim(&to, id, agent, false) {
            Ok(claim) => Ok(Some(claim)),
            Err(e @ (VaultError::BadFrontMatter { .. } | VaultError::IdMismatch { .. })) => {
                // Someone broke the file between our check and the move: give it back
                // unclaimed, as it is.
                self.give_back(&to, from);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Undoes a move we just made, without replacing anything. If even that fails, the
    /// file stays in our folder, which `check` will show; the caller's error names it.
    fn give_back(&self, taken: &Location, origin: &Location) {
        let _ = fsio::move_no_replace(&taken.path, &origin.path);
    }

    /// Records owner and lease in a task the agent holds: a first claim, or a renewal that
    /// keeps the first `claimed_at`.
    fn stamp_claim(
        &self,
        location: &Location,
        id: &TaskId,
        agent: &AgentName,
        renewed: bool,
    ) -> Result<Claim, VaultError> {
        let mut task = self.load(&location.path, id)?;
        let now = now();
        let claimed_at = match task.meta.claimed_at {
            Some(at) if renewed => at,
            _ => now,
        };
        let lease_until = now + self.lease;
        task.meta.owner = Some(agent.clone());
        task.meta.claimed_at = Some(claimed_at);
        task.meta.lease_until = Some(lease_until);
        self.rewrite(&location.path, &task)?;
        Ok(Claim {
            task_id: id.clone(),
            owner: agent.clone(),
            claimed: true,
            renewed,
            claimed_at,
            lease_until,
            path: self.rel(&location.path),
        })
    }

    /// Gives a held task back to `Needs_Action/<domain>/`, owner and lease cleared.
    pub fn release(&self, id: &TaskId, agent: &AgentName) -> Result<String, VaultError> {
        let from = self.held_by(id, agent)?;
        let mut task = self.load(&from.path, id)?;
        task.meta.clear_claim();
        let to = Location {
            place: Place::NeedsAction(task.meta.domain),
            path: self.needs_action_dir(task.meta.domain).join(id.file_name()),
        };
        self.hand_over(&from, &to, id, &task)
    }

    /// Finishes a held task: moves it to `Done/` with the time and an optional note.
    pub fn complete(
        &self,
        id: &TaskId,
        agent: &AgentName,
        note: Option<&str>,
    ) -> Result<String, VaultError> {
        let from = self.held_by(id, agent)?;
        let mut task = self.load(&from.path, id)?;
        task.meta.owner = Some(agent.clone());
        task.meta.lease_until = None;
        task.meta.completed_at = Some(now());
        if let Some(note) = note {
            task.meta.note = Some(note.to_owned());
        }
        let to = Location {
            place: Place::Done,
            path: self.done_dir().join(id.file_name()),
        };
        self.hand_over(&from, &to, id, &task)
    }

    /// Writes the task's new front matter in its current (own) file, then moves it on
    /// without replacing anything. Rewriting first means the file never sits in a shared
    /// folder while still being changed by us.
    fn hand_over(
        &self,
        from: &Location,
        to: &Location,
        id: &TaskId,
        task: &Task,
    ) -> Result<String, VaultError> {
        // A copy already at the destination (brought by a sync) is a duplicate for the
        // human; checked first so the refusal leaves our file as it was.
        if to.path.exists() {
            return Err(self.duplicate(id, &[from.clone(), to.clone()]));
        }
        if let Some(dir) = to.path.parent() {
            fs::create_dir_all(dir).map_err(|e| self.io(dir, e))?;
        }
        self.rewrite(&from.path, task)?;
        match fsio::move_no_replace(&from.path, &to.path) {
            Ok(()) => Ok(self.rel(&to.path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(self.duplicate(id, &[from.clone(), to.clone()]))
            }
            Err(e) => Err(self.io(&to.path, e)),
        }
    }

    /// The task's file in `In_Progress/<agent>/`, or why the agent does not hold it.
    fn held_by(&self, id: &TaskId, agent: &AgentName) -> Result<Location, VaultError> {
        let location = self.locate_one(id)?;
        let state = match &location.place {
            Place::InProgress(holder) if holder == agent => return Ok(location),
            Place::InProgress(holder) => format!("it is claimed by agent `{holder}`"),
            Place::NeedsAction(domain) => format!("it is unclaimed in Needs_Action/{domain}"),
            Place::Done => "it is in Done".to_owned(),
        };
        Err(VaultError::NotHeld {
            id: id.clone(),
            agent: agent.clone(),
            state,
        })
    }

    /// Replaces a task file the caller owns with the task's new text: whole before it is
    /// renamed into place, the rename itself durable at the next [`Vault::flush`], like the
    /// moves around it.
    fn rewrite(&self, path: &std::path::Path, task: &Task) -> Result<(), VaultError> {
        let text = task.render().map_err(|reason| VaultError::Encode {
            path: self.rel(path),
            reason,
        })?;
        fsio::write_replacing_unflushed(path, text.as_bytes()).map_err(|e| self.io(path, e))
    }

    /// Claims whose lease ended before `now`; broken files are skipped (`check` lists them).
    pub fn stale_leases(&self, now: DateTime<Utc>) -> Result<Vec<StaleLease>, VaultError> {
        let mut stale = Vec::new();
        for agent in self.agents()? {
            let dir = self.in_progress_dir(&agent);
            for path in self.markdown_files(&dir)? {
                let Ok(task) = self.load_found(&path) else {
                    continue;
                };
                if let Some(lease_until) = task.meta.lease_until.filter(|until| *until < now) {
                    stale.push(StaleLease {
                        task_id: task.meta.id,
                        owner: agent.clone(),
                        lease_until,
                        path: self.rel(&path),
                    });
                }
            }
        }
        Ok(stale)
    }
}
