//! What one client can hold on a listener, bounded (contract invariant 10): open MCP
//! sessions per client and in total, requests in service per client, and approval requests
//! waiting for the owner. Past a bound the client gets a clear refusal that names the bound
//! and its `[limits]` key (HTTP 429 with a JSON-RPC error, or a tool's `isError` result), and
//! the refusal is counted in `aie_mcp_limit_refusals_total{limit}`.
//!
//! A session costs the process memory for as long as it lives (rmcp's session worker, the
//! handler's per-session state, and behind the gateway one session per backend): about
//! 200 kB in `aie up`. So sessions are admitted only within the bounds, and an idle one is
//! closed after `[limits] session_idle_secs`. Who a request counts against is its
//! [`ClientKey`], which the gateway's token layer sets; a standalone server has no tokens
//! and cannot tell clients apart, so there the listener is the one client and only the
//! listener-wide bounds apply.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::Response,
};
use rmcp::transport::streamable_http_server::session::{SessionId, local::LocalSessionManager};
use serde_json::Value;

use crate::{
    endpoint::error_response,
    http::HttpRefusal,
    metrics::Metrics,
    tools::ToolError,
    vault::{Domain, layout::PENDING_APPROVAL},
};

/// Open sessions on one listener, all clients together, unless `[limits] max_sessions` says.
pub const DEFAULT_MAX_SESSIONS: usize = 256;
/// Open sessions of one gateway client unless `[limits] max_sessions_per_client` says.
pub const DEFAULT_MAX_SESSIONS_PER_CLIENT: usize = 32;
/// Requests one gateway client may have in service at once unless `[limits]
/// max_in_flight_per_client` says.
pub const DEFAULT_MAX_IN_FLIGHT_PER_CLIENT: usize = 32;
/// How long a session may go without a request before it is closed, unless `[limits]
/// session_idle_secs` says (rmcp's own default is five minutes).
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(120);
/// Approval requests that may wait in `Pending_Approval/` unless `[limits]
/// max_pending_approvals` says; past it, draft tools refuse.
pub const DEFAULT_MAX_PENDING_APPROVALS: usize = 100;

/// The JSON-RPC error code of a refusal past a bound (implementation-defined server error).
pub const LIMIT_REACHED: i64 = -32000;

/// One bound, named by its `[limits]` key (also the metric's `limit` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Open sessions on the listener, all clients together.
    Sessions,
    /// Open sessions of one client.
    SessionsPerClient,
    /// Requests of one client in service at once.
    InFlightPerClient,
    /// Approval requests waiting in `Pending_Approval/`.
    PendingApprovals,
}

impl Limit {
    /// The `[limits]` key that sets it.
    pub fn key(self) -> &'static str {
        match self {
            Limit::Sessions => "max_sessions",
            Limit::SessionsPerClient => "max_sessions_per_client",
            Limit::InFlightPerClient => "max_in_flight_per_client",
            Limit::PendingApprovals => "max_pending_approvals",
        }
    }
}

/// Who a request counts against: a gateway client's name, put in the request's extensions
/// by the gateway's token layer. A request without one counts against the listener as a
/// whole.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey(Arc<str>);

impl ClientKey {
    /// The client named `name`.
    pub fn new(name: &str) -> Self {
        Self(name.into())
    }

    /// Its name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The bounds of one listener (from `[limits]`, see [`crate::config::Config::http_options`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Open sessions, all clients together.
    pub max_sessions: usize,
    /// Open sessions of one client (a request with a [`ClientKey`]).
    pub max_sessions_per_client: usize,
    /// Requests of one client in service at once; `GET` streams do not count.
    pub max_in_flight_per_client: usize,
    /// A session with no request for this long is closed (rmcp's `keep_alive`).
    pub session_idle: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_sessions_per_client: DEFAULT_MAX_SESSIONS_PER_CLIENT,
            max_in_flight_per_client: DEFAULT_MAX_IN_FLIGHT_PER_CLIENT,
            session_idle: DEFAULT_SESSION_IDLE,
        }
    }
}

impl ListenerLimits {
    /// No bound: for a router only ever called in-process by the gateway, whose own
    /// listener bounds each client already.
    pub fn unbounded() -> Self {
        Self {
            max_sessions: usize::MAX,
            max_sessions_per_client: usize::MAX,
            max_in_flight_per_client: usize::MAX,
            session_idle: DEFAULT_SESSION_IDLE,
        }
    }
}

/// A request refused past a bound: the answer the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitRefusal {
    /// The bound.
    pub limit: Limit,
    /// What the client reads: the bound, its key and value, and what to do.
    pub message: String,
}

