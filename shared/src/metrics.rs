//! Prometheus metrics of one listener: requests, errors and latency per MCP method and tool.

use std::sync::{Arc, Mutex};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

/// Labels of one MCP request: the JSON-RPC method and, for `tools/call`, the tool.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// JSON-RPC method (`tools/call`), `-` when the body named none, `http` for non-MCP paths.
    pub method: String,
    /// Tool name for `tools/call`, else empty.
    pub tool: String,
}

/// Labels of one error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// JSON-RPC method.
    pub method: String,
    /// Tool name for `tools/call`, else empty.
    pub tool: String,
    /// `http_4xx`, `http_5xx` or `tool_error` (an `isError` result).
    pub kind: String,
}

/// Labels of one request the HTTP layers refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// The HTTP status answered (400, 401, 403, 413).
    pub status: u16,
}

/// Labels of one refusal past a bound (`aie_shared::bounds`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// The bound's `[limits]` key: `max_sessions`, `max_sessions_per_client`,
    /// `max_in_flight_per_client`, `max_pending_approvals`.
    pub limit: String,
}

/// The metrics of one listener, cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Mutex<Registry>,
    requests: Family<CallLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    latency: Family<CallLabels, Histogram>,
    refusals: Family<RefusalLabels, Counter>,
    direct: Family<CallLabels, Counter>,
    limits: Family<LimitLabels, Counter>,
}

/// Latency buckets in seconds, from 100 µs to 10 s.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 10.0,
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with the aie metrics registered.
    pub fn new() -> Self {
        let requests = Family::<CallLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let latency = Family::<CallLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(BUCKETS.iter().copied())
        });
        let refusals = Family::<RefusalLabels, Counter>::default();
        let direct = Family::<CallLabels, Counter>::default();
        let limits = Family::<LimitLabels, Counter>::default();
        let mut registry = Registry::with_prefix("aie_mcp");
        registry.register(
            "requests",
            "MCP requests by method and tool",
            requests.clone(),
        );
        registry.register(
            "errors",
            "Failed MCP requests by method, tool and kind",
            errors.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to the end of its response, by method and tool",
            latency.clone(),
        );
        registry.register(
            "http_refusals",
            "Requests the HTTP layers refused (token, Host, Origin, body), by status",
            refusals.clone(),
        );
        registry.register(
            "direct_calls",
            "tools/call requests answered without rmcp's per-request service (aie_shared::direct), by tool",
            direct.clone(),
        );
        registry.register(
            "limit_refusals",
            "Requests refused past a bound (open sessions, requests in service, pending approvals), by its [limits] key",
            limits.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                requests,
                errors,
                latency,
                refusals,
                direct,
                limits,
            }),
        }
    }

    /// Records one finished request.
    pub fn observe(&self, labels: &CallLabels, status: u16, seconds: f64) {
        self.inner.requests.get_or_create(labels).inc();
        self.inner.latency.get_or_create(labels).observe(seconds);
        let kind = match status {
            400..=499 => "http_4xx",
            500..=599 => "http_5xx",
            _ => return,
        };
        self.inner
            .errors
            .get_or_create(&ErrorLabels {
                method: labels.method.clone(),
                tool: labels.tool.clone(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Records a tool call that answered with an `isError` result.
    pub fn tool_error(&self, tool: &str) {
        self.inner
            .errors
            .get_or_create(&ErrorLabels {
                method: "tools/call".to_owned(),
                tool: tool.to_owned(),
                kind: "tool_error".to_owned(),
            })
            .inc();
    }

    /// Records one request the HTTP layers refused with `status`: every one, whether or not
    /// an audit record is written for it.
    pub fn http_refusal(&self, status: u16) {
        self.inner
            .refusals
            .get_or_create(&RefusalLabels { status })
            .inc();
    }

    /// Records a call answered on the direct path.
    pub fn direct_call(&self, labels: &CallLabels) {
        self.inner.direct.get_or_create(labels).inc();
    }

    /// Records a request refused past the bound whose `[limits]` key is `limit`.
    pub fn limit_refusal(&self, limit: &str) {
        self.inner
            .limits
            .get_or_create(&LimitLabels {
                limit: limit.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self
            .inner
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests, latency and errors appear in the exposition with their labels.
    #[test]
    fn exposition_names_method_tool_and_error_kind() {
        let m = Metrics::new();
        let labels = CallLabels {
            method: "tools/call".into(),
            tool: "echo".into(),
        };
        m.observe(&labels, 200, 0.001);
        m.observe(&labels, 413, 0.001);
        m.tool_error("echo");
        m.http_refusal(401);
        m.limit_refusal("max_sessions_per_client");
        let text = m.render();
        assert!(
            text.contains(r#"aie_mcp_requests_total{method="tools/call",tool="echo"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"kind="http_4xx""#), "{text}");
        assert!(text.contains(r#"kind="tool_error""#), "{text}");
        assert!(
            text.contains(r#"aie_mcp_http_refusals_total{status="401"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"aie_mcp_limit_refusals_total{limit="max_sessions_per_client"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("aie_mcp_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
