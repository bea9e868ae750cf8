//! `aie up --zone cloud|local`: one zone's whole stack in one process: the gateway with the
//! zone's servers hosted in-process, the vault kept in step with the other replicas through
//! git, until SIGTERM or Ctrl-C. `specs/up.md` is the prose version.
//!
//! Settings come from the config file, then the flags, then the `AIE_*` variables, each
//! overriding the one before ([`Overrides`]). [`resolve`] turns them into [`Settings`];
//! [`start`] runs a [`Stack`] from them (the demo starts two this way, in one process).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use aie_shared::{
    HttpOptions, Metrics,
    approvals::{Approvals, local_user},
    config::{self, Config, Overrides},
    executor::AuthorizedActions,
    http,
    policy::{DEFAULT_CLIENT_ROLE, Zone, cloud_forbidden_credentials},
    vault::AgentName,
};
use aie_vault_claim::sync::Replica;
use anyhow::{Context, bail};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    gateway::{CallGuard, ClientIdentity, ClientToken, Gateway, PolicyGuard, gateway_router},
    suite::{self, HostContext},
};

/// The file in the state folder holding the gateway token `aie up` made.
pub const TOKEN_FILE: &str = "gateway-token";

/// `aie up` flags. None reads a variable through clap: the `AIE_*` variables override the
/// flags (not the other way round), so they are read by [`Overrides::from_env`].
#[derive(Debug, Clone, Default, clap::Args)]
pub struct UpArgs {
    /// The zone: `cloud` (reads and drafts, 24/7) or `local` (the owner's machine: approves
    /// and sends). Env: AIE_ZONE.
    #[arg(long, value_parser = parse_zone)]
    pub zone: Option<Zone>,
    /// The vault folder; a missing or empty one is cloned from --remote. Env: AIE_VAULT.
    #[arg(long)]
    pub vault: Option<PathBuf>,
    /// The state folder (never inside the vault): tokens, the approval ledger, the send
    /// journal, the .eml outbox. Default: $XDG_STATE_HOME/aie, else ~/.local/state/aie.
    /// Env: AIE_STATE.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// The vault's git remote: a path, file://, ssh:// or https://. Env: AIE_REMOTE.
    #[arg(long, value_name = "GIT_URL")]
    pub remote: Option<String>,
    /// The gateway's address; port 0 picks a free one (the URL is printed). Default: the
    /// config's `listen`, else 127.0.0.1:8700. Env: AIE_LISTEN.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The agent name (its folder under In_Progress/, its audit log). Default: the zone's
    /// name. Env: AIE_AGENT.
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
    /// The config file (TOML; see `aie config schema`). Env: AIE_CONFIG.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// New mail is read from DIR/new (as mbsync or offlineimap leave it). Env: AIE_MAILDIR.
    #[arg(long, value_name = "DIR")]
    pub maildir: Option<PathBuf>,
    /// Local zone: where approved replies go (smtp://host:port, ?tls=required, smtps://);
    /// without it they are written as .eml files to <state>/outbox/. Env: AIE_SMTP.
    #[arg(long, value_name = "URL")]
    pub smtp: Option<String>,
}

fn parse_zone(raw: &str) -> Result<Zone, String> {
    raw.parse()
}

/// Everything a stack needs, resolved: file < flags < environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The zone.
    pub zone: Zone,
    /// The vault folder.
    pub vault: PathBuf,
    /// The state folder.
    pub state: PathBuf,
    /// The vault's git remote, if any.
    pub remote: Option<String>,
    /// The gateway's listen address.
    pub listen: SocketAddr,
    /// The agent.
    pub agent: AgentName,
    /// The whole config, overrides applied.
    pub config: Config,
    /// The clients the gateway lets in.
    pub clients: Vec<ClientToken>,
    /// Where a generated token was stored, to tell the person starting the stack.
    pub token_file: Option<PathBuf>,
    /// The config file, watched for reloads (SIGHUP or a change) of policy and limits.
    pub config_file: Option<PathBuf>,
}

