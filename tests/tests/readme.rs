//! The README's commands work exactly as written (only the port differs).

use std::{path::PathBuf, process::Command};

use aie_e2e::{Aie, aie_bin, run};

fn readme() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The first ```sh block after `<!-- readme-test: NAME -->`.
fn example(readme: &str, name: &str) -> String {
    let marker = format!("<!-- readme-test: {name} -->");
    let after = readme
        .split_once(&marker)
        .unwrap_or_else(|| panic!("no {marker} in README"))
        .1;
    let block = after
        .split_once("```sh\n")
        .expect("a sh block follows the marker")
        .1;
    block
        .split_once("```")
        .expect("the block ends")
        .0
        .to_owned()
}

/// The first sh block of the Quick start.
fn quick_start(readme: &str) -> Vec<String> {
    let section = readme
        .split_once("## Quick start")
        .expect("a Quick start section")
        .1;
    let block = section
        .split_once("```sh\n")
        .expect("a sh block")
        .1
        .split_once("```")
        .expect("block end")
        .0;
    block
        .lines()
        .map(|l| l.split(" #").next().unwrap_or(l).trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

fn run_example(name: &str, server: &Aie) -> String {
    let script = example(&readme(), name).replace("127.0.0.1:3001", &server.addr);
    let out = run(Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(&script));
    assert!(out.status.success(), "README example {name} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The legacy curl session (initialize, initialized, tools/list) lists the fixtures.
#[test]
fn readme_legacy_curl_session_lists_tools() {
    let server = Aie::start(&["serve", "conformance", "--listen", "127.0.0.1:0"]);
    let out = run_example("legacy", &server);
    assert!(
        out.contains(r#""id":2,"result":{"#) && out.contains(r#""tools":[{"name""#),
        "{out}"
    );
    assert!(out.contains("test_simple_text"), "{out}");
}

/// The stateless 2026-07-28 curl call answers with plain JSON.
#[test]
fn readme_modern_curl_call_answers_json() {
    let server = Aie::start(&["serve", "conformance", "--listen", "127.0.0.1:0"]);
    let out = run_example("modern", &server);
    let answer: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    assert_eq!(
        answer
            .pointer("/result/content/0/text")
            .and_then(|t| t.as_str()),
        Some("This is a simple text response for testing.")
    );
}

/// The discover call names both eras among the supported versions.
#[test]
fn readme_discover_lists_both_eras() {
    let server = Aie::start(&["serve", "conformance", "--listen", "127.0.0.1:0"]);
    let out = run_example("discover", &server);
    assert!(
        out.contains("2025-11-25") && out.contains("2026-07-28"),
        "{out}"
    );
}

/// The Quick start has exactly two commands: the demo through cargo and the test suite,
/// which is what CI runs.
#[test]
fn quick_start_is_demo_then_tests_and_ci_runs_the_same() {
    let commands = quick_start(&readme());
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert!(
        commands[0].starts_with("cargo run") && commands[0].ends_with("-- demo"),
        "{commands:?}"
    );
    assert_eq!(commands[1], "bash tests/run");
    let ci = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.ci/run"))
        .expect(".ci/run");
    assert!(
        ci.contains("bash tests/run"),
        ".ci/run must run the README's test command"
    );
}

/// `aie demo` holds every step and says so.
#[test]
fn demo_exits_zero_with_every_step_held() {
    let out = run(Command::new(aie_bin()).arg("demo"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "aie demo failed");
    assert!(text.contains("every step held"), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
}

/// The approving example: `list`, `show` and `approve --sha256` with the hash `show` prints,
/// on a vault holding the README's request, approve exactly that payload.
#[test]
fn readme_approve_with_the_hash_show_prints() {
    use aie_shared::vault::{
        AgentName, ApprovalId, ApprovalRequest, Domain, Vault, payload_sha256,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::init(dir.path().join("vault")).expect("vault");
    let state = dir.path().join("state");
    let payload = serde_json::json!({
        "to": ["Ada Lovelace <ada@example.org>"],
        "cc": [],
        "subject": "Re: Invoice 42 overdue?",
        "body": "Paid today. Thanks, Ada!",
        "in_reply_to": "<invoice-42@example.org>",
        "references": ["<invoice-42@example.org>"],
        "message_id": "<aie.reply-3f9a0c1d2e4b5a69@example.com>",
    });
    let request = ApprovalRequest::new(
        ApprovalId::new("reply-3f9a0c1d2e4b5a69").expect("id"),
        Domain::Email,
        "email_send",
        payload.clone(),
        AgentName::new("cloud").expect("agent"),
        chrono::Utc::now() + chrono::TimeDelta::hours(1),
    );
    vault.write_approval_request(&request).expect("request");
    let script = example(&readme(), "approve");
    let hash = payload_sha256(&payload);
    assert!(
        script.contains(&format!("--sha256 {}", &hash[..12])),
        "the README's hash is not its request's ({hash}):\n{script}"
    );
    let bin_dir = aie_bin().parent().expect("bin dir").to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = run(Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("PATH", path)
        .env("AIE_VAULT", vault.root())
        .env("AIE_STATE", &state));
    assert!(out.status.success(), "README example approve failed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("payload_sha256: {hash}")), "{text}");
    assert!(
        vault
            .root()
            .join("Approved/reply-3f9a0c1d2e4b5a69.md")
            .is_file(),
        "{text}"
    );
}
