//! Where an executor gets the action it carries out, and why it may trust it.
//!
//! - [`Authority::Gateway`]: hosted in-process behind the gateway (`aie up`). The guard's
//!   ledger check hands the exact authorized payload over ([`AuthorizedActions`]); the
//!   executor acts on that and nothing else, never on a second read of the file. A call that
//!   brings no authorization is refused: nothing reaches a hosted server but through the
//!   guard.
//! - [`Authority::Vault`]: a server on its own listener (`aie serve email-draft`), fronted
//!   over HTTP or called directly. It reads `Approved/<id>.md` and checks it (in `Approved/`,
//!   the tool, the payload hash, the expiry). When its state folder holds an approval ledger
//!   with entries (the gateway's, on the same machine), the file must also be what the
//!   ledger approved, and in use by the gateway (used, no final result): a file a sync
//!   changed after the gateway's check is refused. Without a ledger there, the server trusts whatever fronts
//!   it, as any MCP server trusts its gateway, and the file is only checked for consistency:
//!   run it with the gateway's `--state` for the stronger check (`specs/executor.md`).

use std::path::{Path, PathBuf};

use chrono::Utc;

use super::{Action, AuthorizedActions, JournalSpec};
use crate::{
    approvals::{
        ApprovalLedger,
        ledger::{KEY_FILE, LEDGER_FILE},
    },
    vault::{ApprovalId, ApprovalRequest, Vault, VaultError},
};

/// Where an executor's actions come from (see the module doc).
#[derive(Debug, Clone)]
pub enum Authority {
    /// Behind the in-process gateway: only what its guard handed over.
    Gateway(AuthorizedActions),
    /// Alone: the approved file, checked against the state folder's ledger when there is one.
    Vault {
        /// The vault holding `Approved/`.
        vault: Vault,
        /// The state folder, where a ledger may be.
        state_dir: PathBuf,
    },
}

impl Authority {
    /// The action approval `id` authorizes for `tool` of the executor `spec`; the refusal
    /// says why, and nothing has happened.
    pub(crate) async fn action(
        &self,
        id: &ApprovalId,
        tool: &str,
        spec: &'static JournalSpec,
    ) -> Result<Action, String> {
        match self {
            Authority::Gateway(actions) => {
                let authorized = actions.take(id).ok_or_else(|| {
                    format!(
                        "approval `{id}` was not handed over by this stack's gateway: {tool} runs only through the gateway's approval check"
                    )
                })?;
                if authorized.tool != tool || !spec.tools.contains(&tool) {
                    return Err(format!(
                        "approval `{id}` was authorized for {}, not for {tool}",
                        authorized.tool
                    ));
                }
                Ok(Action::from(authorized))
            }
            Authority::Vault { vault, state_dir } => {
                let (vault, state, id, tool) = (
                    vault.clone(),
                    state_dir.clone(),
                    id.clone(),
                    tool.to_owned(),
                );
                tokio::task::spawn_blocking(move || approved(&vault, &state, &id, &tool, spec))
                    .await
                    .map_err(|e| format!("internal error: {e}"))?
            }
        }
    }
}

/// Reads `Approved/<id>.md` and checks that it may run here. Blocking.
fn approved(
    vault: &Vault,
    state_dir: &Path,
    id: &ApprovalId,
    tool: &str,
    spec: &JournalSpec,
) -> Result<Action, String> {
    let (path, request) = match vault.read_approval_request(id) {
        Ok(found) => found,
        Err(VaultError::ApprovalNotFound { .. }) => {
            return Err(format!("approval `{id}` not found in the vault"));
        }
        Err(e) => return Err(e.to_string()),
    };
    if !path.starts_with("Approved/") {
        return Err(format!(
            "approval `{id}` is at {path}, not in Approved/: it has not been approved"
        ));
    }
    if request.meta.tool != tool
        || !spec.tools.contains(&tool)
        || request.meta.domain != spec.domain
    {
        return Err(format!(
            "approval `{id}` is for {} in {}, not for {tool}",
            request.meta.tool, request.meta.domain
        ));
    }
    if !request.hash_matches() {
        return Err(format!(
            "approval `{id}`: the payload no longer matches its payload_sha256; it was changed after it was drafted"
        ));
    }
    if request.meta.expires_at <= Utc::now() {
        return Err(format!(
            "approval `{id}` expired at {}",
            request.meta.expires_at.to_rfc3339()
        ));
    }
    check_ledger(state_dir, id, &request)?;
    Ok(Action {
        approval_id: id.clone(),
        tool: request.meta.tool,
        domain: request.meta.domain,
        payload: request.meta.payload,
        payload_sha256: request.meta.payload_sha256,
        task_id: request.meta.task_id,
    })
}

/// With a ledger in `state_dir`: the file must be exactly what it approved, and in use by
/// the gateway now. Without one, nothing to check.
fn check_ledger(
    state_dir: &Path,
    id: &ApprovalId,
    request: &ApprovalRequest,
) -> Result<(), String> {
    // A ledger with no entry approved nothing: `aie approvals list` run on a standalone
    // server's state folder leaves an empty one behind, which is no gateway's ledger.
    let holds_entries = std::fs::metadata(state_dir.join(LEDGER_FILE)).is_ok_and(|m| m.len() > 0);
    if !holds_entries || !state_dir.join(KEY_FILE).is_file() {
        return Ok(());
    }
    let refuse = |why: String| {
        Err(format!(
            "approval `{id}`: {why} (the approval ledger in {})",
            state_dir.display()
        ))
    };
    let ledger = match ApprovalLedger::open(state_dir).and_then(|l| l.read()) {
        Ok(state) => state,
        Err(e) => return refuse(format!("cannot be checked: {e}")),
    };
    if let Some(damage) = ledger.damage() {
        return refuse(format!(
            "cannot be checked, the ledger is damaged: {damage}"
        ));
    }
    let Some(record) = ledger.get(id) else {
        return refuse("has no entry: the owner approves with `aie approvals approve`".into());
    };
    if let Some(rejected) = &record.rejected {
        return refuse(format!("was rejected by {}", rejected.decided_by));
    }
    let Some(approval) = &record.approved else {
        return refuse("was not approved".into());
    };
    if approval.payload_sha256 != request.meta.payload_sha256 || approval.tool != request.meta.tool
    {
        return refuse(
            "its file is not what the owner approved (payload or tool changed since)".into(),
        );
    }
    if approval.expires_at <= Utc::now() {
        return refuse(format!("expired at {}", approval.expires_at.to_rfc3339()));
    }
    if record.used_at.is_none() {
        return refuse(
            "is not being executed by the gateway (not marked used): execute tools run through the gateway"
                .into(),
        );
    }
    if let Some(done) = &record.result {
        return refuse(format!("already has a result ({})", done.outcome));
    }
    Ok(())
}