/// Reads the config file, lays the flags and then the `AIE_*` variables over it, and checks
/// what can be checked before anything starts.
pub fn resolve(args: &UpArgs) -> anyhow::Result<Settings> {
    let file = args
        .config
        .clone()
        .or_else(|| std::env::var_os("AIE_CONFIG").map(PathBuf::from));
    let mut config = match &file {
        Some(path) => config::load(path).map_err(|errors| anyhow::anyhow!("{errors}"))?,
        None => Config::default(),
    };
    let flags = Overrides {
        zone: args.zone,
        agent: args
            .agent
            .as_deref()
            .map(|a| AgentName::new(a).map_err(|e| anyhow::anyhow!("--agent {a:?}: {e}")))
            .transpose()?,
        vault: args.vault.clone(),
        state: args.state.clone(),
        remote: args
            .remote
            .as_deref()
            .map(|r| {
                r.parse()
                    .map_err(|e: String| anyhow::anyhow!("--remote {r}: {e}"))
            })
            .transpose()?,
        listen: args.listen,
        maildir: args.maildir.clone(),
        smtp_url: args
            .smtp
            .as_deref()
            .map(|u| {
                u.parse()
                    .map_err(|e: String| anyhow::anyhow!("--smtp {u}: {e}"))
            })
            .transpose()?,
    };
    let env = Overrides::from_env().map_err(|e| anyhow::anyhow!("{e}"))?;
    config.apply_overrides(&flags.then(env));

    let Some(zone) = config.zone else {
        bail!("which zone? pass --zone cloud|local (or set AIE_ZONE, or zone = in the config)");
    };
    let Some(vault) = config.vault.clone() else {
        bail!("which vault? pass --vault DIR (or set AIE_VAULT, or vault = in the config)");
    };
    let state = config
        .state_dir()
        .context("no state folder: pass --state DIR, or set AIE_STATE, XDG_STATE_HOME or HOME")?;
    check_state_outside_vault(&state, &vault)?;
    if zone == Zone::Cloud {
        let forbidden = cloud_forbidden_credentials(&config);
        if !forbidden.is_empty() {
            bail!(
                "--zone cloud refuses to start: the cloud may hold nothing that can execute; move these to the local zone's config: {}",
                forbidden.join("; ")
            );
        }
    }
    let agent = config.agent_name();
    let (clients, token_file) = clients(&config, &state)?;
    Ok(Settings {
        zone,
        vault,
        state,
        remote: config.remote.as_ref().map(|r| r.as_str().to_owned()),
        listen: config.listen,
        agent,
        config,
        clients,
        token_file,
        config_file: file,
    })
}

/// Refuses a state folder inside the vault: what is in the vault syncs, and the state folder
/// holds what must never leave the machine.
pub fn check_state_outside_vault(state: &Path, vault: &Path) -> anyhow::Result<()> {
    let (state_abs, vault_abs) = (absolute(state), absolute(vault));
    if state_abs.starts_with(&vault_abs) {
        bail!(
            "the state folder {} is inside the vault {}: it holds secrets that must never sync; pick a --state outside the vault",
            state.display(),
            vault.display()
        );
    }
    Ok(())
}

/// `path` made absolute with symlinks resolved as far as it exists (it may not exist yet).
fn absolute(path: &Path) -> PathBuf {
    let joined = std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .unwrap_or_else(|_| path.to_path_buf());
    let mut existing = joined.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(canon) = std::fs::canonicalize(existing) {
            return rest.iter().rev().fold(canon, |acc, part| acc.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return joined,
        }
    }
}

/// The gateway's clients: the config's `[[gateway.clients]]`; else the token in `AIE_TOKEN`;
/// else a token made here and kept in `<state>/gateway-token` (0600), whose path is returned.
fn clients(config: &Config, state: &Path) -> anyhow::Result<(Vec<ClientToken>, Option<PathBuf>)> {
    let mut clients = Vec::new();
    for client in &config.gateway.clients {
        let identity = ClientIdentity::new(&client.name, &client.role);
        clients.push(ClientToken::from_sha256_hex(
            identity,
            &client.token_sha256,
        )?);
    }
    if !clients.is_empty() {
        return Ok((clients, None));
    }
    let identity = ClientIdentity::new("default", DEFAULT_CLIENT_ROLE);
    if let Some(token) = std::env::var("AIE_TOKEN").ok().filter(|t| !t.is_empty()) {
        return Ok((vec![ClientToken::from_token(identity, &token)?], None));
    }
    let path = state.join(TOKEN_FILE);
    let token = stored_or_new_token(&path)?;
    Ok((vec![ClientToken::from_token(identity, &token)?], Some(path)))
}

