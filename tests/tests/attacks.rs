//! Attacks on the gateway's policy guard, one test each, against real processes on loopback:
//! `aie serve gateway --zone Z` fronting `aie serve email-draft` and a recording fake of the
//! other execute tools. Each refusal is also found in the audit log (`Logs/local/*.jsonl`),
//! and nothing is executed: the email outbox stays empty and the fake records no call.
//! Requests the HTTP layers refuse (no or a wrong token, a foreign Origin, an oversized body)
//! are in the log too, and a flood of them is counted rather than recorded one by one.
//! The happy path sends exactly once; a config reload under load loses no call.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Arc, Mutex},
    time::Duration,
};

use aie::gateway::sha256_hex;
use aie_e2e::{
    Aie, aie_bin, approve_as_shown, audit_records_in, maildir_holding, run, shown_hash,
    zones::INVOICE_MAIL,
};
use aie_shared::{
    ToolError, ToolOutput, ToolServer, ToolSet, ToolSpec,
    approvals::Approvals,
    rmcp::{
        ClientLifecycleMode, ClientServiceExt,
        model::{CallToolRequestParams, CallToolResult, ClientConfig, JsonObject},
        service::{RoleClient, RunningService},
        transport::{
            StreamableHttpClientTransport,
            streamable_http_client::StreamableHttpClientTransportConfig,
        },
    },
    vault::{AgentName, ApprovalId, ApprovalRequest, Domain, Vault},
};
use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};

const OWNER: &str = "owner-token";
const READER: &str = "reader-token";
const EXECUTE_TOOLS: [&str; 4] = [
    "email_send",
    "social_publish",
    "whatsapp_send",
    "payments_execute",
];

type Client = RunningService<RoleClient, ClientConfig>;

/// The recording fake: every execute tool the suite has besides `email_send`.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct AnyArgs {
    /// The approval.
    #[allow(dead_code, reason = "only deserialized")]
    approval_id: Option<String>,
}

#[derive(serde::Serialize, schemars::JsonSchema)]
struct Done {
    status: String,
}
impl ToolOutput for Done {}

async fn fake_executor(recorder: Recorder) -> String {
    let mut set = ToolSet::new();
    for &name in &EXECUTE_TOOLS[1..] {
        let rec = recorder.clone();
        set.add(
            ToolSpec::execute(name, "fake", "records that it ran"),
            move |_: AnyArgs| {
                let rec = rec.clone();
                async move {
                    rec.0.lock().expect("lock").push(name.to_owned());
                    Ok::<_, ToolError>(Done {
                        status: "executed".into(),
                    })
                }
            },
        );
    }
    let server = ToolServer::new("fake-executor", set);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let opts = aie_shared::HttpOptions::new(addr);
    let metrics = aie_shared::Metrics::new();
    let mcp = aie_shared::streamable_http(
        server,
        &opts,
        metrics.clone(),
        tokio_util::sync::CancellationToken::new(),
    );
    let app = aie_shared::app(mcp, &opts, metrics, aie_shared::http::always_ready());
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/mcp")
}

/// One stack: a vault, two state folders, email-draft, the fake, and the gateway.
struct Stack {
    _dir: tempfile::TempDir,
    vault: Vault,
    state: PathBuf,
    email_state: PathBuf,
    config: PathBuf,
    recorder: Recorder,
    _email: Aie,
    /// The gateway process (its pid is needed for SIGHUP).
    gateway: Aie,
}

fn config_text(extra: &str) -> String {
    format!(
        "[[gateway.clients]]\nname = \"laptop\"\nrole = \"owner\"\ntoken_sha256 = \"{}\"\n\n\
         [[gateway.clients]]\nname = \"viewer\"\nrole = \"reader\"\ntoken_sha256 = \"{}\"\n\n{extra}",
        sha256_hex(OWNER),
        sha256_hex(READER)
    )
}

fn s(path: &Path) -> String {
    path.to_str().expect("utf-8 path").to_owned()
}

