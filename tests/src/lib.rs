//! Support for the end-to-end tests in `tests/tests/`: starting `aie` processes and finding
//! the real peers that `tests/run` installs.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

/// The `aie` binary under test: `AIE_BIN`, else the one cargo built beside this test.
pub fn aie_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("AIE_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/aie
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target profile dir");
    let bin = dir.join("aie");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build -p aie` or `bash tests/run`",
        bin.display()
    );
    bin
}

/// The repository's `tests/peers` folder.
pub fn peers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// A peer program that `tests/run` installs and names in an environment variable.
pub fn peer(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(path) => path.into(),
        None => panic!(
            "{var} is not set: run the suite with `bash tests/run`, which installs the peers"
        ),
    }
}

/// A running `aie` process, killed when dropped.
pub struct Aie {
    child: Child,
    /// The URL it printed (`http://127.0.0.1:PORT/mcp`).
    pub url: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Aie {
    /// Starts `aie ARGS` and waits (up to 60 s) for the line naming the URL it serves.
    pub fn start(args: &[&str]) -> Aie {
        Self::start_with_env(args, &[])
    }

    /// Starts `aie ARGS` with extra environment variables `env`, and waits (up to 60 s) for
    /// the line naming the URL it serves.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Aie {
        let mut child = Command::new(aie_bin())
            .args(args)
            .envs(env.iter().copied())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn aie");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line
                    .split_whitespace()
                    .find(|w| w.starts_with("http://") || w.starts_with("https://"))
                {
                    let _ = tx.send(url.to_owned());
                }
                println!("[aie] {line}");
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("aie printed no URL within 60 s");
        let addr = url
            .split("://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .expect("host:port in URL")
            .to_owned();
        Aie { child, url, addr }
    }

    /// The same URL with `localhost` for the host, as browsers and the conformance suite use.
    pub fn localhost_url(&self) -> String {
        self.url.replacen("127.0.0.1", "localhost", 1)
    }

    /// Its process id, for signals such as SIGHUP.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait for aie")
    }
}

impl Drop for Aie {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command to completion, printing its output, and returns it.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The owner approves as the contract says: `aie approvals show ID --json ARGS`, then
/// `aie approvals approve ID --sha256 <the first 12 hex digits of the payload_sha256 it
/// printed> ARGS`, where ARGS name the vault and state folder; the approve's output.
pub fn approve_as_shown(id: &str, args: &[&str]) -> Output {
    let show = run(Command::new(aie_bin())
        .args(["approvals", "show", id, "--json"])
        .args(args));
    assert!(show.status.success(), "aie approvals show {id}");
    let view: serde_json::Value = serde_json::from_slice(&show.stdout)
        .unwrap_or_else(|e| panic!("aie approvals show {id} --json: not JSON ({e})"));
    let hash = view["payload_sha256"]
        .as_str()
        .unwrap_or_else(|| panic!("no payload_sha256 in {view:#}"));
    run(Command::new(aie_bin())
        .args(["approvals", "approve", id, "--sha256", &hash[..12]])
        .args(args))
}

/// The hash `show` gives for approval `id`, as the owner passes it to `approve`: for tests
/// that approve through the library.
pub fn shown_hash(
    approvals: &aie_shared::approvals::Approvals,
    id: &aie_shared::vault::ApprovalId,
) -> aie_shared::approvals::ShownHash {
    let view = approvals.show(id).expect("show");
    let hash = view.payload_sha256.expect("a readable request");
    aie_shared::approvals::ShownHash::new(&hash[..12]).expect("hash")
}

/// Parses the last line of a command's stdout as JSON.
pub fn last_json_line(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// Scenario names the conformance suite reports as failed (`✗ name: ...`), minus those it
/// lists as not scored for the revision.
pub fn scored_failures(report: &str) -> std::collections::BTreeSet<String> {
    use std::collections::BTreeSet;
    let (scored, not_scored) = report.split_once("Not scored for").unwrap_or((report, ""));
    let name = |line: &str| {
        let rest = line.trim_start().strip_prefix("✗ ")?;
        Some(rest.split([':', ' ']).next()?.to_owned())
    };
    let excused: BTreeSet<String> = not_scored.lines().filter_map(name).collect();
    scored
        .lines()
        .filter_map(name)
        .filter(|n| !excused.contains(n))
        .collect()
}

/// What one run of the conformance suite said.
#[derive(Debug)]
pub struct SuiteRun {
    /// The suite's stdout.
    pub report: String,
    /// Scenarios reported passing (`✓ ` lines).
    pub passed: usize,
    /// Scored scenarios that failed.
    pub failures: std::collections::BTreeSet<String>,
    /// The suite's exit status.
    pub status: std::process::ExitStatus,
}

/// Runs the official conformance suite (`AIE_NODE`, `AIE_CONFORMANCE`) against `url` with
/// `--requirements REVISION`.
pub fn conformance_suite(url: &str, requirements: &str) -> SuiteRun {
    let results = std::env::temp_dir().join(format!(
        "aie-conformance-{requirements}-{}-{}",
        std::process::id(),
        url.rsplit(':').next().unwrap_or_default().replace('/', "_")
    ));
    let out = run(Command::new(peer("AIE_NODE"))
        .arg(peer("AIE_CONFORMANCE"))
        .args(["server", "--url", url, "--requirements", requirements])
        .arg("-o")
        .arg(&results));
    let _ = std::fs::remove_dir_all(results);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    SuiteRun {
        passed: report.lines().filter(|l| l.starts_with("✓ ")).count(),
        failures: scored_failures(&report),
        report,
        status: out.status,
    }
}

/// Every audit record in the log folder `logs` (one agent's `Logs/AGENT/`), oldest file
/// first; an error only if the folder cannot be read.
pub fn audit_records_in(logs: &Path) -> std::io::Result<Vec<serde_json::Value>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(logs)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .expect("log")
                .lines()
                .map(|l| serde_json::from_str(l).expect("record"))
                .collect::<Vec<serde_json::Value>>()
        })
        .collect())
}

