//! IMAP intake over TLS (tokio-rustls on ring; the system's roots plus an optional CA file).
//!
//! The mailbox is opened read-only (`EXAMINE`) and bodies are fetched with `BODY.PEEK`, so
//! intake never changes a flag on the server: the owner's other clients see their mail as
//! they left it. Where intake stopped is kept in the state folder as the mailbox's
//! UIDVALIDITY and the highest UID taken in, written (and flushed) only after that message's
//! task exists. A crash before the position is saved re-reads a few messages, whose tasks
//! exist already: duplicates, not doubles. A new UIDVALIDITY (the server renumbered the
//! mailbox) starts again from UID 1, and the Message-ID-derived task ids keep that safe too.

use std::{
    fmt::Debug,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use aie_shared::vault::Vault;
use futures::TryStreamExt;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

use super::{
    IntakeError, IntakeReport, Origin, REJECTED_HEAD_BYTES, ingest, maildir::IntakeLimits,
    too_large,
};
use crate::{
    config::{DEFAULT_NETWORK_TIMEOUT, ImapConfig, is_loopback_host},
    fsutil,
    message::{self, sha256_hex},
    triage::TriageRules,
};

/// How many messages are taken in between two saves of the position.
const SAVE_EVERY: usize = 50;

/// Where intake stopped in one mailbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImapPosition {
    /// `host:port`.
    pub server: String,
    /// The login name.
    pub user: String,
    /// The mailbox.
    pub mailbox: String,
    /// The mailbox's UIDVALIDITY when `last_uid` was taken.
    pub uid_validity: u32,
    /// The highest UID whose task exists.
    pub last_uid: u32,
}

/// The position file of an account's mailbox: `<state>/imap/<hash>.json`.
pub fn position_file(state_dir: &Path, cfg: &ImapConfig) -> PathBuf {
    let key = format!("{}:{}\n{}\n{}", cfg.host, cfg.port, cfg.user, cfg.mailbox);
    state_dir
        .join("imap")
        .join(format!("{}.json", &sha256_hex(key.as_bytes())[..16]))
}

