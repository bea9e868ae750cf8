//! What `aie approvals list` and `aie approvals show ID` print (and `approvals_list` /
//! `approvals_status` answer): each request's id first. `list` shows the requests waiting
//! for the human and, after them, every approval in doubt: used, with no known outcome.
//! `show` prints the exact payload that would run, field by field, its `payload_sha256`
//! (what `approve --sha256` takes) and every look-alike warning.
//!
//! Everything in these renderings that came from a file goes through
//! [`render`](crate::render): no control, bidi or invisible character reaches the
//! owner's terminal unescaped.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use schemars::JsonSchema;
use serde::Serialize;

use super::{
    ApprovalError, Approvals,
    ledger::{HowApproved, LedgerRecord, Outcome},
    lifecycle::Place,
};
use crate::{
    render::{self, Line, payload_warnings},
    vault::{
        AgentName, ApprovalId, ApprovalRequest, BrokenFile, Domain, TaskId, Vault, payload_sha256,
    },
};
use serde_json::Value;

/// One request waiting for the human.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PendingSummary {
    /// The request's id: what `approve` and `reject` take.
    pub approval_id: ApprovalId,
    /// Its domain.
    pub domain: Domain,
    /// The execute tool that would run it.
    pub tool: String,
    /// The agent that drafted it.
    pub requested_by: AgentName,
    /// When.
    pub requested_at: DateTime<Utc>,
    /// After this it cannot be approved.
    pub expires_at: DateTime<Utc>,
    /// The task it serves.
    pub task_id: Option<TaskId>,
    /// Its file, relative to the vault root.
    pub path: String,
    /// Already expired: it can only be rejected.
    pub expired: bool,
    /// Its payload still matches its hash (false: edited, cannot be approved).
    pub payload_matches: bool,
    /// Look-alike and hidden-character warnings about its payload (`show` prints them).
    pub warnings: Vec<String>,
}

impl fmt::Display for PendingSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}  {}  {}  by {}  expires {}",
            self.approval_id,
            self.domain,
            Line(&self.tool),
            self.requested_by,
            self.expires_at.format("%Y-%m-%dT%H:%M:%SZ")
        )?;
        if let Some(task) = &self.task_id {
            write!(f, "  task {task}")?;
        }
        if self.expired {
            write!(f, "  EXPIRED")?;
        }
        if !self.payload_matches {
            write!(f, "  EDITED (payload does not match its hash)")?;
        }
        if !self.warnings.is_empty() {
            write!(
                f,
                "  WARNING: {} look-alike or hidden-character warning(s), read `aie approvals show {}`",
                self.warnings.len(),
                self.approval_id
            )?;
        }
        Ok(())
    }
}

/// One approval in doubt: taken for an execution whose outcome nobody knows (a crash or a
/// timeout between the `used` entry and the result, or a server that said so). It is never
/// retried; the human checks the outside world.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct InDoubtSummary {
    /// The approval's id.
    pub approval_id: ApprovalId,
    /// The execute tool it was taken for, when known.
    pub tool: Option<String>,
    /// The task it serves.
    pub task_id: Option<TaskId>,
    /// When it was taken (or, from a server's own journal, when the attempt began).
    pub since: DateTime<Utc>,
    /// What is known, one note per source (the ledger, a server's journal).
    pub notes: Vec<String>,
}

impl fmt::Display for InDoubtSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}  IN DOUBT", self.approval_id)?;
        if let Some(tool) = &self.tool {
            write!(f, "  {}", Line(tool))?;
        }
        write!(f, "  since {}", self.since.format("%Y-%m-%dT%H:%M:%SZ"))?;
        if let Some(task) = &self.task_id {
            write!(f, "  task {task}")?;
        }
        for note in &self.notes {
            write!(f, "  {}", Line(note))?;
        }
        write!(
            f,
            "  (it may or may not have happened: check by hand; it is never retried; `aie approvals show {}`)",
            self.approval_id
        )
    }
}

/// The requests waiting for the human, oldest first, the files that cannot be read, and
/// the approvals in doubt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PendingListing {
    /// Readable requests.
    pub pending: Vec<PendingSummary>,
    /// Unreadable files in `Pending_Approval/`, left as they are.
    pub broken: Vec<BrokenFile>,
    /// Approvals used with no known outcome, oldest first ([`Approvals::list_pending`]
    /// fills it from the ledger; the free [`list_pending`] reads no ledger).
    pub in_doubt: Vec<InDoubtSummary>,
}

