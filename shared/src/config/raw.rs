//! The file as written: serde structs that mirror `aie.toml` key for key.
//!
//! Their `///` docs are the JSON Schema's descriptions (`aie config schema`), so every field
//! says what it does, its default and its unit. A key the file must have is an `Option` with
//! `#[schemars(required)]`: the schema says it is required and the structural check reports
//! it missing, while serde still accepts its absence, so one missing key never hides the
//! file's other errors.

use std::{collections::BTreeMap, path::PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;

use super::model::Priority;
use crate::policy::{EffectClass, Zone};

/// aie's configuration file (`aie.toml`). Every key is optional. Flags override the top-level
/// keys, and `AIE_*` environment variables override both where a flag exists. Relative paths
/// are taken from the folder this file is in, unless a key says otherwise.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "aie.toml")]
pub(crate) struct RawConfig {
    /// Where this stack runs: `cloud` (always on; only reads and drafts) or `local` (the
    /// owner's machine: holds the secrets, takes approvals, performs final actions). No
    /// default: `aie up` needs it from here, `--zone` or `AIE_ZONE`.
    pub zone: Option<Zone>,
    /// This stack's agent name: its folder under `In_Progress/` and `Logs/`
    /// (`[A-Za-z0-9._-]`, at most 128 characters). Default: the zone's name.
    pub agent: Option<String>,
    /// The vault folder (markdown, synced with git). No default: `aie up` needs it from here,
    /// `--vault` or `AIE_VAULT`.
    pub vault: Option<PathBuf>,
    /// The state folder: what never syncs (secrets, tokens, the approval ledger, the send
    /// journal, the `.eml` outbox). Never inside the vault. Default `$XDG_STATE_HOME/aie`,
    /// else `~/.local/state/aie`.
    pub state: Option<PathBuf>,
    /// The git remote the vault syncs with: a path, or a `file://`, `ssh://` or `https://`
    /// URL. Never credentials in it: ssh uses your agent, https a credential helper.
    pub remote: Option<String>,
    /// Address the gateway listens on, `IP:PORT`. Default `127.0.0.1:8700`.
    pub listen: Option<String>,
    /// Settings of the HTTP listener.
    #[serde(default)]
    pub http: RawHttp,
    /// The gateway's clients and their roles.
    #[serde(default)]
    pub gateway: RawGateway,
    /// Other MCP servers the gateway fronts, one `[[upstream]]` table each.
    #[serde(default)]
    pub upstream: Vec<RawUpstream>,
    /// Effect classes the operator pins on tools.
    #[serde(default)]
    pub policy: RawPolicy,
    /// Rate limits and the owner's effect budgets.
    #[serde(default)]
    pub limits: RawLimits,
    /// Mail: where new mail is read from, how replies are sent, and triage rules.
    #[serde(default)]
    pub email: RawEmail,
    /// WhatsApp (local zone only).
    #[serde(default)]
    pub whatsapp: RawWhatsapp,
    /// Payments (local zone only).
    #[serde(default)]
    pub payments: RawPayments,
    /// Vault synchronisation through git.
    #[serde(default)]
    pub sync: RawSync,
    /// The owner's approvals (local zone): how they may be given and how long they last.
    #[serde(default)]
    pub approvals: RawApprovals,
}

/// Settings of the HTTP listener (`/mcp`, `/healthz`, `/readyz`, `/metrics`).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Http")]
pub(crate) struct RawHttp {
    /// Further `Host` names accepted, besides loopback names and the listen address: a host
    /// name or IP address, without scheme or port, e.g. `aie.example.com`. Default: none.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Browser origins accepted besides loopback ones: scheme, host and optional port, no
    /// path, e.g. `https://ops.example.com`. A request without `Origin` always passes.
    /// Default: none.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Largest accepted request body in bytes; larger ones get 413. Default 4194304 (4 MiB).
    pub max_body_bytes: Option<u64>,
    /// Seconds a request may take until its response starts (408 beyond), and a client to
    /// send its body. Default 60.
    pub request_timeout_secs: Option<u64>,
    /// Requests in service at once; more wait for a slot. Default 512.
    pub concurrency_limit: Option<u64>,
    /// TLS certificate chain (PEM). With `tls_key`, the listener speaks HTTPS only. Default:
    /// plain HTTP.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM), given together with `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

/// The gateway's clients and their roles.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Gateway")]
pub(crate) struct RawGateway {
    /// The clients allowed in, one `[[gateway.clients]]` table each. With none, the one token
    /// in `AIE_TOKEN` is accepted (role `owner`); with neither, `aie up` makes a token in the
    /// state folder.
    #[serde(default)]
    pub clients: Vec<RawClient>,
    /// Roles by name (`[gateway.roles.NAME]`). Built in, and redefinable here: `owner`
    /// (read, draft, execute), `drafter` (read, draft), `reader` (read), each over every tool.
    #[serde(default)]
    pub roles: BTreeMap<String, RawRole>,
}

/// One gateway client: who it is, what it may do, and the hash of its bearer token.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Client")]
pub(crate) struct RawClient {
    /// The client's name, as audit records show it (`[A-Za-z0-9._-]`, unique).
    #[schemars(required)]
    pub name: Option<String>,
    /// The client's role: `owner`, `drafter`, `reader` or one of `[gateway.roles]`.
    #[schemars(required)]
    pub role: Option<String>,
    /// SHA-256 of the client's bearer token, 64 hex digits; never the token itself. Make it
    /// with `printf %s "$TOKEN" | sha256sum`.
    #[schemars(required)]
    pub token_sha256: Option<String>,
}

/// A role: the effect classes and the tools its clients may use; a call needs both.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Role")]
pub(crate) struct RawRole {
    /// The effect classes the role may use, e.g. `["read", "draft"]`.
    #[schemars(required)]
    pub classes: Option<Vec<EffectClass>>,
    /// Patterns over tool names the role may use (`*` any run of characters, `?` one),
    /// e.g. `["vault_*"]`. Default `["*"]`: every tool.
    pub tools: Option<Vec<String>>,
}

/// An MCP server the gateway fronts; its tools are exposed under its name as prefix.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Upstream")]
pub(crate) struct RawUpstream {
    /// Short name (`[a-z0-9_-]`, at most 24 characters, unique); its tools are exposed as
    /// `NAME_TOOL` unless `prefix = false`.
    #[schemars(required)]
    pub name: Option<String>,
    /// The upstream's MCP endpoint, an `http://` or `https://` URL, e.g.
    /// `http://127.0.0.1:9101/mcp`.
    #[schemars(required)]
    pub url: Option<String>,
    /// Whether the upstream's tools get `NAME_` in front of their names. Default `true`;
    /// `false` keeps the upstream's own names.
    pub prefix: Option<bool>,
    /// Headers sent to the upstream (its own auth), each value read from the named
    /// environment variable when the gateway connects: never a literal secret here, e.g.
    /// `{ Authorization = "FIXTURES_TOKEN" }`.
    #[serde(default)]
    pub headers_from_env: BTreeMap<String, String>,
}

/// Effect classes the operator pins on tools.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Policy")]
pub(crate) struct RawPolicy {
    /// Pattern over exposed tool names (`*` any run of characters, `?` one) to its class:
    /// `read`, `draft` or `execute`. An exact name beats a pattern, the most specific pattern
    /// wins, a tie goes to the stricter class. The suite's own tools can be raised above their
    /// contract class but never lowered. A tool matching nothing and not the suite's is
    /// `execute`.
    #[serde(default)]
    pub tools: BTreeMap<String, EffectClass>,
}

/// Rate limits per client and per tool, and the owner's effect budgets.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Limits")]
pub(crate) struct RawLimits {
    /// The rate limit each gateway client gets, separately. Default: none.
    pub per_client: Option<RawRateLimit>,
    /// Rate limits by pattern over tool names, shared by all clients; the most specific
    /// matching pattern applies. Default: none.
    #[serde(default)]
    pub per_tool: BTreeMap<String, RawRateLimit>,
    /// Most emails sent in any hour. Default: no budget.
    pub emails_per_hour: Option<u32>,
    /// Most emails a day to recipients never written to before. Default: no budget.
    pub new_recipients_per_day: Option<u32>,
    /// Most payments a day. Default: no budget.
    pub payments_per_day: Option<u32>,
    /// Most paid out a day, per currency: ISO 4217 code to a decimal string in that
    /// currency's minor-unit precision, e.g. `{ EUR = "500.00", JPY = "20000", KWD = "1.250" }`
    /// (counted exactly, in minor units; a float is refused). A currency not listed has no
    /// budget.
    #[serde(default)]
    pub payment_amount_per_day: BTreeMap<String, String>,
    /// Audit records of HTTP refusals on `/mcp` (401, 403, 413, 400) written at once per
    /// client (each configured client, and all requests without a known token as one) before
    /// `refusal_audit_per_second` applies; refusals over the rate are counted in the next
    /// record, not written. At least 1. Default 20.
    #[schemars(range(min = 1))]
    pub refusal_audit_burst: Option<u32>,
    /// Audit records of HTTP refusals written a second per client once the burst is spent; a
    /// whole number, at least 1, so the count of refusals not written is always written soon.
    /// Default 2.
    #[schemars(range(min = 1))]
    pub refusal_audit_per_second: Option<u32>,
    /// Open MCP sessions on one listener, all clients together; past it a new session is
    /// refused (HTTP 429). A standalone server (`aie serve SERVER`) cannot tell clients
    /// apart, so this is its only session bound: keep it at least the gateway's in front of
    /// it, since each gateway session opens one there. At least 1. Default 256.
    #[schemars(range(min = 1))]
    pub max_sessions: Option<u32>,
    /// Open MCP sessions of one gateway client (one bearer token); past it that client's
    /// new session is refused (HTTP 429). At least 1. Default 32.
    #[schemars(range(min = 1))]
    pub max_sessions_per_client: Option<u32>,
    /// Requests one gateway client may have in service at once (an SSE answer counts until
    /// it ends; a session's GET stream does not count); past it the request is refused (HTTP
    /// 429, `Retry-After: 1`). At least 1. Default 32.
    #[schemars(range(min = 1))]
    pub max_in_flight_per_client: Option<u32>,
    /// A session with no request for this many seconds is closed; its client starts a new
    /// one. From 10 to 86400. Default 120.
    #[schemars(range(min = 10, max = 86400))]
    pub session_idle_secs: Option<u32>,
    /// Approval requests that may wait in `Pending_Approval/` (all domains); a draft tool
    /// asked for one more refuses, and nothing is drafted. At least 1. Default 100.
    #[schemars(range(min = 1))]
    pub max_pending_approvals: Option<u32>,
}

/// A token-bucket rate limit.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RateLimit")]
pub(crate) struct RawRateLimit {
    /// Sustained requests per minute (at least 1).
    #[schemars(required)]
    pub requests_per_minute: Option<u32>,
    /// Requests allowed at once after a quiet spell (at least 1). Default: the same as
    /// `requests_per_minute`.
    pub burst: Option<u32>,
}

/// Mail: where new mail is read from, how replies are sent, and triage rules.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Email")]
pub(crate) struct RawEmail {
    /// A Maildir whose `new/` holds new mail, as mbsync or offlineimap leave it (`--maildir`
    /// overrides).
    pub maildir: Option<PathBuf>,
    /// Where approved replies are sent: `smtp://host:port` (plain, or STARTTLS with
    /// `?tls=required`) or `smtps://host:port` (TLS). Without it, sent mail is written as
    /// `.eml` files in the state folder (`--smtp` overrides). A user name may stand in the
    /// URL, a password never: use `smtp_password_file`.
    pub smtp_url: Option<String>,
    /// File holding the SMTP password (one line), relative to the state folder. The user
    /// name is the URL's.
    pub smtp_password_file: Option<PathBuf>,
    /// Extra trusted root certificates (PEM) for an SMTP server with a private CA.
    pub smtp_ca_file: Option<PathBuf>,
    /// The owner's address replies are sent from. Default: the address the original mail
    /// was sent to.
    pub from: Option<String>,
    /// Senders whose mail is high priority (exact addresses, case-insensitive).
    #[serde(default)]
    pub vip_senders: Vec<String>,
    /// Domains whose mail is high priority, subdomains included, e.g. `example.com`.
    #[serde(default)]
    pub vip_domains: Vec<String>,
    /// Whether the built-in triage rules (newsletters, spam, invoices, leads, support) are
    /// tried after the owner's. Default `true`.
    pub builtin_rules: Option<bool>,
    /// Reading new mail over IMAP instead of a Maildir.
    pub imap: Option<RawImap>,
    /// The owner's triage rules, tried in order after the VIP lists; for each of category and
    /// priority, the first rule that matches and sets it wins.
    #[serde(default)]
    pub rules: Vec<RawTriageRule>,
}

/// An IMAP account new mail is read from.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Imap")]
pub(crate) struct RawImap {
    /// Server host name.
    #[schemars(required)]
    pub host: Option<String>,
    /// Server port. Default 993 with TLS, 143 without.
    pub port: Option<u16>,
    /// Login name.
    #[schemars(required)]
    pub user: Option<String>,
    /// File holding the password (one line), relative to the state folder; never inside the
    /// vault.
    #[schemars(required)]
    pub password_file: Option<PathBuf>,
    /// Mailbox read. Default `INBOX`.
    pub mailbox: Option<String>,
    /// Whether to speak TLS from the first byte. Default `true`; `false` is accepted only for
    /// a server on a loopback address.
    pub tls: Option<bool>,
    /// Extra trusted root certificates (PEM) for a server with a private CA.
    pub ca_file: Option<PathBuf>,
}

/// A triage rule: every matcher given must match; then the rule sets what it names.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TriageRule")]
pub(crate) struct RawTriageRule {
    /// The rule's name, given in the reasons a task records (`[a-z0-9_-]`). Default
    /// `rule-N`, N counting from 1.
    pub name: Option<String>,
    /// Matches this exact sender address (case-insensitive).
    pub from: Option<String>,
    /// Matches senders at this domain or its subdomains (case-insensitive), e.g.
    /// `example.com`.
    pub domain: Option<String>,
    /// Matches mail whose subject or body contains any of these words or phrases
    /// (case-insensitive, whole words).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Matches mail carrying this header, optionally containing text: `name` or
    /// `name: text`, e.g. `list-unsubscribe` or `precedence: bulk`.
    pub header: Option<String>,
    /// The category set (`[a-z0-9_-]`), e.g. `invoice`.
    pub category: Option<String>,
    /// The priority set.
    pub priority: Option<Priority>,
}

/// WhatsApp (local zone only: the session never leaves the local machine).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Whatsapp")]
pub(crate) struct RawWhatsapp {
    /// Folder of the WhatsApp session, relative to the state folder.
    pub session_dir: Option<PathBuf>,
    /// File holding a WhatsApp Business API token, relative to the state folder.
    pub token_file: Option<PathBuf>,
}

/// Payments (local zone only).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Payments")]
pub(crate) struct RawPayments {
    /// File holding the payment provider's API key, relative to the state folder.
    pub api_key_file: Option<PathBuf>,
}

/// Vault synchronisation through git.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Sync")]
pub(crate) struct RawSync {
    /// Seconds between automatic syncs (pull, then push). Default 60.
    pub interval_secs: Option<u64>,
    /// Minutes a claim holds before it counts as stale. Default 30.
    pub lease_minutes: Option<u64>,
}

/// The owner's approvals (local zone): how they may be given and how long they last.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Approvals")]
pub(crate) struct RawApprovals {
    /// Whether a request the owner moves by hand from `Pending_Approval/` into `Approved/`
    /// (the Obsidian habit) counts as approved. It counts only while the vault's own git
    /// state shows a local, uncommitted move of a request `main` holds as pending, byte for
    /// byte; whatever reaches `Approved/` through a commit (sync, merge, pull) is set aside
    /// either way. Default `false`: approve with `aie approvals approve ID`.
    pub accept_hand_moves: Option<bool>,
    /// Hours an approval stays valid at most from the moment it is given, whatever the
    /// request's own `expires_at` says (the earlier of the two applies). From 1 to 8760 (a
    /// year). Default 168 (7 days).
    #[schemars(range(min = 1, max = 8760))]
    pub max_lifetime_hours: Option<u32>,
}
