//! How the gateway reaches a backend. Every backend is an MCP server behind the same
//! Streamable HTTP endpoint: an upstream over the network (reqwest on rustls), or a server
//! aie hosts itself, whose `/mcp` router is called in-process (stateless requests) and
//! whose legacy sessions run over an in-memory duplex pipe. Either way the gateway speaks
//! MCP to it exactly as it would to a remote server.

use std::{sync::Arc, time::Duration};

use aie_shared::{
    DirectCalls, HttpOptions, Metrics,
    direct::DirectFuture,
    rmcp::{
        ServerHandler, ServiceExt as _,
        model::JsonObject,
        service::{ClientLifecycleMode, RoleClient, RunningService, serve_client_with_lifecycle},
        transport::{
            StreamableHttpClientTransport, async_rw::AsyncRwTransport,
            streamable_http_client::StreamableHttpClientTransportConfig,
        },
    },
};
use axum::{Router, body::Body};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::relay::{Relay, Relaying};

/// The size of each in-memory pipe between the gateway and a hosted server's session.
const DUPLEX_BUFFER: usize = 256 * 1024;

/// A server aie hosts in its own process, type-erased.
pub trait Hosted: Send + Sync + 'static {
    /// Its `/mcp` router (stateless requests are sent through it).
    fn router(&self) -> Router;
    /// Serves one legacy session on `io` until the gateway's end closes.
    fn serve_session(&self, io: tokio::io::DuplexStream);
    /// Whether its handler answers this call of `tool` directly ([`DirectCalls`]).
    fn answers_directly(&self, tool: &str, parts: &http::request::Parts) -> bool;
    /// Calls `tool` on its handler directly, without the MCP transport.
    fn call_directly<'a>(
        &'a self,
        tool: &'a str,
        arguments: Option<JsonObject>,
        parts: &'a http::request::Parts,
    ) -> DirectFuture<'a>;
}

/// A hosted `ServerHandler`: every session gets a clone, as over HTTP.
struct HostedHandler<H> {
    handler: H,
    router: Router,
}

impl<H> Hosted for HostedHandler<H>
where
    H: ServerHandler + DirectCalls + Clone + Send + Sync + 'static,
{
    fn router(&self) -> Router {
        self.router.clone()
    }

    fn answers_directly(&self, tool: &str, parts: &http::request::Parts) -> bool {
        self.handler.answers_directly(tool, parts)
    }

    fn call_directly<'a>(
        &'a self,
        tool: &'a str,
        arguments: Option<JsonObject>,
        parts: &'a http::request::Parts,
    ) -> DirectFuture<'a> {
        self.handler.call_directly(tool, arguments, parts)
    }

    fn serve_session(&self, io: tokio::io::DuplexStream) {
        let handler = self.handler.clone();
        tokio::spawn(async move {
            match handler.serve(io).await {
                Ok(running) => {
                    let _ = running.waiting().await;
                }
                Err(e) => tracing::debug!(error = %e, "in-process session did not start"),
            }
        });
    }
}

/// Hosts `handler` in-process. `streams` closes its open streams when the gateway stops.
pub fn host<H>(handler: H, streams: CancellationToken) -> Arc<dyn Hosted>
where
    H: ServerHandler + DirectCalls + Clone + Send + Sync + 'static,
{
    // The router is only ever called in-process, so its listen address is a placeholder;
    // its metrics are its own (the gateway's listener counts the client's requests), and it
    // has no bounds of its own: the gateway's listener bounds each client already.
    let mut opts = HttpOptions::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    opts.limits = aie_shared::ListenerLimits::unbounded();
    let router = aie_shared::streamable_http(handler.clone(), &opts, Metrics::new(), streams);
    Arc::new(HostedHandler { handler, router })
}

