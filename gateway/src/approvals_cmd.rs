//! `aie approvals list|show|approve|reject` and `aie audit verify`: the human's side, on the
//! local machine, where the state folder (ledger, key, audit heads) lives.

use std::{path::Path, process::ExitCode};

use aie_shared::{
    approvals::{Approvals, local_user},
    audit,
    vault::{ApprovalId, Vault},
};
use anyhow::Context;

fn open(vault: &Path, state: &Path) -> anyhow::Result<Approvals> {
    let vault =
        Vault::open(vault).context("opening the vault (pass --vault DIR or set AIE_VAULT)")?;
    Approvals::open(vault, state)
        .with_context(|| format!("opening the approval ledger in {}", state.display()))
}

fn id(raw: &str) -> anyhow::Result<ApprovalId> {
    ApprovalId::new(raw).map_err(|e| anyhow::anyhow!("{e}"))
}

/// `list`: one pending request a line, its id first.
pub fn list(vault: &Path, state: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let listing = open(vault, state)?.list_pending()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&listing)?);
    } else if listing.pending.is_empty() && listing.broken.is_empty() {
        eprintln!("nothing waits for approval");
    } else {
        print!("{listing}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `show ID`: the request, its preview and what the ledger says.
pub fn show(vault: &Path, state: &Path, raw_id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let view = open(vault, state)?.show(&id(raw_id)?)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        println!("{view}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `approve ID`: records the decision in the ledger and moves the file to `Approved/`.
pub fn approve(vault: &Path, state: &Path, raw_id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let decided = open(vault, state)?.approve(&id(raw_id)?, &local_user())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&decided)?);
    } else {
        println!(
            "{} approved by {} ({})",
            decided.approval_id, decided.by, decided.path
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `reject ID [--reason TEXT]`: records the refusal and moves the file to `Rejected/`.
pub fn reject(
    vault: &Path,
    state: &Path,
    raw_id: &str,
    reason: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let reason = reason.unwrap_or("rejected by the owner");
    let decided = open(vault, state)?.reject(&id(raw_id)?, &local_user(), reason)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&decided)?);
    } else {
        println!(
            "{} rejected by {} ({})",
            decided.approval_id, decided.by, decided.path
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `aie audit verify`: checks every agent's chain; exit 1 naming the first broken record.
pub fn verify(vault: &Path, state: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let vault =
        Vault::open(vault).context("opening the vault (pass --vault DIR or set AIE_VAULT)")?;
    // The head file is optional: a vault checked on another machine has none.
    let state = state.filter(|dir| dir.join("audit-heads.json").exists());
    let report = audit::verify(&vault, state)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
        if report.agents.is_empty() {
            println!("no audit logs under Logs/");
        }
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
