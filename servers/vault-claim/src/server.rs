//! The `vault_*` MCP tools of the contract, over one agent's view of the vault.
//!
//! Every tool runs its filesystem and git work under `spawn_blocking`, so a slow disk or a
//! slow remote never stalls the runtime.

use std::sync::Arc;

use crate::sync::{ClaimOutcome, Replica, ReplicaStatus, SyncError, SyncReport};
use aie_shared::{
    ToolError, ToolOutput, ToolServer, ToolSet, ToolSpec,
    vault::{AgentName, Domain, TaskFilter, TaskFolder, TaskId, Vault, VaultError},
};
use chrono::Utc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the tools act on: the vault, the agent the tools act for, and, when the vault syncs
/// through git, its [`Replica`].
#[derive(Clone)]
pub struct VaultClaim {
    vault: Vault,
    agent: AgentName,
    replica: Option<Arc<Replica>>,
}

impl VaultClaim {
    /// The tools of `agent` on `vault`, without sync (claims hold on this machine only).
    pub fn new(vault: Vault, agent: AgentName) -> Self {
        Self {
            vault,
            agent,
            replica: None,
        }
    }

    /// The tools on a synced vault: claims go through [`Replica::claim`] so they hold across
    /// replicas, and `vault_sync` / `vault_status` are added.
    pub fn with_replica(replica: Arc<Replica>) -> Self {
        Self {
            vault: replica.vault().clone(),
            agent: replica.agent().clone(),
            replica: Some(replica),
        }
    }

    /// The replica, when the vault syncs.
    pub fn replica(&self) -> Option<&Arc<Replica>> {
        self.replica.as_ref()
    }

    /// Runs blocking vault work off the runtime; a vault error becomes the tool's error text.
    /// On a synced vault the work waits for any git work in progress, so a checkout never
    /// meets a move.
    async fn blocking<T, F>(&self, work: F) -> Result<T, ToolError>
    where
        T: Send + 'static,
        F: FnOnce(&Vault, &AgentName) -> Result<T, VaultError> + Send + 'static,
    {
        let (vault, agent, replica) =
            (self.vault.clone(), self.agent.clone(), self.replica.clone());
        let job = move || match replica {
            Some(replica) => replica.with_vault(|_| work(&vault, &agent)),
            None => work(&vault, &agent),
        };
        match tokio::task::spawn_blocking(job).await {
            Ok(result) => result.map_err(tool_error),
            Err(e) => Err(ToolError::Failed(format!("internal error: {e}"))),
        }
    }

    /// Runs a change of a task's state (claim, release, complete) like
    /// [`VaultClaim::blocking`]. On a vault without git no sync will flush it before it counts,
    /// so the vault is flushed before the answer: a change answered survives a crash. On a
    /// synced vault the sync flushes before it commits (`specs/vault.md`, "Durability").
    async fn changing<T, F>(&self, work: F) -> Result<T, ToolError>
    where
        T: Send + 'static,
        F: FnOnce(&Vault, &AgentName) -> Result<T, VaultError> + Send + 'static,
    {
        let unsynced = self.replica.is_none();
        self.blocking(move |vault, agent| {
            let done = work(vault, agent)?;
            if unsynced {
                vault.flush()?;
            }
            Ok(done)
        })
        .await
    }

    /// Runs blocking replica work off the runtime; a sync error becomes the tool's error text.
    async fn on_replica<T, F>(replica: Arc<Replica>, work: F) -> Result<T, ToolError>
    where
        T: Send + 'static,
        F: FnOnce(&Replica) -> Result<T, SyncError> + Send + 'static,
    {
        match tokio::task::spawn_blocking(move || work(&replica)).await {
            Ok(result) => result.map_err(|e| ToolError::Failed(e.to_string())),
            Err(e) => Err(ToolError::Failed(format!("internal error: {e}"))),
        }
    }
}

