//! The email-draft server: [`EmailDraft`] (intake, triage, drafting, sending) and its four
//! MCP tools.
//!
//! | tool | class | does |
//! |---|---|---|
//! | `email_fetch {}` | draft | new mail from the Maildir and/or IMAP becomes tasks |
//! | `email_triage {task_id, category?, priority?, reason?}` | draft | rules (or the agent's override) into the task's `triage` |
//! | `email_draft_reply {task_id, body, subject?, to?, cc?}` | draft | an approval request for one reply |
//! | `email_send {approval_id}` | execute | sends exactly the approved reply, once |

use std::sync::Arc;

use aie_shared::{
    ToolError, ToolOutput, ToolServer, ToolSet, ToolSpec,
    approvals::Approvals,
    executor::{Authority, AuthorizedActions},
    vault::{AgentName, ApprovalId, Domain, TaskFolder, TaskId, Vault, VaultError},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::{
    config::EmailConfig,
    draft::{DraftContext, DraftError, Drafted, ReplyArgs, draft_reply},
    intake::{IntakeError, IntakeReport, MailSource, imap, maildir, set_triage},
    send::{InDoubt, SendError, SendOutcome, Sender},
    triage::{Priority, Triage},
};

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The state folder is inside the vault, where sync would carry its secrets away.
    #[error(
        "the state folder {} is inside the vault {}; it holds secrets and the send journal, which must never sync: pick a folder outside the vault",
        state.display(), vault.display()
    )]
    StateInVault {
        /// The state folder.
        state: std::path::PathBuf,
        /// The vault.
        vault: std::path::PathBuf,
    },
    /// The state folder or the send journal cannot be used.
    #[error("state folder {}: {source}", path.display())]
    State {
        /// The file or folder.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// Why a triage could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TriageError {
    /// The vault refused.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The task is not this agent's to rewrite.
    #[error(
        "task `{id}` is {where_}; triage rewrites only a task this agent holds: claim it first (vault_claim_task)"
    )]
    NotHeld {
        /// The task.
        id: TaskId,
        /// Where it is instead.
        where_: String,
    },
    /// Not an email task, or an override that makes no sense.
    #[error("{0}")]
    Invalid(String),
}

/// The server's state: the vault, the settings, the sender.
#[derive(Clone)]
pub struct EmailDraft {
    inner: Arc<Inner>,
}

struct Inner {
    vault: Vault,
    config: EmailConfig,
    sender: Sender,
    // One fetch at a time, so two calls never read the same new files.
    intake: Mutex<()>,
}

impl EmailDraft {
    /// The server on `vault` with `config`, alone (`aie serve email-draft`): `email_send`
    /// runs an approval from `Approved/`, checked against the approval ledger of the state
    /// folder when it holds one. Checks the state folder and reads the send journal,
    /// reporting approvals in doubt in the log.
    pub fn new(vault: Vault, config: EmailConfig) -> Result<Self, SetupError> {
        let authority = Authority::Vault {
            vault: vault.clone(),
            state_dir: config.state_dir.clone(),
        };
        Self::with_authority(vault, config, authority, None)
    }

    /// The server hosted in-process behind the gateway (`aie up`): `email_send` runs only
    /// the payload the gateway's guard authorized and handed over in `actions`, never a
    /// second read of the file; `approvals` (the local gateway's ledger; none in the cloud)
    /// is where the send journal settles what it proves (`Sender::reconcile`), as the
    /// config's agent.
    pub fn hosted(
        vault: Vault,
        config: EmailConfig,
        actions: AuthorizedActions,
        approvals: Option<Approvals>,
    ) -> Result<Self, SetupError> {
        let ledger = approvals.map(|a| (a, config.agent.clone()));
        Self::with_authority(vault, config, Authority::Gateway(actions), ledger)
    }

