//! An approval's life on the vault, with the ledger as the single source of truth:
//! approve or reject (ledger first, then the move), adopt hand-moved approvals, authorize an
//! execution at most once, record its result, and set aside whatever may not run.
//!
//! Whether a file in `Approved/` was moved there by the owner's hand is a question about the
//! vault's git state, which this crate cannot see: the caller answers it, with the ids it
//! found ([`Approvals::adopt_hand_moves`]) or a [`HandMoveCheck`] asked for one id at a time
//! ([`Approvals::accepting_hand_moves`]).

use std::{
    collections::BTreeSet,
    fmt, io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use super::{
    ApprovalError, ApprovalLedger, Refusal, Refused,
    ledger::{Approval, Event, HowApproved, Locked, Outcome},
};
use crate::{
    policy::Zone,
    vault::{
        AgentName, ApprovalId, ApprovalRequest, Domain, TaskFolder, TaskId, Vault, VaultError,
        layout::{APPROVED, DONE, REJECTED},
        payload_sha256,
    },
};

/// The vault folder where approval files that may not run are set aside (local zone only).
pub const QUARANTINE: &str = "Quarantine";
/// The folder under `Done/` where executed approval files go (apart from the tasks, which
/// `Done/` lists).
pub const DONE_APPROVALS: &str = "approvals";
/// The longest an approval stays valid from the moment it is given, unless the local config
/// says otherwise (`[approvals] max_lifetime_hours`): 7 days.
pub const DEFAULT_MAX_LIFETIME: TimeDelta = TimeDelta::days(7);

/// Longest kept result detail: a note, never a message body.
const MAX_DETAIL: usize = 512;

/// Where an approval request's file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    /// `Pending_Approval/<domain>/`: waiting for the human.
    Pending(Domain),
    /// `Approved/`.
    Approved,
    /// `Rejected/`.
    Rejected,
    /// `Done/approvals/`: executed.
    Done,
    /// `Quarantine/`: set aside, never to run.
    Quarantine,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Pending(domain) => write!(f, "Pending_Approval/{domain}"),
            Place::Approved => f.write_str(APPROVED),
            Place::Rejected => f.write_str(REJECTED),
            Place::Done => write!(f, "{DONE}/{DONE_APPROVALS}"),
            Place::Quarantine => f.write_str(QUARANTINE),
        }
    }
}

/// An approval file found in the vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) place: Place,
    pub(crate) path: PathBuf,
}

/// The human's decision, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Decided {
    /// The approval.
    pub approval_id: ApprovalId,
    /// `approved` or `rejected`.
    pub decision: String,
    /// Who decided.
    pub by: String,
    /// Its file now, relative to the vault root.
    pub path: String,
}

/// The payload hash the owner was shown and decides on (`aie approvals approve ID --sha256
/// HEX`): at least [`ShownHash::MIN_DIGITS`] hex digits, a prefix of the `payload_sha256`
/// that `show` printed. [`Approvals::approve`] approves only a request whose payload still
/// hashes to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownHash(String);

impl ShownHash {
    /// The fewest hex digits accepted: 32 bits, so a payload changed after `show` cannot be
    /// made to match by chance.
    pub const MIN_DIGITS: usize = 8;

    /// Reads a hash or a prefix of one, in either case.
    pub fn new(hex: &str) -> Result<Self, ApprovalError> {
        let hex = hex.trim().to_ascii_lowercase();
        let ok = (Self::MIN_DIGITS..=64).contains(&hex.len())
            && hex.bytes().all(|b| b.is_ascii_hexdigit());
        if ok {
            Ok(Self(hex))
        } else {
            Err(ApprovalError::BadShownHash {
                given: crate::render::line(&hex).into_owned(),
            })
        }
    }

    /// Whether `payload_sha256` (lower-case hex) is the hash shown.
    pub fn matches(&self, payload_sha256: &str) -> bool {
        payload_sha256.starts_with(&self.0)
    }

    /// The hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What [`Approvals::adopt_hand_moves`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct AdoptReport {
    /// Files moved into `Approved/` by hand on this machine, now approved in the ledger.
    pub adopted: Vec<ApprovalId>,
    /// Files that may not run, moved to `Quarantine/`: (new path, reason).
    pub set_aside: Vec<(String, String)>,
    /// Files that could be neither adopted nor moved (`Quarantine/` is a link, a write
    /// failed): (path, what went wrong). They stay where they are, with no ledger approval,
    /// so they can never run.
    pub problems: Vec<(String, String)>,
}

/// Tells whether `Approved/<id>.md` got there by the owner's own hand on this machine: a
/// local, uncommitted move of a request the vault's `main` holds as pending, byte for byte.
/// The vault's git state answers that, so the caller implements it (vault-claim's
/// `sync::hand_moves`); these approvals need no git.
pub trait HandMoveCheck: fmt::Debug + Send + Sync {
    /// Whether `Approved/<id>.md` is such a hand move. An error is never read as yes.
    fn is_hand_move(&self, id: &ApprovalId) -> Result<bool, String>;
}

