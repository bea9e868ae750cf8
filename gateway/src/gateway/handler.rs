//! The gateway's MCP server: one `ServerHandler` in front of every backend.
//!
//! rmcp clones the handler for each legacy session and for each stateless request, so a
//! clone shares [`Shared`] (the backends, the catalog, the guard) and starts a fresh
//! `Session`. A legacy session opens one upstream session per backend when the client
//! initializes, with the client's protocol version and capabilities, and relays the
//! upstream's server-to-client traffic back to it. A stateless request is forwarded as it
//! is, one exchange per backend it needs.

#![allow(
    deprecated,
    reason = "logging, sampling and resources/subscribe are 2025-11-25 features the gateway proxies (SEP-2577)"
)]

use std::{
    future::Future,
    sync::{Arc, OnceLock, PoisonError},
    time::Duration,
};

use aie_shared::direct::DirectFuture;
use aie_shared::rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CacheScope, CallToolRequest, CallToolRequestParams, CallToolResponse, CallToolResult,
        CancelTaskParams, CancelTaskRequest, ClientConfig, ClientRequest, CompleteRequest,
        CompleteRequestParams, CompleteResult, ContentBlock, GetPromptRequest,
        GetPromptRequestParams, GetPromptResponse, GetTaskParams, GetTaskRequest, GetTaskResult,
        InitializeRequestParams, InitializeResult, JsonObject, ListPromptsResult,
        ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
        Prompt, ReadResourceRequest, ReadResourceRequestParams, ReadResourceResponse, Reference,
        Resource, ResourceTemplate, ServerConfig, SetLevelRequest, SetLevelRequestParams,
        SubscribeRequest, SubscribeRequestParams, SubscriptionFilter, SubscriptionsListenRequest,
        SubscriptionsListenRequestParams, Tool, UnsubscribeRequest, UnsubscribeRequestParams,
        UpdateTaskParams, UpdateTaskRequest,
    },
    service::{NotificationContext, Peer, RequestContext, SubscriptionContext},
};
use futures::future::join_all;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{
    backend::{Backend, UpstreamSession, is_stateless},
    catalog::Catalog,
    error::Failure,
    guard::{CallInfo, CallOutcome, ClientIdentity},
    link::Link,
    lists::{Hints, ListKind, Page, list_pages},
    relay::Relay,
    state::Shared,
};

/// What a legacy session learned when its client initialized.
struct SessionSetup {
    /// How the gateway introduces the client upstream: its version, capabilities, identity.
    client: ClientConfig,
    /// The client's side of the session.
    peer: Peer<RoleServer>,
    /// Who opened the session.
    identity: Option<ClientIdentity>,
}

/// One legacy session's state.
struct Session {
    setup: OnceLock<SessionSetup>,
    upstreams: Vec<tokio::sync::Mutex<Option<Arc<UpstreamSession>>>>,
}

impl Session {
    fn new(backends: usize) -> Self {
        Self {
            setup: OnceLock::new(),
            upstreams: (0..backends)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
        }
    }
}

/// The gateway's MCP handler.
pub struct GatewayHandler {
    shared: Arc<Shared>,
    session: Arc<Session>,
}

impl Clone for GatewayHandler {
    fn clone(&self) -> Self {
        Self::new(self.shared.clone())
    }
}

/// The identity the bearer layer attached to this request.
fn identity_of(cx: &RequestContext<RoleServer>) -> Option<ClientIdentity> {
    cx.extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<ClientIdentity>())
        .cloned()
}

/// A result's text content, joined.
fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text())
        .map(|t| t.text.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The legacy session id the request came with.
fn session_id_of(cx: &RequestContext<RoleServer>) -> Option<&str> {
    cx.extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.headers.get("mcp-session-id"))
        .and_then(|v| v.to_str().ok())
}

fn no_identity() -> ErrorData {
    ErrorData::internal_error(
        "no client identity on this request: the gateway's /mcp must sit behind its bearer-token layer",
        None,
    )
}

/// Reads a backend's result as the type the method answers.
fn typed<T: DeserializeOwned>(backend: &str, value: Value) -> Result<T, Failure> {
    serde_json::from_value(value)
        .map_err(|e| Failure::unavailable(backend, format!("sent a malformed result: {e}")))
}

