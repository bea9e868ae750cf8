//! The one way a server becomes an HTTP service: `/mcp` plus `/healthz`, `/readyz` and
//! `/metrics`, behind the same layers on every listener, served with graceful shutdown and
//! optional TLS.

use std::{
    future::Future, io, net::SocketAddr, path::PathBuf, pin::Pin, sync::Arc, time::Duration,
};

use axum::{
    Router,
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    timeout::{RequestBodyTimeoutLayer, TimeoutLayer},
    trace::TraceLayer,
};

use crate::metrics::Metrics;

/// Settings every listener shares.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The address served; its host is always an accepted `Host`.
    pub listen: SocketAddr,
    /// Further accepted `Host` names (beyond loopback names and the listen address).
    pub allowed_hosts: Vec<String>,
    /// Browser origins allowed besides loopback ones, e.g. `https://ops.example.com`.
    pub allowed_origins: Vec<String>,
    /// Largest accepted request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// How long a request may take until its response starts (408 beyond), and how long a
    /// client may take to send its body.
    pub request_timeout: Duration,
    /// Requests served at once; more wait.
    pub concurrency_limit: usize,
    /// Open sessions and requests in service per client, and how long an idle session
    /// lives ([`crate::bounds`]).
    pub limits: crate::bounds::ListenerLimits,
    /// Certificate and key for TLS; plain HTTP without.
    pub tls: Option<TlsFiles>,
}

impl HttpOptions {
    /// Defaults for a listener on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            max_body_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(60),
            concurrency_limit: 512,
            limits: crate::bounds::ListenerLimits::default(),
            tls: None,
        }
    }
}

/// PEM files for TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
}

/// Answers `/readyz`: `Ok` when ready, else the reason.
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// A readiness check that is always ready.
pub fn always_ready() -> ReadyCheck {
    Arc::new(|| Box::pin(async { Ok(()) }))
}

/// A request the HTTP layers refused before it could become an MCP message: no or a wrong
/// token, a foreign `Host` or `Origin`, a body over the limit or not received. The layer that
/// refuses puts it in the response's extensions (the client never sees it); the listener
/// counts and logs each one ([`app`]), and the gateway writes it to its audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRefusal {
    /// The status the client got.
    pub status: StatusCode,
    /// Why, in a few words, holding no credential and no body: `no bearer token`,
    /// `Origin https://evil.example not allowed`.
    pub reason: String,
}

impl HttpRefusal {
    /// A refusal with `status`, for `reason`.
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }

    /// `response`, marked as this refusal.
    pub fn mark(self, mut response: Response) -> Response {
        response.extensions_mut().insert(self);
        response
    }
}

impl std::fmt::Display for HttpRefusal {
    /// `401: no bearer token`: the status, then why.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status.as_u16(), self.reason)
    }
}

/// Longest client-sent value (a `Host`, an `Origin`) quoted in a refusal's reason.
const MAX_QUOTED: usize = 128;

/// A client-sent header value as text fit for a log line: visible ASCII kept, anything else
/// (controls, spaces, bytes beyond ASCII) shown as `?`, cut to `max` characters, marked `…`.
pub fn printable(value: &[u8], max: usize) -> String {
    let mut text: String = value
        .iter()
        .take(max)
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect();
    if value.len() > max {
        text.push('…');
    }
    text
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    ready: ReadyCheck,
}

#[derive(Clone)]
struct Guard {
    hosts: Arc<Vec<String>>,
    origins: Arc<Vec<String>>,
}

/// Builds the listener's router: `mcp` (a router serving `/mcp`) plus health and metrics,
/// wrapped in the shared layers.
pub fn app(mcp: Router, opts: &HttpOptions, metrics: Metrics, ready: ReadyCheck) -> Router {
    let guard = Guard {
        hosts: Arc::new(allowed_hosts(opts)),
        origins: Arc::new(
            opts.allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        ),
    };
    let state = AppState {
        metrics: metrics.clone(),
        ready,
    };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
        .merge(mcp)
        .layer(
            ServiceBuilder::new()
                // Every request gets an id, echoed back and carried in its span, so a log line
                // and a client's complaint can be matched.
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                    let id = req
                        .extensions()
                        .get::<RequestId>()
                        .and_then(|id| id.header_value().to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", id, method = %req.method(), path = req.uri().path())
                }))
                .layer(PropagateRequestIdLayer::x_request_id())
                // Every refusal of the layers below (and of `/mcp`'s own: token, body) is
                // counted and logged here, once, inside the request's span.
                .layer(middleware::from_fn_with_state(metrics, count_refusals))
                // A DNS-rebinding page or a foreign site never reaches a handler.
                .layer(middleware::from_fn_with_state(guard, check_host_and_origin))
                // Slow or stuck requests are cut off instead of holding a worker forever.
                .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, opts.request_timeout))
                .layer(RequestBodyTimeoutLayer::new(opts.request_timeout))
                // Bound the work in flight; excess requests wait for a slot.
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(opts.concurrency_limit)),
        )
}

