//! The direct path: a plain 2026-07-28 `tools/call` answered without building an MCP
//! service for the request.
//!
//! rmcp serves each stateless request by starting a whole service for it (a transport, a
//! peer, two spawned tasks, channels, cancellation tokens) and parses the body twice more
//! on the way; measured on loopback that costs more than half of a trivial call. A call
//! that needs none of it (no peer requests, no progress, no tasks, no header parameters) is
//! answered here, by the same handler code, into the same JSON-RPC message rmcp would
//! send. Anything else, and every error of the request itself, goes to rmcp as before:
//! this path only takes requests it can answer exactly as rmcp would.
//!
//! A request takes this path only when all of these hold; otherwise it falls through:
//! - one `Host`; `Content-Type` is `application/json` and `Accept` lists both
//!   `application/json` and `text/event-stream`, without parameters;
//! - the handler answers the tool directly ([`DirectCalls::answers_directly`]);
//! - stateless (2026-07-28): one `MCP-Protocol-Version: 2026-07-28`, one
//!   `Mcp-Method: tools/call`, one `Mcp-Name`, no `Mcp-Param-*` header; the body is exactly
//!   `{jsonrpc: "2.0", id, method: "tools/call", params: {name, arguments?, _meta}}`, the
//!   name equals `Mcp-Name`, and `_meta` declares 2026-07-28 with every key that revision
//!   requires;
//! - in a session (2025-06-18, 2025-11-25): one `MCP-Protocol-Version` naming one of them and
//!   one `Mcp-Session-Id` of a live session; the body is exactly `{jsonrpc: "2.0", id,
//!   method: "tools/call", params: {name, arguments?, _meta?}}` with nothing in `_meta` but a
//!   `progressToken` (a handler that answers directly never sends progress, which a
//!   receiver may always omit); and
//!   the session saw a request through rmcp within the last [`SESSION_TOUCH`] (or half
//!   the listener's session idle time, when that is shorter). rmcp's session worker ends a
//!   session after that idle time (`[limits] session_idle_secs`); letting a stale session's
//!   call through rmcp keeps the session alive without any request of aie's own. The answer is
//!   one JSON object (the transport lets a server answer a request with JSON or with a
//!   stream, and clients take both), shaped for the session's version as rmcp shapes it.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use rmcp::{
    ErrorData,
    model::{
        CallToolResponse, CallToolResult, ErrorCode, JsonObject, MetaObject, ProtocolVersion,
        RequestId, RequestMetaObject, ServerJsonRpcMessage, ServerResult,
    },
    transport::streamable_http_server::session::{
        SessionId, SessionManager, local::LocalSessionManager,
    },
};
use serde::Deserialize;

use crate::{bounds::InFlight, metrics::CallLabels};

/// The stateless revision.
const MODERN: &str = "2026-07-28";

/// The session revisions whose requests must carry `MCP-Protocol-Version` (2025-03-26
/// requests may omit it, and may be batches: those go to rmcp).
const SESSION_ERA: [&str; 2] = ["2025-06-18", "2025-11-25"];

/// How long after a session's last request through rmcp its calls may be answered here, at
/// most; never more than half the session idle time, so a session in use never idles out.
pub const SESSION_TOUCH: Duration = Duration::from_secs(60);

/// Past this many remembered sessions the record starts over (each session then sends one
/// call through rmcp again).
const MAX_TOUCHED: usize = 4096;

/// What a direct call returns.
pub type DirectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<CallToolResult, ErrorData>> + Send + 'a>>;

/// A handler some of whose tool calls can be answered without a per-request MCP service.
/// The defaults answer nothing directly, so every call goes through rmcp.
pub trait DirectCalls: Send + Sync + 'static {
    /// Whether this call of `tool` (its HTTP request's `parts`) may be answered by
    /// [`call_directly`](Self::call_directly): true only when answering it needs nothing
    /// from the request's MCP session (no requests to the client, no progress, no tasks).
    fn answers_directly(&self, _tool: &str, _parts: &Parts) -> bool {
        false
    }

    /// Calls `tool`, exactly as the handler's `call_tool` would. `parts` are the HTTP
    /// request's (for what the layers put in its extensions).
    fn call_directly<'a>(
        &'a self,
        tool: &'a str,
        _arguments: Option<JsonObject>,
        _parts: &'a Parts,
    ) -> DirectFuture<'a> {
        Box::pin(async move {
            Err(ErrorData::internal_error(
                format!("{tool} is not answered directly"),
                None,
            ))
        })
    }
}