fn result_type(value: &Value) -> Option<&str> {
    value.get("resultType").and_then(Value::as_str)
}

impl GatewayHandler {
    /// A handler over `shared`, with a fresh session.
    pub fn new(shared: Arc<Shared>) -> Self {
        let session = Arc::new(Session::new(shared.backends.len()));
        Self { shared, session }
    }

    fn backend(&self, b: usize) -> &Arc<Backend> {
        &self.shared.backends[b]
    }

    /// This session's upstream session with backend `b`, opened (or reopened) on demand.
    async fn upstream(&self, b: usize) -> Result<Arc<UpstreamSession>, Failure> {
        let backend = self.backend(b);
        let Some(setup) = self.session.setup.get() else {
            return Err(Failure::Rpc(ErrorData::invalid_request(
                "the session is not initialized",
                None,
            )));
        };
        let mut slot = self.session.upstreams[b].lock().await;
        if let Some(session) = slot.as_ref().filter(|s| !s.is_closed()) {
            return Ok(session.clone());
        }
        let relay = Relay::new(
            backend.name.clone(),
            setup.client.clone(),
            Some(setup.peer.clone()),
        );
        let session = Arc::new(backend.open_session(relay).await?);
        *slot = Some(session.clone());
        Ok(session)
    }

    /// Forwards `request` to backend `b` on behalf of the client request `cx`.
    async fn forward(
        &self,
        b: usize,
        request: ClientRequest,
        cx: &RequestContext<RoleServer>,
    ) -> Result<Value, Failure> {
        if is_stateless(cx) {
            return self.backend(b).forward_stateless(request, cx).await;
        }
        if let (Some(setup), Some(caller)) = (self.session.setup.get(), identity_of(cx)) {
            match &setup.identity {
                Some(owner) if *owner != caller => {
                    return Err(Failure::Rpc(ErrorData::invalid_request(
                        "this session belongs to another client",
                        None,
                    )));
                }
                // Its owner, checked here: the direct path may answer its next calls.
                Some(owner) => {
                    if let Some(session) = session_id_of(cx) {
                        self.shared.note_session_owner(session, owner);
                    }
                }
                None => {}
            }
        }
        let session = self.upstream(b).await?;
        let result = session.forward(request, cx).await;
        self.backend(b).note(&result);
        if matches!(result, Err(Failure::Unavailable { .. })) {
            // Reopened on the next request, in case the upstream restarted.
            *self.session.upstreams[b].lock().await = None;
        }
        result
    }

    /// Lists `kind` from every backend in `backends`; failures are logged and skipped.
    async fn list_all<T: DeserializeOwned>(
        &self,
        kind: ListKind,
        backends: Vec<usize>,
        cx: &RequestContext<RoleServer>,
    ) -> Vec<(usize, Page<T>)> {
        let pages = join_all(backends.into_iter().map(|b| async move {
            let page = list_pages::<T, _, _>(kind, |r| self.forward(b, r, cx)).await;
            (b, page)
        }))
        .await;
        pages
            .into_iter()
            .filter_map(|(b, page)| match page {
                Ok(page) => Some((b, page)),
                Err(failure) => {
                    tracing::warn!(backend = %self.backend(b).name, error = %failure.message(), kind = kind.key(), "list skipped");
                    None
                }
            })
            .collect()
    }

    /// The backend owning resource `uri`, refreshing the catalog once on a miss.
    async fn resource_owner(&self, uri: &str) -> Option<usize> {
        if let Some(b) = self.shared.catalog().resource(uri) {
            return Some(b);
        }
        self.shared.refresh_after_miss().await;
        self.shared.catalog().resource(uri)
    }

    /// Sends a resource request to its owner; without a known owner, to each backend that
    /// serves resources until one knows the URI.
    async fn resource_request(
        &self,
        uri: &str,
        request: impl Fn() -> ClientRequest,
        cx: &RequestContext<RoleServer>,
    ) -> Result<(usize, Value), Failure> {
        if let Some(b) = self.resource_owner(uri).await {
            return self.forward(b, request(), cx).await.map(|v| (b, v));
        }
        let candidates = self.shared.backends_serving(|c| c.resources.is_some());
        let mut last = Failure::Rpc(ErrorData::resource_not_found(
            "Resource not found",
            Some(json!({"uri": uri})),
        ));
        for b in candidates {
            match self.forward(b, request(), cx).await {
                Ok(value) => return Ok((b, value)),
                Err(Failure::Rpc(error)) => last = Failure::Rpc(error),
                Err(other) => return Err(other),
            }
        }
        Err(last)
    }