impl LimitRefusal {
    /// The HTTP answer: 429 with a JSON-RPC error (`id` is the request's, when known), marked
    /// as an [`HttpRefusal`] so the listener counts and logs it and the gateway audits it.
    pub fn response(&self, id: Value) -> Response {
        let mut response = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            id,
            LIMIT_REACHED,
            self.message.clone(),
        );
        if self.limit == Limit::InFlightPerClient {
            // An answer frees a slot soon; a session only frees when one ends.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        HttpRefusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("limit {} reached", self.limit.key()),
        )
        .mark(response)
    }
}

/// What one client holds on the listener.
#[derive(Debug, Default)]
struct Held {
    /// Its sessions, as admitted; pruned against rmcp's live sessions when it opens another.
    sessions: Vec<SessionId>,
    /// Its sessions being opened (admitted, not answered yet).
    opening: usize,
    /// Its requests in service.
    in_flight: usize,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.opening == 0 && self.in_flight == 0
    }
}

#[derive(Debug, Default)]
struct Book {
    clients: HashMap<ClientKey, Held>,
    /// Sessions being opened, all clients together.
    opening: usize,
}

/// The bounds of one listener and what each client holds against them. One per `/mcp`
/// endpoint.
pub struct Bounds {
    limits: ListenerLimits,
    sessions: Arc<LocalSessionManager>,
    book: Mutex<Book>,
    metrics: Metrics,
}

impl std::fmt::Debug for Bounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bounds")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Bounds {
    /// `limits` over rmcp's `sessions`; refusals are counted in `metrics`.
    pub fn new(
        limits: ListenerLimits,
        sessions: Arc<LocalSessionManager>,
        metrics: Metrics,
    ) -> Self {
        Self {
            limits,
            sessions,
            book: Mutex::new(Book::default()),
            metrics,
        }
    }

    /// The bounds.
    pub fn limits(&self) -> ListenerLimits {
        self.limits
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn refuse(&self, limit: Limit, message: String) -> LimitRefusal {
        self.metrics.limit_refusal(limit.key());
        // The listener logs each refused request once (as an `HttpRefusal`).
        tracing::debug!(limit = limit.key(), %message, "refused past a bound");
        LimitRefusal { limit, message }
    }

    /// Admits one more request of `client` into service, or refuses it past
    /// `max_in_flight_per_client`. Without a client there is no per-client bound (the
    /// listener's concurrency limit bounds the whole). The slot is held until the returned
    /// guard, and every clone of it, is dropped.
    pub fn enter(self: &Arc<Self>, client: Option<&ClientKey>) -> Result<InFlight, LimitRefusal> {
        let Some(client) = client else {
            return Ok(InFlight::none());
        };
        let max = self.limits.max_in_flight_per_client;
        {
            let mut book = self.book();
            let held = book.clients.entry(client.clone()).or_default();
            if held.in_flight < max {
                held.in_flight += 1;
                return Ok(InFlight {
                    _slot: Some(Arc::new(Slot {
                        bounds: self.clone(),
                        client: client.clone(),
                    })),
                });
            }
        }
        Err(self.refuse(
            Limit::InFlightPerClient,
            format!(
                "too many requests in service: client `{}` already has {max} waiting for an answer, the limit ([limits] {} = {max}); wait for an answer before sending more",
                client.as_str(),
                Limit::InFlightPerClient.key(),
            ),
        ))
    }

    fn leave(&self, client: &ClientKey) {
        let mut book = self.book();
        if let Some(held) = book.clients.get_mut(client) {
            held.in_flight = held.in_flight.saturating_sub(1);
            if held.is_empty() {
                book.clients.remove(client);
            }
        }
    }

    /// Admits one more session for `client` (an `initialize` without a session), or
    /// refuses it past `max_sessions_per_client` or `max_sessions`. The admission holds a
    /// place until [`Opening::opened`] names the session rmcp made, or is dropped.
    pub async fn open_session(
        self: &Arc<Self>,
        client: Option<&ClientKey>,
    ) -> Result<Opening, LimitRefusal> {
        let idle = self.limits.session_idle.as_secs();
        let refusal = {
            let live = self.sessions.sessions.read().await;
            let mut book = self.book();
            let open = live.len() + book.opening;
            let mine = client.map(|client| {
                let held = book.clients.entry(client.clone()).or_default();
                // Sessions that ended (a DELETE, or idle) are gone from rmcp's map.
                held.sessions.retain(|id| live.contains_key(id));
                held.sessions.len() + held.opening
            });
            match (client, mine) {
                (Some(client), Some(mine)) if mine >= self.limits.max_sessions_per_client => {
                    let max = self.limits.max_sessions_per_client;
                    Some((
                        Limit::SessionsPerClient,
                        format!(
                            "too many open sessions: client `{}` has {mine} open, the limit ([limits] {} = {max}); end one (HTTP DELETE with its Mcp-Session-Id) or let one idle out ({idle} s)",
                            client.as_str(),
                            Limit::SessionsPerClient.key(),
                        ),
                    ))
                }
                _ if open >= self.limits.max_sessions => {
                    let max = self.limits.max_sessions;
                    Some((
                        Limit::Sessions,
                        format!(
                            "too many open sessions on this server: {open} open, the limit ([limits] {} = {max}); try again once one ends (an idle session ends after {idle} s)",
                            Limit::Sessions.key(),
                        ),
                    ))
                }
                _ => {
                    book.opening += 1;
                    if let Some(client) = client {
                        book.clients.entry(client.clone()).or_default().opening += 1;
                    }
                    None
                }
            }
        };
        match refusal {
            Some((limit, message)) => {
                if let Some(client) = client {
                    let mut book = self.book();
                    if book.clients.get(client).is_some_and(Held::is_empty) {
                        book.clients.remove(client);
                    }
                }
                Err(self.refuse(limit, message))
            }
            None => Ok(Opening {
                bounds: self.clone(),
                client: client.cloned(),
            }),
        }
    }
}