    fn with_authority(
        vault: Vault,
        config: EmailConfig,
        authority: Authority,
        ledger: Option<(Approvals, AgentName)>,
    ) -> Result<Self, SetupError> {
        let state = &config.state_dir;
        std::fs::create_dir_all(state).map_err(|source| SetupError::State {
            path: state.clone(),
            source,
        })?;
        let canon =
            |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        if canon(state).starts_with(canon(vault.root())) {
            return Err(SetupError::StateInVault {
                state: state.clone(),
                vault: vault.root().to_path_buf(),
            });
        }
        let mut sender = Sender::new(&config, authority).map_err(|source| SetupError::State {
            path: state.join(crate::send::JOURNAL.file),
            source,
        })?;
        if let Some((approvals, agent)) = ledger {
            sender = sender.with_ledger(approvals, agent);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                vault,
                config,
                sender,
                intake: Mutex::new(()),
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &EmailConfig {
        &self.inner.config
    }

    /// The vault.
    pub fn vault(&self) -> &Vault {
        &self.inner.vault
    }

    /// The sender (transport and journal).
    pub fn sender(&self) -> &Sender {
        &self.inner.sender
    }

    /// Takes in new mail from every configured source.
    pub async fn fetch(&self) -> Result<FetchOutput, IntakeError> {
        let _one_at_a_time = self.inner.intake.lock().await;
        let config = &self.inner.config;
        if config.maildir.is_none() && config.imap.is_none() {
            return Err(IntakeError::NoSource);
        }
        let limits = maildir::IntakeLimits {
            max_message_bytes: config.max_message_bytes,
            max_body_bytes: config.max_body_bytes,
        };
        let mut out = FetchOutput::default();
        let mut first_error = None;
        let mut failed_sources = 0;
        if let Some(dir) = &config.maildir {
            out.sources.push(format!("maildir {}", dir.display()));
            let (vault, dir, rules, limits) = (
                self.inner.vault.clone(),
                dir.clone(),
                config.rules.clone(),
                limits.clone(),
            );
            let result =
                tokio::task::spawn_blocking(move || maildir::fetch(&vault, &dir, &rules, &limits))
                    .await
                    .map_err(|e| IntakeError::Io {
                        path: config.state_dir.clone(),
                        source: std::io::Error::other(e.to_string()),
                    })?;
            match result {
                Ok(report) => out.report.merge(report),
                Err(e) => {
                    out.report.fail(e.to_string());
                    failed_sources += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(account) = &config.imap {
            out.sources.push(format!(
                "imap {}@{}:{}/{}",
                account.user, account.host, account.port, account.mailbox
            ));
            match imap::fetch(
                &self.inner.vault,
                account,
                &config.state_dir,
                &config.rules,
                &limits,
            )
            .await
            {
                Ok(report) => out.report.merge(report),
                Err(e) => {
                    out.report.fail(e.to_string());
                    failed_sources += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        // Every source failed: the caller gets the reason, not a report of nothing.
        let sources = usize::from(config.maildir.is_some()) + usize::from(config.imap.is_some());
        if let (true, Some(e)) = (failed_sources == sources, first_error) {
            return Err(e);
        }
        Ok(out)
    }

    /// Triage by the rules, or the agent's override, written into a task this agent holds.
    pub async fn triage(&self, args: TriageArgs) -> Result<TriageOutput, TriageError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || triage_task(&inner, args))
            .await
            .map_err(|e| TriageError::Invalid(format!("internal error: {e}")))?
    }

    /// Drafts a reply and files its approval request.
    pub async fn draft_reply(&self, args: ReplyArgs) -> Result<Drafted, DraftError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let ctx = DraftContext {
                vault: &inner.vault,
                agent: &inner.config.agent,
                from: inner.config.from.as_deref(),
                ttl: inner.config.approval_ttl,
                max_pending: inner.config.max_pending_approvals,
            };
            draft_reply(&ctx, args)
        })
        .await
        .map_err(|e| DraftError::BadField(format!("internal error: {e}")))?
    }

    /// Sends an approved reply, at most once.
    pub async fn send(&self, approval_id: &ApprovalId) -> Result<SendOutcome, SendError> {
        self.inner.sender.send(approval_id).await
    }

    /// Approvals whose messages may or may not have been delivered.
    pub async fn in_doubt(&self) -> Vec<InDoubt> {
        self.inner.sender.in_doubt()
    }
}

/// Rewrites the `triage` of a task held by this server's agent. Blocking.
fn triage_task(inner: &Inner, args: TriageArgs) -> Result<TriageOutput, TriageError> {
    let stored = inner.vault.read_task(&args.task_id)?;
    let held_here = stored.folder == TaskFolder::InProgress
        && stored.holder.as_ref() == Some(&inner.config.agent);
    if !held_here {
        let where_ = match (&stored.folder, &stored.holder) {
            (TaskFolder::InProgress, Some(agent)) => format!("claimed by agent `{agent}`"),
            (folder, _) => format!("in {folder}"),
        };
        return Err(TriageError::NotHeld {
            id: args.task_id,
            where_,
        });
    }
    let mut task = stored.task;
    if task.meta.domain != Domain::Email {
        return Err(TriageError::Invalid(format!(
            "task `{}` is a {} task, not an email",
            task.meta.id, task.meta.domain
        )));
    }
    let source = MailSource::from_task(&task).map_err(TriageError::Invalid)?;
    let mut triage = inner
        .config
        .rules
        .apply(&source.triage_input(if source.rejected.is_some() {
            ""
        } else {
            &task.body
        }));
    let overridden = args.category.is_some() || args.priority.is_some();
    if let Some(category) = &args.category {
        let ok = !category.is_empty()
            && category.len() <= 64
            && category
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok {
            return Err(TriageError::Invalid(format!(
                "category {category:?}: 1 to 64 characters of a-z 0-9 _ -"
            )));
        }
        triage.category = category.clone();
    }
    if let Some(priority) = args.priority {
        triage.priority = priority;
    }
    if overridden {
        let why = args
            .reason
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .unwrap_or("no reason given");
        triage.reasons.insert(
            0,
            format!(
                "override by agent {}: category {}, priority {} ({})",
                inner.config.agent,
                triage.category,
                triage.priority,
                why.replace(['\r', '\n'], " ")
            ),
        );
    }
    set_triage(&mut task.meta.extra, &triage).map_err(TriageError::Invalid)?;
    let text = task.render().map_err(TriageError::Invalid)?;
    let path = inner
        .vault
        .in_progress_dir(&inner.config.agent)
        .join(task.meta.id.file_name());
    // The file sits in this agent's own In_Progress folder, so replacing it races no one.
    // Never through a link (`specs/vault.md`).
    inner
        .vault
        .write_replacing_file(&path, text.as_bytes())
        .map_err(|source| VaultError::Io {
            path: stored.path.clone(),
            source,
        })?;
    Ok(TriageOutput {
        task_id: task.meta.id.to_string(),
        path: stored.path,
        triage,
    })
}

/// `email_fetch` arguments: none.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchArgs {}

/// `email_fetch` result.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct FetchOutput {
    /// The sources read.
    pub sources: Vec<String>,
    /// What became of the mail.
    #[serde(flatten)]
    pub report: IntakeReport,
}

impl ToolOutput for FetchOutput {
    fn render(&self) -> String {
        let r = &self.report;
        let mut out = format!(
            "{} new task(s) ({} rejected), {} duplicate(s), {} failed, from {}\n",
            r.new,
            r.rejected,
            r.duplicates,
            r.failed,
            self.sources.join(" and ")
        );
        for id in &r.task_ids {
            out.push_str(&format!("new: {id}\n"));
        }
        for e in &r.errors {
            out.push_str(&format!("failed: {e}\n"));
        }
        out
    }
}

/// `email_triage` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriageArgs {
    /// The email task, held by this agent (claim it first).
    pub task_id: TaskId,
    /// Override the category (`invoice`, `lead`, `support`, `newsletter`, `spam`, `other`, or your own `[a-z0-9_-]`).
    #[serde(default)]
    pub category: Option<String>,
    /// Override the priority.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Why you override the rules; recorded in the reasons.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `email_triage` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TriageOutput {
    /// The task.
    pub task_id: String,
    /// Its file, relative to the vault root.
    pub path: String,
    /// The triage written.
    #[serde(flatten)]
    pub triage: Triage,
}

impl ToolOutput for TriageOutput {
    fn render(&self) -> String {
        let mut out = format!(
            "{}: category {}, priority {}\n",
            self.task_id, self.triage.category, self.triage.priority
        );
        for r in &self.triage.reasons {
            out.push_str(&format!("- {r}\n"));
        }
        out
    }
}

impl ToolOutput for Drafted {
    fn render(&self) -> String {
        format!(
            "approval request {} filed at {}: reply to {} with subject {:?} (Message-ID {}), valid until {}; it is sent only after the owner approves it",
            self.approval_id,
            self.path,
            self.to.join(", "),
            self.subject,
            self.message_id,
            self.expires_at
        )
    }
}

/// `email_send` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendArgs {
    /// The approved reply's approval id (its file is in `Approved/`).
    pub approval_id: ApprovalId,
}