impl PendingListing {
    /// True when nothing waits for the human and nothing is in doubt.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.broken.is_empty() && self.in_doubt.is_empty()
    }
}

impl fmt::Display for PendingListing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.pending {
            writeln!(f, "{line}")?;
        }
        for broken in &self.broken {
            // The file's stem first, like an id, so every line starts with one.
            let stem = broken.path.rsplit('/').next().unwrap_or_default();
            let stem = stem.strip_suffix(".md").unwrap_or(stem);
            writeln!(
                f,
                "{}  UNREADABLE  {}: {}",
                Line(stem),
                Line(&broken.path),
                Line(&broken.error)
            )?;
        }
        for doubt in &self.in_doubt {
            writeln!(f, "{doubt}")?;
        }
        Ok(())
    }
}

/// Lists `Pending_Approval/<domain>/` for the human.
pub fn list_pending(vault: &Vault) -> Result<PendingListing, ApprovalError> {
    let now = Utc::now();
    let mut listing = PendingListing::default();
    for domain in Domain::ALL {
        for path in vault.markdown_files(&vault.pending_approval_dir(domain))? {
            let rel = vault.rel(&path);
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            let request = match vault.read_approval_file(&path) {
                Ok(request) if request.meta.approval_id.as_str() == stem => request,
                Ok(request) => {
                    listing.broken.push(BrokenFile {
                        path: rel,
                        error: format!(
                            "front matter says approval_id `{}` but the file name says `{stem}`",
                            request.meta.approval_id
                        ),
                    });
                    continue;
                }
                Err(e) => {
                    listing.broken.push(BrokenFile {
                        path: rel,
                        error: e.detail(),
                    });
                    continue;
                }
            };
            let payload_matches = request.hash_matches();
            let warnings = payload_warnings(&request.meta.payload);
            let meta = request.meta;
            listing.pending.push(PendingSummary {
                expired: now >= meta.expires_at,
                approval_id: meta.approval_id,
                domain: meta.domain,
                tool: meta.tool,
                requested_by: meta.requested_by,
                requested_at: meta.requested_at,
                expires_at: meta.expires_at,
                task_id: meta.task_id,
                path: rel,
                payload_matches,
                warnings,
            });
        }
    }
    listing
        .pending
        .sort_by(|a, b| (a.requested_at, &a.approval_id).cmp(&(b.requested_at, &b.approval_id)));
    Ok(listing)
}

/// Where an approval stands, all things considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for the human.
    Pending,
    /// Its time ran out before it ran.
    Expired,
    /// Approved on this machine, not yet used.
    Approved,
    /// In `Approved/` with no approval given on this machine: it will be set aside.
    Unverified,
    /// Rejected (or an approval revoked).
    Rejected,
    /// Authorized by this process; the result is not in yet.
    Running,
    /// Started, outcome unknown: the human checks; never retried.
    InDoubt,
    /// Executed.
    Done,
    /// Executed with an error; it never runs again.
    Failed,
    /// Set aside into `Quarantine/`: it never runs.
    SetAside,
}

impl fmt::Display for ApprovalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Expired => "expired",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Unverified => "unverified",
            ApprovalStatus::Rejected => "rejected",
            ApprovalStatus::Running => "running",
            ApprovalStatus::InDoubt => "IN DOUBT",
            ApprovalStatus::Done => "done",
            ApprovalStatus::Failed => "failed",
            ApprovalStatus::SetAside => "set aside",
        })
    }
}