/// A request in service, counted against its client until this (and every clone) is
/// dropped: the response body sent, or the detached call it started finished.
#[derive(Debug, Clone)]
pub struct InFlight {
    /// Released when the last clone goes.
    _slot: Option<Arc<Slot>>,
}

impl InFlight {
    /// Counted against no client.
    pub fn none() -> Self {
        Self { _slot: None }
    }
}

#[derive(Debug)]
struct Slot {
    bounds: Arc<Bounds>,
    client: ClientKey,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.bounds.leave(&self.client);
    }
}

/// A session admitted and being opened.
#[derive(Debug)]
pub struct Opening {
    bounds: Arc<Bounds>,
    client: Option<ClientKey>,
}

impl Opening {
    /// rmcp made session `id` for it: counted against its client from now on, until rmcp
    /// ends it.
    pub fn opened(self, id: &str) {
        if let Some(client) = &self.client {
            let mut book = self.bounds.book();
            book.clients
                .entry(client.clone())
                .or_default()
                .sessions
                .push(id.into());
        }
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        let mut book = self.bounds.book();
        book.opening = book.opening.saturating_sub(1);
        if let Some(client) = &self.client
            && let Some(held) = book.clients.get_mut(client)
        {
            held.opening = held.opening.saturating_sub(1);
            if held.is_empty() {
                book.clients.remove(client);
            }
        }
    }
}

/// Approval requests waiting for the owner in `vault_root`'s `Pending_Approval/<domain>/`:
/// the regular `.md` files there (links are not followed). Blocking.
pub fn pending_approvals(vault_root: &Path) -> std::io::Result<usize> {
    let mut count = 0;
    for domain in Domain::ALL {
        let dir = vault_root.join(PENDING_APPROVAL).join(domain.as_str());
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let md = entry.path().extension().is_some_and(|e| e == "md");
            if md && entry.file_type()?.is_file() {
                count += 1;
            }
        }
    }
    Ok(count)
}