impl ToolOutput for SendOutcome {
    fn render(&self) -> String {
        let mut out = format!(
            "{} {} ({}) via {}: {}\n",
            self.approval_id, self.status, self.message_id, self.transport, self.detail
        );
        for d in &self.in_doubt {
            out.push_str(&format!(
                "in doubt: {} ({}) since {}: {}\n",
                d.approval_id, d.message_id, d.since, d.detail
            ));
        }
        out
    }
}

/// The four email tools over `state`.
pub fn tools(state: EmailDraft) -> ToolSet {
    let mut set = ToolSet::new();

    let st = state.clone();
    set.add(
        ToolSpec::draft(
            "email_fetch",
            "Fetch new mail",
            "Reads new mail from the configured Maildir and/or IMAP mailbox; each mail becomes one triaged task in Needs_Action/email/ (a mail seen before is counted as a duplicate). Returns counts and the new task ids.",
        ),
        move |_: FetchArgs| {
            let st = st.clone();
            async move { st.fetch().await.map_err(|e| ToolError::Failed(e.to_string())) }
        },
    );

    let st = state.clone();
    set.add(
        ToolSpec::draft(
            "email_triage",
            "Triage a mail",
            "Applies the owner's triage rules to an email task this agent holds and writes category, priority and the reason each rule fired into its front matter. Pass category and/or priority to override the rules (with a reason).",
        ),
        move |args: TriageArgs| {
            let st = st.clone();
            async move {
                st.triage(args).await.map_err(|e| match e {
                    TriageError::Invalid(why) => ToolError::InvalidArguments(why),
                    other => ToolError::Failed(other.to_string()),
                })
            }
        },
    );

    let st = state.clone();
    set.add(
        ToolSpec::draft(
            "email_draft_reply",
            "Draft a reply",
            "Builds a reply to an email task (Re: subject, In-Reply-To and References threading, recipients from Reply-To else From) and files it as an approval request in Pending_Approval/email/. Nothing is sent until the owner approves it.",
        ),
        move |args: ReplyArgs| {
            let st = st.clone();
            async move {
                st.draft_reply(args).await.map_err(|e| match e {
                    DraftError::Bound(refused) => refused,
                    DraftError::BadAddress { .. } | DraftError::BadField(_) | DraftError::NoRecipient => {
                        ToolError::InvalidArguments(e.to_string())
                    }
                    other => ToolError::Failed(other.to_string()),
                })
            }
        },
    );

    let st = state;
    set.add(
        ToolSpec::execute(
            "email_send",
            "Send an approved reply",
            "Sends exactly the reply approved under approval_id, at most once. An error starting with `not sent:` means nothing left (the approval stays unused); one starting with `in doubt:` means the message may have left and will not be sent again by itself.",
        ),
        move |args: SendArgs| {
            let st = st.clone();
            async move {
                st.send(&args.approval_id).await.map_err(|e| match e {
                    // Nothing left: certified in the result, so the approval stays usable.
                    SendError::NotSent(_) => ToolError::NotExecuted(e.to_string()),
                    // It may have left: marked, so the approval is left in doubt for the owner.
                    SendError::InDoubt(_) => ToolError::InDoubt(e.to_string()),
                })
            }
        },
    );
    set
}

/// The email-draft MCP server for `state`.
pub fn server(state: EmailDraft) -> ToolServer {
    ToolServer::new("aie-email-draft", tools(state)).with_instructions(
        "Email: fetch new mail into tasks (email_fetch), claim a task, triage it (email_triage), draft a reply as an approval request (email_draft_reply). email_send sends a reply only after the owner approved it, and never twice.",
    )
}
