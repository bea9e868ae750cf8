//! The gateway: one MCP endpoint in front of several backends, merging their tools under
//! per-backend prefixes, routing each call to its backend, and proxying everything else
//! MCP carries (resources, prompts, completions, logging, server-to-client requests and
//! notifications) in both protocol eras. A client authenticates with a bearer token; a
//! [`CallGuard`] decides what it sees and may call. The contract is in `specs/gateway.md`.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use aie::gateway::{AllowAll, ClientIdentity, ClientToken, Gateway};
//! let gateway = Gateway::builder()
//!     .upstream("fixtures", "http://127.0.0.1:9101/mcp", false)
//!     .client(ClientToken::from_token(ClientIdentity::new("laptop", "owner"), "s3cret")?)
//!     .guard(AllowAll)
//!     .build()
//!     .await?;
//! println!("{:?}", gateway.tool_names());
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`guard`]: the policy hook ([`CallGuard`], [`ClientIdentity`]) and [`AllowAll`].
//! - [`auth`]: the bearer-token layer in front of `/mcp`.
//! - [`call_refusal`]: [`CallRefusal`], every reason the policy guard refuses a call.
//! - [`limits`]: rate limits and effect budgets (amounts as `aie_shared::Money`).
//! - [`refusals`]: requests the HTTP layers refuse, handed to the guard for audit, and the
//!   rate that keeps a flood of them from growing the audit log without bound.
//! - `backend`: one backend: probing it, its health, legacy sessions and stateless
//!   exchanges with it.
//! - `link`: how a backend is reached: HTTP (reqwest) or in-process (its router, and an
//!   in-memory pipe for sessions).
//! - `exchange`: one stateless request as one POST, its answer as JSON or SSE.
//! - `relay`: the client side of an upstream session, relaying server requests and
//!   notifications to the client they belong to.
//! - `catalog`: exposed names, prefixes, collisions, and routing by name or URI.
//! - `state`: what every session shares: backends, catalog, merged server info, task
//!   routes.
//! - `lists`: reading a backend's list page by page; merging cache hints.
//! - `handler`: the gateway's `ServerHandler`.
//! - [`error`]: start-up errors and per-request failures.

pub mod auth;
pub use auth::{BearerAuth, ClientToken, sha256_hex};

pub mod error;
pub use error::GatewayError;

pub mod guard;
pub use guard::{AllowAll, CallGuard, CallInfo, CallOutcome, ClientIdentity, HttpRefused, Permit};

pub mod call_refusal;
pub use call_refusal::CallRefusal;

pub mod limits;

pub mod policy_guard;
pub use policy_guard::{PolicyGuard, PolicyGuardError};

pub mod refusals;

mod backend;
mod catalog;
mod exchange;
mod handler;
mod link;
mod lists;
mod relay;
mod state;

pub use handler::GatewayHandler;

use std::{sync::Arc, time::Duration};

use aie_shared::{HttpOptions, Metrics, ReadyCheck, rmcp::ServerHandler, tools::valid_tool_name};
use axum::{Router, middleware};
use futures::future::join_all;
use tokio_util::sync::CancellationToken;

use self::{
    backend::{Backend, Health},
    link::Link,
    state::Shared,
};

/// How long the gateway waits for a backend to accept a connection or a session.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `/readyz` waits for each upstream to answer its probe.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

enum Spec {
    Http {
        name: String,
        url: String,
        prefix: bool,
        headers: Vec<(String, String)>,
    },
    Hosted {
        name: String,
        prefix: bool,
        hosted: Arc<dyn link::Hosted>,
    },
}

impl Spec {
    fn name(&self) -> &str {
        match self {
            Spec::Http { name, .. } | Spec::Hosted { name, .. } => name,
        }
    }
}

/// Assembles a [`Gateway`]: its backends, its clients, its guard.
pub struct GatewayBuilder {
    specs: Vec<Spec>,
    clients: Vec<ClientToken>,
    guard: Arc<dyn CallGuard>,
    connect_timeout: Duration,
    streams: CancellationToken,
}

impl GatewayBuilder {
    /// Adds an MCP server over Streamable HTTP at `url`; with `prefix`, its tools are
    /// exposed as `<name>_<tool>`.
    pub fn upstream(self, name: &str, url: &str, prefix: bool) -> Self {
        self.upstream_with_headers(name, url, prefix, Vec::new())
    }