impl Stack {
    async fn start(zone: &str, extra_config: &str) -> Stack {
        aie_shared::init_crypto();
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::init(dir.path().join("vault")).expect("vault");
        let state = dir.path().join("state");
        let email_state = dir.path().join("email-state");
        let maildir = maildir_holding(
            &dir.path().join("Maildir"),
            "1700000000.1.host",
            INVOICE_MAIL,
        );
        let config = dir.path().join("aie.toml");
        std::fs::write(&config, config_text(extra_config)).expect("config");
        let email = Aie::start(&[
            "serve",
            "email-draft",
            "--listen",
            "127.0.0.1:0",
            "--vault",
            &s(vault.root()),
            "--state",
            &s(&email_state),
            "--maildir",
            &s(&maildir),
            "--agent",
            "local",
        ]);
        let recorder = Recorder::default();
        let fake = fake_executor(recorder.clone()).await;
        let gateway = Aie::start_with_env(
            &[
                "serve",
                "gateway",
                "--listen",
                "127.0.0.1:0",
                "--zone",
                zone,
                "--vault",
                &s(vault.root()),
                "--state",
                &s(&state),
                "--agent",
                "local",
                "--config",
                &s(&config),
                "--upstream",
                &format!("email={},prefix=false", email.url),
                "--upstream",
                &format!("fake={fake},prefix=false"),
            ],
            &[("USER", "owner")],
        );
        Stack {
            _dir: dir,
            vault,
            state,
            email_state,
            config,
            recorder,
            _email: email,
            gateway,
        }
    }

    async fn client(&self, token: &str) -> Client {
        let config = StreamableHttpClientTransportConfig::with_uri(self.gateway.url.clone())
            .auth_header(token);
        let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
        ClientConfig::default()
            .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
            .await
            .expect("client connects through the gateway")
    }

    /// The `.eml` files the email server wrote: what was really sent.
    fn outbox(&self) -> usize {
        std::fs::read_dir(self.email_state.join("outbox"))
            .map(|d| d.filter_map(Result::ok).count())
            .unwrap_or(0)
    }

    /// Every audit record the gateway wrote.
    fn audit(&self) -> Vec<Value> {
        audit_records_in(&self.vault.root().join("Logs/local")).unwrap_or_default()
    }

    /// The refused audit record of `tool` whose reason contains `why`.
    fn refused_in_audit(&self, tool: &str, why: &str) -> Value {
        let records = self.audit();
        records
            .iter()
            .find(|r| {
                r["tool"] == tool
                    && r["decision"] == "refused"
                    && r["status"] == "refused"
                    && r["reason"].as_str().is_some_and(|t| t.contains(why))
            })
            .cloned()
            .unwrap_or_else(|| panic!("no refused record of {tool} saying {why:?} in {records:#?}"))
    }

    /// No file under the vault's `Logs/` holds any of `tokens`.
    fn assert_no_token_in_logs(&self, tokens: &[&str]) {
        let mut dirs = vec![self.vault.root().join("Logs")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir)
                .expect("Logs/")
                .map(|e| e.expect("entry"))
            {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let text =
                    String::from_utf8_lossy(&std::fs::read(&path).expect("log")).into_owned();
                for token in tokens {
                    assert!(!text.contains(token), "{} holds a token", path.display());
                }
            }
        }
    }

    /// Runs `aie ARGS --vault VAULT --state STATE` on this stack's folders, as the owner does.
    fn aie(&self, args: &[&str]) -> Output {
        let (vault, state) = (s(self.vault.root()), s(&self.state));
        run(Command::new(aie_bin())
            .args(args)
            .args(["--vault", &vault, "--state", &state]))
    }

    /// `aie audit verify` passes on the vault with this stack's state folder.
    fn assert_audit_verifies(&self) {
        let out = self.aie(&["audit", "verify"]);
        assert!(out.status.success(), "aie audit verify failed");
    }

    fn assert_nothing_executed(&self) {
        assert_eq!(self.outbox(), 0, "an email was sent");
        assert!(
            self.recorder.0.lock().expect("lock").is_empty(),
            "a fake execute tool ran"
        );
    }

    fn approvals(&self) -> Approvals {
        Approvals::open(self.vault.clone(), &self.state).expect("ledger")
    }

    /// An email approval request for `to`, filed in Pending_Approval/email/, expiring in
    /// `ttl`.
    fn draft(&self, id: &str, to: &str, ttl: TimeDelta) -> ApprovalId {
        let id = ApprovalId::new(id).expect("id");
        let payload = reply(&id, to);
        let request = ApprovalRequest::new(
            id.clone(),
            Domain::Email,
            "email_send",
            payload,
            AgentName::new("cloud").expect("agent"),
            Utc::now() + ttl,
        );
        self.vault.write_approval_request(&request).expect("draft");
        id
    }

    /// Drafts and approves (as the human, through the ledger) one reply.
    fn approved(&self, id: &str, to: &str) -> ApprovalId {
        let id = self.draft(id, to, TimeDelta::hours(1));
        let approvals = self.approvals();
        approvals
            .approve(&id, "owner", &shown_hash(&approvals, &id))
            .expect("approve");
        id
    }
}

