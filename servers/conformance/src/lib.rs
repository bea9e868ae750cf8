//! The official MCP conformance suite's server fixtures, served on aie's MCP core.
//!
//! `aie serve conformance` hosts [`ConformanceServer`] behind the same `/mcp` endpoint every
//! aie server uses, so the suite (`@modelcontextprotocol/conformance server`) measures
//! aie's transport, Host/Origin guard and rmcp wiring, not a test-only stack. The fixtures
//! carry the exact names, arguments and outputs the suite's server scenarios call for, in
//! both protocol eras: 2025-11-25 (sessions, server-to-client requests over SSE) and
//! 2026-07-28 (stateless, `InputRequiredResult` round trips, caching hints).
//!
//! # Layout
//! - [`tools`]: the tool list and the fixtures that answer at once (content kinds, errors,
//!   JSON Schema 2020-12, header binding, list-change triggers, capability checks).
//! - [`interactive`]: fixtures that talk to the client while they run: logging, progress,
//!   sampling and elicitation (the 2025-11-25 flows).
//! - [`mrtr`]: SEP-2322 multi round-trip fixtures: tools and a prompt that answer
//!   `InputRequiredResult` until the client supplies the inputs.
//! - [`request_state`]: the HMAC-sealed `requestState` those fixtures round-trip.
//! - [`tasks`]: SEP-2663 Tasks extension fixtures, run by rmcp's task manager.
//! - [`resources`]: static and templated resources, legacy subscriptions, SEP-2164
//!   not-found errors, completion of template arguments.
//! - [`prompts`]: the prompt fixtures and completion of their arguments.
//! - [`listeners`]: 2026-07-28 `subscriptions/listen` streams and the triggers that feed them.
//! - [`content`]: the media the fixtures return (a real PNG and WAV).

pub mod content;
pub mod interactive;
pub mod listeners;
pub mod mrtr;
pub mod prompts;
pub mod request_state;
pub mod resources;
pub mod tasks;
pub mod tools;

use std::sync::{Arc, Mutex, PoisonError};

#[allow(
    deprecated,
    reason = "logging/setLevel is a 2025-11-25 fixture (SEP-2577)"
)]
use aie_shared::rmcp::model::SetLevelRequestParams;
use aie_shared::rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CacheScope, CallToolRequestParams, CallToolResponse, CancelTaskParams,
        CompleteRequestParams, CompleteResult, CompletionInfo, GetPromptRequestParams,
        GetPromptResponse, GetTaskParams, GetTaskResult, Implementation, ListPromptsResult,
        ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
        ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse, Reference,
        ServerCapabilities, ServerConfig, SetLevelRequestMethod, SubscribeRequestParams,
        SubscriptionFilter, Tool, UnsubscribeRequestParams, UpdateTaskParams,
    },
    service::{RequestContext, SubscriptionContext},
    task_manager::TaskManager,
};

use crate::{listeners::Listeners, request_state::Sealer, resources::Subscriptions};

/// How long clients may cache list and read results: the fixtures never change.
pub const CACHE_TTL_MS: u64 = 5 * 60 * 1000;

/// Who may cache them: the fixtures are the same for every caller.
pub const CACHE_SCOPE: CacheScope = CacheScope::Public;

/// The fixture server.
pub fn server() -> ConformanceServer {
    ConformanceServer::new()
}

/// The MCP handler serving every fixture.
///
/// rmcp clones the handler once per session (and once per stateless request), so a clone
/// is a new session: it shares the fixtures, the requestState key and the listeners, but
/// starts with its own log level and resource subscriptions.
pub struct ConformanceServer {
    shared: Arc<Shared>,
    session: Session,
}

/// What every session shares.
struct Shared {
    tools: Vec<Tool>,
    sealer: Sealer,
    listeners: Listeners,
    tasks: TaskManager,
}

/// What one legacy session owns.
#[derive(Default)]
struct Session {
    log_level: Mutex<interactive::LogThreshold>,
    subscriptions: Subscriptions,
}

impl Clone for ConformanceServer {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            session: Session::default(),
        }
    }
}

impl Default for ConformanceServer {
    fn default() -> Self {
        Self::new()
    }
}

impl ConformanceServer {
    /// A server with a fresh requestState key and no listeners.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                tools: tools::list(),
                sealer: Sealer::random(),
                listeners: Listeners::default(),
                tasks: TaskManager::new(),
            }),
            session: Session::default(),
        }
    }

    /// The requestState sealer.
    pub(crate) fn sealer(&self) -> &Sealer {
        &self.shared.sealer
    }

    /// The open `subscriptions/listen` streams.
    pub(crate) fn listeners(&self) -> &Listeners {
        &self.shared.listeners
    }

    /// This session's `logging/setLevel` threshold.
    pub(crate) fn session_log_level(&self) -> interactive::LogThreshold {
        *self
            .session
            .log_level
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// True when the request runs under 2026-07-28 or later: stateless, no server-to-client
/// requests, per-request `_meta`.
pub(crate) fn is_stateless(cx: &RequestContext<RoleServer>) -> bool {
    cx.protocol_version()
        .is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str())
}

/// The fixtures call back into the client (sampling, elicitation, progress), so every call
/// goes through rmcp's per-request service.
impl aie_shared::DirectCalls for ConformanceServer {}

