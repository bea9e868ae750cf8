//! Benchmark of an approved `email_send` through the local gateway (`aie up --zone local`:
//! bearer token, policy guard, approval ledger, audit log, the executor's journal) to a real
//! SMTP server on loopback (aiosmtpd, `tests/peers/smtp_sink.py`). Each call spends one
//! approval, so the figures are over a fixed number of calls: the latency (p50, p99) of
//! calls one at a time on one connection, then calls/s with several connections at once.
//!
//! The `aie` binary is driven from outside, so one build of this bench measures any build of
//! aie: `AIE_BENCH_BINS="before=/path/to/old/aie after=/path/to/new/aie"` compares builds
//! (requests are written as files and approved with each binary's own `aie approvals
//! approve`), each measured `AIE_BENCH_RUNS` times (default 3; the median is printed).
//! Without it, the release `aie` beside this bench.
//!
//! Run: `cargo bench -p aie-e2e --bench email_send` (needs `AIE_PYTHON`, as `tests/run`
//! sets it). Prints figures only; it never fails on time.

// The client half of what the other benches share; their servers are not used here.
#[allow(dead_code)]
mod common;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aie_e2e::zones::SmtpSink;
use aie_shared::vault::{AgentName, ApprovalId, ApprovalRequest, Domain, Vault, payload_sha256};
use bytes::Bytes;
use common::{client_runtime, connect, post_json};
use http_body_util::{BodyExt, Full};
use hyper::{Request, client::conn::http1::SendRequest};
use serde_json::json;

const TOKEN: &str = "bench-token";
/// Calls before the latency is measured.
const WARMUP_CALLS: usize = 20;
/// Calls one at a time whose latency is measured.
const LATENCY_CALLS: usize = 200;
/// Calls spread over [`CONNECTIONS`] connections for calls/s.
const THROUGHPUT_CALLS: usize = 400;
/// Connections at once for calls/s.
const CONNECTIONS: usize = 4;

/// One measurement.
#[derive(Debug, Clone, Copy)]
struct Figures {
    p50_us: f64,
    p99_us: f64,
    serial_per_s: f64,
    parallel_per_s: f64,
    errors: usize,
}

/// The builds to measure: `AIE_BENCH_BINS` (`name=path ...`), else the release `aie`.
fn builds() -> Vec<(String, PathBuf)> {
    match std::env::var("AIE_BENCH_BINS") {
        Ok(list) => list
            .split_whitespace()
            .map(|pair| {
                let (name, path) = pair.split_once('=').expect("AIE_BENCH_BINS: name=path");
                (name.to_owned(), PathBuf::from(path))
            })
            .collect(),
        Err(_) => vec![("this build".to_owned(), aie_e2e::aie_bin())],
    }
}

/// `n` reply approval requests in `vault`'s `Pending_Approval/email/`; their ids and
/// payload hashes.
fn draft(vault: &Vault, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let id = ApprovalId::new(format!("reply-bench{i:05}")).expect("id");
            let payload = json!({
                "from": "Owner <owner@example.com>",
                "to": ["alice@example.org"],
                "cc": [],
                "subject": "Re: Invoice 42",
                "body": format!("Paid today ({i})."),
                "in_reply_to": "<inv42@example.org>",
                "references": ["<inv42@example.org>"],
                "message_id": format!("<aie.{id}@example.com>"),
            });
            let hash = payload_sha256(&payload);
            vault
                .write_approval_request(&ApprovalRequest::new(
                    id.clone(),
                    Domain::Email,
                    "email_send",
                    payload,
                    AgentName::new("cloud").expect("agent"),
                    chrono::Utc::now() + chrono::TimeDelta::hours(6),
                ))
                .expect("draft");
            (id.to_string(), hash)
        })
        .collect()
}