/// Everything known about one approval: its file, its request, what the ledger says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalView {
    /// The approval's id.
    pub approval_id: ApprovalId,
    /// The execute tool that would run it, when its file can be read.
    pub tool: Option<String>,
    /// The exact payload that would run (the tool's arguments), when its file can be read.
    pub payload: Option<Value>,
    /// The SHA-256 of that payload's canonical JSON, computed here (not the file's own
    /// claim): what `aie approvals approve ID --sha256 HEX` takes a prefix of.
    pub payload_sha256: Option<String>,
    /// Look-alike and hidden-character warnings about the payload, each a `WARNING:` line.
    pub warnings: Vec<String>,
    /// Where it stands.
    pub status: ApprovalStatus,
    /// Where its file is, if anywhere.
    pub place: Option<Place>,
    /// Its file, relative to the vault root.
    pub path: Option<String>,
    /// Other files carrying the same id (earlier set-asides, duplicates).
    pub other_paths: Vec<String>,
    /// The request, when its file can be read.
    pub request: Option<ApprovalRequest>,
    /// Why its file cannot be read.
    pub file_error: Option<String>,
    /// Whether the payload still matches the file's own hash.
    pub payload_matches: Option<bool>,
    /// What the ledger says.
    pub ledger: Option<LedgerRecord>,
    /// When the approval stops being valid, if it was given: the request's own expiry or
    /// the local config's longest lifetime from the decision, whichever comes first. This
    /// is the expiry `authorize` enforces, not the file's. For a pending request whose own
    /// expiry is beyond that cap: when an approval given now would expire.
    pub valid_until: Option<DateTime<Utc>>,
    /// The local config's longest lifetime of an approval, in hours.
    pub max_lifetime_hours: i64,
    /// The ledger's first problem, if it fails its checks.
    pub ledger_damage: Option<String>,
}

impl Approvals {
    /// Lists the requests waiting for the human, and the approvals in doubt.
    pub fn list_pending(&self) -> Result<PendingListing, ApprovalError> {
        let mut listing = list_pending(self.vault())?;
        let state = self.ledger().read()?;
        for (id, since) in self.in_doubt()? {
            let record = state.get(&id).cloned().unwrap_or_default();
            let note = match &record.result {
                Some(result) => format!("result in doubt: {}", result.detail),
                None => {
                    "used, no result recorded (a crash, or a stack running it right now)".to_owned()
                }
            };
            let approved = record.approved.as_ref();
            listing.in_doubt.push(InDoubtSummary {
                tool: approved.map(|a| a.tool.clone()),
                task_id: approved.and_then(|a| a.task_id.clone()),
                approval_id: id,
                since,
                notes: vec![note],
            });
        }
        listing
            .in_doubt
            .sort_by(|a, b| (a.since, &a.approval_id).cmp(&(b.since, &b.approval_id)));
        Ok(listing)
    }

    /// Everything known about approval `id`, for the human (`aie approvals show`).
    pub fn show(&self, id: &ApprovalId) -> Result<ApprovalView, ApprovalError> {
        let state = self.ledger().read()?;
        let record = state.get(id).cloned();
        let mut found = self.find(id)?;
        // The live file first; set-aside copies after.
        found.sort_by_key(|f| f.place == Place::Quarantine);
        if found.is_empty() && record.is_none() {
            return Err(ApprovalError::NotFound { id: id.clone() });
        }
        let primary = found.first().cloned();
        let (request, file_error) = match &primary {
            Some(f) => match self.vault().read_approval_file(&f.path) {
                Ok(request) => (Some(request), None),
                Err(e) => (None, Some(e.detail())),
            },
            None => (None, None),
        };
        let now = Utc::now();
        let status = status_of(
            record.as_ref(),
            primary.as_ref().map(|f| f.place),
            request.as_ref(),
            self.is_in_flight(id),
            now,
            self.max_lifetime(),
        );
        let valid_until = record
            .as_ref()
            .and_then(|r| r.approved.as_ref())
            .map(|a| a.valid_until(self.max_lifetime()));
        // Still to be decided: the expiry an approval given now would get, when the cap
        // cuts the request's own short.
        let valid_until = valid_until.or_else(|| {
            let requested = request.as_ref()?.meta.expires_at;
            let cap = now.checked_add_signed(self.max_lifetime())?;
            (matches!(status, ApprovalStatus::Pending) && cap < requested).then_some(cap)
        });
        let payload = request.as_ref().map(|r| r.meta.payload.clone());
        Ok(ApprovalView {
            approval_id: id.clone(),
            tool: request.as_ref().map(|r| r.meta.tool.clone()),
            payload_sha256: payload.as_ref().map(payload_sha256),
            warnings: payload.as_ref().map(payload_warnings).unwrap_or_default(),
            payload,
            status,
            place: primary.as_ref().map(|f| f.place),
            path: primary.as_ref().map(|f| self.vault().rel(&f.path)),
            other_paths: found
                .iter()
                .skip(1)
                .map(|f| self.vault().rel(&f.path))
                .collect(),
            payload_matches: request.as_ref().map(ApprovalRequest::hash_matches),
            request,
            file_error,
            ledger: record,
            valid_until,
            max_lifetime_hours: self.max_lifetime().num_hours(),
            ledger_damage: state.damage().map(ToString::to_string),
        })
    }
}

