//! `aie serve SERVER`: one server on its own listener.

use std::{net::SocketAddr, path::Path, process::ExitCode};

use aie_shared::{
    HttpOptions, Metrics, http,
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

/// Serves `handler` alone on `listen` until SIGTERM or Ctrl-C, printing the URL first.
async fn serve_alone<H>(
    name: &str,
    handler: H,
    listen: SocketAddr,
    ready: http::ReadyCheck,
) -> anyhow::Result<ExitCode>
where
    H: ServerHandler + aie_shared::DirectCalls + Clone + Send + Sync + 'static,
{
    let listener = bind(listen).await?;
    let addr = listener.local_addr()?;
    let opts = HttpOptions::new(addr);
    let streams = CancellationToken::new();
    let metrics = Metrics::new();
    let mcp = aie_shared::streamable_http(handler, &opts, metrics.clone(), streams.clone());
    let app = aie_shared::app(mcp, &opts, metrics, ready);
    println!("aie {name}: serving http://{addr}/mcp");
    http::serve(listener, app, None, streams, http::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Serves the conformance fixtures.
pub async fn conformance(listen: SocketAddr) -> anyhow::Result<ExitCode> {
    serve_alone(
        "conformance",
        aie_conformance::server(),
        listen,
        http::always_ready(),
    )
    .await
}

/// Serves the vault-claim tools for `agent` on `vault`.
pub async fn vault_claim(
    listen: SocketAddr,
    vault: &Path,
    agent: AgentName,
) -> anyhow::Result<ExitCode> {
    let opened = Vault::open(vault)
        .with_context(|| "opening the vault (lay one out with `aie vault init --vault DIR`)")?;
    let root = vault.to_path_buf();
    // Ready while the vault directory is there to be read.
    let ready: http::ReadyCheck = std::sync::Arc::new(move || {
        let root = root.clone();
        Box::pin(async move {
            match tokio::fs::metadata(&root).await {
                Ok(meta) if meta.is_dir() => Ok(()),
                _ => Err(format!("vault {} is not reachable", root.display())),
            }
        })
    });
    let server =
        aie_vault_claim::server::server(aie_vault_claim::server::VaultClaim::new(opened, agent));
    serve_alone("vault-claim", server, listen, ready).await
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
pub async fn email_draft(args: crate::cli::EmailDraftArgs) -> anyhow::Result<ExitCode> {
    use aie_email_draft::{EmailConfig, EmailDraft, SmtpConfig};
    let vault = Vault::open(&args.vault)
        .with_context(|| "opening the vault (lay one out with `aie vault init --vault DIR`)")?;
    let file = match &args.config {
        Some(path) => Some(aie_shared::config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?),
        None => None,
    };
    let state = args
        .state
        .clone()
        .or_else(|| file.as_ref().and_then(|c| c.state.clone()))
        .or_else(aie_shared::config::default_state_dir)
        .context("no state folder: pass --state DIR (HOME is not set, so there is no default)")?;
    let mut config = EmailConfig::new(args.agent.clone(), &state);
    if let (Some(file), Some(path)) = (&file, &args.config) {
        config
            .apply_file(&file.email)
            .map_err(|e| anyhow::anyhow!("{}: [email]: {e}", path.display()))?;
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
    let root = args.vault.clone();
    // Ready while the vault directory is there to be read.
    let ready: http::ReadyCheck = std::sync::Arc::new(move || {
        let root = root.clone();
        Box::pin(async move {
            match tokio::fs::metadata(&root).await {
                Ok(meta) if meta.is_dir() => Ok(()),
                _ => Err(format!("vault {} is not reachable", root.display())),
            }
        })
    });
    println!("aie email-draft: replies go to {transport}");
    serve_alone(
        "email-draft",
        aie_email_draft::server(server),
        args.listen,
        ready,
    )
    .await
}
