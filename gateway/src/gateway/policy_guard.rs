//! [`PolicyGuard`]: the gateway's real [`CallGuard`]. It decides every `tools/call` by the
//! operator's policy (zones, effect classes, roles), the owner's limits and the human's
//! approvals, and writes one audit record for each call, allowed or refused.
//!
//! In order, for each call (`specs/gateway.md`, "Policy guard"):
//! 1. the client's rate limit;
//! 2. the policy: the cloud zone never runs an `execute` tool, a role only its classes and
//!    tools, an unknown tool is `execute` (`Policy::decide`);
//! 3. the tool's rate limit;
//! 4. for an `execute` tool (local zone): an `approval_id`, the owner's effect budgets, then
//!    `Approvals::authorize`, which marks the approval used before anything is forwarded
//!    (with `[approvals] accept_hand_moves`, it first adopts that one approval's file if the
//!    vault's git state shows the owner moved it into `Approved/` by hand; every approval's
//!    lifetime is capped by `[approvals] max_lifetime_hours`); and an audit record of the
//!    intent, whose failure refuses the call.
//!
//! `after` records the outcome in the audit log and, for an execute call, in the approval
//! ledger: a result is `ok` or `error`; a backend that failed or vanished after the call was
//! forwarded leaves the approval **in doubt** (contract invariant 7), never retried; an
//! in-process server that certifies nothing ran (`CallOutcome::NotExecuted`) gets the
//! approval given back, valid and unused.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock, PoisonError, RwLock},
    time::Instant,
};

use aie_shared::{
    approvals::{Approvals, Authorized, Outcome, local_user},
    audit::{AuditLog, CallStatus, ToolCall},
    config::{Config, Limits},
    executor::AuthorizedActions,
    policy::{Decision, EffectClass, Policy, Zone},
    vault::{AgentName, ApprovalId, ApprovalRequest, Vault, payload_sha256},
};
use aie_vault_claim::sync::GitHandMoves;
use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio::sync::watch;

use super::{
    call_refusal::CallRefusal,
    guard::{CallGuard, CallInfo, CallOutcome, ClientIdentity, HttpRefused, Permit},
    limits::{Budgets, RateLimits, Spend},
    refusals::{self, Admission, RefusalRate, RefusalThrottle, Release},
};

/// The argument every execute call carries: the approval it runs under.
pub const APPROVAL_ARG: &str = "approval_id";

