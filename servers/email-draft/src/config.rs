//! What the email-draft server is told: where mail comes from, how replies leave, the
//! owner's triage rules and the limits that keep intake bounded.
//!
//! These are the server's own typed settings. The `[email]` section of the config file
//! (`aie_shared::config`) maps onto them field by field; the command line fills in the rest.

use std::{
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use aie_shared::vault::AgentName;
use chrono::TimeDelta;
use url::Url;

use crate::triage::TriageRules;

/// Largest message intake reads whole, in bytes (25 MiB, what most providers accept).
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 25 * 1024 * 1024;

/// Largest plain-text body kept in a task, in bytes; the rest is cut with a note, so one huge
/// mail never becomes a huge file in a synced vault.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;

/// How long an approval request for a reply stays valid.
pub const DEFAULT_APPROVAL_TTL: TimeDelta = TimeDelta::hours(72);

/// How long one SMTP or IMAP step may take before it counts as failed.
pub const DEFAULT_NETWORK_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the email-draft server needs.
#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// The agent the server acts for: `requested_by` of its approval requests, and the
    /// holder whose claimed tasks `email_triage` may rewrite.
    pub agent: AgentName,
    /// The local state folder (never inside the vault): IMAP positions, the send journal,
    /// the `.eml` outbox, password files.
    pub state_dir: PathBuf,
    /// A Maildir whose `new/` holds new mail, as mbsync or offlineimap leave it.
    pub maildir: Option<PathBuf>,
    /// An IMAP mailbox read for new mail.
    pub imap: Option<ImapConfig>,
    /// Where approved replies go; `None` writes them as `.eml` files to `<state>/outbox/`.
    pub smtp: Option<SmtpConfig>,
    /// The owner's address replies are sent from; without it, the address the original
    /// mail was sent to.
    pub from: Option<String>,
    /// The owner's triage rules (and whether the built-in ones apply).
    pub rules: TriageRules,
    /// Messages larger than this become a rejection task instead of being read whole.
    pub max_message_bytes: u64,
    /// Longest plain-text body kept in a task.
    pub max_body_bytes: usize,
    /// Validity of a drafted reply's approval request.
    pub approval_ttl: TimeDelta,
    /// Drafting is refused while `Pending_Approval/` holds this many requests (`[limits]
    /// max_pending_approvals`).
    pub max_pending_approvals: usize,
}

impl EmailConfig {
    /// Defaults for `agent` with its state in `state_dir`: no mail source, the `.eml`
    /// outbox, the built-in triage rules.
    pub fn new(agent: AgentName, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            agent,
            state_dir: state_dir.into(),
            maildir: None,
            imap: None,
            smtp: None,
            from: None,
            rules: TriageRules::default(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            approval_ttl: DEFAULT_APPROVAL_TTL,
            max_pending_approvals: aie_shared::bounds::DEFAULT_MAX_PENDING_APPROVALS,
        }
    }

    /// Takes in the config file's `[email]` section: sources, the SMTP server with its
    /// password and CA files, the sender address, the VIP lists and the owner's rules.
    /// Settings it leaves out keep their current value.
    pub fn apply_file(&mut self, file: &aie_shared::config::EmailConfig) -> Result<(), String> {
        if let Some(dir) = &file.maildir {
            self.maildir = Some(dir.clone());
        }
        if let Some(url) = &file.smtp_url {
            let mut smtp = SmtpConfig::new(url.url().as_str().parse()?);
            smtp.password_file = file.smtp_password_file.clone();
            smtp.ca_file = file.smtp_ca_file.clone();
            self.smtp = Some(smtp);
        }
        if let Some(from) = &file.from {
            self.from = Some(from.clone());
        }
        if let Some(imap) = &file.imap {
            self.imap = Some(ImapConfig {
                host: imap.host.clone(),
                port: imap.port,
                user: imap.user.clone(),
                password_file: imap.password_file.clone(),
                mailbox: imap.mailbox.clone(),
                tls: imap.tls,
                ca_file: imap.ca_file.clone(),
            });
        }
        self.rules
            .vip_senders
            .extend(file.vip_senders.iter().cloned());
        self.rules
            .vip_domains
            .extend(file.vip_domains.iter().cloned());
        self.rules.builtin = file.builtin_rules;
        self.rules.rules.extend(file.rules.iter().cloned());
        Ok(())
    }

