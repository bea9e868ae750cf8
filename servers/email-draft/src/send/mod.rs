//! Sending an approved reply, at most once.
//!
//! - [`journal`]: the send journal in the state folder and the in-doubt list.
//! - [`transport`]: SMTP through lettre, and the `.eml` outbox.
//!
//! [`Sender::send`] reads the approval file from `Approved/`, checks it (the tool, the
//! payload hash, the expiry, the Message-ID derived from its id), builds exactly the message
//! its payload describes, and hands it to the transport between two journal lines. The
//! gateway checks the human's approval before it calls; these checks are a second lock, not
//! the first.

use std::path::{Path, PathBuf};

use aie_shared::vault::{ApprovalId, ApprovalRequest, Domain, Vault, VaultError};
use chrono::Utc;
use lettre::{Message, message::header::ContentType};
use schemars::JsonSchema;
use serde::Serialize;
use tokio::sync::Mutex;

use crate::{
    config::{EmailConfig, SmtpConfig},
    draft::{ReplyPayload, SEND_TOOL, message_id_matches},
};

pub mod journal;
pub use journal::{InDoubt, JournalEntry, JournalState, SendJournal};

pub mod transport;
pub use transport::{Transport, TransportError};

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

/// The sending half of the server: the transport and the journal.
#[derive(Debug)]
pub struct Sender {
    transport: Transport,
    default_from: Option<String>,
    // One send at a time: the journal check and the send must not interleave.
    journal: Mutex<SendJournal>,
}

impl Sender {
    /// The sender of `config`: SMTP when configured, else the outbox; reads the journal.
    pub fn new(config: &EmailConfig) -> std::io::Result<Self> {
        let transport = match &config.smtp {
            Some(smtp) => Transport::Smtp {
                config: smtp.clone(),
                state_dir: config.state_dir.clone(),
            },
            None => Transport::Outbox(outbox_dir(&config.state_dir)),
        };
        Ok(Self {
            transport,
            default_from: config.from.clone(),
            journal: Mutex::new(SendJournal::open(&config.state_dir)?),
        })
    }

    /// A sender over `transport` (tests, or an SMTP server chosen at run time).
    pub fn with_transport(
        transport: Transport,
        state_dir: &Path,
        default_from: Option<String>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            transport,
            default_from,
            journal: Mutex::new(SendJournal::open(state_dir)?),
        })
    }

    /// How messages leave.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Approvals in doubt.
    pub async fn in_doubt(&self) -> Vec<InDoubt> {
        self.journal.lock().await.in_doubt()
    }

    /// Sends the approved reply `approval_id`, at most once.
    pub async fn send(
        &self,
        vault: &Vault,
        approval_id: &ApprovalId,
    ) -> Result<SendOutcome, SendError> {
        let request = {
            let (vault, id) = (vault.clone(), approval_id.clone());
            tokio::task::spawn_blocking(move || read_approved(&vault, &id))
                .await
                .map_err(|e| SendError::NotSent(format!("internal error: {e}")))??
        };
        let payload: ReplyPayload =
            serde_json::from_value(request.meta.payload.clone()).map_err(|e| {
                SendError::NotSent(format!(
                    "approval `{approval_id}`: the payload is not a reply: {e}"
                ))
            })?;
        if !message_id_matches(approval_id, &payload.message_id) {
            return Err(SendError::NotSent(format!(
                "approval `{approval_id}`: the payload's message_id {} is not derived from the approval id",
                payload.message_id
            )));
        }
        let message =
            build_message(&payload, self.default_from.as_deref()).map_err(SendError::NotSent)?;

        let mut journal = self.journal.lock().await;
        if let Some(why) = journal.damaged() {
            return Err(SendError::NotSent(format!(
                "the send journal is damaged: {why}"
            )));
        }
        let entry = |state, detail: Option<String>| JournalEntry {
            ts: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            approval_id: approval_id.to_string(),
            state,
            message_id: payload.message_id.clone(),
            payload_sha256: request.meta.payload_sha256.clone(),
            transport: self.transport.name(),
            detail,
        };
        match journal
            .last(approval_id.as_str())
            .map(|e| (e.state, e.clone()))
        {
            Some((JournalState::Sent, earlier)) => {
                return Ok(SendOutcome {
                    approval_id: approval_id.to_string(),
                    status: "already_sent".into(),
                    message_id: earlier.message_id,
                    transport: earlier.transport,
                    detail: format!("sent at {}; not sent again", earlier.ts),
                    in_doubt: journal.in_doubt(),
                });
            }
            Some((JournalState::Sending | JournalState::InDoubt, earlier)) => {
                return Err(SendError::InDoubt(format!(
                    "approval `{approval_id}` was being sent at {} through {} and the outcome is unknown; look for Message-ID {} at the recipient or in the server's log; it is never sent again by itself (draft a new reply to send one)",
                    earlier.ts, earlier.transport, earlier.message_id
                )));
            }
            Some((JournalState::Failed, _)) | None => {}
        }
        journal
            .append(entry(JournalState::Sending, None))
            .map_err(|e| {
                SendError::NotSent(format!(
                    "cannot write the send journal {}: {e}",
                    journal.path().display()
                ))
            })?;
        crash_hook("before_send");
        let delivered = self.transport.deliver(approval_id, &message).await;
        if delivered.is_ok() {
            crash_hook("after_send");
        }
        let (state, result) = match delivered {
            Ok(detail) => (JournalState::Sent, Ok(detail)),
            Err(TransportError::NotSent(why)) => {
                (JournalState::Failed, Err(SendError::NotSent(why)))
            }
            Err(TransportError::InDoubt(why)) => {
                (JournalState::InDoubt, Err(SendError::InDoubt(why)))
            }
        };
        let detail = match &result {
            Ok(detail) => detail.clone(),
            Err(e) => e.to_string(),
        };
        if let Err(e) = journal.append(entry(state, Some(detail.clone()))) {
            // The `sending` line stays the last: the approval reads as in doubt, which is
            // the safe reading when the outcome could not be written down.
            tracing::error!(approval_id = %approval_id, "cannot record the send's outcome: {e}");
        }
        match result {
            Ok(detail) => {
                tracing::info!(approval_id = %approval_id, message_id = %payload.message_id, transport = %self.transport.name(), "sent");
                Ok(SendOutcome {
                    approval_id: approval_id.to_string(),
                    status: "sent".into(),
                    message_id: payload.message_id.clone(),
                    transport: self.transport.name(),
                    detail,
                    in_doubt: journal.in_doubt(),
                })
            }
            Err(e) => {
                tracing::warn!(approval_id = %approval_id, "{e}");
                Err(e)
            }
        }
    }
}

