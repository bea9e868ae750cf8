//! The semantic pass: turns the raw file into a [`Config`], checking what a schema cannot
//! (URLs, addresses, hashes, names, cross-references, secrets where they do not belong) and
//! collecting every problem with the key it is about.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    path::{Component, Path, PathBuf},
    str::FromStr,
};

use url::Url;

use super::{
    model::{
        ApprovalsConfig, Config, EmailConfig, GatewayClient, GatewayConfig, GitRemote, HttpConfig,
        ImapConfig, Limits, PaymentsConfig, PolicyConfig, RateLimit, SmtpUrl, SyncConfig, TlsPaths,
        TriageRule, Upstream, WhatsappConfig,
    },
    raw::{
        RawApprovals, RawConfig, RawEmail, RawGateway, RawHttp, RawLimits, RawRateLimit, RawSync,
        RawUpstream,
    },
    structure::{Found, Index, join, parent},
};
use crate::{
    money::{Currency, Money, MoneyError},
    policy::{Policy, Role, SUITE_PREFIXES, SUITE_TOOLS, ToolGlob, builtin_roles},
    vault::AgentName,
};

/// Where errors are collected, with the index that gives each key its line.
pub(crate) struct Ctx<'a> {
    index: &'a Index,
    pub found: Vec<Found>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(index: &'a Index) -> Self {
        Ctx {
            index,
            found: Vec::new(),
        }
    }

    /// Records a problem with `path`, at the line of the key or its nearest written parent.
    fn err(&mut self, path: &str, message: impl Into<String>) {
        let line = self.line(path);
        self.found.push(Found {
            path: path.to_owned(),
            line,
            message: message.into(),
        });
    }

    /// The line `path` (or its nearest parent that is written down) is on.
    pub(crate) fn line(&self, path: &str) -> Option<usize> {
        let mut at = Some(path);
        while let Some(p) = at {
            if let Some(line) = self.index.get(p) {
                return Some(*line);
            }
            at = parent(p);
        }
        None
    }
}

/// Validates `raw`, read from a file in `base`, into a config; problems go to `ctx`. The
/// config returned is only meaningful when `ctx` found nothing.
pub(crate) fn validate(raw: RawConfig, base: &Path, ctx: &mut Ctx<'_>) -> Config {
    let agent = raw.agent.and_then(|a| {
        AgentName::new(a)
            .map_err(|e| ctx.err("agent", e.to_string()))
            .ok()
    });
    let vault = raw.vault.and_then(|p| file_path(ctx, "vault", &p, base));
    let state = raw.state.and_then(|p| file_path(ctx, "state", &p, base));
    if let (Some(vault), Some(state)) = (&vault, &state)
        && lexical(state).starts_with(lexical(vault))
    {
        ctx.err(
            "state",
            format!(
                "is inside the vault ({}); the state folder holds secrets and must never sync: put it outside",
                vault.display()
            ),
        );
    }
    let remote = raw.remote.and_then(|r| match GitRemote::from_str(&r) {
        Ok(remote) => Some(remote.relative_to(base)),
        Err(why) => {
            ctx.err("remote", why);
            None
        }
    });
    let listen = match raw.listen {
        None => super::model::DEFAULT_LISTEN,
        Some(raw) => raw.parse::<SocketAddr>().unwrap_or_else(|e| {
            ctx.err(
                "listen",
                format!("{e}: write IP:PORT, e.g. 127.0.0.1:8700 or [::1]:8700"),
            );
            super::model::DEFAULT_LISTEN
        }),
    };
    let http = http(ctx, raw.http, base);
    let gateway = gateway(ctx, raw.gateway);
    let upstreams = upstreams(ctx, raw.upstream);
    let policy = policy(ctx, raw.policy.tools);
    let limits = limits(ctx, raw.limits);
    let email = email(ctx, raw.email, base, vault.as_deref());
    let whatsapp = WhatsappConfig {
        session_dir: raw
            .whatsapp
            .session_dir
            .and_then(|p| state_path(ctx, "whatsapp.session_dir", p, vault.as_deref())),
        token_file: raw
            .whatsapp
            .token_file
            .and_then(|p| state_path(ctx, "whatsapp.token_file", p, vault.as_deref())),
    };
    let payments = PaymentsConfig {
        api_key_file: raw
            .payments
            .api_key_file
            .and_then(|p| state_path(ctx, "payments.api_key_file", p, vault.as_deref())),
    };
    let sync = sync(ctx, raw.sync);
    let approvals = approvals(raw.approvals);
    Config {
        zone: raw.zone,
        agent,
        vault,
        state,
        remote,
        listen,
        http,
        gateway,
        upstreams,
        policy,
        limits,
        email,
        whatsapp,
        payments,
        sync,
        approvals,
    }
}

