//! The `/mcp` endpoint in front of rmcp's Streamable HTTP service: it admits each request
//! and each new session within the client's bounds ([`crate::bounds`]), reads each body once
//! (enforcing the size limit), answers what is not a JSON-RPC message with the error the
//! JSON-RPC spec prescribes, fans out the batches that 2025-03-26 allows, answers plain
//! 2026-07-28 tool calls directly ([`crate::direct`]), labels the request for metrics, and
//! records it when its response ends.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::{Service, ServiceExt};

use crate::{
    bounds::{Bounds, ClientKey, InFlight},
    direct::{self, DirectCalls},
    http::HttpRefusal,
    metrics::{CallLabels, Metrics},
};

/// JSON-RPC: the body is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: the JSON is not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC: the server failed while answering.
pub const INTERNAL_ERROR: i64 = -32603;

/// The protocol revision whose transport still allows JSON-RPC batches.
const BATCH_ERA: &str = "2025-03-26";

/// State of the endpoint: the inner MCP service and what the endpoint measures.
#[derive(Clone)]
pub struct Endpoint<S> {
    /// rmcp's Streamable HTTP service.
    pub inner: S,
    /// Where requests are recorded.
    pub metrics: Metrics,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// The handler, for the calls it answers without rmcp's per-request service.
    pub direct: Arc<dyn DirectCalls>,
    /// rmcp's sessions, for the calls answered directly within one.
    pub(crate) sessions: Arc<direct::Sessions>,
    /// What each client may hold: sessions, requests in service.
    pub(crate) bounds: Arc<Bounds>,
    /// The listener's request timeout, to tell a request it cut off from one whose client
    /// went away.
    pub(crate) request_timeout: std::time::Duration,
}

type Inner = Response<Body>;

/// Serves one HTTP request on `/mcp`.
pub async fn serve<S, B>(State(ep): State<Endpoint<S>>, req: Request) -> Response
where
    S: Service<Request, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let client = req.extensions().get::<ClientKey>().cloned();
    // A GET is a session's standing stream, not work in service; the sessions bound it.
    let slot = if req.method() == http::Method::GET {
        InFlight::none()
    } else {
        match ep.bounds.enter(client.as_ref()) {
            Ok(slot) => slot,
            Err(refused) => {
                let response = refused.response(Value::Null);
                return metered(response, &ep.metrics, unlabelled(), Instant::now());
            }
        }
    };
    let mut pending = Unanswered {
        metrics: ep.metrics.clone(),
        labels: unlabelled(),
        started: Instant::now(),
        request_timeout: ep.request_timeout,
        answered: false,
    };
    let response = respond(&ep, req, client.as_ref(), &slot, &mut pending).await;
    pending.answered = true;
    // The request counts against its client until its answer (an SSE stream too) is sent.
    response.map(|body| {
        Body::new(Holding {
            inner: body,
            _slot: slot,
        })
    })
}

/// A response body that keeps its request counted in service until it is sent or dropped.
struct Holding {
    inner: Body,
    _slot: InFlight,
}

