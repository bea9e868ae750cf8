//! The crate every aie server and the gateway stand on.
//!
//! # Layout
//! - [`approvals`]: the human's decisions: the HMAC-authenticated approval ledger in the
//!   state folder, approve/reject, and authorizing an execute call at most once.
//! - [`audit`]: the hash-chained audit log, one JSON line per tool call, and `verify`.
//! - [`bounds`]: what one client can hold on a listener (sessions, requests in service,
//!   pending approvals), and the refusals past each bound.
//! - [`mcp`]: MCP over the pinned rmcp: the dual-era Streamable HTTP endpoint and
//!   [`ToolServer`], the handler every aie server is. The only module that configures
//!   rmcp's transport.
//! - [`tools`]: tools declared once, as typed handlers; schemas and result envelopes follow.
//! - [`config`]: `aie.toml`: loading with every error at its line, the JSON Schema,
//!   flag and `AIE_*` overrides, live reload.
//! - [`executor`]: every execute tool's at-most-once machinery: the journal written before
//!   and after each action, in doubt after a crash, read back when the service can tell;
//!   a server supplies only its [`Effect`](executor::Effect).
//! - [`endpoint`]: `/mcp` in front of rmcp: body limit, JSON-RPC envelope errors,
//!   2025-03-26 batches, per-method metrics.
//! - [`http`]: the listener: `/mcp`, `/healthz`, `/readyz`, `/metrics`, Host and Origin
//!   checks, body limit, timeouts, concurrency limit, TLS, graceful shutdown.
//! - [`money`]: [`Money`]: integer minor units with their ISO 4217 currency, parsed from
//!   decimal strings, never floats.
//! - [`metrics`]: Prometheus counters and latency histograms per method and tool.
//! - [`policy`]: effect classes, zones and client roles: which tool a call may reach.
//! - [`render`]: the one rendering path for text a person reads (control, bidi and
//!   invisible characters escaped) and the UTS #39 look-alike warnings.
//! - [`telemetry`]: `tracing` set-up.
//! - [`vault`]: the shared markdown vault: layout, task and approval files, claim-by-move,
//!   init/check/repair.

pub mod approvals;
pub use approvals::{ApprovalError, ApprovalLedger, Approvals, Authorized, Refusal, Refused};

pub mod audit;
pub use audit::{AuditError, AuditLog, AuditRecord, ToolCall, VerifyReport};

pub mod bounds;
pub use bounds::{ClientKey, ListenerLimits};

pub mod config;
pub use config::{Config, ConfigErrors, ConfigWatcher, Overrides};

pub mod direct;
pub use direct::DirectCalls;

pub mod endpoint;

pub mod executor;
pub use executor::{Effect, Executor};

pub mod http;
pub use http::{HttpOptions, ReadyCheck, TlsFiles, app, serve, shutdown_signal};

pub mod mcp;
pub use mcp::{ToolServer, rmcp, streamable_http};

pub mod metrics;
pub use metrics::Metrics;

pub mod money;
pub use money::{Currency, Money, MoneyError};

pub mod policy;
pub use policy::{Decision, EffectClass, Policy, Zone};

pub mod render;

pub mod telemetry;

pub mod tools;
pub use tools::{
    IN_DOUBT_META, NOT_EXECUTED_META, ToolError, ToolOutput, ToolSet, ToolSpec, in_doubt,
    not_executed,
};

pub mod vault;
pub use vault::{Vault, VaultError};

/// Installs rustls' ring provider as the process default, once. Every TLS client and server
/// in aie uses it, so the tree carries one crypto stack; call it before building any
/// HTTP client.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