/// Reads the saved position; none yet is the mailbox's start.
pub fn load_position(path: &Path) -> Result<Option<ImapPosition>, IntakeError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| IntakeError::State {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(IntakeError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Saves the position durably.
fn save_position(path: &Path, position: &ImapPosition) -> Result<(), IntakeError> {
    let bytes = serde_json::to_vec_pretty(position).map_err(|e| IntakeError::State {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    fsutil::write_replacing(path, &bytes).map_err(|e| IntakeError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

/// Reads a one-line secret from a file; the line end is not part of it.
pub(crate) fn read_secret(path: &Path) -> Result<String, IntakeError> {
    let text = std::fs::read_to_string(path).map_err(|e| IntakeError::PasswordFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let secret = text.trim_end_matches(['\r', '\n']).to_owned();
    if secret.is_empty() {
        return Err(IntakeError::PasswordFile {
            path: path.to_path_buf(),
            reason: "it is empty".into(),
        });
    }
    Ok(secret)
}

/// A rustls client config that trusts the system's roots plus the PEM certificates in
/// `ca_file`.
pub(crate) fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut extra = Vec::new();
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("CA file {}: {e}", path.display()))?;
        for cert in certs {
            extra.push(cert.map_err(|e| format!("CA file {}: {e}", path.display()))?);
        }
        if extra.is_empty() {
            return Err(format!(
                "CA file {}: no PEM certificate in it",
                path.display()
            ));
        }
    }
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(|e| format!("trusted roots: {e}"))?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// Runs `step` with the network timeout, naming the server and the step when it fails.
async fn timed<T, E: std::fmt::Display>(
    server: &str,
    what: &str,
    step: impl Future<Output = Result<T, E>>,
) -> Result<T, IntakeError> {
    match tokio::time::timeout(DEFAULT_NETWORK_TIMEOUT, step).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(IntakeError::Imap {
            server: server.to_owned(),
            reason: format!("{what}: {e}"),
        }),
        Err(_) => Err(IntakeError::Imap {
            server: server.to_owned(),
            reason: format!(
                "{what}: no answer within {} s",
                DEFAULT_NETWORK_TIMEOUT.as_secs()
            ),
        }),
    }
}

/// Takes in the messages that arrived since the saved position.
pub async fn fetch(
    vault: &Vault,
    cfg: &ImapConfig,
    state_dir: &Path,
    rules: &TriageRules,
    limits: &IntakeLimits,
) -> Result<IntakeReport, IntakeError> {
    let server = format!("{}:{}", cfg.host, cfg.port);
    let password_file = if cfg.password_file.is_absolute() {
        cfg.password_file.clone()
    } else {
        state_dir.join(&cfg.password_file)
    };
    let password = read_secret(&password_file)?;
    let tcp = timed(
        &server,
        "cannot connect (is the server running, and the host and port right?)",
        TcpStream::connect((cfg.host.as_str(), cfg.port)),
    )
    .await?;
    let session = Account {
        vault,
        cfg,
        server: &server,
        state_dir,
        rules,
        limits,
        password_file: &password_file,
    };
    if cfg.tls {
        let config = tls_config(cfg.ca_file.as_deref()).map_err(|reason| IntakeError::Imap {
            server: server.clone(),
            reason,
        })?;
        let name = ServerName::try_from(cfg.host.clone()).map_err(|e| IntakeError::Imap {
            server: server.clone(),
            reason: format!("host name: {e}"),
        })?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tls = timed(
            &server,
            "TLS handshake failed (is it an IMAPS port, and is its certificate trusted?)",
            connector.connect(name, tcp),
        )
        .await?;
        session.run(tls, &password).await
    } else if is_loopback_host(&cfg.host) {
        session.run(tcp, &password).await
    } else {
        Err(IntakeError::Imap {
            server,
            reason: "plain IMAP would send the password in the clear; it is allowed only for a loopback server: set tls = true".into(),
        })
    }
}

/// One fetch's view of the account.
struct Account<'a> {
    vault: &'a Vault,
    cfg: &'a ImapConfig,
    server: &'a str,
    state_dir: &'a Path,
    rules: &'a TriageRules,
    limits: &'a IntakeLimits,
    password_file: &'a Path,
}

impl Account<'_> {
    /// Logs in, takes in what is new, logs out.
    async fn run<S>(&self, stream: S, password: &str) -> Result<IntakeReport, IntakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Debug + Send,
    {
        let server = self.server;
        let mut client = async_imap::Client::new(stream);
        let greeting = timed(server, "no greeting", client.read_response()).await?;
        if greeting.is_none() {
            return Err(IntakeError::Imap {
                server: server.to_owned(),
                reason: "closed the connection before greeting".into(),
            });
        }
        let login = tokio::time::timeout(
            DEFAULT_NETWORK_TIMEOUT,
            client.login(&self.cfg.user, password),
        )
        .await;
        let mut session = match login {
            Ok(Ok(session)) => session,
            Ok(Err((e, _))) => {
                return Err(IntakeError::ImapLogin {
                    server: server.to_owned(),
                    user: self.cfg.user.clone(),
                    reason: e.to_string(),
                    password_file: self.password_file.to_path_buf(),
                });
            }
            Err(_) => {
                return Err(IntakeError::Imap {
                    server: server.to_owned(),
                    reason: "login: no answer in time".into(),
                });
            }
        };
        let result = self.take_new(&mut session).await;
        // Logging out is a courtesy; the work is already saved.
        let _ = tokio::time::timeout(Duration::from_secs(5), session.logout()).await;
        result
    }

    /// Reads the mailbox from the saved position on.
    async fn take_new<S>(
        &self,
        session: &mut async_imap::Session<S>,
    ) -> Result<IntakeReport, IntakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Debug + Send,
    {
        let server = self.server;
        let mailbox = timed(
            server,
            &format!("cannot open mailbox {:?}", self.cfg.mailbox),
            session.examine(&self.cfg.mailbox),
        )
        .await?;
        let Some(uid_validity) = mailbox.uid_validity else {
            return Err(IntakeError::Imap {
                server: server.to_owned(),
                reason: format!("mailbox {:?} has no UIDVALIDITY", self.cfg.mailbox),
            });
        };
        let path = position_file(self.state_dir, self.cfg);
        let mut position = match load_position(&path)? {
            Some(saved) if saved.uid_validity == uid_validity => saved,
            saved => {
                if let Some(old) = saved {
                    tracing::warn!(
                        server,
                        mailbox = %self.cfg.mailbox,
                        old = old.uid_validity,
                        new = uid_validity,
                        "UIDVALIDITY changed: reading the mailbox from its start; existing tasks are recognised as duplicates"
                    );
                }
                ImapPosition {
                    server: server.to_owned(),
                    user: self.cfg.user.clone(),
                    mailbox: self.cfg.mailbox.clone(),
                    uid_validity,
                    last_uid: 0,
                }
            }
        };
        let mut report = IntakeReport::default();
        if mailbox.exists == 0 {
            save_position(&path, &position)?;
            return Ok(report);
        }
        // `N:*` also answers with the highest message when N is past it, hence the filter.
        let range = format!("{}:*", position.last_uid.saturating_add(1));
        let sizes: Vec<_> = timed(server, "listing new messages", async {
            session
                .uid_fetch(&range, "(UID RFC822.SIZE)")
                .await?
                .try_collect::<Vec<_>>()
                .await
        })
        .await?;
        let mut todo: Vec<(u32, u64)> = sizes
            .iter()
            .filter_map(|f| Some((f.uid?, u64::from(f.size.unwrap_or(0)))))
            .filter(|(uid, _)| *uid > position.last_uid)
            .collect();
        todo.sort_unstable();
        todo.dedup();

        let mut unsaved = 0;
        for (uid, size) in todo {
            let outcome = self.take_one(session, uid, size, uid_validity).await;
            match outcome {
                // Expunged meanwhile: nothing to take in.
                Ok(None) => {}
                Ok(Some(Ok(ingested))) => report.count(&ingested),
                Ok(Some(Err(e))) => {
                    // The vault refused: stop here so this message is tried again next time.
                    report.fail(format!("IMAP UID {uid}: no task made: {e}"));
                    break;
                }
                Err(e) => {
                    save_position(&path, &position)?;
                    return Err(e);
                }
            }
            position.last_uid = uid;
            unsaved += 1;
            if unsaved >= SAVE_EVERY {
                save_position(&path, &position)?;
                unsaved = 0;
            }
        }
        save_position(&path, &position)?;
        Ok(report)
    }

    /// Fetches one message (whole, or its header when too large) and makes its task. The
    /// outer error is the server's, the inner one the vault's; `None` when the message is gone.
    async fn take_one<S>(
        &self,
        session: &mut async_imap::Session<S>,
        uid: u32,
        size: u64,
        uid_validity: u32,
    ) -> Result<Option<Result<super::Ingested, aie_shared::VaultError>>, IntakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Debug + Send,
    {
        let too_big = size > self.limits.max_message_bytes;
        let query = if too_big {
            "BODY.PEEK[HEADER]"
        } else {
            "BODY.PEEK[]"
        };
        let fetched: Vec<_> = timed(self.server, &format!("fetching UID {uid}"), async {
            session
                .uid_fetch(uid.to_string(), query)
                .await?
                .try_collect::<Vec<_>>()
                .await
        })
        .await?;
        let Some(fetch) = fetched.into_iter().find(|f| f.uid == Some(uid)) else {
            return Ok(None);
        };
        let raw = if too_big {
            let head = fetch.header().unwrap_or_default();
            head[..head.len().min(REJECTED_HEAD_BYTES)].to_vec()
        } else {
            fetch.body().unwrap_or_default().to_vec()
        };
        drop(fetch);
        let (vault, rules, limits) = (self.vault.clone(), self.rules.clone(), self.limits.clone());
        let origin = Origin::Imap {
            mailbox: self.cfg.mailbox.clone(),
            uid,
            uid_validity,
        };
        let max = self.limits.max_message_bytes;
        let made = tokio::task::spawn_blocking(move || {
            let mail = if too_big {
                message::parse_rejected(&raw, size, too_large(size, max))
            } else {
                message::parse(&raw, limits.max_body_bytes)
            };
            ingest(&vault, &mail, &origin, &rules)
        })
        .await
        .map_err(|e| IntakeError::Imap {
            server: self.server.to_owned(),
            reason: format!("internal error: {e}"),
        })?;
        Ok(Some(made))
    }
}
