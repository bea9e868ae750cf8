//! The email-draft server: new mail becomes tasks, triaged by the owner's rules; replies are
//! drafted as approval requests; an approved reply is sent exactly as approved, at most once.
//!
//! `specs/email.md` is the prose version of this crate.
//!
//! # Layout
//! - [`config`]: [`EmailConfig`]: mail sources, the SMTP server or the `.eml` outbox, rules,
//!   limits.
//! - [`message`]: one raw mail read with `mail-parser`: headers, text, attachments listed,
//!   the stable task id.
//! - [`intake`]: Maildir and IMAP intake; each mail becomes one task, never two.
//! - [`triage`]: category and priority by rules, with the reason each rule fired.
//! - [`draft`]: a reply (threading headers, `Re:`) filed as an approval request.
//! - [`send`]: the SMTP (or `.eml` outbox) effect that `aie_shared::executor` carries out
//!   at most once, in doubt when unknown; its journal and words.
//! - [`server`]: [`EmailDraft`] and the four MCP tools.
//! - `fsutil` (private): durable writes in the state folder (the outbox, IMAP positions).

pub mod config;
pub use config::{EmailConfig, ImapConfig, SmtpConfig, SmtpUrl};

pub mod draft;
pub use draft::{ReplyArgs, ReplyPayload};

mod fsutil;

pub mod intake;
pub use intake::{IntakeError, IntakeReport};

pub mod message;
pub use message::ParsedMail;

pub mod send;
pub use send::{InDoubt, SendError, SendOutcome, Sender};

pub mod server;
pub use server::{EmailDraft, server, tools};

pub mod triage;
pub use triage::{Priority, Triage, TriageRule, TriageRules};
