//! The validated config: every value checked, every default filled in, relative paths made
//! absolute. What the rest of aie reads.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    num::NonZeroU32,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize, Serializer};
use url::Url;

use crate::{
    http::{HttpOptions, TlsFiles},
    money::{Currency, Money},
    policy::{EffectClass, Role, ToolGlob, Zone, builtin_roles},
    vault::AgentName,
};

/// The gateway's listen address when nothing sets one.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8700);

/// A validated aie configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Where this stack runs; `None` until a file, flag or variable says.
    pub zone: Option<Zone>,
    /// The agent name; [`Config::agent_name`] fills in the default.
    pub agent: Option<AgentName>,
    /// The vault folder.
    pub vault: Option<PathBuf>,
    /// The state folder; [`Config::state_dir`] fills in the default.
    pub state: Option<PathBuf>,
    /// The vault's git remote.
    pub remote: Option<GitRemote>,
    /// The gateway's listen address.
    pub listen: SocketAddr,
    /// HTTP listener settings.
    pub http: HttpConfig,
    /// Clients and roles.
    pub gateway: GatewayConfig,
    /// Fronted MCP servers.
    pub upstreams: Vec<Upstream>,
    /// Pinned tool classes.
    pub policy: PolicyConfig,
    /// Rate limits and effect budgets.
    pub limits: Limits,
    /// Mail settings.
    pub email: EmailConfig,
    /// WhatsApp settings.
    pub whatsapp: WhatsappConfig,
    /// Payment settings.
    pub payments: PaymentsConfig,
    /// Vault sync settings.
    pub sync: SyncConfig,
    /// The owner's approvals.
    pub approvals: ApprovalsConfig,
}

impl Default for Config {
    /// The config of an empty file.
    fn default() -> Self {
        Config {
            zone: None,
            agent: None,
            vault: None,
            state: None,
            remote: None,
            listen: DEFAULT_LISTEN,
            http: HttpConfig::default(),
            gateway: GatewayConfig::default(),
            upstreams: Vec::new(),
            policy: PolicyConfig::default(),
            limits: Limits::default(),
            email: EmailConfig::default(),
            whatsapp: WhatsappConfig::default(),
            payments: PaymentsConfig::default(),
            sync: SyncConfig::default(),
            approvals: ApprovalsConfig::default(),
        }
    }
}

impl Config {
    /// The listener options for a listener on `listen`, from `[http]` and the bounds in
    /// `[limits]`.
    pub fn http_options(&self, listen: SocketAddr) -> HttpOptions {
        let mut options = HttpOptions::new(listen);
        options.allowed_hosts = self.http.allowed_hosts.clone();
        options.allowed_origins = self.http.allowed_origins.clone();
        options.max_body_bytes = self.http.max_body_bytes;
        options.request_timeout = Duration::from_secs(self.http.request_timeout_secs);
        options.concurrency_limit = self.http.concurrency_limit;
        options.limits = self.limits.listener();
        options.tls = self.http.tls.as_ref().map(|tls| TlsFiles {
            cert: tls.cert.clone(),
            key: tls.key.clone(),
        });
        options
    }

    /// The agent name: the configured one, else the zone's name, else `local`.
    pub fn agent_name(&self) -> AgentName {
        match &self.agent {
            Some(agent) => agent.clone(),
            None => AgentName::new(self.zone.unwrap_or(Zone::Local).as_str())
                .expect("a zone's name is a valid agent name"),
        }
    }

    /// The state folder: the configured one, else `$XDG_STATE_HOME/aie`, else
    /// `~/.local/state/aie`; `None` when not even `HOME` is set.
    pub fn state_dir(&self) -> Option<PathBuf> {
        self.state.clone().or_else(default_state_dir)
    }

    /// A path from the state folder's point of view: relative paths are inside it.
    pub fn in_state(&self, path: &Path) -> Option<PathBuf> {
        if path.is_absolute() {
            Some(path.to_path_buf())
        } else {
            self.state_dir().map(|state| state.join(path))
        }
    }

