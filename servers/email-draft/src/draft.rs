//! Drafting a reply: the exact message to send, built from the task's mail (threading
//! headers, `Re:` subject, recipients), filed as an approval request for `email_send`.
//!
//! The payload is the whole message: once the human approves it, `email_send` sends those
//! bytes' worth of headers and body and nothing else. Its Message-ID derives from the
//! approval id (`<aie.<approval_id>@<domain>>`), so a second copy of the same approval
//! would be recognisable to any recipient.

use std::str::FromStr;

use aie_shared::vault::{
    AgentName, ApprovalId, ApprovalRequest, Domain, TaskFolder, TaskId, Vault, VaultError,
};
use chrono::{TimeDelta, Utc};
use lettre::message::Mailbox as LettreMailbox;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::intake::MailSource;

/// The tool the approval request is for.
pub const SEND_TOOL: &str = "email_send";

/// Longest reply body accepted, in bytes.
pub const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// Why a reply could not be drafted.
#[derive(Debug, thiserror::Error)]
pub enum DraftError {
    /// `Pending_Approval/` is full (`[limits] max_pending_approvals`), or cannot be counted:
    /// nothing was drafted.
    #[error(transparent)]
    Bound(aie_shared::ToolError),
    /// The vault refused (no such task, unreadable file, ...).
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The task is not one email intake made.
    #[error("{0}")]
    NotAnEmailTask(String),
    /// Another agent holds the task.
    #[error(
        "task `{id}` is claimed by agent `{owner}`; only the agent holding a task drafts its reply"
    )]
    HeldByOther {
        /// The task.
        id: TaskId,
        /// Its holder.
        owner: AgentName,
    },
    /// The task is finished.
    #[error("task `{0}` is in Done/: it is finished and gets no new reply")]
    Done(TaskId),
    /// An address the message cannot carry.
    #[error(
        "invalid address {address:?} in `{field}`: {reason}; write it as addr@example.com or Name <addr@example.com>"
    )]
    BadAddress {
        /// Which field.
        field: &'static str,
        /// The address.
        address: String,
        /// Why.
        reason: String,
    },
    /// Nobody to reply to.
    #[error("nobody to reply to: the mail has neither Reply-To nor From; pass `to`")]
    NoRecipient,
    /// An empty or oversized body, or a bad subject.
    #[error("{0}")]
    BadField(String),
}

/// What the agent asks for.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyArgs {
    /// The email task being answered (`email-...`).
    pub task_id: TaskId,
    /// The reply's text (plain text).
    pub body: String,
    /// Subject; default `Re: ` and the original subject (never `Re: Re:`).
    #[serde(default)]
    pub subject: Option<String>,
    /// Recipients; default the mail's Reply-To, else its From.
    #[serde(default)]
    pub to: Option<Vec<String>>,
    /// Copy recipients; default none.
    #[serde(default)]
    pub cc: Option<Vec<String>>,
}

/// The exact message `email_send` will send: the approval request's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyPayload {
    /// From; when absent the sender's configured address is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// To.
    pub to: Vec<String>,
    /// Cc.
    #[serde(default)]
    pub cc: Vec<String>,
    /// Subject.
    pub subject: String,
    /// The plain-text body.
    pub body: String,
    /// The original's Message-ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    /// The thread: the original's References and its Message-ID.
    #[serde(default)]
    pub references: Vec<String>,
    /// `<aie.<approval_id>@<domain>>`.
    pub message_id: String,
}

/// A drafted reply.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Drafted {
    /// The approval request's id.
    pub approval_id: String,
    /// Its file, relative to the vault root.
    pub path: String,
    /// The task answered.
    pub task_id: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Subject.
    pub subject: String,
    /// The reply's Message-ID.
    pub message_id: String,
    /// When the approval lapses (RFC 3339).
    pub expires_at: String,
}

/// `Re: <subject>`, unless it already is a reply subject.
pub fn reply_subject(original: Option<&str>) -> String {
    let subject = original.unwrap_or("").trim();
    if subject.is_empty() {
        return "Re: (no subject)".to_owned();
    }
    let lower = subject.to_lowercase();
    // "Re:", "RE :", "Re[2]:" all mark a reply already.
    let is_reply = lower.starts_with("re:")
        || lower.starts_with("re :")
        || (lower.starts_with("re[")
            && lower
                .split_once("]:")
                .is_some_and(|(n, _)| n[3..].chars().all(|c| c.is_ascii_digit())));
    if is_reply {
        subject.to_owned()
    } else {
        format!("Re: {subject}")
    }
}

