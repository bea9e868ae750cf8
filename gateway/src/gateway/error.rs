//! What can go wrong in the gateway: at start-up (a configuration to fix) and per request
//! (a backend that answered an error, or could not be reached), and how each becomes an
//! answer to the client.

use aie_shared::rmcp::{
    ErrorData, ServiceError,
    model::{CallToolResult, ContentBlock},
};
use serde_json::json;

/// Why the gateway cannot start. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Two backends share a name.
    #[error("two backends are named `{0}`: give each [[upstream]] a unique name")]
    DuplicateBackend(String),
    /// A backend's name cannot prefix tool names.
    #[error(
        "backend name `{0}` is not usable: use 1 to 64 letters, digits, `_` or `-` (it prefixes tool names)"
    )]
    BadBackendName(String),
    /// An upstream URL is not an http(s) URL.
    #[error("upstream `{name}`: `{url}` is not an http:// or https:// URL")]
    BadUrl {
        /// The upstream.
        name: String,
        /// Its URL.
        url: String,
    },
    /// A configured upstream header is not a valid HTTP header.
    #[error("upstream `{name}`: header `{header}` is not a valid HTTP header name and value")]
    BadHeader {
        /// The upstream.
        name: String,
        /// The header.
        header: String,
    },
    /// An exposed tool name is outside the portable alphabet.
    #[error(
        "backend `{backend}` exposes the tool name `{name}`, which is not `^[a-zA-Z0-9_-]{{1,64}}$`: rename it upstream or set `prefix` so the exposed name fits"
    )]
    BadToolName {
        /// The backend.
        backend: String,
        /// The exposed name.
        name: String,
    },
    /// Two backends expose the same tool name.
    #[error(
        "backends `{first}` and `{second}` both expose the tool `{name}`: set `prefix = true` on one of them"
    )]
    ToolCollision {
        /// The exposed name.
        name: String,
        /// The backend listed first.
        first: String,
        /// The other one.
        second: String,
    },
    /// The shared HTTP client could not be built.
    #[error("{0}")]
    HttpClient(String),
}

/// Why one forwarded request failed.
#[derive(Debug)]
pub enum Failure {
    /// The backend answered with a JSON-RPC error: passed on as it is.
    Rpc(ErrorData),
    /// The backend could not be reached, or broke the exchange.
    Unavailable {
        /// The backend's name.
        backend: String,
        /// What happened.
        reason: String,
    },
    /// The client cancelled the request or went away.
    Cancelled,
}

impl Failure {
    /// A failure to reach `backend`.
    pub fn unavailable(backend: &str, reason: impl Into<String>) -> Self {
        Self::Unavailable {
            backend: backend.to_owned(),
            reason: reason.into(),
        }
    }

    /// Classifies an rmcp client error on `backend`'s session.
    pub fn from_service(backend: &str, error: ServiceError) -> Self {
        match error {
            ServiceError::McpError(error) => Self::Rpc(error),
            ServiceError::Cancelled { .. } => Self::Cancelled,
            other => Self::unavailable(backend, other.to_string()),
        }
    }

    /// The text a client reads.
    pub fn message(&self) -> String {
        match self {
            Failure::Rpc(error) => error.message.to_string(),
            Failure::Unavailable { backend, reason } => {
                format!("upstream `{backend}` is unavailable: {reason}")
            }
            Failure::Cancelled => "the request was cancelled".to_owned(),
        }
    }

    /// The JSON-RPC error for the client: the backend's own, or an internal error naming
    /// the unavailable backend.
    pub fn into_error(self) -> ErrorData {
        match self {
            Failure::Rpc(error) => error,
            Failure::Unavailable { ref backend, .. } => {
                let data = json!({"upstream": backend});
                ErrorData::internal_error(self.message(), Some(data))
            }
            Failure::Cancelled => ErrorData::internal_error(self.message(), None),
        }
    }

    /// For `tools/call`: a tool the client can see fail. An unavailable backend is an
    /// `isError` result naming it (the model reads it); a backend's JSON-RPC error stays
    /// one.
    pub fn into_tool_result(self) -> Result<CallToolResult, ErrorData> {
        match self {
            Failure::Unavailable { .. } => Ok(CallToolResult::error(vec![ContentBlock::text(
                self.message(),
            )])),
            other => Err(other.into_error()),
        }
    }
}