fn tool_error(e: VaultError) -> ToolError {
    match e {
        VaultError::InvalidId { .. }
        | VaultError::UnknownDomain(_)
        | VaultError::UnknownFolder(_) => ToolError::InvalidArguments(e.to_string()),
        other => ToolError::Failed(other.to_string()),
    }
}

/// `vault_list_tasks` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Only tasks in this state folder: `Needs_Action`, `In_Progress` or `Done`.
    pub folder: Option<TaskFolder>,
    /// Only tasks of this domain: `email`, `social`, `whatsapp` or `payments`.
    pub domain: Option<Domain>,
}

/// One task in a listing.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskLine {
    /// The task's id.
    pub id: String,
    /// Its state folder.
    pub folder: TaskFolder,
    /// Its domain.
    pub domain: Domain,
    /// The agent holding it or that finished it.
    pub owner: Option<String>,
    /// Its title.
    pub title: String,
}

/// A file that could not be read as a task.
#[derive(Debug, Serialize, JsonSchema)]
pub struct BrokenLine {
    /// The file, relative to the vault root.
    pub path: String,
    /// Why it could not be read.
    pub error: String,
}

/// `vault_list_tasks` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskList {
    /// The tasks, ordered by folder, domain and id.
    pub tasks: Vec<TaskLine>,
    /// Task files that could not be read (left untouched).
    pub broken: Vec<BrokenLine>,
}

impl ToolOutput for TaskList {
    fn render(&self) -> String {
        let mut out = format!("{} task(s)\n", self.tasks.len());
        for t in &self.tasks {
            let owner = t
                .owner
                .as_deref()
                .map(|o| format!(" [{o}]"))
                .unwrap_or_default();
            out.push_str(&format!(
                "{} {}/{}{}: {}\n",
                t.id, t.folder, t.domain, owner, t.title
            ));
        }
        for b in &self.broken {
            out.push_str(&format!("unreadable: {}: {}\n", b.path, b.error));
        }
        out
    }
}

/// Arguments naming one task.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskArgs {
    /// The task's id: its file stem, `[A-Za-z0-9._-]`, no `..`.
    pub task_id: TaskId,
}

/// `vault_read_task` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskRead {
    /// The task's id.
    pub task_id: String,
    /// Its state folder.
    pub folder: TaskFolder,
    /// Its file, relative to the vault root.
    pub path: String,
    /// The YAML front matter, as JSON.
    pub front_matter: Value,
    /// The markdown body.
    pub body: String,
}

impl ToolOutput for TaskRead {
    fn render(&self) -> String {
        format!(
            "{} ({})\n{}\n\n{}",
            self.task_id, self.path, self.front_matter, self.body
        )
    }
}

/// `vault_claim_task` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Claimed {
    /// The task.
    pub task_id: String,
    /// The agent that holds it now.
    pub owner: String,
    /// True when this agent holds it.
    pub claimed: bool,
    /// When the claim goes stale unless renewed (RFC 3339).
    pub lease_until: Option<String>,
    /// Set when the claim is committed here but the remote could not be reached: a later
    /// `vault_sync` confirms it or reports it in `lost_claims`. Do not act on the task before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

impl ToolOutput for Claimed {
    fn render(&self) -> String {
        if let Some(reason) = &self.pending {
            format!(
                "claimed {} for {} locally, not yet on the remote ({reason}); sync before acting on it",
                self.task_id, self.owner
            )
        } else if self.claimed {
            format!("claimed {} for {}", self.task_id, self.owner)
        } else {
            format!("{} is claimed by {}", self.task_id, self.owner)
        }
    }
}

/// `vault_complete_task` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteArgs {
    /// The task's id.
    pub task_id: TaskId,
    /// A note recorded in the task's front matter.
    pub note: Option<String>,
}

/// Where a task went.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Moved {
    /// The task.
    pub task_id: String,
    /// Its new file, relative to the vault root.
    pub path: String,
}

impl ToolOutput for Moved {
    fn render(&self) -> String {
        format!("{} -> {}", self.task_id, self.path)
    }
}

/// `vault_write_update` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateArgs {
    /// The note for the owner, markdown.
    pub text: String,
}

