//! Contract invariant 10 against a running `aie up --zone local`: a client flooding the
//! gateway with session opens is refused past its bound, with a message naming the
//! `[limits]` key, while the process's memory stays bounded and other clients are served;
//! the listener's total is bounded too; drafts are refused while `Pending_Approval/` is full.

use std::{
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aie::gateway::sha256_hex;
use aie_e2e::{Aie, audit_records_in, last_json_line, peer, peers_dir, run};
use aie_shared::vault::{AgentName, ApprovalId, ApprovalRequest, Domain, Vault};
use serde_json::{Value, json};

/// The flooding client's token (role `reader`, the weakest).
const FLOODER: &str = "flooder-token";
/// Another client's token (role `owner`).
const OWNER: &str = "owner-token";
/// Session opens the flood sends.
const FLOOD: usize = 5_000;
/// Connections the flood sends them over at once.
const CONCURRENCY: usize = 16;
/// The flood stops sending after this long, whatever it reached (it takes a few seconds).
const FLOOD_DEADLINE: Duration = Duration::from_secs(180);
/// The bound this test states: the stack's resident memory grows by less than this during
/// the flood. Unbounded, 5,000 sessions at about 200 kB each would add about 1 GB.
const RSS_BOUND_KIB: u64 = 64 * 1024;

/// `aie up --zone local` on `dir` with `config` (TOML), the two clients configured.
fn up(dir: &Path, config: &str) -> Aie {
    let file = dir.join("aie.toml");
    let clients = format!(
        r#"
[[gateway.clients]]
name = "flooder"
role = "reader"
token_sha256 = "{}"

[[gateway.clients]]
name = "owner"
role = "owner"
token_sha256 = "{}"
"#,
        sha256_hex(FLOODER),
        sha256_hex(OWNER)
    );
    std::fs::write(&file, format!("{config}\n{clients}")).expect("config");
    let s = |p: &Path| p.display().to_string();
    Aie::start_with_env(
        &[
            "up",
            "--zone",
            "local",
            "--vault",
            &s(&dir.join("vault")),
            "--state",
            &s(&dir.join("state")),
            "--config",
            &s(&file),
            "--listen",
            "127.0.0.1:0",
        ],
        &[("USER", "owner")],
    )
}

/// The process's resident memory, in KiB (`VmRSS` of `/proc/PID/status`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// How a batch of session opens went.
#[derive(Debug, Default)]
struct Opens {
    sent: usize,
    opened: usize,
    refused: usize,
    /// Refusals whose JSON-RPC message names `key`.
    naming_key: usize,
    other: Vec<String>,
    first_refusal: Option<Value>,
}

/// Sends up to `count` `initialize` requests (no session) with `token`, `CONCURRENCY` at a
/// time, until done or `FLOOD_DEADLINE`; counts answers, and which refusals name `key`.
async fn open_sessions(url: &str, token: &str, count: usize, key: &str) -> Opens {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "flood", "version": "1"}}})
    .to_string();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .expect("client");
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + FLOOD_DEADLINE;
    let workers = (0..CONCURRENCY).map(|_| {
        let (client, next, body) = (client.clone(), next.clone(), body.clone());
        let (url, token, key) = (url.to_owned(), token.to_owned(), key.to_owned());
        tokio::spawn(async move {
            let mut opens = Opens::default();
            while (next.fetch_add(1, Ordering::SeqCst) as usize) < count
                && Instant::now() < deadline
            {
                opens.sent += 1;
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("accept", "application/json, text/event-stream")
                    .header("authorization", format!("Bearer {token}"))
                    .body(body.clone())
                    .send()
                    .await;
                let response = match response {
                    Ok(response) => response,
                    Err(e) => {
                        opens.other.push(format!("transport: {e}"));
                        continue;
                    }
                };
                let status = response.status().as_u16();
                let opened = response.headers().contains_key("mcp-session-id");
                let text = response.text().await.unwrap_or_default();
                match (status, opened) {
                    (200, true) => opens.opened += 1,
                    (429, false) => {
                        opens.refused += 1;
                        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        let message = answer["error"]["message"].as_str().unwrap_or_default();
                        if message.contains(&format!("[limits] {key} = ")) {
                            opens.naming_key += 1;
                        }
                        opens.first_refusal.get_or_insert(answer);
                    }
                    _ => opens.other.push(format!("{status}: {text}")),
                }
            }
            opens
        })
    });
    let mut all = Opens::default();
    for worker in futures_join(workers).await {
        all.sent += worker.sent;
        all.opened += worker.opened;
        all.refused += worker.refused;
        all.naming_key += worker.naming_key;
        all.other.extend(worker.other);
        if all.first_refusal.is_none() {
            all.first_refusal = worker.first_refusal;
        }
    }
    all
}

