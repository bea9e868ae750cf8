//! `aie demo`: the Platinum gate, offline, on temporary folders, in one process.
//!
//! An email arrives while the local machine is offline; the cloud agent fetches it, claims
//! the task, triages it and drafts a reply (an approval request), and syncs, each as a real
//! MCP tool call through the cloud zone's gateway; the local stack comes up and its vault is
//! cloned from the remote; the owner approves through the same code as
//! `aie approvals approve`; the reply is sent with an MCP `email_send` through the local
//! gateway (into the `.eml` outbox, so no mail server is needed); the audit chains verify;
//! the task is in `Done/`. Each step prints one timeline line; exit 0 only if all held.

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Instant,
};

use aie_shared::{
    approvals::{Approvals, ShownHash, local_user},
    audit,
    config::Config,
    policy::{DEFAULT_CLIENT_ROLE, Zone},
    rmcp::{
        ClientLifecycleMode, ClientServiceExt, RoleClient,
        model::{CallToolRequestParams, ClientConfig, JsonObject},
        service::RunningService,
        transport::{
            StreamableHttpClientTransport,
            streamable_http_client::StreamableHttpClientTransportConfig,
        },
    },
    vault::{AgentName, ApprovalId, TaskId},
};
use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::{
    gateway::{ClientIdentity, ClientToken},
    up::{Settings, Stack},
};

/// The body of the reply the agent drafts; the demo finds it in the sent message.
const MARKER: &str = "Thanks, Ada: the invoice is paid. (aie demo marker 7f3c)";

/// Prints one timeline line per step, with the time since the start.
struct Timeline {
    started: Instant,
    failed: usize,
}

impl Timeline {
    /// Runs one step and prints its line; `None` when it failed.
    async fn step<T>(
        &mut self,
        what: &str,
        work: impl Future<Output = anyhow::Result<T>>,
    ) -> Option<T> {
        let result = work.await;
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(value) => {
                println!("{ms:8.1} ms  ok    {what}");
                Some(value)
            }
            Err(e) => {
                self.failed += 1;
                println!("{ms:8.1} ms  FAIL  {what}: {e:#}");
                None
            }
        }
    }

    /// Prints a detail line under the last step.
    fn note(&self, text: &str) {
        println!("                     {text}");
    }
}

/// The demo's folders, removed when dropped.
struct Folders {
    _root: tempfile::TempDir,
    remote: PathBuf,
    maildir: PathBuf,
    cloud_vault: PathBuf,
    cloud_state: PathBuf,
    local_vault: PathBuf,
    local_state: PathBuf,
}

impl Folders {
    fn new() -> anyhow::Result<Self> {
        let root = tempfile::Builder::new()
            .prefix("aie-demo-")
            .tempdir()
            .context("making a temporary folder")?;
        let at = |p: &str| root.path().join(p);
        let folders = Folders {
            remote: at("remote.git"),
            maildir: at("maildir"),
            cloud_vault: at("cloud/vault"),
            cloud_state: at("cloud/state"),
            local_vault: at("local/vault"),
            local_state: at("local/state"),
            _root: root,
        };
        git2::Repository::init_bare(&folders.remote).context("making the bare git remote")?;
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(folders.maildir.join(sub))?;
        }
        Ok(folders)
    }
}

/// Runs the demo.
pub async fn run() -> anyhow::Result<ExitCode> {
    aie_shared::init_crypto();
    let mut t = Timeline {
        started: Instant::now(),
        failed: 0,
    };
    println!(
        "aie demo: an email arrives while local is offline; cloud drafts, the owner approves, local sends\n"
    );
    let outcome = scenario(&mut t).await;
    if let Err(e) = &outcome {
        t.failed += 1;
        let ms = t.started.elapsed().as_secs_f64() * 1000.0;
        println!("{ms:8.1} ms  FAIL  stopped: {e:#}");
    }
    let total = t.started.elapsed().as_secs_f64() * 1000.0;
    if t.failed == 0 {
        println!("\nsummary: every step held ({total:.0} ms)");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\nsummary: {} step(s) failed ({total:.0} ms)", t.failed);
        Ok(ExitCode::FAILURE)
    }
}

