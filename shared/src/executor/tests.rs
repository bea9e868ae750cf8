//! The executor with a test double of the effect (a fake service that can be told to
//! refuse, to fail mid-way, and asked what it holds). End to end with real SMTP:
//! `tests/tests/executor.rs`.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::json;

use super::*;
use crate::{
    approvals::{Approvals, ShownHash},
    vault::{ApprovalRequest, Vault},
};

const TOOL: &str = "fake_execute";

static SPEC: JournalSpec = JournalSpec {
    name: "fake",
    file: "fake-journal.jsonl",
    tools: &[TOOL],
    domain: Domain::Payments,
    labels: Labels {
        server: "fake server",
        journal: "fake journal",
        action: "payment",
        done: "paid",
        effect_id: "customerTransactionId",
        check: "look for it in the account's statement",
    },
};

/// A fake payments service: what it was asked, what it holds, what it answers next.
#[derive(Default)]
struct Service {
    /// Every payload performed, in order.
    performed: Vec<Value>,
    /// The effect ids it holds (what a read-back finds).
    holds: Vec<String>,
    /// The next answers; `Ok` when empty.
    answers: VecDeque<Result<Performed, EffectError>>,
    /// Whether an `InDoubt` answer still took the action (the answer was lost, not the
    /// request).
    took_before_failing: bool,
}

#[derive(Clone, Default)]
struct Fake {
    service: Arc<Mutex<Service>>,
    can_look_up: bool,
    delay: Option<Duration>,
}

impl Fake {
    fn service(&self) -> std::sync::MutexGuard<'_, Service> {
        self.service.lock().expect("service")
    }
}

impl Effect for Fake {
    type Request = Value;

    fn spec(&self) -> &'static JournalSpec {
        &SPEC
    }

    fn target(&self) -> String {
        "https://bank.test".into()
    }

    fn prepare(&self, action: &Action) -> Result<Prepared<Value>, String> {
        if action.payload.get("amount").is_none() {
            return Err("the payload has no amount".into());
        }
        Ok(Prepared {
            effect_id: format!("ctid-{}", action.approval_id),
            request: action.payload.clone(),
        })
    }

    async fn perform(&self, action: &Action, request: &Value) -> Result<Performed, EffectError> {
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        let mut service = self.service();
        let answer = service.answers.pop_front().unwrap_or(Ok(Performed {
            receipt: Some(format!("transfer-{}", service.performed.len() + 1)),
            detail: "201 Created".into(),
        }));
        let took = match &answer {
            Ok(_) => true,
            Err(EffectError::InDoubt(_)) => service.took_before_failing,
            Err(EffectError::NotExecuted(_)) => false,
        };
        if took {
            service.performed.push(request.clone());
            service.holds.push(format!("ctid-{}", action.approval_id));
        }
        answer
    }

    fn can_look_up(&self) -> bool {
        self.can_look_up
    }

    async fn look_up(&self, entry: &JournalEntry) -> LookUp {
        if !self.can_look_up {
            return LookUp::CannotTell;
        }
        if self.service().holds.contains(&entry.effect_id) {
            LookUp::Happened {
                receipt: Some("transfer-found".into()),
                detail: format!("GET by {} found it", entry.effect_id),
            }
        } else {
            LookUp::DidNotHappen {
                detail: format!("GET by {} found nothing", entry.effect_id),
            }
        }
    }
}

