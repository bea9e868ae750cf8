//! Maildir intake: one task per mail with its headers, text and attachments; restarts that
//! neither lose nor double a mail; bad input that becomes a task or a clear rejection while
//! intake goes on.

mod support;

use aie_shared::vault::{Task, TaskId};
use support::{Setup, mail};

fn read_task(setup: &Setup, id: &str) -> Task {
    let id = TaskId::new(id).expect("id");
    setup.vault.read_task(&id).expect("task").task
}

fn source(task: &Task) -> serde_json::Value {
    serde_json::to_value(&task.meta.source).expect("source")
}

/// Each mail in new/ becomes one task in Needs_Action/email/ with its headers in `source`,
/// its text as body and a triage; the file moves to cur/ with the Seen flag.
#[tokio::test]
async fn maildir_mail_becomes_one_triaged_task() {
    let setup = Setup::new();
    let raw = b"From: \"Alice Example\" <alice@example.org>\r\n\
To: Owner <owner@example.com>\r\n\
Cc: bob@example.org\r\n\
Reply-To: billing@example.org\r\n\
Subject: Invoice 42\r\n\
Date: Fri, 31 Jan 2025 10:00:00 +0100\r\n\
Message-ID: <inv42@example.org>\r\n\
In-Reply-To: <q1@example.com>\r\n\
References: <q0@example.com> <q1@example.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Please find the invoice attached.\r\n\
--b1\r\n\
Content-Type: application/pdf; name=\"invoice-42.pdf\"\r\n\
Content-Disposition: attachment; filename=\"invoice-42.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0xLjQKJcfsj6IK\r\n\
--b1--\r\n";
    setup.deliver("1700000000.M1P1.host", raw);
    let server = setup.server(setup.config());
    let out = server.fetch().await.expect("fetch");
    assert_eq!(
        (out.report.new, out.report.duplicates, out.report.failed),
        (1, 0, 0)
    );
    let id = &out.report.task_ids[0];
    assert!(id.starts_with("email-"), "{id}");

    let task = read_task(&setup, id);
    assert_eq!(task.meta.title, "Invoice 42 (from alice@example.org)");
    assert_eq!(task.body.trim(), "Please find the invoice attached.");
    let s = source(&task);
    assert_eq!(s["kind"], "maildir");
    assert_eq!(s["message_id"], "<inv42@example.org>");
    assert_eq!(s["from"], "Alice Example <alice@example.org>");
    assert_eq!(s["to"][0], "Owner <owner@example.com>");
    assert_eq!(s["cc"][0], "bob@example.org");
    assert_eq!(s["reply_to"][0], "billing@example.org");
    assert_eq!(s["subject"], "Invoice 42");
    assert_eq!(s["date"], "2025-01-31T10:00:00+01:00");
    assert_eq!(s["in_reply_to"][0], "<q1@example.com>");
    assert_eq!(
        s["references"],
        serde_json::json!(["<q0@example.com>", "<q1@example.com>"])
    );
    assert_eq!(s["attachments"][0]["name"], "invoice-42.pdf");
    assert_eq!(s["attachments"][0]["type"], "application/pdf");
    assert_eq!(s["attachments"][0]["size"], 15);
    let triage = serde_json::to_value(&task.meta.extra).expect("extra")["triage"].clone();
    assert_eq!(triage["category"], "invoice");
    assert!(
        triage["reasons"][0]
            .as_str()
            .expect("reason")
            .contains("keyword \"invoice\"")
    );

    assert!(setup.names("new").is_empty());
    assert_eq!(setup.names("cur"), ["1700000000.M1P1.host:2,S"]);
}