/// A path given in the file: relative ones are taken from the file's folder.
fn file_path(ctx: &mut Ctx<'_>, key: &str, path: &Path, base: &Path) -> Option<PathBuf> {
    if path.as_os_str().is_empty() {
        ctx.err(key, "is empty; give a path");
        return None;
    }
    Some(base.join(path))
}

/// `path` with `.` dropped and each `..` taking away the component before it, without
/// asking the filesystem (the folders may not exist yet): for comparing paths only.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                // `/..` is `/`; a leading `..` of a relative path stays.
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(".."),
            },
            other => out.push(other),
        }
    }
    out
}

/// A path inside the state folder (a secret's file): relative ones stay relative to the state
/// folder and may not climb out of it; absolute ones may not be inside the vault.
fn state_path(
    ctx: &mut Ctx<'_>,
    key: &str,
    path: PathBuf,
    vault: Option<&Path>,
) -> Option<PathBuf> {
    if path.as_os_str().is_empty() {
        ctx.err(key, "is empty; give a file in the state folder");
        return None;
    }
    if path.is_relative() && path.components().any(|c| c == Component::ParentDir) {
        ctx.err(
            key,
            "climbs out of the state folder with `..`; secrets stay inside it",
        );
        return None;
    }
    if let Some(vault) = vault
        && path.is_absolute()
        && lexical(&path).starts_with(lexical(vault))
    {
        ctx.err(
            key,
            "is inside the vault, which syncs; keep secrets in the state folder",
        );
        return None;
    }
    Some(path)
}

/// Whether `raw` is 1..=max characters of `[a-z0-9_-]` (or also upper case).
fn is_name(raw: &str, max: usize, upper: bool) -> bool {
    !raw.is_empty()
        && raw.len() <= max
        && raw.chars().all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, '_' | '-')
                || (upper && (c.is_ascii_uppercase() || c == '.'))
        })
}

fn positive(ctx: &mut Ctx<'_>, key: &str, value: Option<u64>, default: u64) -> u64 {
    match value {
        None => default,
        Some(0) => {
            ctx.err(key, "must be at least 1");
            default
        }
        Some(n) => n,
    }
}

fn http(ctx: &mut Ctx<'_>, raw: RawHttp, base: &Path) -> HttpConfig {
    let defaults = HttpConfig::default();
    let mut allowed_hosts = Vec::new();
    for (i, host) in raw.allowed_hosts.into_iter().enumerate() {
        let key = format!("http.allowed_hosts[{i}]");
        let host = host.trim().to_ascii_lowercase();
        let bracketed = host.starts_with('[') && host.ends_with(']');
        if host.is_empty()
            || host.contains("://")
            || host.contains('/')
            || host.contains(char::is_whitespace)
        {
            ctx.err(
                &key,
                "give a host name or IP address alone, e.g. aie.example.com",
            );
        } else if host.contains(':') && !bracketed {
            ctx.err(
                &key,
                "give the host without a port (an IPv6 address in brackets, e.g. [2001:db8::1])",
            );
        } else {
            allowed_hosts.push(host);
        }
    }
    let mut allowed_origins = Vec::new();
    for (i, origin) in raw.allowed_origins.into_iter().enumerate() {
        let key = format!("http.allowed_origins[{i}]");
        match origin_of(&origin) {
            Ok(origin) => allowed_origins.push(origin),
            Err(why) => ctx.err(&key, why),
        }
    }
    let max_body_bytes = positive(
        ctx,
        "http.max_body_bytes",
        raw.max_body_bytes,
        defaults.max_body_bytes as u64,
    );
    let max_body_bytes = usize::try_from(max_body_bytes).unwrap_or_else(|_| {
        ctx.err(
            "http.max_body_bytes",
            "is larger than this machine can address",
        );
        defaults.max_body_bytes
    });
    let request_timeout_secs = positive(
        ctx,
        "http.request_timeout_secs",
        raw.request_timeout_secs,
        defaults.request_timeout_secs,
    );
    let concurrency_limit = positive(
        ctx,
        "http.concurrency_limit",
        raw.concurrency_limit,
        defaults.concurrency_limit as u64,
    );
    let concurrency_limit = usize::try_from(concurrency_limit).unwrap_or(usize::MAX);
    let tls = match (raw.tls_cert, raw.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let cert = file_path(ctx, "http.tls_cert", &cert, base);
            let key = file_path(ctx, "http.tls_key", &key, base);
            cert.zip(key).map(|(cert, key)| TlsPaths { cert, key })
        }
        (Some(_), None) => {
            ctx.err(
                "http.tls_cert",
                "is given without http.tls_key; give both or neither",
            );
            None
        }
        (None, Some(_)) => {
            ctx.err(
                "http.tls_key",
                "is given without http.tls_cert; give both or neither",
            );
            None
        }
    };
    HttpConfig {
        allowed_hosts,
        allowed_origins,
        max_body_bytes,
        request_timeout_secs,
        concurrency_limit,
        tls,
    }
}

