//! Claim throughput on one machine: one agent claiming alone, then 16 agents racing for the
//! same tasks, and what stamping the claims costs the next sync. Prints figures only;
//! nothing here asserts a time.
//!
//! `cargo run -p aie-shared --example claim_bench [-- TASKS]` (default 1,000 tasks per run;
//! the vault lives in a temporary directory under `$TMPDIR`).

use std::{
    sync::{Arc, Barrier},
    thread,
    time::{Duration, Instant},
};

use aie_shared::vault::{AgentName, Domain, Task, TaskId, Vault};
use anyhow::Context;

/// Agents in the contended run.
const CONTENDERS: usize = 16;

fn main() -> anyhow::Result<()> {
    let tasks: usize = match std::env::args().nth(1) {
        Some(raw) => raw.parse().context("TASKS must be a number")?,
        None => 1000,
    };
    let dir = tempfile::tempdir().context("temporary directory")?;
    println!(
        "vault under {} ({tasks} tasks per run)",
        dir.path().display()
    );

    let vault = Vault::init(dir.path().join("alone"))?;
    let ids = seed(&vault, tasks)?;
    let agent = AgentName::new("solo")?;
    let started = Instant::now();
    for id in &ids {
        vault.claim(id, &agent)?;
    }
    report("uncontended, 1 agent", tasks, tasks, started.elapsed());
    // What the claims left for the sync: their stamps, written together before its commit.
    let held: Vec<_> = ids.iter().map(|id| (agent.clone(), id.clone())).collect();
    let started = Instant::now();
    let stamped = vault.stamp_claims(&held)?.len();
    let stamping = started.elapsed();
    println!(
        "stamping them at sync: {stamped} files in {:.1} ms ({:.0} µs each, one flush)",
        stamping.as_secs_f64() * 1e3,
        stamping.as_secs_f64() * 1e6 / stamped.max(1) as f64,
    );

    let vault = Vault::init(dir.path().join("contended"))?;
    let ids = Arc::new(seed(&vault, tasks)?);
    let (claimed, elapsed) = race(&vault, &ids)?;
    report(
        &format!("contended, {CONTENDERS} agents"),
        claimed,
        CONTENDERS * tasks,
        elapsed,
    );
    Ok(())
}

/// Makes `n` unclaimed tasks.
fn seed(vault: &Vault, n: usize) -> anyhow::Result<Vec<TaskId>> {
    (0..n)
        .map(|i| {
            let id = TaskId::new(format!("bench{i:06}"))?;
            let domain = Domain::ALL[i % Domain::ALL.len()];
            vault.create_task(&Task::new(id.clone(), domain, "bench", "body\n"))?;
            Ok(id)
        })
        .collect()
}

/// Every contender tries every task in the same order; returns the claims won and the time.
fn race(vault: &Vault, ids: &Arc<Vec<TaskId>>) -> anyhow::Result<(usize, Duration)> {
    let barrier = Arc::new(Barrier::new(CONTENDERS + 1));
    let handles: Vec<_> = (0..CONTENDERS)
        .map(|i| {
            let (vault, ids, barrier) = (vault.clone(), ids.clone(), barrier.clone());
            thread::spawn(move || -> anyhow::Result<usize> {
                let agent = AgentName::new(format!("agent{i:02}"))?;
                barrier.wait();
                Ok(ids
                    .iter()
                    .filter(|id| vault.claim(id, &agent).is_ok())
                    .count())
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    let mut claimed = 0;
    for handle in handles {
        claimed += handle
            .join()
            .map_err(|_| anyhow::anyhow!("a contender panicked"))??;
    }
    Ok((claimed, started.elapsed()))
}

/// Prints one run's figures.
fn report(label: &str, claimed: usize, attempts: usize, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    println!(
        "{label}: {claimed} claims in {secs:.2} s = {:.0} claims/s ({:.0} attempts/s)",
        claimed as f64 / secs,
        attempts as f64 / secs,
    );
}
