//! One executor for every execute tool: carrying out an approved action at most once
//! (contract invariants 7 and 9), whatever the action is.
//!
//! A server supplies its [`Effect`] (prepare the request, perform it, optionally look it
//! up); the [`Executor`] around it does the rest, the same way for every server:
//! 1. the action: the payload the guard authorized, handed over in-process, or the approved
//!    file checked against the ledger ([`Authority`]);
//! 2. `prepare`: the exact request and the effect's id, derived from the approval; nothing
//!    leaves;
//! 3. the journal: an execution already `done` answers `already_done`; one in doubt is
//!    refused; otherwise `started` is written and flushed **before** acting;
//! 4. `perform`, once;
//! 5. the outcome's line: `done`, `not_executed` or `in_doubt`.
//!
//! The crash argument: `started` is on disk before the service sees anything, so after a
//! crash at any point either the journal has no `started` (nothing was acted on), or it has
//! one with no outcome (in doubt: never tried again, listed for the owner), or it has the
//! outcome. Only a read-back from the service settles a doubt ([`Executor::reconcile`] for
//! services that can be asked, [`Executor::read_back`] for services that tell by
//! themselves, such as a status webhook); nothing is ever retried to find out.
//!
//! `specs/executor.md` is the prose version of this module.
//!
//! # Layout
//! - [`journal`]: the journal file, its lines, what is in doubt, and the old email format.
//! - [`effect`] (private): the [`Effect`] trait and what it answers.
//! - [`authority`] (private): [`Authority`]: where an action comes from.
//! - [`handoff`] (private): [`AuthorizedActions`]: the guard's hand-off to hosted servers.
//! - [`crash`]: the crash points the crash tests stop the process at.

use std::{
    collections::HashSet,
    path::Path,
    sync::{Arc, Mutex, PoisonError},
};

use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::{
    approvals::{Approvals, Authorized, Outcome},
    vault::{AgentName, ApprovalId, Domain, TaskId},
};

mod authority;
pub use authority::Authority;

pub mod crash;
pub use crash::{CrashPoint, crash_point};

mod effect;
pub use effect::{Effect, EffectError, LookUp, Performed, Prepared};

mod handoff;
pub use handoff::AuthorizedActions;

pub mod journal;
pub use journal::{
    InDoubt, Journal, JournalEntry, JournalSpec, JournalState, Labels, read_in_doubt,
};

#[cfg(test)]
mod tests;

/// One approved action, exactly as it was authorized: what an executor carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// The approval.
    pub approval_id: ApprovalId,
    /// The execute tool.
    pub tool: String,
    /// The domain it acts in.
    pub domain: Domain,
    /// The exact payload approved.
    pub payload: Value,
    /// Its hash.
    pub payload_sha256: String,
    /// The task it serves.
    pub task_id: Option<TaskId>,
}

impl From<Authorized> for Action {
    fn from(a: Authorized) -> Self {
        Self {
            approval_id: a.approval_id,
            tool: a.tool,
            domain: a.domain,
            payload: a.payload,
            payload_sha256: a.payload_sha256,
            task_id: a.task_id,
        }
    }
}

/// Whether an execution happened now or before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecStatus {
    /// Done by this call.
    Done,
    /// The journal shows it done before; nothing was done again.
    AlreadyDone,
}

/// An execution that happened (now or before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    /// The approval carried out.
    pub approval_id: ApprovalId,
    /// Now or before.
    pub status: ExecStatus,
    /// The effect's id (derived from the approval).
    pub effect_id: String,
    /// The service's id for the result, when it gives one.
    pub receipt: Option<String>,
    /// Where it acted.
    pub target: String,
    /// The service's answer (or when it was done before).
    pub detail: String,
    /// Every execution of this executor in doubt, for the owner.
    pub in_doubt: Vec<InDoubt>,
}

/// Why an execution did not happen, or may have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// Nothing happened; the approval is unused and may run again.
    #[error("{0}")]
    NotExecuted(String),
    /// It may have happened; it is never tried again by itself.
    #[error("{0}")]
    InDoubt(String),
}

/// How one execution in doubt was settled by reading back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settled {
    /// The approval.
    pub approval_id: String,
    /// `true` when the service has it, `false` when it never happened.
    pub happened: bool,
    /// What the read-back showed.
    pub detail: String,
    /// What the approval ledger recorded, when the executor settles in one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<String>,
}