/// rmcp's sessions, and when each last saw a request through rmcp.
pub(crate) struct Sessions {
    manager: Arc<LocalSessionManager>,
    touched: Mutex<HashMap<SessionId, Instant>>,
    /// How long a touch lasts: [`SESSION_TOUCH`], or half the idle time if shorter.
    touch: Duration,
}

impl Sessions {
    /// rmcp's sessions, which it ends after `idle` without a request.
    pub(crate) fn new(manager: Arc<LocalSessionManager>, idle: Duration) -> Self {
        Self {
            manager,
            touched: Mutex::new(HashMap::new()),
            touch: SESSION_TOUCH.min(idle / 2),
        }
    }

    /// Whether session `id` is live and touched within the touch time. A live session
    /// not touched lately is marked touched now, for the caller to send this request
    /// through rmcp.
    async fn fresh(&self, id: &str) -> bool {
        let id: SessionId = id.into();
        if !self.manager.has_session(&id).await.unwrap_or(false) {
            return false;
        }
        let now = Instant::now();
        let mut touched = self.touched.lock().unwrap_or_else(PoisonError::into_inner);
        if touched
            .get(&id)
            .is_some_and(|at| now.duration_since(*at) < self.touch)
        {
            return true;
        }
        if touched.len() >= MAX_TOUCHED {
            touched.clear();
        }
        touched.insert(id, now);
        false
    }
}

/// The body of a plain `tools/call`; anything more falls through to rmcp.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Call {
    jsonrpc: String,
    id: RequestId,
    method: String,
    params: Params,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    name: String,
    #[serde(default)]
    arguments: Option<JsonObject>,
    #[serde(rename = "_meta")]
    meta: JsonObject,
}

/// The body of a plain `tools/call` in a session; its `_meta` may hold a progress token
/// and nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionCall {
    jsonrpc: String,
    id: RequestId,
    method: String,
    params: SessionParams,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionParams {
    name: String,
    #[serde(default)]
    arguments: Option<JsonObject>,
    #[serde(rename = "_meta", default)]
    meta: Option<JsonObject>,
}

/// Answers the request directly if it qualifies (see the module's documentation); `None`
/// hands it to rmcp untouched. `labels` gets the call's method and tool as soon as the call
/// starts, so even a call whose request goes away is metered by them. `slot` counts the
/// call against its client until the call ends, even if its request goes away first.
pub(crate) async fn answer(
    handler: &Arc<dyn DirectCalls>,
    sessions: &Sessions,
    parts: &Parts,
    body: &Bytes,
    labels: &mut CallLabels,
    slot: &InFlight,
) -> Option<Response> {
    let headers = &parts.headers;
    let version = only(headers, "mcp-protocol-version")?;
    if !plain_json_request(headers) {
        return None;
    }
    if version == MODERN {
        stateless(handler, parts, body, labels, slot).await
    } else if SESSION_ERA.contains(&version) {
        in_session(handler, sessions, parts, body, labels, slot).await
    } else {
        None
    }
}