/// A reply the email server would really send.
fn reply(id: &ApprovalId, to: &str) -> Value {
    json!({
        "from": "owner@example.com",
        "to": [to],
        "subject": "Re: Invoice 42",
        "body": "Paid.",
        "message_id": format!("<aie.{id}@example.com>"),
    })
}

async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    let args: JsonObject = serde_json::from_value(args).expect("object");
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("tools/call {tool}: {e}"))
}

fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

/// Calls `tool` and expects a refusal whose text contains `why`, also in the audit log.
async fn refused(stack: &Stack, client: &Client, tool: &str, args: Value, why: &str) -> Value {
    let result = call(client, tool, args).await;
    assert_eq!(result.is_error, Some(true), "{tool} was not refused");
    let said = text(&result);
    assert!(
        said.starts_with("refused: ") && said.contains(why),
        "{tool}: {said}"
    );
    stack.refused_in_audit(tool, why)
}

/// Calls `email_send` with `approval_id` and expects a refusal whose text contains `why`,
/// also in the audit log.
async fn send_refused(stack: &Stack, client: &Client, approval_id: &str, why: &str) -> Value {
    let args = json!({"approval_id": approval_id});
    refused(stack, client, "email_send", args, why).await
}

/// Calls `tool` and expects an answer that is not an error.
async fn call_ok(client: &Client, tool: &str, args: Value) -> CallToolResult {
    let result = call(client, tool, args).await;
    assert_ne!(result.is_error, Some(true), "{}", text(&result));
    result
}

/// The names of the tools `client` is shown.
async fn tool_names(client: &Client) -> Vec<String> {
    client
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect()
}

/// A POST to `url` with the headers every MCP client sends (content type, accept).
fn mcp_post(http: &reqwest::Client, url: &str) -> reqwest::RequestBuilder {
    http.post(url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
}

/// Cloud: no execute tool is listed, and each call by name is refused, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_never_executes() {
    let stack = Stack::start("cloud", "").await;
    let client = stack.client(OWNER).await;
    let listed = tool_names(&client).await;
    assert!(
        listed.contains(&"email_draft_reply".to_owned()),
        "{listed:?}"
    );
    for tool in EXECUTE_TOOLS {
        assert!(
            !listed.contains(&tool.to_owned()),
            "{tool} listed in the cloud"
        );
        let record = refused(
            &stack,
            &client,
            tool,
            json!({"approval_id": "a1"}),
            "belongs to the local executive",
        )
        .await;
        assert_eq!(record["zone"], "cloud");
        assert_eq!(record["class"], "execute");
        assert_eq!(record["client"], "laptop");
    }
    // A tool no backend has is `execute` to the policy: refused, and recorded all the same.
    let record = refused(
        &stack,
        &client,
        "no_such_tool",
        json!({}),
        "belongs to the local executive",
    )
    .await;
    assert_eq!(record["class"], "execute");
    stack.assert_nothing_executed();
}