    /// The configured credentials that could perform an execute action, as (key, why).
    pub(crate) fn executing_credentials(&self) -> Vec<(&'static str, &'static str)> {
        let mut found = Vec::new();
        if self
            .email
            .smtp_url
            .as_ref()
            .is_some_and(SmtpUrl::has_password)
        {
            found.push((
                "email.smtp_url",
                "carries an SMTP password, which can send mail; sending is the local zone's",
            ));
        }
        if self.email.smtp_password_file.is_some() {
            found.push((
                "email.smtp_password_file",
                "an SMTP password can send mail; sending is the local zone's",
            ));
        }
        if self.whatsapp.token_file.is_some() {
            found.push((
                "whatsapp.token_file",
                "a WhatsApp token can send messages; WhatsApp is the local zone's",
            ));
        }
        if self.whatsapp.session_dir.is_some() {
            found.push((
                "whatsapp.session_dir",
                "a WhatsApp session can send messages and never leaves the local machine",
            ));
        }
        if self.payments.api_key_file.is_some() {
            found.push((
                "payments.api_key_file",
                "a payment key can pay; paying is the local zone's",
            ));
        }
        found
    }
}

/// `$XDG_STATE_HOME/aie` (when absolute), else `$HOME/.local/state/aie`.
pub fn default_state_dir() -> Option<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME").map(PathBuf::from)
        && xdg.is_absolute()
    {
        return Some(xdg.join("aie"));
    }
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(|home| PathBuf::from(home).join(".local/state/aie"))
}

/// `[http]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpConfig {
    /// Extra accepted `Host` names, lowercase.
    pub allowed_hosts: Vec<String>,
    /// Extra accepted origins, lowercase, without a trailing slash.
    pub allowed_origins: Vec<String>,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Request timeout, seconds.
    pub request_timeout_secs: u64,
    /// Requests in service at once.
    pub concurrency_limit: usize,
    /// TLS files, when the listener speaks HTTPS.
    pub tls: Option<TlsPaths>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        let defaults = HttpOptions::new(DEFAULT_LISTEN);
        HttpConfig {
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            max_body_bytes: defaults.max_body_bytes,
            request_timeout_secs: defaults.request_timeout.as_secs(),
            concurrency_limit: defaults.concurrency_limit,
            tls: None,
        }
    }
}

/// Certificate and key, PEM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsPaths {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// `[gateway]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayConfig {
    /// Configured clients, in file order.
    pub clients: Vec<GatewayClient>,
    /// Every role: the built-in ones and the configured ones (a configured role of the same
    /// name replaces a built-in one).
    pub roles: BTreeMap<String, Role>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            clients: Vec::new(),
            roles: builtin_roles(),
        }
    }
}

/// One gateway client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayClient {
    /// Its name in audit records.
    pub name: String,
    /// Its role, one of [`GatewayConfig::roles`].
    pub role: String,
    /// SHA-256 of its bearer token, 64 lowercase hex digits.
    pub token_sha256: String,
}

/// A fronted MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Upstream {
    /// Its short name, the prefix of its tools.
    pub name: String,
    /// Its MCP endpoint.
    #[serde(serialize_with = "as_display")]
    pub url: Url,
    /// Whether its tools are exposed as `NAME_TOOL`.
    pub prefix: bool,
    /// Header name to the environment variable holding its value.
    pub headers_from_env: BTreeMap<String, String>,
}

impl Upstream {
    /// The name a tool of this upstream is exposed under.
    pub fn exposed_name(&self, tool: &str) -> String {
        if self.prefix {
            format!("{}_{tool}", self.name)
        } else {
            tool.to_owned()
        }
    }

    /// The headers to send, read from the environment through `lookup`; the error names the
    /// variable that is unset.
    pub fn headers(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, String)>, String> {
        self.headers_from_env
            .iter()
            .map(|(header, var)| match lookup(var) {
                Some(value) => Ok((header.clone(), value)),
                None => Err(format!(
                    "upstream {}: header {header} comes from ${var}, which is not set",
                    self.name
                )),
            })
            .collect()
    }
}