/// A browser origin, normalized as browsers send it: `scheme://host[:port]`, lowercase.
fn origin_of(raw: &str) -> Result<String, String> {
    let url = Url::parse(raw.trim()).map_err(|e| format!("{e}: write scheme://host[:port]"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme {}:// is not a web origin; use http:// or https://",
            url.scheme()
        ));
    }
    if url.host_str().is_none() {
        return Err("has no host".to_owned());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(
            "an origin has no path, query or fragment: write scheme://host[:port]".to_owned(),
        );
    }
    Ok(url.origin().ascii_serialization())
}

fn gateway(ctx: &mut Ctx<'_>, raw: RawGateway) -> GatewayConfig {
    let mut roles = builtin_roles();
    for (name, role) in raw.roles {
        let key = join("gateway.roles", &name);
        if !is_name(&name, 64, true) {
            ctx.err(
                &key,
                "a role name is 1 to 64 characters of A-Z a-z 0-9 . _ -",
            );
            continue;
        }
        // Absent or mistyped `classes` was reported by the structural pass.
        let classes: BTreeSet<_> = role.classes.iter().flatten().copied().collect();
        if role.classes.is_some() && classes.is_empty() {
            ctx.err(
                &format!("{key}.classes"),
                "is empty; give the classes the role may use, e.g. [\"read\", \"draft\"]",
            );
        }
        let mut tools = Vec::new();
        let raw_tools = role.tools.unwrap_or_else(|| vec!["*".to_owned()]);
        if raw_tools.is_empty() {
            ctx.err(
                &format!("{key}.tools"),
                "is empty; give the tool patterns the role may use, e.g. [\"vault_*\"], or leave it out for every tool",
            );
        }
        for (i, pattern) in raw_tools.into_iter().enumerate() {
            match ToolGlob::new(pattern) {
                Ok(glob) => tools.push(glob),
                Err(why) => ctx.err(&format!("{key}.tools[{i}]"), why),
            }
        }
        roles.insert(name, Role { classes, tools });
    }
    let mut clients: Vec<GatewayClient> = Vec::new();
    for (i, client) in raw.clients.into_iter().enumerate() {
        let key = format!("gateway.clients[{i}]");
        let name = client.name.filter(|name| {
            if !is_name(name, 64, true) {
                ctx.err(
                    &format!("{key}.name"),
                    "a client name is 1 to 64 characters of A-Z a-z 0-9 . _ -",
                );
                return false;
            }
            if clients.iter().any(|c| &c.name == name) {
                ctx.err(
                    &format!("{key}.name"),
                    format!("client {name} is defined twice; give each client its own name"),
                );
                return false;
            }
            true
        });
        let role = client.role.filter(|role| {
            let ok = roles.contains_key(role);
            if !ok {
                let known: Vec<&str> = roles.keys().map(String::as_str).collect();
                ctx.err(
                    &format!("{key}.role"),
                    format!(
                        "role {role} is not defined; use one of {} or add [gateway.roles.{role}]",
                        known.join(", ")
                    ),
                );
            }
            ok
        });
        let token_sha256 = client.token_sha256.and_then(|hash| {
            let hash = hash.trim().to_ascii_lowercase();
            if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
                ctx.err(
                    &format!("{key}.token_sha256"),
                    format!(
                        "must be 64 hex digits, the SHA-256 of the token (printf %s \"$TOKEN\" | sha256sum); found {} characters",
                        hash.chars().count()
                    ),
                );
                return None;
            }
            if let Some(twin) = clients.iter().find(|c| c.token_sha256 == hash) {
                ctx.err(
                    &format!("{key}.token_sha256"),
                    format!(
                        "is the same token as client {}'s; give each client its own token",
                        twin.name
                    ),
                );
                return None;
            }
            Some(hash)
        });
        if let (Some(name), Some(role), Some(token_sha256)) = (name, role, token_sha256) {
            clients.push(GatewayClient {
                name,
                role,
                token_sha256,
            });
        }
    }
    GatewayConfig { clients, roles }
}

