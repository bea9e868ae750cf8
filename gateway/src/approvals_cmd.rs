//! `aie approvals list|show|approve|reject` and `aie audit verify`: the human's side, on the
//! local machine, where the state folder (ledger, key, audit heads) lives.
//!
//! An approval lasts at most the local config's `[approvals] max_lifetime_hours` (the file
//! `AIE_CONFIG` names, as for `aie up`; without one, 7 days), whatever the request's own
//! `expires_at` says: `approve` records the capped expiry, `show` prints it.
//!
//! What runs is what the owner saw (contract invariant 8): `show ID` prints the exact payload
//! and its `payload_sha256`, and `approve ID --sha256 HEX` approves only a payload hashing to
//! it; without `--sha256`, on a terminal, `approve` prints the payload and asks, and with no
//! terminal it refuses, saying how. Everything printed from the vault goes through
//! `aie_shared::render`, and so does the JSON.

use std::{
    io::{BufRead, IsTerminal, Write},
    path::Path,
    process::ExitCode,
};

use aie_shared::{
    approvals::{Approvals, InDoubtSummary, PendingListing, ShownHash, local_user},
    audit,
    config::{self, Config},
    executor::{InDoubt, Journal, JournalSpec},
    render::{self, Line},
    vault::{ApprovalId, Vault},
};
use anyhow::Context;
use chrono::{DateTime, Utc};

fn open(vault: &Path, state: &Path) -> anyhow::Result<Approvals> {
    let vault =
        Vault::open(vault).context("opening the vault (pass --vault DIR or set AIE_VAULT)")?;
    let approvals = Approvals::open(vault, state)
        .with_context(|| format!("opening the approval ledger in {}", state.display()))?;
    Ok(approvals.with_max_lifetime(local_config()?.approvals.max_lifetime()))
}

/// The local config: the file in `AIE_CONFIG`, else the defaults. A file that does not
/// validate is an error, never replaced by defaults that may be laxer than it.
fn local_config() -> anyhow::Result<Config> {
    match std::env::var_os("AIE_CONFIG").filter(|v| !v.is_empty()) {
        Some(path) => config::load(Path::new(&path)).map_err(|errors| anyhow::anyhow!("{errors}")),
        None => Ok(Config::default()),
    }
}