/// Awaits every task.
async fn futures_join<T: Send + 'static>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        out.push(task.await.expect("worker"));
    }
    out
}

/// One call by the official Python SDK with `token`, in `era`: its printed answer.
fn python_call(url: &str, era: &str, token: &str, tool: &str) -> Value {
    let out = run(Command::new(peer("AIE_PYTHON"))
        .arg(peers_dir().join("mcp_client.py"))
        .args([url, era, tool, "{}"])
        .arg("--header")
        .arg(format!("Authorization=Bearer {token}")));
    assert!(out.status.success(), "the Python SDK failed on {tool}");
    last_json_line(&out)
}

/// 5,000 session opens by one client against a running `aie up`: exactly its
/// `max_sessions_per_client` (32) are opened, every other one is refused with 429 naming
/// the key, the refusals are counted in `/metrics`, and the process's resident memory grows
/// by less than [`RSS_BOUND_KIB`]. Another client is still served (a session through the
/// Python SDK, and a stateless call); the flooder's stateless calls are too. The listener's
/// own bound (`max_sessions = 48`) then refuses the other client's opens past the total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_flood_is_refused_past_the_bounds_and_memory_stays_bounded() {
    aie_shared::init_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = up(dir.path(), "[limits]\nmax_sessions = 48\n");
    let (pid, url) = (stack.pid(), stack.url.clone());
    // Let the stack settle (its first sync, its first requests) before the baseline.
    python_call(&url, "2026-07-28", OWNER, "vault_status");
    let before = rss_kib(pid);

    let sampling = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = {
        let (sampling, peak) = (sampling.clone(), peak.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::SeqCst) {
                peak.fetch_max(rss_kib(pid), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let started = Instant::now();
    let flood = open_sessions(&url, FLOODER, FLOOD, "max_sessions_per_client").await;
    let took = started.elapsed();
    sampling.store(false, Ordering::SeqCst);
    sampler.join().expect("sampler");
    let (peak, after) = (peak.load(Ordering::SeqCst), rss_kib(pid));
    println!(
        "flood: {} session opens in {:.1} s, {} opened, {} refused; VmRSS before {} KiB, peak {} KiB (+{} KiB), after {} KiB",
        flood.sent,
        took.as_secs_f64(),
        flood.opened,
        flood.refused,
        before,
        peak,
        peak.saturating_sub(before),
        after
    );

    assert!(
        flood.other.is_empty(),
        "unexpected answers: {:?}",
        flood.other
    );
    assert_eq!(flood.opened, 32, "the flooder's bound");
    assert_eq!(flood.refused, flood.sent - 32);
    assert_eq!(flood.naming_key, flood.refused, "{:?}", flood.first_refusal);
    let refusal = flood.first_refusal.expect("refused");
    let message = refusal["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("client `flooder` has 32 open")
            && message.contains("[limits] max_sessions_per_client = 32"),
        "{refusal}"
    );
    assert!(
        peak.saturating_sub(before) < RSS_BOUND_KIB,
        "VmRSS grew from {before} KiB to {peak} KiB under the flood"
    );

    let metrics = reqwest::get(url.replace("/mcp", "/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains(&format!(
            r#"aie_mcp_limit_refusals_total{{limit="max_sessions_per_client"}} {}"#,
            flood.refused
        )),
        "{metrics}"
    );

    // Another client opens a session, calls, and ends it; stateless calls need no session.
    let owner = python_call(&url, "legacy", OWNER, "vault_status");
    assert_eq!(owner["is_error"], false, "{owner}");
    let owner = python_call(&url, "2026-07-28", OWNER, "vault_status");
    assert_eq!(owner["is_error"], false, "{owner}");
    let flooder = python_call(&url, "2026-07-28", FLOODER, "vault_list_tasks");
    assert_eq!(flooder["is_error"], false, "{flooder}");

    // The listener's total: 32 of the flooder's are open, so the owner gets 16 more.
    let owner = open_sessions(&url, OWNER, 100, "max_sessions").await;
    assert!(
        owner.other.is_empty(),
        "unexpected answers: {:?}",
        owner.other
    );
    assert_eq!(owner.opened, 16, "48 in total");
    assert_eq!(owner.naming_key, 84, "{:?}", owner.first_refusal);
    // The refusals are in the audit log, summed up rather than one record each.
    let records = audit_records_in(&dir.path().join("vault/Logs/local")).expect("audit");
    let refused: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["decision"] == "refused"
                && r["reason"]
                    .as_str()
                    .is_some_and(|why| why.starts_with("429: limit max_sessions_per_client"))
        })
        .collect();
    assert!(!refused.is_empty(), "no refusal audited");
    assert!(
        refused.len() < 100,
        "{} records for one flood",
        refused.len()
    );
    assert!(refused.iter().all(|r| r["client"] == "flooder"));
}

