//! The `aie` command line.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use aie_shared::vault::AgentName;

use clap::{Parser, Subcommand};

/// aie: MCP servers that let an AI employee work around the clock without ever acting
/// behind its owner's back.
#[derive(Debug, Parser)]
#[command(name = "aie", version, about = "aie: MCP servers that let an AI employee work around the clock without ever acting behind its owner's back.", long_about = None)]
pub struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "AIE_LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the self-contained demo on embedded defaults and print its timeline.
    Demo,
    /// Run one zone's stack (the gateway and the zone's servers) until stopped.
    Up(Box<crate::up::UpArgs>),
    /// Run one server alone on its own listener.
    Serve {
        /// Which server.
        #[command(subcommand)]
        server: ServeTarget,
    },
    /// Vault maintenance.
    Vault {
        /// The vault directory.
        #[arg(long, global = true, env = "AIE_VAULT")]
        vault: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
        /// What to do.
        #[command(subcommand)]
        action: VaultAction,
    },
    /// The owner's decisions on approval requests (local machine only).
    Approvals {
        /// The vault directory.
        #[arg(long, global = true, env = "AIE_VAULT")]
        vault: Option<PathBuf>,
        /// The local state folder (ledger and key); default `$XDG_STATE_HOME/aie`, else
        /// `~/.local/state/aie`.
        #[arg(long, global = true, env = "AIE_STATE")]
        state: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
        /// What to do.
        #[command(subcommand)]
        action: ApprovalsAction,
    },
    /// The audit log.
    Audit {
        /// The vault directory.
        #[arg(long, global = true, env = "AIE_VAULT")]
        vault: Option<PathBuf>,
        /// The local state folder, whose head file also catches a cut-off log.
        #[arg(long, global = true, env = "AIE_STATE")]
        state: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
        /// What to do.
        #[command(subcommand)]
        action: AuditAction,
    },
    /// The config file: validate it, print its schema.
    Config {
        /// What to do.
        #[command(subcommand)]
        action: ConfigAction,
    },
}

/// `aie approvals` actions.
#[derive(Debug, Subcommand)]
pub enum ApprovalsAction {
    /// The requests waiting for a decision, one a line, id first.
    List,
    /// One request: the exact payload that would run, field by field, its payload_sha256
    /// (what `approve --sha256` takes), look-alike warnings, and what the ledger says.
    Show {
        /// The approval id.
        id: String,
    },
    /// Approve a request: it may then run once, exactly as `show` printed it.
    Approve {
        /// The approval id.
        id: String,
        /// The first 8 or more hex digits of the payload_sha256 that `show ID` printed: only
        /// that payload is approved. Without it, on a terminal, the payload is printed and you
        /// are asked; with no terminal, it is refused.
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
    },
    /// Reject a request.
    Reject {
        /// The approval id.
        id: String,
        /// Why, recorded in the ledger.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// `aie audit` actions.
#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Check every agent's audit chain; names the first broken record and exits 1.
    Verify,
}

/// `aie config` actions.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate a config file: prints `FILE: ok`, or every error with its line and key and exits 1.
    Check {
        /// The config file, e.g. aie.toml.
        file: PathBuf,
    },
    /// Print the config file's JSON Schema (for editors and CI).
    Schema,
}

/// `aie vault` actions.
#[derive(Debug, Subcommand)]
pub enum VaultAction {
    /// Lay out a new vault (folders, .gitignore for secrets, a note for Obsidian users); safe to repeat.
    Init,
    /// Check the vault's invariants; exit 1 when something is wrong.
    Check,
    /// Fix what is safe to fix and list the rest; never deletes anything.
    Repair,
    /// Tasks per state folder and unreadable files.
    Status,
    /// Sync with the git remote now: commit (secrets left out), fetch, merge by task id, push.
    Sync {
        /// The remote, for a vault that has none configured yet (path, file://, ssh:// or https://).
        #[arg(long)]
        remote: Option<String>,
        /// The agent whose claims this replica makes.
        #[arg(long, value_parser = parse_agent)]
        agent: Option<AgentName>,
        /// The zone this replica belongs to (`local` writes Dashboard.md).
        #[arg(long, default_value = "local")]
        zone: aie_shared::Zone,
    },
}

/// Servers `aie serve` can run.
#[derive(Debug, Subcommand)]
pub enum ServeTarget {
    /// The official MCP conformance suite's fixtures, served by aie's own MCP core.
    Conformance {
        /// Address to listen on; port 0 picks a free port (the URL is printed).
        #[arg(long, default_value = "127.0.0.1:3001", env = "AIE_LISTEN")]
        listen: SocketAddr,
    },
    /// The vault-claim server: list, read, claim, release and complete tasks; notes to the
    /// owner. Listens on 127.0.0.1:3101 unless --listen says.
    VaultClaim(Box<ServerArgs>),
    /// The gateway alone, fronting MCP servers behind bearer tokens (interim: `aie up`
    /// starts it with the whole stack).
    Gateway(Box<GatewayArgs>),

