//! Support for the end-to-end tests in `tests/tests/`: starting `aie` processes and finding
//! the real peers that `tests/run` installs.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
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