/// `[policy]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PolicyConfig {
    /// Pattern over tool names to its pinned class.
    pub tools: BTreeMap<ToolGlob, EffectClass>,
}

/// HTTP-refusal audit records written at once per client when `[limits]` does not say.
pub const DEFAULT_REFUSAL_AUDIT_BURST: NonZeroU32 = NonZeroU32::new(20).expect("20 is not 0");
/// HTTP-refusal audit records written a second per client, once the burst is spent, when
/// `[limits]` does not say.
pub const DEFAULT_REFUSAL_AUDIT_PER_SECOND: NonZeroU32 = NonZeroU32::new(2).expect("2 is not 0");

/// `[limits]`, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Limits {
    /// Each client's own rate limit.
    pub per_client: Option<RateLimit>,
    /// Rate limits by tool pattern.
    pub per_tool: BTreeMap<ToolGlob, RateLimit>,
    /// Most emails sent in any hour.
    pub emails_per_hour: Option<u32>,
    /// Most emails a day to first-time recipients.
    pub new_recipients_per_day: Option<u32>,
    /// Most payments a day.
    pub payments_per_day: Option<u32>,
    /// Most paid out a day, by ISO 4217 currency, in that currency's minor units.
    pub payment_amount_per_day: BTreeMap<Currency, Money>,
    /// HTTP-refusal audit records written at once per client.
    pub refusal_audit_burst: NonZeroU32,
    /// HTTP-refusal audit records written a second per client once the burst is spent.
    pub refusal_audit_per_second: NonZeroU32,
    /// Open sessions on one listener, all clients together.
    pub max_sessions: usize,
    /// Open sessions of one gateway client.
    pub max_sessions_per_client: usize,
    /// Requests of one gateway client in service at once.
    pub max_in_flight_per_client: usize,
    /// Seconds without a request after which a session is closed.
    pub session_idle_secs: u64,
    /// Approval requests that may wait in `Pending_Approval/`.
    pub max_pending_approvals: usize,
}

impl Limits {
    /// The bounds of one listener ([`crate::bounds`]).
    pub fn listener(&self) -> crate::bounds::ListenerLimits {
        crate::bounds::ListenerLimits {
            max_sessions: self.max_sessions,
            max_sessions_per_client: self.max_sessions_per_client,
            max_in_flight_per_client: self.max_in_flight_per_client,
            session_idle: Duration::from_secs(self.session_idle_secs),
        }
    }
}

impl Default for Limits {
    /// No rate limits, no budgets, and the default rate of HTTP-refusal records and bounds.
    fn default() -> Self {
        Limits {
            per_client: None,
            per_tool: BTreeMap::new(),
            emails_per_hour: None,
            new_recipients_per_day: None,
            payments_per_day: None,
            payment_amount_per_day: BTreeMap::new(),
            refusal_audit_burst: DEFAULT_REFUSAL_AUDIT_BURST,
            refusal_audit_per_second: DEFAULT_REFUSAL_AUDIT_PER_SECOND,
            max_sessions: crate::bounds::DEFAULT_MAX_SESSIONS,
            max_sessions_per_client: crate::bounds::DEFAULT_MAX_SESSIONS_PER_CLIENT,
            max_in_flight_per_client: crate::bounds::DEFAULT_MAX_IN_FLIGHT_PER_CLIENT,
            session_idle_secs: crate::bounds::DEFAULT_SESSION_IDLE.as_secs(),
            max_pending_approvals: crate::bounds::DEFAULT_MAX_PENDING_APPROVALS,
        }
    }
}

/// A token bucket: `burst` at once, refilled at `requests_per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    /// Sustained rate.
    pub requests_per_minute: u32,
    /// Bucket size.
    pub burst: u32,
}