fn allowed_hosts(opts: &HttpOptions) -> Vec<String> {
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "[::1]", "::1"]
        .iter()
        .map(|h| (*h).to_owned())
        .collect();
    let listen = opts.listen.ip();
    if !listen.is_unspecified() {
        hosts.push(match listen {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        });
    }
    hosts.extend(opts.allowed_hosts.iter().map(|h| h.to_ascii_lowercase()));
    hosts
}

/// The host part of an authority (`host:port`, `[v6]:port`).
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().unwrap_or(authority);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

fn is_loopback_origin(origin: &str) -> bool {
    let Some((_, rest)) = origin.split_once("://") else {
        return false;
    };
    matches!(host_of(rest), "localhost" | "127.0.0.1" | "[::1]")
}

async fn check_host_and_origin(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        });
    let Some(authority) = authority else {
        return HttpRefusal::new(StatusCode::BAD_REQUEST, "no Host header").mark(plain(
            StatusCode::BAD_REQUEST,
            "Bad Request: missing Host header",
        ));
    };
    let host = host_of(&authority).to_ascii_lowercase();
    if !guard.hosts.contains(&host) {
        let reason = format!(
            "Host {} not allowed",
            printable(host.as_bytes(), MAX_QUOTED)
        );
        return HttpRefusal::new(StatusCode::FORBIDDEN, reason).mark(plain(
            StatusCode::FORBIDDEN,
            "Forbidden: Host not allowed (add it to the listener's allowed hosts)",
        ));
    }
    if let Some(value) = req.headers().get(header::ORIGIN) {
        let origin = value
            .to_str()
            .unwrap_or("")
            .trim_end_matches('/')
            .to_ascii_lowercase();
        if !is_loopback_origin(&origin) && !guard.origins.contains(&origin) {
            let reason = format!(
                "Origin {} not allowed",
                printable(value.as_bytes(), MAX_QUOTED)
            );
            return HttpRefusal::new(StatusCode::FORBIDDEN, reason).mark(plain(
                StatusCode::FORBIDDEN,
                "Forbidden: Origin not allowed (add it to the listener's allowed origins)",
            ));
        }
    }
    next.run(req).await
}

/// Counts and logs each refused request (an [`HttpRefusal`] on its response).
async fn count_refusals(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    if let Some(refusal) = response.extensions().get::<HttpRefusal>() {
        metrics.http_refusal(refusal.status.as_u16());
        tracing::warn!(status = refusal.status.as_u16(), reason = %refusal.reason, "refused");
    }
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    match (state.ready)().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Loads a rustls server config (ring provider, h2 and http/1.1 by ALPN) from PEM files.
pub fn load_tls(files: &TlsFiles) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use anyhow::Context as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("reading TLS certificate {}", files.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing TLS certificate {}", files.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading TLS key {}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How long in-flight calls get to finish after shutdown begins, before open streams are
/// closed.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish (up to [`DRAIN_GRACE`]), cancels `streams` (closing SSE
/// streams and sessions), and returns once every connection is closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    streams: CancellationToken,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that dribbles its headers is dropped instead of holding a connection.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let builder = Arc::new(builder);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let result = match acceptor {
                None => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    let stream = match handshake.await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            return tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                    };
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    tokio::select! {
        () = &mut drained => return Ok(()),
        () = tokio::time::sleep(DRAIN_GRACE) => {}
    }
    streams.cancel();
    if tokio::time::timeout(DRAIN_GRACE, drained).await.is_err() {
        tracing::warn!("shutdown: some connections did not close in time");
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = futures::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("signal received, shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hosts are compared without their port, IPv6 literals included.
    #[test]
    fn host_of_strips_ports() {
        assert_eq!(host_of("localhost:8080"), "localhost");
        assert_eq!(host_of("[::1]:80"), "[::1]");
        assert_eq!(host_of("example.com"), "example.com");
    }

    /// Loopback origins pass on any port; others do not.
    #[test]
    fn loopback_origins_are_recognised() {
        assert!(is_loopback_origin("http://localhost:3000"));
        assert!(is_loopback_origin("http://127.0.0.1"));
        assert!(is_loopback_origin("http://[::1]:9"));
        assert!(!is_loopback_origin("http://evil.example.com"));
        assert!(!is_loopback_origin("http://localhost.evil.com"));
        assert!(!is_loopback_origin("null"));
    }

    /// Client-sent values are quoted as visible ASCII only, and bounded.
    #[test]
    fn printable_replaces_controls_and_cuts() {
        assert_eq!(
            printable(b"https://evil.example", 64),
            "https://evil.example"
        );
        assert_eq!(printable(b"a b\r\n\xffc", 64), "a?b???c");
        assert_eq!(printable(b"abcdef", 3), "abc…");
    }
}
