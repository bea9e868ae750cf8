//! Intake: new mail becomes tasks in `Needs_Action/email/`, one task per mail, never two.
//!
//! - [`maildir`]: files in `DIR/new`, moved to `cur/` once their task exists.
//! - [`imap`]: a mailbox read over TLS, its position kept by UIDVALIDITY and UID in the
//!   state folder.
//!
//! Both hand each raw message to [`ingest`], which parses it, triages it and creates the
//! task with the vault's create-only write. A task id comes from the Message-ID (or the raw
//! bytes), so a message seen again (a restart after a crash, a second delivery) finds its
//! task already there and counts as a duplicate.

use std::{io, path::PathBuf};

use aie_shared::vault::{Domain, Task, TaskId, Vault, VaultError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use yaml_serde::{Mapping, Value};

use crate::{
    message::{Attachment, ParsedMail},
    triage::{Triage, TriageInput, TriageRules},
};

pub mod imap;
pub mod maildir;

/// Why intake could not read mail; a single bad message is never one of these (it becomes a
/// rejection task), only a source that cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// Neither a Maildir nor an IMAP account is configured.
    #[error(
        "no mail source is configured: pass --maildir DIR, or set [email.imap] in the config file"
    )]
    NoSource,
    /// The Maildir has no `new/` folder.
    #[error(
        "{}: not a Maildir (it has no new/ folder); point --maildir at the folder holding new/, cur/ and tmp/",
        path.display()
    )]
    NotAMaildir {
        /// The folder given.
        path: PathBuf,
    },
    /// A file or folder of the mail source or the state folder could not be used.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The vault refused a write.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The IMAP server could not be reached or spoke no IMAP.
    #[error("IMAP server {server}: {reason}")]
    Imap {
        /// `host:port`.
        server: String,
        /// What went wrong, and what to check.
        reason: String,
    },
    /// The IMAP server refused the login.
    #[error(
        "IMAP server {server}: login as {user:?} refused ({reason}); check the user and the password file {}",
        password_file.display()
    )]
    ImapLogin {
        /// `host:port`.
        server: String,
        /// The login name.
        user: String,
        /// The server's answer.
        reason: String,
        /// Where the password was read from.
        password_file: PathBuf,
    },
    /// A password file is missing or empty.
    #[error(
        "password file {}: {reason}; write the password (one line) to it, in the state folder",
        path.display()
    )]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The saved IMAP position is unreadable.
    #[error(
        "IMAP position file {}: {reason}; move it away to read the mailbox from its start (tasks already made are recognised, not duplicated)",
        path.display()
    )]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// How many ids a report lists: enough to act on, bounded for a 10,000-mail first run.
const MAX_LISTED: usize = 100;

/// What one fetch did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct IntakeReport {
    /// Tasks created.
    pub new: usize,
    /// Messages whose task already existed (seen before, or delivered twice).
    pub duplicates: usize,
    /// Of the new tasks, those that are rejections (too large, not a mail).
    pub rejected: usize,
    /// Messages that could not be taken in this time; they are tried again on the next fetch.
    pub failed: usize,
    /// Ids of the new tasks (the first 100).
    pub task_ids: Vec<String>,
    /// What failed, one line each (the first 100).
    pub errors: Vec<String>,
}

impl IntakeReport {
    /// Counts one ingested message.
    pub(crate) fn count(&mut self, outcome: &Ingested) {
        match outcome {
            Ingested::New { id, rejected } => {
                self.new += 1;
                self.rejected += usize::from(*rejected);
                if self.task_ids.len() < MAX_LISTED {
                    self.task_ids.push(id.to_string());
                }
            }
            Ingested::Duplicate { .. } => self.duplicates += 1,
        }
    }

    /// Counts one message that failed, with its reason.
    pub(crate) fn fail(&mut self, what: String) {
        tracing::warn!("{what}");
        self.failed += 1;
        if self.errors.len() < MAX_LISTED {
            self.errors.push(what);
        }
    }