/// `[email]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmailConfig {
    /// Maildir read for new mail.
    pub maildir: Option<PathBuf>,
    /// SMTP server for approved replies; `.eml` files in the state folder without one.
    pub smtp_url: Option<SmtpUrl>,
    /// SMTP password file, relative to the state folder.
    pub smtp_password_file: Option<PathBuf>,
    /// Extra root certificates for the SMTP server.
    pub smtp_ca_file: Option<PathBuf>,
    /// The owner's sending address, lowercase.
    pub from: Option<String>,
    /// High-priority senders, lowercase.
    pub vip_senders: Vec<String>,
    /// High-priority domains, lowercase.
    pub vip_domains: Vec<String>,
    /// Whether the built-in triage rules follow the owner's.
    pub builtin_rules: bool,
    /// IMAP account read for new mail.
    pub imap: Option<ImapConfig>,
    /// The owner's triage rules, in order.
    pub rules: Vec<TriageRule>,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            maildir: None,
            smtp_url: None,
            smtp_password_file: None,
            smtp_ca_file: None,
            from: None,
            vip_senders: Vec::new(),
            vip_domains: Vec::new(),
            builtin_rules: true,
            imap: None,
            rules: Vec::new(),
        }
    }
}

/// An IMAP account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImapConfig {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Login name.
    pub user: String,
    /// Password file, relative to the state folder.
    pub password_file: PathBuf,
    /// Mailbox read.
    pub mailbox: String,
    /// TLS from the first byte.
    pub tls: bool,
    /// Extra root certificates for the server.
    pub ca_file: Option<PathBuf>,
}

/// How urgent a mail is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Whenever convenient.
    Low,
    /// The usual.
    Normal,
    /// Before normal mail.
    High,
    /// Now.
    Urgent,
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        })
    }
}

/// A triage rule: all its matchers must match. The owner's rules come from `[email]` in the
/// config; email-draft's built-in rules are written the same way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TriageRule {
    /// Its name in triage reasons.
    pub name: String,
    /// Exact sender address, lowercase.
    pub from: Option<String>,
    /// Sender domain, lowercase.
    pub domain: Option<String>,
    /// Words or phrases in subject or body, lowercase; any one matches.
    pub keywords: Vec<String>,
    /// A header, `name` or `name: text`, the name lowercase.
    pub header: Option<String>,
    /// Category set.
    pub category: Option<String>,
    /// Priority set.
    pub priority: Option<Priority>,
}

/// `[whatsapp]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WhatsappConfig {
    /// Session folder, relative to the state folder.
    pub session_dir: Option<PathBuf>,
    /// API token file, relative to the state folder.
    pub token_file: Option<PathBuf>,
}

/// `[payments]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PaymentsConfig {
    /// API key file, relative to the state folder.
    pub api_key_file: Option<PathBuf>,
}

/// `[sync]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncConfig {
    /// Seconds between automatic syncs.
    pub interval_secs: u64,
    /// Minutes a claim's lease lasts.
    pub lease_minutes: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            interval_secs: 60,
            lease_minutes: 30,
        }
    }
}

/// `[approvals]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalsConfig {
    /// Whether a local, uncommitted move of a pending request into `Approved/` counts as
    /// the owner's approval.
    pub accept_hand_moves: bool,
    /// Hours an approval stays valid at most from the moment it is given.
    pub max_lifetime_hours: u32,
}

/// The longest an approval stays valid when the config does not say: 7 days.
pub const DEFAULT_MAX_LIFETIME_HOURS: u32 = 7 * 24;

impl ApprovalsConfig {
    /// [`ApprovalsConfig::max_lifetime_hours`] as a duration.
    pub fn max_lifetime(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::hours(i64::from(self.max_lifetime_hours))
    }
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        ApprovalsConfig {
            accept_hand_moves: false,
            max_lifetime_hours: DEFAULT_MAX_LIFETIME_HOURS,
        }
    }
}

/// Where the vault syncs: a local path or a `file://`, `ssh://` or `https://` URL, without
/// credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct GitRemote(String);