/// The status the ledger and the file's place add up to; the ledger wins where it speaks.
fn status_of(
    record: Option<&LedgerRecord>,
    place: Option<Place>,
    request: Option<&ApprovalRequest>,
    in_flight: bool,
    now: DateTime<Utc>,
    max_lifetime: TimeDelta,
) -> ApprovalStatus {
    let expired = |at: DateTime<Utc>| now >= at;
    if let Some(record) = record {
        if record.rejected.is_some() {
            return ApprovalStatus::Rejected;
        }
        if record.used_at.is_some() {
            return match record.result.as_ref().map(|r| r.outcome) {
                _ if in_flight => ApprovalStatus::Running,
                None | Some(Outcome::InDoubt) => ApprovalStatus::InDoubt,
                Some(Outcome::Ok) => ApprovalStatus::Done,
                Some(Outcome::Error) => ApprovalStatus::Failed,
            };
        }
        if place == Some(Place::Quarantine) || (place.is_none() && !record.set_aside.is_empty()) {
            return ApprovalStatus::SetAside;
        }
        if let Some(approval) = &record.approved {
            return if expired(approval.valid_until(max_lifetime)) {
                ApprovalStatus::Expired
            } else {
                ApprovalStatus::Approved
            };
        }
    }
    let request_expired = request.is_some_and(|r| expired(r.meta.expires_at));
    match place {
        Some(Place::Pending(_)) if request_expired => ApprovalStatus::Expired,
        Some(Place::Pending(_)) | None => ApprovalStatus::Pending,
        Some(Place::Approved) => ApprovalStatus::Unverified,
        Some(Place::Rejected) => ApprovalStatus::Rejected,
        Some(Place::Done) => ApprovalStatus::Done,
        Some(Place::Quarantine) => ApprovalStatus::SetAside,
    }
}

impl fmt::Display for ApprovalView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = |t: &DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        write!(f, "{}  {}", self.approval_id, self.status)?;
        if let Some(request) = &self.request {
            write!(
                f,
                "  {}  ({})",
                Line(&request.meta.tool),
                request.meta.domain
            )?;
        }
        writeln!(f)?;
        for warning in &self.warnings {
            writeln!(f, "{warning}")?;
        }
        match &self.path {
            Some(path) => writeln!(f, "file: {}", Line(path))?,
            None => writeln!(f, "file: none")?,
        }
        for other in &self.other_paths {
            writeln!(f, "also: {}", Line(other))?;
        }
        if let Some(error) = &self.file_error {
            writeln!(f, "the file cannot be read: {}", Line(error))?;
        }
        if let Some(request) = &self.request {
            let meta = &request.meta;
            writeln!(
                f,
                "requested by {} at {}, expires {}",
                meta.requested_by,
                time(&meta.requested_at),
                time(&meta.expires_at)
            )?;
            let decided = self.ledger.as_ref().is_some_and(|r| r.approved.is_some());
            if let Some(until) = self.valid_until.filter(|_| !decided) {
                writeln!(
                    f,
                    "approved now, it would be valid until {} only (an approval lasts at most {} hours here: [approvals] max_lifetime_hours)",
                    time(&until),
                    self.max_lifetime_hours
                )?;
            }
            if let Some(task) = &meta.task_id {
                writeln!(f, "task: {task}")?;
            }
            let hash = payload_sha256(&meta.payload);
            writeln!(f, "tool: {}", Line(&meta.tool))?;
            writeln!(f, "payload (exactly what runs, field by field):")?;
            write_payload(f, &meta.payload)?;
            if hash == meta.payload_sha256 {
                writeln!(f, "payload_sha256: {hash}")?;
            } else {
                writeln!(
                    f,
                    "payload_sha256: {hash} (the file says {}: it DOES NOT MATCH the payload, the file was edited; it cannot be approved)",
                    Line(&meta.payload_sha256)
                )?;
            }
            if !request.preview.trim().is_empty() {
                writeln!(
                    f,
                    "preview (written by the drafting agent; what runs is the payload above):"
                )?;
                for line in request.preview.lines() {
                    writeln!(f, "  {}", Line(line))?;
                }
            }
            if self.status == ApprovalStatus::Pending && hash == meta.payload_sha256 {
                writeln!(
                    f,
                    "to approve exactly this payload: aie approvals approve {} --sha256 {}",
                    self.approval_id,
                    &hash[..16]
                )?;
            }
        }
        if let Some(record) = &self.ledger {
            if let Some(a) = &record.approved {
                let how = match a.how {
                    HowApproved::Command => "with `aie approvals approve`",
                    HowApproved::MovedByHand => "by moving the file to Approved/",
                };
                writeln!(
                    f,
                    "approved by {} at {} {how}, payload_sha256 {}",
                    Line(&a.decided_by),
                    time(&a.decided_at),
                    Line(&a.payload_sha256)
                )?;
                let until = self.valid_until.unwrap_or(a.expires_at);
                if until < a.file_expires_at() {
                    writeln!(
                        f,
                        "valid until {} (the request asks for {}; an approval lasts at most {} hours here: [approvals] max_lifetime_hours)",
                        time(&until),
                        time(&a.file_expires_at()),
                        self.max_lifetime_hours
                    )?;
                } else {
                    writeln!(f, "valid until {}", time(&until))?;
                }
            }
            if let Some(r) = &record.rejected {
                writeln!(
                    f,
                    "rejected by {} at {}: {}",
                    Line(&r.decided_by),
                    time(&r.decided_at),
                    Line(&r.reason)
                )?;
            }
            for given_back in &record.released {
                writeln!(
                    f,
                    "used at {}, given back at {}: nothing ran ({})",
                    time(&given_back.used_at),
                    time(&given_back.at),
                    Line(&given_back.detail)
                )?;
            }
            if let Some(at) = &record.used_at {
                writeln!(f, "used at {}", time(at))?;
            }
            if let Some(result) = &record.result {
                writeln!(
                    f,
                    "result: {} at {}: {}",
                    result.outcome,
                    time(&result.at),
                    Line(&result.detail)
                )?;
            }
            for aside in &record.set_aside {
                writeln!(
                    f,
                    "set aside at {} to {}: {}",
                    time(&aside.at),
                    Line(&aside.path),
                    Line(&aside.reason)
                )?;
            }
        }
        if self.status == ApprovalStatus::InDoubt {
            writeln!(
                f,
                "it was started and whether it happened is unknown: check by hand; it is never retried"
            )?;
        }
        if let Some(damage) = &self.ledger_damage {
            writeln!(f, "the approval ledger is DAMAGED: {}", Line(damage))?;
        }
        Ok(())
    }
}