    /// Adds another report's counts to this one.
    pub fn merge(&mut self, other: IntakeReport) {
        self.new += other.new;
        self.duplicates += other.duplicates;
        self.rejected += other.rejected;
        self.failed += other.failed;
        for id in other.task_ids {
            if self.task_ids.len() < MAX_LISTED {
                self.task_ids.push(id);
            }
        }
        for e in other.errors {
            if self.errors.len() < MAX_LISTED {
                self.errors.push(e);
            }
        }
    }
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// A task was created.
    New {
        /// Its id.
        id: TaskId,
        /// Whether it is a rejection task.
        rejected: bool,
    },
    /// Its task already existed.
    Duplicate {
        /// The existing task's id.
        id: TaskId,
    },
}

/// Where a message came from, kept in the task's `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A Maildir file (its name in `new/`).
    Maildir {
        /// The file name.
        file: String,
    },
    /// An IMAP message.
    Imap {
        /// The mailbox.
        mailbox: String,
        /// Its UID.
        uid: u32,
        /// The mailbox's UIDVALIDITY.
        uid_validity: u32,
    },
}

/// The task's `source` mapping: the mail's headers and where it came from. Also read back by
/// triage and drafting, so every field has a default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MailSource {
    /// `maildir` or `imap`.
    pub kind: String,
    /// Maildir file name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// IMAP mailbox.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<String>,
    /// IMAP UID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// IMAP UIDVALIDITY.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid_validity: Option<u32>,
    /// `<id@host>`; absent when the mail had none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The sender as the header shows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The sender's address, lower-case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_address: Option<String>,
    /// To.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// Cc.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<String>,
    /// Reply-To.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reply_to: Vec<String>,
    /// Subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Date, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// In-Reply-To ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub in_reply_to: Vec<String>,
    /// References ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
    /// Notable headers (lower-case name to value), for triage.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Attachments, listed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// Raw size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the raw bytes read.
    pub raw_sha256: String,
    /// Bytes of text not kept in the body.
    #[serde(skip_serializing_if = "is_zero")]
    pub body_cut: usize,
    /// What was wrong with the mail.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Why it was not read whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl MailSource {
    /// The source mapping of `mail` from `origin`.
    pub fn new(mail: &ParsedMail, origin: &Origin) -> Self {
        let mut source = MailSource {
            message_id: mail.message_id.clone(),
            from: mail.from.first().map(|m| m.display()),
            from_address: mail.from.first().map(|m| m.address.to_lowercase()),
            to: mail.to.iter().map(|m| m.display()).collect(),
            cc: mail.cc.iter().map(|m| m.display()).collect(),
            reply_to: mail.reply_to.iter().map(|m| m.display()).collect(),
            subject: mail.subject.clone(),
            date: mail.date.clone(),
            in_reply_to: mail.in_reply_to.clone(),
            references: mail.references.clone(),
            headers: mail.headers.iter().cloned().collect(),
            attachments: mail.attachments.clone(),
            size: mail.size,
            raw_sha256: mail.raw_sha256.clone(),
            body_cut: mail.body_cut,
            problems: mail.problems.clone(),
            rejected: mail.rejected.clone(),
            ..Default::default()
        };
        match origin {
            Origin::Maildir { file } => {
                source.kind = "maildir".into();
                source.file = Some(file.clone());
            }
            Origin::Imap {
                mailbox,
                uid,
                uid_validity,
            } => {
                source.kind = "imap".into();
                source.mailbox = Some(mailbox.clone());
                source.uid = Some(*uid);
                source.uid_validity = Some(*uid_validity);
            }
        }
        source
    }

    /// Reads the `source` mapping of an email task.
    pub fn from_task(task: &Task) -> Result<Self, String> {
        let Some(mapping) = &task.meta.source else {
            return Err(format!(
                "task `{}` has no `source`: it was not made by email intake",
                task.meta.id
            ));
        };
        yaml_serde::from_value(Value::Mapping(mapping.clone()))
            .map_err(|e| format!("task `{}`: front matter `source`: {e}", task.meta.id))
    }

    /// The input triage needs, with `body` the task's text.
    pub fn triage_input<'a>(&'a self, body: &'a str) -> TriageInput<'a> {
        TriageInput {
            from: self.from_address.as_deref().unwrap_or(""),
            subject: self.subject.as_deref().unwrap_or(""),
            body,
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// Any serializable value as a YAML value for front matter.
pub(crate) fn to_yaml<T: Serialize>(value: &T) -> Result<Value, String> {
    yaml_serde::to_value(value).map_err(|e| e.to_string())
}

/// Sets `triage` in a task's extra front matter, keeping its place if it was there.
pub(crate) fn set_triage(extra: &mut Mapping, triage: &Triage) -> Result<(), String> {
    extra.insert(Value::String("triage".into()), to_yaml(triage)?);
    Ok(())
}

/// The task for one mail: title, `source`, `triage`, and the text as its body.
pub fn task_for(
    mail: &ParsedMail,
    origin: &Origin,
    rules: &TriageRules,
) -> Result<Task, VaultError> {
    let id = mail.task_id()?;
    let source = MailSource::new(mail, origin);
    let body = match &mail.rejected {
        Some(reason) => format!(
            "This mail was not taken in: {reason}.\n\nIts headers are in the front matter; open it in a mail client to read it.\n"
        ),
        None if mail.body_cut > 0 => format!(
            "{}\n\n[... {} more bytes of text not kept here; open the mail in a mail client for the rest]\n",
            mail.body, mail.body_cut
        ),
        None if mail.body.trim().is_empty() => "(no text)\n".to_owned(),
        None => mail.body.clone(),
    };
    let triage_body = if mail.rejected.is_some() {
        ""
    } else {
        &mail.body
    };
    let triage = rules.apply(&source.triage_input(triage_body));
    let mut task = Task::new(id, Domain::Email, mail.title(), body);
    let encode = |reason: String| VaultError::Encode {
        path: format!("Needs_Action/email/{}", task_id_name(mail)),
        reason,
    };
    let source_value = to_yaml(&source).map_err(encode)?;
    if let Value::Mapping(mapping) = source_value {
        task.meta.source = Some(mapping);
    }
    set_triage(&mut task.meta.extra, &triage).map_err(encode)?;
    Ok(task)
}

/// The file name a mail's task gets, for error messages.
fn task_id_name(mail: &ParsedMail) -> String {
    mail.task_id()
        .map(|id| id.file_name())
        .unwrap_or_else(|_| "?".into())
}

/// Makes the task for one mail, or recognises that it exists.
pub fn ingest(
    vault: &Vault,
    mail: &ParsedMail,
    origin: &Origin,
    rules: &TriageRules,
) -> Result<Ingested, VaultError> {
    let task = task_for(mail, origin, rules)?;
    let id = task.meta.id.clone();
    match vault.create_task(&task) {
        Ok(_) => Ok(Ingested::New {
            id,
            rejected: mail.rejected.is_some(),
        }),
        Err(VaultError::AlreadyExists { .. }) => Ok(Ingested::Duplicate { id }),
        Err(e) => Err(e),
    }
}

/// A one-line description of a rejection for a message of `size` bytes over `max`.
pub(crate) fn too_large(size: u64, max: u64) -> String {
    format!(
        "the message is {} ({size} bytes), over the intake limit of {} ({max} bytes); its attachments were not read",
        human_size(size),
        human_size(max)
    )
}

/// `26214400` as `25.0 MiB`.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["bytes", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// How much of an oversized message is read for its rejection task's headers.
pub(crate) const REJECTED_HEAD_BYTES: usize = 64 * 1024;