/// The token in `path`, or a new random one written there readable by the owner only; a
/// restart keeps the clients' token.
fn stored_or_new_token(path: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(text) = std::fs::read_to_string(path)
        && !text.trim().is_empty()
    {
        return Ok(text.trim().to_owned());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the state folder {}", dir.display()))?;
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write the gateway token to {}", path.display()))?;
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write the gateway token to {}", path.display()))?;
    Ok(token)
}

/// A running stack: its gateway's address and what the demo and tests look at.
pub struct Stack {
    /// The address the gateway listens on.
    pub addr: SocketAddr,
    /// The vault's replica.
    pub replica: Arc<Replica>,
    /// The tools the gateway exposes (before the guard hides any per client).
    pub tools: Vec<String>,
    /// The suite's servers this zone should host but this build lacks.
    pub missing: Vec<&'static str>,
    /// The config's `[[upstream]]`s it fronts, one line each, for the person starting it.
    pub fronted: Vec<String>,
    /// The upstreams that did not answer at start, with why; their tools appear once they
    /// do.
    pub down: Vec<(String, String)>,
    stop: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    sync_loop: JoinHandle<()>,
}

impl Stack {
    /// The gateway's MCP endpoint.
    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Stops accepting, lets calls in flight finish, stops the sync loop.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        let _ = self.sync_loop.await;
        self.server
            .await
            .context("the gateway task failed")?
            .context("the gateway stopped with an error")
    }

    /// Waits until the listener ends (after [`Stack::stop`] or a signal).
    async fn wait(self) -> anyhow::Result<()> {
        let result = self.server.await;
        self.stop.cancel();
        let _ = self.sync_loop.await;
        result
            .context("the gateway task failed")?
            .context("the gateway stopped with an error")
    }
}

/// Starts a stack: opens (or clones) the vault, hosts the zone's servers behind the gateway,
/// binds the listener and starts the sync loop. Returns once it serves.
pub async fn start(settings: Settings) -> anyhow::Result<Stack> {
    start_with_shutdown(settings, CancellationToken::new()).await
}

/// [`start`], stopping when `stop` is cancelled.
async fn start_with_shutdown(settings: Settings, stop: CancellationToken) -> anyhow::Result<Stack> {
    let Settings {
        zone,
        vault,
        state,
        remote,
        listen,
        agent,
        config,
        clients,
        token_file: _,
        config_file,
    } = settings;
    std::fs::create_dir_all(&state)
        .with_context(|| format!("cannot create the state folder {}", state.display()))?;

    // Hand moves made while the stack was down are adopted before opening the replica
    // commits them (once committed, a move no longer counts as one).
    if zone == Zone::Local && config.approvals.accept_hand_moves {
        let (dir, state, config) = (vault.clone(), state.clone(), config.clone());
        tokio::task::spawn_blocking(move || adopt_hand_moves_in(&dir, &state, &config))
            .await
            .context("adopting hand-moved approvals")?;
    }

    // The replica first: a missing or empty vault is cloned (or laid out and pushed).
    let sync_zone = match zone {
        Zone::Cloud => aie_vault_claim::sync::Zone::Cloud,
        Zone::Local => aie_vault_claim::sync::Zone::Local,
    };
    let lease = chrono::TimeDelta::minutes(i64::try_from(config.sync.lease_minutes).unwrap_or(30));
    let replica = {
        let (dir, url, agent) = (vault.clone(), remote.clone(), agent.clone());
        tokio::task::spawn_blocking(move || {
            Replica::open(&dir, url.as_deref(), agent, sync_zone).map(|r| r.with_lease(lease))
        })
        .await
        .context("opening the vault")?
        .map_err(|e| match &remote {
            Some(url) => anyhow::anyhow!(
                "cannot open the vault {} with remote {url}: {e}",
                vault.display()
            ),
            None => anyhow::anyhow!("cannot open the vault {}: {e}", vault.display()),
        })?
    };
    if zone == Zone::Local && config.approvals.accept_hand_moves {
        install_hand_move_adoption(&replica, &state, &config)?;
    }
    let replica = Arc::new(replica);
    // What the sync refuses from the remote is recorded in this agent's audit log.
    let audit = aie_shared::audit::AuditLog::open(replica.vault(), &state, agent.clone())
        .context("opening the audit log")?;
    replica.set_audit(audit);

    // What the guard authorizes is handed to the executors hosted here through this
    // table, and only through it.
    let actions = AuthorizedActions::new();
    let guard = guard(
        &config,
        config_file.as_deref(),
        zone,
        &replica,
        &state,
        &agent,
        &actions,
    )
    .await?;
    // One registry for the listener and the servers it hosts, so `/metrics` shows their
    // tool errors and limit refusals too.
    let metrics = Metrics::new();
    let replaced = |backend: &str| config.upstreams.iter().any(|u| u.name == backend);
    let approvals = match zone {
        Zone::Local => Some(
            Approvals::open(replica.vault().clone(), &state)
                .with_context(|| format!("opening the approval ledger in {}", state.display()))?
                .with_max_lifetime(config.approvals.max_lifetime()),
        ),
        Zone::Cloud => None,
    };
    let host = HostContext {
        zone,
        agent: agent.clone(),
        state: state.clone(),
        config: Arc::new(config.clone()),
        replica: replica.clone(),
        metrics: metrics.clone(),
        actions,
        approvals,
    };
    let mut builder = Gateway::builder();
    let mut missing = Vec::new();
    for server in suite::in_zone(zone).filter(|s| !replaced(s.backend)) {
        match server.host {
            Some(build) => {
                let hosted = build(host.clone())
                    .await
                    .with_context(|| format!("starting {}", server.name))?;
                builder = builder.in_process(server.backend, hosted, false);
            }
            None => missing.push(server.name),
        }
    }
    let (builder, fronted) = front_upstreams(builder, &config)?;
    let gateway = builder.clients(clients).shared_guard(guard).build().await?;

    let listener = crate::serve::bind(listen).await?;
    let addr = listener.local_addr()?;
    let opts: HttpOptions = config.http_options(addr);
    let tls = opts.tls.as_ref().map(http::load_tls).transpose()?;
    let streams = CancellationToken::new();
    let app = gateway_router(&gateway, &opts, metrics, streams.clone());
    let shutdown = stop.clone().cancelled_owned();
    let server = tokio::spawn(http::serve(listener, app, tls, streams, shutdown));

    let interval = Duration::from_secs(config.sync.interval_secs.max(1));
    let sync_loop = aie_vault_claim::sync::spawn_sync_loop(
        replica.clone(),
        interval,
        stop.clone().cancelled_owned(),
    );
    Ok(Stack {
        addr,
        replica,
        tools: gateway.tool_names(),
        missing,
        fronted,
        down: gateway.down(),
        stop,
        server,
        sync_loop,
    })
}

