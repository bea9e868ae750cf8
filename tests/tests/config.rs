//! `aie config check` and `aie config schema`, run as a user runs them.

use std::process::Command;

use aie_e2e::{aie_bin, run};
use serde_json::Value;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A file with two mistakes gets both reported, each with its line and key, and exit 1.
#[test]
fn check_reports_every_error_with_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aie.toml");
    std::fs::write(
        &file,
        "zone = \"local\"\n\n[[upstream]]\nname = \"fixtures\"\nurl = \"/mcp\"\n\n[[gateway.clients]]\nname = \"bot\"\nrole = \"owner\"\ntoken = \"hunter2\"\ntoken_sha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n",
    )
    .unwrap();
    let out = run(Command::new(aie_bin()).args(["config", "check"]).arg(&file));
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let shown = file.display().to_string();
    assert_eq!(
        lines,
        [
            format!("{shown}:5: upstream[0].url: relative URL without a base"),
            format!(
                "{shown}:10: gateway.clients[0].token: never put a client's token in the config: store its SHA-256 in token_sha256 (printf %s \"$TOKEN\" | sha256sum)"
            ),
        ]
    );
}

/// The shipped example file is valid.
#[test]
fn check_accepts_the_example_file() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/aie.example.toml");
    let out = run(Command::new(aie_bin())
        .args(["config", "check"])
        .arg(&example));
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), format!("{}: ok", example.display()));
}

/// A file that is not there is one clear line and exit 1, not a panic.
#[test]
fn check_of_a_missing_file_is_one_line() {
    let out = run(Command::new(aie_bin()).args(["config", "check", "/nonexistent/aie.toml"]));
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("/nonexistent/aie.toml: cannot be read"),
        "{text}"
    );
}

/// The schema is JSON Schema 2020-12 with a description on every top-level key.
#[test]
fn schema_is_json_with_descriptions() {
    let out = run(Command::new(aie_bin()).args(["config", "schema"]));
    assert!(out.status.success());
    let schema: Value = serde_json::from_slice(&out.stdout).expect("schema is JSON");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let properties = schema["properties"].as_object().expect("properties");
    for key in [
        "zone", "vault", "listen", "http", "gateway", "upstream", "policy", "limits", "email",
        "sync",
    ] {
        let description = properties[key]["description"].as_str().unwrap_or_default();
        assert!(!description.is_empty(), "{key} has no description");
    }
    assert_eq!(schema["additionalProperties"], false);
}
