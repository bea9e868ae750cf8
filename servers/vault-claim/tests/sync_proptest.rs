//! Random interleavings of claims, syncs, body edits, completions and remote outages across
//! two or three replicas. After a final sync round of every replica: each task id exists
//! exactly once in every replica and on the remote, all of them hold the same tree, no task
//! file and no edit is lost, no id is in two `In_Progress` folders, and a claim once
//! confirmed was never lost (its agent could always complete it).

mod sync_support;

use std::collections::{BTreeMap, BTreeSet};

use aie_vault_claim::sync::{ClaimOutcome, Replica, SyncError, SyncReport, Zone};
use git2::{Repository, StatusOptions};
use proptest::prelude::*;
use sync_support::{Net, agent, head_of, seed_tasks, task_files, task_paths_in};

/// Tasks per case: few, so replicas collide on them often.
const TASKS: usize = 5;

/// One step of a run.
#[derive(Debug, Clone)]
enum Op {
    /// Replica claims task.
    Claim(usize, usize),
    /// Replica syncs.
    Sync(usize),
    /// Replica appends a line to the task's body, wherever the task is in its vault.
    Edit(usize, usize),
    /// Replica completes the task, if its claim on it was confirmed.
    Complete(usize, usize),
    /// Replica loses (or gets back) the remote.
    Outage(usize),
}

/// Steps over `replicas` replicas.
fn op(replicas: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..replicas, 0..TASKS).prop_map(|(r, t)| Op::Claim(r, t)),
        3 => (0..replicas).prop_map(Op::Sync),
        2 => (0..replicas, 0..TASKS).prop_map(|(r, t)| Op::Edit(r, t)),
        2 => (0..replicas, 0..TASKS).prop_map(|(r, t)| Op::Complete(r, t)),
        1 => (0..replicas).prop_map(Op::Outage),
    ]
}

/// A run: how many replicas, and the steps.
fn run() -> impl Strategy<Value = (usize, Vec<Op>)> {
    (2..=3usize).prop_flat_map(|n| (Just(n), proptest::collection::vec(op(n), 1..24)))
}

/// What the run has seen, to check against the end state.
struct World {
    /// The remote and the replicas' folders.
    net: Net,
    /// The replicas, `r0`, `r1`, ...
    replicas: Vec<Replica>,
    /// Whether each replica currently reaches the remote.
    online: Vec<bool>,
    /// Tasks each replica's agent holds by a confirmed claim.
    confirmed: Vec<BTreeSet<String>>,
    /// Tasks completed, and by which replica.
    completed: BTreeMap<String, usize>,
    /// Every line an edit appended.
    markers: Vec<String>,
}

impl World {
    /// A remote with `TASKS` tasks and `n` replicas on it.
    fn new(n: usize) -> Self {
        let net = Net::new();
        let first = net.replica("r0", Zone::Local);
        seed_tasks(&first, TASKS);
        let mut replicas = vec![first];
        for i in 1..n {
            replicas.push(net.replica(&format!("r{i}"), Zone::Cloud));
        }
        Self {
            net,
            replicas,
            online: vec![true; n],
            confirmed: vec![BTreeSet::new(); n],
            completed: BTreeMap::new(),
            markers: Vec::new(),
        }
    }