/// A 2026-07-28 call.
async fn stateless(
    handler: &Arc<dyn DirectCalls>,
    parts: &Parts,
    body: &Bytes,
    labels: &mut CallLabels,
    slot: &InFlight,
) -> Option<Response> {
    let headers = &parts.headers;
    if only(headers, "mcp-method")? != "tools/call"
        || headers.keys().any(|k| k.as_str().starts_with("mcp-param-"))
    {
        return None;
    }
    let name = only(headers, "mcp-name")?;
    if !handler.answers_directly(name, parts) {
        return None;
    }
    let call: Call = serde_json::from_slice(body).ok()?;
    if call.jsonrpc != "2.0" || call.method != "tools/call" || call.params.name != name {
        return None;
    }
    let meta = RequestMetaObject::from(MetaObject(call.params.meta));
    if meta.protocol_version().map(|v| v.as_str() == MODERN) != Some(true)
        || !meta
            .missing_required_keys(&ProtocolVersion::V_2026_07_28)
            .is_empty()
    {
        return None;
    }
    let tool = call.params.name;
    *labels = call_labels(&tool);
    let outcome = run_detached(handler, &tool, call.params.arguments, parts, slot).await;
    Some(respond(outcome, call.id, Era::Stateless))
}

/// A call in a 2025-06-18 or 2025-11-25 session.
async fn in_session(
    handler: &Arc<dyn DirectCalls>,
    sessions: &Sessions,
    parts: &Parts,
    body: &Bytes,
    labels: &mut CallLabels,
    slot: &InFlight,
) -> Option<Response> {
    let session = only(&parts.headers, "mcp-session-id")?;
    let call: SessionCall = serde_json::from_slice(body).ok()?;
    let only_progress = |meta: &JsonObject| meta.keys().all(|k| k == "progressToken");
    if call.jsonrpc != "2.0"
        || call.method != "tools/call"
        || !call.params.meta.as_ref().is_none_or(only_progress)
        || !handler.answers_directly(&call.params.name, parts)
        || !sessions.fresh(session).await
    {
        return None;
    }
    let tool = call.params.name;
    *labels = call_labels(&tool);
    let outcome = run_detached(handler, &tool, call.params.arguments, parts, slot).await;
    Some(respond(outcome, call.id, Era::Session))
}

/// Runs the call in a task of its own and waits for it. A call, once started, runs to its
/// end even if its HTTP request goes away (the client disconnects, the request times out):
/// an approved send is never cut off halfway by a closed connection, and whatever its
/// handler records after it (the gateway's outcome audit) is always recorded. rmcp's path
/// behaves the same, since it runs each request's handler in a task of its own. The task
/// holds `slot`, so a client that hangs up on its calls cannot pile up calls beyond its
/// bound ([`crate::bounds`]).
async fn run_detached(
    handler: &Arc<dyn DirectCalls>,
    tool: &str,
    arguments: Option<JsonObject>,
    parts: &Parts,
    slot: &InFlight,
) -> Result<CallToolResult, ErrorData> {
    let (handler, tool, parts, slot) = (
        handler.clone(),
        tool.to_owned(),
        parts.clone(),
        slot.clone(),
    );
    let call = tokio::spawn(async move {
        let outcome = handler.call_directly(&tool, arguments, &parts).await;
        drop(slot);
        outcome
    });
    match call.await {
        Ok(outcome) => outcome,
        Err(e) => Err(ErrorData::internal_error(
            format!("the tool call ended abnormally: {e}"),
            None,
        )),
    }
}

/// One `Host` (rmcp refuses a request without one), a JSON body, and an `Accept` of both
/// media types the transport requires.
fn plain_json_request(headers: &HeaderMap) -> bool {
    let Some(json) = only(headers, header::CONTENT_TYPE.as_str()) else {
        return false;
    };
    let essence = json.split_once(';').map_or(json, |(essence, _)| essence);
    only(headers, header::HOST.as_str()).is_some()
        && essence.trim().eq_ignore_ascii_case("application/json")
        && accepts_json_and_sse(headers)
}

/// The single value of header `name` as text; `None` when absent, repeated or not text.
fn only<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

/// `Accept` lists both media types the transport requires, with no parameters (a weight
/// could exclude one; such requests go to rmcp, which weighs them).
fn accepts_json_and_sse(headers: &HeaderMap) -> bool {
    let (mut json, mut sse) = (false, false);
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        for entry in value.split(',') {
            let entry = entry.trim();
            if entry.contains(';') || entry.contains('"') {
                return false;
            }
            json |= entry.eq_ignore_ascii_case("application/json");
            sse |= entry.eq_ignore_ascii_case("text/event-stream");
        }
    }
    json && sse
}

