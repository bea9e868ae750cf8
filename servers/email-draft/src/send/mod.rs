//! Sending an approved reply: the email server's [`Effect`], the one thing it does in the
//! outside world. The at-most-once machinery around it (the journal written before and after
//! each send, the crash points, in doubt after a crash, the guard's hand-off) is the shared
//! executor's (`aie_shared::executor`, `specs/executor.md`).
//!
//! - [`transport`]: SMTP through lettre, and the `.eml` outbox.
//!
//! [`SmtpEffect::prepare`] builds exactly the message the approved payload describes and
//! checks that its Message-ID derives from the approval id (the effect's id, in the journal
//! before anything is sent); [`SmtpEffect::perform`] hands it to the transport. SMTP cannot
//! be asked whether a message arrived, so a send in doubt stays in doubt for the owner: it
//! has no `look_up`.

use std::path::{Path, PathBuf};

use aie_shared::{
    approvals::Approvals,
    executor::{
        Action, Authority, Effect, EffectError, ExecError, ExecStatus, Executor, JournalSpec,
        Labels, Performed, Prepared, Settled,
    },
    vault::{AgentName, ApprovalId, Domain},
};
use lettre::{Message, message::header::ContentType};
use schemars::JsonSchema;
use serde::Serialize;

use crate::{
    config::{EmailConfig, SmtpConfig},
    draft::{ReplyPayload, SEND_TOOL, message_id_matches},
};

pub mod transport;
pub use transport::{Transport, TransportError};

/// The email executor: its name, its journal (`<state>/send-journal.jsonl`, the file the
/// email server always kept, so an existing state folder's journal is read as it is) and
/// its words.
pub static JOURNAL: JournalSpec = JournalSpec {
    name: "email",
    file: "send-journal.jsonl",
    tools: &[SEND_TOOL],
    domain: Domain::Email,
    labels: Labels {
        server: "email server",
        journal: "send journal",
        action: "send",
        done: "sent",
        effect_id: "Message-ID",
        check: "look for it at the recipient or in the mail server's log",
    },
};

/// Why a send did not happen, or may have.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Nothing was sent; the approval is unused and may be tried again.
    #[error("not sent: {0}")]
    NotSent(String),
    /// The message may have left; it is never sent again by itself.
    #[error("in doubt: {0}")]
    InDoubt(String),
}

impl From<ExecError> for SendError {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::NotExecuted(why) => SendError::NotSent(why),
            ExecError::InDoubt(why) => SendError::InDoubt(why),
        }
    }
}

/// A send whose message may or may not have been delivered, as `email_send` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct InDoubt {
    /// The approval.
    pub approval_id: String,
    /// The message's Message-ID, to look for at the recipient or in the server's log.
    pub message_id: String,
    /// Where it was being sent.
    pub transport: String,
    /// When the send began.
    pub since: String,
    /// What is known.
    pub detail: String,
}

impl From<aie_shared::executor::InDoubt> for InDoubt {
    fn from(d: aie_shared::executor::InDoubt) -> Self {
        Self {
            approval_id: d.approval_id,
            message_id: d.effect_id,
            transport: d.target,
            since: d.since,
            detail: d.detail,
        }
    }
}

/// A send that happened (now or before).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SendOutcome {
    /// The approval carried out.
    pub approval_id: String,
    /// `sent`, or `already_sent` when the journal shows an earlier delivery.
    pub status: String,
    /// The message's Message-ID.
    pub message_id: String,
    /// `outbox` or `smtp://host:port`.
    pub transport: String,
    /// The transport's answer.
    pub detail: String,
    /// Approvals whose messages may or may not have been delivered, for the owner to check.
    pub in_doubt: Vec<InDoubt>,
}

/// The email server's effect: one approved reply, built from its payload and handed to the
/// transport.
#[derive(Debug)]
pub struct SmtpEffect {
    transport: Transport,
    default_from: Option<String>,
}

impl SmtpEffect {
    /// The effect of `config`: SMTP when configured, else the outbox.
    pub fn new(config: &EmailConfig) -> Self {
        let transport = match &config.smtp {
            Some(smtp) => smtp_transport(smtp.clone(), &config.state_dir),
            None => Transport::Outbox(outbox_dir(&config.state_dir)),
        };
        Self {
            transport,
            default_from: config.from.clone(),
        }
    }

    /// How messages leave.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }
}

impl Effect for SmtpEffect {
    type Request = Message;