impl http_body::Body for Holding {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request on its way to an answer. If its future is dropped first (its client went away,
/// or the request timeout cut it off), it is recorded on drop with what is known of it, so
/// a call abandoned halfway still counts: status 408 once the request timeout has passed,
/// otherwise 499 (the client closed the request, as nginx names it).
struct Unanswered {
    metrics: Metrics,
    /// Filled in as soon as the request's method and tool are known.
    labels: CallLabels,
    started: Instant,
    request_timeout: std::time::Duration,
    answered: bool,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let elapsed = self.started.elapsed();
        let status = if elapsed >= self.request_timeout {
            408
        } else {
            499
        };
        self.metrics
            .observe(&self.labels, status, elapsed.as_secs_f64());
    }
}

/// Answers one request of `client`, in service as `slot`; `pending` learns its labels as
/// soon as they are known.
async fn respond<S, B>(
    ep: &Endpoint<S>,
    req: Request,
    client: Option<&ClientKey>,
    slot: &InFlight,
    pending: &mut Unanswered,
) -> Response
where
    S: Service<Request, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let started = pending.started;
    if req.method() != http::Method::POST {
        let labels = CallLabels {
            method: req.method().as_str().to_owned(),
            tool: String::new(),
        };
        pending.labels = labels.clone();
        let delete = req.method() == http::Method::DELETE;
        let mut response = call(&ep.inner, req).await;
        if delete && response.status() == StatusCode::ACCEPTED {
            // rmcp answers a session's DELETE with 202; the official SDKs' servers answer
            // 200, and the Python SDK's client warns on anything but 200 or 204.
            *response.status_mut() = StatusCode::OK;
        }
        return metered(response, &ep.metrics, labels, started);
    }
    let (parts, body) = req.into_parts();
    let bytes = match read_body(body, ep.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => {
            let message = format!("request body exceeds {} bytes", ep.max_body_bytes);
            let response = error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                Value::Null,
                INVALID_REQUEST,
                message,
            );
            let refusal = HttpRefusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body over {} bytes", ep.max_body_bytes),
            );
            return metered(refusal.mark(response), &ep.metrics, unlabelled(), started);
        }
        Err(BodyError::Unreadable(e)) => {
            // Too slow (the listener's body timeout) or cut off: refused before any parsing.
            let response = error_response(
                StatusCode::BAD_REQUEST,
                Value::Null,
                PARSE_ERROR,
                format!("could not read the body: {e}"),
            );
            let refusal =
                HttpRefusal::new(StatusCode::BAD_REQUEST, format!("body not received: {e}"));
            return metered(refusal.mark(response), &ep.metrics, unlabelled(), started);
        }
    };
    if let Some(response) = direct::answer(
        &ep.direct,
        &ep.sessions,
        &parts,
        &bytes,
        &mut pending.labels,
        slot,
    )
    .await
    {
        ep.metrics.direct_call(&pending.labels);
        return metered(response, &ep.metrics, pending.labels.clone(), started);
    }
    let message: Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(e) => {
            let response = error_response(
                StatusCode::BAD_REQUEST,
                Value::Null,
                PARSE_ERROR,
                format!("Parse error: {e}"),
            );
            return metered(response, &ep.metrics, unlabelled(), started);
        }
    };
    match message {
        Value::Object(_) => {
            let labels = labels_of(&message);
            if let Err(why) = check_envelope(&message) {
                let id = message.get("id").cloned().unwrap_or(Value::Null);
                let response = error_response(StatusCode::BAD_REQUEST, id, INVALID_REQUEST, why);
                return metered(response, &ep.metrics, labels, started);
            }
            pending.labels = labels.clone();
            // An `initialize` without a session opens one: admitted within the bounds.
            let opening =
                if labels.method == "initialize" && !parts.headers.contains_key("mcp-session-id") {
                    match ep.bounds.open_session(client).await {
                        Ok(opening) => Some(opening),
                        Err(refused) => {
                            let id = message.get("id").cloned().unwrap_or(Value::Null);
                            return metered(refused.response(id), &ep.metrics, labels, started);
                        }
                    }
                } else {
                    None
                };
            let request = Request::from_parts(parts, Body::from(bytes));
            let response = match opening {
                None => call(&ep.inner, request).await,
                // Run to its end in a task of its own, so the session rmcp makes is counted
                // against its client even if the client hangs up before the answer.
                Some(opening) => {
                    let inner = ep.inner.clone();
                    let opened = tokio::spawn(async move {
                        let response = match inner.oneshot(request).await {
                            Ok(response) => response.map(Body::new),
                            Err(never) => match never {},
                        };
                        if let Some(id) = response
                            .headers()
                            .get("mcp-session-id")
                            .and_then(|v| v.to_str().ok())
                        {
                            opening.opened(id);
                        }
                        response
                    });
                    match opened.await {
                        Ok(response) => response,
                        Err(e) => error_response(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            message.get("id").cloned().unwrap_or(Value::Null),
                            INTERNAL_ERROR,
                            format!("the session could not be opened: {e}"),
                        ),
                    }
                }
            };
            metered(response, &ep.metrics, labels, started)
        }
        Value::Array(items) => {
            let labels = CallLabels {
                method: "batch".into(),
                tool: String::new(),
            };
            pending.labels = labels.clone();
            let response = batch(&ep.inner, parts, items).await;
            metered(response, &ep.metrics, labels, started)
        }
        _ => {
            let response = error_response(
                StatusCode::BAD_REQUEST,
                Value::Null,
                INVALID_REQUEST,
                "Invalid Request: a JSON-RPC message is a JSON object".into(),
            );
            metered(response, &ep.metrics, unlabelled(), started)
        }
    }
}

/// How much of an oversized body is still read, and dropped, after its 413 is answered.
const DRAIN_BYTES: usize = 64 << 20;

/// Why a body was not read.
enum BodyError {
    /// Over the limit.
    TooLarge,
    /// Too slow, or cut off.
    Unreadable(axum::Error),
}

/// Reads a body of at most `limit` bytes. Past the limit, the rest is read and dropped in
/// the background (up to [`DRAIN_BYTES`], within the listener's body timeout) while the 413
/// goes out, so a client still sending can finish and read the answer instead of having its
/// connection reset mid-write.
async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, BodyError> {
    let mut read = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Unreadable)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if read.len() + data.len() > limit {
            tokio::spawn(async move {
                let mut dropped = 0usize;
                while dropped < DRAIN_BYTES
                    && let Some(Ok(frame)) = body.frame().await
                {
                    dropped += frame.data_ref().map_or(0, Bytes::len);
                }
            });
            return Err(BodyError::TooLarge);
        }
        read.extend_from_slice(&data);
    }
    Ok(read.freeze())
}