/// Adds the config's `[[upstream]]`s to `builder`, beside the servers hosted in-process,
/// behind the same guard, approvals and audit. One named like a suite server (`vault`,
/// `email`, `social`, `whatsapp`, `payments`) stands in for it (the caller leaves that
/// server out); the config only accepts such a name with `prefix = false`, so its tools
/// keep the names approvals and policy know. Returns a line per upstream for the person
/// starting the stack.
fn front_upstreams(
    mut builder: crate::gateway::GatewayBuilder,
    config: &Config,
) -> anyhow::Result<(crate::gateway::GatewayBuilder, Vec<String>)> {
    let mut lines = Vec::new();
    for upstream in &config.upstreams {
        let headers = upstream
            .headers(|var| std::env::var(var).ok())
            .map_err(anyhow::Error::msg)?;
        builder = builder.upstream_with_headers(
            &upstream.name,
            upstream.url.as_str(),
            upstream.prefix,
            headers,
        );
        let stands_in = suite::SERVERS.iter().find(|s| s.backend == upstream.name);
        lines.push(match stands_in.map(|s| s.name) {
            Some(server) => format!(
                "upstream `{}` at {} (in place of the in-process {server})",
                upstream.name, upstream.url
            ),
            None => format!("upstream `{}` at {}", upstream.name, upstream.url),
        });
    }
    Ok((builder, lines))
}

/// Adopts the owner's hand moves into `Approved/` of the vault at `dir`, if it exists and
/// is a git clone already (a vault about to be cloned has none); problems are logged, the
/// stack starts anyway (a move not adopted is set aside later, never run).
fn adopt_hand_moves_in(dir: &Path, state: &Path, config: &Config) {
    let ids = match aie_vault_claim::sync::hand_moves(dir) {
        Ok(ids) if ids.is_empty() => return,
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(vault = %dir.display(), error = %e, "cannot look for hand moves into Approved/");
            return;
        }
    };
    let approvals = aie_shared::vault::Vault::open(dir)
        .map_err(anyhow::Error::from)
        .and_then(|vault| Ok(Approvals::open(vault, state)?))
        .map(|a| a.with_max_lifetime(config.approvals.max_lifetime()));
    match approvals {
        Ok(approvals) => adopt_and_log(&approvals, &ids),
        Err(e) => {
            tracing::error!(vault = %dir.display(), error = %e, "hand moves into Approved/ not adopted")
        }
    }
}

/// Makes `replica` adopt the owner's hand moves into `Approved/` before each full commit
/// records them (`[approvals] accept_hand_moves`, local zone).
fn install_hand_move_adoption(
    replica: &Replica,
    state: &Path,
    config: &Config,
) -> anyhow::Result<()> {
    let approvals = Approvals::open(replica.vault().clone(), state)
        .with_context(|| format!("opening the approval ledger in {}", state.display()))?
        .with_max_lifetime(config.approvals.max_lifetime());
    let hook: aie_vault_claim::sync::replica::BeforeCommitHook =
        Box::new(move |ids| adopt_and_log(&approvals, ids));
    if !replica.set_before_commit(hook) {
        bail!("the vault's replica already has a before-commit hook");
    }
    Ok(())
}