/// A crash after the task was written but before the file moved leaves the file in new/:
/// the next fetch (a new server, as after a restart) recognises the task and makes no
/// second one; mail that arrived meanwhile is all taken in.
#[tokio::test]
async fn maildir_restart_neither_loses_nor_duplicates() {
    let setup = Setup::new();
    for i in 0..5 {
        setup.deliver(
            &format!("{i}.mail"),
            &mail(
                Some(&format!("m{i}@x.example")),
                "a@x.example",
                &format!("Mail {i}"),
                "Hi",
            ),
        );
    }
    let first = setup.server(setup.config()).fetch().await.expect("fetch");
    assert_eq!(first.report.new, 5);

    // The crash: file 2 is back in new/ as if its move never happened.
    std::fs::rename(
        setup.maildir.join("cur/2.mail:2,S"),
        setup.maildir.join("new/2.mail"),
    )
    .expect("undo move");
    for i in 5..8 {
        setup.deliver(
            &format!("{i}.mail"),
            &mail(
                Some(&format!("m{i}@x.example")),
                "a@x.example",
                &format!("Mail {i}"),
                "Hi",
            ),
        );
    }
    let restarted = setup.server(setup.config());
    let second = restarted.fetch().await.expect("fetch");
    assert_eq!((second.report.new, second.report.duplicates), (3, 1));
    assert_eq!(setup.email_tasks().len(), 8);
    assert!(setup.names("new").is_empty());
    assert_eq!(setup.names("cur").len(), 8);

    // The same mail delivered twice under another name is the same task.
    setup.deliver(
        "again.mail",
        &mail(Some("m0@x.example"), "a@x.example", "Mail 0", "Hi"),
    );
    let third = restarted.fetch().await.expect("fetch");
    assert_eq!((third.report.new, third.report.duplicates), (0, 1));
    assert_eq!(setup.email_tasks().len(), 8);
}

/// Shift_JIS bytes in base64 for "こんにちは".
const KONNICHIWA_SJIS_B64: &str = "grGC8YLJgr+CzQ==";

/// A mail without Message-ID, broken MIME, an HTML-only mail, ISO-8859-1 and Shift_JIS
/// text, a file that is no mail and an oversized one each become a task (the oversized one a
/// rejection task that reads only its head), in one fetch that goes on past each.
#[tokio::test]
async fn maildir_bad_input_becomes_tasks_or_rejections() {
    let setup = Setup::new();
    setup.deliver(
        "a-no-id",
        &mail(None, "n@noid.example", "No id here", "Body without id"),
    );
    setup.deliver(
        "b-broken",
        b"From: x@broken.example\r\nMessage-ID: <broken@x>\r\nSubject: broken\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"XYZ\"\r\n\r\n--XYZ\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: base64\r\n\r\nSGVsbG8gd29ybGQ=%%%not base64!!!\r\n--XYZ\r\n\
Content-Type: application/pdf; name=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n",
    );
    setup.deliver(
        "c-html",
        b"From: h@html.example\r\nMessage-ID: <html@x>\r\nSubject: html\r\nMIME-Version: 1.0\r\n\
Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>Hello <b>World</b></p><p>Second line</p></body></html>\r\n",
    );
    let mut latin1 = b"From: l@latin.example\r\nMessage-ID: <latin@x>\r\nSubject: =?iso-8859-1?q?Gr=FC=DFe?=\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        .to_vec();
    latin1.extend_from_slice(b"Gr\xfc\xdfe aus M\xfcnchen\r\n");
    setup.deliver("d-latin1", &latin1);
    let sjis = format!(
        "From: j@sjis.example\r\nMessage-ID: <sjis@x>\r\nSubject: =?Shift_JIS?B?{KONNICHIWA_SJIS_B64}?=\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=Shift_JIS\r\nContent-Transfer-Encoding: base64\r\n\r\n{KONNICHIWA_SJIS_B64}\r\n"
    );
    setup.deliver("e-sjis", sjis.as_bytes());
    setup.deliver("f-garbage", &[0xff, 0xfe, 0x00, 0x01, 0x02, 0x80, 0x81]);
    let big = big_attachment_mail("big@x", 20 * 1024 * 1024);
    setup.deliver("g-big", &big);

    let server = setup.server(setup.config());
    let out = server.fetch().await.expect("fetch");
    assert_eq!(out.report.failed, 0, "{:?}", out.report.errors);
    assert_eq!(out.report.new, 7);
    assert!(
        out.report.rejected >= 1,
        "the oversized mail is a rejection"
    );
    assert!(setup.names("new").is_empty());

    let by_subject = |subject: &str| -> Task {
        setup
            .email_tasks()
            .iter()
            .map(|p| Task::parse(&std::fs::read_to_string(p).expect("read")).expect("parse"))
            .find(|t| source(t)["subject"] == subject)
            .unwrap_or_else(|| panic!("no task with subject {subject}"))
    };
    let no_id = by_subject("No id here");
    assert!(source(&no_id).get("message_id").is_none());
    assert!(
        source(&no_id)["problems"][0]
            .as_str()
            .expect("problem")
            .starts_with("no Message-ID")
    );

    // Invalid base64 and no closing boundary: a task all the same, its problem noted.
    let broken = by_subject("broken");
    let problems = source(&broken)["problems"].to_string();
    assert!(
        problems.contains("could not be decoded cleanly"),
        "{problems}"
    );

    let html = by_subject("html");
    assert!(
        html.body.contains("Hello") && html.body.contains("World"),
        "{}",
        html.body
    );
    assert!(!html.body.contains("<b>"), "{}", html.body);

    let latin = by_subject("Grüße");
    assert!(latin.body.contains("Grüße aus München"), "{}", latin.body);

    let japanese = by_subject("こんにちは");
    assert!(japanese.body.contains("こんにちは"), "{}", japanese.body);

    let big = by_subject("Big attachment");
    let s = source(&big);
    let reason = s["rejected"].as_str().expect("rejected");
    assert!(
        reason.contains("over the intake limit of 25.0 MiB"),
        "{reason}"
    );
    assert!(big.meta.title.starts_with("Rejected mail: Big attachment"));
    assert_eq!(s["size"], big_len(20 * 1024 * 1024));
}