    /// A path as the state folder sees it: relative paths are inside it.
    pub fn in_state(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.state_dir.join(path)
        }
    }
}

/// An IMAP account read for new mail. Intake only reads (`EXAMINE`, `BODY.PEEK`): it never
/// changes a flag or a message on the server, and remembers where it stopped by UID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapConfig {
    /// Server host name.
    pub host: String,
    /// Server port (993 for TLS).
    pub port: u16,
    /// Login name.
    pub user: String,
    /// File holding the password (one line), relative to the state folder.
    pub password_file: PathBuf,
    /// Mailbox read; usually `INBOX`.
    pub mailbox: String,
    /// TLS from the first byte; `false` is accepted for a loopback server only.
    pub tls: bool,
    /// Extra trusted root certificates (PEM), for a server with a private CA.
    pub ca_file: Option<PathBuf>,
}

/// Where approved replies are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    /// The server.
    pub url: SmtpUrl,
    /// File holding the password (one line), relative to the state folder; the user name
    /// is the URL's.
    pub password_file: Option<PathBuf>,
    /// Extra trusted root certificates (PEM), for a server with a private CA.
    pub ca_file: Option<PathBuf>,
    /// Longest wait for any one step of a send.
    pub timeout: Duration,
}

impl SmtpConfig {
    /// A server at `url` with no credentials and the default timeout.
    pub fn new(url: SmtpUrl) -> Self {
        Self {
            url,
            password_file: None,
            ca_file: None,
            timeout: DEFAULT_NETWORK_TIMEOUT,
        }
    }
}

/// How an SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// No encryption (`smtp://host:port`).
    Plain,
    /// Plain connection upgraded with STARTTLS, which must succeed (`?tls=required`).
    StartTls,
    /// TLS from the first byte (`smtps://`).
    Tls,
}

/// An SMTP server URL: `smtp://host:port` (plain), `smtp://host:port?tls=required`
/// (STARTTLS) or `smtps://host:port` (TLS). A password in it is never printed: `Display` and
/// `Debug` mask it.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl(Url);

impl SmtpUrl {
    /// The server's host name or address.
    pub fn host(&self) -> &str {
        // Parsing refused URLs without a host.
        self.0.host_str().unwrap_or_default()
    }

    /// The port: the URL's, else 465 for `smtps://`, 587 for STARTTLS, 25 for plain.
    pub fn port(&self) -> u16 {
        self.0.port().unwrap_or(match self.security() {
            SmtpSecurity::Tls => 465,
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::Plain => 25,
        })
    }

    /// How the connection is protected.
    pub fn security(&self) -> SmtpSecurity {
        if self.0.scheme() == "smtps" {
            SmtpSecurity::Tls
        } else if self
            .0
            .query_pairs()
            .any(|(k, v)| k == "tls" && v == "required")
        {
            SmtpSecurity::StartTls
        } else {
            SmtpSecurity::Plain
        }
    }

    /// The user name in the URL, percent-decoded, if any.
    pub fn user(&self) -> Option<String> {
        let raw = self.0.username();
        (!raw.is_empty()).then(|| percent_decode(raw))
    }

    /// The password in the URL, percent-decoded: accepted on the command line, but a file in
    /// the state folder is the better place.
    pub fn password(&self) -> Option<String> {
        self.0.password().map(percent_decode)
    }

    /// Whether the server is on this machine (a loopback address or `localhost`).
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(self.host())
    }

    /// `host:port` with the scheme, no credentials: how the server is named in messages.
    pub fn server_name(&self) -> String {
        let scheme = match self.security() {
            SmtpSecurity::Tls => "smtps",
            _ => "smtp",
        };
        format!("{scheme}://{}:{}", self.host(), self.port())
    }
}