/// The settings of one demo stack: its own clone and state folder, a loopback port, one
/// known token, syncs only when asked (so the timeline shows each one).
fn settings(
    zone: Zone,
    vault: &Path,
    state: &Path,
    remote: &Path,
    maildir: Option<&Path>,
    token: &str,
) -> anyhow::Result<Settings> {
    let agent = AgentName::new(zone.as_str()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut config = Config {
        zone: Some(zone),
        agent: Some(agent.clone()),
        ..Config::default()
    };
    config.sync.interval_secs = 3600;
    config.email.maildir = maildir.map(Path::to_path_buf);
    config.email.from = Some("owner@example.com".into());
    let listen: SocketAddr = "127.0.0.1:0".parse()?;
    let client = ClientToken::from_token(ClientIdentity::new("agent", DEFAULT_CLIENT_ROLE), token)?;
    Ok(Settings {
        zone,
        vault: vault.to_path_buf(),
        state: state.to_path_buf(),
        remote: Some(remote.display().to_string()),
        listen,
        agent,
        config,
        clients: vec![client],
        token_file: None,
        config_file: None,
    })
}

/// An MCP client session through a gateway, with its bearer token.
async fn connect(
    url: &str,
    token: &str,
) -> anyhow::Result<RunningService<RoleClient, ClientConfig>> {
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(token);
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    ClientConfig::default()
        .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// Calls `tool` with `args`; its structured result, or its error text as the error.
async fn call(
    client: &RunningService<RoleClient, ClientConfig>,
    tool: &'static str,
    args: Value,
) -> anyhow::Result<Value> {
    let arguments: JsonObject = match args {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    };
    let result = client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(arguments))
        .await
        .with_context(|| format!("{tool}: the call failed"))?;
    let text: String = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join(" ");
    if result.is_error == Some(true) {
        bail!("{tool} answered an error: {text}");
    }
    result
        .structured_content
        .with_context(|| format!("{tool}: no structured result ({text})"))
}

/// The whole story; an `Err` ends it early (each step already printed its line).
async fn scenario(t: &mut Timeline) -> anyhow::Result<()> {
    let Some(dirs) = t
        .step("temporary folders and a bare git remote", async {
            Folders::new()
        })
        .await
    else {
        bail!("no folders");
    };
    let (cloud_token, local_token) = ("demo-cloud-token", "demo-local-token");

    let cloud = t
        .step(
            "cloud stack up (aie up --zone cloud): vault laid out and pushed to the empty remote",
            async {
                let s = settings(
                    Zone::Cloud,
                    &dirs.cloud_vault,
                    &dirs.cloud_state,
                    &dirs.remote,
                    Some(&dirs.maildir),
                    cloud_token,
                )?;
                crate::up::start(s).await
            },
        )
        .await
        .context("the cloud stack did not start")?;
    t.note(&format!("cloud gateway {}", cloud.mcp_url()));

    let outcome = cloud_and_local(t, &dirs, &cloud, cloud_token, local_token).await;
    cloud.stop().await.ok();
    outcome
}

/// Everything after the cloud stack is up.
async fn cloud_and_local(
    t: &mut Timeline,
    dirs: &Folders,
    cloud: &Stack,
    cloud_token: &str,
    local_token: &str,
) -> anyhow::Result<()> {
    t.step(
        "an email arrives in the cloud's maildir (local is offline)",
        async { deliver(&dirs.maildir) },
    )
    .await
    .context("no mail")?;

    let agent = t
        .step(
            "cloud agent connects to the cloud gateway (MCP, bearer token)",
            async {
                let client = connect(&cloud.mcp_url(), cloud_token).await?;
                let tools = client.list_all_tools().await.context("tools/list")?;
                if tools.iter().any(|tool| tool.name == "email_send") {
                    bail!("the cloud lists email_send, an execute tool");
                }
                Ok(client)
            },
        )
        .await
        .context("no cloud client")?;
    t.note("tools/list on cloud: no execute tool (email_send is absent)");

    let task_id = t
        .step(
            "MCP email_fetch: the mail becomes a task in Needs_Action/email/",
            async {
                let out = call(&agent, "email_fetch", json!({})).await?;
                out.pointer("/task_ids/0")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .with_context(|| format!("no new task in {out}"))
            },
        )
        .await
        .context("no task")?;
    t.note(&format!("task {task_id}"));

    t.step(
        "MCP vault_claim_task: claimed by cloud, the claim pushed to the remote",
        async {
            let out = call(&agent, "vault_claim_task", json!({"task_id": task_id})).await?;
            if out["claimed"] != json!(true) || out.get("pending").is_some() {
                bail!("not confirmed: {out}");
            }
            Ok(())
        },
    )
    .await
    .context("no claim")?;

    let triage = t
        .step(
            "MCP email_triage: category and priority by the rules",
            async {
                let out = call(&agent, "email_triage", json!({"task_id": task_id})).await?;
                let text = |key: &str| out[key].as_str().unwrap_or("?").to_owned();
                Ok(format!(
                    "category {}, priority {}",
                    text("category"),
                    text("priority")
                ))
            },
        )
        .await;
    if let Some(triage) = triage {
        t.note(&triage);
    }

    let approval_id = t
        .step(
            "MCP email_draft_reply: a reply filed as an approval request",
            async {
                let out = call(
                    &agent,
                    "email_draft_reply",
                    json!({"task_id": task_id, "body": MARKER}),
                )
                .await?;
                out["approval_id"]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("no approval_id in {out}"))
            },
        )
        .await
        .context("no draft")?;
    t.note(&format!(
        "approval {approval_id} in Pending_Approval/email/"
    ));

    t.step(
        "MCP email_send on cloud is refused (execute belongs to local)",
        async {
            match call(&agent, "email_send", json!({"approval_id": approval_id})).await {
                Ok(out) => bail!("the cloud ran email_send: {out}"),
                Err(_) => Ok(()),
            }
        },
    )
    .await;

    t.step(
        "MCP vault_sync: the draft and the claim reach the remote",
        async {
            let out = call(&agent, "vault_sync", json!({})).await?;
            if let Some(offline) = out["offline"].as_str() {
                bail!("offline: {offline}");
            }
            Ok(())
        },
    )
    .await
    .context("no sync")?;
    let _ = agent.cancel().await;

    let local = t
        .step(
            "local stack up (aie up --zone local): its vault cloned from the remote",
            async {
                let s = settings(
                    Zone::Local,
                    &dirs.local_vault,
                    &dirs.local_state,
                    &dirs.remote,
                    None,
                    local_token,
                )?;
                let stack = crate::up::start(s).await?;
                let pending = dirs
                    .local_vault
                    .join("Pending_Approval/email")
                    .join(format!("{approval_id}.md"));
                if !pending.is_file() {
                    stack.stop().await.ok();
                    bail!("{} did not arrive", pending.display());
                }
                Ok(stack)
            },
        )
        .await
        .context("the local stack did not start")?;
    t.note(&format!("local gateway {}", local.mcp_url()));

    let outcome = local_steps(t, dirs, &local, local_token, &task_id, &approval_id).await;
    local.stop().await.ok();
    outcome?;

    t.step(
        "aie audit verify: every chain intact (cloud's and local's)",
        async {
            for (vault, state) in [
                (&dirs.local_vault, &dirs.local_state),
                (&dirs.cloud_vault, &dirs.cloud_state),
            ] {
                let opened = aie_shared::vault::Vault::open(vault)?;
                let report = audit::verify(&opened, Some(state))?;
                if !report.ok() {
                    bail!("{report}");
                }
            }
            Ok(())
        },
    )
    .await;
    Ok(())
}