impl GitRemote {
    /// The remote as git takes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the remote is a path on this machine (not a URL).
    pub fn is_path(&self) -> bool {
        !self.0.contains("://")
    }

    /// A path remote read from a file in `base`: relative paths are taken from `base`.
    pub(crate) fn relative_to(self, base: &Path) -> GitRemote {
        if self.is_path() && Path::new(&self.0).is_relative() {
            GitRemote(base.join(&self.0).display().to_string())
        } else {
            self
        }
    }
}

impl FromStr for GitRemote {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        if raw.trim().is_empty() {
            return Err("is empty; give a path or a file://, ssh:// or https:// URL".to_owned());
        }
        if let Some((scheme, _)) = raw.split_once("://") {
            let url = Url::parse(raw).map_err(|e| format!("{e}"))?;
            match scheme {
                "file" | "ssh" | "https" => {}
                "http" => {
                    return Err(
                        "plain http:// would carry the vault unencrypted; use https:// or ssh://"
                            .to_owned(),
                    );
                }
                other => {
                    return Err(format!(
                        "unsupported scheme {other}://; use a path, file://, ssh:// or https://"
                    ));
                }
            }
            if url.password().is_some() || (scheme == "https" && !url.username().is_empty()) {
                return Err(
                    "carries credentials; never put them in the config: ssh uses your agent, https a git credential helper"
                        .to_owned(),
                );
            }
            return Ok(GitRemote(raw.to_owned()));
        }
        // `user@host:path` is ssh in git's scp-like syntax; aie speaks ssh:// URLs only, so
        // say how to write it rather than treat it as a local path.
        if let Some((before, _)) = raw.split_once(':')
            && before.contains('@')
            && !before.contains('/')
        {
            return Err(format!(
                "scp-like remotes are not supported; write it as ssh://{}",
                raw.replacen(':', "/", 1)
            ));
        }
        Ok(GitRemote(raw.to_owned()))
    }
}

impl fmt::Display for GitRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<GitRemote> for String {
    fn from(remote: GitRemote) -> String {
        remote.0
    }
}

/// An SMTP server URL: `smtp://` (plain, or STARTTLS with `?tls=required`) or `smtps://`.
/// Its password, if any, is never printed: `Display`, `Debug` and `Serialize` mask it.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl(Url);

impl SmtpUrl {
    /// The full URL, password included, for the mail sender only.
    pub fn url(&self) -> &Url {
        &self.0
    }

    /// True when the URL carries a password.
    pub fn has_password(&self) -> bool {
        self.0.password().is_some()
    }

    /// True when the connection must be encrypted (`smtps://`, or `?tls=required`).
    pub fn requires_tls(&self) -> bool {
        self.0.scheme() == "smtps"
            || self
                .0
                .query_pairs()
                .any(|(k, v)| k == "tls" && v == "required")
    }

    fn masked(&self) -> String {
        let mut shown = self.0.clone();
        if shown.password().is_some() {
            // Only fails for URLs that cannot have a password, and this one has one.
            let _ = shown.set_password(Some("***"));
        }
        shown.to_string()
    }
}

impl FromStr for SmtpUrl {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        let url = Url::parse(raw).map_err(|e| format!("{e}"))?;
        if !matches!(url.scheme(), "smtp" | "smtps") {
            return Err(format!(
                "scheme {}:// is not SMTP; use smtp://host:port (STARTTLS with ?tls=required) or smtps://host:port",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("has no host; e.g. smtp://mail.example.com:587".to_owned());
        }
        for (key, value) in url.query_pairs() {
            if key != "tls" || value != "required" {
                return Err(format!(
                    "unknown parameter {key}={value}; the only one is tls=required"
                ));
            }
        }
        Ok(SmtpUrl(url))
    }
}

impl fmt::Display for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SmtpUrl({})", self.masked())
    }
}

impl Serialize for SmtpUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.masked())
    }
}

fn as_display<T: fmt::Display, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}