/// `vault_write_update` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UpdateWritten {
    /// The note's file, relative to the vault root.
    pub path: String,
}

impl ToolOutput for UpdateWritten {
    fn render(&self) -> String {
        format!("wrote {}", self.path)
    }
}

/// Largest note `vault_write_update` accepts: notes are short messages, not documents.
pub const MAX_UPDATE_BYTES: usize = 64 * 1024;

/// The `vault_*` tools.
pub fn tools(state: VaultClaim) -> ToolSet {
    let mut set = ToolSet::new();
    let s = Arc::new(state);

    let st = s.clone();
    set.add(
        ToolSpec::read("vault_list_tasks", "List tasks", "Lists tasks with id, folder, domain, owner and title, optionally filtered by state folder and domain."),
        move |args: ListArgs| {
            let st = st.clone();
            async move {
                let filter = TaskFilter { folder: args.folder, domain: args.domain };
                let listing = st.blocking(move |vault, _| vault.list_tasks(filter)).await?;
                Ok(TaskList {
                    tasks: listing
                        .tasks
                        .into_iter()
                        .map(|t| TaskLine {
                            id: t.id.to_string(),
                            folder: t.folder,
                            domain: t.domain,
                            owner: t.owner.map(|o| o.to_string()),
                            title: t.title,
                        })
                        .collect(),
                    broken: listing.broken.into_iter().map(|b| BrokenLine { path: b.path, error: b.error }).collect(),
                })
            }
        },
    );

    let st = s.clone();
    set.add(
        ToolSpec::read(
            "vault_read_task",
            "Read a task",
            "Reads one task: its front matter and markdown body.",
        ),
        move |args: TaskArgs| {
            let st = st.clone();
            async move {
                let id = args.task_id;
                let stored = st.blocking(move |vault, _| vault.read_task(&id)).await?;
                let front_matter = serde_json::to_value(&stored.task.meta)
                    .map_err(|e| ToolError::Failed(format!("{}: {e}", stored.path)))?;
                Ok(TaskRead {
                    task_id: stored.task.meta.id.to_string(),
                    folder: stored.folder,
                    path: stored.path,
                    front_matter,
                    body: stored.task.body,
                })
            }
        },
    );

    let st = s.clone();
    set.add(
        ToolSpec::draft("vault_claim_task", "Claim a task", "Claims a task by moving it to In_Progress/<agent>/; the first mover owns it, across replicas when the vault syncs. A task another agent holds is refused with that agent's name."),
        move |args: TaskArgs| {
            let st = st.clone();
            async move {
                let claimed = match st.replica.clone() {
                    Some(replica) => claim_across_replicas(replica, args.task_id).await?,
                    None => claim_here(&st, args.task_id).await?,
                };
                if claimed.claimed {
                    Ok(claimed)
                } else {
                    Err(ToolError::Failed(format!("{} is claimed by {}", claimed.task_id, claimed.owner)))
                }
            }
        },
    );

    let st = s.clone();
    set.add(
        ToolSpec::draft(
            "vault_release_task",
            "Release a task",
            "Gives a task this agent holds back to Needs_Action/<domain>/.",
        ),
        move |args: TaskArgs| {
            let st = st.clone();
            async move {
                let id = args.task_id;
                let task_id = id.to_string();
                let path = st
                    .changing(move |vault, agent| vault.release(&id, agent))
                    .await?;
                Ok(Moved { task_id, path })
            }
        },
    );

    let st = s.clone();
    set.add(
        ToolSpec::draft(
            "vault_complete_task",
            "Complete a task",
            "Moves a task this agent holds to Done/, with an optional note.",
        ),
        move |args: CompleteArgs| {
            let st = st.clone();
            async move {
                let id = args.task_id;
                let task_id = id.to_string();
                let note = args.note;
                let path = st
                    .changing(move |vault, agent| vault.complete(&id, agent, note.as_deref()))
                    .await?;
                Ok(Moved { task_id, path })
            }
        },
    );

    let st = s.clone();
    set.add(
        ToolSpec::draft("vault_write_update", "Write an update", "Writes a note for the owner in Updates/; the local zone merges updates into Dashboard.md."),
        move |args: UpdateArgs| {
            let st = st.clone();
            async move {
                if args.text.trim().is_empty() {
                    return Err(ToolError::InvalidArguments("text is empty".into()));
                }
                if args.text.len() > MAX_UPDATE_BYTES {
                    return Err(ToolError::InvalidArguments(format!("text is over {MAX_UPDATE_BYTES} bytes")));
                }
                let path = st.blocking(move |vault, agent| write_update(vault, agent, &args.text)).await?;
                Ok(UpdateWritten { path })
            }
        },
    );
    if let Some(replica) = s.replica.clone() {
        add_sync_tools(&mut set, replica);
    }
    set
}