    async fn tool_route(&self, name: &str) -> Option<(usize, String)> {
        let lookup =
            |catalog: &Catalog| catalog.tool(name).map(|r| (r.backend, r.upstream.clone()));
        if let Some(route) = lookup(&self.shared.catalog()) {
            return Some(route);
        }
        self.shared.refresh_after_miss().await;
        lookup(&self.shared.catalog())
    }

    async fn prompt_route(&self, name: &str) -> Option<(usize, String)> {
        let lookup = |catalog: &Catalog| {
            catalog
                .prompt(name)
                .map(|r| (r.backend, r.upstream.clone()))
        };
        if let Some(route) = lookup(&self.shared.catalog()) {
            return Some(route);
        }
        self.shared.refresh_after_miss().await;
        lookup(&self.shared.catalog())
    }

    /// Opens this session's upstream sessions, concurrently, each bounded by the connect
    /// timeout; a backend known to be down is left for the first request that needs it.
    async fn open_upstreams(&self) {
        let opening = (0..self.shared.backends.len())
            .filter(|b| !matches!(self.backend(*b).health(), super::backend::Health::Down(_)))
            .map(|b| async move {
                if let Err(failure) = self.upstream(b).await {
                    tracing::warn!(backend = %self.backend(b).name, error = %failure.message(), "upstream session not opened");
                }
            });
        join_all(opening).await;
    }

    /// A call to a tool no backend lists is still a call through the gateway: the guard
    /// decides it (to the policy an unknown tool is `execute`) and records it, and only a
    /// call it lets through gets the protocol's -32602.
    async fn call_unknown(
        &self,
        client: &ClientIdentity,
        request: CallToolRequestParams,
    ) -> Result<CallToolResponse, ErrorData> {
        let exposed = request.name.to_string();
        let info = CallInfo {
            tool: exposed.clone(),
            backend: String::new(),
            upstream_tool: exposed.clone(),
            arguments: request.arguments,
            retry_with_inputs: request.input_responses.is_some(),
        };
        let unknown = format!("unknown tool: {exposed}");
        match self.shared.guard.before(client, &info).await {
            Err(reason) => {
                tracing::info!(client = %client.name, tool = %exposed, reason, "call refused");
                Ok(
                    CallToolResult::error(vec![ContentBlock::text(format!("refused: {reason}"))])
                        .into(),
                )
            }
            Ok(permit) => {
                let outcome = CallOutcome::Failed {
                    reason: unknown.clone(),
                };
                self.shared.guard.after(permit, &outcome).await;
                Err(ErrorData::invalid_params(unknown, None))
            }
        }
    }

    /// Runs one `tools/call`: route, guard, forward, report.
    async fn call(
        &self,
        request: CallToolRequestParams,
        cx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let client = identity_of(cx).ok_or_else(no_identity)?;
        self.guarded_call(&client, request, |b, backend, params| async move {
            self.forward(
                b,
                ClientRequest::CallToolRequest(CallToolRequest::new(params)),
                cx,
            )
            .await
            .and_then(|value| match result_type(&value) {
                Some("input_required") => {
                    typed(&backend.name, value).map(CallToolResponse::InputRequired)
                }
                Some("task") => typed(&backend.name, value).map(CallToolResponse::Task),
                _ => typed(&backend.name, value).map(CallToolResponse::Complete),
            })
        })
        .await
    }