/// A vault, a state folder and an approved request `id` paying `amount`.
struct World {
    dir: tempfile::TempDir,
    vault: Vault,
    approvals: Approvals,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::init(dir.path().join("vault")).expect("vault");
        let approvals = Approvals::open(vault.clone(), &dir.path().join("state")).expect("ledger");
        Self {
            dir,
            vault,
            approvals,
        }
    }

    fn state(&self) -> std::path::PathBuf {
        self.dir.path().join("state")
    }

    /// Drafts and approves `id`; returns its approved payload.
    fn approved(&self, id: &str, amount: &str) -> (ApprovalId, Value) {
        let id = ApprovalId::new(id).expect("id");
        let payload = json!({"payee": "ACME", "amount": amount, "currency": "EUR"});
        self.vault
            .write_approval_request(&ApprovalRequest::new(
                id.clone(),
                Domain::Payments,
                TOOL,
                payload.clone(),
                AgentName::new("cloud").expect("agent"),
                Utc::now() + chrono::TimeDelta::hours(1),
            ))
            .expect("draft");
        let shown = ShownHash::new(&crate::vault::payload_sha256(&payload)).expect("hash");
        self.approvals
            .approve(&id, "owner", &shown)
            .expect("approve");
        (id, payload)
    }

    /// The executor behind a gateway: `actions` is what the guard hands over.
    fn behind_gateway(&self, fake: &Fake, actions: &AuthorizedActions) -> Executor<Fake> {
        Executor::open(
            fake.clone(),
            &self.state(),
            Authority::Gateway(actions.clone()),
        )
        .expect("executor")
        .with_ledger(
            self.approvals.clone(),
            AgentName::new("local").expect("agent"),
        )
    }

    /// What the guard does: authorize (marks used) and hand over.
    fn authorize(&self, id: &ApprovalId, payload: &Value, actions: &AuthorizedActions) {
        let authorized = self
            .approvals
            .authorize(id, TOOL, payload)
            .expect("authorize");
        actions.grant(authorized);
    }

    /// A process that died with the journal at `state` for `id` (what a crash leaves).
    fn crashed_with(&self, id: &ApprovalId, state: JournalState) {
        let mut journal = Journal::open(&self.state(), &SPEC).expect("journal");
        journal
            .append(JournalEntry {
                ts: now(),
                approval_id: id.to_string(),
                state,
                effect_id: format!("ctid-{id}"),
                payload_sha256: "00".into(),
                target: "https://bank.test".into(),
                receipt: None,
                read_back: false,
                detail: None,
            })
            .expect("append");
    }
}

/// The authorized payload is performed once; a second call answers `already_done` and
/// performs nothing; the journal holds `started` then `done` with the receipt.
#[tokio::test]
async fn executes_once_and_answers_already_done_after() {
    let world = World::new();
    let fake = Fake::default();
    let actions = AuthorizedActions::new();
    let exec = world.behind_gateway(&fake, &actions);
    let (id, payload) = world.approved("pay-1", "12.50");
    world.authorize(&id, &payload, &actions);
    let done = exec.execute(&id, TOOL).await.expect("executed");
    assert_eq!(done.status, ExecStatus::Done);
    assert_eq!(done.effect_id, "ctid-pay-1");
    assert_eq!(done.receipt.as_deref(), Some("transfer-1"));
    assert!(actions.is_empty(), "the hand-off was taken");

    actions.grant(authorized_again(&id, &payload));
    let again = exec.execute(&id, TOOL).await.expect("again");
    assert_eq!(again.status, ExecStatus::AlreadyDone);
    assert_eq!(fake.service().performed, [payload]);

    let text = std::fs::read_to_string(world.state().join(SPEC.file)).expect("journal");
    let states: Vec<&str> = text
        .lines()
        .map(|l| {
            if l.contains("\"started\"") {
                "started"
            } else {
                "done"
            }
        })
        .collect();
    assert_eq!(states, ["started", "done"]);
}

/// An `Authorized` for `id` as a guard would hand it over (for calls the ledger would
/// refuse anyway: the executor's own refusal is what is tested).
fn authorized_again(id: &ApprovalId, payload: &Value) -> Authorized {
    Authorized {
        approval_id: id.clone(),
        tool: TOOL.into(),
        domain: Domain::Payments,
        payload: payload.clone(),
        payload_sha256: crate::vault::payload_sha256(payload),
        task_id: None,
        used_at: Utc::now(),
        use_seq: 99,
    }
}

/// Behind the gateway the executor acts on the handed-over payload, never on the file: a
/// file changed after the check changes nothing, and a call without a hand-off is refused
/// before anything is performed.
#[tokio::test]
async fn acts_on_the_authorized_payload_never_on_a_second_read() {
    let world = World::new();
    let fake = Fake::default();
    let actions = AuthorizedActions::new();
    let exec = world.behind_gateway(&fake, &actions);

    let (id, payload) = world.approved("pay-2", "10.00");
    let refused = exec.execute(&id, TOOL).await.expect_err("no hand-off");
    assert!(
        matches!(&refused, ExecError::NotExecuted(why) if why.contains("not handed over")),
        "{refused}"
    );

    world.authorize(&id, &payload, &actions);
    // A sync lands between the check and the action: another payee, a recomputed hash.
    let path = world.vault.root().join("Approved/pay-2.md");
    let mut request =
        ApprovalRequest::parse(&std::fs::read_to_string(&path).expect("read")).expect("parse");
    request.meta.payload = json!({"payee": "MALLORY", "amount": "9999.00", "currency": "EUR"});
    request.meta.payload_sha256 = crate::vault::payload_sha256(&request.meta.payload);
    std::fs::write(&path, request.render().expect("render")).expect("swap");

    exec.execute(&id, TOOL).await.expect("executed");
    assert_eq!(
        fake.service().performed,
        [payload],
        "what the human approved, only"
    );
}

