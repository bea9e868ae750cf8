//! Bad input at `/mcp`: each gets the error its spec prescribes, and the server stays up.

use aie_e2e::Aie;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const ACCEPT_BOTH: &str = "application/json, text/event-stream";

struct Target {
    server: Aie,
    http: Client,
}

impl Target {
    fn start() -> Self {
        aie_shared::init_crypto();
        Target {
            server: Aie::start(&["serve", "conformance", "--listen", "127.0.0.1:0"]),
            http: Client::new(),
        }
    }

    async fn post(
        &self,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, String) {
        let mut req = self
            .http
            .post(&self.server.url)
            .header("content-type", "application/json")
            .header("accept", ACCEPT_BOTH);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let res = req.body(body).send().await.expect("request sent");
        (res.status(), res.text().await.expect("body"))
    }

    /// The server still answers after the bad request.
    async fn assert_alive(&mut self) {
        assert!(self.server.is_running(), "aie exited");
        let health = format!("http://{}/healthz", self.server.addr);
        let res = self.http.get(health).send().await.expect("healthz");
        assert_eq!(res.status(), StatusCode::OK);
    }
}

fn error_code(body: &str) -> i64 {
    let value: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    value
        .pointer("/error/code")
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("no error code: {body}"))
}

/// Malformed JSON is a -32700 parse error.
#[tokio::test]
async fn malformed_json_is_a_parse_error() {
    let mut t = Target::start();
    let (status, body) = t.post("{\"jsonrpc\": \"2.0\", ", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), -32700);
    t.assert_alive().await;
}

/// JSON that is not an object (a number, a string) is a -32600 invalid request, as is an
/// object without `"jsonrpc": "2.0"`.
#[tokio::test]
async fn non_object_is_an_invalid_request() {
    let mut t = Target::start();
    for body in ["42", "\"ping\"", "null", r#"{"id": 1, "method": "ping"}"#] {
        let (status, answer) = t.post(body, &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(&answer), -32600, "{body}");
    }
    t.assert_alive().await;
}

/// A batch is refused as a whole from 2025-06-18 on (batching was removed), and fanned out
/// in the 2025-03-26 era, which allowed it.
#[tokio::test]
async fn batches_follow_each_era() {
    let mut t = Target::start();
    let batch = json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]).to_string();
    for version in ["2025-06-18", "2025-11-25", "2026-07-28"] {
        let (status, body) = t
            .post(batch.clone(), &[("mcp-protocol-version", version)])
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{version}");
        assert_eq!(error_code(&body), -32600, "{version}");
        assert!(body.contains("not supported"), "{body}");
    }

    // 2025-03-26: open a session, then send a batch of two requests and a notification.
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let res = t
        .http
        .post(&t.server.url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT_BOTH)
        .body(init.to_string())
        .send()
        .await
        .expect("initialize");
    let session = res
        .headers()
        .get("mcp-session-id")
        .expect("session id")
        .to_str()
        .expect("ascii")
        .to_owned();
    let _ = res.text().await;
    let session_header = [("mcp-session-id", session.as_str())];
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
    let (status, _) = t.post(initialized, &session_header).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 99}}
    ]);
    let (status, body) = t.post(batch.to_string(), &session_header).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answers: Value = serde_json::from_str(&body).expect("JSON array");
    let answers = answers.as_array().expect("array");
    assert_eq!(answers.len(), 2, "{body}");
    assert_eq!(answers[0]["id"], 1);
    assert!(answers[0].get("result").is_some(), "{body}");
    assert!(answers[1].pointer("/result/tools").is_some(), "{body}");
    t.assert_alive().await;
}

/// A client that does not accept both JSON and SSE gets 406; a body that is not JSON by its
/// Content-Type gets 415.
#[tokio::test]
async fn wrong_accept_or_content_type_is_refused() {
    let mut t = Target::start();
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    let res = t
        .http
        .post(&t.server.url)
        .header("content-type", "application/json")
        .header("accept", "text/html")
        .body(ping.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::NOT_ACCEPTABLE);
    let res = t
        .http
        .post(&t.server.url)
        .header("content-type", "text/plain")
        .header("accept", ACCEPT_BOTH)
        .body(ping)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    t.assert_alive().await;
}

/// A body over the limit gets 413 without being read whole.
#[tokio::test]
async fn oversized_body_gets_413() {
    let mut t = Target::start();
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "a".repeat(10 << 20)
    );
    let (status, body) = t.post(big, &[]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body.contains("exceeds"), "{body}");
    t.assert_alive().await;
}

/// An unknown session id gets 404, so the client knows to start over.
#[tokio::test]
async fn unknown_session_gets_404() {
    let mut t = Target::start();
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    let (status, _) = t.post(ping, &[("mcp-session-id", "no-such-session")]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    t.assert_alive().await;
}

/// An unknown method gets -32601, statelessly at 2026-07-28.
#[tokio::test]
async fn unknown_method_gets_32601() {
    let mut t = Target::start();
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "no/such/method", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}}}});
    let headers = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "no/such/method"),
    ];
    let (_, answer) = t.post(body.to_string(), &headers).await;
    assert_eq!(error_code(&answer), -32601, "{answer}");
    t.assert_alive().await;
}

/// A foreign Origin (a web page elsewhere) and a foreign Host (DNS rebinding) get 403;
/// loopback origins pass.
#[tokio::test]
async fn foreign_origin_and_host_get_403() {
    let mut t = Target::start();
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    let (status, _) = t
        .post(ping.clone(), &[("origin", "http://evil.example.com")])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = t.post(ping.clone(), &[("host", "evil.example.com")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = t.post(ping, &[("origin", "http://localhost:5173")]).await;
    assert_ne!(status, StatusCode::FORBIDDEN);
    t.assert_alive().await;
}
