//! The official MCP conformance suite against `aie serve conformance`, in both eras: every
//! scored check must pass.

use std::{collections::BTreeSet, process::Command};

use aie_e2e::{Aie, peer, run};

/// Scenario names the suite reports as failed (`✗ name: ...`), minus those it lists as not
/// scored for the revision.
fn scored_failures(report: &str) -> BTreeSet<String> {
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

fn suite(requirements: &str) {
    let server = Aie::start(&["serve", "conformance", "--listen", "127.0.0.1:0"]);
    let results = std::env::temp_dir().join(format!(
        "aie-conformance-{requirements}-{}",
        std::process::id()
    ));
    let out = run(Command::new(peer("AIE_NODE"))
        .arg(peer("AIE_CONFORMANCE"))
        .args([
            "server",
            "--url",
            &server.localhost_url(),
            "--requirements",
            requirements,
        ])
        .arg("-o")
        .arg(&results));
    let report = String::from_utf8_lossy(&out.stdout);
    let passed = report.lines().filter(|l| l.starts_with("✓ ")).count();
    let failures = scored_failures(&report);
    assert!(
        failures.is_empty(),
        "scored scenarios failed for {requirements}: {failures:?}"
    );
    assert!(
        passed >= 25,
        "only {passed} scenarios passed for {requirements}: did the suite run?"
    );
    assert!(
        out.status.success(),
        "conformance suite exited with {} for {requirements}",
        out.status
    );
    let _ = std::fs::remove_dir_all(results);
}

/// Every scored 2025-11-25 (legacy: initialize, sessions) scenario passes.
#[test]
fn conformance_suite_passes_2025_11_25() {
    suite("2025-11-25");
}

/// Every scored 2026-07-28 (stateless) scenario passes.
#[test]
fn conformance_suite_passes_2026_07_28() {
    suite("2026-07-28");
}

/// The report parser counts a scored failure and excuses a not-scored one.
#[test]
fn report_parser_separates_scored_from_not_scored() {
    let report = "✓ ping: 2 passed, 0 failed\n✗ tools-list: 1 passed, 1 failed\n✗ json-schema-2020-12: 1 passed, 1 failed\n\nNot scored for 2025-11-25: 1 scenario(s) run, 1 failing.\n  ✗ json-schema-2020-12 (pending)\n";
    assert_eq!(
        scored_failures(report),
        BTreeSet::from(["tools-list".to_owned()])
    );
}
