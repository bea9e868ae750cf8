//! Issue 10's figure: adoption and authorization with 10,000 files in `Approved/`.
//!
//! A local vault (git, no remote) on tmpfs where the machine has one, `APPROVALS_BENCH_N`
//! requests (default 10,000) drafted and approved with the command, committed as the sync
//! would; then the timings of what the gateway does per `execute` call:
//! - authorizing a request the owner approved with the command (no git involved);
//! - the git check that tells the owner's own move into `Approved/` (yes and no);
//! - the scan the local sync makes before each commit;
//! - authorizing a hand-moved request, its adoption included.
//!
//! Prints figures only (median and spread of the runs); nothing here fails on time.
//! `cargo run --release -p aie-vault-claim --example approvals_bench`

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use aie_shared::{
    approvals::{Approvals, ShownHash},
    vault::{AgentName, ApprovalId, ApprovalRequest, Domain, payload_sha256},
};
use aie_vault_claim::sync::{GitHandMoves, Replica, Zone, hand_moves, is_hand_move};
use anyhow::{Context, Result};
use serde_json::{Value, json};

/// Authorizations timed per figure.
const RUNS: usize = 101;

fn main() -> Result<()> {
    let n: usize = std::env::var("APPROVALS_BENCH_N")
        .ok()
        .map(|n| n.parse())
        .transpose()
        .context("APPROVALS_BENCH_N must be a number")?
        .unwrap_or(10_000);
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)?
    } else {
        tempfile::tempdir()?
    };
    let root = dir.path().join("vault");
    let state = dir.path().join("state");
    println!(
        "approvals figures: {n} requests in Approved/, vault {}",
        root.display()
    );

    let replica = Replica::open(&root, None, agent("local")?, Zone::Local)?;
    let vault = replica.vault().clone();
    let expires = chrono::Utc::now() + chrono::TimeDelta::days(3);
    let ids: Vec<ApprovalId> = (0..n + 1)
        .map(|i| ApprovalId::new(format!("a{i:06}")))
        .collect::<Result<_, _>>()?;
    for id in &ids {
        let request = ApprovalRequest::new(
            id.clone(),
            Domain::Email,
            "email_send",
            payload(id),
            agent("cloud")?,
            expires,
        );
        vault.write_approval_request(&request)?;
    }
    replica.sync()?;
    let check = Arc::new(GitHandMoves::new(&root));
    let approvals = Approvals::open(vault.clone(), &state)?.accepting_hand_moves(check, "owner");
    // All but the last approved with the command, then committed as the sync does.
    let started = Instant::now();
    for id in &ids[..n] {
        // The hash `show` would print: the owner approves the payload they read.
        let shown = ShownHash::new(&payload_sha256(&payload(id)))?;
        approvals.approve(id, "owner", &shown)?;
    }
    println!(
        "approve with the command, {n} requests: {:.1} s ({:.2} ms each)",
        started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64() * 1e3 / n as f64
    );
    replica.sync()?;

    let mut times = Vec::with_capacity(RUNS);
    for id in ids.iter().take(RUNS) {
        let started = Instant::now();
        approvals
            .authorize(id, "email_send", &payload(id))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        times.push(started.elapsed());
    }
    report("authorize a command-approved request", &mut times);

    // The owner moves the last request into Approved/ by hand.
    let last = &ids[n];
    std::fs::rename(
        root.join(format!("Pending_Approval/email/{last}.md")),
        root.join(format!("Approved/{last}.md")),
    )?;
    let mut yes = Vec::with_capacity(RUNS);
    let mut no = Vec::with_capacity(RUNS);
    let mut scans = Vec::with_capacity(RUNS / 10);
    for i in 0..RUNS {
        let started = Instant::now();
        anyhow::ensure!(
            is_hand_move(&root, last)?,
            "the owner's move is a hand move"
        );
        yes.push(started.elapsed());
        let started = Instant::now();
        anyhow::ensure!(!is_hand_move(&root, &ids[i])?, "a committed file is none");
        no.push(started.elapsed());
        if i % 10 == 0 {
            let started = Instant::now();
            let found = hand_moves(&root)?;
            scans.push(started.elapsed());
            anyhow::ensure!(
                found == vec![last.clone()],
                "one hand move, found {found:?}"
            );
        }
    }
    report("is_hand_move, answer yes", &mut yes);
    report("is_hand_move, answer no", &mut no);
    report("hand_moves scan before a sync commit", &mut scans);
    let started = Instant::now();
    approvals
        .authorize(last, "email_send", &payload(last))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "authorize a hand-moved request, its adoption included: {:.2} ms (once: it is used after)",
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

/// The reply a request sends.
fn payload(id: &ApprovalId) -> Value {
    json!({"to": format!("customer-{id}@example.com"), "subject": "Re: your order", "body": "Thank you."})
}

/// A valid agent name.
fn agent(name: &str) -> Result<AgentName> {
    Ok(AgentName::new(name)?)
}

/// Prints the median and the spread of `times`.
fn report(what: &str, times: &mut [Duration]) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{what}: median {:.3} ms (min {:.3}, max {:.3}, {} runs)",
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1]),
        times.len()
    );
}
