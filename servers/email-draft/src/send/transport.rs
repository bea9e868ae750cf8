//! The two ways a message leaves: SMTP (plain, STARTTLS or TLS, through lettre on rustls)
//! and the `.eml` outbox in the state folder (the embedded default, so the demo needs no
//! mail server).
//!
//! Each failure says whether anything may have left: [`TransportError::NotSent`] when the
//! server could not be reached or refused before taking the message, and
//! [`TransportError::InDoubt`] when the connection failed while the message was on its way.

use std::{path::PathBuf, str::FromStr};

use aie_shared::vault::ApprovalId;
use lettre::{
    Message,
    transport::smtp::{
        authentication::{Credentials, Mechanism},
        client::{AsyncSmtpConnection, Certificate, TlsParameters},
        commands::{Data, Mail, Rcpt},
        extension::ClientId,
    },
};

use crate::{
    config::{SmtpConfig, SmtpSecurity},
    fsutil,
    intake::imap::read_secret,
};

/// Why a transport did not deliver.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Nothing left: safe to try again with the same approval.
    #[error("{0}")]
    NotSent(String),
    /// The message may have left.
    #[error("{0}")]
    InDoubt(String),
}

/// Where messages go.
#[derive(Debug, Clone)]
pub enum Transport {
    /// `.eml` files in this folder, named by approval id.
    Outbox(PathBuf),
    /// An SMTP server.
    Smtp {
        /// The server's settings.
        config: SmtpConfig,
        /// The state folder, where relative password and CA files are.
        state_dir: PathBuf,
    },
}

impl Transport {
    /// How the journal and the results name it: `outbox` or `smtp://host:port`.
    pub fn name(&self) -> String {
        match self {
            Transport::Outbox(_) => "outbox".to_owned(),
            Transport::Smtp { config, .. } => config.url.server_name(),
        }
    }

    /// Delivers `message`; the `Ok` text is the transport's answer.
    pub async fn deliver(
        &self,
        approval_id: &ApprovalId,
        message: &Message,
    ) -> Result<String, TransportError> {
        match self {
            Transport::Outbox(dir) => {
                let path = dir.join(format!("{approval_id}.eml"));
                let bytes = message.formatted();
                let written = {
                    let path = path.clone();
                    tokio::task::spawn_blocking(move || fsutil::write_new(&path, &bytes)).await
                };
                match written {
                    Ok(Ok(())) => Ok(format!("written to {}", path.display())),
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Err(TransportError::InDoubt(format!(
                            "{} exists already: this approval was written to the outbox before",
                            path.display()
                        )))
                    }
                    Ok(Err(e)) => Err(TransportError::NotSent(format!(
                        "cannot write {}: {e}",
                        path.display()
                    ))),
                    Err(e) => Err(TransportError::NotSent(format!("internal error: {e}"))),
                }
            }
            Transport::Smtp { config, state_dir } => smtp_send(config, state_dir, message).await,
        }
    }
}

/// Runs one SMTP step with the configured timeout.
async fn step<T>(
    config: &SmtpConfig,
    what: &str,
    fut: impl Future<Output = Result<T, lettre::transport::smtp::Error>>,
) -> Result<T, String> {
    let server = config.url.server_name();
    match tokio::time::timeout(config.timeout, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("SMTP server {server}: {what}: {e}")),
        Err(_) => Err(format!(
            "SMTP server {server}: {what}: no answer within {} s",
            config.timeout.as_secs()
        )),
    }
}