/// Headers the gateway sets itself on every upstream request.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "accept",
    "connection",
    "transfer-encoding",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
];

fn upstreams(ctx: &mut Ctx<'_>, raw: Vec<RawUpstream>) -> Vec<Upstream> {
    let mut out: Vec<Upstream> = Vec::new();
    let mut names = BTreeSet::new();
    for (i, upstream) in raw.into_iter().enumerate() {
        let key = format!("upstream[{i}]");
        let prefix = upstream.prefix.unwrap_or(true);
        let name = upstream.name.filter(|name| {
            if !is_name(name, 24, false) {
                ctx.err(
                    &format!("{key}.name"),
                    "an upstream name is 1 to 24 characters of a-z 0-9 _ -; it becomes its tools' prefix",
                );
                return false;
            }
            if !names.insert(name.clone()) {
                ctx.err(
                    &format!("{key}.name"),
                    format!("upstream {name} is defined twice; give each its own name"),
                );
                return false;
            }
            if prefix && SUITE_PREFIXES.contains(&name.as_str()) {
                ctx.err(
                    &format!("{key}.name"),
                    format!("{name} is the prefix of aie's own tools; pick another name"),
                );
                return false;
            }
            true
        });
        let url = upstream.url.and_then(|raw| {
            let url_key = format!("{key}.url");
            match Url::parse(&raw) {
                Err(e) => {
                    ctx.err(&url_key, e.to_string());
                    None
                }
                Ok(url) if !matches!(url.scheme(), "http" | "https") => {
                    ctx.err(
                        &url_key,
                        format!(
                            "scheme {}:// is not MCP over HTTP; use http:// or https://",
                            url.scheme()
                        ),
                    );
                    None
                }
                Ok(url) if url.password().is_some() => {
                    ctx.err(
                        &url_key,
                        "carries a password; send credentials with headers_from_env instead",
                    );
                    None
                }
                Ok(url) => Some(url),
            }
        });
        let mut headers_from_env = BTreeMap::new();
        for (header, var) in upstream.headers_from_env {
            let header_key = join(&format!("{key}.headers_from_env"), &header);
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                ctx.err(
                    &header_key,
                    format!("{header:?} is not an HTTP header name"),
                );
                continue;
            }
            if RESERVED_HEADERS.contains(&header.to_ascii_lowercase().as_str()) {
                ctx.err(
                    &header_key,
                    format!("the gateway sets {header} itself; leave it out"),
                );
                continue;
            }
            let is_var = var
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !is_var {
                ctx.err(
                    &header_key,
                    "is not an environment variable name: name the variable that holds the value, never the value itself",
                );
                continue;
            }
            headers_from_env.insert(header, var);
        }
        if let (Some(name), Some(url)) = (name, url) {
            out.push(Upstream {
                name,
                url,
                prefix,
                headers_from_env,
            });
        }
    }
    out
}