fn unlabelled() -> CallLabels {
    CallLabels {
        method: "-".into(),
        tool: String::new(),
    }
}

async fn call<S, B>(inner: &S, req: Request) -> Inner
where
    S: Service<Request, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    match inner.clone().oneshot(req).await {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    }
}

/// Checks the JSON-RPC 2.0 envelope rmcp relies on, so a wrong shape gets -32600 with a
/// reason instead of a transport-level refusal.
fn check_envelope(message: &Value) -> Result<(), String> {
    if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(r#"Invalid Request: "jsonrpc" must be "2.0""#.into());
    }
    match message.get("method") {
        Some(Value::String(_)) => {}
        Some(_) => return Err(r#"Invalid Request: "method" must be a string"#.into()),
        None if message.get("result").is_some() || message.get("error").is_some() => {}
        None => return Err(r#"Invalid Request: "method" is missing"#.into()),
    }
    match message.get("id") {
        None | Some(Value::String(_) | Value::Number(_)) => Ok(()),
        Some(Value::Null) if message.get("error").is_some() => Ok(()),
        Some(_) => Err(r#"Invalid Request: "id" must be a string or a number"#.into()),
    }
}

fn labels_of(message: &Value) -> CallLabels {
    let method = message.get("method").and_then(Value::as_str);
    let tool = match method {
        Some("tools/call") => message
            .pointer("/params/name")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        _ => "",
    };
    CallLabels {
        method: method.unwrap_or("response").to_owned(),
        tool: tool.to_owned(),
    }
}

/// A batch. Only the 2025-03-26 transport allows one (a request without
/// `MCP-Protocol-Version` is taken as 2025-03-26, as that revision prescribes); later
/// revisions removed batching, so there the batch is refused as a whole.
async fn batch<S, B>(inner: &S, parts: http::request::Parts, items: Vec<Value>) -> Inner
where
    S: Service<Request, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let version = parts
        .headers
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(BATCH_ERA);
    if version != BATCH_ERA {
        let message = format!(
            "Invalid Request: JSON-RPC batches are not supported in protocol version {version}"
        );
        return error_response(
            StatusCode::BAD_REQUEST,
            Value::Null,
            INVALID_REQUEST,
            message,
        );
    }
    if items.is_empty() {
        let message = "Invalid Request: empty batch".to_owned();
        return error_response(
            StatusCode::BAD_REQUEST,
            Value::Null,
            INVALID_REQUEST,
            message,
        );
    }
    let mut answers = Vec::new();
    for item in items {
        let id = item.get("id").cloned();
        if let Err(why) = check_envelope(&item) {
            answers.push(error_object(
                id.unwrap_or(Value::Null),
                INVALID_REQUEST,
                why,
            ));
            continue;
        }
        if item.get("method").and_then(Value::as_str) == Some("initialize") {
            let why = "Invalid Request: initialize must not be part of a batch".to_owned();
            answers.push(error_object(
                id.unwrap_or(Value::Null),
                INVALID_REQUEST,
                why,
            ));
            continue;
        }
        let mut req = Request::new(Body::from(item.to_string()));
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = parts.uri.clone();
        *req.headers_mut() = parts.headers.clone();
        // What the layers put there (the gateway's client identity) goes with each item.
        *req.extensions_mut() = parts.extensions.clone();
        let response = call(inner, req).await;
        let status = response.status();
        let is_sse = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let body = response
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let Some(id) = id else { continue };
        let answer = if is_sse {
            sse_messages(&body)
                .into_iter()
                .find(|m| m.get("id") == Some(&id))
        } else {
            serde_json::from_slice::<Value>(&body)
                .ok()
                .filter(|m| m.get("jsonrpc").is_some())
        };
        answers.push(answer.unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&body).trim().to_owned();
            error_object(
                id,
                INVALID_REQUEST,
                format!("HTTP {}: {text}", status.as_u16()),
            )
        }));
    }
    if answers.is_empty() {
        return StatusCode::ACCEPTED.into_response();
    }
    json_response(StatusCode::OK, Value::Array(answers))
}

/// The JSON messages carried by the `data:` lines of an SSE body.
fn sse_messages(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            serde_json::from_str(&data.join("\n")).ok()
        })
        .collect()
}