    /// The email-draft server: new mail becomes tasks, replies are drafted for approval and
    /// sent once approved, at most once.
    EmailDraft(Box<EmailDraftArgs>),
}

/// The flags every `aie serve SERVER` takes (`specs/up.md`, "One server alone"); a flag a
/// server has no use for is accepted, and its help says so.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on; port 0 picks a free port (the URL is printed). Default: the
    /// server's own port (vault-claim 3101, email-draft 3102); the config's `listen` is the
    /// gateway's, never a server's.
    #[arg(long, env = "AIE_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The vault directory. Default: the config's `vault`.
    #[arg(long, env = "AIE_VAULT", value_name = "DIR")]
    pub vault: Option<PathBuf>,
    /// The local state folder (never inside the vault). email-draft keeps its IMAP
    /// positions, send journal, `.eml` outbox and password files there; vault-claim keeps
    /// nothing there (accepted for one command line across servers). Default: the config's
    /// `state`, else $XDG_STATE_HOME/aie, else ~/.local/state/aie.
    #[arg(long, env = "AIE_STATE", value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// The config file: its `[http]` and `[limits]` shape the listener (hosts, origins, body
    /// size, sessions, requests in service), its `vault`, `state`, `zone` and `agent` are
    /// the defaults of these flags, and a server reads its own section (email-draft:
    /// `[email]`).
    #[arg(long, env = "AIE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The zone the server runs in (cloud|local): the default agent is the zone's name, and
    /// email-draft in the cloud refuses any SMTP setting (the cloud never sends). Default:
    /// the config's `zone`.
    #[arg(long, env = "AIE_ZONE", value_name = "ZONE")]
    pub zone: Option<aie_shared::policy::Zone>,
    /// The agent the server acts for (its folder under In_Progress/, its approval
    /// requests' `requested_by`). Default: the config's `agent`, else the zone's name, else
    /// `local`.
    #[arg(long, env = "AIE_AGENT", value_name = "NAME", value_parser = parse_agent)]
    pub agent: Option<AgentName>,
}

/// `aie serve email-draft` flags; each overrides the config file's `[email]` section.
#[derive(Debug, clap::Args)]
pub struct EmailDraftArgs {
    /// The flags every server takes. Listens on 127.0.0.1:3102 unless --listen says.
    #[command(flatten)]
    pub server: ServerArgs,
    /// A Maildir whose new/ holds new mail, as mbsync or offlineimap leave it.
    #[arg(long, env = "AIE_MAILDIR")]
    pub maildir: Option<PathBuf>,
    /// Where approved replies go: smtp://host:port (plain), smtp://host:port?tls=required
    /// (STARTTLS) or smtps://host:port (TLS); a user name may stand in it, its password goes in
    /// <state>/smtp-password. Without it, replies are written as .eml files to <state>/outbox/.
    #[arg(long, env = "AIE_SMTP", value_parser = parse_smtp)]
    pub smtp: Option<aie_email_draft::SmtpUrl>,
    /// Extra trusted root certificates (PEM) for the SMTP server, e.g. a private CA.
    #[arg(long)]
    pub smtp_ca: Option<PathBuf>,
    /// The owner's address replies are sent from; default: the address the mail was sent to.
    #[arg(long)]
    pub from: Option<String>,
}

fn parse_smtp(raw: &str) -> Result<aie_email_draft::SmtpUrl, String> {
    raw.parse()
}

/// `aie serve gateway` flags.
#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    /// Address to listen on; port 0 picks a free port (the URL is printed). Default: the
    /// config's `listen`, else 127.0.0.1:8700.
    #[arg(long, env = "AIE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The config file: its `[[upstream]]`s and `[[gateway.clients]]` (flags add to them).
    #[arg(long, env = "AIE_CONFIG")]
    pub config: Option<PathBuf>,
    /// An MCP server to front, `NAME=URL`; its tools are exposed as NAME_TOOL unless
    /// `,prefix=false` follows. Repeat for several.
    #[arg(long = "upstream", value_name = "NAME=URL[,prefix=false]", value_parser = parse_upstream)]
    pub upstreams: Vec<UpstreamFlag>,
    /// Also host the vault-claim tools on this vault, in-process.
    #[arg(long)]
    pub vault: Option<PathBuf>,
    /// The agent the hosted vault-claim tools claim for.
    #[arg(long, default_value = "local", env = "AIE_AGENT", value_parser = parse_agent)]
    pub agent: AgentName,
    /// The environment variable holding the one client's token, used when the config names
    /// no `[[gateway.clients]]`.
    #[arg(long, default_value = "AIE_TOKEN")]
    pub token_env: String,
    /// The zone to enforce (cloud|local): the policy, approvals, limits and audit log apply
    /// (needs --vault). Without it every call is let through (interim test mode).
    #[arg(long, env = "AIE_ZONE")]
    pub zone: Option<aie_shared::policy::Zone>,
    /// The local state folder (approval ledger, audit head, budgets), never inside the vault.
    /// Default: the config's `state`, else $XDG_STATE_HOME/aie, else ~/.local/state/aie.
    #[arg(long, env = "AIE_STATE")]
    pub state: Option<PathBuf>,
}

