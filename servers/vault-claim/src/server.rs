//! The `vault_*` MCP tools of the contract, over one agent's view of the vault.
//!
//! Every tool runs its filesystem and git work under `spawn_blocking`, so a slow disk or a
//! slow remote never stalls the runtime.

use std::sync::Arc;

use aie_shared::{
    ToolError, ToolOutput, ToolServer, ToolSet, ToolSpec,
    vault::{AgentName, Domain, TaskFilter, TaskFolder, TaskId, Vault, VaultError},
};
use chrono::Utc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the tools act on: the vault and the agent the tools act for.
#[derive(Clone)]
pub struct VaultClaim {
    vault: Vault,
    agent: AgentName,
}

impl VaultClaim {
    /// The tools of `agent` on `vault`.
    pub fn new(vault: Vault, agent: AgentName) -> Self {
        Self { vault, agent }
    }

    /// Runs blocking vault work off the runtime; a vault error becomes the tool's error text.
    async fn blocking<T, F>(&self, work: F) -> Result<T, ToolError>
    where
        T: Send + 'static,
        F: FnOnce(&Vault, &AgentName) -> Result<T, VaultError> + Send + 'static,
    {
        let (vault, agent) = (self.vault.clone(), self.agent.clone());
        match tokio::task::spawn_blocking(move || work(&vault, &agent)).await {
            Ok(result) => result.map_err(tool_error),
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
}

impl ToolOutput for Claimed {
    fn render(&self) -> String {
        if self.claimed {
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
        ToolSpec::draft("vault_claim_task", "Claim a task", "Claims a task by moving it to In_Progress/<agent>/; the first mover owns it. A task another agent holds is refused with that agent's name."),
        move |args: TaskArgs| {
            let st = st.clone();
            async move {
                let id = args.task_id;
                let outcome = st.blocking(move |vault, agent| match vault.claim(&id, agent) {
                    Ok(claim) => Ok(Claimed {
                        task_id: claim.task_id.to_string(),
                        owner: claim.owner.to_string(),
                        claimed: true,
                        lease_until: Some(claim.lease_until.to_rfc3339()),
                    }),
                    Err(VaultError::AlreadyClaimed { owner, .. }) => Ok(Claimed {
                        task_id: id.to_string(),
                        owner: owner.to_string(),
                        claimed: false,
                        lease_until: None,
                    }),
                    Err(e) => Err(e),
                });
                let claimed = outcome.await?;
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
                    .blocking(move |vault, agent| vault.release(&id, agent))
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
                    .blocking(move |vault, agent| vault.complete(&id, agent, note.as_deref()))
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
    set
}

/// Writes `Updates/<time>-<agent>.md`, never replacing an existing note.
fn write_update(vault: &Vault, agent: &AgentName, text: &str) -> Result<String, VaultError> {
    use std::io::Write;
    let dir = vault.root().join("Updates");
    std::fs::create_dir_all(&dir).map_err(|e| VaultError::Io {
        path: "Updates".into(),
        source: e,
    })?;
    let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    for n in 0..100u32 {
        let suffix = if n == 0 {
            String::new()
        } else {
            format!("-{n}")
        };
        let name = format!("{stamp}-{agent}{suffix}.md");
        let path = dir.join(&name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut file) => {
                let note = format!(
                    "---\nagent: {agent}\nwritten: {}\n---\n{text}\n",
                    Utc::now().to_rfc3339()
                );
                let rel = format!("Updates/{name}");
                file.write_all(note.as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| VaultError::Io {
                        path: rel.clone(),
                        source: e,
                    })?;
                return Ok(rel);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(VaultError::Io {
                    path: format!("Updates/{name}"),
                    source: e,
                });
            }
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