/// The payload, one field a line (`  to: ["alice@example.org"]`); a text of several lines
/// as a block of `    | ` lines; every text escaped by [`render`].
fn write_payload(f: &mut fmt::Formatter<'_>, payload: &Value) -> fmt::Result {
    let Value::Object(fields) = payload else {
        return write_json_block(f, payload, "  ");
    };
    if fields.is_empty() {
        return writeln!(f, "  (no fields)");
    }
    for (key, value) in fields {
        let key = Line(key);
        match value {
            Value::String(text) if text.contains('\n') => {
                let lines: Vec<&str> = text.split('\n').collect();
                writeln!(f, "  {key}: ({} lines)", lines.len())?;
                for line in lines {
                    writeln!(f, "    | {}", Line(line))?;
                }
            }
            Value::Object(_) => {
                writeln!(f, "  {key}:")?;
                write_json_block(f, value, "    ")?;
            }
            Value::Array(items) if items.iter().any(|i| i.is_object() || i.is_array()) => {
                writeln!(f, "  {key}:")?;
                write_json_block(f, value, "    ")?;
            }
            Value::Array(items) => {
                let shown: Vec<String> = items.iter().map(scalar).collect();
                writeln!(f, "  {key}: [{}]", shown.join(", "))?;
            }
            scalar_value => writeln!(f, "  {key}: {}", scalar(scalar_value))?,
        }
    }
    Ok(())
}

/// One scalar: a text quoted (`"` inside as `\"`) and escaped, anything else as JSON.
fn scalar(value: &Value) -> String {
    match value {
        Value::String(text) => format!("\"{}\"", render::line(text).replace('"', "\\\"")),
        other => render::json(other).unwrap_or_default(),
    }
}

/// `value` as pretty JSON (hidden characters as `\uXXXX`), each line indented.
fn write_json_block(f: &mut fmt::Formatter<'_>, value: &Value, indent: &str) -> fmt::Result {
    for line in render::json(value).unwrap_or_default().lines() {
        writeln!(f, "{indent}{line}")?;
    }
    Ok(())
}
