//! The conformance suite's fixtures (being written).
use aie_shared::{ToolServer, ToolSet};

/// The fixture server.
pub fn server() -> ToolServer {
    ToolServer::new("aie-conformance", ToolSet::new())
}