/// Makes a Maildir at `maildir` (`new/`, `cur/`, `tmp/`) with `raw` delivered as
/// `new/NAME`; returns its path.
pub fn maildir_holding(maildir: &Path, name: &str, raw: &str) -> PathBuf {
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
    }
    std::fs::write(maildir.join("new").join(name), raw).expect("deliver");
    maildir.to_path_buf()
}

/// The two-zone scenario of the Platinum and crash tests: separate `aie up` processes, a bare
/// git remote, aiosmtpd as the SMTP server, and the official Python MCP SDK as the agent.
pub mod zones {
    use std::{
        net::{TcpListener, TcpStream},
        path::{Path, PathBuf},
        process::{Child, Command, Stdio},
        time::{Duration, Instant},
    };

    use serde_json::Value;

    use super::{Aie, peer, peers_dir, run};

    /// The token both stacks accept in these tests (through `AIE_TOKEN`).
    pub const TOKEN: &str = "zones-test-token";

    /// A free loopback port.
    pub fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    /// aiosmtpd writing what it receives to `DIR/received`; killed when dropped.
    pub struct SmtpSink {
        child: Child,
        out: PathBuf,
        /// Its port on 127.0.0.1.
        pub port: u16,
    }

    /// How an [`SmtpSink`] starts; `SinkOptions::default()` is a free port and a server that
    /// accepts every message.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct SinkOptions {
        /// The port to listen on (one a test chose earlier, say to find it down first);
        /// `None` picks a free one.
        pub port: Option<u16>,
        /// How many messages, the first ones, the server drops in the middle of DATA: it
        /// takes the whole message, then aborts the connection without answering
        /// (`smtp_sink.py --drop-in-data`). They are kept apart, in [`SmtpSink::dropped`].
        pub drop_in_data: usize,
        /// How long the server waits once a message has arrived after DATA before it
        /// answers (`smtp_sink.py --delay-data`): a slow server mid-send. Zero answers at
        /// once. A message whose client leaves during the wait is neither answered nor
        /// accepted; it is kept apart, in [`SmtpSink::abandoned`].
        pub delay_data: Duration,
    }

    impl SmtpSink {
        /// Starts `tests/peers/smtp_sink.py` on a free port and waits until it listens.
        pub fn start(dir: &Path) -> SmtpSink {
            Self::start_with(dir, SinkOptions::default())
        }

        /// Starts `tests/peers/smtp_sink.py` on `port` (one a test chose earlier, say to
        /// find it down first) and waits until it listens.
        pub fn start_on(port: u16, dir: &Path) -> SmtpSink {
            let options = SinkOptions {
                port: Some(port),
                ..SinkOptions::default()
            };
            Self::start_with(dir, options)
        }

        /// Starts `tests/peers/smtp_sink.py` as `options` say and waits until it listens.
        pub fn start_with(dir: &Path, options: SinkOptions) -> SmtpSink {
            let port = options.port.unwrap_or_else(free_port);
            let out = dir.join("received");
            let child = Command::new(peer("AIE_PYTHON"))
                .arg(peers_dir().join("smtp_sink.py"))
                .args(["--port", &port.to_string(), "--dir"])
                .arg(&out)
                .args(["--drop-in-data", &options.drop_in_data.to_string()])
                .args([
                    "--delay-data",
                    &options.delay_data.as_secs_f64().to_string(),
                ])
                .stdout(Stdio::null())
                .spawn()
                .expect("start smtp_sink.py");
            let deadline = Instant::now() + Duration::from_secs(20);
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "aiosmtpd did not listen");
                std::thread::sleep(Duration::from_millis(50));
            }
            SmtpSink { child, out, port }
        }

        /// `smtp://127.0.0.1:PORT`.
        pub fn url(&self) -> String {
            format!("smtp://127.0.0.1:{}", self.port)
        }

        /// The raw messages received (accepted with a 250), in order.
        pub fn messages(&self) -> Vec<String> {
            self.numbered("")
        }

        /// The raw messages the server took in full and then dropped the connection
        /// without answering ([`SinkOptions::drop_in_data`]), in order.
        pub fn dropped(&self) -> Vec<String> {
            self.numbered("dropped-")
        }

        /// The raw messages whose client closed the connection while the server waited
        /// to answer DATA ([`SinkOptions::delay_data`]), in order.
        pub fn abandoned(&self) -> Vec<String> {
            self.numbered("abandoned-")
        }

        /// The contents of `PREFIX1.eml`, `PREFIX2.eml`, … up to the first missing one.
        fn numbered(&self, prefix: &str) -> Vec<String> {
            (1..)
                .map(|n| self.out.join(format!("{prefix}{n}.eml")))
                .take_while(|p| p.exists())
                .map(|p| std::fs::read_to_string(p).expect("eml"))
                .collect()
        }
    }

    impl Drop for SmtpSink {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The two protocol eras the Python agent speaks: `legacy` (initialize handshake and
    /// sessions) and `2026-07-28` (stateless).
    pub const ERAS: [&str; 2] = ["legacy", "2026-07-28"];

    /// One tool call by the Python SDK through a gateway, with the bearer token, in the
    /// legacy era: the printed `{tools, is_error, text, structured, meta}`.
    pub fn agent_call(url: &str, tool: &str, args: &Value) -> Value {
        agent_call_in(url, "legacy", tool, args)
    }

    /// [`agent_call`] in `era` (one of [`ERAS`]).
    pub fn agent_call_in(url: &str, era: &str, tool: &str, args: &Value) -> Value {
        let out = run(Command::new(peer("AIE_PYTHON"))
            .arg(peers_dir().join("mcp_client.py"))
            .args([url, era, tool, &args.to_string()])
            .arg("--header")
            .arg(format!("Authorization=Bearer {TOKEN}")));
        assert!(out.status.success(), "the Python agent failed on {tool}");
        super::last_json_line(&out)
    }

    /// [`agent_call`] that must succeed; its structured result.
    pub fn agent_ok(url: &str, tool: &str, args: &Value) -> Value {
        let answer = agent_call(url, tool, args);
        assert_eq!(answer["is_error"], false, "{tool}: {}", answer["text"]);
        answer["structured"].clone()
    }

    /// A bare git repository, the remote both zones sync through.
    pub fn bare_remote(dir: &Path) -> PathBuf {
        let remote = dir.join("remote.git");
        let out = run(Command::new("git").arg("init").arg("--bare").arg(&remote));
        assert!(out.status.success(), "git init --bare");
        remote
    }

    /// `aie up --zone ZONE` on `root/ZONE/{vault,state}` with `extra` flags and `env`.
    pub fn up(zone: &str, root: &Path, remote: &Path, extra: &[&str], env: &[(&str, &str)]) -> Aie {
        let vault = root.join(zone).join("vault");
        let state = root.join(zone).join("state");
        let mut args = vec![
            "up".to_owned(),
            "--zone".into(),
            zone.into(),
            "--vault".into(),
            vault.display().to_string(),
            "--state".into(),
            state.display().to_string(),
            "--remote".into(),
            remote.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut env = env.to_vec();
        env.push(("AIE_TOKEN", TOKEN));
        Aie::start_with_env(&args, &env)
    }

    /// What the cloud half leaves for the owner.
    pub struct Drafted {
        /// The email task.
        pub task_id: String,
        /// The reply's approval request.
        pub approval_id: String,
    }

    /// The cloud agent's steps through the cloud gateway: fetch, claim, triage, draft the
    /// reply with `body`, sync. The cloud never lists `email_send`.
    pub fn cloud_drafts(cloud: &Aie, body: &str) -> Drafted {
        let fetched = agent_call(&cloud.url, "email_fetch", &serde_json::json!({}));
        assert_eq!(
            fetched["is_error"], false,
            "email_fetch: {}",
            fetched["text"]
        );
        let tools: Vec<&str> = fetched["tools"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert!(
            !tools.contains(&"email_send"),
            "cloud lists email_send: {tools:?}"
        );
        let task_id = fetched["structured"]["task_ids"][0]
            .as_str()
            .expect("a new task")
            .to_owned();
        let task = serde_json::json!({ "task_id": task_id });
        let claimed = agent_ok(&cloud.url, "vault_claim_task", &task);
        assert_eq!(claimed["claimed"], true, "{claimed}");
        agent_ok(&cloud.url, "email_triage", &task);
        let drafted = agent_ok(
            &cloud.url,
            "email_draft_reply",
            &serde_json::json!({ "task_id": task_id, "body": body }),
        );
        let approval_id = drafted["approval_id"]
            .as_str()
            .expect("approval id")
            .to_owned();
        let synced = agent_ok(&cloud.url, "vault_sync", &serde_json::json!({}));
        assert!(synced["offline"].is_null(), "cloud sync offline: {synced}");
        Drafted {
            task_id,
            approval_id,
        }
    }

    /// The mail the email tests' cloud zone fetches: Alice asks the owner to pay invoice 42.
    pub const INVOICE_MAIL: &str = "From: Alice <alice@example.org>\r\n\
To: Owner <owner@example.com>\r\n\
Subject: Invoice 42\r\n\
Message-ID: <inv42@example.org>\r\n\
\r\n\
Please pay invoice 42 by Friday.\r\n";

    /// The cloud half, run to its end: [`INVOICE_MAIL`] in a Maildir under `root`, `aie up
    /// --zone cloud` on it syncing through `remote`, [`cloud_drafts`] with `body`, and the
    /// cloud stopped. The local zone (`root/local`) then pulls the reply for its owner.
    pub fn cloud_drafts_invoice_reply(root: &Path, remote: &Path, body: &str) -> Drafted {
        let maildir = super::maildir_holding(&root.join("maildir"), "1.invoice", INVOICE_MAIL);
        let cloud = up(
            "cloud",
            root,
            remote,
            &["--maildir", &maildir.display().to_string()],
            &[],
        );
        cloud_drafts(&cloud, body)
    }

    /// Every audit record zone `zone` wrote (`root/ZONE/vault/Logs/ZONE/`), oldest file first.
    pub fn audit_records(root: &Path, zone: &str) -> Vec<Value> {
        let logs = root.join(zone).join("vault/Logs").join(zone);
        super::audit_records_in(&logs).unwrap_or_else(|e| panic!("{}: {e}", logs.display()))
    }

    /// `aie ARGS` run to completion.
    pub fn aie(args: &[&str]) -> std::process::Output {
        run(Command::new(super::aie_bin()).args(args))
    }

    /// [`approve_as_shown`](super::approve_as_shown) on one zone's folders: `show ID`, then
    /// `approve ID --sha256` with the hash it printed.
    pub fn approve_in(zone: &str, root: &Path, id: &str) -> std::process::Output {
        let vault = root.join(zone).join("vault").display().to_string();
        let state = root.join(zone).join("state").display().to_string();
        super::approve_as_shown(id, &["--vault", &vault, "--state", &state])
    }

    /// `aie ARGS --vault root/ZONE/vault --state root/ZONE/state`: a command on one zone's
    /// folders, as its owner runs it.
    pub fn aie_in(zone: &str, root: &Path, args: &[&str]) -> std::process::Output {
        let vault = root.join(zone).join("vault").display().to_string();
        let state = root.join(zone).join("state").display().to_string();
        let mut all = args.to_vec();
        all.extend(["--vault", &vault, "--state", &state]);
        aie(&all)
    }
}

/// A private Debian dovecot serving IMAP over TLS on 127.0.0.1, the real IMAP server the
/// Platinum gate's cloud zone reads. (servers/email-draft/tests/support has the same helper:
/// that crate cannot reach this one without a dev-dependency on it.)
pub mod dovecot {
    use std::{
        net::TcpStream,
        os::unix::fs::{PermissionsExt, chown},
        path::{Path, PathBuf},
        process::{Child, Command, Stdio},
        time::{Duration, Instant},
    };

    use super::zones::free_port;

    /// The test user's login.
    pub const USER: &str = "test";
    /// The test user's password.
    pub const PASSWORD: &str = "secret";
    /// The uid the test user's mail belongs to: dovecot serves no mail as root (uid 0).
    const MAIL_UID: u32 = 65534;

    /// A running dovecot with user [`USER`]; stopped (with its children) when dropped.
    pub struct Dovecot {
        child: Child,
        /// Holds its config, certificate, mail and log; removed when dropped.
        pub root: tempfile::TempDir,
        /// Its IMAPS port on 127.0.0.1.
        pub port: u16,
        /// Its certificate (PEM), for `ca_file`: self-signed for `localhost` and 127.0.0.1.
        pub cert: PathBuf,
        /// The test user's Maildir.
        pub maildir: PathBuf,
        log: PathBuf,
    }

    /// The dovecot binary, or a clear failure naming the install step.
    fn dovecot_bin() -> PathBuf {
        ["/usr/sbin/dovecot", "/usr/local/sbin/dovecot"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| {
                panic!(
                    "dovecot is not installed: `apt-get install dovecot-imapd` (tests/run does it)"
                )
            })
    }

    /// Waits (up to 20 s) until something accepts on `port`, else fails with the log.
    fn wait_for_port(port: u16, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                panic!("dovecot did not listen on port {port} within 20 s; its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A fresh self-signed certificate for `localhost` and 127.0.0.1: (cert, key) PEM files
    /// written in `dir`.
    pub fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
        let certified = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .expect("certificate");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).expect("cert");
        std::fs::write(&key, certified.signing_key.serialize_pem()).expect("key");
        (cert, key)
    }

    /// Makes `path` (a file or folder) the mail user's, so dovecot's mail process can use it.
    fn give_to_mail_user(path: &Path) {
        chown(path, Some(MAIL_UID), Some(MAIL_UID))
            .unwrap_or_else(|e| panic!("chown {}: {e} (the tests run as root)", path.display()));
    }

    /// The config: IMAPS only, on 127.0.0.1:`port`, every path inside `root`.
    fn config(root: &Path, port: u16, cert: &Path, key: &Path, passwd: &Path) -> String {
        let (base, log, mail) = (
            root.join("run"),
            root.join("dovecot.log"),
            root.join("mail"),
        );
        format!(
            "protocols = imap
listen = 127.0.0.1
base_dir = {base}
state_dir = {base}/state
log_path = {log}
info_log_path = {log}
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
mail_location = maildir:{mail}/%u
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
auth_mechanisms = plain
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {passwd}
}}
userdb {{
  driver = static
  args = uid={MAIL_UID} gid={MAIL_UID} home={mail}/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
",
            base = base.display(),
            log = log.display(),
            cert = cert.display(),
            key = key.display(),
            mail = mail.display(),
            passwd = passwd.display(),
        )
    }

    impl Dovecot {
        /// Starts dovecot (we run as root) with a temporary config: the master as root,
        /// logins as `dovenull`, internal processes as `dovecot` (the users the Debian package
        /// makes), the test user's mail as uid 65534.
        pub fn start() -> Dovecot {
            let bin = dovecot_bin();
            let root = tempfile::Builder::new()
                .prefix("aie-dovecot-")
                .tempdir()
                .expect("tempdir");
            let r = root.path();
            // Dovecot's unprivileged processes must reach the files below.
            std::fs::set_permissions(r, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            let (cert, key) = certificate(r);
            let mail = r.join("mail");
            let maildir = mail.join(USER);
            for sub in ["new", "cur", "tmp"] {
                std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
            }
            std::fs::set_permissions(&mail, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            give_to_mail_user(&mail);
            give_to_mail_user(&maildir);
            for sub in ["new", "cur", "tmp"] {
                give_to_mail_user(&maildir.join(sub));
            }
            let passwd = r.join("passwd");
            std::fs::write(
                &passwd,
                format!(
                    "{USER}:{{PLAIN}}{PASSWORD}:{MAIL_UID}:{MAIL_UID}::{}\n",
                    maildir.display()
                ),
            )
            .expect("passwd");
            // The auth process reads it as `dovecot`, not root.
            std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o644))
                .expect("chmod");
            let port = free_port();
            let conf = r.join("dovecot.conf");
            std::fs::write(&conf, config(r, port, &cert, &key, &passwd)).expect("conf");
            let log = r.join("dovecot.log");
            let child = Command::new(bin)
                .arg("-F")
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start dovecot");
            // Built before the wait, so a dovecot that never listens is still stopped.
            let dovecot = Dovecot {
                child,
                root,
                port,
                cert,
                maildir,
                log,
            };
            wait_for_port(port, &dovecot.log);
            dovecot
        }

        /// Delivers `raw` into the user's `new/` as `name`, as an MDA does (written in `tmp/`,
        /// renamed), owned by the mail user.
        pub fn deliver(&self, name: &str, raw: &[u8]) {
            let tmp = self.maildir.join("tmp").join(name);
            std::fs::write(&tmp, raw).expect("write");
            give_to_mail_user(&tmp);
            std::fs::rename(&tmp, self.maildir.join("new").join(name)).expect("deliver");
        }

        /// The server's log, for failure messages.
        pub fn log(&self) -> String {
            std::fs::read_to_string(&self.log).unwrap_or_default()
        }
    }

    impl Drop for Dovecot {
        fn drop(&mut self) {
            // SIGTERM, so the master stops its login and mail processes too (SIGKILL would
            // orphan them).
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A plain MCP client (rmcp's, legacy handshake) for tests that talk to one aie server.
pub mod mcp {
    use aie_shared::rmcp::{
        RoleClient, ServiceExt,
        model::{CallToolRequestParams, CallToolResult, JsonObject},
        service::RunningService,
        transport::StreamableHttpClientTransport,
    };
    use serde_json::Value;

    use super::Aie;

    /// A connected client.
    pub type Client = RunningService<RoleClient, ()>;

    /// Connects to `server`'s `/mcp`.
    pub async fn connect(server: &Aie) -> Client {
        aie_shared::init_crypto();
        ().serve(StreamableHttpClientTransport::from_uri(server.url.clone()))
            .await
            .expect("connect")
    }

    /// Calls `tool` with `args` (a JSON object).
    pub async fn call(client: &Client, tool: &'static str, args: Value) -> CallToolResult {
        let args: JsonObject = serde_json::from_value(args).expect("object");
        client
            .call_tool(CallToolRequestParams::new(tool).with_arguments(args))
            .await
            .expect("tools/call")
    }

    /// The text content of a result.
    pub fn text(result: &CallToolResult) -> String {
        result
            .content
            .iter()
            .filter_map(|c| c.as_text())
            .map(|t| t.text.clone())
            .collect()
    }
}