/// The Message-ID a reply drafted under `approval_id` carries.
pub fn message_id_for(approval_id: &ApprovalId, domain: &str) -> String {
    format!("<aie.{approval_id}@{domain}>")
}

/// Whether `message_id` is the one [`message_id_for`] makes for `approval_id`.
pub fn message_id_matches(approval_id: &ApprovalId, message_id: &str) -> bool {
    message_id
        .strip_prefix(&format!("<aie.{approval_id}@"))
        .and_then(|rest| rest.strip_suffix('>'))
        .is_some_and(|domain| !domain.is_empty() && !domain.contains(['<', '>', '@', ' ']))
}

/// Checks one address and writes it as a header carries it.
pub fn normalize_address(field: &'static str, raw: &str) -> Result<String, DraftError> {
    LettreMailbox::from_str(raw.trim())
        .map(|m| m.to_string())
        .map_err(|e| DraftError::BadAddress {
            field,
            address: raw.to_owned(),
            reason: e.to_string(),
        })
}

/// The domain of an address (`Name <a@b.example>` gives `b.example`).
fn domain_of(address: &str) -> Option<String> {
    LettreMailbox::from_str(address.trim())
        .ok()
        .map(|m| m.email.domain().to_owned())
}

/// The new approval id: `reply-` and 16 random hex digits.
fn new_approval_id() -> Result<ApprovalId, VaultError> {
    let random = uuid::Uuid::new_v4().simple().to_string();
    ApprovalId::new(format!("reply-{}", &random[..16]))
}

/// Everything drafting needs besides the request.
pub struct DraftContext<'a> {
    /// The vault.
    pub vault: &'a Vault,
    /// The drafting agent.
    pub agent: &'a AgentName,
    /// The owner's configured From.
    pub from: Option<&'a str>,
    /// How long the approval stays valid.
    pub ttl: TimeDelta,
    /// No draft while `Pending_Approval/` holds this many requests.
    pub max_pending: usize,
}

/// Builds the reply for `args` and files its approval request. Blocking.
pub fn draft_reply(ctx: &DraftContext<'_>, args: ReplyArgs) -> Result<Drafted, DraftError> {
    if args.body.trim().is_empty() {
        return Err(DraftError::BadField("body is empty".into()));
    }
    aie_shared::bounds::check_pending_approvals(ctx.vault.root(), ctx.max_pending)
        .map_err(DraftError::Bound)?;
    if args.body.len() > MAX_REPLY_BYTES {
        return Err(DraftError::BadField(format!(
            "body is over {MAX_REPLY_BYTES} bytes"
        )));
    }
    let stored = ctx.vault.read_task(&args.task_id)?;
    let task = &stored.task;
    if task.meta.domain != Domain::Email {
        return Err(DraftError::NotAnEmailTask(format!(
            "task `{}` is a {} task, not an email",
            task.meta.id, task.meta.domain
        )));
    }
    if stored.folder == TaskFolder::Done {
        return Err(DraftError::Done(task.meta.id.clone()));
    }
    if let Some(holder) = &stored.holder
        && holder != ctx.agent
    {
        return Err(DraftError::HeldByOther {
            id: task.meta.id.clone(),
            owner: holder.clone(),
        });
    }
    let source = MailSource::from_task(task).map_err(DraftError::NotAnEmailTask)?;

    let to = match &args.to {
        Some(list) if !list.is_empty() => list
            .iter()
            .map(|a| normalize_address("to", a))
            .collect::<Result<Vec<_>, _>>()?,
        _ => default_recipients(&source)?,
    };
    let cc = args
        .cc
        .iter()
        .flatten()
        .map(|a| normalize_address("cc", a))
        .collect::<Result<Vec<_>, _>>()?;
    let from = match ctx.from {
        Some(from) => Some(normalize_address("from", from)?),
        // Reply from the address the mail reached.
        None => source
            .to
            .iter()
            .chain(&source.cc)
            .find_map(|a| normalize_address("from", a).ok()),
    };
    let subject = match &args.subject {
        Some(s) if !s.trim().is_empty() => {
            if s.contains(['\r', '\n']) {
                return Err(DraftError::BadField("subject must be one line".into()));
            }
            s.trim().to_owned()
        }
        _ => reply_subject(source.subject.as_deref()),
    };
    let mut references: Vec<String> = if source.references.is_empty() {
        // RFC 5322 3.6.4: without References, a single In-Reply-To names the parent.
        match source.in_reply_to.as_slice() {
            [parent] => vec![parent.clone()],
            _ => Vec::new(),
        }
    } else {
        source.references.clone()
    };
    if let Some(id) = &source.message_id
        && !references.contains(id)
    {
        references.push(id.clone());
    }

    let approval_id = new_approval_id()?;
    let domain = from
        .as_deref()
        .and_then(domain_of)
        .unwrap_or_else(|| "localhost".to_owned());
    let payload = ReplyPayload {
        from,
        to: to.clone(),
        cc,
        subject: subject.clone(),
        body: args.body.replace("\r\n", "\n"),
        in_reply_to: source.message_id.clone(),
        references,
        message_id: message_id_for(&approval_id, &domain),
    };
    let value = serde_json::to_value(&payload)
        .map_err(|e| DraftError::BadField(format!("payload: {e}")))?;
    let expires_at = Utc::now() + ctx.ttl;
    let request = ApprovalRequest::new(
        approval_id.clone(),
        Domain::Email,
        SEND_TOOL,
        value,
        ctx.agent.clone(),
        chrono::SubsecRound::trunc_subsecs(expires_at, 0),
    )
    .for_task(task.meta.id.clone())
    .with_preview(preview(&payload, &task.meta.id));
    let path = ctx.vault.write_approval_request(&request)?;
    Ok(Drafted {
        approval_id: approval_id.to_string(),
        path,
        task_id: task.meta.id.to_string(),
        to,
        subject,
        message_id: payload.message_id,
        expires_at: request.meta.expires_at.to_rfc3339(),
    })
}