/// Why a [`PolicyGuard`] could not be built; each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum PolicyGuardError {
    /// The audit log cannot be opened (a link, a truncated chain, no permission).
    #[error("cannot open the audit log: {0}")]
    Audit(#[from] aie_shared::audit::AuditError),
    /// The approval ledger cannot be opened (its key, the state folder).
    #[error("cannot open the approval ledger: {0}")]
    Approvals(#[from] aie_shared::approvals::ApprovalError),
    /// The budgets' files in the state folder cannot be read.
    #[error("cannot read the effect budgets in {}: {source}", dir.display())]
    Budgets {
        /// The state folder.
        dir: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// What a reload may change: the policy and the limits.
struct Live {
    policy: Policy,
    limits: Limits,
    /// Shared with the next `Live` when a reload leaves the rate limits as they were, so a
    /// reload never refills a bucket.
    rates: Arc<RateLimits>,
}

impl Live {
    fn new(config: &Config) -> Self {
        Self {
            policy: Policy::new(config),
            limits: config.limits.clone(),
            rates: Arc::new(RateLimits::new(&config.limits)),
        }
    }
}

/// What `before` hands to `after` through the permit.
struct CallData {
    correlation_id: String,
    class: EffectClass,
    args_sha256: String,
    approval_id: Option<ApprovalId>,
    /// The ledger `seq` of the approval's `used` entry: what a release names.
    use_seq: u64,
}

struct Inner {
    zone: Zone,
    agent: AgentName,
    audit: AuditLog,
    /// The local zone's approvals; the cloud zone has none (it never executes).
    approvals: Option<Approvals>,
    /// Checked and spent under one lock with the authorization, so two concurrent
    /// executions cannot both fit the last unit of a budget.
    budgets: Mutex<Budgets>,
    live: RwLock<Arc<Live>>,
    /// The rate of HTTP-refusal records, so a flood cannot grow the log without bound.
    refusals: RefusalThrottle,
    /// Where an authorized payload is handed to the executors hosted in this process, so
    /// they act on exactly what the ledger check let through (`aie_shared::executor`).
    handoff: OnceLock<AuthorizedActions>,
}

/// The gateway's policy, limits, approvals and audit, as one [`CallGuard`]. Cheap to clone.
#[derive(Clone)]
pub struct PolicyGuard {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PolicyGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyGuard")
            .field("zone", &self.inner.zone)
            .field("agent", &self.inner.agent)
            .finish_non_exhaustive()
    }
}

impl PolicyGuard {
    /// A guard for `zone` with `config`'s policy and limits, writing the audit log of `agent`
    /// in `vault` and keeping the ledger, budgets and audit head in `state_dir`. Blocking
    /// file I/O (opening the log and the ledger). `config`'s `[approvals]` apply for the
    /// guard's life (a reload does not change them).
    pub fn new(
        config: &Config,
        zone: Zone,
        vault: Vault,
        state_dir: &Path,
        agent: AgentName,
    ) -> Result<Self, PolicyGuardError> {
        let audit = AuditLog::open(&vault, state_dir, agent.clone())?;
        let approvals = match zone {
            Zone::Local => Some(local_approvals(config, vault, state_dir)?),
            Zone::Cloud => None,
        };
        let budgets = Budgets::load(state_dir).map_err(|source| PolicyGuardError::Budgets {
            dir: state_dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                zone,
                agent,
                audit,
                approvals,
                budgets: Mutex::new(budgets),
                live: RwLock::new(Arc::new(Live::new(config))),
                refusals: RefusalThrottle::new(RefusalRate::of(&config.limits)),
                handoff: OnceLock::new(),
            }),
        })
    }

    /// Hands every authorized payload to `actions`, where the executors this process hosts
    /// take it (the composition root gives them the same table). Set once; a second call is
    /// ignored and returns false.
    pub fn hand_over_to(&self, actions: AuthorizedActions) -> bool {
        self.inner.handoff.set(actions).is_ok()
    }

    /// Follows a config watch (`ConfigWatcher::subscribe`): each published config replaces
    /// the policy and limits between two calls; a call already decided keeps its decision.
    /// Spawns a task that ends when the watch's sender is gone.
    pub fn follow(&self, mut configs: watch::Receiver<Arc<Config>>) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            while configs.changed().await.is_ok() {
                let config = configs.borrow_and_update().clone();
                inner.replace_config(&config);
                tracing::info!("policy guard: the reloaded policy and limits apply");
            }
        });
    }

    /// Applies `config`'s policy and limits now.
    pub fn set_config(&self, config: &Config) {
        self.inner.replace_config(config);
    }

    /// The zone this guard enforces.
    pub fn zone(&self) -> Zone {
        self.inner.zone
    }
}

impl Inner {
    fn live(&self) -> Arc<Live> {
        self.live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace_config(&self, config: &Config) {
        let mut live = self.live.write().unwrap_or_else(PoisonError::into_inner);
        let same_rates = live.limits.per_client == config.limits.per_client
            && live.limits.per_tool == config.limits.per_tool;
        let mut next = Live::new(config);
        if same_rates {
            next.rates = live.rates.clone();
        }
        // Under the same lock, so a call that sees the new policy also sees this rate.
        self.refusals.set_rate(RefusalRate::of(&config.limits));
        *live = Arc::new(next);
    }

    /// Appends one audit record, off the async runtime.
    async fn audit(&self, call: ToolCall) -> Result<(), String> {
        let log = self.audit.clone();
        match tokio::task::spawn_blocking(move || log.append(call)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("the audit writer stopped: {e}")),
        }
    }

    /// Writes what the refusal throttle held for `client` once its rate allows, unless a
    /// later record carried the count first.
    fn release_held_refusals(self: Arc<Self>, client: String) {
        tokio::spawn(async move {
            loop {
                match self.refusals.release(&client) {
                    Release::Nothing => return,
                    Release::Wait(wait) => tokio::time::sleep(wait).await,
                    Release::Record(call) => {
                        if let Err(e) = self.audit(call).await {
                            tracing::error!(error = %e, "audit record of held HTTP refusals not written");
                        }
                        return;
                    }
                }
            }
        });
    }