/// Hand moves accepted at authorization: the check, and whose decision they record.
#[derive(Debug)]
struct HandMoves {
    check: Arc<dyn HandMoveCheck>,
    by: String,
}

/// What became of one hand-moved file offered for adoption.
enum Adoption {
    /// An `approved` entry was written.
    Adopted,
    /// It may not run, for this reason.
    Refused(String),
}

/// A go-ahead for one execution: the approval is marked used; call the server with exactly
/// `payload`, then [`Approvals::record_result`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Authorized {
    /// The approval.
    pub approval_id: ApprovalId,
    /// The execute tool.
    pub tool: String,
    /// The domain it acts in.
    pub domain: Domain,
    /// The exact arguments approved.
    pub payload: Value,
    /// Their hash.
    pub payload_sha256: String,
    /// The task it serves.
    pub task_id: Option<TaskId>,
    /// When it was marked used.
    pub used_at: DateTime<Utc>,
    /// The `seq` of its `used` entry: what [`Approvals::release`] names.
    pub use_seq: u64,
}

/// What `record_result` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ResultRecorded {
    /// The approval.
    pub approval_id: ApprovalId,
    /// The outcome recorded.
    pub outcome: Outcome,
    /// Where its file went (`Done/approvals/` or `Quarantine/`), if it moved.
    pub moved_to: Option<String>,
    /// The task's file in `Done/`, if it had a task that could be completed.
    pub task: Option<String>,
    /// Why the task or file could not be moved, if so (the result is recorded anyway).
    pub problems: Vec<String>,
}

/// The human's approvals on one vault and state folder: decisions, authorization, results.
/// Cheap to clone; clones share the in-flight set.
#[derive(Debug, Clone)]
pub struct Approvals {
    vault: Vault,
    ledger: ApprovalLedger,
    state_dir: PathBuf,
    /// Approvals authorized by this process whose result is not recorded yet: another call
    /// for one is "already used", while a used one not in this set is in doubt (a crash).
    in_flight: Arc<Mutex<BTreeSet<ApprovalId>>>,
    /// The longest an approval stays valid from its decision, whatever its file says.
    max_lifetime: TimeDelta,
    /// When set, `authorize` adopts the one file it is asked about if this says the owner
    /// moved it into `Approved/` by hand; without it, no hand move ever counts there.
    hand_moves: Option<Arc<HandMoves>>,
}

impl Approvals {
    /// Opens the ledger in `state_dir` (making its key on first use) for `vault`.
    pub fn open(vault: Vault, state_dir: &Path) -> Result<Self, ApprovalError> {
        Ok(Self {
            ledger: ApprovalLedger::open(state_dir)?,
            vault,
            state_dir: state_dir.to_path_buf(),
            in_flight: Arc::default(),
            max_lifetime: DEFAULT_MAX_LIFETIME,
            hand_moves: None,
        })
    }

    /// The same approvals with another longest lifetime (the local config's
    /// `[approvals] max_lifetime_hours`): an approval given from now on expires at the
    /// request's own `expires_at` or `max_lifetime` after the decision, whichever is first,
    /// and one given before stops at `max_lifetime` after its decision too.
    pub fn with_max_lifetime(mut self, max_lifetime: TimeDelta) -> Self {
        self.max_lifetime = max_lifetime;
        self
    }

    /// The same approvals, adopting at `authorize` a file with no ledger entry that `check`
    /// says the owner moved into `Approved/` by hand (`[approvals] accept_hand_moves`),
    /// recorded as decided by `by`. Only the approval being authorized is looked at.
    pub fn accepting_hand_moves(mut self, check: Arc<dyn HandMoveCheck>, by: &str) -> Self {
        self.hand_moves = Some(Arc::new(HandMoves {
            check,
            by: by.to_owned(),
        }));
        self
    }

    /// The longest an approval stays valid from its decision.
    pub fn max_lifetime(&self) -> TimeDelta {
        self.max_lifetime
    }

    /// The expiry an approval of a request expiring at `requested`, given at `now`, gets:
    /// the earlier of the two limits, in whole seconds.
    fn capped_expiry(&self, requested: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
        match now.checked_add_signed(self.max_lifetime) {
            Some(cap) if cap < requested => cap.trunc_subsecs(0),
            _ => requested,
        }
    }

    /// The `approved` entry for `request`, decided by `by` at `now`, its lifetime capped.
    fn approved_event(
        &self,
        request: &ApprovalRequest,
        by: &str,
        how: HowApproved,
        now: DateTime<Utc>,
    ) -> Event {
        let meta = &request.meta;
        let expires_at = self.capped_expiry(meta.expires_at, now);
        Event::Approved {
            payload_sha256: meta.payload_sha256.clone(),
            tool: meta.tool.clone(),
            expires_at,
            requested_expires_at: (expires_at != meta.expires_at).then_some(meta.expires_at),
            task_id: meta.task_id.clone(),
            decided_by: by.to_owned(),
            how,
        }
    }

    /// The vault.
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// The ledger.
    pub fn ledger(&self) -> &ApprovalLedger {
        &self.ledger
    }