/// Whether `host` names this machine.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Decodes `%XX` escapes (URL user names and passwords); anything malformed stays as it is.
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl FromStr for SmtpUrl {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        // The config file's parser holds the rules (scheme, host, `tls=required` only); this
        // one only adds that a path means nothing to a mail server.
        let checked: aie_shared::config::SmtpUrl =
            raw.parse().map_err(|e: String| format!("SMTP URL: {e}"))?;
        let url = checked.url().clone();
        if url.path() != "" && url.path() != "/" {
            return Err("SMTP URL: a path means nothing here; give smtp://host:port".to_owned());
        }
        Ok(SmtpUrl(url))
    }
}

impl fmt::Display for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.clone();
        if shown.password().is_some() {
            // Only fails for URLs that cannot carry a password, and this one carries one.
            let _ = shown.set_password(Some("***"));
        }
        f.write_str(shown.as_str())
    }
}

impl fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SmtpUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triage::Priority;

    /// The three URL forms map to plain, STARTTLS and TLS with the usual default ports.
    #[test]
    fn smtp_url_forms() {
        let plain: SmtpUrl = "smtp://127.0.0.1:2525".parse().expect("plain");
        assert_eq!(plain.security(), SmtpSecurity::Plain);
        assert_eq!(plain.port(), 2525);
        let starttls: SmtpUrl = "smtp://mail.example.com?tls=required"
            .parse()
            .expect("starttls");
        assert_eq!(starttls.security(), SmtpSecurity::StartTls);
        assert_eq!(starttls.port(), 587);
        let tls: SmtpUrl = "smtps://mail.example.com".parse().expect("tls");
        assert_eq!(tls.security(), SmtpSecurity::Tls);
        assert_eq!(tls.port(), 465);
        assert!("http://x".parse::<SmtpUrl>().is_err());
        assert!("smtp://x?tls=maybe".parse::<SmtpUrl>().is_err());
    }

    /// A password in the URL never shows in `Display` or `Debug`.
    #[test]
    fn smtp_url_masks_password() {
        let url: SmtpUrl = "smtp://me%40x.org:s3cret@mail.example.com:587?tls=required"
            .parse()
            .expect("url");
        assert_eq!(url.user().as_deref(), Some("me@x.org"));
        assert_eq!(url.password().as_deref(), Some("s3cret"));
        assert!(!url.to_string().contains("s3cret"), "{url}");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(url.server_name(), "smtp://mail.example.com:587");
    }

    /// The owner's VIP lists and rules from the config file's `[email]` reach triage as
    /// written, in order, before the built-in rules.
    #[test]
    fn config_file_rules_reach_triage() {
        let text = r#"
[email]
vip_domains = ["bigclient.example"]
[[email.rules]]
name = "press"
keywords = ["press inquiry"]
category = "press"
priority = "urgent"
"#;
        let file = aie_shared::config::parse(text, Path::new("/etc/aie/aie.toml")).expect("config");
        let agent = AgentName::new("cloud").expect("agent");
        let mut config = EmailConfig::new(agent, "/tmp/state");
        config.apply_file(&file.email).expect("apply");
        let triage = |from: &str, subject: &str| {
            config.rules.apply(&crate::triage::TriageInput {
                from,
                subject,
                body: "Hello.",
                headers: Vec::new(),
            })
        };
        let press = triage("reporter@news.example", "A press inquiry about your shop");
        assert_eq!(press.category, "press");
        assert_eq!(press.priority, Priority::Urgent);
        assert!(press.reasons[0].contains("press"), "{:?}", press.reasons);
        let vip = triage("ceo@bigclient.example", "Lunch?");
        assert_eq!(vip.priority, Priority::High, "{:?}", vip.reasons);
        assert_eq!(Priority::Urgent.to_string(), "urgent");
    }
}
