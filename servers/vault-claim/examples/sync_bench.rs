//! Figures for vault sync on a `file://` remote with a 10,000-note vault: claim-to-remote
//! latency (p50, p99 over 100 claims), the time to sync 100 changed notes (push,
//! fast-forward pull, and a merge of both sides' changes), and the sync that stamps and
//! pushes 100 claims made on the vault alone. Prints figures; asserts nothing about time.
//!
//! ```sh
//! cargo run --release -p aie-vault-claim --example sync_bench
//! SYNC_BENCH_NOTES=1000 cargo run -p aie-vault-claim --example sync_bench   # a quick look
//! ```

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use aie_shared::vault::{AgentName, Domain, Task, TaskId};
use aie_vault_claim::sync::{ClaimOutcome, Replica, Zone};
use anyhow::{Context, Result, bail};

/// Claims timed for the latency figures.
const CLAIMS: usize = 100;
/// Notes changed for the sync figures.
const CHANGED: usize = 100;

fn main() -> Result<()> {
    let notes: usize = std::env::var("SYNC_BENCH_NOTES")
        .ok()
        .map(|n| n.parse())
        .transpose()
        .context("SYNC_BENCH_NOTES must be a number")?
        .unwrap_or(10_000);
    let dir = tempfile::tempdir()?;
    let remote = dir.path().join("remote.git");
    let mut init = git2::RepositoryInitOptions::new();
    init.bare(true).initial_head("main");
    git2::Repository::init_opts(&remote, &init)?;
    let url = format!("file://{}", remote.display());
    println!("vault sync figures: {notes} notes, remote {url}");

    let alpha = Replica::open(
        dir.path().join("alpha"),
        Some(&url),
        agent("alpha")?,
        Zone::Cloud,
    )?;
    let ids = write_tasks(alpha.vault().root(), notes)?;
    let started = Instant::now();
    let first = alpha.sync()?;
    println!(
        "first sync of {notes} notes (commit + push): {} ({} commit)",
        ms(started.elapsed()),
        first.pushed
    );
    let started = Instant::now();
    let beta = Replica::open(
        dir.path().join("beta"),
        Some(&url),
        agent("beta")?,
        Zone::Local,
    )?;
    println!("clone of the vault: {}", ms(started.elapsed()));

    // Claim-to-remote: from the call until the claim's commit is on the remote.
    let mut latencies = Vec::with_capacity(CLAIMS);
    for id in ids.iter().step_by(ids.len() / CLAIMS).take(CLAIMS) {
        let started = Instant::now();
        let outcome = alpha.claim(id)?;
        latencies.push(started.elapsed());
        if !matches!(outcome, ClaimOutcome::Confirmed { .. }) {
            bail!("claim of {id} was not confirmed: {outcome:?}");
        }
    }
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "claim to remote over {CLAIMS} claims: p50 {}, p99 {}, max {}",
        ms(pick(0.50)),
        ms(pick(0.99)),
        ms(pick(1.0))
    );
    let started = Instant::now();
    beta.sync()?;
    println!(
        "pull of {CLAIMS} claim commits (fast-forward): {}",
        ms(started.elapsed())
    );

    // 100 changed notes: pushed by one replica, pulled by the other.
    edit_notes(alpha.vault().root(), &ids[..CHANGED], "alpha")?;
    let started = Instant::now();
    let pushed = alpha.sync()?;
    println!(
        "sync of {CHANGED} changed notes, push: {} ({} commit)",
        ms(started.elapsed()),
        pushed.pushed
    );
    let started = Instant::now();
    let pulled = beta.sync()?;
    println!(
        "sync of {CHANGED} changed notes, fast-forward pull: {} ({} commit)",
        ms(started.elapsed()),
        pulled.pulled
    );

    // Claims made on the vault alone (no push each): the next sync stamps and commits them.
    let step = ids.len() / CLAIMS;
    let unclaimed = (3 * CHANGED..ids.len()).filter(|i| i % step != 0);
    let agent_alpha = agent("alpha")?;
    let started = Instant::now();
    for i in unclaimed.take(CHANGED) {
        alpha.with_vault(|vault| vault.claim(&ids[i], &agent_alpha))?;
    }
    let claiming = started.elapsed();
    let started = Instant::now();
    let stamped = alpha.sync()?;
    println!(
        "{CHANGED} claims on the vault: {}; the sync that stamps, commits and pushes them: {} \
         ({} commit)",
        ms(claiming),
        ms(started.elapsed()),
        stamped.pushed
    );

    // Both sides changed 100 notes each: the semantic merge over the whole tree.
    edit_notes(alpha.vault().root(), &ids[CHANGED..2 * CHANGED], "alpha")?;
    edit_notes(beta.vault().root(), &ids[2 * CHANGED..3 * CHANGED], "beta")?;
    alpha.sync()?;
    let started = Instant::now();
    let merged = beta.sync()?;
    println!(
        "sync of {CHANGED} changed notes on each side, merge + push: {} ({} conflicts)",
        ms(started.elapsed()),
        merged.conflicts.len()
    );
    let started = Instant::now();
    alpha.sync()?;
    println!(
        "sync with nothing changed locally (fetch + fast-forward): {}",
        ms(started.elapsed())
    );
    let started = Instant::now();
    alpha.sync()?;
    println!("sync with nothing to do: {}", ms(started.elapsed()));
    Ok(())
}

/// An agent name.
fn agent(name: &str) -> Result<AgentName> {
    Ok(AgentName::new(name)?)
}

/// Writes `n` tasks spread over the four domains, straight to disk (setup, not measured).
fn write_tasks(root: &Path, n: usize) -> Result<Vec<TaskId>> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = TaskId::new(format!("n{i:05}"))?;
        let domain = Domain::ALL[i % Domain::ALL.len()];
        let body = format!("Note {i}.\n\nSome lines of text, as a mail or a post would have.\n");
        let task = Task::new(id.clone(), domain, format!("Note {i}"), body);
        let path = root
            .join("Needs_Action")
            .join(domain.as_str())
            .join(id.file_name());
        fs::write(&path, task.render().map_err(anyhow::Error::msg)?)
            .with_context(|| path.display().to_string())?;
        ids.push(id);
    }
    Ok(ids)
}

/// Appends a line to each of these tasks' files, wherever they are.
fn edit_notes(root: &Path, ids: &[TaskId], by: &str) -> Result<()> {
    for id in ids {
        let path = Domain::ALL
            .iter()
            .map(|d| {
                root.join("Needs_Action")
                    .join(d.as_str())
                    .join(id.file_name())
            })
            .chain(std::iter::once(
                root.join("In_Progress/alpha").join(id.file_name()),
            ))
            .find(|p| p.is_file())
            .with_context(|| format!("{id} not found"))?;
        let text = fs::read_to_string(&path)?;
        fs::write(&path, format!("{text}Edited by {by}.\n"))?;
    }
    Ok(())
}

/// A duration in milliseconds, one decimal.
fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
