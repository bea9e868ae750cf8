//! One stateless (2026-07-28) request to a backend: one POST, its answer read as JSON or as
//! an SSE stream of messages. The request goes out as the client sent it (its `_meta`, its
//! progress token, its `inputResponses` and `requestState`), with the standard headers
//! (`Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`) that the 2026-07-28 transport requires;
//! the answer comes back as raw JSON so nothing is lost in between.

use std::pin::Pin;

use aie_shared::rmcp::{
    ErrorData,
    model::{ClientJsonRpcMessage, ServerJsonRpcMessage, ServerNotification},
    transport::common::http_header::{
        BASE64_HEADER_PREFIX, BASE64_HEADER_SUFFIX, HEADER_MCP_METHOD, HEADER_MCP_NAME,
        HEADER_MCP_PARAM_PREFIX, HEADER_MCP_PROTOCOL_VERSION,
    },
};
use base64::{Engine as _, prelude::BASE64_STANDARD};
use bytes::Bytes;
use futures::{Stream, StreamExt as _, stream};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt as _, Limited};
use serde_json::Value;

use super::link::Link;

/// The largest JSON answer accepted from a backend.
const MAX_JSON_ANSWER: usize = 16 * 1024 * 1024;

/// One message of a backend's answer.
#[derive(Debug)]
pub enum Inbound {
    /// A notification (progress, log, list change...).
    Notification(ServerNotification),
    /// A request from the server, which no stateless exchange may carry.
    Request(Value),
    /// The answer to the request: its `result`, or its JSON-RPC error.
    Reply(Result<Value, ErrorData>),
}

/// The messages of one answer, in order.
pub type Messages = Pin<Box<dyn Stream<Item = Result<Inbound, String>> + Send>>;

/// Why an exchange produced no messages.
#[derive(Debug)]
pub struct SendError {
    /// What happened.
    pub reason: String,
    /// True when the backend answered at all (with something that is not MCP), false when
    /// it could not be reached.
    pub reached: bool,
}

impl SendError {
    fn unreached(reason: String) -> Self {
        Self {
            reason,
            reached: false,
        }
    }

    fn reached(reason: String) -> Self {
        Self {
            reason,
            reached: true,
        }
    }
}