impl ServerHandler for ConformanceServer {
    fn get_info(&self) -> ServerConfig {
        #[allow(
            deprecated,
            reason = "the 2025-11-25 logging fixtures need the capability"
        )]
        let capabilities = ServerCapabilities::builder()
            .enable_logging()
            .enable_completions()
            .enable_prompts()
            .enable_prompts_list_changed()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_resources_list_changed()
            .enable_tools()
            .enable_tool_list_changed()
            .enable_tasks()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new(
                "aie-conformance",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "The MCP conformance suite's server fixtures, served by aie's MCP core.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.shared.tools.clone())
            .with_ttl_ms(CACHE_TTL_MS)
            .with_cache_scope(CACHE_SCOPE))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        // rmcp reads the schema to bind SEP-2243 `Mcp-Param-*` headers to arguments.
        self.shared.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if mrtr::is_mrtr_tool(&request.name) {
            return mrtr::call_tool(self, request, &cx);
        }
        if tasks::is_task_tool(&request.name) {
            return tasks::call_tool(&self.shared.tasks, request, &cx).await;
        }
        tools::call(self, request, cx).await
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(resources::list())
            .with_ttl_ms(CACHE_TTL_MS)
            .with_cache_scope(CACHE_SCOPE))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(
            ListResourceTemplatesResult::with_all_items(resources::templates())
                .with_ttl_ms(CACHE_TTL_MS)
                .with_cache_scope(CACHE_SCOPE),
        )
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let result = resources::read(&request.uri)?;
        Ok(result
            .with_ttl_ms(CACHE_TTL_MS)
            .with_cache_scope(CACHE_SCOPE)
            .into())
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.session.subscriptions.add(request.uri);
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.session.subscriptions.remove(&request.uri);
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(prompts::list())
            .with_ttl_ms(CACHE_TTL_MS)
            .with_cache_scope(CACHE_SCOPE))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        if request.name == mrtr::PROMPT {
            return Ok(mrtr::get_prompt(&request));
        }
        prompts::get(&request.name, request.arguments.as_ref()).map(Into::into)
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let argument = &request.argument;
        let candidates = match &request.r#ref {
            Reference::Prompt(prompt) => prompts::completions(&prompt.name, &argument.name),
            Reference::Resource(template) => resources::completions(&template.uri, &argument.name),
            _ => &[],
        };
        let values: Vec<String> = candidates
            .iter()
            .filter(|c| c.starts_with(argument.value.as_str()))
            .map(|c| (*c).to_owned())
            .collect();
        let info = CompletionInfo::with_all_values(values)
            .map_err(|e| ErrorData::internal_error(e, None))?;
        Ok(CompleteResult::new(info))
    }

    #[allow(
        deprecated,
        reason = "logging/setLevel is a 2025-11-25 fixture (SEP-2577)"
    )]
    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        // 2026-07-28 removed logging/setLevel: the level travels in each request's _meta.
        if is_stateless(&cx) {
            return Err(ErrorData::method_not_found::<SetLevelRequestMethod>());
        }
        let threshold = interactive::LogThreshold::from(request.level);
        *self
            .session
            .log_level
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = threshold;
        Ok(())
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        let task = self.shared.tasks.get_task(&request.task_id)?;
        Ok(GetTaskResult::new(task))
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.shared
            .tasks
            .update_task(&request.task_id, request.input_responses)
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.shared.tasks.cancel_task(&request.task_id)
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        self.shared.listeners.run(context).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tool the suite calls is declared, once, in a stable order.
    #[test]
    fn tool_names_are_unique_and_stable() {
        let names: Vec<_> = tools::list().into_iter().map(|t| t.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "duplicate tool names");
        let again: Vec<_> = tools::list().into_iter().map(|t| t.name).collect();
        assert_eq!(names, again);
        for required in [
            "test_simple_text",
            "test_image_content",
            "test_audio_content",
            "test_embedded_resource",
            "test_multiple_content_types",
            "test_tool_with_logging",
            "test_error_handling",
            "test_tool_with_progress",
            "test_sampling",
            "test_elicitation",
            "test_elicitation_sep1034_defaults",
            "test_elicitation_sep1330_enums",
            "json_schema_2020_12_tool",
            "test_missing_capability",
            "test_streaming_elicitation",
            "test_logging_tool",
            "test_trigger_tool_change",
            "test_trigger_prompt_change",
            "test_input_required_result_elicitation",
            "test_input_required_result_tampered_state",
        ] {
            assert!(names.iter().any(|n| n == required), "{required} missing");
        }
    }

    /// A clone shares the fixtures but not the session's log level.
    #[test]
    #[allow(deprecated, reason = "LoggingLevel is the 2025-11-25 API under test")]
    fn clones_are_fresh_sessions() {
        use aie_shared::rmcp::model::LoggingLevel;
        let a = server();
        *a.session.log_level.lock().expect("unpoisoned") =
            interactive::LogThreshold::from(LoggingLevel::Error);
        let b = a.clone();
        assert!(Arc::ptr_eq(&a.shared, &b.shared));
        assert_ne!(a.session_log_level(), b.session_log_level());
    }

    /// The advertised capabilities cover every fixture family.
    #[test]
    fn capabilities_cover_the_fixtures() {
        let caps = server().get_info().capabilities;
        assert!(caps.tools.is_some_and(|t| t.list_changed == Some(true)));
        assert!(caps.prompts.is_some());
        assert!(caps.resources.is_some_and(|r| r.subscribe == Some(true)));
        assert!(caps.completions.is_some());
    }
}