    /// Applies one step, checking what it answers.
    fn apply(&mut self, step: &Op) -> Result<(), TestCaseError> {
        match *step {
            Op::Claim(r, t) => match self.replicas[r].claim(&id(t)) {
                Ok(ClaimOutcome::Confirmed { .. }) => {
                    self.confirmed[r].insert(name(t));
                }
                Ok(ClaimOutcome::Pending { .. } | ClaimOutcome::Lost { .. }) => {}
                // Refused by the vault (done already, duplicate...): a valid answer.
                Err(SyncError::Vault(_)) => {}
                Err(e) => return Err(TestCaseError::fail(format!("claim: {e}"))),
            },
            Op::Sync(r) => {
                let report = self.replicas[r]
                    .sync()
                    .map_err(|e| TestCaseError::fail(format!("sync: {e}")))?;
                self.absorb(r, &report)?;
            }
            Op::Edit(r, t) => {
                let root = self.replicas[r].vault().root().to_path_buf();
                if let Some([path]) = task_files(&root).get(&name(t)).map(Vec::as_slice) {
                    let marker = format!("edit-{}-{}", r, self.markers.len());
                    let file = root.join(path);
                    let text = std::fs::read_to_string(&file)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    std::fs::write(&file, format!("{text}{marker}\n"))
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    self.markers.push(marker);
                }
            }
            Op::Complete(r, t) => {
                if self.confirmed[r].contains(&name(t)) {
                    let who = agent(&format!("r{r}"));
                    let done = self.replicas[r].with_vault(|v| v.complete(&id(t), &who, None));
                    // A confirmed claim holds: its agent can always finish the task.
                    prop_assert!(done.is_ok(), "r{r} could not complete t{t}: {done:?}");
                    self.confirmed[r].remove(&name(t));
                    self.completed.insert(name(t), r);
                }
            }
            Op::Outage(r) => {
                self.online[r] = !self.online[r];
                let url = if self.online[r] {
                    self.net.url()
                } else {
                    self.net.nowhere()
                };
                self.replicas[r]
                    .set_remote_url(&url)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Takes in a sync report: confirmations, and losses (never of a confirmed claim).
    fn absorb(&mut self, r: usize, report: &SyncReport) -> Result<(), TestCaseError> {
        for id in &report.confirmed_claims {
            self.confirmed[r].insert(id.to_string());
        }
        for lost in &report.lost_claims {
            prop_assert!(
                !self.confirmed[r].contains(lost.task_id.as_str()),
                "r{r} lost its confirmed claim on {}: {lost:?}",
                lost.task_id
            );
        }
        Ok(())
    }

    /// Reconnects everyone and syncs every replica until a whole round moves nothing.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        for r in 0..self.replicas.len() {
            if !self.online[r] {
                self.apply(&Op::Outage(r))?;
            }
        }
        for _ in 0..5 {
            let mut moved = 0;
            for r in 0..self.replicas.len() {
                let report = self.replicas[r]
                    .sync()
                    .map_err(|e| TestCaseError::fail(format!("final sync: {e}")))?;
                prop_assert!(report.offline.is_none(), "{report:?}");
                self.absorb(r, &report)?;
                moved += report.pushed + report.pulled;
            }
            if moved == 0 {
                return Ok(());
            }
        }
        Err(TestCaseError::fail("replicas did not settle"))
    }

    /// The invariants after settling.
    fn check(&self) -> Result<(), TestCaseError> {
        let remote = self.net.remote_files();
        let tasks = task_paths_in(&remote);
        prop_assert_eq!(
            tasks.len(),
            TASKS,
            "task ids on the remote: {:?}",
            tasks.keys()
        );
        for (id, paths) in &tasks {
            prop_assert_eq!(paths.len(), 1, "{} is in {:?}", id, paths);
        }
        let head = self.net.remote_head();
        for replica in &self.replicas {
            let root = replica.vault().root();
            prop_assert_eq!(&task_files(root), &tasks, "{} differs", root.display());
            prop_assert_eq!(head_of(root), head, "{} not converged", root.display());
            let repo = Repository::open(root).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut options = StatusOptions::new();
            options.include_untracked(true);
            let dirty = repo
                .statuses(Some(&mut options))
                .map_err(|e| TestCaseError::fail(e.to_string()))?
                .len();
            prop_assert_eq!(dirty, 0, "{} has uncommitted changes", root.display());
        }
        for (r, held) in self.confirmed.iter().enumerate() {
            for id in held {
                let expected = format!("In_Progress/r{r}/{id}.md");
                prop_assert_eq!(
                    &tasks[id],
                    &vec![expected],
                    "confirmed claim of r{} on {}",
                    r,
                    id
                );
            }
        }
        for (id, r) in &self.completed {
            prop_assert_eq!(&tasks[id], &vec![format!("Done/{id}.md")]);
            let text = String::from_utf8_lossy(&remote[&format!("Done/{id}.md")]).into_owned();
            prop_assert!(
                text.contains(&format!("owner: r{r}")),
                "{id} finished by r{r}: {text}"
            );
        }
        for marker in &self.markers {
            let kept = remote.values().any(|content| {
                content
                    .windows(marker.len())
                    .any(|w| w == marker.as_bytes())
            });
            prop_assert!(kept, "edit {} was lost", marker);
        }
        Ok(())
    }
}

/// The id of task `t`.
fn id(t: usize) -> aie_shared::vault::TaskId {
    sync_support::task_id(&name(t))
}

/// The name of task `t`, as `seed_tasks` makes it.
fn name(t: usize) -> String {
    format!("t{t:03}")
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        // Each case builds real repositories: keep shrinking short and leave no files behind.
        max_shrink_iters: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any interleaving of claims, syncs, edits, completions and outages ends, after a final
    /// sync round, with one copy of every task everywhere, one tree, and nothing lost.
    #[test]
    fn sync_random_interleavings_keep_the_invariants((replicas, steps) in run()) {
        let mut world = World::new(replicas);
        for step in &steps {
            world.apply(step)?;
        }
        world.settle()?;
        world.check()?;
    }
}
