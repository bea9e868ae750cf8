//! Claim-by-move on one machine.
//!
//! A task is one file, and claiming it moves that file from `Needs_Action/<domain>/` to
//! `In_Progress/<agent>/` with a rename that never replaces. Of two agents racing for one
//! task, both renames name the same source; the first takes it, and the second finds the
//! source gone, looks again, and is told which agent won. The folder a task is in is the
//! truth about who holds it.
//!
//! A claim writes no data: after the move it sets the file's modification time to the claim's
//! time, and the lease runs from there. `owner`, `claimed_at` and `lease_until` are written
//! into the front matter later, by [`Vault::stamp_claims`], which the sync runs before it
//! commits; until then every reader fills them in from the folder and that time, so a claim
//! reads the same before and after its stamp.
//!
//! Durability: a claim's move and time become durable at the next [`Vault::flush`], which the
//! sync makes before git records the claim; a crash before then can lose only a claim that
//! never counted, and the task file, never rewritten by a claim, cannot be torn
//! (`specs/vault.md`, "Durability").

use std::{fs, path::Path};

use chrono::{DateTime, SubsecRound, Utc};
use schemars::JsonSchema;
use serde::Serialize;

use super::{
    AgentName, Domain, Task, TaskFolder, TaskId, Vault, VaultError, fsio,
    store::{Location, Place},
    task::{TaskMeta, now},
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
        let task = match self.load(&from.path, id) {
            Ok(task) => task,
            // Gone since we looked: another agent took it. Look again to name it.
            Err(VaultError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let dir = self.in_progress_dir(agent);
        // Never through a link (`In_Progress/<agent>` committed as one): refused here, the
        // task stays where it is.
        self.make_dir(&dir).map_err(|e| self.io(&dir, e))?;
        let to = Location {
            place: Place::InProgress(agent.clone()),
            path: dir.join(id.file_name()),
        };
        match self.move_file(&from.path, &to.path) {
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
        if task.meta.owner.is_some() || task.meta.lease_until.is_some() {
            // Left over from an earlier claim (a file moved back by hand): a stale lease
            // there would hide ours, so ours is written at once.
            return match self.stamp_claim(&to, id, agent, false) {
                Ok(claim) => Ok(Some(claim)),
                Err(e) => {
                    self.give_back(&to, from);
                    Err(e)
                }
            };
        }
        let claimed_at = now();
        if let Err(e) = fsio::set_modified(&to.path, claimed_at.into()) {
            self.give_back(&to, from);
            return Err(self.io(&to.path, e));
        }
        Ok(Some(Claim {
            task_id: id.clone(),
            owner: agent.clone(),
            claimed: true,
            renewed: false,
            claimed_at,
            lease_until: claimed_at + self.lease,
            path: self.rel(&to.path),
        }))
    }

    /// Undoes a move we just made, without replacing anything. If even that fails, the
    /// file stays in our folder, which `check` will show; the caller's error names it.
    fn give_back(&self, taken: &Location, origin: &Location) {
        let _ = self.move_file(&taken.path, &origin.path);
    }

    /// Writes owner and lease into a task the agent holds: a renewal, which keeps the first
    /// `claimed_at`, or a first claim of a file that carried an earlier claim's fields.
    fn stamp_claim(
        &self,
        location: &Location,
        id: &TaskId,
        agent: &AgentName,
        renewed: bool,
    ) -> Result<Claim, VaultError> {
        let mut task = self.load_held(&location.path, id, agent)?;
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

    /// Reads a task held in `agent`'s folder with its claim as it stands: a claim whose
    /// fields are not written yet gets them from the folder and the file's modification time
    /// ([`Vault::fill_claim`]).
    pub(crate) fn load_held(
        &self,
        path: &Path,
        id: &TaskId,
        agent: &AgentName,
    ) -> Result<Task, VaultError> {
        let mut task = self.load(path, id)?;
        self.fill_claim(&mut task.meta, agent, path)?;
        Ok(task)
    }

    /// Fills in the claim of a task held in `agent`'s folder when its front matter does not
    /// record it (a claim not yet stamped, or a file moved there by hand): `owner` is the
    /// agent, `claimed_at` the file's last change (an earlier `claimed_at` of the same owner
    /// is kept), `lease_until` that plus the lease. Returns whether anything was filled in.
    pub(crate) fn fill_claim(
        &self,
        meta: &mut TaskMeta,
        agent: &AgentName,
        path: &Path,
    ) -> Result<bool, VaultError> {
        let recorded = meta.owner.as_ref() == Some(agent)
            && meta.claimed_at.is_some()
            && meta.lease_until.is_some();
        if recorded {
            return Ok(false);
        }
        let modified = fs::symlink_metadata(path)
            .and_then(|m| m.modified())
            .map_err(|e| self.io(path, e))?;
        let changed = DateTime::<Utc>::from(modified).trunc_subsecs(0);
        if meta.owner.as_ref() != Some(agent) || meta.claimed_at.is_none() {
            meta.claimed_at = Some(changed);
        }
        meta.owner = Some(agent.clone());
        meta.lease_until = Some(changed + self.lease);
        Ok(true)
    }

    /// Writes the claims that the front matter does not record yet into the files of these
    /// held tasks, as [`Vault::fill_claim`] reads them; returns the files stamped.
    ///
    /// The sync runs this before it commits, so every committed claim names its owner and
    /// lease. The stamped copies are written beside the tasks, made durable together with
    /// one [`Vault::flush`], and only then swapped in, each only if its task file is still
    /// there and unchanged: a crash leaves each task file whole, stamped or not, and an edit
    /// or move made meanwhile wins (the stamp waits for the next sync). Files that are gone,
    /// already stamped or broken are skipped; `check` reports broken ones.
    pub fn stamp_claims(&self, held: &[(AgentName, TaskId)]) -> Result<Vec<String>, VaultError> {
        let mut written = Vec::new();
        for (agent, id) in held {
            let path = self.in_progress_dir(agent).join(id.file_name());
            if !self.is_plain_file(&path) {
                continue;
            }
            let old = match self.read_plain_file(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io(&path, e)),
            };
            let Ok(mut task) = self.parse_task(&path, id, &old) else {
                continue;
            };
            if !self.fill_claim(&mut task.meta, agent, &path)? {
                continue;
            }
            let text = task.render().map_err(|reason| VaultError::Encode {
                path: self.rel(&path),
                reason,
            })?;
            match self.write_temp_beside(&path, text.as_bytes()) {
                Ok(temp) => written.push((temp, path, old)),
                Err(e) => {
                    remove_all(&written);
                    return Err(self.io(&path, e));
                }
            }
        }
        if written.is_empty() {
            return Ok(Vec::new());
        }
        if let Err(e) = self.flush() {
            remove_all(&written);
            return Err(e);
        }
        let mut stamped = Vec::new();
        for (at, (temp, path, old)) in written.iter().enumerate() {
            // Looked at again: a link that took the folder's place meanwhile is not swapped
            // through; the stamp waits for the next sync.
            if self.check_file_path(path).is_err() {
                let _ = fs::remove_file(temp);
                continue;
            }
            match fsio::swap_in_if_unchanged(temp, path, old) {
                Ok(true) => stamped.push(self.rel(path)),
                Ok(false) => {}
                Err(e) => {
                    remove_all(&written[at + 1..]);
                    return Err(self.io(path, e));
                }
            }
        }
        Ok(stamped)
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
        // Refusals first, so they leave our file as it was: a link on the way (the
        // destination folder committed as one) is never moved through, and a copy already
        // at the destination (brought by a sync) is a duplicate for the human.
        self.check_file_path(&to.path)
            .map_err(|e| self.io(&to.path, e))?;
        if fs::symlink_metadata(&to.path).is_ok() {
            return Err(self.duplicate(id, &[from.clone(), to.clone()]));
        }
        if let Some(dir) = to.path.parent() {
            self.make_dir(dir).map_err(|e| self.io(dir, e))?;
        }
        self.rewrite(&from.path, task)?;
        match self.move_file(&from.path, &to.path) {
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
        self.write_replacing_unflushed(path, text.as_bytes())
            .map_err(|e| self.io(path, e))
    }

    /// Claims whose lease ended before `now`, stamped or not; broken files are skipped
    /// (`check` lists them).
    pub fn stale_leases(&self, now: DateTime<Utc>) -> Result<Vec<StaleLease>, VaultError> {
        let mut stale = Vec::new();
        for agent in self.agents()? {
            let dir = self.in_progress_dir(&agent);
            for path in self.markdown_files(&dir)? {
                let Ok(mut task) = self.load_found(&path) else {
                    continue;
                };
                if self.fill_claim(&mut task.meta, &agent, &path).is_err() {
                    // Gone since the listing: moved on, so not stale.
                    continue;
                }
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

/// Removes the temporary files of stamps not swapped in; each is a copy of a task file that
/// stays where it is, so failing to remove one loses nothing (`check` lists it).
fn remove_all(written: &[(std::path::PathBuf, std::path::PathBuf, Vec<u8>)]) {
    for (temp, _, _) in written {
        let _ = fs::remove_file(temp);
    }
}