    /// The state folder.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The in-flight set (a panicked holder left nothing half-done in it).
    fn in_flight(&self) -> MutexGuard<'_, BTreeSet<ApprovalId>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `Approved/<id>.md`.
    fn approved_path(&self, id: &ApprovalId) -> PathBuf {
        self.vault.root().join(APPROVED).join(id.file_name())
    }

    /// A folder the lifecycle moves files into, made if missing; refused if it is a link.
    fn real_dir(&self, relative: &Path) -> Result<PathBuf, ApprovalError> {
        let dir = self.vault.root().join(relative);
        let real = self
            .vault
            .create_real_dir(&dir)
            .map_err(|e| ApprovalError::io(&dir, e))?;
        if !real {
            return Err(ApprovalError::LinkedFolder {
                path: self.vault.rel(&dir),
            });
        }
        Ok(dir)
    }

    /// Moves `from` into `relative_dir` under the same name, never replacing a file.
    fn move_into(&self, from: &Path, relative_dir: &Path) -> Result<PathBuf, ApprovalError> {
        let dir = self.real_dir(relative_dir)?;
        let name = from.file_name().unwrap_or_default();
        let to = dir.join(name);
        self.vault.move_file(from, &to).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                ApprovalError::Vault(VaultError::AlreadyExists {
                    path: self.vault.rel(&to),
                })
            } else {
                ApprovalError::io(&to, e)
            }
        })?;
        Ok(to)
    }

    /// Every file carrying this approval id, wherever it is.
    pub(crate) fn find(&self, id: &ApprovalId) -> Result<Vec<Found>, ApprovalError> {
        let root = self.vault.root();
        let name = id.file_name();
        let mut candidates: Vec<Found> = Domain::ALL
            .into_iter()
            .map(|d| Found {
                place: Place::Pending(d),
                path: self.vault.pending_approval_dir(d).join(&name),
            })
            .collect();
        for (place, dir) in [
            (Place::Approved, root.join(APPROVED)),
            (Place::Rejected, root.join(REJECTED)),
            (Place::Done, root.join(DONE).join(DONE_APPROVALS)),
        ] {
            candidates.push(Found {
                place,
                path: dir.join(&name),
            });
        }
        let mut found: Vec<Found> = candidates
            .into_iter()
            .filter(|f| self.vault.is_plain_file(&f.path))
            .collect();
        // Set-aside copies are `<id>.md` or `<id>~<n>.md` (`~` is never part of an id).
        let quarantine = root.join(QUARANTINE);
        if self.vault.is_real_dir(&quarantine) {
            for path in self.vault.markdown_files(&quarantine)? {
                let file = path.file_name().unwrap_or_default().to_string_lossy();
                let rest = file.strip_prefix(id.as_str()).unwrap_or_default();
                let counter = rest.strip_prefix('~').and_then(|r| r.strip_suffix(".md"));
                if rest == ".md" || counter.is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())) {
                    found.push(Found {
                        place: Place::Quarantine,
                        path,
                    });
                }
            }
        }
        Ok(found)
    }

    /// The one file of a request that can still be decided on (pending or in `Approved/`).
    fn find_live(&self, id: &ApprovalId) -> Result<Option<Found>, ApprovalError> {
        let mut live: Vec<Found> = self
            .find(id)?
            .into_iter()
            .filter(|f| matches!(f.place, Place::Pending(_) | Place::Approved))
            .collect();
        match live.len() {
            0 => Ok(None),
            1 => Ok(live.pop()),
            _ => Err(ApprovalError::Duplicate {
                id: id.clone(),
                paths: live.iter().map(|f| self.vault.rel(&f.path)).collect(),
            }),
        }
    }

    /// The error for a request that is nowhere it could be decided on.
    fn not_live(&self, id: &ApprovalId) -> ApprovalError {
        match self.find(id).ok().and_then(|f| f.into_iter().next()) {
            Some(found) => ApprovalError::NotPending {
                id: id.clone(),
                place: found.place.to_string(),
            },
            None => ApprovalError::NotFound { id: id.clone() },
        }
    }

    /// Reads a request file and checks that it carries the id its name says.
    fn read_request(&self, id: &ApprovalId, path: &Path) -> Result<ApprovalRequest, ApprovalError> {
        let request = self.vault.read_approval_file(path)?;
        if &request.meta.approval_id != id {
            return Err(ApprovalError::BadFile {
                path: self.vault.rel(path),
                reason: format!(
                    "front matter says approval_id `{}` but the file name says `{id}`",
                    request.meta.approval_id
                ),
            });
        }
        Ok(request)
    }

    /// Refuses to decide on a ledger that fails its checks.
    fn ensure_sound(&self, locked: &Locked<'_>) -> Result<(), ApprovalError> {
        match locked.state.damage() {
            Some(problem) => Err(ApprovalError::LedgerDamaged {
                path: self.ledger.path().to_path_buf(),
                detail: problem.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// The human approves request `id` as it was shown to them: checks it (its payload
    /// hashes to `shown`, matches its own hash, not expired), writes the ledger entry with
    /// that hash, then moves the file to `Approved/`. Run again after a crash between the
    /// two, it finishes the move (for the same shown hash). The file is read under the
    /// ledger lock, so what is approved is what was checked.
    pub fn approve(
        &self,
        id: &ApprovalId,
        by: &str,
        shown: &ShownHash,
    ) -> Result<Decided, ApprovalError> {
        self.approve_at(id, by, shown, Utc::now())
    }

    /// [`Approvals::approve`] as if the time were `now`.
    pub(crate) fn approve_at(
        &self,
        id: &ApprovalId,
        by: &str,
        shown: &ShownHash,
        now: DateTime<Utc>,
    ) -> Result<Decided, ApprovalError> {
        let not_as_shown = |now_hash: &str| ApprovalError::NotAsShown {
            id: id.clone(),
            shown: shown.as_str().to_owned(),
            now: now_hash.to_owned(),
        };
        let mut locked = self.ledger.lock()?;
        self.ensure_sound(&locked)?;
        let record = locked.state.get(id).cloned().unwrap_or_default();
        if let Some(rejection) = record.rejected {
            return Err(ApprovalError::AlreadyDecided {
                id: id.clone(),
                decision: "rejected",
                by: rejection.decided_by,
                at: rejection.decided_at,
            });
        }
        let found = self.find_live(id)?;
        if let Some(approval) = record.approved {
            // Approved in the ledger, and the file still pending: a crash came between the
            // entry and the move, so finish the move, for exactly the approved payload.
            if let Some(Found {
                place: Place::Pending(_),
                path,
            }) = found
            {
                let request = self.read_request(id, &path)?;
                if payload_sha256(&request.meta.payload) != approval.payload_sha256 {
                    return Err(ApprovalError::PayloadMismatch {
                        path: self.vault.rel(&path),
                    });
                }
                if !shown.matches(&approval.payload_sha256) {
                    return Err(not_as_shown(&approval.payload_sha256));
                }
                let to = self.move_into(&path, Path::new(APPROVED))?;
                return Ok(Decided {
                    approval_id: id.clone(),
                    decision: "approved".into(),
                    by: approval.decided_by,
                    path: self.vault.rel(&to),
                });
            }
            return Err(ApprovalError::AlreadyDecided {
                id: id.clone(),
                decision: "approved",
                by: approval.decided_by,
                at: approval.decided_at,
            });
        }
        let found = found.ok_or_else(|| self.not_live(id))?;
        let request = self.read_request(id, &found.path)?;
        let meta = &request.meta;
        let hash = payload_sha256(&meta.payload);
        if !shown.matches(&hash) {
            return Err(not_as_shown(&hash));
        }
        if !request.hash_matches() {
            return Err(ApprovalError::PayloadMismatch {
                path: self.vault.rel(&found.path),
            });
        }
        if now >= meta.expires_at {
            return Err(ApprovalError::Expired {
                id: id.clone(),
                at: meta.expires_at,
            });
        }
        // The ledger first: a file in Approved/ without its entry would be set aside, while
        // an entry whose file is still pending is finished by running approve again.
        locked.append(
            id,
            self.approved_event(&request, by, HowApproved::Command, now),
        )?;
        let path = match found.place {
            Place::Pending(_) => self.move_into(&found.path, Path::new(APPROVED))?,
            _ => found.path,
        };
        Ok(Decided {
            approval_id: id.clone(),
            decision: "approved".into(),
            by: by.to_owned(),
            path: self.vault.rel(&path),
        })
    }

    /// The human rejects request `id` (pending, or approved and not yet used, which revokes
    /// the approval): the ledger entry, then the move to `Rejected/`.
    pub fn reject(
        &self,
        id: &ApprovalId,
        by: &str,
        reason: &str,
    ) -> Result<Decided, ApprovalError> {
        let mut locked = self.ledger.lock()?;
        self.ensure_sound(&locked)?;
        let record = locked.state.get(id).cloned().unwrap_or_default();
        if let Some(rejection) = record.rejected {
            return Err(ApprovalError::AlreadyDecided {
                id: id.clone(),
                decision: "rejected",
                by: rejection.decided_by,
                at: rejection.decided_at,
            });
        }
        if let Some(at) = record.used_at {
            return Err(ApprovalError::AlreadyUsed { id: id.clone(), at });
        }
        let found = self.find_live(id)?.ok_or_else(|| self.not_live(id))?;
        // Rejecting is always safe, so an unreadable file can be rejected too.
        let payload_sha256 = match self.read_request(id, &found.path) {
            Ok(request) => payload_sha256(&request.meta.payload),
            Err(_) => record
                .approved
                .map(|a| a.payload_sha256)
                .unwrap_or_default(),
        };
        locked.append(
            id,
            Event::Rejected {
                payload_sha256,
                decided_by: by.to_owned(),
                reason: reason.to_owned(),
            },
        )?;
        let to = self.move_into(&found.path, Path::new(REJECTED))?;
        Ok(Decided {
            approval_id: id.clone(),
            decision: "rejected".into(),
            by: by.to_owned(),
            path: self.vault.rel(&to),
        })
    }

    /// Local zone only: adopts the hand moves among `candidates`, the ids whose file in
    /// `Approved/` the caller found to be a local, uncommitted move of a pending request
    /// (vault-claim's `sync::hand_moves`, run before the sync commits the move). Each one
    /// with no decision or use in the ledger gets an `approved` entry (`moved_by_hand`,
    /// decided by `by`, its lifetime capped) if it is readable, matches its hash and has not
    /// expired; else it is set aside. A file that can be neither is reported in `problems`
    /// and left where it is, never runnable; it never stops the others. Files in `Approved/`
    /// that are not candidates are not looked at: `authorize` sets them aside.
    pub fn adopt_hand_moves(
        &self,
        zone: Zone,
        by: &str,
        candidates: &[ApprovalId],
    ) -> Result<AdoptReport, ApprovalError> {
        self.adopt_at(zone, by, candidates, Utc::now())
    }

    /// [`Approvals::adopt_hand_moves`] as if the time were `now`.
    pub(crate) fn adopt_at(
        &self,
        zone: Zone,
        by: &str,
        candidates: &[ApprovalId],
        now: DateTime<Utc>,
    ) -> Result<AdoptReport, ApprovalError> {
        if zone != Zone::Local {
            return Err(ApprovalError::NotLocal);
        }
        let mut locked = self.ledger.lock()?;
        self.ensure_sound(&locked)?;
        let mut report = AdoptReport::default();
        for id in candidates {
            if locked.state.get(id).is_some_and(|r| {
                r.approved.is_some() || r.rejected.is_some() || r.used_at.is_some()
            }) {
                continue;
            }
            let path = self.approved_path(id);
            if !self.vault.is_plain_file(&path) {
                continue;
            }
            let rel = self.vault.rel(&path);
            let reason = if locked.state.bad_mac_ids.contains(id.as_str()) {
                "a forged ledger line names it".to_owned()
            } else {
                match self.adopt_one(&mut locked, id, &path, by, now) {
                    Ok(Adoption::Adopted) => {
                        report.adopted.push(id.clone());
                        continue;
                    }
                    Ok(Adoption::Refused(reason)) => reason,
                    Err(e) => {
                        report.problems.push((rel, e.to_string()));
                        continue;
                    }
                }
            };
            match self.set_aside(&mut locked, id, &path, &reason) {
                Ok(to) => report.set_aside.push((to, reason)),
                Err(e) => {
                    tracing::error!(approval_id = %id, error = %e, %reason, "could not set aside; the file stays, never runnable");
                    report.problems.push((
                        rel,
                        format!("{reason}; it could not be set aside ({e}), so it stays where it is, never runnable"),
                    ));
                }
            }
        }
        Ok(report)
    }

    /// Approves the hand-moved file `path` of `id` under the lock when it may run (readable,
    /// its payload matching its hash, not expired); else says why not.
    fn adopt_one(
        &self,
        locked: &mut Locked<'_>,
        id: &ApprovalId,
        path: &Path,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<Adoption, ApprovalError> {
        let request = match self.read_request(id, path) {
            Ok(request) => request,
            Err(e) => return Ok(Adoption::Refused(format!("it cannot be read: {e}"))),
        };
        if !request.hash_matches() {
            return Ok(Adoption::Refused(
                "its payload does not match its payload_sha256".to_owned(),
            ));
        }
        if now >= request.meta.expires_at {
            return Ok(Adoption::Refused(format!(
                "it expired at {}",
                request
                    .meta
                    .expires_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )));
        }
        locked.append(
            id,
            self.approved_event(&request, by, HowApproved::MovedByHand, now),
        )?;
        tracing::info!(approval_id = %id, %by, "hand-moved approval adopted");
        Ok(Adoption::Adopted)
    }

    /// At `authorize`, with hand moves accepted: adopts `id`'s file in `Approved/` when it
    /// has no ledger decision and the [`HandMoveCheck`] says the owner moved it there. Only
    /// this one id is looked at; anything else is left to `check`.
    fn adopt_for_authorize(
        &self,
        locked: &mut Locked<'_>,
        id: &ApprovalId,
        now: DateTime<Utc>,
    ) -> Result<(), Verdict> {
        let Some(hand) = self.hand_moves.as_deref() else {
            return Ok(());
        };
        let state = &locked.state;
        let undecided = state
            .get(id)
            .is_none_or(|r| r.approved.is_none() && r.rejected.is_none() && r.used_at.is_none());
        if !undecided || state.damage().is_some() || state.bad_mac_ids.contains(id.as_str()) {
            return Ok(());
        }
        let path = self.approved_path(id);
        if !self.vault.is_plain_file(&path) {
            return Ok(());
        }
        match hand.check.is_hand_move(id) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => {
                tracing::warn!(approval_id = %id, error = %e, "cannot tell whether it was moved by hand");
                return Err(Verdict::Refuse(Refusal::NotApproved {
                    detail: format!(
                        "whether it was moved into Approved/ by hand cannot be told ({e}); approve it with `aie approvals approve {id}`"
                    ),
                }));
            }
        }
        match self.adopt_one(locked, id, &path, &hand.by, now) {
            Ok(Adoption::Adopted) => Ok(()),
            Ok(Adoption::Refused(detail)) => {
                Err(Verdict::SetAside(Refusal::NotApprovable { detail }))
            }
            Err(e) => Err(Verdict::Refuse(Refusal::Unavailable(Box::new(e)))),
        }
    }

    /// Moves a file that may not run into `Quarantine/` (as `<id>.md`, or `<id>~<n>.md` when
    /// that exists) and records why in the ledger; returns its new vault-relative path.
    fn set_aside(
        &self,
        locked: &mut Locked<'_>,
        id: &ApprovalId,
        path: &Path,
        reason: &str,
    ) -> Result<String, ApprovalError> {
        let dir = self.real_dir(Path::new(QUARANTINE))?;
        let mut n = 0u32;
        let to = loop {
            let name = match n {
                0 => id.file_name(),
                n => format!("{id}~{n}.md"),
            };
            let to = dir.join(name);
            match self.vault.move_file(path, &to) {
                Ok(()) => break to,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(ApprovalError::io(&to, e)),
            }
        };
        let rel = self.vault.rel(&to);
        // The move comes first: the file is safe in Quarantine/ even if the note is lost.
        locked.append(
            id,
            Event::SetAside {
                reason: reason.to_owned(),
                path: rel.clone(),
            },
        )?;
        tracing::warn!(approval_id = %id, path = %rel, %reason, "approval set aside");
        Ok(rel)
    }

    /// Authorizes one execution of approval `id` as `tool` with `args`, and marks it used
    /// before returning, so it runs at most once even under concurrent calls.
    ///
    /// Requires: an authentic ledger approval; its file in `Approved/`, unchanged since (the
    /// payload, tool, expiry and task the ledger recorded); `tool` and the hash of `args`
    /// equal to the approved ones; not expired; not used; not rejected. A file that may
    /// never run is set aside into `Quarantine/`.
    pub fn authorize(
        &self,
        id: &ApprovalId,
        tool: &str,
        args: &Value,
    ) -> Result<Authorized, Refused> {
        self.authorize_at(id, tool, args, Utc::now())
    }

    /// [`Approvals::authorize`] as if the time were `now`.
    pub(crate) fn authorize_at(
        &self,
        id: &ApprovalId,
        tool: &str,
        args: &Value,
        now: DateTime<Utc>,
    ) -> Result<Authorized, Refused> {
        let refused = |refusal, set_aside| Refused {
            approval_id: id.clone(),
            refusal,
            set_aside,
            not_set_aside: None,
        };
        let mut locked = self
            .ledger
            .lock()
            .map_err(|e| refused(Refusal::Unavailable(Box::new(e)), None))?;
        let checked = self
            .adopt_for_authorize(&mut locked, id, now)
            .and_then(|()| self.check(&locked, id, tool, args, now));
        let (approval, request) = match checked {
            Ok(checked) => checked,
            Err(Verdict::Refuse(refusal)) => return Err(refused(refusal, None)),
            Err(Verdict::Finish(refusal)) => {
                let path = self.approved_path(id);
                let done = Path::new(DONE).join(DONE_APPROVALS);
                if self.vault.is_plain_file(&path)
                    && let Err(e) = self.move_into(&path, &done)
                {
                    tracing::error!(approval_id = %id, error = %e, "could not move to Done");
                }
                return Err(refused(refusal, None));
            }
            Err(Verdict::SetAside(refusal)) => {
                let path = self.approved_path(id);
                let mut out = refused(refusal, None);
                if self.vault.is_plain_file(&path) {
                    match self.set_aside(&mut locked, id, &path, &out.refusal.to_string()) {
                        Ok(to) => out.set_aside = Some(to),
                        Err(e) => {
                            // Refused all the same; the file stays where it is, still unable
                            // to run, and the refusal says so.
                            tracing::error!(approval_id = %id, error = %e, "could not set aside");
                            out.not_set_aside = Some(e.to_string());
                        }
                    }
                }
                return Err(out);
            }
        };
        let used = locked
            .append(
                id,
                Event::Used {
                    payload_sha256: approval.payload_sha256.clone(),
                    tool: approval.tool.clone(),
                },
            )
            .map_err(|e| refused(Refusal::Unavailable(Box::new(e)), None))?;
        self.in_flight().insert(id.clone());
        Ok(Authorized {
            approval_id: id.clone(),
            tool: approval.tool,
            domain: request.meta.domain,
            payload: request.meta.payload,
            payload_sha256: approval.payload_sha256,
            task_id: approval.task_id,
            used_at: used.at,
            use_seq: used.seq,
        })
    }

    /// Every check `authorize` makes, in order; nothing is written here.
    fn check(
        &self,
        locked: &Locked<'_>,
        id: &ApprovalId,
        tool: &str,
        args: &Value,
        now: DateTime<Utc>,
    ) -> Result<(Approval, ApprovalRequest), Verdict> {
        let state = &locked.state;
        if state.bad_mac_ids.contains(id.as_str()) {
            return Err(Verdict::SetAside(Refusal::BadMac));
        }
        if let Some(problem) = state.damage() {
            return Err(Verdict::Refuse(Refusal::LedgerDamaged {
                detail: problem.to_string(),
            }));
        }
        let record = state.get(id).cloned().unwrap_or_default();
        if let Some(rejection) = record.rejected {
            return Err(Verdict::SetAside(Refusal::Rejected {
                reason: rejection.reason,
                by: rejection.decided_by,
            }));
        }
        if let Some(at) = record.used_at {
            if self.in_flight().contains(id) {
                return Err(Verdict::Refuse(Refusal::AlreadyUsed { at }));
            }
            return Err(match record.result.map(|r| r.outcome) {
                None | Some(Outcome::InDoubt) => Verdict::Refuse(Refusal::InDoubt { since: at }),
                // Done, but a crash kept its file from `Done/approvals/`: finish that.
                Some(Outcome::Ok) => Verdict::Finish(Refusal::AlreadyUsed { at }),
                // Failed: it never runs again, so out of Approved/.
                Some(Outcome::Error) => Verdict::SetAside(Refusal::AlreadyUsed { at }),
            });
        }
        let path = self.approved_path(id);
        let in_approved = self.vault.is_plain_file(&path);
        let Some(approval) = record.approved else {
            if in_approved {
                let detail = if self.hand_moves.is_some() {
                    "it is not a move of a pending request made by hand here and not yet committed: it came through a commit (sync, a merge, a pull) or was written there"
                } else {
                    "moving a file into Approved/ by hand does not approve it here ([approvals] accept_hand_moves is off)"
                };
                return Err(Verdict::SetAside(Refusal::NoLedgerEntry {
                    detail: format!(
                        "{detail}; the owner approves with `aie approvals approve {id}`"
                    ),
                }));
            }
            let pending = self.find(id).ok().and_then(|found| {
                found.into_iter().find_map(|f| match f.place {
                    Place::Pending(domain) => Some(domain),
                    _ => None,
                })
            });
            let detail = match pending {
                Some(domain) => format!(
                    "it is waiting in Pending_Approval/{domain}/; the human approves it with `aie approvals approve {id}` on the local machine"
                ),
                None => format!("no approval request `{id}` is waiting or approved"),
            };
            return Err(Verdict::Refuse(Refusal::NotApproved { detail }));
        };
        if !in_approved {
            return Err(Verdict::Refuse(Refusal::NotApproved {
                detail: format!(
                    "it was approved, but its file is not in Approved/ (after an interrupted approval, `aie approvals approve {id}` finishes it)"
                ),
            }));
        }
        let request = self.read_request(id, &path).map_err(|e| {
            Verdict::SetAside(Refusal::PayloadChanged {
                detail: format!("it cannot be read: {e}"),
            })
        })?;
        let meta = &request.meta;
        let mut changed = Vec::new();
        if payload_sha256(&meta.payload) != approval.payload_sha256 {
            changed.push("payload");
        }
        if meta.payload_sha256 != approval.payload_sha256 {
            changed.push("payload_sha256");
        }
        if meta.tool != approval.tool {
            changed.push("tool");
        }
        if meta.expires_at != approval.file_expires_at() {
            changed.push("expires_at");
        }
        if meta.task_id != approval.task_id {
            changed.push("task_id");
        }
        if !changed.is_empty() {
            return Err(Verdict::SetAside(Refusal::PayloadChanged {
                detail: format!("changed: {}", changed.join(", ")),
            }));
        }
        let valid_until = approval.valid_until(self.max_lifetime);
        if now >= valid_until {
            return Err(Verdict::SetAside(Refusal::Expired { at: valid_until }));
        }
        if tool != approval.tool {
            return Err(Verdict::Refuse(Refusal::ArgumentsDiffer {
                detail: format!("approved for tool `{}`, called as `{tool}`", approval.tool),
            }));
        }
        let args_hash = payload_sha256(args);
        if args_hash != approval.payload_sha256 {
            return Err(Verdict::Refuse(Refusal::ArgumentsDiffer {
                detail: format!(
                    "the arguments hash to {}…, the approved payload to {}…",
                    &args_hash[..12],
                    approval.payload_sha256.get(..12).unwrap_or_default()
                ),
            }));
        }
        Ok((approval, request))
    }

    /// Records how an authorized execution ended. `ok` moves the file to `Done/approvals/`
    /// and completes its task (as its holder, or claimed by `agent` if unclaimed); `error`
    /// sets the file aside (it never runs again); `in_doubt` leaves it for the human. A later
    /// `ok` or `error` may settle an `in_doubt`, once a person has checked.
    pub fn record_result(
        &self,
        id: &ApprovalId,
        outcome: Outcome,
        detail: &str,
        agent: &AgentName,
    ) -> Result<ResultRecorded, ApprovalError> {
        let mut locked = self.ledger.lock()?;
        let record = locked.state.get(id).cloned().unwrap_or_default();
        if record.used_at.is_none() {
            return Err(ApprovalError::NotStarted { id: id.clone() });
        }
        if let Some(done) = record.result.filter(|r| r.outcome != Outcome::InDoubt) {
            return Err(ApprovalError::ResultExists {
                id: id.clone(),
                outcome: done.outcome.to_string(),
            });
        }
        locked.append(
            id,
            Event::Result {
                outcome,
                detail: cap(detail, MAX_DETAIL),
            },
        )?;
        self.in_flight().remove(id);
        let mut out = ResultRecorded {
            approval_id: id.clone(),
            outcome,
            moved_to: None,
            task: None,
            problems: Vec::new(),
        };
        let path = self.approved_path(id);
        let in_approved = self.vault.is_plain_file(&path);
        match outcome {
            Outcome::Ok => {
                if in_approved {
                    let done = Path::new(DONE).join(DONE_APPROVALS);
                    match self.move_into(&path, &done) {
                        Ok(to) => out.moved_to = Some(self.vault.rel(&to)),
                        Err(e) => out.problems.push(e.to_string()),
                    }
                }
                if let Some(task) = record.approved.and_then(|a| a.task_id) {
                    match self.complete_task(&task, id, agent) {
                        Ok(path) => out.task = Some(path),
                        Err(e) => out.problems.push(e.to_string()),
                    }
                }
            }
            Outcome::Error if in_approved => {
                let reason = format!("the action failed ({detail}); have it drafted again");
                match self.set_aside(&mut locked, id, &path, &reason) {
                    Ok(to) => out.moved_to = Some(to),
                    Err(e) => out.problems.push(e.to_string()),
                }
            }
            Outcome::Error | Outcome::InDoubt => {}
        }
        Ok(out)
    }

    /// Gives back the use `use_seq` of approval `id` because the execution did nothing (its
    /// server certified it): the approval is valid and unused again, its file stays in
    /// `Approved/` and its task where it is; the ledger keeps the use and its release.
    ///
    /// Only the execution that took the approval can give it back: the use must be the
    /// approval's current one (`use_seq`), have no result (not even `in_doubt`), and have
    /// been authorized by this process and still await its result. A use left by a crash
    /// stays in doubt.
    pub fn release(
        &self,
        id: &ApprovalId,
        use_seq: u64,
        detail: &str,
    ) -> Result<(), ApprovalError> {
        let mut locked = self.ledger.lock()?;
        let record = locked.state.get(id).cloned().unwrap_or_default();
        let refuse = |why: String| {
            Err(ApprovalError::NotReleasable {
                id: id.clone(),
                why,
            })
        };
        if record.used_at.is_none() {
            return refuse("it is not in use (never used, or given back already)".into());
        }
        if let Some(done) = &record.result {
            return refuse(format!(
                "its use already has a result ({}); only a use without a result is given back",
                done.outcome
            ));
        }
        if record.use_seq != Some(use_seq) {
            return refuse(format!(
                "ledger entry {use_seq} is not its current use ({})",
                record
                    .use_seq
                    .map_or_else(|| "none".to_owned(), |seq| format!("entry {seq}"))
            ));
        }
        if !self.in_flight().contains(id) {
            return refuse(
                "this process is not running it: a use left by a crash stays in doubt, for the human"
                    .into(),
            );
        }
        locked.append(
            id,
            Event::Released {
                use_seq,
                detail: cap(detail, MAX_DETAIL),
            },
        )?;
        self.in_flight().remove(id);
        tracing::info!(approval_id = %id, %detail, "approval given back: nothing ran");
        Ok(())
    }

    /// Moves an executed approval's task to `Done/`: as its holder, or claimed by `agent`
    /// first when unclaimed; a task already done stays.
    fn complete_task(
        &self,
        task: &TaskId,
        id: &ApprovalId,
        agent: &AgentName,
    ) -> Result<String, VaultError> {
        let stored = self.vault.read_task(task)?;
        let note = format!("done: approval `{id}` executed");
        match (stored.folder, stored.holder) {
            (TaskFolder::Done, _) => Ok(stored.path),
            (TaskFolder::InProgress, Some(holder)) => {
                self.vault.complete(task, &holder, Some(&note))
            }
            _ => {
                self.vault.claim(task, agent)?;
                self.vault.complete(task, agent, Some(&note))
            }
        }
    }

    /// Approvals that were started and whose outcome is unknown (a crash, a timeout or a lost connection), for
    /// the human; they are never retried.
    pub fn in_doubt(&self) -> Result<Vec<(ApprovalId, DateTime<Utc>)>, ApprovalError> {
        // Under the lock, from the fold's index of open uses: no copy of the whole fold.
        let locked = self.ledger.lock()?;
        let in_flight = self.in_flight();
        Ok(locked
            .state
            .open_uses()
            .filter(|(id, _)| !in_flight.contains(*id))
            .map(|(id, since)| (id.clone(), since))
            .collect())
    }

    /// Whether this process authorized `id` and awaits its result.
    pub(crate) fn is_in_flight(&self, id: &ApprovalId) -> bool {
        self.in_flight().contains(id)
    }
}

/// What a failed check calls for.
enum Verdict {
    /// Refuse; the file stays where it is (the call is wrong, or the file is not in
    /// `Approved/`, or it is someone's to look at).
    Refuse(Refusal),
    /// Refuse and set the file in `Approved/` aside: it may never run.
    SetAside(Refusal),
    /// Refuse, and move the file of an executed approval on to `Done/approvals/`.
    Finish(Refusal),
}

/// `text` cut to at most `max` characters, marked with `…` when cut.
fn cap(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}
