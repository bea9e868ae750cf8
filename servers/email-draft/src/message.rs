//! One incoming mail, read: its headers, its text (HTML turned to text, any charset decoded),
//! a list of its attachments, and the stable task id it becomes.
//!
//! Parsing never fails: `mail-parser` reads whatever it can of broken MIME, and what it
//! cannot read at all still becomes a [`ParsedMail`] that says so in `problems`, so every
//! delivered file turns into a task or a clear rejection and intake goes on.
//!
//! A header is written by whoever sent the mail, so its values are kept only as
//! `aie_shared::render` shows them: a control, bidi or invisible character (an ANSI
//! clear-screen sequence in a Message-ID, a right-to-left override in a Subject) is kept as
//! its `\u{..}` escape, never as it came, and `problems` says which headers held one. The
//! task, its title, the dashboard and a reply's `In-Reply-To`/`References` then carry the
//! escaped text, which is plain printable ASCII where the raw one was not.

use mail_parser::{Address, HeaderValue, MessageParser, MimeHeaders, PartType};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use aie_shared::{
    render,
    vault::{TaskId, VaultError},
};

use crate::triage::{NOTABLE_HEADERS, truncate};

/// A name and address, as a header carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mailbox {
    /// The display name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The address.
    pub address: String,
}

impl Mailbox {
    /// `"Name" <address>` (quoted when the name needs it), or the bare address.
    pub fn display(&self) -> String {
        match self
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            None => self.address.clone(),
            Some(name) => {
                let needs_quotes = name
                    .chars()
                    .any(|c| "()<>[]:;@\\,.\"".contains(c) || c.is_control());
                if needs_quotes {
                    let escaped: String = name
                        .chars()
                        .filter(|c| !c.is_control())
                        .flat_map(|c| match c {
                            '"' | '\\' => vec!['\\', c],
                            c => vec![c],
                        })
                        .collect();
                    format!("\"{escaped}\" <{}>", self.address)
                } else {
                    format!("{name} <{}>", self.address)
                }
            }
        }
    }
}

/// An attachment, listed (never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Its file name, when the mail gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its MIME type, e.g. `application/pdf`.
    #[serde(rename = "type")]
    pub content_type: String,
    /// Its decoded size in bytes.
    pub size: u64,
}

/// A mail as intake read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedMail {
    /// `<id@host>`, when the mail has a Message-ID.
    pub message_id: Option<String>,
    /// From.
    pub from: Vec<Mailbox>,
    /// To.
    pub to: Vec<Mailbox>,
    /// Cc.
    pub cc: Vec<Mailbox>,
    /// Reply-To.
    pub reply_to: Vec<Mailbox>,
    /// Subject, decoded.
    pub subject: Option<String>,
    /// Date, RFC 3339.
    pub date: Option<String>,
    /// In-Reply-To ids, each `<...>`.
    pub in_reply_to: Vec<String>,
    /// References ids, each `<...>`.
    pub references: Vec<String>,
    /// The notable headers present (lower-case name, value): what triage may test.
    pub headers: Vec<(String, String)>,
    /// The plain text: text parts, or HTML turned to text; cut at the body limit.
    pub body: String,
    /// Bytes of text left out by the body limit.
    pub body_cut: usize,
    /// Attachments, listed.
    pub attachments: Vec<Attachment>,
    /// What was wrong with the mail, if anything (it is still a task).
    pub problems: Vec<String>,
    /// Why the mail was not read whole (too large, not a mail): it becomes a rejection task.
    pub rejected: Option<String>,
    /// Size of the raw message in bytes.
    pub size: u64,
    /// Hex SHA-256 of the raw bytes read (the whole message, or its head when rejected).
    pub raw_sha256: String,
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `id` with angle brackets, whitespace trimmed: `<id@host>`.
fn bracketed(id: &str) -> String {
    let inner = id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    format!("<{inner}>")
}