/// With `[limits] max_pending_approvals = 2` and two requests waiting, `email_draft_reply`
/// through the gateway is refused naming the key, nothing is drafted, and the refusal is
/// counted; once one request has left `Pending_Approval/`, drafting works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafts_are_refused_while_pending_approvals_are_at_their_bound() {
    aie_shared::init_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::init(dir.path().join("vault")).expect("vault");
    for n in 1..=2 {
        let id = ApprovalId::new(format!("waiting-{n}")).expect("id");
        let request = ApprovalRequest::new(
            id,
            Domain::Email,
            "email_send",
            json!({"to": ["alice@example.org"], "subject": "Re: hi", "body": "hello"}),
            AgentName::new("cloud").expect("agent"),
            chrono::Utc::now() + chrono::TimeDelta::hours(1),
        );
        vault.write_approval_request(&request).expect("pending");
    }
    let maildir = aie_e2e::maildir_holding(
        &dir.path().join("Maildir"),
        "1.hi",
        "From: Alice <alice@example.org>\r\nTo: Owner <owner@example.com>\r\nSubject: hi\r\nMessage-ID: <hi@example.org>\r\n\r\nHello.\r\n",
    );
    let stack = {
        let file = dir.path().join("aie.toml");
        std::fs::write(
            &file,
            format!(
                "[limits]\nmax_pending_approvals = 2\n\n[[gateway.clients]]\nname = \"owner\"\nrole = \"owner\"\ntoken_sha256 = \"{}\"\n",
                sha256_hex(OWNER)
            ),
        )
        .expect("config");
        let s = |p: &Path| p.display().to_string();
        Aie::start(&[
            "up",
            "--zone",
            "local",
            "--vault",
            &s(vault.root()),
            "--state",
            &s(&dir.path().join("state")),
            "--config",
            &s(&file),
            "--maildir",
            &s(&maildir),
            "--listen",
            "127.0.0.1:0",
        ])
    };
    let fetched = python_call(&stack.url, "legacy", OWNER, "email_fetch");
    let task_id = fetched["structured"]["task_ids"][0]
        .as_str()
        .expect("a task")
        .to_owned();
    let draft = |body: &str| {
        let out = run(Command::new(peer("AIE_PYTHON"))
            .arg(peers_dir().join("mcp_client.py"))
            .args([&stack.url, "legacy", "email_draft_reply"])
            .arg(json!({"task_id": task_id, "body": body}).to_string())
            .arg("--header")
            .arg(format!("Authorization=Bearer {OWNER}")));
        assert!(out.status.success(), "the Python SDK failed");
        last_json_line(&out)
    };
    let refused = draft("Thanks!");
    assert_eq!(refused["is_error"], true, "{refused}");
    let text = refused["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("holds 2 approval requests")
            && text.contains("[limits] max_pending_approvals = 2")
            && text.contains("nothing was drafted"),
        "{text}"
    );
    let pending = vault.root().join("Pending_Approval/email");
    let waiting = || aie_shared::bounds::pending_approvals(vault.root()).expect("count");
    assert_eq!(waiting(), 2);
    let metrics = reqwest::get(stack.url.replace("/mcp", "/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains(r#"aie_mcp_limit_refusals_total{limit="max_pending_approvals"} 1"#),
        "{metrics}"
    );

    std::fs::remove_file(pending.join("waiting-1.md")).expect("decided");
    let drafted = draft("Thanks!");
    assert_eq!(drafted["is_error"], false, "{drafted}");
    assert_eq!(waiting(), 2);
}