/// An approval whose execution runs in this process: taken out again when it ends, however
/// it ends (a dropped future included).
struct Running<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// The at-most-once executor around one server's [`Effect`]. Executions of different
/// approvals run side by side; one approval runs once at a time.
pub struct Executor<E: Effect> {
    effect: E,
    authority: Authority,
    journal: Arc<Mutex<Journal>>,
    running: Mutex<HashSet<String>>,
    /// Where read-back settlements are also recorded: the approval ledger, and the agent
    /// that completes an executed approval's task.
    ledger: Option<(Approvals, AgentName)>,
}

impl<E: Effect> std::fmt::Debug for Executor<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("executor", &self.effect.spec().name)
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl<E: Effect> Executor<E> {
    /// The executor of `effect` on the journal in `state_dir`, taking its actions from
    /// `authority`. Reads the journal (blocking) and logs every execution in doubt.
    pub fn open(effect: E, state_dir: &Path, authority: Authority) -> std::io::Result<Self> {
        let spec = effect.spec();
        let journal = Journal::open(state_dir, spec)?;
        for doubt in journal.in_doubt() {
            tracing::warn!(
                executor = spec.name,
                approval_id = %doubt.approval_id,
                effect_id = %doubt.effect_id,
                target = %doubt.target,
                "execution in doubt: it may or may not have happened; it is never tried again"
            );
        }
        Ok(Self {
            effect,
            authority,
            journal: Arc::new(Mutex::new(journal)),
            running: Mutex::new(HashSet::new()),
            ledger: None,
        })
    }

    /// Also records read-back settlements in `approvals`' ledger (an in-doubt use settled
    /// `ok` or `error`), completing an executed approval's task as `agent`.
    pub fn with_ledger(mut self, approvals: Approvals, agent: AgentName) -> Self {
        self.ledger = Some((approvals, agent));
        self
    }

    /// The effect.
    pub fn effect(&self) -> &E {
        &self.effect
    }

    /// The journal's file.
    pub fn journal_path(&self) -> std::path::PathBuf {
        self.journal().path().to_path_buf()
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every execution in doubt, oldest first; one running in this process right now is
    /// not (its `started` line has no outcome yet because it is still on its way).
    pub fn in_doubt(&self) -> Vec<InDoubt> {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut doubts = self.journal().in_doubt();
        doubts.retain(|d| !running.contains(&d.approval_id));
        doubts
    }

    /// Appends `entry` to the journal and flushes it, off the async runtime.
    async fn append(&self, entry: JournalEntry) -> std::io::Result<()> {
        let journal = self.journal.clone();
        tokio::task::spawn_blocking(move || {
            journal
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .append(entry)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Marks `id` running in this process, or says it already is.
    fn start_running(&self, id: &ApprovalId) -> Option<Running<'_>> {
        let mut set = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        set.insert(id.to_string()).then(|| Running {
            set: &self.running,
            id: id.to_string(),
        })
    }

    /// Carries out the approval `id` for `tool`, at most once (see the module doc).
    pub async fn execute(&self, id: &ApprovalId, tool: &str) -> Result<Executed, ExecError> {
        let spec = self.effect.spec();
        let labels = &spec.labels;
        let action = self
            .authority
            .action(id, tool, spec)
            .await
            .map_err(ExecError::NotExecuted)?;
        let prepared = self
            .effect
            .prepare(&action)
            .map_err(|why| ExecError::NotExecuted(format!("approval `{id}`: {why}")))?;
        let Some(_running) = self.start_running(id) else {
            return Err(ExecError::NotExecuted(format!(
                "approval `{id}` is being carried out right now by another call"
            )));
        };
        let target = self.effect.target();
        let entry = |state, receipt: Option<String>, detail: Option<String>| JournalEntry {
            ts: now(),
            approval_id: id.to_string(),
            state,
            effect_id: prepared.effect_id.clone(),
            payload_sha256: action.payload_sha256.clone(),
            target: target.clone(),
            receipt,
            read_back: false,
            detail,
        };
        let earlier = {
            let journal = self.journal();
            if let Some(why) = journal.damaged() {
                return Err(ExecError::NotExecuted(format!(
                    "the {} is damaged: {why}",
                    labels.journal
                )));
            }
            journal.last(id.as_str()).cloned()
        };
        match earlier {
            Some(earlier) if earlier.state == JournalState::Done => {
                return Ok(Executed {
                    approval_id: id.clone(),
                    status: ExecStatus::AlreadyDone,
                    effect_id: earlier.effect_id,
                    receipt: earlier.receipt,
                    target: earlier.target,
                    detail: format!(
                        "{} at {}; not {} again",
                        labels.done, earlier.ts, labels.done
                    ),
                    in_doubt: self.in_doubt(),
                });
            }
            Some(earlier) if earlier.state == JournalState::NotExecuted && earlier.read_back => {
                return Err(ExecError::NotExecuted(format!(
                    "approval `{id}` was in doubt and reading back settled it at {}: it never happened ({}); once in doubt an approval is not carried out again: draft it again",
                    earlier.ts,
                    earlier.detail.as_deref().unwrap_or("")
                )));
            }
            Some(earlier) if earlier.state.is_in_doubt() => {
                return Err(ExecError::InDoubt(format!(
                    "approval `{id}` was being carried out at {} through {} and the outcome is unknown; {} ({} {}); it is never {} again by itself (draft it again to make a new one)",
                    earlier.ts,
                    earlier.target,
                    labels.check,
                    labels.effect_id,
                    earlier.effect_id,
                    labels.done
                )));
            }
            _ => {}
        }
        crash_point(spec.name, CrashPoint::BeforeJournal);
        if let Err(e) = self.append(entry(JournalState::Started, None, None)).await {
            return Err(ExecError::NotExecuted(format!(
                "cannot write the {} {}: {e}",
                labels.journal,
                self.journal_path().display()
            )));
        }
        crash_point(spec.name, CrashPoint::AfterJournal);
        let performed = self.effect.perform(&action, &prepared.request).await;
        if performed.is_ok() {
            crash_point(spec.name, CrashPoint::AfterEffect);
        }
        let (line, result) = match performed {
            Ok(done) => (
                entry(
                    JournalState::Done,
                    done.receipt.clone(),
                    Some(done.detail.clone()),
                ),
                Ok(done),
            ),
            Err(EffectError::NotExecuted(why)) => (
                entry(JournalState::NotExecuted, None, Some(why.clone())),
                Err(ExecError::NotExecuted(why)),
            ),
            Err(EffectError::InDoubt(why)) => (
                entry(JournalState::InDoubt, None, Some(why.clone())),
                Err(ExecError::InDoubt(why)),
            ),
        };
        crash_point(spec.name, CrashPoint::BeforeOutcome);
        if let Err(e) = self.append(line).await {
            // The `started` line stays the last: the approval reads as in doubt, which is
            // the safe reading when the outcome could not be written down.
            tracing::error!(executor = spec.name, approval_id = %id, "cannot record the outcome: {e}");
        }
        crash_point(spec.name, CrashPoint::AfterOutcome);
        match result {
            Ok(done) => {
                tracing::info!(executor = spec.name, approval_id = %id, effect_id = %prepared.effect_id, target = %target, "done");
                Ok(Executed {
                    approval_id: id.clone(),
                    status: ExecStatus::Done,
                    effect_id: prepared.effect_id.clone(),
                    receipt: done.receipt,
                    target,
                    detail: done.detail,
                    in_doubt: self.in_doubt(),
                })
            }
            Err(e) => {
                tracing::warn!(executor = spec.name, approval_id = %id, "{e}");
                Err(e)
            }
        }
    }

    /// Settles every execution in doubt that the service can be asked about, by reading
    /// back (never by trying again), and records what the journal proves in the approval
    /// ledger when the executor has one. Call it at start, before any execution.
    pub async fn reconcile(&self) -> Vec<Settled> {
        let mut settled = Vec::new();
        if self.effect.can_look_up() {
            for doubt in self.in_doubt() {
                let entry = self.journal().last(&doubt.approval_id).cloned();
                let Some(entry) = entry.filter(|e| e.state.is_in_doubt()) else {
                    continue;
                };
                let found = self.effect.look_up(&entry).await;
                if let Ok(Some(done)) = self.settle(&entry.approval_id, found).await {
                    settled.push(done);
                }
            }
        }
        settled.extend(self.settle_ledger(None).await);
        settled
    }

    /// Settles the execution of `approval_id` in doubt with what the service told by
    /// itself (a status webhook carrying the approval's id): `Ok(None)` when there was
    /// nothing in doubt to settle (done already, never started, or running right now, whose
    /// own outcome will settle it).
    pub async fn read_back(
        &self,
        approval_id: &ApprovalId,
        found: LookUp,
    ) -> Result<Option<Settled>, ExecError> {
        self.settle(approval_id.as_str(), found).await
    }

    async fn settle(&self, approval_id: &str, found: LookUp) -> Result<Option<Settled>, ExecError> {
        let labels = &self.effect.spec().labels;
        let Ok(id) = ApprovalId::new(approval_id) else {
            return Ok(None);
        };
        let Some(_running) = self.start_running(&id) else {
            return Ok(None);
        };
        let Some(entry) = self
            .journal()
            .last(approval_id)
            .cloned()
            .filter(|e| e.state.is_in_doubt())
        else {
            return Ok(None);
        };
        let (state, receipt, detail, happened) = match found {
            LookUp::Happened { receipt, detail } => (JournalState::Done, receipt, detail, true),
            LookUp::DidNotHappen { detail } => (JournalState::NotExecuted, None, detail, false),
            LookUp::CannotTell => return Ok(None),
        };
        let line = JournalEntry {
            ts: now(),
            state,
            receipt,
            read_back: true,
            detail: Some(format!("read back: {detail}")),
            ..entry
        };
        self.append(line).await.map_err(|e| {
            ExecError::InDoubt(format!(
                "approval `{id}` read back ({detail}) but the {} could not record it: {e}",
                labels.journal
            ))
        })?;
        tracing::info!(executor = self.effect.spec().name, approval_id = %id, happened, %detail, "settled by reading back");
        let mut settled = Settled {
            approval_id: approval_id.to_owned(),
            happened,
            detail,
            ledger: None,
        };
        drop(_running);
        if let Some(done) = self.settle_ledger(Some(&id)).await.into_iter().next() {
            settled.ledger = done.ledger;
        }
        Ok(Some(settled))
    }

    /// Records in the ledger what the journal proves about uses the ledger holds in doubt
    /// (all of this executor's tools, or only `only`): a `done` line written after the use
    /// is `ok`; a `not_executed` line from a read-back is `error` (the file is set aside and
    /// the action drafted again, never retried). Anything else stays in doubt.
    async fn settle_ledger(&self, only: Option<&ApprovalId>) -> Vec<Settled> {
        let Some((approvals, agent)) = self.ledger.clone() else {
            return Vec::new();
        };
        let spec = self.effect.spec();
        let lines: Vec<JournalEntry> = {
            let journal = self.journal();
            journal.lines().cloned().collect()
        };
        let only = only.cloned();
        let running: HashSet<String> = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let work = move || {
            let mut out = Vec::new();
            let Ok(doubts) = approvals.in_doubt() else {
                return out;
            };
            let Ok(ledger) = approvals.ledger().read() else {
                return out;
            };
            for (id, used_at) in doubts {
                if only.as_ref().is_some_and(|o| o != &id) || running.contains(id.as_str()) {
                    continue;
                }
                let tool_is_ours = ledger
                    .get(&id)
                    .and_then(|r| r.approved.as_ref())
                    .is_some_and(|a| spec.tools.contains(&a.tool.as_str()));
                let Some(line) = lines.iter().find(|l| l.approval_id == id.as_str()) else {
                    continue;
                };
                // A line from before this use says nothing about it.
                if !tool_is_ours || line.at().is_none_or(|at| at < used_at) {
                    continue;
                }
                let (outcome, note) = match (line.state, line.read_back) {
                    (JournalState::Done, _) => (
                        Outcome::Ok,
                        format!(
                            "the {}'s {} shows it {}: {}",
                            spec.labels.server,
                            spec.labels.journal,
                            spec.labels.done,
                            line.detail.as_deref().unwrap_or("")
                        ),
                    ),
                    (JournalState::NotExecuted, true) => (
                        Outcome::Error,
                        format!(
                            "read back from the service: it did not happen ({}); draft it again",
                            line.detail.as_deref().unwrap_or("")
                        ),
                    ),
                    _ => continue,
                };
                match approvals.record_result(&id, outcome, &note, &agent) {
                    Ok(_) => out.push(Settled {
                        approval_id: id.to_string(),
                        happened: outcome == Outcome::Ok,
                        detail: note.clone(),
                        ledger: Some(format!("recorded `{outcome}`: {note}")),
                    }),
                    Err(e) => {
                        tracing::error!(approval_id = %id, error = %e, "the ledger could not record the journal's outcome; it stays in doubt")
                    }
                }
            }
            out
        };
        tokio::task::spawn_blocking(work).await.unwrap_or_default()
    }
}