/// `not_executed` leaves the approval usable: the next execution performs it once.
#[tokio::test]
async fn not_executed_can_run_again() {
    let world = World::new();
    let fake = Fake::default();
    fake.service()
        .answers
        .push_back(Err(EffectError::NotExecuted(
            "503 before the request".into(),
        )));
    let actions = AuthorizedActions::new();
    let exec = world.behind_gateway(&fake, &actions);
    let (id, payload) = world.approved("pay-3", "1.00");
    actions.grant(authorized_again(&id, &payload));
    let first = exec.execute(&id, TOOL).await.expect_err("refused");
    assert!(matches!(first, ExecError::NotExecuted(_)));
    assert!(exec.in_doubt().is_empty());
    actions.grant(authorized_again(&id, &payload));
    exec.execute(&id, TOOL).await.expect("second try");
    assert_eq!(fake.service().performed.len(), 1);
}

/// An answer lost mid-way is in doubt: refused from then on, never performed again, listed.
#[tokio::test]
async fn in_doubt_is_never_performed_again() {
    let world = World::new();
    let fake = Fake::default();
    {
        let mut service = fake.service();
        service.took_before_failing = true;
        service
            .answers
            .push_back(Err(EffectError::InDoubt("connection reset".into())));
    }
    let actions = AuthorizedActions::new();
    let exec = world.behind_gateway(&fake, &actions);
    let (id, payload) = world.approved("pay-4", "1.00");
    actions.grant(authorized_again(&id, &payload));
    assert!(matches!(
        exec.execute(&id, TOOL).await,
        Err(ExecError::InDoubt(_))
    ));
    actions.grant(authorized_again(&id, &payload));
    let again = exec.execute(&id, TOOL).await.expect_err("in doubt");
    assert!(
        matches!(&again, ExecError::InDoubt(why) if why.contains("never paid again") && why.contains("customerTransactionId ctid-pay-4")),
        "{again}"
    );
    assert_eq!(fake.service().performed.len(), 1);
    let doubts = exec.in_doubt();
    assert_eq!(doubts.len(), 1);
    assert_eq!(doubts[0].detail, "connection reset");
}