/// `vault_sync {}` and `vault_status {}`, on a synced vault.
fn add_sync_tools(set: &mut ToolSet, replica: Arc<Replica>) {
    let r = replica.clone();
    set.add(
        ToolSpec::draft(
            "vault_sync",
            "Sync the vault",
            "Commits this replica's changes (secrets left out), fetches, merges by task id and pushes, now. Returns {pushed, pulled, conflicts, lost_claims}; an unreachable remote is reported in `offline`, not an error; what the remote brought and this replica did not take (links, unsafe names, changes to paths only this zone writes) is in `refused`.",
        ),
        move |_: NoArgs| {
            let r = r.clone();
            async move { VaultClaim::on_replica(r, Replica::sync_round).await }
        },
    );
    set.add(
        ToolSpec::read(
            "vault_status",
            "Vault sync status",
            "The replica's sync state: remote, commits ahead and behind, last sync and error, files kept out of git, what the remote brought that was refused, pending claims, conflicts and task counts per folder.",
        ),
        move |_: NoArgs| {
            let r = replica.clone();
            async move { VaultClaim::on_replica(r, Replica::status).await }
        },
    );
}

/// Arguments of a tool that takes none.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

impl ToolOutput for SyncReport {
    fn render(&self) -> String {
        let mut out = format!("pushed {}, pulled {}", self.pushed, self.pulled);
        if let Some(reason) = &self.offline {
            out.push_str(&format!(" (offline: {reason})"));
        }
        for c in &self.conflicts {
            out.push_str(&format!("\nconflict: {c}"));
        }
        for lost in &self.lost_claims {
            let owner = lost
                .owner
                .as_ref()
                .map_or("nobody".to_owned(), ToString::to_string);
            out.push_str(&format!(
                "\nlost claim: {} (now {owner}, {})",
                lost.task_id, lost.path
            ));
        }
        for b in &self.blocked {
            out.push_str(&format!("\nkept out of git: {} ({})", b.path, b.reason));
        }
        for r in &self.refused {
            // A refused path comes from the remote: shown escaped, never as it is.
            out.push_str(&format!(
                "\nrefused from the remote: {} ({})",
                r.path.escape_debug(),
                r.reason
            ));
        }
        out
    }
}

impl ToolOutput for ReplicaStatus {}

/// A claim on this machine only (no sync).
async fn claim_here(st: &VaultClaim, id: TaskId) -> Result<Claimed, ToolError> {
    st.changing(move |vault, agent| match vault.claim(&id, agent) {
        Ok(claim) => Ok(Claimed {
            task_id: claim.task_id.to_string(),
            owner: claim.owner.to_string(),
            claimed: true,
            lease_until: Some(claim.lease_until.to_rfc3339()),
            pending: None,
        }),
        Err(VaultError::AlreadyClaimed { owner, .. }) => Ok(Claimed {
            task_id: id.to_string(),
            owner: owner.to_string(),
            claimed: false,
            lease_until: None,
            pending: None,
        }),
        Err(e) => Err(e),
    })
    .await
}

