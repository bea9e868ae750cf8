//! Which vault paths are state files (tasks and approval requests), and the state their
//! folder stands for. The merge groups state files by id, so a task moved on one replica and
//! edited on another is seen as one thing, not as a deletion and two unrelated files.

use aie_shared::vault::{
    AgentName, Domain, TaskId,
    layout::{APPROVED, CONFLICTS, DONE, IN_PROGRESS, NEEDS_ACTION, PENDING_APPROVAL, REJECTED},
};

/// The two lifecycles whose files move between folders under one id. They are merged apart:
/// an approval id that happens to equal a task id is still another thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Lifecycle {
    /// `Needs_Action` → `In_Progress` → `Done`.
    Task,
    /// `Pending_Approval` → `Approved` | `Rejected`.
    Approval,
}

/// The state a folder stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    /// `Needs_Action/<domain>/`.
    NeedsAction,
    /// `In_Progress/<agent>/`.
    InProgress(AgentName),
    /// `Pending_Approval/<domain>/`.
    PendingApproval,
    /// `Approved/`.
    Approved,
    /// `Rejected/`.
    Rejected,
    /// `Done/`.
    Done,
}

impl State {
    /// Merge precedence: when both replicas moved one file, the later state wins, because a
    /// task only moves forward (Done > Rejected > Approved > Pending_Approval > In_Progress >
    /// Needs_Action) and a later state carries the work of the earlier ones.
    pub(crate) fn rank(&self) -> u8 {
        match self {
            State::NeedsAction => 0,
            State::InProgress(_) => 1,
            State::PendingApproval => 2,
            State::Approved => 3,
            State::Rejected => 4,
            State::Done => 5,
        }
    }

    /// Which lifecycle the state belongs to.
    pub(crate) fn lifecycle(&self) -> Lifecycle {
        match self {
            State::NeedsAction | State::InProgress(_) | State::Done => Lifecycle::Task,
            State::PendingApproval | State::Approved | State::Rejected => Lifecycle::Approval,
        }
    }

    /// The agent whose folder this is, for `In_Progress/<agent>/`.
    pub(crate) fn holder(&self) -> Option<&AgentName> {
        match self {
            State::InProgress(agent) => Some(agent),
            _ => None,
        }
    }
}

/// A state file: its id (the file stem) and the state of its folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StateFile {
    /// The task or approval id.
    pub(crate) id: String,
    /// Its folder's state.
    pub(crate) state: State,
}

impl StateFile {
    /// The merge's grouping key: files with one key are one task or one request.
    pub(crate) fn key(&self) -> (Lifecycle, String) {
        (self.state.lifecycle(), self.id.clone())
    }
}

/// Classifies a vault-relative path (with `/` separators): a state file is `<id>.md` directly
/// in a state folder, with a valid id. Anything else (a `.gitkeep`, a note in a subfolder,
/// `Needs_Action/conflicts/`, a stem that is no valid id) is an ordinary file.
pub(crate) fn classify(path: &str) -> Option<StateFile> {
    let parts: Vec<&str> = path.split('/').collect();
    let (state, file) = match parts.as_slice() {
        [folder, sub, file] if *folder == NEEDS_ACTION && is_domain(sub) => {
            (State::NeedsAction, file)
        }
        [folder, agent, file] if *folder == IN_PROGRESS => {
            (State::InProgress(AgentName::new(*agent).ok()?), file)
        }
        [folder, sub, file] if *folder == PENDING_APPROVAL && is_domain(sub) => {
            (State::PendingApproval, file)
        }
        [folder, file] if *folder == APPROVED => (State::Approved, file),
        [folder, file] if *folder == REJECTED => (State::Rejected, file),
        [folder, file] if *folder == DONE => (State::Done, file),
        _ => return None,
    };
    let stem = file.strip_suffix(".md")?;
    // Task and approval ids follow the same safe-stem rules.
    TaskId::new(stem).ok()?;
    Some(StateFile {
        id: stem.to_owned(),
        state,
    })
}

/// Whether a folder name is one of the contract's domains (so not `conflicts`).
fn is_domain(name: &str) -> bool {
    name != CONFLICTS && name.parse::<Domain>().is_ok()
}

/// The vault-relative paths a task id can have in `Needs_Action/` and in one agent's folder:
/// the files a claim or a release of that task touches.
pub(crate) fn claim_paths(id: &TaskId, agent: &AgentName) -> Vec<String> {
    let mut paths: Vec<String> = Domain::ALL
        .iter()
        .map(|d| format!("{NEEDS_ACTION}/{d}/{}", id.file_name()))
        .collect();
    paths.push(format!("{IN_PROGRESS}/{agent}/{}", id.file_name()));
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    /// State files are recognised in every state folder; everything else is ordinary.
    #[test]
    fn sync_classify_state_files() {
        let task = |p: &str| classify(p).map(|f| (f.id, f.state));
        assert_eq!(
            task("Needs_Action/email/t1.md"),
            Some(("t1".into(), State::NeedsAction))
        );
        assert_eq!(
            task("In_Progress/cloud/t1.md").map(|(_, s)| s.holder().cloned()),
            Some(AgentName::new("cloud").ok())
        );
        assert_eq!(task("Done/t1.md"), Some(("t1".into(), State::Done)));
        assert_eq!(
            task("Pending_Approval/social/a-1.md"),
            Some(("a-1".into(), State::PendingApproval))
        );
        assert_eq!(
            task("Approved/a-1.md"),
            Some(("a-1".into(), State::Approved))
        );
        for ordinary in [
            "Needs_Action/conflicts/t1.md",
            "Needs_Action/fax/t1.md",
            "Needs_Action/email/.gitkeep",
            "Done/sub/t1.md",
            "Done/t1.txt",
            "Done/.hidden.md",
            "Done/a b.md",
            "In_Progress/bad agent/t1.md",
            "Plans/email/p.md",
            "Dashboard.md",
        ] {
            assert_eq!(classify(ordinary), None, "{ordinary}");
        }
    }

    /// Precedence follows the lifecycle: Done beats everything, In_Progress beats Needs_Action.
    #[test]
    fn sync_state_precedence() {
        let agent = AgentName::new("a").expect("agent");
        let order = [
            State::NeedsAction,
            State::InProgress(agent),
            State::PendingApproval,
            State::Approved,
            State::Rejected,
            State::Done,
        ];
        for pair in order.windows(2) {
            assert!(pair[0].rank() < pair[1].rank());
        }
    }
}