fn error_object(id: Value, code: i64, message: String) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn json_response(status: StatusCode, body: Value) -> Inner {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

/// A JSON-RPC error answered over HTTP with `status`.
pub fn error_response(status: StatusCode, id: Value, code: i64, message: String) -> Inner {
    json_response(status, error_object(id, code, message))
}

fn metered(response: Inner, metrics: &Metrics, labels: CallLabels, started: Instant) -> Response {
    let status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    let record = Some(Record {
        metrics: metrics.clone(),
        labels,
        status,
        started,
    });
    Response::from_parts(
        parts,
        Body::new(MeteredBody {
            inner: body,
            record,
        }),
    )
}

struct Record {
    metrics: Metrics,
    labels: CallLabels,
    status: u16,
    started: Instant,
}

/// Wraps a response body to record the request when the body ends (or is dropped, when a
/// client goes away): the latency of an SSE answer is the time to its last event.
struct MeteredBody {
    inner: Body,
    record: Option<Record>,
}

impl MeteredBody {
    fn finish(&mut self) {
        if let Some(r) = self.record.take() {
            r.metrics
                .observe(&r.labels, r.status, r.started.elapsed().as_secs_f64());
        }
    }
}

impl http_body::Body for MeteredBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    use rmcp::transport::streamable_http_server::session::{
        SessionManager, local::LocalSessionManager,
    };

    use crate::bounds::ListenerLimits;

    struct NoDirect;
    impl DirectCalls for NoDirect {}

    /// A session rmcp makes for a client that hung up before its answer still counts
    /// against that client: its next open is refused past `max_sessions_per_client`.
    #[tokio::test]
    async fn a_session_opened_for_a_client_that_hung_up_still_counts() {
        let manager = Arc::new(LocalSessionManager::default());
        let (entered, gate) = (
            Arc::new(tokio::sync::Notify::new()),
            Arc::new(tokio::sync::Notify::new()),
        );
        // Stands in for rmcp: makes the session, then (once let through) answers with its
        // id, as rmcp answers once the handler has initialized.
        let inner = {
            let (manager, entered, gate) = (manager.clone(), entered.clone(), gate.clone());
            tower::service_fn(move |_request: Request| {
                let (manager, entered, gate) = (manager.clone(), entered.clone(), gate.clone());
                async move {
                    let (id, _transport) = manager.create_session().await.expect("session");
                    entered.notify_one();
                    gate.notified().await;
                    let response = Response::builder()
                        .header("mcp-session-id", id.to_string())
                        .body(Body::empty())
                        .expect("response");
                    Ok::<_, Infallible>(response)
                }
            })
        };
        let metrics = Metrics::new();
        let limits = ListenerLimits {
            max_sessions: 10,
            max_sessions_per_client: 1,
            max_in_flight_per_client: 10,
            session_idle: Duration::from_secs(60),
        };
        let ep = Endpoint {
            inner,
            metrics: metrics.clone(),
            max_body_bytes: 1 << 20,
            direct: Arc::new(NoDirect),
            sessions: Arc::new(direct::Sessions::new(manager.clone(), limits.session_idle)),
            bounds: Arc::new(Bounds::new(limits, manager.clone(), metrics)),
            request_timeout: Duration::from_secs(60),
        };
        let open = || {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"}}});
            let mut request = Request::post("/mcp")
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .expect("request");
            request.extensions_mut().insert(ClientKey::new("a"));
            request
        };
        let first = tokio::spawn(serve(State(ep.clone()), open()));
        entered.notified().await;
        first.abort(); // the client hung up; rmcp has made the session
        gate.notify_one();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(manager.sessions.read().await.len(), 1);
        let second = tokio::time::timeout(Duration::from_secs(10), serve(State(ep), open()))
            .await
            .expect("refused at once, never let through");
        assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    /// Envelopes rmcp cannot route are named precisely.
    #[test]
    fn envelope_checks_name_the_problem() {
        assert!(check_envelope(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})).is_ok());
        assert!(
            check_envelope(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
                .is_ok()
        );
        assert!(check_envelope(&json!({"jsonrpc": "2.0", "id": 1, "result": {}})).is_ok());
        assert!(
            check_envelope(&json!({"id": 1, "method": "ping"}))
                .unwrap_err()
                .contains("jsonrpc")
        );
        assert!(
            check_envelope(&json!({"jsonrpc": "2.0", "id": 1}))
                .unwrap_err()
                .contains("method")
        );
        assert!(
            check_envelope(&json!({"jsonrpc": "2.0", "id": [1], "method": "x"}))
                .unwrap_err()
                .contains("id")
        );
    }

    /// SSE bodies yield their JSON messages, priming events skipped.
    #[test]
    fn sse_messages_skip_priming_events() {
        let body =
            b"data: \nid: 0\nretry: 3000\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n";
        assert_eq!(
            sse_messages(body),
            vec![json!({"jsonrpc": "2.0", "id": 1, "result": {}})]
        );
    }
}
