//! The official MCP conformance suite against `aie serve conformance`, in both eras: every
//! scored check must pass.

use std::collections::BTreeSet;

use aie_e2e::{Aie, conformance_suite, scored_failures};

fn suite(requirements: &str) {
    let server = Aie::start(&["serve", "conformance", "--listen", "127.0.0.1:0"]);
    let run = conformance_suite(&server.localhost_url(), requirements);
    assert!(
        run.failures.is_empty(),
        "scored scenarios failed for {requirements}: {:?}",
        run.failures
    );
    assert!(
        run.passed >= 25,
        "only {} scenarios passed for {requirements}: did the suite run?",
        run.passed
    );
    assert!(
        run.status.success(),
        "conformance suite exited with {} for {requirements}",
        run.status
    );
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
