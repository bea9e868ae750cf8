//! One backend as the gateway sees it: its name and prefix, how to reach it, what it is
//! (learned by probing it), whether it is up, and the two ways a request travels to it:
//! over an upstream session (legacy clients, one upstream session per client session) or
//! as one stateless exchange (2026-07-28 clients, one POST per request).

use std::{
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::Duration,
};

use aie_shared::rmcp::{
    model::{
        ClientCapabilities, ClientConfig, ClientJsonRpcMessage, ClientRequest, DiscoverRequest,
        DiscoverRequestParams, GetMeta as _, Implementation, NumberOrString, ProtocolVersion,
        RequestMetaObject, ServerCapabilities, ServerNotification,
    },
    service::{
        ClientLifecycleMode, Peer, PeerRequestOptions, RequestContext, RoleClient, RoleServer,
        RunningService,
    },
};
use futures::StreamExt as _;
use http::HeaderMap;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{
    error::Failure,
    exchange::{self, Inbound},
    link::Link,
    relay::{Origin, Relay},
};

/// The protocol revision of stateless requests.
pub const MODERN: ProtocolVersion = ProtocolVersion::V_2026_07_28;

/// How the gateway introduces itself in its own requests (probes, catalog refreshes).
pub fn gateway_implementation() -> Implementation {
    Implementation::new("aie-gateway", env!("CARGO_PKG_VERSION"))
}

/// The `_meta` of the gateway's own stateless requests: it declares no client capability,
/// so no backend asks it anything.
pub fn own_meta() -> RequestMetaObject {
    RequestMetaObject::with_client_context(
        MODERN,
        gateway_implementation(),
        ClientCapabilities::default(),
    )
}

/// True when `cx` is a stateless (2026-07-28 or later) request.
pub fn is_stateless(cx: &RequestContext<RoleServer>) -> bool {
    cx.protocol_version()
        .is_some_and(|v| v.as_str() >= MODERN.as_str())
}

/// What a probe learned about a backend.
#[derive(Debug, Clone)]
pub struct Facts {
    /// What it serves.
    pub capabilities: ServerCapabilities,
    /// Its implementation, if it said.
    pub server_info: Option<Implementation>,
    /// Its instructions for clients.
    pub instructions: Option<String>,
    /// True when it serves stateless 2026-07-28 requests; false for a legacy-only server,
    /// which the gateway reaches over a session of its own for stateless clients.
    pub modern: bool,
}

/// Up or down, as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Never reached yet.
    Unknown,
    /// Answered the last request.
    Up,
    /// Could not be reached: why.
    Down(String),
}

/// One backend.
pub struct Backend {
    /// Its name: the prefix of its tools when `prefix` is set, and how errors name it.
    pub name: Arc<str>,
    /// Whether its tool and prompt names are exposed as `<name>_<tool>`.
    pub prefix: bool,
    /// How to reach it.
    pub link: Link,
    health: Mutex<Health>,
    facts: RwLock<Option<Facts>>,
    /// The gateway's own session, for a legacy-only backend.
    control: tokio::sync::Mutex<Option<Arc<UpstreamSession>>>,
    connect_timeout: Duration,
}

impl Backend {
    /// A backend named `name`, reached over `link`.
    pub fn new(name: &str, prefix: bool, link: Link, connect_timeout: Duration) -> Self {
        Self {
            name: name.into(),
            prefix,
            link,
            health: Mutex::new(Health::Unknown),
            facts: RwLock::new(None),
            control: tokio::sync::Mutex::new(None),
            connect_timeout,
        }
    }

    /// Whether the gateway believes this backend when a result says the call did nothing
    /// (`_meta` `dev.aie/notExecuted`): only a server hosted in this process, whose code is
    /// aie's own. An HTTP upstream is a separate program, possibly someone else's, and
    /// believing it would let it get an approval used again; there is no opt-in.
    pub fn certifies_not_executed(&self) -> bool {
        matches!(self.link, Link::InProcess(_))
    }