/// After a crash at each point the journal and the service can be left in, a restarted
/// executor never performs a second time, and what is unknown is in doubt; a service that
/// can be read back settles it, in the journal and in the approval ledger.
#[tokio::test]
async fn crash_points_never_perform_twice_and_read_back_settles() {
    // (point, whether the service took it, journal left, in doubt after restart)
    let cases = [
        (CrashPoint::BeforeJournal, false, None, false),
        (
            CrashPoint::AfterJournal,
            false,
            Some(JournalState::Started),
            true,
        ),
        (
            CrashPoint::AfterEffect,
            true,
            Some(JournalState::Started),
            true,
        ),
        (
            CrashPoint::BeforeOutcome,
            true,
            Some(JournalState::Started),
            true,
        ),
        (
            CrashPoint::AfterOutcome,
            true,
            Some(JournalState::Done),
            false,
        ),
    ];
    for (point, took, left, doubt) in cases {
        for can_look_up in [false, true] {
            let world = World::new();
            let fake = Fake {
                can_look_up,
                ..Fake::default()
            };
            let (id, payload) = world.approved("pay-5", "3.00");
            // The process that died: the ledger marked the use; the journal and service as
            // the crash left them.
            world
                .approvals
                .authorize(&id, TOOL, &payload)
                .expect("authorize");
            if let Some(state) = left {
                world.crashed_with(&id, JournalState::Started);
                if state == JournalState::Done {
                    world.crashed_with(&id, JournalState::Done);
                }
            }
            if took {
                fake.service().holds.push(format!("ctid-{id}"));
            }
            // The restart: a fresh ledger handle (nothing in flight) and executor.
            let approvals = Approvals::open(world.vault.clone(), &world.state()).expect("ledger");
            let actions = AuthorizedActions::new();
            let exec = Executor::open(
                fake.clone(),
                &world.state(),
                Authority::Gateway(actions.clone()),
            )
            .expect("executor")
            .with_ledger(approvals.clone(), AgentName::new("local").expect("agent"));
            let name = point.name();
            assert_eq!(exec.in_doubt().len(), usize::from(doubt), "{name}");

            let settled = exec.reconcile().await;
            // The ledger is told what the journal proves: a `done` line, or a read-back.
            let ledger_doubt = approvals.in_doubt().expect("in doubt");
            match (point, can_look_up) {
                (CrashPoint::BeforeJournal, _) => {
                    assert!(settled.is_empty(), "{name}: nothing to read back");
                    assert_eq!(
                        ledger_doubt.len(),
                        1,
                        "{name}: the ledger's use stays for the owner"
                    );
                }
                (CrashPoint::AfterOutcome, _) => {
                    assert_eq!(settled.len(), 1, "{name}");
                    assert!(ledger_doubt.is_empty(), "{name}: settled by the journal");
                }
                (_, false) => {
                    assert!(settled.is_empty(), "{name}: no read-back");
                    assert_eq!(exec.in_doubt().len(), 1, "{name}");
                    assert_eq!(ledger_doubt.len(), 1, "{name}");
                }
                (_, true) => {
                    assert_eq!(settled.len(), 1, "{name}: {settled:?}");
                    assert_eq!(settled[0].happened, took, "{name}");
                    assert!(exec.in_doubt().is_empty(), "{name}");
                    assert!(ledger_doubt.is_empty(), "{name}");
                    let line = Journal::open(&world.state(), &SPEC).expect("journal");
                    let last = line.last(id.as_str()).expect("line");
                    assert!(last.read_back, "{name}");
                }
            }
            // Whatever is tried next performs nothing more: the ledger refuses a use in
            // doubt or settled, and the executor refuses on its own what its journal holds.
            assert!(
                approvals.authorize(&id, TOOL, &payload).is_err(),
                "{name}: authorized again"
            );
            if left.is_some() {
                actions.grant(authorized_again(&id, &payload));
                let _ = exec.execute(&id, TOOL).await;
            }
            assert!(
                fake.service().performed.is_empty(),
                "{name}: performed again"
            );
        }
    }
}

/// A service that tells by itself (a status webhook) settles an execution in doubt through
/// `read_back`; one running right now is left to its own outcome.
#[tokio::test]
async fn read_back_pushed_by_the_service_settles_in_doubt() {
    let world = World::new();
    let fake = Fake::default();
    let actions = AuthorizedActions::new();
    let (id, payload) = world.approved("wa-1", "0.00");
    world
        .approvals
        .authorize(&id, TOOL, &payload)
        .expect("authorize");
    world.crashed_with(&id, JournalState::Started);
    let approvals = Approvals::open(world.vault.clone(), &world.state()).expect("ledger");
    let exec = Executor::open(fake, &world.state(), Authority::Gateway(actions))
        .expect("executor")
        .with_ledger(approvals.clone(), AgentName::new("local").expect("agent"));
    let settled = exec
        .read_back(
            &id,
            LookUp::Happened {
                receipt: Some("wamid.1".into()),
                detail: "status webhook: delivered".into(),
            },
        )
        .await
        .expect("settled")
        .expect("something to settle");
    assert!(settled.happened);
    assert!(settled.ledger.is_some_and(|l| l.contains("recorded `ok`")));
    assert!(exec.in_doubt().is_empty());
    assert!(approvals.in_doubt().expect("ledger").is_empty());
    let again = exec
        .read_back(
            &id,
            LookUp::DidNotHappen {
                detail: "late".into(),
            },
        )
        .await
        .expect("no-op");
    assert!(again.is_none(), "a settled execution is not settled twice");
}

