//! MCP over rmcp, wrapped once: the Streamable HTTP endpoint (both protocol eras on one
//! path) and [`ToolServer`], the handler every aie server is.
//!
//! No other crate configures rmcp's transport; servers use the model types through the
//! [`rmcp`] re-export, so the pinned SDK version lives in one place.

use std::sync::Arc;

use axum::{Router, routing::any};
use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, Implementation, JsonObject, ListToolsResult,
        PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    },
    service::RequestContext,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};
use tokio_util::sync::CancellationToken;

pub use rmcp;

use crate::{
    bounds::Bounds,
    direct::{DirectCalls, DirectFuture},
    endpoint::{self, Endpoint},
    http::HttpOptions,
    metrics::Metrics,
    tools::ToolSet,
};

/// The `/mcp` route for `handler`: Streamable HTTP in both eras. Legacy clients
/// (2025-03-26 to 2025-11-25) get sessions and SSE answers, as that mode requires;
/// 2026-07-28 requests are served statelessly with plain JSON answers wherever the handler
/// sends nothing before its result. Sessions and requests in service are bounded per
/// client by `opts.limits` ([`crate::bounds`]). Host and Origin are checked by the shared layers in
/// [`crate::http::app`] and the body by [`crate::endpoint`], so rmcp's own copies of those
/// checks are turned off here rather than configured twice.
pub fn streamable_http<H>(
    handler: H,
    opts: &HttpOptions,
    metrics: Metrics,
    streams: CancellationToken,
) -> Router
where
    H: ServerHandler + DirectCalls + Clone + Send + Sync + 'static,
{
    let direct: Arc<dyn DirectCalls> = Arc::new(handler.clone());
    mcp_router(handler, direct, opts, metrics, streams)
}

/// [`streamable_http`] with the calls `direct` answers taken off rmcp's path.
pub(crate) fn mcp_router<H>(
    handler: H,
    direct: Arc<dyn DirectCalls>,
    opts: &HttpOptions,
    metrics: Metrics,
    streams: CancellationToken,
) -> Router
where
    H: ServerHandler + Clone + Send + Sync + 'static,
{
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(true)
        .with_json_response(true)
        .with_cancellation_token(streams)
        .with_max_request_body_bytes(opts.max_body_bytes)
        .disable_allowed_hosts()
        .disable_allowed_origins();
    let mut manager = LocalSessionManager::default();
    // An idle session is closed sooner than rmcp's five minutes: each one holds memory.
    manager.session_config.keep_alive = Some(opts.limits.session_idle);
    let sessions = Arc::new(manager);
    let service = StreamableHttpService::new(move || Ok(handler.clone()), sessions.clone(), config);
    let endpoint = Endpoint {
        inner: service,
        metrics: metrics.clone(),
        max_body_bytes: opts.max_body_bytes,
        direct,
        sessions: Arc::new(crate::direct::Sessions::new(
            sessions.clone(),
            opts.limits.session_idle,
        )),
        bounds: Arc::new(Bounds::new(opts.limits, sessions, metrics)),
        request_timeout: opts.request_timeout,
    };
    Router::new()
        .route("/mcp", any(endpoint::serve))
        .with_state(endpoint)
}

/// An MCP server made of tools only: what each aie server is.
#[derive(Clone)]
pub struct ToolServer {
    name: &'static str,
    instructions: Option<String>,
    tools: Arc<ToolSet>,
    metrics: Option<Metrics>,
}

impl ToolServer {
    /// A server named `name` (its `serverInfo.name`) with `tools`.
    pub fn new(name: &'static str, tools: ToolSet) -> Self {
        Self {
            name,
            instructions: None,
            tools: Arc::new(tools),
            metrics: None,
        }
    }

    /// Instructions sent to clients at initialization.
    pub fn with_instructions(mut self, instructions: impl Into<String>) -> Self {
        self.instructions = Some(instructions.into());
        self
    }

    /// Counts tool errors in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The declared tools.
    pub fn tools(&self) -> &ToolSet {
        &self.tools
    }
}

impl ServerHandler for ToolServer {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build());
        info.server_info = Implementation::new(self.name, env!("CARGO_PKG_VERSION"));
        info.instructions = self.instructions.clone();
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools.list()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.get(name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let result = self
            .tools
            .call(&request.name, request.arguments, self.metrics.as_ref())
            .await?;
        Ok(CallToolResponse::Complete(result))
    }
}

/// Every tool of a [`ToolSet`] is plain: its handler needs nothing from the MCP session, so
/// a 2026-07-28 call of it is answered without rmcp's per-request service.
impl DirectCalls for ToolServer {
    fn answers_directly(&self, tool: &str, _parts: &http::request::Parts) -> bool {
        self.tools.contains(tool)
    }

    fn call_directly<'a>(
        &'a self,
        tool: &'a str,
        arguments: Option<JsonObject>,
        _parts: &'a http::request::Parts,
    ) -> DirectFuture<'a> {
        Box::pin(self.tools.call(tool, arguments, self.metrics.as_ref()))
    }
}