/// Local: an execute call without an approval id is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_execute_without_approval() {
    let stack = Stack::start("local", "").await;
    let client = stack.client(OWNER).await;
    for tool in EXECUTE_TOOLS {
        refused(&stack, &client, tool, json!({}), "approval_id").await;
    }
    // An id nobody approved: still waiting for the human.
    let id = stack.draft("pending-1", "bob@example.com", TimeDelta::hours(1));
    send_refused(
        &stack,
        &client,
        id.as_str(),
        "aie approvals approve pending-1",
    )
    .await;
    stack.assert_nothing_executed();
}

/// A rejected approval is refused and set aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_execute_rejected() {
    let stack = Stack::start("local", "").await;
    let client = stack.client(OWNER).await;
    let id = stack.draft("rej-1", "bob@example.com", TimeDelta::hours(1));
    stack
        .approvals()
        .reject(&id, "owner", "not this one")
        .expect("reject");
    let record = send_refused(&stack, &client, "rej-1", "rejected").await;
    assert_eq!(record["approval_id"], "rej-1");
    stack.assert_nothing_executed();
}

/// An approval past its expiry is refused and set aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_execute_expired() {
    let stack = Stack::start("local", "").await;
    let client = stack.client(OWNER).await;
    let id = stack.draft("exp-1", "bob@example.com", TimeDelta::seconds(2));
    let approvals = stack.approvals();
    approvals
        .approve(&id, "owner", &shown_hash(&approvals, &id))
        .expect("approve");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    send_refused(&stack, &client, "exp-1", "Quarantine/exp-1.md").await;
    assert!(stack.vault.root().join("Quarantine/exp-1.md").is_file());
    stack.assert_nothing_executed();
}

/// An approval file edited after the human approved it is refused and set aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_execute_edited_after_approval() {
    let stack = Stack::start("local", "").await;
    let client = stack.client(OWNER).await;
    stack.approved("edit-1", "bob@example.com");
    let path = stack.vault.root().join("Approved/edit-1.md");
    let edited = std::fs::read_to_string(&path)
        .expect("file")
        .replace("bob@example.com", "mallory@example.net");
    std::fs::write(&path, edited).expect("edit");
    send_refused(&stack, &client, "edit-1", "Quarantine/edit-1.md").await;
    stack.assert_nothing_executed();
}

/// An approval restated with other arguments is refused; the approval stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_execute_other_arguments() {
    let stack = Stack::start("local", "").await;
    let client = stack.client(OWNER).await;
    let id = stack.approved("args-1", "bob@example.com");
    let mut other = reply(&id, "mallory@example.net");
    other["approval_id"] = json!("args-1");
    refused(&stack, &client, "email_send", other, "arguments").await;
    assert!(stack.vault.root().join("Approved/args-1.md").is_file());
    stack.assert_nothing_executed();
}

/// A client outside its role: a reader may not draft, and is told which role limits it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_outside_its_role() {
    let stack = Stack::start("local", "").await;
    let client = stack.client(READER).await;
    let listed = tool_names(&client).await;
    assert!(
        !listed.contains(&"email_draft_reply".to_owned()),
        "{listed:?}"
    );
    let record = refused(
        &stack,
        &client,
        "email_draft_reply",
        json!({"task_id": "x", "body": "hi"}),
        "role reader may not use draft tools",
    )
    .await;
    assert_eq!(record["client"], "viewer");
    send_refused(&stack, &client, "x", "role reader").await;
    stack.assert_nothing_executed();
}