/// Whether one more approval request may be drafted in `vault_root`, fewer than `max`
/// waiting: a draft tool answers the refusal as it is ([`ToolError::Limit`], naming the
/// bound and its key; or not executed when the folder cannot be read). Blocking.
pub fn check_pending_approvals(vault_root: &Path, max: usize) -> Result<(), ToolError> {
    let pending = pending_approvals(vault_root).map_err(|e| {
        ToolError::NotExecuted(format!(
            "nothing was drafted: cannot count the requests in {PENDING_APPROVAL}/: {e}"
        ))
    })?;
    if pending < max {
        return Ok(());
    }
    Err(ToolError::Limit {
        limit: Limit::PendingApprovals,
        reason: format!(
            "{PENDING_APPROVAL}/ already holds {pending} approval requests waiting for the owner, the limit ([limits] {} = {max}); nothing was drafted: the owner decides some first (`aie approvals list`)",
            Limit::PendingApprovals.key()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(limits: ListenerLimits) -> (Arc<Bounds>, Metrics) {
        let metrics = Metrics::new();
        let sessions = Arc::new(LocalSessionManager::default());
        (
            Arc::new(Bounds::new(limits, sessions, metrics.clone())),
            metrics,
        )
    }

    fn small() -> ListenerLimits {
        ListenerLimits {
            max_sessions: 3,
            max_sessions_per_client: 2,
            max_in_flight_per_client: 2,
            session_idle: Duration::from_secs(60),
        }
    }

    /// A client's requests past its bound are refused naming the key; a finished one frees
    /// its slot, and other clients (and requests without one) are not held back.
    #[test]
    fn in_flight_is_bounded_per_client() {
        let (bounds, metrics) = bounds(small());
        let (a, b) = (ClientKey::new("a"), ClientKey::new("b"));
        let first = bounds.enter(Some(&a)).expect("first");
        let second = bounds.enter(Some(&a)).expect("second");
        let refused = bounds.enter(Some(&a)).expect_err("third");
        assert_eq!(refused.limit, Limit::InFlightPerClient);
        assert!(
            refused
                .message
                .contains("[limits] max_in_flight_per_client = 2"),
            "{}",
            refused.message
        );
        bounds.enter(Some(&b)).expect("another client");
        for _ in 0..10 {
            bounds.enter(None).expect("no client, no per-client bound");
        }
        let kept = second.clone();
        drop(second);
        bounds
            .enter(Some(&a))
            .expect_err("a clone still holds the slot");
        drop((first, kept));
        bounds.enter(Some(&a)).expect("freed");
        assert!(
            metrics
                .render()
                .contains(r#"aie_mcp_limit_refusals_total{limit="max_in_flight_per_client"} 2"#)
        );
        assert!(
            bounds.book().clients.is_empty(),
            "nothing held, nothing kept"
        );
    }

    /// Sessions being opened count against the client and the listener; a dropped opening
    /// frees its place.
    #[tokio::test]
    async fn session_openings_are_bounded_per_client_and_in_total() {
        let (bounds, _) = bounds(small());
        let (a, b) = (ClientKey::new("a"), ClientKey::new("b"));
        let a1 = bounds.open_session(Some(&a)).await.expect("a1");
        let _a2 = bounds.open_session(Some(&a)).await.expect("a2");
        let refused = bounds.open_session(Some(&a)).await.expect_err("a3");
        assert_eq!(refused.limit, Limit::SessionsPerClient);
        assert!(
            refused.message.contains("client `a` has 2 open"),
            "{}",
            refused.message
        );
        let _b1 = bounds.open_session(Some(&b)).await.expect("b1");
        let total = bounds.open_session(None).await.expect_err("total");
        assert_eq!(total.limit, Limit::Sessions);
        assert!(
            total.message.contains("[limits] max_sessions = 3"),
            "{}",
            total.message
        );
        drop(a1);
        bounds.open_session(None).await.expect("a place freed");
    }

    /// An opened session counts against its client while rmcp holds it, and no longer
    /// once rmcp has ended it.
    #[tokio::test]
    async fn ended_sessions_no_longer_count() {
        let (bounds, _) = bounds(small());
        let a = ClientKey::new("a");
        for _ in 0..2 {
            let (id, _transport) = {
                use rmcp::transport::streamable_http_server::session::SessionManager;
                bounds.sessions.create_session().await.expect("session")
            };
            bounds
                .open_session(Some(&a))
                .await
                .expect("admitted")
                .opened(&id);
        }
        bounds.open_session(Some(&a)).await.expect_err("two open");
        let first = bounds.book().clients[&a].sessions[0].clone();
        bounds.sessions.sessions.write().await.remove(&first);
        bounds.open_session(Some(&a)).await.expect("one ended");
    }

    /// Pending requests are the `.md` files under `Pending_Approval/<domain>/`; at the
    /// bound, drafting is refused naming the key.
    #[test]
    fn pending_approvals_are_counted_and_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(pending_approvals(dir.path()).expect("count"), 0);
        for (domain, name) in [("email", "a.md"), ("email", "b.md"), ("social", "c.md")] {
            let folder = dir.path().join(PENDING_APPROVAL).join(domain);
            std::fs::create_dir_all(&folder).expect("mkdir");
            std::fs::write(folder.join(name), "x").expect("write");
        }
        std::fs::write(dir.path().join("Pending_Approval/email/notes.txt"), "x").expect("write");
        assert_eq!(pending_approvals(dir.path()).expect("count"), 3);
        check_pending_approvals(dir.path(), 4).expect("room for one more");
        let why = check_pending_approvals(dir.path(), 3)
            .expect_err("full")
            .to_string();
        assert!(
            why.contains("holds 3") && why.contains("[limits] max_pending_approvals = 3"),
            "{why}"
        );
    }
}
