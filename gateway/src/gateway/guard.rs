//! The policy hook: who may see and call which tool. The gateway asks a [`CallGuard`]
//! before it forwards a `tools/call` and tells it the outcome afterwards; the policy
//! engine, the approvals and the audit log plug in here. [`AllowAll`] lets everything
//! through, for tests and for fronting servers without a policy.

use std::{any::Any, fmt, time::Instant};

use aie_shared::{http::HttpRefusal, rmcp::model::JsonObject};
use async_trait::async_trait;

/// Who is calling: the client the bearer token belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientIdentity {
    /// The client's name, as configured (`[[gateway.clients]] name`).
    pub name: String,
    /// The client's role, as configured; the policy decides what it means.
    pub role: String,
}

impl ClientIdentity {
    /// A client named `name` with `role`.
    pub fn new(name: impl Into<String>, role: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            role: role.into(),
        }
    }
}

impl fmt::Display for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.role)
    }
}

/// One `tools/call` as the gateway is about to forward it.
#[derive(Debug, Clone)]
pub struct CallInfo {
    /// The tool's exposed name (what the client called).
    pub tool: String,
    /// The backend that serves it.
    pub backend: String,
    /// The tool's name on that backend (without the gateway's prefix).
    pub upstream_tool: String,
    /// The call's arguments, as the client sent them.
    pub arguments: Option<JsonObject>,
    /// True when this is a retry carrying answers to an `InputRequiredResult`
    /// (2026-07-28 multi round-trip).
    pub retry_with_inputs: bool,
}

/// A guard's permission for one call, handed back to [`CallGuard::after`] with its outcome.
pub struct Permit {
    /// Who called.
    pub client: ClientIdentity,
    /// What was called.
    pub call: CallInfo,
    /// When the guard allowed it; `after` can derive the call's latency from it.
    pub started: Instant,
    /// Whatever the guard wants back in `after` (an effect class, an approval id...).
    pub data: Option<Box<dyn Any + Send + Sync>>,
}

impl Permit {
    /// A permit for `call` by `client`, starting now, carrying nothing else.
    pub fn new(client: ClientIdentity, call: CallInfo) -> Self {
        Self {
            client,
            call,
            started: Instant::now(),
            data: None,
        }
    }

    /// Attaches the guard's own data.
    pub fn with_data(mut self, data: impl Any + Send + Sync) -> Self {
        self.data = Some(Box::new(data));
        self
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("client", &self.client)
            .field("call", &self.call)
            .field("started", &self.started)
            .field("data", &self.data.is_some())
            .finish()
    }
}

/// How a forwarded call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// The backend answered a result; `is_error` is its `isError` flag.
    Result {
        /// The result's `isError`.
        is_error: bool,
    },
    /// The backend answered an `isError` result certifying that the call did nothing
    /// (`_meta` `dev.aie/notExecuted`, see `aie_shared::tools::not_executed`), and the
    /// backend is one the gateway believes about that: a server it hosts in-process. From an
    /// HTTP upstream the same result is a plain `Result { is_error: true }`, so a lying
    /// upstream cannot get an approval given back.
    NotExecuted {
        /// The result's text, as the client got it.
        reason: String,
    },
    /// The backend answered an `isError` result saying the call may have happened (`_meta`
    /// `dev.aie/inDoubt`, see `aie_shared::tools::in_doubt`), from a backend the gateway
    /// believes (in-process). From an HTTP upstream it is a plain `Result { is_error: true }`
    /// (recorded failed: it never runs again either way).
    InDoubt {
        /// The result's text, as the client got it.
        reason: String,
    },
    /// The backend asked the client for more input (a 2026-07-28 `InputRequiredResult`);
    /// the client retries the call with the answers.
    InputRequired,
    /// The backend started a task (the Tasks extension); the client polls it.
    Task {
        /// The task's id.
        task_id: String,
    },
    /// The call failed: a JSON-RPC error from the backend, the backend unreachable, or the
    /// client gone.
    Failed {
        /// What went wrong, as the client was told.
        reason: String,
    },
}

/// A request to `/mcp` that the HTTP layers refused (no or a wrong token, a foreign Host or
/// Origin, a body over the limit or not received), so it never became a call: what the
/// gateway knows of it without trusting or keeping anything secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRefused {
    /// The configured client whose token the request carried, when the token named one
    /// (never the token itself).
    pub client: Option<String>,
    /// The tool its `Mcp-Name` header named, when that is a well-formed tool name.
    pub tool: Option<String>,
    /// The status answered and why.
    pub refusal: HttpRefusal,
    /// The request's `x-request-id`, which its trace carries too.
    pub request_id: String,
    /// From receipt to the refusal.
    pub latency_ms: u64,
}

/// Decides, per client, which tools are visible and which calls go through.
#[async_trait]
pub trait CallGuard: Send + Sync + 'static {
    /// Whether `tool` (an exposed name) appears in `tools/list` for `client`.
    fn visible(&self, client: &ClientIdentity, tool: &str) -> bool;

    /// True when [`visible`](Self::visible) is the same for every client, so list results
    /// may be cached publicly (`cacheScope: "public"`); otherwise they are `private`.
    fn same_for_every_client(&self) -> bool {
        false
    }

    /// Decides a call before it is forwarded. `Err(reason)` refuses it: the client gets an
    /// `isError` result naming the reason, and the call never reaches the backend.
    async fn before(&self, client: &ClientIdentity, call: &CallInfo) -> Result<Permit, String>;

    /// Records the outcome of a call `before` allowed (for audit and approvals).
    async fn after(&self, permit: Permit, outcome: &CallOutcome);

    /// Records a request the HTTP layers refused before it became a call (for audit); the
    /// client already has its answer, which this cannot change. By default, nothing.
    async fn http_refused(&self, _refused: &HttpRefused) {}
}

/// A guard that shows every tool and allows every call.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

#[async_trait]
impl CallGuard for AllowAll {
    fn visible(&self, _client: &ClientIdentity, _tool: &str) -> bool {
        true
    }

    fn same_for_every_client(&self) -> bool {
        true
    }

    async fn before(&self, client: &ClientIdentity, call: &CallInfo) -> Result<Permit, String> {
        Ok(Permit::new(client.clone(), call.clone()))
    }

    async fn after(&self, _permit: Permit, _outcome: &CallOutcome) {}
}
