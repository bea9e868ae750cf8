//! Maildir intake throughput: 10,000 messages (plain, HTML, with a small attachment) in
//! `new/` become tasks; prints messages per second. A figure, never a pass/fail.
//!
//! `cargo run -p aie-email-draft --example intake_bench [-- COUNT]`

use std::time::Instant;

use aie_email_draft::{intake::maildir, triage::TriageRules};
use aie_shared::vault::Vault;

fn message(i: usize) -> String {
    let head = format!(
        "From: Sender {i} <sender{i}@example.org>\r\nTo: owner@example.com\r\nSubject: Message {i} about invoice {i}\r\nDate: Fri, 31 Jan 2025 10:00:00 +0000\r\nMessage-ID: <bench{i}@example.org>\r\nMIME-Version: 1.0\r\n"
    );
    let text = "Hello,\r\n\r\nthis is a test message with a few lines of text, as a real mail would have.\r\nRegards\r\n";
    match i % 3 {
        0 => format!("{head}Content-Type: text/plain; charset=utf-8\r\n\r\n{text}"),
        1 => format!(
            "{head}Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>Hello,</p><p>this is <b>HTML</b> mail number {i}.</p></body></html>\r\n"
        ),
        _ => format!(
            "{head}Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n{text}--b\r\nContent-Type: application/pdf; name=\"doc{i}.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
            "JVBERi0xLjQKJcfsj6IK".repeat(20)
        ),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(10_000);
    let dir = tempfile::tempdir()?;
    let vault = Vault::init(dir.path().join("vault"))?;
    let maildir_path = dir.path().join("Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir_path.join(sub))?;
    }
    for i in 0..count {
        std::fs::write(
            maildir_path
                .join("new")
                .join(format!("{:010}.M{i}P1.bench", 1_700_000_000 + i)),
            message(i),
        )?;
    }
    let limits = maildir::IntakeLimits {
        max_message_bytes: aie_email_draft::config::DEFAULT_MAX_MESSAGE_BYTES,
        max_body_bytes: aie_email_draft::config::DEFAULT_MAX_BODY_BYTES,
    };
    let rules = TriageRules::default();

    let start = Instant::now();
    let report = maildir::fetch(&vault, &maildir_path, &rules, &limits)?;
    let took = start.elapsed().as_secs_f64();
    println!(
        "intake: {} messages -> {} tasks in {took:.2} s: {:.0} messages/s (failed {})",
        count,
        report.new,
        count as f64 / took,
        report.failed
    );

    // A restart that finds every file back in new/: each is recognised as a duplicate.
    for entry in std::fs::read_dir(maildir_path.join("cur"))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().replace(":2,S", "");
        std::fs::rename(entry.path(), maildir_path.join("new").join(name))?;
    }
    let start = Instant::now();
    let again = maildir::fetch(&vault, &maildir_path, &rules, &limits)?;
    let took = start.elapsed().as_secs_f64();
    println!(
        "re-read: {} duplicates recognised in {took:.2} s: {:.0} messages/s (new {})",
        again.duplicates,
        count as f64 / took,
        again.new
    );
    Ok(())
}
