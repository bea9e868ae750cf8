//! Real mail peers on 127.0.0.1 for the email-draft tests: Debian's dovecot (IMAP over TLS)
//! and aiosmtpd (`tests/peers/smtp_sink.py`), each with a fresh self-signed certificate, plus
//! raw test messages.
#![allow(dead_code)]

use std::{
    net::{TcpListener, TcpStream},
    os::unix::fs::{PermissionsExt, chown},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use aie_email_draft::{EmailConfig, EmailDraft};
use aie_shared::vault::{AgentName, Vault};

/// A free port on 127.0.0.1 (bound and released; the peer binds it right after).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Waits until something accepts on `port`.
fn wait_for_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    panic!("{what} did not listen on port {port} within 20 s; its log:\n{log}");
}

/// A self-signed certificate for `localhost` and 127.0.0.1: (cert PEM, key PEM) written in `dir`.
pub fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("certificate");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("key");
    (cert, key)
}

/// A vault and a state folder in a temporary directory, and the server on them.
pub struct Setup {
    /// Holds the folders.
    pub dir: tempfile::TempDir,
    /// The vault.
    pub vault: Vault,
    /// The state folder.
    pub state: PathBuf,
    /// The Maildir (`new/`, `cur/`, `tmp/` made).
    pub maildir: PathBuf,
}

impl Setup {
    /// A laid-out vault, an empty state folder and an empty Maildir.
    pub fn new() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::init(dir.path().join("vault")).expect("vault");
        let state = dir.path().join("state");
        let maildir = dir.path().join("Maildir");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
        }
        Setup {
            dir,
            vault,
            state,
            maildir,
        }
    }

    /// The default config for agent `cloud`, reading the Maildir.
    pub fn config(&self) -> EmailConfig {
        let mut config = EmailConfig::new(AgentName::new("cloud").expect("agent"), &self.state);
        config.maildir = Some(self.maildir.clone());
        config
    }

    /// The server with `config`.
    pub fn server(&self, config: EmailConfig) -> EmailDraft {
        EmailDraft::new(self.vault.clone(), config).expect("server")
    }

    /// Delivers `raw` as `new/<name>`, as mbsync does (written in tmp/, renamed into new/).
    pub fn deliver(&self, name: &str, raw: &[u8]) {
        let tmp = self.maildir.join("tmp").join(name);
        std::fs::write(&tmp, raw).expect("write");
        std::fs::rename(&tmp, self.maildir.join("new").join(name)).expect("deliver");
    }

    /// Names in a Maildir subfolder, sorted.
    pub fn names(&self, sub: &str) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(self.maildir.join(sub))
            .expect("read")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The task files in `Needs_Action/email/`.
    pub fn email_tasks(&self) -> Vec<PathBuf> {
        let dir = self.vault.root().join("Needs_Action/email");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("read")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .collect();
        files.sort();
        files
    }
}

/// A plain test mail.
pub fn mail(id: Option<&str>, from: &str, subject: &str, body: &str) -> Vec<u8> {
    let mut raw = format!(
        "From: {from}\r\nTo: Owner <owner@example.com>\r\nSubject: {subject}\r\nDate: Fri, 31 Jan 2025 10:00:00 +0000\r\n"
    );
    if let Some(id) = id {
        raw.push_str(&format!("Message-ID: <{id}>\r\n"));
    }
    raw.push_str(&format!("\r\n{body}\r\n"));
    raw.into_bytes()
}

/// The Python that has aiosmtpd: `AIE_PYTHON`, which `tests/run` sets.
pub fn python() -> PathBuf {
    match std::env::var_os("AIE_PYTHON") {
        Some(p) => p.into(),
        None => panic!(
            "AIE_PYTHON is not set: run the suite with `bash tests/run`, which installs aiosmtpd (tests/peers/requirements.txt)"
        ),
    }
}

/// A running aiosmtpd that writes what it receives to a folder; stopped when dropped.
pub struct SmtpSink {
    child: Child,
    /// Its port.
    pub port: u16,
    /// Where it writes messages.
    pub out: PathBuf,
}

impl SmtpSink {
    /// Starts the sink; `tls` = (cert, key) enables and requires STARTTLS; `auth` = "user:pass".
    pub fn start(dir: &Path, tls: Option<(&Path, &Path)>, auth: Option<&str>) -> SmtpSink {
        Self::start_on(free_port(), dir, tls, auth)
    }