    fn spec(&self) -> &'static JournalSpec {
        &JOURNAL
    }

    fn target(&self) -> String {
        self.transport.name()
    }

    fn prepare(&self, action: &Action) -> Result<Prepared<Message>, String> {
        let payload: ReplyPayload = serde_json::from_value(action.payload.clone())
            .map_err(|e| format!("the payload is not a reply: {e}"))?;
        if !message_id_matches(&action.approval_id, &payload.message_id) {
            return Err(format!(
                "the payload's message_id {} is not derived from the approval id",
                payload.message_id
            ));
        }
        let message = build_message(&payload, self.default_from.as_deref())?;
        Ok(Prepared {
            effect_id: payload.message_id,
            request: message,
        })
    }

    async fn perform(&self, action: &Action, message: &Message) -> Result<Performed, EffectError> {
        match self.transport.deliver(&action.approval_id, message).await {
            Ok(detail) => Ok(Performed {
                receipt: None,
                detail,
            }),
            Err(TransportError::NotSent(why)) => Err(EffectError::NotExecuted(why)),
            Err(TransportError::InDoubt(why)) => Err(EffectError::InDoubt(why)),
        }
    }
}

/// The sending half of the server: the shared executor around [`SmtpEffect`].
#[derive(Debug)]
pub struct Sender {
    executor: Executor<SmtpEffect>,
}

impl Sender {
    /// The sender of `config`, taking its approvals from `authority`; reads the journal.
    pub fn new(config: &EmailConfig, authority: Authority) -> std::io::Result<Self> {
        Ok(Self {
            executor: Executor::open(SmtpEffect::new(config), &config.state_dir, authority)?,
        })
    }

    /// The same sender, also settling in the approval ledger what its journal proves.
    pub fn with_ledger(self, approvals: Approvals, agent: AgentName) -> Self {
        Self {
            executor: self.executor.with_ledger(approvals, agent),
        }
    }

    /// How messages leave.
    pub fn transport(&self) -> &Transport {
        self.executor.effect().transport()
    }

    /// Approvals in doubt.
    pub fn in_doubt(&self) -> Vec<InDoubt> {
        self.executor
            .in_doubt()
            .into_iter()
            .map(Into::into)
            .collect()
    }

    /// Records in the ledger what the journal proves (a send `sent` whose result the
    /// gateway never recorded); SMTP cannot be read back, so nothing else is settled.
    pub async fn reconcile(&self) -> Vec<Settled> {
        self.executor.reconcile().await
    }

    /// Sends the approved reply `approval_id`, at most once.
    pub async fn send(&self, approval_id: &ApprovalId) -> Result<SendOutcome, SendError> {
        let done = self.executor.execute(approval_id, SEND_TOOL).await?;
        Ok(SendOutcome {
            approval_id: done.approval_id.to_string(),
            status: match done.status {
                ExecStatus::Done => "sent",
                ExecStatus::AlreadyDone => "already_sent",
            }
            .to_owned(),
            message_id: done.effect_id,
            transport: done.target,
            detail: done.detail,
            in_doubt: done.in_doubt.into_iter().map(Into::into).collect(),
        })
    }
}

/// `<state>/outbox/`: where the file transport writes `.eml` files.
pub fn outbox_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("outbox")
}

/// The message a payload describes: its headers, its text, a Date of now.
pub fn build_message(
    payload: &ReplyPayload,
    default_from: Option<&str>,
) -> Result<Message, String> {
    use transport::mailbox;
    let from = payload
        .from
        .as_deref()
        .or(default_from)
        .ok_or("the payload has no `from` and no sender address is configured (--from)")?;
    let mut builder = Message::builder()
        .from(mailbox("from", from)?)
        .subject(payload.subject.clone())
        .message_id(Some(payload.message_id.clone()));
    if payload.to.is_empty() {
        return Err("the payload has no recipient".into());
    }
    for to in &payload.to {
        builder = builder.to(mailbox("to", to)?);
    }
    for cc in &payload.cc {
        builder = builder.cc(mailbox("cc", cc)?);
    }
    if let Some(parent) = &payload.in_reply_to {
        builder = builder.in_reply_to(parent.clone());
    }
    if !payload.references.is_empty() {
        builder = builder.references(payload.references.join(" "));
    }
    builder
        .header(ContentType::TEXT_PLAIN)
        .body(payload.body.clone())
        .map_err(|e| format!("the payload does not make a message: {e}"))
}

/// A sender for `smtp`, for callers that pick the server at run time.
pub fn smtp_transport(smtp: SmtpConfig, state_dir: &Path) -> Transport {
    Transport::Smtp {
        config: smtp,
        state_dir: state_dir.to_path_buf(),
    }
}