/// The mailboxes of an address header, groups flattened, addresses that are not one dropped.
fn mailboxes(address: Option<&Address<'_>>) -> Vec<Mailbox> {
    let Some(address) = address else {
        return Vec::new();
    };
    address
        .iter()
        .filter_map(|a| {
            let addr = a.address()?.trim();
            (!addr.is_empty()).then(|| Mailbox {
                name: a
                    .name()
                    .map(|n| n.trim().to_owned())
                    .filter(|n| !n.is_empty()),
                address: addr.to_owned(),
            })
        })
        .collect()
}

/// The message ids in an In-Reply-To or References header.
fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(id) => vec![bracketed(id)],
        HeaderValue::TextList(list) => list.iter().map(|id| bracketed(id)).collect(),
        _ => Vec::new(),
    }
}

/// Text as a task file holds it: LF line ends, no control characters but tab and newline.
pub(crate) fn clean_text(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace('\r', "\n")
        .chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect()
}

/// One header line's worth of text: folding and runs of white space made one space (the
/// other control characters are escaped afterwards, [`escape_headers`]).
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads a whole raw message. `max_body_bytes` bounds the text kept.
pub fn parse(raw: &[u8], max_body_bytes: usize) -> ParsedMail {
    let mut mail = ParsedMail {
        size: raw.len() as u64,
        raw_sha256: sha256_hex(raw),
        ..Default::default()
    };
    let Some(message) = MessageParser::default().parse(raw) else {
        mail.rejected = Some("not an email message: no header could be read from it".to_owned());
        return mail;
    };
    read_headers(&message, &mut mail);

    let mut text = String::new();
    for i in 0..message.text_body_count() {
        if let Some(part) = message.body_text(i) {
            if !text.is_empty() {
                text.push_str("\n\n");
            }
            text.push_str(&part);
        }
    }
    if text.trim().is_empty() && message.text_body_count() == 0 && message.html_body_count() > 0 {
        // An HTML-only mail whose HTML part is not listed as a text body: turn it to text.
        for i in 0..message.html_body_count() {
            if let Some(html) = message.body_html(i) {
                text.push_str(&html_to_text(&html));
            }
        }
    }
    let text = clean_text(&text);
    let kept = truncate(&text, max_body_bytes);
    mail.body_cut = text.len() - kept.len();
    mail.body = kept.to_owned();

    for part in message.attachments() {
        let content_type = part
            .content_type()
            .map(|ct| match &ct.c_subtype {
                Some(sub) => format!("{}/{}", ct.c_type, sub),
                None => ct.c_type.to_string(),
            })
            .unwrap_or_else(|| match part.body {
                PartType::Message(_) => "message/rfc822".to_owned(),
                PartType::Text(_) => "text/plain".to_owned(),
                _ => "application/octet-stream".to_owned(),
            })
            .to_lowercase();
        mail.attachments.push(Attachment {
            name: part
                .attachment_name()
                .map(|n| render::line(&one_line(n)).into_owned()),
            content_type,
            size: part.len() as u64,
        });
    }
    if message.parts.iter().any(|p| p.is_encoding_problem) {
        mail.problems
            .push("a part could not be decoded cleanly (broken MIME or transfer encoding); its text is a best effort".to_owned());
    }
    if mail.body.trim().is_empty() && mail.attachments.is_empty() {
        mail.problems
            .push("the message has no readable text".to_owned());
    }
    mail
}

/// Reads only the head of a message that is too large to read whole: headers for the
/// rejection task, nothing of the body.
pub fn parse_rejected(head: &[u8], size: u64, reason: String) -> ParsedMail {
    let mut mail = ParsedMail {
        size,
        raw_sha256: sha256_hex(head),
        rejected: Some(reason),
        ..Default::default()
    };
    if let Some(message) = MessageParser::default().parse_headers(head) {
        read_headers(&message, &mut mail);
    }
    mail
}

