//! Real MCP clients against aie's core: the official Python SDK and rmcp's own client, each
//! in the legacy (initialize, sessions) and the 2026-07-28 (stateless) era.

use std::process::Command;

use aie_e2e::{Aie, last_json_line, peer, peers_dir, run};
use aie_shared::rmcp::{
    ClientLifecycleMode, ClientServiceExt,
    model::{CallToolRequestParams, ClientConfig, ProtocolVersion},
    transport::StreamableHttpClientTransport,
};

const SIMPLE_TEXT: &str = "This is a simple text response for testing.";

fn python_client(mode: &str) {
    let server = Aie::start(&["serve", "conformance", "--listen", "127.0.0.1:0"]);
    let out = run(Command::new(peer("AIE_PYTHON"))
        .arg(peers_dir().join("mcp_client.py"))
        .args([&server.url, mode, "test_simple_text"]));
    assert!(out.status.success(), "python client failed in {mode} mode");
    let answer = last_json_line(&out);
    let expected_version = if mode == "legacy" { "2025-11-25" } else { mode };
    assert_eq!(answer["protocol_version"], expected_version);
    assert!(
        answer["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|n| n == "test_simple_text"))
    );
    assert_eq!(answer["is_error"], false);
    assert_eq!(answer["text"], SIMPLE_TEXT);
}

/// The official Python SDK lists and calls tools over the legacy initialize handshake.
#[test]
fn python_sdk_legacy_lists_and_calls_tools() {
    python_client("legacy");
}

/// The official Python SDK lists and calls tools statelessly at 2026-07-28.
#[test]
fn python_sdk_2026_07_28_lists_and_calls_tools() {
    python_client("2026-07-28");
}

async fn rmcp_client(lifecycle: ClientLifecycleMode, expected: ProtocolVersion) {
    aie_shared::init_crypto();
    let server = Aie::start(&["serve", "conformance", "--listen", "127.0.0.1:0"]);
    let transport = StreamableHttpClientTransport::from_uri(server.url.clone());
    let client = ClientConfig::default()
        .serve_with_lifecycle(transport, lifecycle)
        .await
        .expect("rmcp client connects");
    let version = client
        .peer()
        .peer_info()
        .map(|info| info.protocol_version.clone());
    assert_eq!(version, Some(expected));
    let tools = client.list_all_tools().await.expect("tools/list");
    assert!(tools.iter().any(|t| t.name == "test_simple_text"));
    let result = client
        .call_tool(CallToolRequestParams::new("test_simple_text"))
        .await
        .expect("tools/call");
    let text = result
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone());
    assert_eq!(text.as_deref(), Some(SIMPLE_TEXT));
    client.cancel().await.expect("close client");
}

/// rmcp's client connects with the legacy handshake.
#[tokio::test]
async fn rmcp_client_legacy_lists_and_calls_tools() {
    rmcp_client(
        ClientLifecycleMode::Initialize,
        ProtocolVersion::V_2025_11_25,
    )
    .await;
}

/// rmcp's client connects with `server/discover` at 2026-07-28.
#[tokio::test]
async fn rmcp_client_2026_07_28_lists_and_calls_tools() {
    rmcp_client(
        ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
        ProtocolVersion::V_2026_07_28,
    )
    .await;
}