    /// Tells the approval ledger how the execution under `id` (its use `use_seq`) ended, off
    /// the async runtime, and returns the audit record's reason: `note`, or what happened
    /// instead when the ledger could not be told.
    async fn settle(
        self: &Arc<Self>,
        id: &ApprovalId,
        use_seq: u64,
        settle: Settle,
        note: String,
    ) -> String {
        let Some(approvals) = self.approvals.clone() else {
            return note;
        };
        let (id2, agent, inner) = (id.clone(), self.agent.clone(), Arc::clone(self));
        // The note of what was recorded (or tried), and how that went.
        let settled = tokio::task::spawn_blocking(move || match settle {
            Settle::Result(outcome) => {
                let done = approvals.record_result(&id2, outcome, &note, &agent);
                (note, done.map(|d| d.problems))
            }
            Settle::Release { reason } => match approvals.release(&id2, use_seq, &reason) {
                Ok(()) => {
                    // Nothing ran: what it spent of the budgets is given back too.
                    let budgets = inner.budgets.lock();
                    let refunded = budgets
                        .unwrap_or_else(PoisonError::into_inner)
                        .refund(use_seq);
                    if let Err(e) = refunded {
                        tracing::error!(approval_id = %id2, error = %e, "effect budgets not refunded in the state folder");
                    }
                    (note, Ok(Vec::new()))
                }
                // Nothing ran, so it is not in doubt; not given back, so it may never run
                // again: recorded as failed (set aside), the safe reading.
                Err(e) => {
                    tracing::error!(approval_id = %id2, error = %e, "approval not given back");
                    let note = format!(
                        "not executed: {reason}; the approval could not be given back ({e}), so it is recorded as failed and set aside"
                    );
                    let done = approvals.record_result(&id2, Outcome::Error, &note, &agent);
                    (note, done.map(|d| d.problems))
                }
            },
        })
        .await;
        let joined = |note: &str, what: String| match note {
            "" => what,
            note => format!("{note}; {what}"),
        };
        match settled {
            Ok((note, Ok(problems))) => {
                if !problems.is_empty() {
                    tracing::warn!(approval_id = %id, ?problems, "result recorded with problems");
                }
                note
            }
            Ok((note, Err(e))) => {
                tracing::error!(approval_id = %id, error = %e, "result not recorded in the approval ledger: it stays in doubt");
                joined(
                    &note,
                    format!(
                        "the approval ledger could not record this ({e}), so the approval stays in doubt"
                    ),
                )
            }
            Err(e) => {
                tracing::error!(approval_id = %id, error = %e, "result recording stopped");
                format!("recording the outcome stopped ({e}), so the approval stays in doubt")
            }
        }
    }