/// A 20 MiB attachment under a raised limit is read, listed with its size and not kept: the
/// task file stays small.
#[tokio::test]
async fn maildir_large_attachment_is_listed_not_stored() {
    let setup = Setup::new();
    setup.deliver("big", &big_attachment_mail("big2@x", 20 * 1024 * 1024));
    let mut config = setup.config();
    config.max_message_bytes = 40 * 1024 * 1024;
    let out = setup.server(config).fetch().await.expect("fetch");
    assert_eq!((out.report.new, out.report.rejected), (1, 0));
    let path = &setup.email_tasks()[0];
    let task = Task::parse(&std::fs::read_to_string(path).expect("read")).expect("parse");
    let s = source(&task);
    assert_eq!(s["attachments"][0]["name"], "zeros.bin");
    assert_eq!(s["attachments"][0]["size"], 20 * 1024 * 1024);
    let file_size = std::fs::metadata(path).expect("meta").len();
    assert!(file_size < 8 * 1024, "task file is {file_size} bytes");
}

/// A mail with a text part and an attachment of `size` zero bytes, base64 in 76-column lines.
fn big_attachment_mail(id: &str, size: usize) -> Vec<u8> {
    let mut raw = format!(
        "From: big@big.example\r\nMessage-ID: <{id}>\r\nSubject: Big attachment\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--B\r\n\
Content-Type: application/octet-stream; name=\"zeros.bin\"\r\nContent-Disposition: attachment; filename=\"zeros.bin\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\n"
    )
    .into_bytes();
    // base64 of 57 zero bytes is 76 'A's.
    let line = "A".repeat(76);
    for _ in 0..size / 57 {
        raw.extend_from_slice(line.as_bytes());
        raw.extend_from_slice(b"\r\n");
    }
    let rest = size % 57;
    if rest > 0 {
        let chars = rest.div_ceil(3) * 4;
        let mut tail = "A".repeat(chars);
        let pad = (3 - rest % 3) % 3;
        tail.replace_range(chars - pad.., &"=".repeat(pad));
        raw.extend_from_slice(tail.as_bytes());
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"--B--\r\n");
    raw
}

/// The byte length of [`big_attachment_mail`] for `size`.
fn big_len(size: usize) -> u64 {
    big_attachment_mail("big@x", size).len() as u64
}
