//! `aie serve SERVER`: one server on its own listener.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use aie_shared::{
    HttpOptions, Metrics, Zone, http,
    rmcp::ServerHandler,
    vault::{AgentName, Vault},
};
use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Binds `listen`, naming the address in the error when it is taken or not allowed.
pub async fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen} (is the port in use? pick another with --listen)")
    })
}

/// What the flags every `aie serve SERVER` takes resolve to (`crate::cli::ServerArgs`):
/// flag, else the config file, else the default.
struct Served {
    listen: SocketAddr,
    vault: PathBuf,
    /// The state folder, when one is known (flag, config, `$XDG_STATE_HOME`, `$HOME`).
    state: Option<PathBuf>,
    config: Option<aie_shared::Config>,
    zone: Option<Zone>,
    agent: AgentName,
}

impl Served {
    /// Resolves `args`; `listen` is the server's own default address.
    fn resolve(args: &crate::cli::ServerArgs, listen: SocketAddr) -> anyhow::Result<Self> {
        let config = match &args.config {
            Some(path) => {
                Some(aie_shared::config::load(path).map_err(|errors| anyhow::anyhow!("{errors}"))?)
            }
            None => None,
        };
        let file = config.as_ref();
        let zone = args.zone.or_else(|| file.and_then(|c| c.zone));
        let Some(vault) = args
            .vault
            .clone()
            .or_else(|| file.and_then(|c| c.vault.clone()))
        else {
            anyhow::bail!(
                "which vault? pass --vault DIR (or set AIE_VAULT, or vault = in the config)"
            );
        };
        let state = args
            .state
            .clone()
            .or_else(|| file.and_then(|c| c.state.clone()))
            .or_else(aie_shared::config::default_state_dir);
        let agent = match (&args.agent, file.and_then(|c| c.agent.clone()), zone) {
            (Some(agent), _, _) => agent.clone(),
            (None, Some(agent), _) => agent,
            (None, None, Some(zone)) => AgentName::new(zone.as_str())?,
            (None, None, None) => AgentName::new("local")?,
        };
        Ok(Self {
            listen: args.listen.unwrap_or(listen),
            vault,
            state,
            config,
            zone,
            agent,
        })
    }

    /// The listener's options on `addr`: the config's `[http]` and `[limits]`, else the
    /// defaults.
    fn http_options(&self, addr: SocketAddr) -> HttpOptions {
        match &self.config {
            Some(config) => config.http_options(addr),
            None => HttpOptions::new(addr),
        }
    }

    /// Ready while the vault directory is there to be read.
    fn vault_ready(&self) -> http::ReadyCheck {
        let root = self.vault.clone();
        std::sync::Arc::new(move || {
            let root = root.clone();
            Box::pin(async move {
                match tokio::fs::metadata(&root).await {
                    Ok(meta) if meta.is_dir() => Ok(()),
                    _ => Err(format!("vault {} is not reachable", root.display())),
                }
            })
        })
    }
}

/// Serves `handler` alone on `listen` with `opts` (from the listener's address) until
/// SIGTERM or Ctrl-C, printing the URL first.
async fn serve_alone<H>(
    name: &str,
    handler: H,
    listen: SocketAddr,
    opts: impl FnOnce(SocketAddr) -> HttpOptions,
    metrics: Metrics,
    ready: http::ReadyCheck,
) -> anyhow::Result<ExitCode>
where
    H: ServerHandler + aie_shared::DirectCalls + Clone + Send + Sync + 'static,
{
    let listener = bind(listen).await?;
    let addr = listener.local_addr()?;
    let opts = opts(addr);
    let tls = opts.tls.as_ref().map(http::load_tls).transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let streams = CancellationToken::new();
    let mcp = aie_shared::streamable_http(handler, &opts, metrics.clone(), streams.clone());
    let app = aie_shared::app(mcp, &opts, metrics, ready);
    println!("aie {name}: serving {scheme}://{addr}/mcp");
    http::serve(listener, app, tls, streams, http::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Serves the conformance fixtures.
pub async fn conformance(listen: SocketAddr) -> anyhow::Result<ExitCode> {
    serve_alone(
        "conformance",
        aie_conformance::server(),
        listen,
        HttpOptions::new,
        Metrics::new(),
        http::always_ready(),
    )
    .await
}

/// vault-claim's own address.
const VAULT_CLAIM_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 3101);
/// email-draft's own address.
const EMAIL_DRAFT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 3102);

/// Serves the vault-claim tools. `--state` is accepted and unused: vault-claim keeps
/// nothing in the state folder.
pub async fn vault_claim(args: crate::cli::ServerArgs) -> anyhow::Result<ExitCode> {
    let served = Served::resolve(&args, VAULT_CLAIM_LISTEN)?;
    let opened = Vault::open(&served.vault)
        .with_context(|| "opening the vault (lay one out with `aie vault init --vault DIR`)")?;
    let metrics = Metrics::new();
    let server = aie_vault_claim::server::server(aie_vault_claim::server::VaultClaim::new(
        opened,
        served.agent.clone(),
    ))
    .with_metrics(metrics.clone());
    let ready = served.vault_ready();
    serve_alone(
        "vault-claim",
        server,
        served.listen,
        |addr| served.http_options(addr),
        metrics,
        ready,
    )
    .await
}