/// No token, a wrong token, a foreign Origin and a 10 MB body never reach a tool: 401, 401,
/// 403, 413, each one refused record in the audit log naming the status and why (the known
/// client by name, never a token), nothing executed, and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_level_attacks() {
    const WRONG: &str = "wrong-token-5f3a9c";
    let stack = Stack::start("local", "").await;
    let id = stack.approved("http-1", "bob@example.com");
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "email_send", "arguments": {"approval_id": id.as_str()},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}})
    .to_string();
    let http = reqwest::Client::new();
    let post = |token: Option<&str>| {
        let mut request = mcp_post(&http, &stack.gateway.url)
            .header("MCP-Protocol-Version", "2026-07-28")
            .header("Mcp-Method", "tools/call")
            .header("Mcp-Name", "email_send");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request
    };
    // The refused record of the answer `response`, found by its request id.
    let record_of = |response: &reqwest::Response, client: &str, reason: &str| {
        let request_id = response.headers()["x-request-id"].to_str().expect("ascii");
        let records = stack.audit();
        let record = records
            .iter()
            .find(|r| r["correlation_id"] == request_id)
            .unwrap_or_else(|| panic!("no audit record of request {request_id}: {records:#?}"));
        assert_eq!(record["reason"], reason, "{record:#}");
        assert_eq!(record["client"], client, "{record:#}");
        assert_eq!(record["tool"], "email_send", "{record:#}");
        assert_eq!(record["class"], "execute", "{record:#}");
        assert_eq!(record["decision"], "refused", "{record:#}");
        assert_eq!(record["status"], "refused", "{record:#}");
        assert_eq!(record["approval_id"], Value::Null, "{record:#}");
        assert_eq!(
            record["args_sha256"],
            aie_shared::audit::args_sha256(&Value::Null),
            "{record:#}"
        );
    };

    let none = post(None).body(body.clone()).send().await.expect("post");
    assert_eq!(none.status(), 401);
    assert!(none.headers().contains_key("www-authenticate"));
    record_of(&none, "-", "401: no bearer token");

    let wrong = post(Some(WRONG))
        .body(body.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(wrong.status(), 401);
    let challenge = wrong.headers()["www-authenticate"].to_str().expect("ascii");
    assert!(challenge.contains("invalid_token"), "{challenge}");
    record_of(&wrong, "-", "401: invalid token");

    let foreign = post(Some(OWNER))
        .header("Origin", "https://evil.example")
        .body(body.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(foreign.status(), 403);
    record_of(
        &foreign,
        "laptop",
        "403: Origin https://evil.example not allowed",
    );

    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(10 * 1024 * 1024));
    let big = post(Some(OWNER)).body(huge).send().await;
    // The gateway may answer 413 before reading the whole body, or close the connection;
    // when it answered, the refusal is on record.
    if let Ok(big) = big {
        assert_eq!(big.status(), 413);
        record_of(&big, "laptop", "413: body over 4194304 bytes");
    }

    let records = stack.audit();
    assert!(
        records
            .iter()
            .filter(|r| r["tool"] == "email_send")
            .all(|r| r["decision"] == "refused"),
        "a refused HTTP request reached the tool layer: {records:#?}"
    );
    stack.assert_no_token_in_logs(&[WRONG, OWNER]);
    assert!(stack.vault.root().join("Approved/http-1.md").is_file());
    stack.assert_nothing_executed();
    stack.assert_audit_verifies();
}