    /// Routes a `tools/call` to its backend, lets the guard decide it, runs it through
    /// `forward` (given the backend's index, the backend and the call under its upstream
    /// name) when allowed, and reports the outcome to the guard.
    async fn guarded_call<'a, F, Fut>(
        &'a self,
        client: &ClientIdentity,
        request: CallToolRequestParams,
        forward: F,
    ) -> Result<CallToolResponse, ErrorData>
    where
        F: FnOnce(usize, Arc<Backend>, CallToolRequestParams) -> Fut,
        Fut: Future<Output = Result<CallToolResponse, Failure>> + 'a,
    {
        let exposed = request.name.to_string();
        let Some((b, upstream_name)) = self.tool_route(&exposed).await else {
            return self.call_unknown(client, request).await;
        };
        let backend = self.backend(b).clone();
        let info = CallInfo {
            tool: exposed.clone(),
            backend: backend.name.to_string(),
            upstream_tool: upstream_name.clone(),
            arguments: request.arguments.clone(),
            retry_with_inputs: request.input_responses.is_some(),
        };
        let permit = match self.shared.guard.before(client, &info).await {
            Ok(permit) => permit,
            Err(reason) => {
                tracing::info!(client = %client.name, tool = %exposed, reason, "call refused");
                return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                    "refused: {reason}"
                ))])
                .into());
            }
        };
        let mut params = request;
        params.name = upstream_name.into();
        let forwarded = forward(b, backend.clone(), params).await;
        let trusted = backend.certifies_not_executed();
        let outcome = match &forwarded {
            Ok(CallToolResponse::Complete(result))
                if trusted && aie_shared::not_executed(result) =>
            {
                CallOutcome::NotExecuted {
                    reason: text_of(result),
                }
            }
            Ok(CallToolResponse::Complete(result)) if trusted && aie_shared::in_doubt(result) => {
                CallOutcome::InDoubt {
                    reason: text_of(result),
                }
            }
            Ok(CallToolResponse::Complete(result)) => CallOutcome::Result {
                is_error: result.is_error == Some(true),
            },
            Ok(CallToolResponse::InputRequired(_)) => CallOutcome::InputRequired,
            Ok(CallToolResponse::Task(task)) => {
                self.shared.remember_task(task.task.task_id.clone(), b);
                CallOutcome::Task {
                    task_id: task.task.task_id.clone(),
                }
            }
            Ok(_) => CallOutcome::Result { is_error: false },
            Err(failure) => CallOutcome::Failed {
                reason: failure.message(),
            },
        };
        self.shared.guard.after(permit, &outcome).await;
        match forwarded {
            Ok(response) => Ok(response),
            Err(failure) => failure.into_tool_result().map(Into::into),
        }
    }
}

/// A call of a tool whose backend runs in this process and answers it directly is routed,
/// guarded and reported exactly as any other call, then made on the backend's handler
/// without the MCP transport on either side. Calls to HTTP upstreams keep rmcp's path:
/// their notifications (progress, logs) must reach the client on the call's stream.
impl aie_shared::DirectCalls for GatewayHandler {
    fn answers_directly(&self, tool: &str, parts: &http::request::Parts) -> bool {
        // A legacy session belongs to the client that initialized it: a call in one goes
        // direct only once a call through rmcp showed this client owns it.
        if let Some(session) = parts.headers.get("mcp-session-id") {
            let client = parts.extensions.get::<ClientIdentity>();
            let owned = session
                .to_str()
                .ok()
                .zip(client)
                .is_some_and(|(session, client)| self.shared.owns_session(session, client));
            if !owned {
                return false;
            }
        }
        let catalog = self.shared.catalog();
        catalog
            .tool(tool)
            .is_some_and(|route| match &self.backend(route.backend).link {
                Link::InProcess(hosted) => hosted.answers_directly(&route.upstream, parts),
                Link::Http { .. } => false,
            })
    }

    fn call_directly<'a>(
        &'a self,
        tool: &'a str,
        arguments: Option<JsonObject>,
        parts: &'a http::request::Parts,
    ) -> DirectFuture<'a> {
        Box::pin(async move {
            let client = parts
                .extensions
                .get::<ClientIdentity>()
                .cloned()
                .ok_or_else(no_identity)?;
            let mut request = CallToolRequestParams::new(tool.to_owned());
            request.arguments = arguments;
            let response = self
                .guarded_call(&client, request, |_, backend, params| async move {
                    let Link::InProcess(hosted) = &backend.link else {
                        return Err(Failure::Unavailable {
                            backend: backend.name.to_string(),
                            reason: "not in this process".into(),
                        });
                    };
                    hosted
                        .call_directly(&params.name, params.arguments, parts)
                        .await
                        .map(CallToolResponse::Complete)
                        .map_err(Failure::Rpc)
                })
                .await?;
            match response {
                CallToolResponse::Complete(result) => Ok(result),
                _ => Err(ErrorData::internal_error(
                    "a direct call answered other than a result",
                    None,
                )),
            }
        })
    }
}