fn id(raw: &str) -> anyhow::Result<ApprovalId> {
    ApprovalId::new(raw).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Every executor's executions in doubt, from their journals in the same state folder
/// (`aie up` keeps one state folder for the gateway and its servers; the journals are the
/// suite table's). A journal knows what the ledger may not: an execution the server itself
/// answered `in doubt:` was recorded by a gateway that does not believe it as failed.
fn journals_in_doubt(state: &Path) -> Vec<(&'static JournalSpec, InDoubt)> {
    crate::suite::in_doubt(state, |why| eprintln!("warning: {why}"))
}

/// How a journal describes one execution in doubt.
fn journal_note(spec: &JournalSpec, doubt: &InDoubt) -> String {
    format!(
        "the {} says: {} ({} {}, through {})",
        spec.labels.journal, doubt.detail, spec.labels.effect_id, doubt.effect_id, doubt.target
    )
}

/// Adds the journals' doubts to the ledger's: a note on an approval already listed, else a
/// line of its own saying what the ledger recorded. A use the ledger holds in doubt that the
/// executor's journal never started gets a note saying so (a crash before the journal).
fn merge_journals(
    approvals: &Approvals,
    state: &Path,
    listing: &mut PendingListing,
    doubts: &[(&'static JournalSpec, InDoubt)],
) {
    let ledger = approvals.ledger().read().ok();
    for listed in &mut listing.in_doubt {
        let Some(spec) = listed.tool.as_deref().and_then(crate::suite::journal_of) else {
            continue;
        };
        let never_started = Journal::open(state, spec)
            .is_ok_and(|j| j.damaged().is_none() && j.last(listed.approval_id.as_str()).is_none());
        if never_started {
            listed.notes.push(format!(
                "the {}'s {} never started it: when the {} runs in this stack, nothing was {}",
                spec.labels.server, spec.labels.journal, spec.labels.server, spec.labels.done
            ));
        }
    }
    for (spec, doubt) in doubts {
        let Ok(approval_id) = ApprovalId::new(doubt.approval_id.as_str()) else {
            continue;
        };
        if let Some(listed) = listing
            .in_doubt
            .iter_mut()
            .find(|d| d.approval_id == approval_id)
        {
            listed.notes.push(journal_note(spec, doubt));
            continue;
        }
        let record = ledger.as_ref().and_then(|l| l.get(&approval_id));
        let mut notes = vec![journal_note(spec, doubt)];
        if let Some(result) = record.and_then(|r| r.result.as_ref()) {
            notes.push(format!(
                "the approval ledger recorded `{}`: {}",
                result.outcome, result.detail
            ));
        }
        let since = DateTime::parse_from_rfc3339(&doubt.since)
            .map(|t| t.with_timezone(&Utc))
            .ok()
            .or_else(|| record.and_then(|r| r.used_at))
            .unwrap_or_else(Utc::now);
        listing.in_doubt.push(InDoubtSummary {
            tool: Some(
                record
                    .and_then(|r| r.approved.as_ref())
                    .map(|a| a.tool.clone())
                    .or_else(|| spec.tools.first().map(|t| (*t).to_owned()))
                    .unwrap_or_default(),
            ),
            task_id: record
                .and_then(|r| r.approved.as_ref())
                .and_then(|a| a.task_id.clone()),
            approval_id,
            since,
            notes,
        });
    }
    listing
        .in_doubt
        .sort_by(|a, b| (a.since, &a.approval_id).cmp(&(b.since, &b.approval_id)));
}

/// `list`: one pending request a line, its id first, then every approval in doubt.
pub fn list(vault: &Path, state: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let approvals = open(vault, state)?;
    let mut listing = approvals.list_pending()?;
    merge_journals(&approvals, state, &mut listing, &journals_in_doubt(state));
    if json {
        println!("{}", render::json(&listing)?);
    } else if listing.is_empty() {
        eprintln!("nothing waits for approval, nothing is in doubt");
    } else {
        print!("{listing}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `show ID`: the exact payload, its hash and its warnings, the preview, what the ledger
/// says, and what the send journal says when it holds the send in doubt.
pub fn show(vault: &Path, state: &Path, raw_id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let view = open(vault, state)?.show(&id(raw_id)?)?;
    let journal = journals_in_doubt(state)
        .into_iter()
        .find(|(_, d)| d.approval_id == view.approval_id.as_str());
    if json {
        let mut value = serde_json::to_value(&view)?;
        if let (Some((_, doubt)), Some(map)) = (&journal, value.as_object_mut()) {
            map.insert("journal_in_doubt".into(), serde_json::to_value(doubt)?);
        }
        println!("{}", render::json(&value)?);
    } else {
        print!("{view}");
        if let Some((spec, doubt)) = &journal {
            let words = &spec.labels;
            println!(
                "the {}'s {} holds this {} IN DOUBT since {}: {} ({} {}, through {}); it may or may not have happened: {}; it is never {} again by itself",
                words.server,
                words.journal,
                words.action,
                Line(&doubt.since),
                Line(&doubt.detail),
                words.effect_id,
                Line(&doubt.effect_id),
                Line(&doubt.target),
                words.check,
                words.done
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `approve ID [--sha256 HEX]`: approves the payload the owner saw, records the decision in
/// the ledger (with the payload's hash) and moves the file to `Approved/`. With `--sha256`,
/// only a payload hashing to HEX is approved; without it, on a terminal, the payload is
/// printed and the owner asked; with no terminal, refused with the way to do it.
pub fn approve(
    vault: &Path,
    state: &Path,
    raw_id: &str,
    sha256: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let approvals = open(vault, state)?;
    let id = id(raw_id)?;
    let shown = match sha256 {
        Some(hex) => ShownHash::new(hex)?,
        None if std::io::stdin().is_terminal() => match ask(&approvals, &id)? {
            Some(shown) => shown,
            None => {
                eprintln!("{id} not approved: you answered no");
                return Ok(ExitCode::FAILURE);
            }
        },
        None => anyhow::bail!(
            "approval `{id}` not approved: there is no terminal to show the payload and ask on; run `aie approvals show {id}`, then `aie approvals approve {id} --sha256 <the first 8 or more hex digits of the payload_sha256 it prints>`"
        ),
    };
    let decided = approvals.approve(&id, &local_user(), &shown)?;
    if json {
        println!("{}", render::json(&decided)?);
    } else {
        println!(
            "{} approved by {} ({})",
            decided.approval_id,
            Line(&decided.by),
            Line(&decided.path)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// On a terminal: prints the request as `show` does and asks; the hash of the payload
/// printed when the owner says yes, so what is approved is exactly what they read.
fn ask(approvals: &Approvals, id: &ApprovalId) -> anyhow::Result<Option<ShownHash>> {
    let view = approvals.show(id)?;
    let Some(hash) = view.payload_sha256.clone() else {
        anyhow::bail!(
            "approval request `{id}` cannot be read, so it cannot be approved: see `aie approvals show {id}`"
        );
    };
    let mut out = std::io::stdout().lock();
    write!(out, "{view}")?;
    if !view.warnings.is_empty() {
        writeln!(
            out,
            "{} WARNING(s) above: read them before you answer",
            view.warnings.len()
        )?;
    }
    write!(
        out,
        "Approve exactly this payload (payload_sha256 {})? [y/N] ",
        &hash[..16]
    )?;
    out.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(Some(ShownHash::new(&hash)?))
    } else {
        Ok(None)
    }
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
        println!("{}", render::json(&decided)?);
    } else {
        println!(
            "{} rejected by {} ({})",
            decided.approval_id,
            Line(&decided.by),
            Line(&decided.path)
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