/// Approves every request with `bin`'s own `aie approvals approve` (with `--sha256` when
/// that build has it).
fn approve_all(bin: &Path, vault: &Path, state: &Path, drafted: &[(String, String)]) {
    let help = Command::new(bin)
        .args(["approvals", "approve", "--help"])
        .output()
        .expect("aie approvals approve --help");
    let with_hash = String::from_utf8_lossy(&help.stdout).contains("--sha256");
    for (id, hash) in drafted {
        let mut cmd = Command::new(bin);
        cmd.args(["approvals", "approve", id])
            .arg("--vault")
            .arg(vault)
            .arg("--state")
            .arg(state)
            .env_remove("AIE_CONFIG")
            .env("USER", "owner");
        if with_hash {
            cmd.args(["--sha256", &hash[..16]]);
        }
        let out = cmd.output().expect("aie approvals approve");
        assert!(
            out.status.success(),
            "approve {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// One stateless (2026-07-28) `email_send` of approval `id`.
fn send_request(addr: SocketAddr, n: u64, id: &str) -> Request<Full<Bytes>> {
    let body = json!({"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {
        "name": "email_send", "arguments": {"approval_id": id},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"}}}})
    .to_string();
    let authorization = format!("Bearer {TOKEN}");
    post_json(
        addr,
        "/mcp",
        body,
        &[
            ("authorization", authorization.as_str()),
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "email_send"),
        ],
    )
}

/// Sends approvals from `queue` on `sender` until it is empty; the latency of each, and how
/// many did not answer `sent`.
async fn drain(
    sender: &mut SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    queue: Arc<Mutex<Vec<String>>>,
) -> (Vec<Duration>, usize) {
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut n = 1;
    loop {
        let Some(id) = queue.lock().expect("queue").pop() else {
            return (latencies, errors);
        };
        sender.ready().await.expect("ready");
        let started = Instant::now();
        let res = sender
            .send_request(send_request(addr, n, &id))
            .await
            .expect("send");
        let ok = res.status().is_success();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        latencies.push(started.elapsed());
        let sent: &[u8] = b"\"status\":\"sent\"";
        if !ok || !body.windows(sent.len()).any(|w| w == sent) {
            errors += 1;
            if errors == 1 {
                eprintln!("not sent: {}", String::from_utf8_lossy(&body));
            }
        }
        n += 1;
    }
}

/// One measurement of `bin`: a fresh vault and state folder, approvals, `aie up --zone
/// local` sending to a fresh aiosmtpd.
fn run(bin: &Path) -> Figures {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::init(dir.path().join("vault")).expect("vault");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state");
    let total = WARMUP_CALLS + LATENCY_CALLS + THROUGHPUT_CALLS;
    let drafted = draft(&vault, total);
    approve_all(bin, vault.root(), &state, &drafted);
    let sink = SmtpSink::start(dir.path());
    // No sync round during the measurement: it would compete for the two cores.
    let config = dir.path().join("aie.toml");
    std::fs::write(&config, "[sync]\ninterval_secs = 86400\n").expect("config");
    let s = |p: &Path| p.display().to_string();
    let stack = start_aie(
        bin,
        &[
            "up",
            "--zone",
            "local",
            "--agent",
            "local",
            "--vault",
            &s(vault.root()),
            "--state",
            &s(&state),
            "--listen",
            "127.0.0.1:0",
            "--smtp",
            &sink.url(),
            "--config",
            &s(&config),
        ],
    );
    let addr: SocketAddr = stack.addr.parse().expect("addr");
    let mut ids: Vec<String> = drafted.into_iter().map(|(id, _)| id).collect();
    ids.reverse();
    let client = client_runtime();
    let figures = client.block_on(async {
        let warm: Vec<String> = ids.split_off(ids.len() - WARMUP_CALLS);
        let mut sender = connect(addr).await;
        let (_, warm_errors) = drain(&mut sender, addr, Arc::new(Mutex::new(warm))).await;
        let serial: Vec<String> = ids.split_off(ids.len() - LATENCY_CALLS);
        let started = Instant::now();
        let (mut latencies, serial_errors) =
            drain(&mut sender, addr, Arc::new(Mutex::new(serial))).await;
        let serial_per_s = LATENCY_CALLS as f64 / started.elapsed().as_secs_f64();
        latencies.sort();
        let pick = |q: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * q) as usize)
                .map_or(0.0, |d| d.as_secs_f64() * 1e6)
        };
        let queue = Arc::new(Mutex::new(std::mem::take(&mut ids)));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..CONNECTIONS {
            let queue = queue.clone();
            tasks.push(tokio::spawn(async move {
                let mut sender = connect(addr).await;
                drain(&mut sender, addr, queue).await
            }));
        }
        let mut parallel_errors = 0;
        let mut done = 0;
        for task in tasks {
            let (l, e) = task.await.expect("connection");
            done += l.len();
            parallel_errors += e;
        }
        let parallel_per_s = done as f64 / started.elapsed().as_secs_f64();
        Figures {
            p50_us: pick(0.5),
            p99_us: pick(0.99),
            serial_per_s,
            parallel_per_s,
            errors: warm_errors + serial_errors + parallel_errors,
        }
    });
    let received = sink.messages().len();
    if received != total {
        eprintln!("the sink received {received} messages of {total}");
    }
    drop(stack);
    figures
}

/// A running `aie` of the build under measure; killed when dropped.
struct Running {
    child: Child,
    /// `127.0.0.1:PORT`.
    addr: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bin ARGS` with the bench's token and waits for the URL it prints.
fn start_aie(bin: &Path, args: &[&str]) -> Running {
    let mut child = Command::new(bin)
        .args(args)
        .env("AIE_TOKEN", TOKEN)
        .env("RUST_LOG", "error")
        .env_remove("AIE_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn aie");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("aie printed no URL within 60 s");
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("host:port")
        .to_owned();
    Running { child, addr }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    aie_shared::init_crypto();
    let runs: usize = std::env::var("AIE_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    println!(
        "email_send through aie up --zone local to aiosmtpd on loopback, stateless JSON; {LATENCY_CALLS} calls one at a time (after {WARMUP_CALLS}), then {THROUGHPUT_CALLS} over {CONNECTIONS} connections; median of {runs} runs"
    );
    println!(
        "{:<12} {:>4} {:>10} {:>10} {:>12} {:>14} {:>7}",
        "build", "run", "p50 ms", "p99 ms", "calls/s (1)", "calls/s (4)", "errors"
    );
    for (name, bin) in builds() {
        let mut all = Vec::new();
        for i in 0..runs {
            let f = run(&bin);
            println!(
                "{:<12} {:>4} {:>10.2} {:>10.2} {:>12.1} {:>14.1} {:>7}",
                name,
                i + 1,
                f.p50_us / 1000.0,
                f.p99_us / 1000.0,
                f.serial_per_s,
                f.parallel_per_s,
                f.errors
            );
            all.push(f);
        }
        println!(
            "{:<12} {:>4} {:>10.2} {:>10.2} {:>12.1} {:>14.1}",
            name,
            "med",
            median(all.iter().map(|f| f.p50_us).collect()) / 1000.0,
            median(all.iter().map(|f| f.p99_us).collect()) / 1000.0,
            median(all.iter().map(|f| f.serial_per_s).collect()),
            median(all.iter().map(|f| f.parallel_per_s).collect()),
        );
    }
}