impl ServerHandler for GatewayHandler {
    fn get_info(&self) -> ServerConfig {
        self.shared
            .info
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        cx.peer.set_peer_info(request.clone());
        let result = self.negotiate_initialize(&request)?;
        let mut client = request;
        client.protocol_version = result.protocol_version.clone();
        let setup = SessionSetup {
            client,
            peer: cx.peer.clone(),
            identity: identity_of(&cx),
        };
        if self.session.setup.set(setup).is_err() {
            return Err(ErrorData::invalid_request(
                "the session is already initialized",
                None,
            ));
        }
        self.open_upstreams().await;
        Ok(result)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        cx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let client = identity_of(&cx).ok_or_else(no_identity)?;
        let backends = self.shared.backends_serving(|c| c.tools.is_some());
        let pages = self.list_all::<Tool>(ListKind::Tools, backends, &cx).await;
        let mut hints = Hints::new();
        let answered: Vec<usize> = pages.iter().map(|(b, _)| *b).collect();
        {
            let mut catalog = self.shared.catalog_mut();
            for (b, page) in pages {
                hints.add(&page);
                for conflict in catalog.set_tools(b, page.items, &self.shared.naming) {
                    tracing::error!(
                        ?conflict,
                        "tool name conflict between backends; the first backend keeps the name"
                    );
                }
            }
        }
        let guard = &self.shared.guard;
        let tools: Vec<Tool> = self
            .shared
            .catalog()
            .tools_of(&answered)
            .into_iter()
            .filter(|route| guard.visible(&client, &route.item.name))
            .map(|route| route.item.clone())
            .collect();
        // A backend probed for the first time while listing adds its capabilities.
        self.shared.refresh_info();
        let mut result = ListToolsResult::with_all_items(tools);
        result.ttl_ms = hints.ttl();
        result.cache_scope = if guard.same_for_every_client() {
            hints.scope
        } else {
            Some(CacheScope::Private)
        };
        Ok(result)
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        // rmcp reads the exposed schema to check SEP-2243 `Mcp-Param-*` headers.
        self.shared.catalog().tool(name).map(|r| r.item.clone())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.call(request, &cx).await
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        cx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let backends = self.shared.backends_serving(|c| c.prompts.is_some());
        let pages = self
            .list_all::<Prompt>(ListKind::Prompts, backends, &cx)
            .await;
        let mut hints = Hints::new();
        let answered: Vec<usize> = pages.iter().map(|(b, _)| *b).collect();
        {
            let mut catalog = self.shared.catalog_mut();
            for (b, page) in pages {
                hints.add(&page);
                catalog.set_prompts(b, page.items, &self.shared.naming);
            }
        }
        let prompts = self
            .shared
            .catalog()
            .prompts_of(&answered)
            .into_iter()
            .map(|route| route.item.clone())
            .collect();
        let mut result = ListPromptsResult::with_all_items(prompts);
        result.ttl_ms = hints.ttl();
        result.cache_scope = hints.scope;
        Ok(result)
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let Some((b, upstream)) = self.prompt_route(&request.name).await else {
            return Err(ErrorData::invalid_params(
                format!("unknown prompt: {}", request.name),
                None,
            ));
        };
        let backend = self.backend(b).name.clone();
        let mut params = request;
        params.name = upstream;
        let request = ClientRequest::GetPromptRequest(GetPromptRequest::new(params));
        self.forward(b, request, &cx)
            .await
            .and_then(|value| match result_type(&value) {
                Some("input_required") => {
                    typed(&backend, value).map(GetPromptResponse::InputRequired)
                }
                _ => typed(&backend, value).map(GetPromptResponse::Complete),
            })
            .map_err(Failure::into_error)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        cx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let backends = self.shared.backends_serving(|c| c.resources.is_some());
        let pages = self
            .list_all::<Resource>(ListKind::Resources, backends, &cx)
            .await;
        let mut hints = Hints::new();
        let mut resources = Vec::new();
        {
            let mut catalog = self.shared.catalog_mut();
            for (b, page) in pages {
                hints.add(&page);
                catalog.set_resources(b, page.items.iter().map(|r| r.uri.clone()).collect());
                resources.extend(page.items);
            }
        }
        let mut result = ListResourcesResult::with_all_items(resources);
        result.ttl_ms = hints.ttl();
        result.cache_scope = hints.scope;
        Ok(result)
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        cx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let backends = self.shared.backends_serving(|c| c.resources.is_some());
        let pages = self
            .list_all::<ResourceTemplate>(ListKind::Templates, backends, &cx)
            .await;
        let mut hints = Hints::new();
        let mut templates = Vec::new();
        {
            let mut catalog = self.shared.catalog_mut();
            for (b, page) in pages {
                hints.add(&page);
                catalog.set_templates(b, page.items.clone());
                templates.extend(page.items);
            }
        }
        let mut result = ListResourceTemplatesResult::with_all_items(templates);
        result.ttl_ms = hints.ttl();
        result.cache_scope = hints.scope;
        Ok(result)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri.clone();
        let make = || ClientRequest::ReadResourceRequest(ReadResourceRequest::new(request.clone()));
        let (b, value) = self
            .resource_request(&uri, make, &cx)
            .await
            .map_err(Failure::into_error)?;
        let backend = self.backend(b).name.clone();
        match result_type(&value) {
            Some("input_required") => {
                typed(&backend, value).map(ReadResourceResponse::InputRequired)
            }
            _ => typed(&backend, value).map(ReadResourceResponse::Complete),
        }
        .map_err(Failure::into_error)
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let uri = request.uri.clone();
        let make = || ClientRequest::SubscribeRequest(SubscribeRequest::new(request.clone()));
        self.resource_request(&uri, make, &cx)
            .await
            .map(|_| ())
            .map_err(Failure::into_error)
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let uri = request.uri.clone();
        let make = || ClientRequest::UnsubscribeRequest(UnsubscribeRequest::new(request.clone()));
        self.resource_request(&uri, make, &cx)
            .await
            .map(|_| ())
            .map_err(Failure::into_error)
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let mut params = request;
        let target = match &mut params.r#ref {
            Reference::Prompt(prompt) => match self.prompt_route(&prompt.name).await {
                Some((b, upstream)) => {
                    prompt.name = upstream;
                    Some(b)
                }
                None => None,
            },
            Reference::Resource(template) => {
                let known = self.shared.catalog().template(&template.uri);
                match known {
                    Some(b) => Some(b),
                    None => self.resource_owner(&template.uri).await,
                }
            }
            _ => None,
        };
        let target = target.or_else(|| {
            self.shared
                .backends_serving(|c| c.completions.is_some())
                .first()
                .copied()
        });
        let Some(b) = target else {
            return Err(ErrorData::invalid_params(
                "no backend serves completions for this reference",
                None,
            ));
        };
        let backend = self.backend(b).name.clone();
        self.forward(
            b,
            ClientRequest::CompleteRequest(CompleteRequest::new(params)),
            &cx,
        )
        .await
        .and_then(|value| typed(&backend, value))
        .map_err(Failure::into_error)
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let backends = self.shared.backends_serving(|c| c.logging.is_some());
        if backends.is_empty() {
            return Err(ErrorData::method_not_found::<
                aie_shared::rmcp::model::SetLevelRequestMethod,
            >());
        }
        let results = join_all(backends.into_iter().map(|b| {
            let request = ClientRequest::SetLevelRequest(SetLevelRequest::new(request.clone()));
            let cx = &cx;
            async move { self.forward(b, request, cx).await }
        }))
        .await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(_) => return Ok(()),
                Err(failure) => {
                    first_error.get_or_insert(failure);
                }
            }
        }
        match first_error {
            Some(failure) => Err(failure.into_error()),
            None => Ok(()),
        }
    }

    async fn on_roots_list_changed(&self, _cx: NotificationContext<RoleServer>) {
        for slot in &self.session.upstreams {
            let session = slot.lock().await.clone();
            if let Some(session) = session
                && let Err(e) = session.peer().notify_roots_list_changed().await
            {
                tracing::debug!(error = %e, "roots/list_changed not relayed");
            }
        }
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        let b = self.task_backend(&request.task_id)?;
        let backend = self.backend(b).name.clone();
        self.forward(
            b,
            ClientRequest::GetTaskRequest(GetTaskRequest::new(request)),
            &cx,
        )
        .await
        .and_then(|value| typed(&backend, value))
        .map_err(Failure::into_error)
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let b = self.task_backend(&request.task_id)?;
        self.forward(
            b,
            ClientRequest::UpdateTaskRequest(UpdateTaskRequest::new(request)),
            &cx,
        )
        .await
        .map(|_| ())
        .map_err(Failure::into_error)
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let b = self.task_backend(&request.task_id)?;
        self.forward(
            b,
            ClientRequest::CancelTaskRequest(CancelTaskRequest::new(request)),
            &cx,
        )
        .await
        .map(|_| ())
        .map_err(Failure::into_error)
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    async fn listen(&self, cx: SubscriptionContext) -> Result<(), ErrorData> {
        let accepted = cx.accepted().clone();
        let streams: Vec<_> = (0..self.shared.backends.len())
            .filter_map(|b| {
                let facts = self.backend(b).facts()?;
                if !facts.modern {
                    return None;
                }
                let filter = accepted.supported_by(&facts.capabilities);
                (!filter_is_empty(&filter)).then(|| self.listen_to(b, filter, &cx))
            })
            .collect();
        // The stream stays open until the client closes it, even with no backend behind
        // it: that is what the client asked for.
        tokio::select! {
            _ = join_all(streams) => cx.cancelled().await,
            () = cx.cancelled() => {}
        }
        Ok(())
    }
}