/// The TLS parameters for `host`: the system's roots plus the configured CA file.
fn tls_parameters(
    config: &SmtpConfig,
    state_dir: &std::path::Path,
) -> Result<TlsParameters, String> {
    let host = config
        .url
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let mut builder = TlsParameters::builder(host.to_owned());
    if let Some(ca) = &config.ca_file {
        let path = if ca.is_absolute() {
            ca.clone()
        } else {
            state_dir.join(ca)
        };
        let pem = std::fs::read(&path).map_err(|e| format!("CA file {}: {e}", path.display()))?;
        let cert =
            Certificate::from_pem(&pem).map_err(|e| format!("CA file {}: {e}", path.display()))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build_rustls()
        .map_err(|e| format!("TLS settings for {host}: {e}"))
}

/// The credentials: the URL's user with the password file's secret (or the URL's password).
fn credentials(
    config: &SmtpConfig,
    state_dir: &std::path::Path,
) -> Result<Option<Credentials>, String> {
    let Some(user) = config.url.user() else {
        return Ok(None);
    };
    let password = match (&config.password_file, config.url.password()) {
        (Some(file), _) => {
            let path = if file.is_absolute() {
                file.clone()
            } else {
                state_dir.join(file)
            };
            read_secret(&path).map_err(|e| e.to_string())?
        }
        (None, Some(password)) => password,
        (None, None) => {
            return Err(format!(
                "SMTP user {user:?} has no password: write it to a file in the state folder and name it (smtp_password_file)"
            ));
        }
    };
    Ok(Some(Credentials::new(user, password)))
}

/// Sends over SMTP, step by step, so a failure before DATA's end is known to have sent
/// nothing.
async fn smtp_send(
    config: &SmtpConfig,
    state_dir: &std::path::Path,
    message: &Message,
) -> Result<String, TransportError> {
    let not_sent = TransportError::NotSent;
    let url = &config.url;
    let security = url.security();
    let creds = credentials(config, state_dir).map_err(not_sent)?;
    if creds.is_some() && security == SmtpSecurity::Plain && !url.is_loopback() {
        return Err(not_sent(format!(
            "SMTP server {}: a password would cross the network in the clear; use ?tls=required or smtps://",
            url.server_name()
        )));
    }
    let tls = match security {
        SmtpSecurity::Plain => None,
        _ => Some(tls_parameters(config, state_dir).map_err(not_sent)?),
    };
    // The EHLO name: the sender's domain, which a submission server accepts; lettre's default
    // (an address literal) is refused by some.
    let hello = message
        .envelope()
        .from()
        .map(|a| ClientId::Domain(a.domain().to_owned()))
        .unwrap_or_default();
    let implicit = if security == SmtpSecurity::Tls {
        tls.clone()
    } else {
        None
    };
    let mut conn = step(
        config,
        "cannot connect (is the server running, and the host and port right?)",
        AsyncSmtpConnection::connect_tokio1(
            (url.host(), url.port()),
            Some(config.timeout),
            &hello,
            implicit,
            None,
        ),
    )
    .await
    .map_err(not_sent)?;
    if security == SmtpSecurity::StartTls {
        let Some(params) = tls else {
            return Err(not_sent("internal error: no TLS parameters".into()));
        };
        if !conn.can_starttls() {
            conn.abort().await;
            return Err(not_sent(format!(
                "SMTP server {} does not offer STARTTLS, which ?tls=required asks for",
                url.server_name()
            )));
        }
        step(config, "STARTTLS failed", conn.starttls(params, &hello))
            .await
            .map_err(not_sent)?;
    }
    if let Some(creds) = &creds {
        step(
            config,
            "login refused (check the user and the password file)",
            conn.auth(&[Mechanism::Plain, Mechanism::Login], creds),
        )
        .await
        .map_err(not_sent)?;
    }
    let envelope = message.envelope().clone();
    let bytes = message.formatted();
    let before_data = async {
        step(
            config,
            "MAIL FROM refused",
            conn.command(Mail::new(envelope.from().cloned(), Vec::new())),
        )
        .await?;
        for to in envelope.to() {
            step(
                config,
                &format!("recipient {to} refused"),
                conn.command(Rcpt::new(to.clone(), Vec::new())),
            )
            .await?;
        }
        step(config, "DATA refused", conn.command(Data)).await
    };
    if let Err(e) = before_data.await {
        conn.abort().await;
        return Err(not_sent(e));
    }
    let server = url.server_name();
    let sent = tokio::time::timeout(config.timeout, conn.message(&bytes)).await;
    let answer = match sent {
        Ok(Ok(response)) => response,
        Ok(Err(e)) if e.is_permanent() || e.is_transient() => {
            conn.abort().await;
            return Err(not_sent(format!(
                "SMTP server {server} refused the message: {e}"
            )));
        }
        Ok(Err(e)) => {
            return Err(TransportError::InDoubt(format!(
                "SMTP server {server}: the connection failed while the message was being sent ({e}); it may or may not have been delivered"
            )));
        }
        Err(_) => {
            return Err(TransportError::InDoubt(format!(
                "SMTP server {server} did not confirm the message within {} s; it may or may not have been delivered",
                config.timeout.as_secs()
            )));
        }
    };
    // The message is accepted; a failed goodbye changes nothing.
    let _ = tokio::time::timeout(config.timeout, conn.quit()).await;
    let text = answer.message().collect::<Vec<_>>().join(" ");
    Ok(format!("{server} answered {} {text}", answer.code()))
}

/// Parses a header-ready address; used when a payload is turned into a message.
pub(crate) fn mailbox(field: &str, raw: &str) -> Result<lettre::message::Mailbox, String> {
    lettre::message::Mailbox::from_str(raw.trim())
        .map_err(|e| format!("payload `{field}`: invalid address {raw:?}: {e}"))
}