    /// Adds an upstream as [`upstream`](Self::upstream) does, sending `headers` (the
    /// upstream's own credentials, say) with every request to it.
    pub fn upstream_with_headers(
        mut self,
        name: &str,
        url: &str,
        prefix: bool,
        headers: Vec<(String, String)>,
    ) -> Self {
        self.specs.push(Spec::Http {
            name: name.to_owned(),
            url: url.to_owned(),
            prefix,
            headers,
        });
        self
    }

    /// Adds a server aie hosts in this process (any `ServerHandler`; each client session
    /// gets a clone of it, as over HTTP).
    pub fn in_process<H>(mut self, name: &str, handler: H, prefix: bool) -> Self
    where
        H: ServerHandler + aie_shared::DirectCalls + Clone + Send + Sync + 'static,
    {
        let hosted = link::host(handler, self.streams.child_token());
        self.specs.push(Spec::Hosted {
            name: name.to_owned(),
            prefix,
            hosted,
        });
        self
    }

    /// Lets the client with this token in.
    pub fn client(mut self, client: ClientToken) -> Self {
        self.clients.push(client);
        self
    }

    /// Lets these clients in.
    pub fn clients(mut self, clients: impl IntoIterator<Item = ClientToken>) -> Self {
        self.clients.extend(clients);
        self
    }

    /// Decides visibility and calls with `guard` (default: [`AllowAll`]).
    pub fn guard(mut self, guard: impl CallGuard) -> Self {
        self.guard = Arc::new(guard);
        self
    }

    /// Decides visibility and calls with a shared `guard`.
    pub fn shared_guard(mut self, guard: Arc<dyn CallGuard>) -> Self {
        self.guard = guard;
        self
    }

    /// How long to wait for a backend to connect (default [`CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Checks the configuration, asks every backend what it serves, and refuses to start
    /// on a name that is invalid or exposed twice. A backend that cannot be reached does
    /// not stop the start: it is reported down and its tools appear once it answers.
    pub async fn build(self) -> Result<Gateway, GatewayError> {
        let mut seen = std::collections::HashSet::new();
        for spec in &self.specs {
            let name = spec.name();
            if !valid_tool_name(name) {
                return Err(GatewayError::BadBackendName(name.to_owned()));
            }
            if !seen.insert(name.to_owned()) {
                return Err(GatewayError::DuplicateBackend(name.to_owned()));
            }
        }
        let needs_http = self.specs.iter().any(|s| matches!(s, Spec::Http { .. }));
        let client = if needs_http {
            Some(link::http_client(self.connect_timeout).map_err(GatewayError::HttpClient)?)
        } else {
            None
        };
        let mut backends = Vec::new();
        for spec in self.specs {
            let (name, prefix, link) = match spec {
                Spec::Http {
                    name,
                    url,
                    prefix,
                    headers,
                } => {
                    let parsed = reqwest::Url::parse(&url).ok();
                    if !parsed.is_some_and(|u| matches!(u.scheme(), "http" | "https")) {
                        return Err(GatewayError::BadUrl { name, url });
                    }
                    let Some(client) = client.clone() else {
                        return Err(GatewayError::HttpClient("no HTTP client".into()));
                    };
                    let mut map = http::HeaderMap::new();
                    for (header, value) in headers {
                        let parsed = (
                            http::HeaderName::from_bytes(header.as_bytes()),
                            http::HeaderValue::from_str(&value),
                        );
                        let (Ok(header), Ok(value)) = parsed else {
                            return Err(GatewayError::BadHeader { name, header });
                        };
                        map.insert(header, value);
                    }
                    let link = Link::Http {
                        url: url.into(),
                        client,
                        headers: map,
                    };
                    (name, prefix, link)
                }
                Spec::Hosted {
                    name,
                    prefix,
                    hosted,
                } => (name, prefix, Link::InProcess(hosted)),
            };
            backends.push(Arc::new(Backend::new(
                &name,
                prefix,
                link,
                self.connect_timeout,
            )));
        }
        let shared = Arc::new(Shared::new(backends, self.guard, self.streams));
        let conflicts = shared.refresh_catalog().await;
        if let Some(conflict) = conflicts.into_iter().next() {
            return Err(conflict.into_error(&shared.naming));
        }
        for backend in &shared.backends {
            if let Health::Down(reason) = backend.health() {
                tracing::warn!(backend = %backend.name, reason, "upstream down at start-up; its tools appear once it answers");
            }
        }
        Ok(Gateway {
            shared,
            auth: BearerAuth::new(self.clients),
        })
    }
}