fn filter_is_empty(filter: &SubscriptionFilter) -> bool {
    filter.tools_list_changed != Some(true)
        && filter.prompts_list_changed != Some(true)
        && filter.resources_list_changed != Some(true)
        && filter
            .resource_subscriptions
            .as_ref()
            .is_none_or(Vec::is_empty)
}

impl GatewayHandler {
    fn task_backend(&self, task_id: &str) -> Result<usize, ErrorData> {
        self.shared
            .task_owner(task_id)
            .ok_or_else(|| ErrorData::invalid_params(format!("unknown task: {task_id}"), None))
    }

    /// Relays backend `b`'s list-change notifications to the client's listen stream until
    /// the client closes it; reconnects, with backoff, when the backend drops the stream.
    async fn listen_to(&self, b: usize, filter: SubscriptionFilter, cx: &SubscriptionContext) {
        use futures::StreamExt as _;

        use super::exchange::{self, Inbound};
        let backend = self.backend(b);
        let request_cx = cx.request_context();
        let headers = super::backend::param_headers(request_cx);
        let mut backoff = Duration::from_millis(500);
        loop {
            let mut request =
                ClientRequest::SubscriptionsListenRequest(SubscriptionsListenRequest::new(
                    SubscriptionsListenRequestParams::new(filter.clone()),
                ));
            *aie_shared::rmcp::model::GetMeta::get_meta_mut(&mut request) = request_cx.meta.clone();
            let message = aie_shared::rmcp::model::ClientJsonRpcMessage::request(
                request,
                aie_shared::rmcp::model::NumberOrString::Number(1),
            );
            match exchange::send(&backend.link, &message, &headers).await {
                Ok(mut messages) => {
                    backoff = Duration::from_millis(500);
                    while let Some(inbound) = messages.next().await {
                        match inbound {
                            Ok(Inbound::Notification(
                                aie_shared::rmcp::model::ServerNotification::SubscriptionsAcknowledgedNotification(_),
                            )) => {}
                            Ok(Inbound::Notification(notification)) => {
                                use aie_shared::rmcp::service::SubscriptionSendError;
                                match cx.sink().send(notification).await {
                                    Ok(())
                                    | Err(SubscriptionSendError::NotificationNotAccepted(_))
                                    | Err(SubscriptionSendError::UnsupportedNotification(_)) => {}
                                    Err(_) => return,
                                }
                            }
                            Ok(Inbound::Reply(_)) => break,
                            Ok(Inbound::Request(_)) => {}
                            Err(reason) => {
                                tracing::debug!(backend = %backend.name, reason, "listen stream broke");
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(backend = %backend.name, reason = e.reason, "listen stream not opened");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}