    /// Its health as last seen.
    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// What the last probe learned, if any probe succeeded.
    pub fn facts(&self) -> Option<Facts> {
        self.facts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records how a request to it ended: a backend that answered anything (even an
    /// error) is up; one that could not be reached is down.
    pub fn note<T>(&self, outcome: &Result<T, Failure>) {
        let now = match outcome {
            Err(Failure::Unavailable { reason, .. }) => Health::Down(reason.clone()),
            Err(Failure::Cancelled) => return,
            _ => Health::Up,
        };
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        match (&*health, &now) {
            (Health::Up | Health::Unknown, Health::Down(reason)) => {
                tracing::warn!(backend = %self.name, reason, "upstream is down");
            }
            (Health::Down(_), Health::Up) => {
                tracing::info!(backend = %self.name, "upstream is back")
            }
            _ => {}
        }
        *health = now;
    }

    /// Asks the backend what it is: `server/discover` first, then a legacy `initialize`
    /// for a server that only speaks the older revisions.
    pub async fn probe(&self) -> Result<Facts, Failure> {
        let probed = self.probe_inner().await;
        self.note(&probed);
        if let Ok(facts) = &probed {
            *self.facts.write().unwrap_or_else(PoisonError::into_inner) = Some(facts.clone());
        }
        probed
    }

    async fn probe_inner(&self) -> Result<Facts, Failure> {
        let mut request =
            ClientRequest::DiscoverRequest(DiscoverRequest::new(DiscoverRequestParams {}));
        *request.get_meta_mut() = own_meta();
        let discovered = self
            .exchange_reached(request, &HeaderMap::new(), None, &CancellationToken::new())
            .await;
        let modern_error = match discovered {
            Ok(value) => {
                let supported = value
                    .get("supportedVersions")
                    .and_then(Value::as_array)
                    .is_some_and(|v| v.iter().any(|v| v.as_str() == Some(MODERN.as_str())));
                if supported {
                    let capabilities = value
                        .get("capabilities")
                        .cloned()
                        .map(serde_json::from_value)
                        .transpose()
                        .map_err(|e| {
                            Failure::unavailable(
                                &self.name,
                                format!("sent malformed capabilities: {e}"),
                            )
                        })?
                        .unwrap_or_default();
                    let server_info = value
                        .pointer("/_meta/io.modelcontextprotocol~1serverInfo")
                        .cloned()
                        .and_then(|v| serde_json::from_value(v).ok());
                    return Ok(Facts {
                        capabilities,
                        server_info,
                        instructions: value
                            .get("instructions")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        modern: true,
                    });
                }
                "it does not support 2026-07-28".to_owned()
            }
            // Nothing answered: there is no server to ask anything else.
            Err((failure, false)) => return Err(failure),
            Err((failure, true)) => failure.message(),
        };
        // A legacy-only server: the gateway keeps a session of its own with it.
        let session = self.control().await.map_err(|legacy| match legacy {
            Failure::Unavailable { reason, .. } => Failure::unavailable(
                &self.name,
                format!("{reason} (server/discover: {modern_error})"),
            ),
            other => other,
        })?;
        let info = session.running.peer().peer_info();
        let Some(info) = info else {
            return Err(Failure::unavailable(
                &self.name,
                "the session has no server info",
            ));
        };
        Ok(Facts {
            capabilities: info.capabilities.clone(),
            server_info: info.server_info.clone(),
            instructions: info.instructions.clone(),
            modern: false,
        })
    }

    /// The gateway's own upstream session, opened (or reopened) on demand.
    async fn control(&self) -> Result<Arc<UpstreamSession>, Failure> {
        let mut control = self.control.lock().await;
        if let Some(session) = control.as_ref().filter(|s| !s.is_closed()) {
            return Ok(session.clone());
        }
        let info = ClientConfig::new(ClientCapabilities::default(), gateway_implementation());
        let relay = Relay::new(self.name.clone(), info, None);
        let session = Arc::new(self.open_session(relay).await?);
        *control = Some(session.clone());
        Ok(session)
    }

    /// Opens a legacy session to the backend for `relay`'s client.
    pub async fn open_session(&self, relay: Relay) -> Result<UpstreamSession, Failure> {
        let opened = self
            .link
            .open_session(
                relay.clone(),
                ClientLifecycleMode::Initialize,
                self.connect_timeout,
            )
            .await
            .map(|running| UpstreamSession {
                backend: self.name.clone(),
                running,
                relay,
            })
            .map_err(|reason| Failure::unavailable(&self.name, reason));
        self.note(&opened);
        opened
    }

    /// Forwards a stateless client request: one exchange for a 2026-07-28 backend (the
    /// client's `_meta` and `Mcp-Param-*` headers go along; notifications come back on the
    /// client's response stream), or the gateway's own session for a legacy-only one.
    pub async fn forward_stateless(
        &self,
        request: ClientRequest,
        cx: &RequestContext<RoleServer>,
    ) -> Result<Value, Failure> {
        let facts = match self.facts() {
            Some(facts) => Some(facts),
            None => self.probe().await.ok(),
        };
        let result = if facts.is_none_or(|f| f.modern) {
            let mut request = request;
            *request.get_meta_mut() = cx.meta.clone();
            let headers = param_headers(cx);
            self.exchange(request, &headers, Some(&cx.peer), &cx.ct)
                .await
        } else {
            match self.control().await {
                Ok(session) => session.forward(request, cx).await,
                Err(failure) => Err(failure),
            }
        };
        self.note(&result);
        result
    }

    /// The gateway's own request (catalog refresh), without a client behind it.
    pub async fn own_request(&self, request: ClientRequest) -> Result<Value, Failure> {
        let facts = match self.facts() {
            Some(facts) => facts,
            None => self.probe().await?,
        };
        let result = if facts.modern {
            let mut request = request;
            *request.get_meta_mut() = own_meta();
            self.exchange(request, &HeaderMap::new(), None, &CancellationToken::new())
                .await
        } else {
            match self.control().await {
                Ok(session) => {
                    session
                        .request(request, RequestMetaObject::new(), None, None)
                        .await
                }
                Err(failure) => Err(failure),
            }
        };
        self.note(&result);
        result
    }

    /// One stateless exchange: the request out, its notifications to `peer` (in order,
    /// before the result), the result back. Cancelling `ct` drops the exchange, which
    /// closes the upstream request.
    pub async fn exchange(
        &self,
        request: ClientRequest,
        headers: &HeaderMap,
        peer: Option<&Peer<RoleServer>>,
        ct: &CancellationToken,
    ) -> Result<Value, Failure> {
        self.exchange_reached(request, headers, peer, ct)
            .await
            .map_err(|(failure, _)| failure)
    }

    /// [`exchange`](Self::exchange), also telling whether the backend was reached at all
    /// when it fails.
    async fn exchange_reached(
        &self,
        request: ClientRequest,
        headers: &HeaderMap,
        peer: Option<&Peer<RoleServer>>,
        ct: &CancellationToken,
    ) -> Result<Value, (Failure, bool)> {
        let message = ClientJsonRpcMessage::request(request, NumberOrString::Number(1));
        let reached = |reason: String| (Failure::unavailable(&self.name, reason), true);
        let work = async {
            let mut messages = exchange::send(&self.link, &message, headers)
                .await
                .map_err(|e| (Failure::unavailable(&self.name, e.reason), e.reached))?;
            while let Some(inbound) = messages.next().await {
                match inbound.map_err(reached)? {
                    Inbound::Reply(Ok(result)) => return Ok(result),
                    Inbound::Reply(Err(error)) => return Err((Failure::Rpc(error), true)),
                    Inbound::Notification(notification) => {
                        relay_notification(peer, notification).await;
                    }
                    Inbound::Request(request) => {
                        let method = request.get("method").and_then(Value::as_str).unwrap_or("?");
                        tracing::warn!(backend = %self.name, method, "server request on a stateless exchange, dropped");
                    }
                }
            }
            Err(reached("the answer ended before the result".to_owned()))
        };
        tokio::select! {
            result = work => result,
            () = ct.cancelled() => Err((Failure::Cancelled, true)),
        }
    }
}

/// The client's `Mcp-Param-*` headers: the only ones of its request that travel on.
pub fn param_headers(cx: &RequestContext<RoleServer>) -> HeaderMap {
    let prefix = aie_shared::rmcp::transport::common::http_header::HEADER_MCP_PARAM_PREFIX
        .to_ascii_lowercase();
    let mut headers = HeaderMap::new();
    if let Some(parts) = cx.extensions.get::<http::request::Parts>() {
        for (name, value) in &parts.headers {
            if name.as_str().starts_with(&prefix) {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    headers
}

async fn relay_notification(peer: Option<&Peer<RoleServer>>, notification: ServerNotification) {
    let Some(peer) = peer else { return };
    if let Err(e) = peer.send_notification(notification).await {
        tracing::debug!(error = %e, "notification not relayed to the client");
    }
}

/// One upstream legacy session and its relay.
pub struct UpstreamSession {
    backend: Arc<str>,
    running: RunningService<RoleClient, Relay>,
    relay: Relay,
}

impl UpstreamSession {
    /// True once the session can carry nothing more.
    pub fn is_closed(&self) -> bool {
        self.running.is_closed() || self.running.peer().is_transport_closed()
    }

    /// The upstream side of the session.
    pub fn peer(&self) -> &Peer<RoleClient> {
        self.running.peer()
    }

    /// Forwards the client request `cx` as `request`: its `_meta` goes along, its progress
    /// and server requests come back to it, and its cancellation cancels the upstream
    /// request.
    pub async fn forward(
        &self,
        request: ClientRequest,
        cx: &RequestContext<RoleServer>,
    ) -> Result<Value, Failure> {
        let origin = Origin {
            peer: cx.peer.clone(),
            request_id: cx.id.clone(),
            progress_token: cx.meta.get_progress_token(),
        };
        self.request(request, cx.meta.clone(), Some(origin), Some(&cx.ct))
            .await
    }

    /// Sends `request` with `meta`, for `origin` if a client request is behind it.
    pub async fn request(
        &self,
        request: ClientRequest,
        mut meta: RequestMetaObject,
        origin: Option<Origin>,
        ct: Option<&CancellationToken>,
    ) -> Result<Value, Failure> {
        // rmcp gives the upstream request a progress token of its own; the relay maps it
        // back to the client's.
        meta.remove("progressToken");
        let options = PeerRequestOptions::no_options().with_meta(meta);
        let handle = self
            .running
            .peer()
            .send_request_with_option(request, options)
            .await
            .map_err(|e| Failure::from_service(&self.backend, e))?;
        let id = handle.id.clone();
        let upstream = handle.peer.clone();
        let _recorded = self
            .relay
            .record(id.clone(), handle.progress_token.clone(), origin);
        let never = CancellationToken::new();
        let ct = ct.unwrap_or(&never);
        let answer = tokio::select! {
            answer = handle.await_response() => answer.map_err(|e| Failure::from_service(&self.backend, e)),
            () = ct.cancelled() => {
                let param = aie_shared::rmcp::model::CancelledNotificationParam::new(
                    Some(id.clone()),
                    Some("cancelled by the client".to_owned()),
                );
                let _ = upstream.notify_cancelled(param).await;
                Err(Failure::Cancelled)
            }
        };
        let result = answer?;
        serde_json::to_value(&result).map_err(|e| {
            Failure::unavailable(
                &self.backend,
                format!("sent a result the gateway cannot encode: {e}"),
            )
        })
    }
}
