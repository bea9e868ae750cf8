//! What both benchmarks share: the trivial tool they call, and servers on loopback in a
//! runtime of their own.

use std::{future::Future, net::SocketAddr};

use aie_shared::{HttpOptions, ToolOutput, ToolServer, ToolSet, ToolSpec, http};
use axum::Router;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Deserialize, JsonSchema)]
struct EchoArgs {
    /// Text to send back.
    text: String,
}

#[derive(Serialize, JsonSchema)]
struct Echoed {
    text: String,
}
impl ToolOutput for Echoed {
    fn render(&self) -> String {
        self.text.clone()
    }
}

/// A server with one tool, `echo`, that sends its text back.
pub fn echo_server() -> ToolServer {
    let mut tools = ToolSet::new();
    tools.add(
        ToolSpec::read("echo", "Echo", "Sends the text back"),
        |a: EchoArgs| async move { Ok(Echoed { text: a.text }) },
    );
    ToolServer::new("bench", tools)
}

/// Binds a loopback port and serves, with aie's listener, the router `make` builds for it
/// (given the listener's options and its stream token); returns the address.
pub async fn serve_on_loopback(
    make: impl FnOnce(&HttpOptions, CancellationToken) -> Router,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let opts = HttpOptions::new(addr);
    let streams = CancellationToken::new();
    let router = make(&opts, streams.clone());
    tokio::spawn(http::serve(
        listener,
        router,
        None,
        streams,
        std::future::pending(),
    ));
    addr
}

/// Runs `start` on a multi-thread runtime in a thread of its own, which then serves for as
/// long as the process lives, so the servers never share the client's threads; returns what
/// `start` returned.
pub fn in_own_runtime<T, F, Fut>(start: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        runtime.block_on(async move {
            tx.send(start().await).expect("report the servers");
            std::future::pending::<()>().await;
        });
    });
    rx.recv().expect("servers started")
}