    /// Audits a refusal and returns its reason, for `before` to answer.
    async fn refuse(&self, call: ToolCall, started: Instant, refusal: CallRefusal) -> String {
        let reason = refusal.to_string();
        let record = call.refused(reason.clone()).latency_ms(elapsed_ms(started));
        if let Err(e) = self.audit(record).await {
            tracing::error!(error = %e, "audit record of a refused call not written");
        }
        reason
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What an execute call asks for: the approval, and the payload it restates (if any).
fn approval_args(
    tool: &str,
    args: &Map<String, Value>,
) -> Result<(ApprovalId, Option<Value>), CallRefusal> {
    let Some(raw) = args.get(APPROVAL_ARG) else {
        return Err(CallRefusal::NoApprovalId {
            tool: tool.to_owned(),
        });
    };
    let id = raw
        .as_str()
        .and_then(|s| ApprovalId::new(s).ok())
        .ok_or_else(|| CallRefusal::BadApprovalId { raw: raw.clone() })?;
    let mut rest = args.clone();
    rest.remove(APPROVAL_ARG);
    let restated = (!rest.is_empty()).then_some(Value::Object(rest));
    Ok((id, restated))
}

/// `Approved/<id>.md`, read and parsed, if it is a plain file there.
fn read_approved(vault: &Vault, id: &ApprovalId) -> Option<ApprovalRequest> {
    let path = vault.root().join("Approved").join(id.file_name());
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    ApprovalRequest::parse(&text).ok()
}

/// What the approval ledger is told of an execution.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Settle {
    /// A result: the use stays spent.
    Result(Outcome),
    /// Nothing ran: the use is given back and the approval is valid again.
    Release {
        /// What the server (or the gateway) said, for the ledger.
        reason: String,
    },
}

/// Longest server text quoted in an audit reason (the log cuts reasons at 1024).
const MAX_QUOTED: usize = 512;

/// `text` cut to at most `max` characters, marked with `…` when cut.
fn quoted(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// A release, and the audit reason that says nothing ran.
fn release(reason: &str) -> (Settle, CallStatus, String) {
    let reason = quoted(reason, MAX_QUOTED);
    let note = format!("not executed: {reason}; the approval stays valid and unused");
    (Settle::Release { reason }, CallStatus::Error, note)
}

/// What the approval ledger is told of a forwarded execute call's outcome, the audit status
/// and the audit reason.
fn ledger_outcome(outcome: &CallOutcome) -> (Settle, CallStatus, String) {
    let result = |outcome, status, note: String| (Settle::Result(outcome), status, note);
    match outcome {
        CallOutcome::Result { is_error: false } => {
            result(Outcome::Ok, CallStatus::Ok, String::new())
        }
        // The server answered: the call is over, and its error is its answer. The file is
        // set aside, so it can never run again (a failed send is drafted again).
        CallOutcome::Result { is_error: true } => result(
            Outcome::Error,
            CallStatus::Error,
            "the server answered with an error".to_owned(),
        ),
        // A server the gateway believes certified that nothing ran.
        CallOutcome::NotExecuted { reason } => release(reason),
        // A server the gateway believes says it may have happened.
        CallOutcome::InDoubt { reason } => result(
            Outcome::InDoubt,
            CallStatus::InDoubt,
            format!(
                "the server says it may have happened: {}",
                quoted(reason, MAX_QUOTED)
            ),
        ),
        // Nothing definitive came back: whether the action happened is unknown.
        CallOutcome::Failed { reason } => result(
            Outcome::InDoubt,
            CallStatus::InDoubt,
            format!("no answer after forwarding: {reason}"),
        ),
        CallOutcome::InputRequired => result(
            Outcome::InDoubt,
            CallStatus::InDoubt,
            "the server asked for more input mid-execution".to_owned(),
        ),
        CallOutcome::Task { task_id } => result(
            Outcome::InDoubt,
            CallStatus::InDoubt,
            format!("the server runs it as task {task_id}; its end is not known here"),
        ),
    }
}

#[async_trait]
impl CallGuard for PolicyGuard {
    fn visible(&self, client: &ClientIdentity, tool: &str) -> bool {
        let live = self.inner.live();
        live.policy.visible_in(self.inner.zone, tool)
            && live
                .policy
                .decide(self.inner.zone, &client.role, tool)
                .is_allowed()
    }

    async fn before(&self, client: &ClientIdentity, call: &CallInfo) -> Result<Permit, String> {
        let inner = &self.inner;
        let started = Instant::now();
        let live = inner.live();
        let class = live.policy.class_of(&call.tool);
        let args = call.arguments.clone().unwrap_or_default();
        let args_value = Value::Object(args.clone());
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let record = ToolCall::new(
            inner.zone,
            &client.name,
            &correlation_id,
            &call.tool,
            class,
            &args_value,
        );

        if let Err(refused) = live.rates.check_client(&client.name) {
            return Err(inner.refuse(record, started, refused.into()).await);
        }
        if let Decision::Refuse(reason) = live.policy.decide(inner.zone, &client.role, &call.tool) {
            let refusal = CallRefusal::Policy(reason);
            return Err(inner.refuse(record, started, refusal).await);
        }
        if let Err(refused) = live.rates.check_tool(&call.tool) {
            return Err(inner.refuse(record, started, refused.into()).await);
        }

        let mut data = CallData {
            correlation_id,
            class,
            args_sha256: record.args_sha256.clone(),
            approval_id: None,
            use_seq: 0,
        };
        if class == EffectClass::Execute {
            let (id, restated) = match approval_args(&call.tool, &args) {
                Ok(found) => found,
                Err(reason) => return Err(inner.refuse(record, started, reason).await),
            };
            let record = record.approval(id.clone());
            let Some(approvals) = inner.approvals.clone() else {
                // Policy::decide already refuses execute tools in the cloud; this keeps the
                // guard safe even for a policy that would not.
                let refusal = CallRefusal::NotLocal {
                    tool: call.tool.clone(),
                };
                return Err(inner.refuse(record, started, refusal).await);
            };
            let authorized = {
                let this = self.clone();
                let (tool, limits, id) = (call.tool.clone(), live.limits.clone(), id.clone());
                tokio::task::spawn_blocking(move || {
                    this.authorize(&approvals, &id, &tool, restated, &limits)
                })
                .await
                .unwrap_or_else(|e| Err(CallRefusal::CheckStopped(e.to_string())))
            };
            let authorized = match authorized {
                Ok(authorized) => authorized,
                Err(reason) => return Err(inner.refuse(record, started, reason).await),
            };
            let use_seq = authorized.use_seq;
            // The intent, before anything leaves: without it the call does not run (its
            // outcome follows in a second record with the same correlation id).
            let intent = record
                .clone()
                .status(CallStatus::InDoubt)
                .reason("forwarding: the approval is marked used")
                .latency_ms(elapsed_ms(started));
            if let Err(e) = inner.audit(intent).await {
                // Nothing left the gateway: the approval is given back.
                let why = format!("not forwarded: the audit log cannot be written ({e})");
                let (settle, _, note) = release(&why);
                let note = inner.settle(&id, use_seq, settle, note).await;
                let refusal = CallRefusal::NotForwarded(note);
                return Err(inner.refuse(record, started, refusal).await);
            }
            // The payload the ledger let through, for an executor hosted here: it acts on
            // this, never on a second read of the file.
            if let Some(handoff) = inner.handoff.get() {
                handoff.grant(authorized);
            }
            data.approval_id = Some(id);
            data.use_seq = use_seq;
        }
        let mut permit = Permit::new(client.clone(), call.clone()).with_data(data);
        permit.started = started;
        Ok(permit)
    }

    async fn after(&self, permit: Permit, outcome: &CallOutcome) {
        let inner = &self.inner;
        let Some(data) = permit
            .data
            .as_ref()
            .and_then(|d| d.downcast_ref::<CallData>())
        else {
            tracing::error!(tool = %permit.call.tool, "a permit without the policy guard's data: no audit record");
            return;
        };
        let mut record = ToolCall::new(
            inner.zone,
            &permit.client.name,
            &data.correlation_id,
            &permit.call.tool,
            data.class,
            &Value::Null,
        );
        record.args_sha256 = data.args_sha256.clone();
        let record = match &data.approval_id {
            Some(id) => {
                // An authorization no executor took (an upstream served the call, or its
                // arguments never parsed) goes no further.
                if let Some(handoff) = inner.handoff.get() {
                    handoff.withdraw(id, data.use_seq);
                }
                let (settle, status, note) = ledger_outcome(outcome);
                let note = inner.settle(id, data.use_seq, settle, note).await;
                record.approval(id.clone()).status(status).reason(note)
            }
            None => match outcome {
                CallOutcome::Result { is_error } => record.status(if *is_error {
                    CallStatus::Error
                } else {
                    CallStatus::Ok
                }),
                CallOutcome::NotExecuted { reason } => record
                    .status(CallStatus::Error)
                    .reason(format!("not executed: {}", quoted(reason, MAX_QUOTED))),
                CallOutcome::InDoubt { reason } => record
                    .status(CallStatus::InDoubt)
                    .reason(quoted(reason, MAX_QUOTED)),
                CallOutcome::InputRequired => record.reason("input required"),
                CallOutcome::Task { task_id } => record.reason(format!("task {task_id}")),
                CallOutcome::Failed { reason } => record.status(CallStatus::Error).reason(reason),
            },
        };
        let record = record.latency_ms(elapsed_ms(permit.started));
        if let Err(e) = inner.audit(record).await {
            tracing::error!(tool = %permit.call.tool, error = %e, "audit record not written");
        }
    }

    async fn http_refused(&self, refused: &HttpRefused) {
        let inner = &self.inner;
        let class = match &refused.tool {
            Some(tool) => inner.live().policy.class_of(tool),
            None => EffectClass::Execute,
        };
        let call = refused.audit_call(inner.zone, class);
        let client = refused.client.as_deref().unwrap_or(refusals::UNKNOWN);
        match inner.refusals.admit(client, call, chrono::Utc::now()) {
            Admission::Record(call) => {
                if let Err(e) = inner.audit(call).await {
                    tracing::error!(request_id = %refused.request_id, error = %e, "audit record of an HTTP refusal not written");
                }
            }
            Admission::Held { first } => {
                if first {
                    tracing::warn!(
                        client,
                        "HTTP refusals over {} a second: counted, recorded as the rate allows",
                        inner.refusals.rate().per_second
                    );
                    inner.clone().release_held_refusals(client.to_owned());
                }
            }
        }
    }
}

impl PolicyGuard {
    /// The local execute checks, in order, blocking: find the payload to authorize, fit it
    /// in the budgets, authorize (which adopts this one approval's hand move when the config
    /// accepts them, and marks the approval used), spend the budgets. Returns the `seq` of
    /// the approval's `used` entry; the refusal is the text the client reads.
    fn authorize(
        &self,
        approvals: &Approvals,
        id: &ApprovalId,
        tool: &str,
        restated: Option<Value>,
        limits: &Limits,
    ) -> Result<Authorized, CallRefusal> {
        let inner = &self.inner;
        // The payload to authorize. `{approval_id}` alone: the approved request's own
        // payload, from its file (authorize compares that file with the ledger, so an edited
        // file is caught there). `{approval_id, ...payload}`: the call's restatement, which
        // must hash to what the human approved. A file that cannot be read gives nothing
        // that could match, so authorize can only refuse, with its own reason.
        let approved = read_approved(approvals.vault(), id);
        let payload = match (&restated, &approved) {
            (Some(restated), Some(_)) => restated.clone(),
            (None, Some(request)) => request.meta.payload.clone(),
            (_, None) => Value::Null,
        };
        let spend = match &approved {
            Some(request) if payload_sha256(&payload) == request.meta.payload_sha256 => {
                Spend::of(request.meta.domain, &payload)?
            }
            _ => Spend::default(),
        };
        let mut budgets = inner.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        budgets.check(limits, &spend)?;
        // `Refused`'s message reads "approval `a1` refused: <reason>; its file was set aside
        // to Quarantine/a1.md".
        let authorized = approvals.authorize(id, tool, &payload)?;
        if let Err(e) = budgets.record(&spend, authorized.use_seq) {
            // Authorized already: the action goes ahead, the count may be lost.
            tracing::error!(error = %e, "effect budgets not written to the state folder");
        }
        Ok(authorized)
    }
}

/// The local zone's approvals under `config`'s `[approvals]`: lifetimes capped, and hand
/// moves into `Approved/` adopted at authorization only when `accept_hand_moves` is on, as
/// the vault's git state shows them (`aie_vault_claim::sync::hand_moves`).
fn local_approvals(
    config: &Config,
    vault: Vault,
    state_dir: &Path,
) -> Result<Approvals, PolicyGuardError> {
    let root = vault.root().to_path_buf();
    let approvals =
        Approvals::open(vault, state_dir)?.with_max_lifetime(config.approvals.max_lifetime());
    Ok(if config.approvals.accept_hand_moves {
        approvals.accepting_hand_moves(Arc::new(GitHandMoves::new(&root)), &local_user())
    } else {
        approvals
    })
}

#[cfg(test)]
mod tests {
    use aie_shared::http::HttpRefusal;
    use axum::http::StatusCode;
    use serde_json::json;

    use super::*;

    /// A config whose `[limits]` lets `burst` refusal records through at once, then 1 a second.
    fn refusal_rate(burst: u32) -> Config {
        let text =
            format!("[limits]\nrefusal_audit_burst = {burst}\nrefusal_audit_per_second = 1\n");
        aie_shared::config::parse(&text, Path::new("/etc/aie/aie.toml")).unwrap()
    }

    /// The refusal records in `vault`'s audit log of agent `cloud`.
    fn refusal_records(vault: &Vault) -> usize {
        let dir = vault.root().join("Logs/cloud");
        let Ok(files) = std::fs::read_dir(dir) else {
            return 0;
        };
        files
            .map(|file| std::fs::read_to_string(file.unwrap().path()).unwrap())
            .flat_map(|text| text.lines().map(str::to_owned).collect::<Vec<_>>())
            .filter(|line| line.contains("401: no bearer token"))
            .count()
    }

    /// Sends `n` refusals to `guard`; how many records they added.
    async fn flood(guard: &PolicyGuard, vault: &Vault, n: usize) -> usize {
        let refused = HttpRefused {
            client: None,
            tool: None,
            refusal: HttpRefusal::new(StatusCode::UNAUTHORIZED, "no bearer token"),
            request_id: "req-1".into(),
            latency_ms: 0,
        };
        let before = refusal_records(vault);
        for _ in 0..n {
            guard.http_refused(&refused).await;
        }
        refusal_records(vault) - before
    }

    /// The refusal-audit rate is the config's: its burst bounds the records of a flood; a
    /// reload with the same rate refills nothing, one with another rate applies at once.
    #[tokio::test]
    async fn refusal_audit_rate_follows_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::init(dir.path().join("vault")).unwrap();
        let agent = AgentName::new("cloud").unwrap();
        let state = dir.path().join("state");
        let built = Instant::now();
        let guard =
            PolicyGuard::new(&refusal_rate(3), Zone::Cloud, vault.clone(), &state, agent).unwrap();
        // At most how many records the rate (1 a second) can have added to a burst so far:
        // none while the test takes less than a second, as it does.
        let refilled = || built.elapsed().as_secs_f64().ceil() as usize;

        let written = flood(&guard, &vault, 30).await;
        assert!((3..=3 + refilled()).contains(&written), "{written} records");

        guard.set_config(&refusal_rate(3));
        let written = flood(&guard, &vault, 10).await;
        assert!(
            written <= refilled(),
            "a reload refilled the bucket: {written}"
        );

        guard.set_config(&refusal_rate(12));
        let written = flood(&guard, &vault, 30).await;
        assert!(
            (12..=12 + refilled()).contains(&written),
            "{written} records"
        );
    }

    /// A local vault that is a git repository (no remote) with request `raw` drafted and
    /// committed, then moved into `Approved/` by hand; its guard under `config_text`.
    fn hand_moved(raw: &str, config_text: &str) -> (tempfile::TempDir, PolicyGuard, ApprovalId) {
        use aie_vault_claim::sync::{Replica, Zone as SyncZone};
        let dir = tempfile::tempdir().unwrap();
        let agent = AgentName::new("local").unwrap();
        let replica = Replica::open(
            dir.path().join("vault"),
            None,
            agent.clone(),
            SyncZone::Local,
        )
        .unwrap();
        let vault = replica.vault().clone();
        let id = ApprovalId::new(raw).unwrap();
        let request = ApprovalRequest::new(
            id.clone(),
            aie_shared::vault::Domain::Email,
            "email_send",
            json!({"to": "alice@example.org", "subject": "Re: invoice", "body": "Paid."}),
            AgentName::new("cloud").unwrap(),
            chrono::Utc::now() + chrono::TimeDelta::hours(1),
        );
        vault.write_approval_request(&request).unwrap();
        replica.sync().unwrap();
        std::fs::rename(
            vault
                .root()
                .join(format!("Pending_Approval/email/{raw}.md")),
            vault.root().join(format!("Approved/{raw}.md")),
        )
        .unwrap();
        let config =
            aie_shared::config::parse(config_text, Path::new("/etc/aie/aie.toml")).unwrap();
        let guard = PolicyGuard::new(
            &config,
            Zone::Local,
            vault,
            &dir.path().join("state"),
            agent,
        )
        .unwrap();
        (dir, guard, id)
    }

    /// The guard's approvals and its authorization of `id`'s own payload.
    fn authorize_own(guard: &PolicyGuard, id: &ApprovalId) -> Result<u64, CallRefusal> {
        let approvals = guard.inner.approvals.clone().unwrap();
        guard
            .authorize(&approvals, id, "email_send", None, &Limits::default())
            .map(|a| a.use_seq)
    }

    /// By default a file the owner moves into Approved/ by hand is no approval: it is set
    /// aside, the refusal says how to approve, nothing is marked used.
    #[test]
    fn hand_moves_are_set_aside_unless_accepted() {
        let (dir, guard, id) = hand_moved("moved-1", "");
        let why = authorize_own(&guard, &id).unwrap_err().to_string();
        assert!(why.contains("accept_hand_moves is off"), "{why}");
        assert!(why.contains("aie approvals approve moved-1"), "{why}");
        assert!(dir.path().join("vault/Quarantine/moved-1.md").is_file());
        let approvals = guard.inner.approvals.clone().unwrap();
        let record = approvals
            .ledger()
            .read()
            .unwrap()
            .get(&id)
            .cloned()
            .unwrap();
        assert!(record.approved.is_none() && record.used_at.is_none());
    }

    /// With `accept_hand_moves = true`, the same hand move is adopted when it is first
    /// authorized (and runs), its lifetime capped by `max_lifetime_hours`.
    #[test]
    fn hand_moves_are_adopted_when_accepted() {
        let (_dir, guard, id) = hand_moved(
            "moved-2",
            "[approvals]\naccept_hand_moves = true\nmax_lifetime_hours = 1\n",
        );
        authorize_own(&guard, &id).expect("adopted and authorized");
        let approvals = guard.inner.approvals.clone().unwrap();
        let record = approvals
            .ledger()
            .read()
            .unwrap()
            .get(&id)
            .cloned()
            .unwrap();
        let approved = record.approved.unwrap();
        assert_eq!(
            approved.how,
            aie_shared::approvals::ledger::HowApproved::MovedByHand
        );
        assert!(approved.expires_at <= chrono::Utc::now() + chrono::TimeDelta::hours(1));
        assert!(record.used_at.is_some());
    }

    /// The approval id and the restated payload are told apart; a missing id says what to do.
    #[test]
    fn execute_arguments_carry_an_approval_id() {
        let args = |v: Value| v.as_object().cloned().unwrap();
        let (id, rest) = approval_args("email_send", &args(json!({"approval_id": "a1"}))).unwrap();
        assert_eq!(id.as_str(), "a1");
        assert!(rest.is_none());
        let (_, rest) = approval_args(
            "email_send",
            &args(json!({"approval_id": "a1", "to": ["x"]})),
        )
        .unwrap();
        assert_eq!(rest, Some(json!({"to": ["x"]})));
        let why = approval_args("email_send", &args(json!({})))
            .unwrap_err()
            .to_string();
        assert!(why.contains("aie approvals approve"), "{why}");
        assert!(approval_args("email_send", &args(json!({"approval_id": 7}))).is_err());
    }

    /// A result is final; a failure after forwarding is in doubt; a certified "nothing ran"
    /// gives the approval back, and the audit reason says so.
    #[test]
    fn outcomes_map_to_the_ledger() {
        assert_eq!(
            ledger_outcome(&CallOutcome::Result { is_error: false }).0,
            Settle::Result(Outcome::Ok)
        );
        assert_eq!(
            ledger_outcome(&CallOutcome::Result { is_error: true }).0,
            Settle::Result(Outcome::Error)
        );
        assert_eq!(
            ledger_outcome(&CallOutcome::Failed {
                reason: "timeout".into()
            })
            .0,
            Settle::Result(Outcome::InDoubt)
        );
        let (settle, status, note) = ledger_outcome(&CallOutcome::InDoubt {
            reason: "email_send: in doubt: connection lost".into(),
        });
        assert_eq!(settle, Settle::Result(Outcome::InDoubt));
        assert_eq!(status, CallStatus::InDoubt);
        assert!(
            note.contains("may have happened: email_send: in doubt"),
            "{note}"
        );
        let (settle, status, note) = ledger_outcome(&CallOutcome::NotExecuted {
            reason: "email_send: not sent: SMTP server down".into(),
        });
        assert_eq!(
            settle,
            Settle::Release {
                reason: "email_send: not sent: SMTP server down".into()
            }
        );
        assert_eq!(status, CallStatus::Error);
        assert_eq!(
            note,
            "not executed: email_send: not sent: SMTP server down; the approval stays valid and unused"
        );
        let (_, _, long) = ledger_outcome(&CallOutcome::NotExecuted {
            reason: "x".repeat(2000),
        });
        assert!(long.chars().count() < 1024, "{}", long.len());
    }
}