/// A running gateway's state; clone it freely.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
    auth: BearerAuth,
}

impl Gateway {
    /// Starts assembling a gateway.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder {
            specs: Vec::new(),
            clients: Vec::new(),
            guard: Arc::new(AllowAll),
            connect_timeout: CONNECT_TIMEOUT,
            streams: CancellationToken::new(),
        }
    }

    /// The exposed tool names, sorted (as last listed by the backends).
    pub fn tool_names(&self) -> Vec<String> {
        self.shared
            .catalog
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .tool_names()
    }

    /// The names of the backends that are down, with why.
    pub fn down(&self) -> Vec<(String, String)> {
        self.shared
            .backends
            .iter()
            .filter_map(|b| match b.health() {
                Health::Down(reason) => Some((b.name.to_string(), reason)),
                _ => None,
            })
            .collect()
    }

    /// The MCP handler, for serving the gateway over a transport of your own. It reads
    /// the client's identity from the request's HTTP parts, so it belongs behind
    /// [`auth::require_bearer`].
    pub fn handler(&self) -> GatewayHandler {
        GatewayHandler::new(self.shared.clone())
    }

    /// The `/mcp` route: the gateway behind its bearer-token layer.
    pub fn router(
        &self,
        opts: &HttpOptions,
        metrics: Metrics,
        streams: CancellationToken,
    ) -> Router {
        aie_shared::streamable_http(self.handler(), opts, metrics, streams).layer(
            middleware::from_fn_with_state(self.auth.clone(), auth::require_bearer),
        )
    }

    /// `/readyz`: ready while every HTTP upstream answers a probe; otherwise names each
    /// upstream that does not, and why. A backend that comes back has its tools listed
    /// again.
    pub fn ready_check(&self) -> ReadyCheck {
        let shared = self.shared.clone();
        Arc::new(move || {
            let shared = shared.clone();
            Box::pin(async move {
                let probes = (0..shared.backends.len()).map(|b| {
                    let shared = shared.clone();
                    async move {
                        let backend = &shared.backends[b];
                        if matches!(backend.link, Link::InProcess(_)) {
                            return None;
                        }
                        let known = backend.facts().is_some();
                        let probed =
                            tokio::time::timeout(READY_PROBE_TIMEOUT, backend.probe()).await;
                        match probed {
                            Ok(Ok(_)) => {
                                if !known {
                                    // Back (or up for the first time): list its tools.
                                    let shared = shared.clone();
                                    tokio::spawn(async move {
                                        shared.refresh_catalog().await;
                                    });
                                }
                                None
                            }
                            Ok(Err(failure)) => Some(failure.message()),
                            Err(_) => Some(format!(
                                "upstream `{}` is unavailable: no answer within {} s",
                                backend.name,
                                READY_PROBE_TIMEOUT.as_secs()
                            )),
                        }
                    }
                });
                let down: Vec<String> = join_all(probes).await.into_iter().flatten().collect();
                if down.is_empty() {
                    Ok(())
                } else {
                    Err(down.join("; "))
                }
            })
        })
    }
}

/// The gateway's whole listener app: `/mcp` behind bearer tokens, plus `/healthz`,
/// `/readyz` (naming any upstream that is down) and `/metrics`, behind the shared layers.
/// Serve it with [`aie_shared::http::serve`].
pub fn gateway_router(
    gateway: &Gateway,
    opts: &HttpOptions,
    metrics: Metrics,
    streams: CancellationToken,
) -> Router {
    let mcp = gateway.router(opts, metrics.clone(), streams);
    let recorder = refusals::Recorder::new(gateway.auth.clone(), gateway.shared.guard.clone());
    aie_shared::app(mcp, opts, metrics, gateway.ready_check())
        // Outside every shared layer, so it sees each refusal on `/mcp`: Host and Origin,
        // the bearer token, the body limit; and the request id they answered with.
        .layer(middleware::from_fn_with_state(recorder, refusals::record))
}