/// Serves the gateway alone: the config's and the flags' upstreams (and the vault-claim
/// tools in-process with `--vault`), behind the configured clients' bearer tokens.
pub async fn gateway(args: crate::cli::GatewayArgs) -> anyhow::Result<ExitCode> {
    use crate::gateway::{ClientIdentity, ClientToken, Gateway, gateway_router};
    use aie_shared::config;

    let config = match &args.config {
        Some(path) => Some(config::load(path).map_err(|errors| anyhow::anyhow!("{errors}"))?),
        None => None,
    };
    let mut builder = Gateway::builder();
    for upstream in config.iter().flat_map(|c| c.upstreams.iter()) {
        let headers = upstream
            .headers(|var| std::env::var(var).ok())
            .map_err(anyhow::Error::msg)?;
        builder = builder.upstream_with_headers(
            &upstream.name,
            upstream.url.as_str(),
            upstream.prefix,
            headers,
        );
    }
    for upstream in &args.upstreams {
        builder = builder.upstream(&upstream.name, &upstream.url, upstream.prefix);
    }
    if let Some(vault) = &args.vault {
        let opened = Vault::open(vault)
            .with_context(|| "opening the vault (lay one out with `aie vault init --vault DIR`)")?;
        let server = aie_vault_claim::server::server(aie_vault_claim::server::VaultClaim::new(
            opened,
            args.agent.clone(),
        ));
        builder = builder.in_process("vault", server, false);
    }
    let configured = config.iter().flat_map(|c| c.gateway.clients.iter());
    let mut clients = Vec::new();
    for client in configured {
        let identity = ClientIdentity::new(&client.name, &client.role);
        clients.push(ClientToken::from_sha256_hex(
            identity,
            &client.token_sha256,
        )?);
    }
    if clients.is_empty() {
        let Ok(token) = std::env::var(&args.token_env) else {
            anyhow::bail!(
                "no gateway client: configure [[gateway.clients]] in --config, or put a token in ${}",
                args.token_env
            );
        };
        let identity = ClientIdentity::new("default", aie_shared::policy::DEFAULT_CLIENT_ROLE);
        clients.push(ClientToken::from_token(identity, &token)?);
    }
    let zone = args.zone.or_else(|| config.as_ref().and_then(|c| c.zone));
    if let Some(zone) = zone {
        builder = builder.guard(policy_guard(&args, config.as_ref(), zone).await?);
    }
    let gateway = builder.clients(clients).build().await?;
    let listen = args
        .listen
        .or_else(|| config.as_ref().map(|c| c.listen))
        .unwrap_or(config::DEFAULT_LISTEN);
    let listener = bind(listen).await?;
    let addr = listener.local_addr()?;
    let opts = match &config {
        Some(config) => config.http_options(addr),
        None => HttpOptions::new(addr),
    };
    let streams = CancellationToken::new();
    let metrics = Metrics::new();
    let tls = opts.tls.as_ref().map(http::load_tls).transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let app = gateway_router(&gateway, &opts, metrics, streams.clone());
    for (name, reason) in gateway.down() {
        eprintln!(
            "aie gateway: upstream `{name}` is down ({reason}); its tools appear once it answers"
        );
    }
    println!(
        "aie gateway: serving {scheme}://{addr}/mcp ({} tools)",
        gateway.tool_names().len()
    );
    http::serve(listener, app, tls, streams, http::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// The policy guard for `aie serve gateway --zone`: the config's policy and limits (followed
/// across reloads when there is a config file), the vault's audit log, the state folder's
/// approval ledger.
async fn policy_guard(
    args: &crate::cli::GatewayArgs,
    config: Option<&aie_shared::Config>,
    zone: aie_shared::policy::Zone,
) -> anyhow::Result<crate::gateway::PolicyGuard> {
    use aie_shared::config::{self, ConfigWatcher, Overrides};
    let Some(vault_dir) = &args.vault else {
        anyhow::bail!(
            "--zone {zone} needs --vault DIR: the audit log and the approvals live in the vault"
        );
    };
    let vault = Vault::open(vault_dir)
        .with_context(|| "opening the vault (lay one out with `aie vault init --vault DIR`)")?;
    let state = args
        .state
        .clone()
        .or_else(|| config.and_then(|c| c.state.clone()))
        .or_else(config::default_state_dir)
        .context("no state folder: pass --state DIR (HOME is not set, so there is no default)")?;
    let running = config.cloned().unwrap_or_default();
    let agent = args.agent.clone();
    let guard = tokio::task::spawn_blocking(move || {
        crate::gateway::PolicyGuard::new(&running, zone, vault, &state, agent)
    })
    .await??;
    if let Some(path) = &args.config {
        // Reloads (SIGHUP, or the file changing) swap the policy and limits between calls;
        // a file that does not validate keeps the running ones.
        let watcher = ConfigWatcher::load(path, Overrides::default())
            .await
            .map_err(|errors| anyhow::anyhow!("{errors}"))?;
        guard.follow(watcher.subscribe());
        tokio::spawn(watcher.run(CancellationToken::new()));
    }
    Ok(guard)
}

/// Serves the email-draft tools: the config file's `[email]` section, the flags over it.
/// In the cloud zone any SMTP setting is refused: the cloud never sends.
pub async fn email_draft(args: crate::cli::EmailDraftArgs) -> anyhow::Result<ExitCode> {
    use aie_email_draft::{EmailConfig, EmailDraft, SmtpConfig};
    let served = Served::resolve(&args.server, EMAIL_DRAFT_LISTEN)?;
    let vault = Vault::open(&served.vault)
        .with_context(|| "opening the vault (lay one out with `aie vault init --vault DIR`)")?;
    let state = served
        .state
        .clone()
        .context("no state folder: pass --state DIR (HOME is not set, so there is no default)")?;
    let mut config = EmailConfig::new(served.agent.clone(), &state);
    if let (Some(file), Some(path)) = (&served.config, &args.server.config) {
        config
            .apply_file(&file.email)
            .map_err(|e| anyhow::anyhow!("{}: [email]: {e}", path.display()))?;
        config.max_pending_approvals = file.limits.max_pending_approvals;
    }
    if let Some(dir) = args.maildir {
        config.maildir = Some(dir);
    }
    if let Some(url) = args.smtp {
        let mut smtp = SmtpConfig::new(url);
        // The password lives in the state folder, never in the vault or the URL.
        let default_file = state.join("smtp-password");
        smtp.password_file = config
            .smtp
            .as_ref()
            .and_then(|s| s.password_file.clone())
            .or_else(|| default_file.exists().then_some(default_file));
        smtp.ca_file = args
            .smtp_ca
            .or_else(|| config.smtp.as_ref().and_then(|s| s.ca_file.clone()));
        config.smtp = Some(smtp);
    }
    if served.zone == Some(Zone::Cloud) && config.smtp.is_some() {
        anyhow::bail!(
            "--zone cloud refuses to start with an SMTP server (--smtp or [email] smtp_url): the cloud never sends; move it to the local zone"
        );
    }
    if let Some(from) = args.from {
        config.from = Some(from);
    }
    let transport = config
        .smtp
        .as_ref()
        .map(|s| s.url.server_name())
        .unwrap_or_else(|| {
            aie_email_draft::send::outbox_dir(&state)
                .display()
                .to_string()
        });
    let server = EmailDraft::new(vault, config)?;
    for doubt in server.in_doubt().await {
        eprintln!(
            "aie email-draft: approval {} is in doubt (Message-ID {}): {}; it will not be sent again",
            doubt.approval_id, doubt.message_id, doubt.detail
        );
    }
    println!("aie email-draft: replies go to {transport}");
    let metrics = Metrics::new();
    let ready = served.vault_ready();
    serve_alone(
        "email-draft",
        aie_email_draft::server(server).with_metrics(metrics.clone()),
        served.listen,
        |addr| served.http_options(addr),
        metrics,
        ready,
    )
    .await
}

#[cfg(test)]
mod tests {
    use aie_shared::tools::{ToolSet, nonstandard_formats};

    use super::*;

    /// Every tool of every suite server `aie` serves or hosts declares input and output
    /// schemas with standard JSON Schema formats only (no schemars `uint32`, `int64`...), so
    /// no client's validator warns about them.
    #[test]
    fn every_suite_tool_schema_has_standard_formats_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::init(dir.path().join("vault")).expect("vault");
        let agent = AgentName::new("local").expect("agent");
        let email = aie_email_draft::EmailDraft::new(
            vault.clone(),
            aie_email_draft::EmailConfig::new(agent.clone(), dir.path().join("state")),
        )
        .expect("email-draft");
        let servers: [(&str, ToolSet); 2] = [
            (
                "vault-claim",
                aie_vault_claim::server::tools(aie_vault_claim::server::VaultClaim::new(
                    vault, agent,
                )),
            ),
            ("email-draft", aie_email_draft::server::tools(email)),
        ];
        for (server, tools) in servers {
            let listed = tools.list();
            assert!(!listed.is_empty(), "{server} declares no tool");
            for tool in listed {
                let mut found = nonstandard_formats(&tool.input_schema);
                if let Some(output) = &tool.output_schema {
                    found.extend(nonstandard_formats(output));
                }
                assert!(
                    found.is_empty(),
                    "{server}'s {} has non-standard formats: {found:?}",
                    tool.name
                );
            }
        }
    }
}
