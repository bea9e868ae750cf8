//! `aie vault init|check|repair|status|sync`: vault maintenance from the command line.

use std::{path::Path, process::ExitCode};

use aie_shared::vault::{TaskFilter, TaskFolder, Vault};
use anyhow::Context;

/// `aie vault init`: lays out a vault (idempotent).
pub fn init(dir: &Path) -> anyhow::Result<ExitCode> {
    Vault::init(dir).with_context(|| format!("laying out a vault in {}", dir.display()))?;
    println!("vault ready at {}", dir.display());
    Ok(ExitCode::SUCCESS)
}

fn open(dir: &Path) -> anyhow::Result<Vault> {
    Vault::open(dir)
        .with_context(|| "opening the vault (lay one out with `aie vault init --vault DIR`)")
}

/// `aie vault check`: lists what breaks the vault's invariants, and what the remote's `main`
/// (as last fetched) holds that the sync refuses; exit 1 when anything does.
pub fn check(dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let findings = open(dir)?.check()?;
    let refused = aie_vault_claim::sync::refused_on_remote(dir)
        .with_context(|| format!("reading the git repository of {}", dir.display()))?;
    if json {
        let mut all = serde_json::to_value(&findings)?;
        if let Some(list) = all.as_array_mut() {
            for r in &refused {
                list.push(serde_json::json!({
                    "kind": "refused_from_remote",
                    "path": r.path,
                    "reason": r.reason,
                }));
            }
        }
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        for finding in &findings {
            println!("{finding}");
        }
        for r in &refused {
            println!(
                "{}: on the remote, refused by the sync: {} (it is never checked out; the next sync takes it off the remote)",
                r.path.escape_debug(),
                r.reason
            );
        }
        println!("{} finding(s)", findings.len() + refused.len());
    }
    Ok(if findings.is_empty() && refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `aie vault repair`: fixes what is safe, lists the rest; exit 1 when anything is left.
pub fn repair(dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let report = open(dir)?.repair()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for fixed in &report.fixed {
            println!("fixed: {fixed}");
        }
        for left in &report.left {
            println!("left for you: {left}");
        }
        println!("{} fixed, {} left", report.fixed.len(), report.left.len());
    }
    Ok(if report.left.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `aie vault status`: tasks per state folder and unreadable files.
pub fn status(dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let vault = open(dir)?;
    let listing = vault.list_tasks(TaskFilter::default())?;
    let count = |folder: TaskFolder| listing.tasks.iter().filter(|t| t.folder == folder).count();
    let counts: Vec<(TaskFolder, usize)> =
        TaskFolder::ALL.iter().map(|f| (*f, count(*f))).collect();
    if json {
        let folders: serde_json::Map<String, serde_json::Value> = counts
            .iter()
            .map(|(f, n)| (f.to_string(), (*n).into()))
            .collect();
        let out = serde_json::json!({"vault": dir.display().to_string(), "folders": folders, "broken": listing.broken});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("vault {}", dir.display());
        for (folder, n) in &counts {
            println!("  {folder:<12} {n}");
        }
        for broken in &listing.broken {
            println!("  unreadable: {}: {}", broken.path, broken.error);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `aie vault sync`: commits local changes (secrets left out), fetches, merges by task id and
/// pushes; prints what moved. Exit 1 when the remote could not be reached.
pub fn sync(
    dir: &Path,
    remote: Option<&str>,
    agent: aie_shared::vault::AgentName,
    zone: aie_shared::Zone,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let replica = aie_vault_claim::sync::Replica::open(dir, remote, agent, zone)
        .with_context(|| format!("opening {} as a synced vault", dir.display()))?;
    let report = replica.sync_round()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "pushed {} commit(s), pulled {}",
            report.pushed, report.pulled
        );
        for conflict in &report.conflicts {
            println!("conflict: {conflict}");
        }
        for lost in &report.lost_claims {
            match &lost.owner {
                Some(owner) => println!("lost claim: {} is held by {owner}", lost.task_id),
                None => println!("lost claim: {}", lost.task_id),
            }
        }
        for blocked in &report.blocked {
            println!("kept out of git: {}: {}", blocked.path, blocked.reason);
        }
        for refused in &report.refused {
            println!(
                "refused from the remote: {}: {}",
                refused.path.escape_debug(),
                refused.reason
            );
        }
        if let Some(why) = &report.offline {
            println!("offline: {why}; local commits are queued for the next sync");
        }
    }
    Ok(if report.offline.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
