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
//! - one `MCP-Protocol-Version: 2026-07-28`, one `Mcp-Method: tools/call`, one
//!   `Mcp-Name`, one `Host`, no `Mcp-Param-*` header;
//! - `Content-Type` is `application/json` and `Accept` lists both `application/json` and
//!   `text/event-stream`, without parameters;
//! - the body is exactly `{jsonrpc: "2.0", id, method: "tools/call", params: {name,
//!   arguments?, _meta}}`, the name equals `Mcp-Name`, and `_meta` declares protocol
//!   2026-07-28 with every key that revision requires;
//! - the handler answers that tool directly ([`DirectCalls::answers_directly`]).

use std::{future::Future, pin::Pin};

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
};
use serde::Deserialize;

use crate::metrics::CallLabels;

/// The only revision served here: the stateless one.
const MODERN: &str = "2026-07-28";

/// What a direct call returns.
pub type DirectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<CallToolResult, ErrorData>> + Send + 'a>>;

/// A handler some of whose tool calls can be answered without a per-request MCP service.
/// The defaults answer nothing directly, so every call goes through rmcp.
pub trait DirectCalls: Send + Sync + 'static {
    /// Whether a call of `tool` may be answered by [`call_directly`](Self::call_directly):
    /// true only when answering it needs nothing from the request's MCP session (no
    /// requests to the client, no progress, no tasks).
    fn answers_directly(&self, _tool: &str) -> bool {
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

/// Answers the request directly if it qualifies (see the module's documentation), with
/// the labels to meter it by; `None` hands it to rmcp untouched.
pub(crate) async fn answer(
    handler: &dyn DirectCalls,
    parts: &Parts,
    body: &Bytes,
) -> Option<(Response, CallLabels)> {
    let name = plain_call_headers(&parts.headers)?;
    if !handler.answers_directly(name) {
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
    let labels = CallLabels {
        method: call.method,
        tool: call.params.name,
    };
    let outcome = handler
        .call_directly(&labels.tool, call.params.arguments, parts)
        .await;
    Some((respond(outcome, call.id), labels))
}

/// The tool name of a request whose headers qualify, from its `Mcp-Name`.
fn plain_call_headers(headers: &HeaderMap) -> Option<&str> {
    if only(headers, "mcp-protocol-version")? != MODERN
        || only(headers, "mcp-method")? != "tools/call"
    {
        return None;
    }
    let name = only(headers, "mcp-name")?;
    // rmcp refuses a request without Host; so does the shared listener, before this.
    only(headers, header::HOST.as_str())?;
    let json = only(headers, header::CONTENT_TYPE.as_str())?;
    let essence = json.split_once(';').map_or(json, |(essence, _)| essence);
    if !essence.trim().eq_ignore_ascii_case("application/json")
        || headers.keys().any(|k| k.as_str().starts_with("mcp-param-"))
        || !accepts_json_and_sse(headers)
    {
        return None;
    }
    Some(name)
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

/// The JSON answer rmcp gives a 2026-07-28 request for `outcome`: the same message, the
/// same status.
fn respond(outcome: Result<CallToolResult, ErrorData>, id: RequestId) -> Response {
    let message = match outcome {
        Ok(result) => {
            let mut result = ServerResult::from(CallToolResponse::Complete(result));
            result.fill_missing_cache_hints();
            ServerJsonRpcMessage::response(result, id)
        }
        Err(error) => ServerJsonRpcMessage::error(error, Some(id)),
    };
    let status = match &message {
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
        fn answers_directly(&self, tool: &str) -> bool {
            self.0.answers_directly(tool)
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
        let opts = HttpOptions::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        mcp_router(
            server(),
            direct,
            &opts,
            Metrics::new(),
            CancellationToken::new(),
        )
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
}