    /// Starts the sink on `port`.
    pub fn start_on(
        port: u16,
        dir: &Path,
        tls: Option<(&Path, &Path)>,
        auth: Option<&str>,
    ) -> SmtpSink {
        let out = dir.join(format!("received-{port}"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/smtp_sink.py");
        let mut cmd = Command::new(python());
        cmd.arg(script)
            .args(["--port", &port.to_string(), "--dir"])
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some((cert, key)) = tls {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if let Some(auth) = auth {
            cmd.args(["--auth", auth]);
        }
        let child = cmd.spawn().expect("start smtp_sink.py");
        wait_for_port(port, "aiosmtpd", Path::new("/dev/null"));
        SmtpSink { child, port, out }
    }

    /// The messages received so far: (envelope JSON, raw bytes), in arrival order.
    pub fn messages(&self) -> Vec<(serde_json::Value, String)> {
        let mut out = Vec::new();
        for n in 1.. {
            let eml = self.out.join(format!("{n}.eml"));
            if !eml.exists() {
                break;
            }
            let envelope =
                std::fs::read_to_string(self.out.join(format!("{n}.json"))).expect("json");
            out.push((
                serde_json::from_str(&envelope).expect("envelope"),
                std::fs::read_to_string(eml).expect("eml"),
            ));
        }
        out
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The uid the IMAP test user's mail belongs to: dovecot refuses root (uid 0) for mail.
const MAIL_UID: u32 = 65534;

/// A private dovecot (IMAP over TLS only) on 127.0.0.1 with user `test`; stopped when dropped.
pub struct Dovecot {
    child: Child,
    /// Holds its files.
    pub root: tempfile::TempDir,
    /// Its IMAPS port.
    pub port: u16,
    /// The trusted certificate (PEM).
    pub cert: PathBuf,
    /// The user's Maildir.
    pub maildir: PathBuf,
    log: PathBuf,
}

/// The dovecot binary, or a clear failure naming the install step.
fn dovecot_bin() -> PathBuf {
    for candidate in ["/usr/sbin/dovecot", "/usr/local/sbin/dovecot"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("dovecot is not installed: `apt-get install dovecot-imapd` (tests/run does it)");
}

impl Dovecot {
    /// Starts dovecot as root with a temporary config: the master runs as root, logins as
    /// `dovenull`, internal processes as `dovecot` (the users the Debian package makes), and
    /// the test user's mail as uid 65534, since dovecot serves no mail as root.
    pub fn start() -> Dovecot {
        let bin = dovecot_bin();
        let root = tempfile::Builder::new()
            .prefix("aie-dovecot-")
            .tempdir()
            .expect("tempdir");
        // Dovecot's unprivileged processes must reach the files below.
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let r = root.path();
        let (cert, key) = certificate(r);
        let maildir = r.join("mail/test");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
        }
        for dir in [
            r.join("mail"),
            maildir.clone(),
            maildir.join("new"),
            maildir.join("cur"),
            maildir.join("tmp"),
        ] {
            chown(&dir, Some(MAIL_UID), Some(MAIL_UID)).expect("chown");
        }
        std::fs::set_permissions(r.join("mail"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let passwd = r.join("passwd");
        std::fs::write(
            &passwd,
            format!(
                "test:{{PLAIN}}secret:{MAIL_UID}:{MAIL_UID}::{}\n",
                maildir.display()
            ),
        )
        .expect("passwd");
        std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let port = free_port();
        let log = r.join("dovecot.log");
        let conf = r.join("dovecot.conf");
        let base = r.join("run");
        std::fs::write(
            &conf,
            format!(
                "protocols = imap
listen = 127.0.0.1
base_dir = {base}
state_dir = {base}/state
log_path = {log}
info_log_path = {log}
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
mail_location = maildir:{mail}/%u
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
auth_mechanisms = plain
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {passwd}
}}
userdb {{
  driver = static
  args = uid={MAIL_UID} gid={MAIL_UID} home={mail}/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
",
                base = base.display(),
                log = log.display(),
                cert = cert.display(),
                key = key.display(),
                mail = r.join("mail").display(),
                passwd = passwd.display(),
            ),
        )
        .expect("conf");
        let child = Command::new(bin)
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start dovecot");
        wait_for_port(port, "dovecot", &log);
        Dovecot {
            child,
            root,
            port,
            cert,
            maildir,
            log,
        }
    }

    /// Delivers `raw` into the user's `new/`, owned by the mail user.
    pub fn deliver(&self, name: &str, raw: &[u8]) {
        let tmp = self.maildir.join("tmp").join(name);
        std::fs::write(&tmp, raw).expect("write");
        chown(&tmp, Some(MAIL_UID), Some(MAIL_UID)).expect("chown");
        std::fs::rename(&tmp, self.maildir.join("new").join(name)).expect("deliver");
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // SIGTERM, so the master stops its login and mail processes too (SIGKILL would
        // orphan them).
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