/// Fills the header fields of `mail` from a parsed message.
fn read_headers(message: &mail_parser::Message<'_>, mail: &mut ParsedMail) {
    mail.message_id = message
        .message_id()
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(bracketed);
    if mail.message_id.is_none() {
        mail.problems
            .push("no Message-ID: the task id comes from a hash of the raw message".to_owned());
    }
    mail.from = mailboxes(message.from());
    mail.to = mailboxes(message.to());
    mail.cc = mailboxes(message.cc());
    mail.reply_to = mailboxes(message.reply_to());
    mail.subject = message.subject().map(one_line).filter(|s| !s.is_empty());
    mail.date = message
        .date()
        .filter(|d| d.is_valid())
        .map(|d| d.to_rfc3339());
    mail.in_reply_to = ids(message.in_reply_to());
    mail.references = ids(message.references());
    for name in NOTABLE_HEADERS {
        if let Some(value) = message.header_raw(*name) {
            mail.headers.push(((*name).to_owned(), one_line(value)));
        }
    }
    escape_headers(mail);
}

/// Keeps every header value only in its escaped form ([`render::line`]), and says in
/// `problems` which headers held a control, bidi or invisible character.
fn escape_headers(mail: &mut ParsedMail) {
    let mut held: Vec<String> = Vec::new();
    let mut escape = |name: &str, value: &mut String| {
        if let std::borrow::Cow::Owned(escaped) = render::line(value) {
            *value = escaped;
            if !held.iter().any(|h| h == name) {
                held.push(name.to_owned());
            }
        }
    };
    if let Some(id) = mail.message_id.as_mut() {
        escape("Message-ID", id);
    }
    for id in &mut mail.in_reply_to {
        escape("In-Reply-To", id);
    }
    for id in &mut mail.references {
        escape("References", id);
    }
    if let Some(subject) = mail.subject.as_mut() {
        escape("Subject", subject);
    }
    for (header, list) in [
        ("From", &mut mail.from),
        ("To", &mut mail.to),
        ("Cc", &mut mail.cc),
        ("Reply-To", &mut mail.reply_to),
    ] {
        for mailbox in list.iter_mut() {
            escape(header, &mut mailbox.address);
            if let Some(name) = mailbox.name.as_mut() {
                escape(header, name);
            }
        }
    }
    for (name, value) in &mut mail.headers {
        let name = name.clone();
        escape(&name, value);
    }
    if !held.is_empty() {
        mail.problems.push(format!(
            "the {} header(s) held control, bidi or invisible characters; they are kept escaped (as \\u{{..}}), never as they came",
            held.join(", ")
        ));
    }
}

/// A plain rendering of HTML for the rare mail whose parser did not already do it.
fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

impl ParsedMail {
    /// The task id: `email-` and 16 hex digits of the SHA-256 of the Message-ID, else of the
    /// raw bytes. The same mail delivered twice (or seen through Maildir and IMAP) gets the
    /// same id, so the vault's create-only write recognises the duplicate.
    pub fn task_id(&self) -> Result<TaskId, VaultError> {
        let key = match &self.message_id {
            Some(id) => format!("message-id:{id}"),
            None => format!("raw-sha256:{}", self.raw_sha256),
        };
        let hash = sha256_hex(key.as_bytes());
        // 6 + 16 characters of [a-z0-9-]: always a valid id.
        TaskId::new(format!("email-{}", &hash[..16]))
    }

    /// The sender's address (the first From), lower-case; empty when there is none.
    pub fn from_address(&self) -> String {
        self.from
            .first()
            .map(|m| m.address.to_lowercase())
            .unwrap_or_default()
    }