/// Sends `n` requests without a token to `stack`'s gateway, 25 at a time, each refused with
/// 401; returns their refusal records, once these account for all `n` (each record stands
/// for itself and the refusals it says were not recorded), and how long that took.
async fn no_token_flood(stack: &Stack, n: u64) -> (Vec<Value>, Duration) {
    let http = reqwest::Client::new();
    let started = std::time::Instant::now();
    for sent in (0..n).step_by(25) {
        let mut batch = tokio::task::JoinSet::new();
        for _ in sent..n.min(sent + 25) {
            let request = mcp_post(&http, &stack.gateway.url)
                .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
            batch.spawn(async move { request.send().await.expect("post").status() });
        }
        while let Some(status) = batch.join_next().await {
            assert_eq!(status.expect("request task"), 401);
        }
    }
    println!("{n} refused requests in {:?}", started.elapsed());

    // Once the last held one is written (as soon as the rate allows), they add up to `n`.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let refusals: Vec<Value> = stack
            .audit()
            .into_iter()
            .filter(|r| {
                r["client"] == "-"
                    && r["reason"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("401: no bearer token"))
            })
            .collect();
        let accounted: u64 = refusals
            .iter()
            .map(|r| 1 + unrecorded(r["reason"].as_str().unwrap_or_default()))
            .sum();
        if accounted == n {
            return (refusals, started.elapsed());
        }
        assert!(
            accounted < n && std::time::Instant::now() < deadline,
            "{accounted} refusals accounted for, of {n}: {refusals:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many refusals a refusal record's reason says were not recorded.
fn unrecorded(reason: &str) -> u64 {
    reason
        .split_once("(and ")
        .and_then(|(_, rest)| rest.split_once(" similar refusals not recorded since "))
        .map_or(0, |(n, _)| n.parse().expect("a count"))
}

/// A flood of 500 requests without a token: every one refused, far fewer audit records, and
/// the records account for every refusal ("and N similar refusals not recorded"); the
/// metrics count all 500, the gateway stays up and a client with a token still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_refusal_flood_is_counted_not_recorded() {
    const FLOOD: u64 = 500;
    let stack = Stack::start("local", "").await;
    let (refusals, _) = no_token_flood(&stack, FLOOD).await;
    assert!(
        refusals.len() < 100,
        "{} records for {FLOOD} refusals",
        refusals.len()
    );
    assert!(
        refusals.iter().any(|r| r["reason"]
            .as_str()
            .is_some_and(|t| t.contains("similar refusals not recorded since"))),
        "{refusals:#?}"
    );

    let http = reqwest::Client::new();
    let metrics = http
        .get(stack.gateway.url.replace("/mcp", "/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains(&format!(
            "aie_mcp_http_refusals_total{{status=\"401\"}} {FLOOD}"
        )),
        "{metrics}"
    );

    let client = stack.client(OWNER).await;
    call_ok(&client, "vault_list_tasks", json!({})).await;
    stack.assert_audit_verifies();
}

/// `[limits] refusal_audit_burst` and `refusal_audit_per_second` set the rate of refusal
/// records: with 3 at once, then 1 a second, a flood of 60 is written as the first 3 in full
/// and then about one record a second, each carrying its count (20 would be written at once
/// by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_audit_rate_is_configurable() {
    const FLOOD: u64 = 60;
    let stack = Stack::start(
        "local",
        "[limits]\nrefusal_audit_burst = 3\nrefusal_audit_per_second = 1\n",
    )
    .await;
    let (refusals, took) = no_token_flood(&stack, FLOOD).await;
    let reasons: Vec<&str> = refusals
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or_default())
        .collect();
    assert!(
        reasons[..3].iter().all(|r| *r == "401: no bearer token"),
        "{reasons:#?}"
    );
    // The burst, one record a second while the flood and its last release took, and that
    // last release itself.
    let most = 3 + took.as_secs_f64().ceil() as usize + 1;
    assert!(
        (4..=most).contains(&reasons.len()),
        "{} records for {FLOOD} refusals in {took:?}: {reasons:#?}",
        reasons.len()
    );
    assert!(unrecorded(reasons[3]) > 0, "{reasons:#?}");
    stack.assert_audit_verifies();
}

/// The owner's way: mail fetched, task claimed, reply drafted through the gateway, approved
/// with `aie approvals approve`; `email_send` sends exactly once, the approval and the task
/// move to Done, a second call is refused (used), and `aie audit verify` passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_sends_once_then_used_is_refused() {
    let stack = Stack::start("local", "").await;
    let client = stack.client(OWNER).await;
    let fetched = call(&client, "email_fetch", json!({})).await;
    let task = fetched.structured_content.expect("fetched")["task_ids"][0]
        .as_str()
        .expect("task id")
        .to_owned();
    call_ok(&client, "vault_claim_task", json!({"task_id": task})).await;
    let drafted = call_ok(
        &client,
        "email_draft_reply",
        json!({"task_id": task, "body": "Paid."}),
    )
    .await;
    let id = drafted.structured_content.expect("drafted")["approval_id"]
        .as_str()
        .expect("approval id")
        .to_owned();
    // Not approved yet: refused, nothing sent.
    send_refused(&stack, &client, &id, "Pending_Approval/email").await;
    assert_eq!(stack.outbox(), 0);

    let (vault, state) = (s(stack.vault.root()), s(&stack.state));
    approve_as_shown(&id, &["--vault", &vault, "--state", &state]);
    call_ok(&client, "email_send", json!({"approval_id": id})).await;
    assert_eq!(stack.outbox(), 1);
    assert!(
        stack
            .vault
            .root()
            .join(format!("Done/approvals/{id}.md"))
            .is_file()
    );
    assert!(stack.vault.root().join(format!("Done/{task}.md")).is_file());
    let allowed: Vec<Value> = stack
        .audit()
        .into_iter()
        .filter(|r| r["tool"] == "email_send" && r["decision"] == "allowed")
        .collect();
    assert_eq!(
        allowed.last().expect("allowed")["status"],
        "ok",
        "{allowed:#?}"
    );
    assert_eq!(allowed.last().expect("allowed")["approval_id"], id.as_str());

    // Used: a second call is refused and sends nothing more.
    send_refused(&stack, &client, &id, "already used").await;
    assert_eq!(stack.outbox(), 1);

    stack.assert_audit_verifies();
}