/// Adopts the hand moves `ids` as the local user's approvals and logs what became of each.
fn adopt_and_log(approvals: &Approvals, ids: &[aie_shared::vault::ApprovalId]) {
    match approvals.adopt_hand_moves(Zone::Local, &local_user(), ids) {
        Ok(report) => {
            for id in &report.adopted {
                tracing::info!(approval_id = %id, "hand-moved approval adopted");
            }
            for (path, reason) in &report.set_aside {
                tracing::warn!(%path, %reason, "hand-moved approval set aside");
            }
            for (path, problem) in &report.problems {
                tracing::error!(%path, %problem, "hand-moved approval neither adopted nor set aside; it can never run");
            }
        }
        Err(e) => tracing::error!(error = %e, "hand moves into Approved/ not adopted"),
    }
}

/// The gateway's guard for this zone: [`PolicyGuard`] (zones, roles, limits, the owner's
/// approvals, one audit record per call).
async fn guard(
    config: &Config,
    config_file: Option<&Path>,
    zone: Zone,
    replica: &Replica,
    state: &Path,
    agent: &AgentName,
    actions: &AuthorizedActions,
) -> anyhow::Result<Arc<dyn CallGuard>> {
    let guard = PolicyGuard::new(config, zone, replica.vault().clone(), state, agent.clone())?;
    guard.hand_over_to(actions.clone());
    if let Some(path) = config_file {
        // Reloads (SIGHUP, or the file changing) swap the policy and limits between calls; a
        // file that does not validate keeps the running ones. What else the file sets (zone,
        // vault, listen address) applies at the next start.
        let watcher = aie_shared::ConfigWatcher::load(path, aie_shared::Overrides::default())
            .await
            .map_err(|errors| anyhow::anyhow!("{errors}"))?;
        guard.follow(watcher.subscribe());
        tokio::spawn(watcher.run(CancellationToken::new()));
    }
    Ok(Arc::new(guard))
}

/// `aie up`: resolves the settings, starts the stack, prints what it serves, runs until
/// SIGTERM or Ctrl-C.
pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    aie_shared::init_crypto();
    let started = Instant::now();
    let settings = resolve(&args)?;
    let (zone, agent, vault, state) = (
        settings.zone,
        settings.agent.clone(),
        settings.vault.clone(),
        settings.state.clone(),
    );
    let token_file = settings.token_file.clone();
    let stop = CancellationToken::new();
    let stack = start_with_shutdown(settings, stop.clone()).await?;
    if !stack.missing.is_empty() {
        eprintln!(
            "aie up ({zone}): not in this build yet, so not hosted: {}",
            stack.missing.join(", ")
        );
    }
    if let Some(path) = token_file {
        println!(
            "aie up ({zone}): gateway token in {} (send it as `Authorization: Bearer <token>`)",
            path.display()
        );
    }
    let doubts = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || {
            suite::in_doubt(&state, |why| eprintln!("aie up ({zone}): warning: {why}"))
        })
        .await
        .unwrap_or_default()
    };
    for (spec, doubt) in doubts {
        eprintln!(
            "aie up ({zone}): approval {} is IN DOUBT ({} {}): {}; it is never {} again by itself: {}, see `aie approvals show {}`",
            doubt.approval_id,
            spec.labels.effect_id,
            doubt.effect_id,
            doubt.detail,
            spec.labels.done,
            spec.labels.check,
            doubt.approval_id
        );
    }
    let base = format!("http://{}", stack.addr);
    println!(
        "aie up ({zone}): agent {agent}, vault {}, state {}",
        vault.display(),
        state.display()
    );
    println!(
        "aie up ({zone}): serving {base}/mcp ({} tools), {base}/healthz, {base}/readyz, {base}/metrics (ready in {} ms)",
        stack.tools.len(),
        started.elapsed().as_millis()
    );
    // After the line above: the first URL printed is the gateway's.
    for line in &stack.fronted {
        println!("aie up ({zone}): fronting {line}");
    }
    for (name, reason) in &stack.down {
        eprintln!(
            "aie up ({zone}): upstream `{name}` is down ({reason}); its tools appear once it answers"
        );
    }
    tokio::spawn(async move {
        http::shutdown_signal().await;
        stop.cancel();
    });
    stack.wait().await?;
    Ok(ExitCode::SUCCESS)
}