    /// A one-line title: the subject and who sent it.
    pub fn title(&self) -> String {
        let subject = self.subject.as_deref().unwrap_or("(no subject)");
        let subject = truncate(subject, 160);
        let from = self
            .from
            .first()
            .map(|m| m.address.as_str())
            .unwrap_or("unknown sender");
        match &self.rejected {
            Some(_) => format!("Rejected mail: {subject} (from {from})"),
            None => format!("{subject} (from {from})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIMPLE: &[u8] = b"From: \"Alice A.\" <alice@example.org>\r\n\
To: owner@example.com\r\n\
Subject: =?utf-8?q?Caf=C3=A9?= invoice\r\n\
Message-ID: <m1@example.org>\r\n\
References: <r0@example.org>\r\n\
In-Reply-To: <r0@example.org>\r\n\
Date: Fri, 31 Jan 2025 10:00:00 +0100\r\n\
\r\n\
Hello\r\nthere\r\n";

    /// Headers, ids and text come out decoded; the id is stable and derived from Message-ID.
    #[test]
    fn message_parse_simple() {
        let mail = parse(SIMPLE, 1024);
        assert_eq!(mail.message_id.as_deref(), Some("<m1@example.org>"));
        assert_eq!(mail.subject.as_deref(), Some("Café invoice"));
        assert_eq!(mail.from[0].display(), "\"Alice A.\" <alice@example.org>");
        assert_eq!(mail.references, ["<r0@example.org>"]);
        assert_eq!(mail.date.as_deref(), Some("2025-01-31T10:00:00+01:00"));
        assert_eq!(mail.body, "Hello\nthere\n");
        assert_eq!(
            mail.task_id().expect("id"),
            parse(SIMPLE, 10).task_id().expect("id")
        );
        assert!(mail.problems.is_empty(), "{:?}", mail.problems);
    }

    /// Without a Message-ID the id comes from the raw bytes, and the problem is noted.
    #[test]
    fn message_without_id_hashes_raw_bytes() {
        let raw = b"From: a@b.example\r\nSubject: x\r\n\r\nbody\r\n";
        let mail = parse(raw, 1024);
        assert!(mail.message_id.is_none());
        let id = mail.task_id().expect("id");
        assert_eq!(id, parse(raw, 1024).task_id().expect("id"));
        let other = parse(b"From: a@b.example\r\n\r\nother\r\n", 1024);
        assert_ne!(id, other.task_id().expect("id"));
        assert!(mail.problems[0].starts_with("no Message-ID"));
    }

    /// A Message-ID carrying a clear-screen sequence and a Subject carrying a right-to-left
    /// override are kept only escaped, and the problem says so; the task id is stable.
    #[test]
    fn message_headers_with_escapes_are_kept_escaped() {
        let raw = "From: \"Eve\u{202e}\" <eve@example.org>\r\n\
Message-ID: <\u{1b}[2J\u{1b}[Hfake@x>\r\n\
In-Reply-To: <\u{1b}]0;t\u{7}p@x>\r\n\
Subject: =?utf-8?q?Invoice_=E2=80=AEfdp.exe?=\r\n\
\r\n\
Hello\r\n";
        let mail = parse(raw.as_bytes(), 1024);
        assert_eq!(
            mail.message_id.as_deref(),
            Some("<\\u{1b}[2J\\u{1b}[Hfake@x>")
        );
        assert_eq!(mail.in_reply_to, ["<\\u{1b}]0;t\\u{7}p@x>"]);
        assert_eq!(mail.subject.as_deref(), Some("Invoice \\u{202e}fdp.exe"));
        assert_eq!(mail.from[0].name.as_deref(), Some("Eve\\u{202e}"));
        let problem = mail.problems.last().expect("a problem");
        assert!(
            problem.contains("Message-ID") && problem.contains("Subject"),
            "{problem}"
        );
        assert_eq!(
            mail.task_id().expect("id"),
            parse(raw.as_bytes(), 1024).task_id().expect("id")
        );
        assert!(!mail.title().chars().any(aie_shared::render::is_hidden));
    }

    /// The body limit cuts on a character boundary and counts what it left out.
    #[test]
    fn message_body_is_bounded() {
        let raw = format!(
            "From: a@b.example\r\nMessage-ID: <x@y>\r\n\r\n{}\r\n",
            "é".repeat(100)
        );
        let mail = parse(raw.as_bytes(), 11);
        assert_eq!(mail.body, "ééééé");
        assert_eq!(mail.body.len() + mail.body_cut, 201);
    }
}