/// Which kind of request an answer is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Era {
    Stateless,
    Session,
}

/// The labels of a `tools/call` of `tool`.
fn call_labels(tool: &str) -> CallLabels {
    CallLabels {
        method: "tools/call".to_owned(),
        tool: tool.to_owned(),
    }
}

/// The JSON-RPC message rmcp sends for `outcome`, as JSON, with the status rmcp gives it.
fn respond(outcome: Result<CallToolResult, ErrorData>, id: RequestId, era: Era) -> Response {
    let message = match outcome {
        Ok(result) => {
            let mut result = ServerResult::from(CallToolResponse::Complete(result));
            match era {
                Era::Stateless => result.fill_missing_cache_hints(),
                Era::Session => {
                    result.strip_result_type_for_legacy_peer();
                    result.strip_non_object_output_for_legacy_peer();
                }
            }
            ServerJsonRpcMessage::response(result, id)
        }
        Err(error) => ServerJsonRpcMessage::error(error, Some(id)),
    };
    let status = match &message {
        // A session's errors travel in its stream, always with 200.
        ServerJsonRpcMessage::Error(_) if era == Era::Session => StatusCode::OK,
        ServerJsonRpcMessage::Error(e) => match e.error.code {
            ErrorCode::UNSUPPORTED_PROTOCOL_VERSION
            | ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY
            | ErrorCode::HEADER_MISMATCH => StatusCode::BAD_REQUEST,
            ErrorCode::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
            _ => StatusCode::OK,
        },
        _ => StatusCode::OK,
    };
    match serde_json::to_vec(&message) {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Internal Server Error: the answer could not be serialized: {e}"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use axum::{Router, body::Body, http::Request};
    use http_body_util::BodyExt;
    use schemars::JsonSchema;
    use serde::Serialize;
    use serde_json::{Value, json};
    use tokio_util::sync::CancellationToken;
    use tower::ServiceExt;

    use super::*;
    use crate::{
        HttpOptions, Metrics, ToolError, ToolOutput, ToolServer, ToolSet, ToolSpec, mcp::mcp_router,
    };

    #[derive(Deserialize, JsonSchema)]
    struct EchoArgs {
        /// Text to send back.
        text: String,
    }

    #[derive(Serialize, JsonSchema)]
    struct Echoed {
        text: String,
    }
    impl ToolOutput for Echoed {
        fn render(&self) -> String {
            self.text.clone()
        }
    }

    fn server() -> ToolServer {
        let mut tools = ToolSet::new();
        tools.add(
            ToolSpec::read("echo", "Echo", "Sends the text back"),
            |a: EchoArgs| async move {
                match a.text.as_str() {
                    "fail" => Err(ToolError::Failed("it failed".into())),
                    "nothing" => Err(ToolError::NotExecuted("nothing done".into())),
                    _ => Ok(Echoed { text: a.text }),
                }
            },
        );
        ToolServer::new("direct-test", tools)
    }

    /// The server's direct answers, counted.
    #[derive(Clone)]
    struct Counted(ToolServer, Arc<AtomicUsize>);

    impl DirectCalls for Counted {
        fn answers_directly(&self, tool: &str, parts: &Parts) -> bool {
            self.0.answers_directly(tool, parts)
        }
        fn call_directly<'a>(
            &'a self,
            tool: &'a str,
            arguments: Option<JsonObject>,
            parts: &'a Parts,
        ) -> DirectFuture<'a> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.call_directly(tool, arguments, parts)
        }
    }

    /// Answers nothing directly: rmcp's path, the reference.
    struct Never;
    impl DirectCalls for Never {}

    fn router(direct: Arc<dyn DirectCalls>) -> Router {
        metered_router(direct, Metrics::new())
    }

    fn metered_router(direct: Arc<dyn DirectCalls>, metrics: Metrics) -> Router {
        let opts = HttpOptions::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        mcp_router(server(), direct, &opts, metrics, CancellationToken::new())
    }

    fn meta() -> Value {
        json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}})
    }

    fn call(id: Value, params: Value) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
    }

    fn modern(body: &Value, name: &str) -> Request<Body> {
        Request::post("/mcp")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", name)
            .body(Body::from(body.to_string()))
            .expect("request")
    }

    async fn send(router: &Router, request: Request<Body>) -> (u16, String, Bytes) {
        let response = router.clone().oneshot(request).await.expect("infallible");
        let status = response.status().as_u16();
        let kind = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, kind, body)
    }

    /// Sends `make()` both ways; returns whether it took the direct path, after checking the
    /// answers are byte for byte the same.
    async fn compare(make: impl Fn() -> Request<Body>) -> bool {
        let count = Arc::new(AtomicUsize::new(0));
        let direct = router(Arc::new(Counted(server(), count.clone())));
        let reference = router(Arc::new(Never));
        let ours = send(&direct, make()).await;
        let theirs = send(&reference, make()).await;
        assert_eq!(
            ours,
            theirs,
            "the direct answer differs from rmcp's:\n{}\n{}",
            String::from_utf8_lossy(&ours.2),
            String::from_utf8_lossy(&theirs.2)
        );
        count.load(Ordering::SeqCst) == 1
    }

    /// Plain calls take the direct path and get exactly rmcp's answer: a result, a string id,
    /// a failed call, a call that did nothing, arguments that do not parse, no arguments.
    #[tokio::test]
    async fn plain_calls_are_answered_as_rmcp_would() {
        let cases = [
            call(
                json!(1),
                json!({"name": "echo", "arguments": {"text": "hi"}, "_meta": meta()}),
            ),
            call(
                json!("a-7"),
                json!({"name": "echo", "arguments": {"text": "ü"}, "_meta": meta()}),
            ),
            call(
                json!(2),
                json!({"name": "echo", "arguments": {"text": "fail"}, "_meta": meta()}),
            ),
            call(
                json!(3),
                json!({"name": "echo", "arguments": {"text": "nothing"}, "_meta": meta()}),
            ),
            call(
                json!(4),
                json!({"name": "echo", "arguments": {"txt": 1}, "_meta": meta()}),
            ),
            call(json!(5), json!({"name": "echo", "_meta": meta()})),
        ];
        for body in cases {
            assert!(
                compare(|| modern(&body, "echo")).await,
                "not direct: {body}"
            );
        }
    }

    /// Anything unusual goes to rmcp, which answers it (errors included) as before.
    #[tokio::test]
    async fn anything_else_goes_to_rmcp() {
        let plain = |id: i64| {
            call(
                json!(id),
                json!({"name": "echo", "arguments": {"text": "hi"}, "_meta": meta()}),
            )
        };
        // An unknown tool, and an Mcp-Name that contradicts the body.
        let unknown = call(
            json!(1),
            json!({"name": "nope", "arguments": {}, "_meta": meta()}),
        );
        assert!(!compare(|| modern(&unknown, "nope")).await);
        assert!(!compare(|| modern(&plain(2), "other")).await);
        // `_meta` without the client capabilities 2026-07-28 requires.
        let bare = call(
            json!(3),
            json!({"name": "echo", "arguments": {"text": "hi"},
                "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}),
        );
        assert!(!compare(|| modern(&bare, "echo")).await);
        // A parameter this path does not know (a task request).
        let task = call(
            json!(4),
            json!({"name": "echo", "arguments": {"text": "hi"}, "_meta": meta(), "task": {}}),
        );
        assert!(!compare(|| modern(&task, "echo")).await);
        // An Accept with weights, a header parameter, a repeated Mcp-Method.
        let weighted = || {
            let mut r = modern(&plain(5), "echo");
            r.headers_mut().insert(
                header::ACCEPT,
                HeaderValue::from_static("application/json;q=0, text/event-stream"),
            );
            r
        };
        assert!(!compare(weighted).await);
        let param = || {
            let mut r = modern(&plain(6), "echo");
            r.headers_mut()
                .insert("mcp-param-text", HeaderValue::from_static("hi"));
            r
        };
        assert!(!compare(param).await);
        let twice = || {
            let mut r = modern(&plain(7), "echo");
            r.headers_mut()
                .append("mcp-method", HeaderValue::from_static("tools/call"));
            r
        };
        assert!(!compare(twice).await);
        let hostless = || {
            let mut r = modern(&plain(9), "echo");
            r.headers_mut().remove(header::HOST);
            r
        };
        assert!(!compare(hostless).await);
        // The body's version differs from the header's.
        let older = call(
            json!(8),
            json!({"name": "echo", "arguments": {"text": "hi"},
                "_meta": {"io.modelcontextprotocol/protocolVersion": "2025-11-25",
                    "io.modelcontextprotocol/clientCapabilities": {}}}),
        );
        assert!(!compare(|| modern(&older, "echo")).await);
    }

    fn in_session(body: &Value, session: &str, version: &'static str) -> Request<Body> {
        Request::post("/mcp")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", version)
            .header("mcp-session-id", session)
            .body(Body::from(body.to_string()))
            .expect("request")
    }

    /// Opens a 2025-11-25 session on `router`: initialize, then initialized.
    async fn open_session(router: &Router) -> String {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "direct-test", "version": "1"}}});
        let request = Request::post("/mcp")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(Body::from(init.to_string()))
            .expect("request");
        let response = router.clone().oneshot(request).await.expect("infallible");
        let session = response.headers()["mcp-session-id"]
            .to_str()
            .expect("ascii")
            .to_owned();
        let _ = response.into_body().collect().await;
        let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let (status, _, _) = send(router, in_session(&done, &session, "2025-11-25")).await;
        assert_eq!(status, 202);
        session
    }

    /// The JSON-RPC message of an answer: the body, or the data of its SSE event that has
    /// an `id`.
    fn message_of(kind: &str, body: &[u8]) -> Value {
        if kind.starts_with("text/event-stream") {
            String::from_utf8_lossy(body)
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
                .find(|m| m.get("id").is_some())
                .expect("an SSE event with the answer")
        } else {
            serde_json::from_slice(body).expect("a JSON answer")
        }
    }

    /// In a session, a plain call is answered directly once the session went through rmcp
    /// lately (its first call does), with the message rmcp sends in its stream; anything
    /// unusual goes to rmcp.
    #[tokio::test]
    async fn session_calls_are_answered_as_rmcp_would() {
        let count = Arc::new(AtomicUsize::new(0));
        let direct = router(Arc::new(Counted(server(), count.clone())));
        let reference = router(Arc::new(Never));
        let (ours, theirs) = (open_session(&direct).await, open_session(&reference).await);
        let plain = |id: Value, args: Value| call(id, json!({"name": "echo", "arguments": args}));
        // The first call touches the session through rmcp.
        let first = plain(json!(1), json!({"text": "hi"}));
        send(&direct, in_session(&first, &ours, "2025-11-25")).await;
        assert_eq!(
            count.load(Ordering::SeqCst),
            0,
            "the first call went direct"
        );
        let cases = [
            plain(json!(2), json!({"text": "hi"})),
            plain(json!("s-3"), json!({"text": "fail"})),
            plain(json!(4), json!({"text": "nothing"})),
            plain(json!(5), json!({"txt": 1})),
            call(json!(6), json!({"name": "echo"})),
            call(
                json!(7),
                json!({"name": "echo", "arguments": {"text": "hi"}, "_meta": {"progressToken": 0}}),
            ),
        ];
        for (n, body) in cases.iter().enumerate() {
            let (s1, k1, b1) = send(&direct, in_session(body, &ours, "2025-11-25")).await;
            let (s2, k2, b2) = send(&reference, in_session(body, &theirs, "2025-11-25")).await;
            assert_eq!((s1, s2), (200, 200), "{body}");
            assert_eq!(k1, "application/json");
            assert_eq!(message_of(&k1, &b1), message_of(&k2, &b2), "{body}");
            assert_eq!(count.load(Ordering::SeqCst), n + 1, "not direct: {body}");
        }
        let before = count.load(Ordering::SeqCst);
        // `_meta` with more than a progress token, an unknown tool, an unknown session, the
        // 2025-03-26 era: all rmcp's.
        let progress = call(
            json!(7),
            json!({"name": "echo", "arguments": {"text": "hi"},
                "_meta": {"progressToken": 1, "io.modelcontextprotocol/protocolVersion": "2025-11-25"}}),
        );
        let unknown = call(json!(8), json!({"name": "nope", "arguments": {}}));
        for body in [&progress, &unknown] {
            let (s1, k1, b1) = send(&direct, in_session(body, &ours, "2025-11-25")).await;
            let (s2, k2, b2) = send(&reference, in_session(body, &theirs, "2025-11-25")).await;
            assert_eq!(s1, s2, "{body}");
            assert_eq!(message_of(&k1, &b1), message_of(&k2, &b2), "{body}");
        }
        let (status, _, _) = send(
            &direct,
            in_session(&plain(json!(9), json!({"text": "x"})), "gone", "2025-11-25"),
        )
        .await;
        assert_eq!(status, 404);
        send(
            &direct,
            in_session(&plain(json!(10), json!({"text": "x"})), &ours, "2025-03-26"),
        )
        .await;
        assert_eq!(
            count.load(Ordering::SeqCst),
            before,
            "an unusual call went direct"
        );
    }

    /// Answers every call directly: after a pause it notes that it ran to the end, or it
    /// panics when asked to.
    struct Slow(Arc<std::sync::atomic::AtomicBool>);

    impl DirectCalls for Slow {
        fn answers_directly(&self, _tool: &str, _parts: &Parts) -> bool {
            true
        }
        fn call_directly<'a>(
            &'a self,
            _tool: &'a str,
            arguments: Option<JsonObject>,
            _parts: &'a Parts,
        ) -> DirectFuture<'a> {
            Box::pin(async move {
                let text = arguments.and_then(|a| a.get("text").cloned());
                if text == Some(json!("panic")) {
                    panic!("the tool broke");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                self.0.store(true, Ordering::SeqCst);
                Ok(CallToolResult::success(vec![]))
            })
        }
    }

    /// A call whose HTTP request goes away (the client disconnects or the request times out,
    /// and the server drops the request's future) still runs to its end, and is counted as
    /// a request its client closed (499).
    #[tokio::test]
    async fn a_call_runs_to_its_end_when_its_request_goes_away() {
        let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let metrics = Metrics::new();
        let router = metered_router(Arc::new(Slow(finished.clone())), metrics.clone());
        let request = modern(
            &call(
                json!(1),
                json!({"name": "echo", "arguments": {"text": "hi"}, "_meta": meta()}),
            ),
            "echo",
        );
        let gone = tokio::time::timeout(Duration::from_millis(20), send(&router, request)).await;
        assert!(
            gone.is_err(),
            "the request was meant to be dropped mid-call"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(finished.load(Ordering::SeqCst), "the call was cut off");
        let text = metrics.render();
        assert!(
            text.contains(r#"aie_mcp_requests_total{method="tools/call",tool="echo"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"aie_mcp_errors_total{method="tools/call",tool="echo",kind="http_4xx"} 1"#
            ),
            "{text}"
        );
    }

    /// A tool that panics answers an internal error; the server goes on.
    #[tokio::test]
    async fn a_panicking_tool_answers_an_error() {
        let router = router(Arc::new(Slow(Arc::default())));
        let panics = call(
            json!(9),
            json!({"name": "echo", "arguments": {"text": "panic"}, "_meta": meta()}),
        );
        let (status, _, body) = send(&router, modern(&panics, "echo")).await;
        let answer: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(status, 200);
        assert_eq!(answer["id"], 9);
        assert_eq!(answer["error"]["code"], -32603, "{answer}");
        let fine = call(
            json!(10),
            json!({"name": "echo", "arguments": {"text": "hi"}, "_meta": meta()}),
        );
        let (status, _, body) = send(&router, modern(&fine, "echo")).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
}