/// The local half: approve, send through MCP, check the message, sync, check Done/.
async fn local_steps(
    t: &mut Timeline,
    dirs: &Folders,
    local: &Stack,
    token: &str,
    task_id: &str,
    approval_id: &str,
) -> anyhow::Result<()> {
    t.step(
        "the owner reads the payload and approves that hash (aie approvals show, then approve --sha256, same code)",
        async {
            let id = ApprovalId::new(approval_id).map_err(|e| anyhow::anyhow!("{e}"))?;
            let approvals = Approvals::open(local.replica.vault().clone(), &dirs.local_state)?;
            let shown = approvals.show(&id)?;
            if !shown.warnings.is_empty() {
                bail!("show warns: {}", shown.warnings.join("; "));
            }
            let hash = shown
                .payload_sha256
                .context("the request cannot be read")?;
            approvals.approve(&id, &local_user(), &ShownHash::new(&hash[..12])?)?;
            Ok(())
        },
    )
    .await
    .context("not approved")?;

    let owner = t
        .step("owner's client connects to the local gateway", async {
            connect(&local.mcp_url(), token).await
        })
        .await
        .context("no local client")?;

    t.step(
        "MCP email_send through the local gateway: sent once",
        async {
            let out = call(&owner, "email_send", json!({"approval_id": approval_id})).await?;
            if out["status"] != json!("sent") {
                bail!("status {}", out["status"]);
            }
            let eml = aie_email_draft::send::outbox_dir(&dirs.local_state)
                .join(format!("{approval_id}.eml"));
            let text = std::fs::read_to_string(&eml)
                .with_context(|| format!("reading {}", eml.display()))?;
            if !text.contains("aie demo marker 7f3c") || !text.contains("ada@example.org") {
                bail!("{} lacks the marker body or the recipient", eml.display());
            }
            Ok(())
        },
    )
    .await;

    t.step("MCP email_send again is refused (at most once)", async {
        match call(&owner, "email_send", json!({"approval_id": approval_id})).await {
            Ok(out) => bail!("sent twice: {out}"),
            Err(_) => Ok(()),
        }
    })
    .await;

    t.step(
        "MCP vault_sync on local: Done/ and the logs reach the remote",
        async {
            let out = call(&owner, "vault_sync", json!({})).await?;
            if let Some(offline) = out["offline"].as_str() {
                bail!("offline: {offline}");
            }
            Ok(())
        },
    )
    .await;
    let _ = owner.cancel().await;

    t.step("the task is in Done/", async {
        let id = TaskId::new(task_id).map_err(|e| anyhow::anyhow!("{e}"))?;
        let stored = local.replica.vault().read_task(&id)?;
        if stored.folder != aie_shared::vault::TaskFolder::Done {
            bail!("it is in {}", stored.path);
        }
        Ok(())
    })
    .await;
    Ok(())
}

/// Writes one message into the maildir's `new/`, as a mail fetcher would.
fn deliver(maildir: &Path) -> anyhow::Result<()> {
    let mail = "Message-ID: <invoice-42@example.org>\r\n\
        From: Ada Lovelace <ada@example.org>\r\n\
        To: Owner <owner@example.com>\r\n\
        Subject: Invoice 42 overdue?\r\n\
        Date: Mon, 23 Nov 2026 09:00:00 +0000\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\
        \r\n\
        Hello, could you confirm the invoice 42 payment? Thanks, Ada\r\n";
    let name = "1764000000.demo.aie:2,";
    let tmp = maildir.join("tmp").join(name);
    std::fs::write(&tmp, mail)?;
    // Maildir delivery: written in tmp/, then renamed into new/ whole.
    std::fs::rename(&tmp, maildir.join("new").join("1764000000.demo.aie"))?;
    Ok(())
}