/// Two calls for one approval at once: one performs, the other is refused, nothing twice.
#[tokio::test]
async fn one_approval_runs_once_at_a_time() {
    let world = World::new();
    let fake = Fake {
        delay: Some(Duration::from_millis(100)),
        ..Fake::default()
    };
    let (id, payload) = world.approved("pay-6", "2.00");
    let exec = Executor::open(
        fake.clone(),
        &world.state(),
        Authority::Vault {
            vault: world.vault.clone(),
            state_dir: world.dir.path().join("no-ledger"),
        },
    )
    .expect("executor");
    let (a, b) = tokio::join!(exec.execute(&id, TOOL), exec.execute(&id, TOOL));
    assert_eq!(
        usize::from(a.is_ok()) + usize::from(b.is_ok()),
        1,
        "{a:?} {b:?}"
    );
    assert_eq!(fake.service().performed, [payload]);
}

/// Alone with the gateway's ledger in its state folder, the executor runs only a file the
/// ledger approved and the gateway is executing; an edited file is refused.
#[tokio::test]
async fn alone_it_rechecks_the_file_against_the_ledger() {
    let world = World::new();
    let fake = Fake::default();
    let (id, payload) = world.approved("pay-7", "5.00");
    let exec = Executor::open(
        fake.clone(),
        &world.state(),
        Authority::Vault {
            vault: world.vault.clone(),
            state_dir: world.state(),
        },
    )
    .expect("executor");
    let unused = exec.execute(&id, TOOL).await.expect_err("not in use");
    assert!(unused.to_string().contains("not marked used"), "{unused}");

    world
        .approvals
        .authorize(&id, TOOL, &payload)
        .expect("authorize");
    let path = world.vault.root().join("Approved/pay-7.md");
    let original = std::fs::read_to_string(&path).expect("read");
    let mut request = ApprovalRequest::parse(&original).expect("parse");
    request.meta.payload = json!({"payee": "MALLORY", "amount": "5.00", "currency": "EUR"});
    request.meta.payload_sha256 = crate::vault::payload_sha256(&request.meta.payload);
    std::fs::write(&path, request.render().expect("render")).expect("swap");
    let changed = exec.execute(&id, TOOL).await.expect_err("edited");
    assert!(
        changed.to_string().contains("not what the owner approved"),
        "{changed}"
    );
    assert!(fake.service().performed.is_empty());

    std::fs::write(&path, original).expect("restore");
    exec.execute(&id, TOOL).await.expect("the approved file");
    assert_eq!(fake.service().performed, [payload]);
}

/// A payload the effect cannot use is refused before the journal is written.
#[tokio::test]
async fn a_payload_that_does_not_prepare_is_not_executed() {
    let world = World::new();
    let fake = Fake::default();
    let actions = AuthorizedActions::new();
    let exec = world.behind_gateway(&fake, &actions);
    let id = ApprovalId::new("pay-8").expect("id");
    let mut authorized = authorized_again(&id, &json!({"payee": "x"}));
    authorized.payload = json!({"payee": "x"});
    actions.grant(authorized);
    let why = exec.execute(&id, TOOL).await.expect_err("no amount");
    assert!(why.to_string().contains("no amount"), "{why}");
    assert!(!world.state().join(SPEC.file).exists(), "nothing journaled");
}

/// Executions of different approvals run side by side (in virtual time: two 100 ms sends
/// take 100 ms, not 200), and one still on its way is not reported in doubt by the other's
/// result.
#[tokio::test(start_paused = true)]
async fn running_executions_are_not_in_doubt() {
    let world = World::new();
    let fake = Fake {
        delay: Some(Duration::from_millis(100)),
        ..Fake::default()
    };
    let (a, _) = world.approved("pay-9", "1.00");
    let (b, _) = world.approved("pay-10", "2.00");
    let exec = Executor::open(
        fake.clone(),
        &world.state(),
        Authority::Vault {
            vault: world.vault.clone(),
            state_dir: world.dir.path().join("no-ledger"),
        },
    )
    .expect("executor");
    let started = tokio::time::Instant::now();
    let (x, y) = tokio::join!(exec.execute(&a, TOOL), exec.execute(&b, TOOL));
    let (x, y) = (x.expect("a"), y.expect("b"));
    assert!(
        x.in_doubt.is_empty() && y.in_doubt.is_empty(),
        "{x:?} {y:?}"
    );
    assert_eq!(fake.service().performed.len(), 2);
    assert!(
        started.elapsed() < Duration::from_millis(190),
        "not side by side"
    );
}