fn policy(ctx: &mut Ctx<'_>, raw: BTreeMap<String, crate::policy::EffectClass>) -> PolicyConfig {
    let mut tools = BTreeMap::new();
    for (pattern, class) in raw {
        let key = join("policy.tools", &pattern);
        match ToolGlob::new(pattern) {
            Ok(glob) => {
                tools.insert(glob, class);
            }
            Err(why) => ctx.err(&key, why),
        }
    }
    // The suite's own tools keep at least their contract class: lowering one (say
    // email_send to read) would show it in the cloud zone. Blame the entry that wins.
    let pinned = Policy::from_parts(tools.iter().map(|(g, c)| (g.clone(), *c)), BTreeMap::new());
    for (tool, contract) in SUITE_TOOLS {
        if let Some((pattern, class)) = pinned.pinned(tool)
            && class < *contract
        {
            ctx.err(
                &join("policy.tools", pattern),
                format!(
                    "would lower {tool} from {contract} to {class}; aie's own tools keep at least their contract class, so narrow the pattern"
                ),
            );
        }
    }
    PolicyConfig { tools }
}

fn rate_limit(ctx: &mut Ctx<'_>, key: &str, raw: RawRateLimit) -> Option<RateLimit> {
    let requests_per_minute = raw.requests_per_minute?;
    if requests_per_minute == 0 {
        ctx.err(&format!("{key}.requests_per_minute"), "must be at least 1");
        return None;
    }
    let burst = raw.burst.unwrap_or(requests_per_minute);
    if burst == 0 {
        ctx.err(&format!("{key}.burst"), "must be at least 1");
        return None;
    }
    Some(RateLimit {
        requests_per_minute,
        burst,
    })
}

fn limits(ctx: &mut Ctx<'_>, raw: RawLimits) -> Limits {
    let per_client = raw
        .per_client
        .and_then(|r| rate_limit(ctx, "limits.per_client", r));
    let mut per_tool = BTreeMap::new();
    for (pattern, limit) in raw.per_tool {
        let key = join("limits.per_tool", &pattern);
        match ToolGlob::new(pattern) {
            Ok(glob) => {
                if let Some(limit) = rate_limit(ctx, &key, limit) {
                    per_tool.insert(glob, limit);
                }
            }
            Err(why) => ctx.err(&key, why),
        }
    }
    let mut payment_amount_per_day = BTreeMap::new();
    for (code, amount) in raw.payment_amount_per_day {
        let key = join("limits.payment_amount_per_day", &code);
        match Currency::new(&code) {
            Err(MoneyError::NotACode(_)) => ctx.err(
                &key,
                "is not an ISO 4217 currency code: three capital letters, e.g. EUR",
            ),
            Err(e) => ctx.err(&key, e.to_string()),
            Ok(currency) => match Money::parse(&amount, currency) {
                Ok(money) => {
                    payment_amount_per_day.insert(currency, money);
                }
                Err(e) => ctx.err(&key, e.to_string()),
            },
        }
    }
    let defaults = Limits::default();
    let refusal_audit_burst = at_least_one(
        ctx,
        "limits.refusal_audit_burst",
        raw.refusal_audit_burst,
        defaults.refusal_audit_burst,
    );
    let refusal_audit_per_second = at_least_one(
        ctx,
        "limits.refusal_audit_per_second",
        raw.refusal_audit_per_second,
        defaults.refusal_audit_per_second,
    );
    // The structural pass has reported (and pruned) values out of the schema's range.
    let count = |value: Option<u32>, default: usize| {
        value
            .filter(|n| *n >= 1)
            .map_or(default, |n| usize::try_from(n).unwrap_or(usize::MAX))
    };
    Limits {
        per_client,
        per_tool,
        emails_per_hour: raw.emails_per_hour,
        new_recipients_per_day: raw.new_recipients_per_day,
        payments_per_day: raw.payments_per_day,
        payment_amount_per_day,
        refusal_audit_burst,
        refusal_audit_per_second,
        max_sessions: count(raw.max_sessions, defaults.max_sessions),
        max_sessions_per_client: count(
            raw.max_sessions_per_client,
            defaults.max_sessions_per_client,
        ),
        max_in_flight_per_client: count(
            raw.max_in_flight_per_client,
            defaults.max_in_flight_per_client,
        ),
        session_idle_secs: raw
            .session_idle_secs
            .filter(|secs| (10..=86_400).contains(secs))
            .map_or(defaults.session_idle_secs, u64::from),
        max_pending_approvals: count(raw.max_pending_approvals, defaults.max_pending_approvals),
    }
}