/// Sends `message` (a request) over `link`, with `extra` headers (the client's
/// `Mcp-Param-*`), and returns the answer's messages. `Err` when the backend cannot be
/// reached or does not answer MCP.
pub async fn send(
    link: &Link,
    message: &ClientJsonRpcMessage,
    extra: &HeaderMap,
) -> Result<Messages, SendError> {
    let encoded = serde_json::to_value(message).and_then(|json| {
        let body = serde_json::to_vec(&json)?;
        Ok((json, body))
    });
    let (json, body) =
        encoded.map_err(|e| SendError::unreached(format!("cannot encode the request: {e}")))?;
    let headers = request_headers(&json, extra);
    let response = link
        .post(Bytes::from(body), headers)
        .await
        .map_err(SendError::unreached)?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if status == StatusCode::ACCEPTED {
        return Ok(Box::pin(stream::empty()));
    }
    if content_type.starts_with("text/event-stream") && status.is_success() {
        let events = sse_stream::SseStream::new(response.into_body());
        let messages = events.filter_map(|event| async move {
            match event {
                Err(e) => Some(Err(format!("the event stream broke: {e}"))),
                Ok(event) => {
                    let data = event.data.unwrap_or_default();
                    if data.trim().is_empty() {
                        // Priming events and keep-alives carry no message.
                        return None;
                    }
                    Some(classify_text(&data))
                }
            }
        });
        return Ok(Box::pin(messages));
    }
    let bytes = Limited::new(response.into_body(), MAX_JSON_ANSWER)
        .collect()
        .await
        .map_err(|e| SendError::reached(format!("cannot read the answer: {e}")))?
        .to_bytes();
    // rmcp answers JSON-RPC errors with 4xx statuses (404 for an unknown method, 400 for a
    // header mismatch); those are MCP answers to pass on, not transport failures.
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(value) if value.get("jsonrpc").is_some() => {
            let inbound = classify(value);
            Ok(Box::pin(stream::once(async move { inbound })))
        }
        _ => {
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim();
            Err(SendError::reached(format!(
                "answered HTTP {}{}{}",
                status.as_u16(),
                if text.is_empty() { "" } else { ": " },
                truncate(text, 200)
            )))
        }
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

fn classify_text(data: &str) -> Result<Inbound, String> {
    let value: Value =
        serde_json::from_str(data).map_err(|e| format!("sent a message that is not JSON: {e}"))?;
    classify(value)
}

/// Sorts one JSON-RPC message into what the gateway does with it.
fn classify(value: Value) -> Result<Inbound, String> {
    let is_reply = value.get("result").is_some() || value.get("error").is_some();
    if is_reply {
        if let Some(error) = value.get("error") {
            let error: ErrorData = serde_json::from_value(error.clone())
                .map_err(|e| format!("sent a malformed JSON-RPC error: {e}"))?;
            return Ok(Inbound::Reply(Err(error)));
        }
        let result = value.get("result").cloned().unwrap_or(Value::Null);
        return Ok(Inbound::Reply(Ok(result)));
    }
    if value.get("id").is_some() {
        return Ok(Inbound::Request(value));
    }
    match serde_json::from_value::<ServerJsonRpcMessage>(value) {
        Ok(ServerJsonRpcMessage::Notification(n)) => Ok(Inbound::Notification(n.notification)),
        Ok(_) => Err("sent a message that is not a notification".to_owned()),
        Err(e) => Err(format!("sent a malformed notification: {e}")),
    }
}

/// The headers of a stateless POST: content negotiation, the protocol version from the
/// request's `_meta`, the SEP-2243 `Mcp-Method`/`Mcp-Name` derived from the body, and the
/// client's `Mcp-Param-*` (their values come from the arguments, which the gateway never
/// changes).
fn request_headers(request: &Value, extra: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    let mut put = |name: &str, value: &str| {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    };
    if let Some(version) = request
        .pointer("/params/_meta/io.modelcontextprotocol~1protocolVersion")
        .and_then(Value::as_str)
    {
        put(HEADER_MCP_PROTOCOL_VERSION, version);
    }
    if let Some(method) = request.get("method").and_then(Value::as_str) {
        put(HEADER_MCP_METHOD, method);
        let key = match method {
            "tools/call" | "prompts/get" => Some("name"),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some("uri"),
            "tasks/get" | "tasks/update" | "tasks/cancel" => Some("taskId"),
            _ => None,
        };
        if let Some(name) = key
            .and_then(|key| request.get("params")?.get(key))
            .and_then(Value::as_str)
        {
            put(HEADER_MCP_NAME, &encode_header_value(name));
        }
    }
    let prefix = HEADER_MCP_PARAM_PREFIX.to_ascii_lowercase();
    for (name, value) in extra {
        if name.as_str().starts_with(&prefix) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

/// SEP-2243 value encoding: Base64 inside `=?base64?…?=` when a value would not survive as
/// a bare header (surrounding blanks, control or non-ASCII characters, or the sentinel).
fn encode_header_value(value: &str) -> String {
    let needs_base64 = !value.is_empty()
        && (value.starts_with([' ', '\t'])
            || value.ends_with([' ', '\t'])
            || value.chars().any(|c| !(' '..='~').contains(&c))
            || (value.starts_with(BASE64_HEADER_PREFIX) && value.ends_with(BASE64_HEADER_SUFFIX)));
    if needs_base64 {
        format!(
            "{BASE64_HEADER_PREFIX}{}{BASE64_HEADER_SUFFIX}",
            BASE64_STANDARD.encode(value)
        )
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The standard headers follow the body, and only the client's Mcp-Param-* pass.
    #[test]
    fn headers_follow_the_body() {
        let request = json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {
                "name": "tool",
                "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}
            }
        });
        let mut extra = HeaderMap::new();
        extra.insert("mcp-param-value", HeaderValue::from_static("x"));
        extra.insert("cookie", HeaderValue::from_static("secret"));
        let headers = request_headers(&request, &extra);
        assert_eq!(headers["mcp-method"], "tools/call");
        assert_eq!(headers["mcp-name"], "tool");
        assert_eq!(headers["mcp-protocol-version"], "2026-07-28");
        assert_eq!(headers["mcp-param-value"], "x");
        assert!(!headers.contains_key("cookie"));
    }

    /// Values that cannot be bare header values are wrapped in Base64.
    #[test]
    fn header_values_are_encoded_when_needed() {
        assert_eq!(encode_header_value("plain"), "plain");
        assert_eq!(encode_header_value("é"), "=?base64?w6k=?=");
        assert_eq!(encode_header_value(" x"), "=?base64?IHg=?=");
    }

    /// Replies, errors, notifications and requests are told apart.
    #[test]
    fn messages_are_classified() {
        let reply = classify(json!({"jsonrpc": "2.0", "id": 1, "result": {"a": 1}})).unwrap();
        assert!(matches!(reply, Inbound::Reply(Ok(v)) if v == json!({"a": 1})));
        let error = classify(json!({
            "jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "bad"}
        }))
        .unwrap();
        assert!(matches!(error, Inbound::Reply(Err(e)) if e.message == "bad"));
        let note = classify(json!({
            "jsonrpc": "2.0", "method": "notifications/message",
            "params": {"level": "info", "data": "hi"}
        }))
        .unwrap();
        assert!(matches!(
            note,
            Inbound::Notification(ServerNotification::LoggingMessageNotification(_))
        ));
        let request = classify(json!({"jsonrpc": "2.0", "id": 7, "method": "ping"})).unwrap();
        assert!(matches!(request, Inbound::Request(_)));
    }
}