/// Reply-To if the mail has one, else From.
fn default_recipients(source: &MailSource) -> Result<Vec<String>, DraftError> {
    let list: Vec<String> = if source.reply_to.is_empty() {
        source.from.iter().cloned().collect()
    } else {
        source.reply_to.clone()
    };
    let mut out = Vec::new();
    for raw in &list {
        match normalize_address("to", raw) {
            Ok(a) => out.push(a),
            // A display name lettre cannot read: the bare address still can be answered.
            Err(e) => match source
                .from_address
                .as_deref()
                .filter(|_| source.reply_to.is_empty())
            {
                Some(bare) => out.push(normalize_address("to", bare)?),
                None => return Err(e),
            },
        }
    }
    if out.is_empty() {
        return Err(DraftError::NoRecipient);
    }
    Ok(out)
}

/// What the human reads before deciding: every header that will be sent, and the body.
fn preview(payload: &ReplyPayload, task: &TaskId) -> String {
    let mut out = String::from("Reply by email, sent exactly as shown once approved.\n\n");
    let mut line = |name: &str, value: &str| out.push_str(&format!("- **{name}:** {value}\n"));
    line(
        "From",
        payload.from.as_deref().unwrap_or("(the configured sender)"),
    );
    line("To", &payload.to.join(", "));
    if !payload.cc.is_empty() {
        line("Cc", &payload.cc.join(", "));
    }
    line("Subject", &payload.subject);
    if let Some(id) = &payload.in_reply_to {
        line("In-Reply-To", id);
    }
    line("Message-ID", &payload.message_id);
    line("Task", task.as_str());
    out.push('\n');
    for l in payload.body.lines() {
        out.push_str("> ");
        out.push_str(l);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Re:` is added once, whatever case or form the original used.
    #[test]
    fn draft_reply_subject_not_doubled() {
        assert_eq!(reply_subject(Some("Invoice 42")), "Re: Invoice 42");
        assert_eq!(reply_subject(Some("Re: Invoice 42")), "Re: Invoice 42");
        assert_eq!(reply_subject(Some("RE: x")), "RE: x");
        assert_eq!(reply_subject(Some("re[2]: x")), "re[2]: x");
        assert_eq!(reply_subject(Some("Regarding x")), "Re: Regarding x");
        assert_eq!(reply_subject(None), "Re: (no subject)");
    }

    /// The Message-ID names the approval and is recognised again.
    #[test]
    fn draft_message_id_from_approval() {
        let id = ApprovalId::new("reply-0123456789abcdef").expect("id");
        let mid = message_id_for(&id, "example.com");
        assert_eq!(mid, "<aie.reply-0123456789abcdef@example.com>");
        assert!(message_id_matches(&id, &mid));
        assert!(!message_id_matches(&id, "<aie.reply-other@example.com>"));
        assert!(!message_id_matches(&id, "<x@example.com>"));
    }
}