/// `value` when it is at least 1, else `default`; 0 is an error at `key`. (The schema's
/// minimum already refuses 0 in the structural pass; this keeps the type honest.)
fn at_least_one(
    ctx: &mut Ctx<'_>,
    key: &str,
    value: Option<u32>,
    default: NonZeroU32,
) -> NonZeroU32 {
    match value.map(NonZeroU32::new) {
        None => default,
        Some(Some(n)) => n,
        Some(None) => {
            ctx.err(key, "must be at least 1");
            default
        }
    }
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One email address, lowercase; `None` (and an error at `key`) when it is not one.
fn address(ctx: &mut Ctx<'_>, key: &str, raw: &str) -> Option<String> {
    let address = raw.trim().to_lowercase();
    let ok = address
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !address.contains(char::is_whitespace);
    if ok {
        Some(address)
    } else {
        ctx.err(key, "give one email address, e.g. boss@example.com");
        None
    }
}

/// One mail domain, lowercase; `None` (and an error at `key`) when it is not one.
fn domain(ctx: &mut Ctx<'_>, key: &str, raw: &str) -> Option<String> {
    let domain = raw.trim().trim_start_matches('.').to_lowercase();
    if domain.is_empty() || domain.contains(['@', '/', ':']) || domain.contains(char::is_whitespace)
    {
        ctx.err(key, "give a domain alone, e.g. example.com");
        return None;
    }
    Some(domain)
}

fn email(ctx: &mut Ctx<'_>, raw: RawEmail, base: &Path, vault: Option<&Path>) -> EmailConfig {
    let maildir = raw
        .maildir
        .and_then(|p| file_path(ctx, "email.maildir", &p, base));
    let smtp_url = raw.smtp_url.and_then(|raw| match SmtpUrl::from_str(&raw) {
        Err(why) => {
            ctx.err("email.smtp_url", why);
            None
        }
        Ok(url) if url.has_password() => {
            ctx.err(
                "email.smtp_url",
                "carries a password; never put one in the config: write it to a file in the state folder and name that file in email.smtp_password_file",
            );
            None
        }
        Ok(url) => Some(url),
    });
    let smtp_password_file = raw
        .smtp_password_file
        .and_then(|p| state_path(ctx, "email.smtp_password_file", p, vault));
    let smtp_ca_file = raw
        .smtp_ca_file
        .and_then(|p| file_path(ctx, "email.smtp_ca_file", &p, base));
    let from = raw.from.and_then(|a| address(ctx, "email.from", &a));
    let vip_senders = raw
        .vip_senders
        .iter()
        .enumerate()
        .filter_map(|(i, a)| address(ctx, &format!("email.vip_senders[{i}]"), a))
        .collect();
    let vip_domains = raw
        .vip_domains
        .iter()
        .enumerate()
        .filter_map(|(i, d)| domain(ctx, &format!("email.vip_domains[{i}]"), d))
        .collect();
    let imap = raw.imap.and_then(|imap| {
        let tls = imap.tls.unwrap_or(true);
        let host = imap.host.filter(|host| {
            let ok = !host.trim().is_empty() && !host.contains(['/', ' ']);
            if !ok {
                ctx.err(
                    "email.imap.host",
                    "give the server's host name, e.g. imap.example.com",
                );
            } else if !tls && !is_loopback_host(host) {
                ctx.err(
                    "email.imap.tls",
                    "false sends the password in the clear; it is accepted only for a server on a loopback address",
                );
            }
            ok
        });
        let user = imap.user.filter(|user| {
            let ok = !user.is_empty();
            if !ok {
                ctx.err("email.imap.user", "is empty; give the login name");
            }
            ok
        });
        let password_file = imap
            .password_file
            .and_then(|p| state_path(ctx, "email.imap.password_file", p, vault));
        let ca_file = imap
            .ca_file
            .and_then(|p| file_path(ctx, "email.imap.ca_file", &p, base));
        let port = imap.port.unwrap_or(if tls { 993 } else { 143 });
        if port == 0 {
            ctx.err("email.imap.port", "must be a port from 1 to 65535");
        }
        Some(ImapConfig {
            host: host?,
            port,
            user: user?,
            password_file: password_file?,
            mailbox: imap.mailbox.unwrap_or_else(|| "INBOX".to_owned()),
            tls,
            ca_file,
        })
    });
    let mut rules: Vec<TriageRule> = Vec::new();
    let mut rule_names = BTreeSet::new();
    for (i, rule) in raw.rules.into_iter().enumerate() {
        let key = format!("email.rules[{i}]");
        if rule.from.is_none()
            && rule.domain.is_none()
            && rule.keywords.is_empty()
            && rule.header.is_none()
        {
            ctx.err(
                &key,
                "matches nothing; give from, domain, keywords or header",
            );
            continue;
        }
        if rule.category.is_none() && rule.priority.is_none() {
            ctx.err(&key, "sets nothing; give category or priority");
            continue;
        }
        let before = ctx.found.len();
        let name = match rule.name {
            None => format!("rule-{}", i + 1),
            Some(name) => {
                if !is_name(&name, 64, false) {
                    ctx.err(
                        &format!("{key}.name"),
                        "a rule name is 1 to 64 characters of a-z 0-9 _ -",
                    );
                } else if !rule_names.insert(name.clone()) {
                    ctx.err(
                        &format!("{key}.name"),
                        format!("rule {name} is defined twice; give each rule its own name"),
                    );
                }
                name
            }
        };
        let from = rule
            .from
            .and_then(|a| address(ctx, &format!("{key}.from"), &a));
        let domain = rule
            .domain
            .and_then(|d| domain(ctx, &format!("{key}.domain"), &d));
        let mut keywords = Vec::new();
        for (j, keyword) in rule.keywords.iter().enumerate() {
            let keyword = keyword.trim().to_lowercase();
            if keyword.is_empty() {
                ctx.err(
                    &format!("{key}.keywords[{j}]"),
                    "is empty; give the text to look for",
                );
            } else {
                keywords.push(keyword);
            }
        }
        let header = rule.header.and_then(|raw| {
            let (name, text) = match raw.split_once(':') {
                Some((name, text)) => (name.trim().to_ascii_lowercase(), Some(text.trim())),
                None => (raw.trim().to_ascii_lowercase(), None),
            };
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                ctx.err(
                    &format!("{key}.header"),
                    "give a header name, optionally with text: `list-unsubscribe` or `precedence: bulk`",
                );
                return None;
            }
            Some(match text {
                Some(text) => format!("{name}: {text}"),
                None => name,
            })
        });
        if let Some(category) = &rule.category
            && !is_name(category, 64, false)
        {
            ctx.err(
                &format!("{key}.category"),
                "a category is 1 to 64 characters of a-z 0-9 _ -",
            );
        }
        if ctx.found.len() == before {
            rules.push(TriageRule {
                name,
                from,
                domain,
                keywords,
                header,
                category: rule.category,
                priority: rule.priority,
            });
        }
    }
    EmailConfig {
        maildir,
        smtp_url,
        smtp_password_file,
        smtp_ca_file,
        from,
        vip_senders,
        vip_domains,
        builtin_rules: raw.builtin_rules.unwrap_or(true),
        imap,
        rules,
    }
}

fn sync(ctx: &mut Ctx<'_>, raw: RawSync) -> SyncConfig {
    let defaults = SyncConfig::default();
    SyncConfig {
        interval_secs: positive(
            ctx,
            "sync.interval_secs",
            raw.interval_secs,
            defaults.interval_secs,
        ),
        lease_minutes: positive(
            ctx,
            "sync.lease_minutes",
            raw.lease_minutes,
            defaults.lease_minutes,
        ),
    }
}

/// `[approvals]`: the structural pass has checked `max_lifetime_hours`' range already.
fn approvals(raw: RawApprovals) -> ApprovalsConfig {
    let defaults = ApprovalsConfig::default();
    ApprovalsConfig {
        accept_hand_moves: raw.accept_hand_moves.unwrap_or(defaults.accept_hand_moves),
        // Out of range was reported (and pruned) by the structural pass; never used anyway.
        max_lifetime_hours: raw
            .max_lifetime_hours
            .filter(|hours| (1..=8760).contains(hours))
            .unwrap_or(defaults.max_lifetime_hours),
    }
}