/// Test hook for the crash tests (invariant 7): in debug builds only, when `AIE_TEST_CRASH`
/// names `point` (`before_send`: the journal says `sending`, nothing handed over yet;
/// `after_send`: the server accepted the message, the journal not yet told), the process
/// aborts there, as a SIGKILL would stop it. Release builds ignore the variable.
fn crash_hook(point: &str) {
    if cfg!(debug_assertions) && std::env::var("AIE_TEST_CRASH").is_ok_and(|v| v == point) {
        eprintln!("aie: AIE_TEST_CRASH={point}: aborting the process here (test hook)");
        std::process::abort();
    }
}

/// `<state>/outbox/`: where the file transport writes `.eml` files.
pub fn outbox_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("outbox")
}

/// Reads `Approved/<id>.md` and checks that it may run here. Blocking.
fn read_approved(vault: &Vault, id: &ApprovalId) -> Result<ApprovalRequest, SendError> {
    let not_sent = |why: String| SendError::NotSent(why);
    let (path, request) = match vault.read_approval_request(id) {
        Ok(found) => found,
        Err(VaultError::ApprovalNotFound { .. }) => {
            return Err(not_sent(format!("approval `{id}` not found in the vault")));
        }
        Err(e) => return Err(not_sent(e.to_string())),
    };
    if !path.starts_with("Approved/") {
        return Err(not_sent(format!(
            "approval `{id}` is at {path}, not in Approved/: it has not been approved"
        )));
    }
    if request.meta.tool != SEND_TOOL || request.meta.domain != Domain::Email {
        return Err(not_sent(format!(
            "approval `{id}` is for {} in {}, not for {SEND_TOOL}",
            request.meta.tool, request.meta.domain
        )));
    }
    if !request.hash_matches() {
        return Err(not_sent(format!(
            "approval `{id}`: the payload no longer matches its payload_sha256; it was changed after it was drafted"
        )));
    }
    if request.meta.expires_at <= Utc::now() {
        return Err(not_sent(format!(
            "approval `{id}` expired at {}",
            request.meta.expires_at.to_rfc3339()
        )));
    }
    Ok(request)
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