/// Effect budgets bound even approved actions, and rate limits say when to retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_and_rate_limits() {
    let stack = Stack::start(
        "local",
        "[limits]\nnew_recipients_per_day = 0\nper_tool.\"vault_list_tasks\" = { requests_per_minute = 1, burst = 1 }\n",
    )
    .await;
    let client = stack.client(OWNER).await;
    stack.approved("budget-1", "bob@example.com");
    send_refused(&stack, &client, "budget-1", "budget new_recipients_per_day").await;
    // Refused before the ledger was touched: the approval is still unused.
    assert!(stack.vault.root().join("Approved/budget-1.md").is_file());
    call_ok(&client, "vault_list_tasks", json!({})).await;
    refused(
        &stack,
        &client,
        "vault_list_tasks",
        json!({}),
        "retry after",
    )
    .await;
    stack.assert_nothing_executed();
}

/// A config reload under load loses no call: many concurrent calls while the file is
/// rewritten and SIGHUP is sent all get an answer, and the new policy shows afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reload_under_load_loses_no_call() {
    // 200 calls at once from one client: room for all of them, before and after the reload
    // (the bound itself is tested in bounds.rs).
    const ROOMY: &str = "[limits]\nmax_in_flight_per_client = 256\n";
    let stack = Stack::start("cloud", ROOMY).await;
    let client = Arc::new(stack.client(OWNER).await);
    let mut calls = Vec::new();
    for i in 0..200 {
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            if i % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            client
                .call_tool(CallToolRequestParams::new("vault_list_tasks"))
                .await
        }));
        if i == 100 {
            std::fs::write(
                &stack.config,
                config_text(&format!(
                    "{ROOMY}[policy.tools]\n\"vault_list_tasks\" = \"execute\"\n"
                )),
            )
            .expect("rewrite");
            let pid = stack.gateway.pid().to_string();
            assert!(
                Command::new("kill")
                    .args(["-HUP", &pid])
                    .status()
                    .expect("kill")
                    .success()
            );
        }
    }
    let mut answered = 0;
    for call in calls {
        let result = call.await.expect("task");
        let result = result.expect("every call is answered");
        let said = text(&result);
        assert!(
            result.is_error != Some(true) || said.contains("belongs to the local executive"),
            "{said}"
        );
        answered += 1;
    }
    assert_eq!(answered, 200);
    // The new policy: vault_list_tasks is now execute, so the cloud hides and refuses it.
    let mut hidden = false;
    for _ in 0..50 {
        let listed = client.list_all_tools().await.expect("tools/list");
        if listed.iter().all(|t| t.name != "vault_list_tasks") {
            hidden = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(hidden, "the reloaded policy never applied");
    refused(
        &stack,
        &client,
        "vault_list_tasks",
        json!({}),
        "belongs to the local executive",
    )
    .await;
    // Every call left its record.
    let records = stack
        .audit()
        .iter()
        .filter(|r| r["tool"] == "vault_list_tasks")
        .count();
    assert_eq!(records, 201);
}