/// One `--upstream NAME=URL[,prefix=false]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamFlag {
    /// Its name (the tools' prefix).
    pub name: String,
    /// Its MCP endpoint.
    pub url: String,
    /// Whether its tools are exposed as NAME_TOOL.
    pub prefix: bool,
}

fn parse_upstream(raw: &str) -> Result<UpstreamFlag, String> {
    let (name, rest) = raw
        .split_once('=')
        .ok_or("expected NAME=URL[,prefix=false], e.g. fixtures=http://127.0.0.1:3001/mcp")?;
    let mut parts = rest.split(',');
    let url = parts.next().unwrap_or_default().to_owned();
    let mut prefix = true;
    for option in parts {
        match option.trim() {
            "prefix=false" => prefix = false,
            "prefix=true" => prefix = true,
            other => {
                return Err(format!(
                    "unknown upstream option `{other}` (only prefix=true|false)"
                ));
            }
        }
    }
    if name.is_empty() || url.is_empty() {
        return Err("expected NAME=URL[,prefix=false], with neither empty".to_owned());
    }
    Ok(UpstreamFlag {
        name: name.to_owned(),
        url,
        prefix,
    })
}

fn need_vault(vault: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    vault.ok_or_else(|| anyhow::anyhow!("which vault? pass --vault DIR or set AIE_VAULT"))
}

fn need_state(state: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    state
        .or_else(aie_shared::config::default_state_dir)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no state folder: pass --state DIR, or set AIE_STATE, XDG_STATE_HOME or HOME"
            )
        })
}

fn parse_agent(raw: &str) -> Result<AgentName, String> {
    AgentName::new(raw).map_err(|e| e.to_string())
}

/// Parses the arguments, runs the command, and turns every error into one line on stderr
/// and a non-zero exit.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own timeline; services log their life.
    let filter = match cli.command {
        Command::Demo => "warn,rmcp=error",
        _ => aie_shared::telemetry::SERVICE_FILTER,
    };
    aie_shared::telemetry::init(filter, cli.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("aie: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo => crate::demo::run().await,
            Command::Up(args) => crate::up::run(*args).await,
            Command::Serve {
                server: ServeTarget::Conformance { listen },
            } => crate::serve::conformance(listen).await,
            Command::Serve {
                server: ServeTarget::VaultClaim(args),
            } => crate::serve::vault_claim(*args).await,
            Command::Serve {
                server: ServeTarget::Gateway(args),
            } => crate::serve::gateway(*args).await,
            Command::Serve {
                server: ServeTarget::EmailDraft(args),
            } => crate::serve::email_draft(*args).await,
            Command::Vault {
                vault,
                json,
                action,
            } => {
                let Some(dir) = vault else {
                    anyhow::bail!("which vault? pass --vault DIR or set AIE_VAULT");
                };
                match action {
                    VaultAction::Init => crate::vault_cmd::init(&dir),
                    VaultAction::Check => crate::vault_cmd::check(&dir, json),
                    VaultAction::Repair => crate::vault_cmd::repair(&dir, json),
                    VaultAction::Status => crate::vault_cmd::status(&dir, json),
                    VaultAction::Sync {
                        remote,
                        agent,
                        zone,
                    } => {
                        let agent = match agent {
                            Some(agent) => agent,
                            None => parse_agent(&zone.to_string()).map_err(anyhow::Error::msg)?,
                        };
                        crate::vault_cmd::sync(&dir, remote.as_deref(), agent, zone, json)
                    }
                }
            }
            Command::Approvals {
                vault,
                state,
                json,
                action,
            } => {
                let (vault, state) = (need_vault(vault)?, need_state(state)?);
                match action {
                    ApprovalsAction::List => crate::approvals_cmd::list(&vault, &state, json),
                    ApprovalsAction::Show { id } => {
                        crate::approvals_cmd::show(&vault, &state, &id, json)
                    }
                    ApprovalsAction::Approve { id, sha256 } => {
                        crate::approvals_cmd::approve(&vault, &state, &id, sha256.as_deref(), json)
                    }
                    ApprovalsAction::Reject { id, reason } => {
                        crate::approvals_cmd::reject(&vault, &state, &id, reason.as_deref(), json)
                    }
                }
            }
            Command::Audit {
                vault,
                state,
                json,
                action: AuditAction::Verify,
            } => {
                let state = state.or_else(aie_shared::config::default_state_dir);
                crate::approvals_cmd::verify(&need_vault(vault)?, state.as_deref(), json)
            }
            Command::Config { action } => match action {
                ConfigAction::Check { file } => crate::config_cmd::check(&file),
                ConfigAction::Schema => crate::config_cmd::schema(),
            },
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            // An error may quote what came from outside (a file, a header): escaped.
            eprintln!("aie: {}", aie_shared::render::text(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}
