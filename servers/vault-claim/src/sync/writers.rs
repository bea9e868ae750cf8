//! Who writes what: the contract's table of paths that one writer alone may change
//! (`CONTRACT.md`, "What a replica accepts from the remote").
//!
//! | paths | written by |
//! |---|---|
//! | `Approved/`, `Rejected/`, `Done/approvals/`, `Quarantine/`, `Dashboard.md` | the local zone |
//! | `Logs/<agent>/`, `Alerts/<agent>/` | that agent |
//!
//! The merge applies it: a change the remote brings to a path this replica writes alone never
//! takes effect here, whatever the other rules say, and this replica's next push puts its own
//! version back on the remote. So the cloud cannot approve, reject or finish an approval, and
//! no replica can extend or cut another's audit chain.

use aie_shared::{
    approvals::QUARANTINE,
    vault::{
        AgentName,
        layout::{APPROVED, DASHBOARD, DONE, LOGS, REJECTED},
    },
};

use super::report::Zone;

/// The folder of alert notes, one folder per agent.
pub(crate) const ALERTS: &str = "Alerts";

/// Who alone may write a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writer<'a> {
    /// The local zone (the owner's machine).
    LocalZone,
    /// One agent, by name.
    Agent(&'a str),
}

/// The one writer of `path` (vault-relative, `/` separators), if it has one.
pub(crate) fn writer_of(path: &str) -> Option<Writer<'_>> {
    let local_folders = [APPROVED, REJECTED, QUARANTINE];
    if path == DASHBOARD
        || local_folders.iter().any(|f| in_folder(path, f))
        || path
            .strip_prefix(DONE)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rest| in_folder(rest, "approvals"))
    {
        return Some(Writer::LocalZone);
    }
    for folder in [LOGS, ALERTS] {
        if let Some((agent, _)) = path
            .strip_prefix(folder)
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|rest| rest.split_once('/'))
        {
            return Some(Writer::Agent(agent));
        }
    }
    None
}

/// Whether `path` is the folder `folder` itself or lies inside it.
fn in_folder(path: &str, folder: &str) -> bool {
    path.strip_prefix(folder)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether the replica of `agent` in `zone` writes `path` alone, so that no change from the
/// remote may take effect on it.
pub(crate) fn written_here_alone(path: &str, zone: Zone, agent: &AgentName) -> bool {
    match writer_of(path) {
        Some(Writer::LocalZone) => zone == Zone::Local,
        Some(Writer::Agent(name)) => name == agent.as_str(),
        None => false,
    }
}

/// The folders (and the one file) whose trees a replica compares with the merge base to see
/// whether the remote touched what it writes alone. A path in none of them has another writer.
pub(crate) fn roots_written_here(zone: Zone, agent: &AgentName) -> Vec<String> {
    let mut roots = vec![format!("{LOGS}/{agent}"), format!("{ALERTS}/{agent}")];
    if zone == Zone::Local {
        for root in [APPROVED, REJECTED, QUARANTINE, DASHBOARD] {
            roots.push(root.to_owned());
        }
        roots.push(format!("{DONE}/approvals"));
    }
    roots
}

/// Says who writes a path, for the refusal's reason.
pub(crate) fn describe(path: &str) -> String {
    match writer_of(path) {
        Some(Writer::LocalZone) => "only the local zone writes it".to_owned(),
        Some(Writer::Agent(agent)) => format!("only agent `{agent}` writes it"),
        None => "it has no single writer".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract's table, path by path, for both zones.
    #[test]
    fn sync_writers_table() {
        let local = AgentName::new("local").expect("agent");
        let cloud = AgentName::new("cloud").expect("agent");
        for path in [
            "Approved/a1.md",
            "Approved",
            "Rejected/a1.md",
            "Done/approvals/a1.md",
            "Quarantine/a1~2.md",
            "Dashboard.md",
            "Logs/local/2025-01-31.jsonl",
            "Alerts/local/x.md",
        ] {
            assert!(written_here_alone(path, Zone::Local, &local), "{path}");
            assert!(!written_here_alone(path, Zone::Cloud, &cloud), "{path}");
        }
        for path in ["Logs/cloud/2025-01-31.jsonl", "Alerts/cloud/x.md"] {
            assert!(written_here_alone(path, Zone::Cloud, &cloud), "{path}");
            assert!(!written_here_alone(path, Zone::Local, &local), "{path}");
        }
        for path in [
            "Done/t1.md",
            "Done/approvalsx/a.md",
            "ApprovedX/a.md",
            "Pending_Approval/email/a1.md",
            "Needs_Action/email/t1.md",
            "Updates/u.md",
            "Dashboard.md.bak",
            "Logs/x.jsonl",
        ] {
            assert!(!written_here_alone(path, Zone::Local, &local), "{path}");
        }
    }
}