/// A claim that holds across replicas: committed and pushed, the push deciding.
async fn claim_across_replicas(replica: Arc<Replica>, id: TaskId) -> Result<Claimed, ToolError> {
    let outcome = VaultClaim::on_replica(replica, move |r| r.claim(&id)).await?;
    Ok(match outcome {
        ClaimOutcome::Confirmed { claim } => Claimed {
            task_id: claim.task_id.to_string(),
            owner: claim.owner.to_string(),
            claimed: true,
            lease_until: Some(claim.lease_until.to_rfc3339()),
            pending: None,
        },
        ClaimOutcome::Pending { claim, reason } => Claimed {
            task_id: claim.task_id.to_string(),
            owner: claim.owner.to_string(),
            claimed: true,
            lease_until: Some(claim.lease_until.to_rfc3339()),
            pending: Some(reason),
        },
        ClaimOutcome::Lost { task_id, owner } => Claimed {
            task_id: task_id.to_string(),
            owner: owner.map_or_else(
                || "nobody (it is no longer claimable)".to_owned(),
                |o| o.to_string(),
            ),
            claimed: false,
            lease_until: None,
            pending: None,
        },
    })
}

/// Writes `Updates/<time>-<agent>.md`, never replacing an existing note and never through a
/// link (`Updates` committed as a link to a folder of this machine is refused, not written
/// into).
fn write_update(vault: &Vault, agent: &AgentName, text: &str) -> Result<String, VaultError> {
    let dir = vault.root().join("Updates");
    let refused_or_io = |path: String| {
        move |source: std::io::Error| match aie_shared::vault::nofollow::refusal(&source) {
            Some(refused) => VaultError::Refused(refused.clone()),
            None => VaultError::Io { path, source },
        }
    };
    vault
        .make_dir(&dir)
        .map_err(refused_or_io("Updates".into()))?;
    let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let note = format!(
        "---\nagent: {agent}\nwritten: {}\n---\n{text}\n",
        Utc::now().to_rfc3339()
    );
    for n in 0..100u32 {
        let suffix = if n == 0 {
            String::new()
        } else {
            format!("-{n}")
        };
        let name = format!("{stamp}-{agent}{suffix}.md");
        let rel = format!("Updates/{name}");
        // Whole or not at all, durable, and create-only: a name taken (a note of the same
        // millisecond) is never replaced; the next suffix is tried.
        match vault.write_new_file(&dir.join(&name), note.as_bytes()) {
            Ok(()) => return Ok(rel),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(refused_or_io(rel)(e)),
        }
    }
    Err(VaultError::Io {
        path: "Updates".into(),
        source: std::io::Error::other("too many updates in the same millisecond"),
    })
}

/// The vault-claim MCP server for `state`.
pub fn server(state: VaultClaim) -> ToolServer {
    ToolServer::new("aie-vault-claim", tools(state))
        .with_instructions("The shared vault: list, read and claim tasks (claim-by-move, first mover owns it), release or complete them, and leave notes for the owner.")
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// `Updates` committed as a link to a folder of this machine: the note is refused naming
    /// the link and nothing lands in its target; a plain `Updates` takes the note.
    #[test]
    fn write_update_refuses_linked_updates_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::init(dir.path().join("vault")).expect("init");
        let agent = AgentName::new("cloud").expect("agent");
        let bait = dir.path().join("bait");
        std::fs::create_dir_all(&bait).expect("bait");
        let updates = vault.root().join("Updates");
        std::fs::remove_dir_all(&updates).expect("updates");
        std::os::unix::fs::symlink(&bait, &updates).expect("link");

        let err = write_update(&vault, &agent, "hello").expect_err("refused");
        assert_eq!(
            err.to_string(),
            "`Updates` is a link; aie never writes through links"
        );
        assert_eq!(std::fs::read_dir(&bait).expect("bait").count(), 0);

        std::fs::remove_file(&updates).expect("unlink");
        let rel = write_update(&vault, &agent, "hello").expect("written");
        let text = std::fs::read_to_string(vault.root().join(&rel)).expect("note");
        assert!(text.ends_with("---\nhello\n"), "{text}");
    }
}