/// The way to one backend.
#[derive(Clone)]
pub enum Link {
    /// An MCP server at `url`, over the network.
    Http {
        /// Its Streamable HTTP endpoint.
        url: Arc<str>,
        /// The shared HTTP client (connection pool).
        client: reqwest::Client,
        /// Headers the operator configured for this upstream (its own credentials), sent
        /// with every request. Never the client's: those stop at the gateway.
        headers: HeaderMap,
    },
    /// A server in this process.
    InProcess(Arc<dyn Hosted>),
}

impl Link {
    /// Where this backend is, for messages.
    pub fn describe(&self) -> String {
        match self {
            Link::Http { url, .. } => url.to_string(),
            Link::InProcess(_) => "in-process".to_owned(),
        }
    }

    /// POSTs one JSON-RPC message; the response's body streams.
    pub async fn post(&self, body: Bytes, headers: HeaderMap) -> Result<Response<Body>, String> {
        match self {
            Link::Http {
                url,
                client,
                headers: configured,
            } => {
                let mut headers = headers;
                for (name, value) in configured {
                    headers.insert(name.clone(), value.clone());
                }
                let response = client
                    .post(url.as_ref())
                    .headers(headers)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| describe_reqwest_error(&e))?;
                let response: Response<reqwest::Body> = response.into();
                Ok(response.map(Body::new))
            }
            Link::InProcess(hosted) => {
                let mut request = Request::new(Body::from(body));
                *request.method_mut() = Method::POST;
                *request.uri_mut() = http::Uri::from_static("/mcp");
                *request.headers_mut() = headers;
                // rmcp refuses a request without a Host; an in-process call has no network
                // address, so it names loopback, which every listener accepts.
                request
                    .headers_mut()
                    .entry(http::header::HOST)
                    .or_insert(http::HeaderValue::from_static("localhost"));
                match hosted.router().oneshot(request).await {
                    Ok(response) => Ok(response),
                    Err(never) => match never {},
                }
            }
        }
    }

    /// Opens an MCP session to the backend, `relay` being its client side, in `lifecycle`.
    pub async fn open_session(
        &self,
        relay: Relay,
        lifecycle: ClientLifecycleMode,
        timeout: Duration,
    ) -> Result<RunningService<RoleClient, Relay>, String> {
        let opening = async {
            match self {
                Link::Http {
                    url,
                    client,
                    headers,
                } => {
                    let custom = headers
                        .iter()
                        .map(|(name, value)| (name.clone(), value.clone()))
                        .collect();
                    let config = StreamableHttpClientTransportConfig::with_uri(url.clone())
                        .custom_headers(custom);
                    let transport =
                        StreamableHttpClientTransport::with_client(client.clone(), config);
                    let transport = Relaying::new(transport, relay.clone());
                    serve_client_with_lifecycle(relay, transport, lifecycle)
                        .await
                        .map_err(|e| e.to_string())
                }
                Link::InProcess(hosted) => {
                    let (server_io, client_io) = tokio::io::duplex(DUPLEX_BUFFER);
                    hosted.serve_session(server_io);
                    let (read, write) = tokio::io::split(client_io);
                    let transport =
                        Relaying::new(AsyncRwTransport::new_client(read, write), relay.clone());
                    serve_client_with_lifecycle(relay, transport, lifecycle)
                        .await
                        .map_err(|e| e.to_string())
                }
            }
        };
        match tokio::time::timeout(timeout, opening).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no answer to the session handshake within {} s",
                timeout.as_secs_f32()
            )),
        }
    }
}

/// A reqwest error with its causes, which is where the useful part (connection refused,
/// DNS, TLS) lives.
fn describe_reqwest_error(error: &reqwest::Error) -> String {
    let mut text = if error.is_connect() {
        "cannot connect".to_owned()
    } else if error.is_timeout() {
        "timed out".to_owned()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The HTTP client every upstream shares: rustls on ring, a short connect timeout so a dead
/// upstream fails fast, no overall timeout (tools may run long; the client's own request
/// timeout bounds them).
pub fn http_client(connect_timeout: Duration) -> Result<reqwest::Client, String> {
    aie_shared::init_crypto();
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        // Upstream URLs are configured; a redirect would carry requests somewhere else.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}
