//! Real mail peers on 127.0.0.1 for the email-draft tests: aiosmtpd
//! (`tests/peers/smtp_sink.py`) with a fresh self-signed certificate, plus raw test messages.
//! The private dovecot lives in `aie_e2e::dovecot`, shared with the end-to-end tests.
#![allow(dead_code)]

use std::{
    net::{TcpListener, TcpStream},
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
