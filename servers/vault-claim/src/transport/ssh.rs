//! Git over ssh by running the system `ssh`, as git itself does.
//!
//! `ssh -o BatchMode=yes [-p PORT] [-i KEY] [USER@]HOST "git-upload-pack '/path'"` runs the
//! server's git, and the protocol flows through ssh's stdin and stdout. Using OpenSSH's
//! client (rather than libssh2) means ssh-agent, `~/.ssh/config`, known hosts and
//! hardware keys all work as they do for `git`, and no second crypto library is linked.
//! BatchMode makes ssh fail instead of prompting, since nobody can answer a prompt here;
//! what ssh prints on stderr ("Permission denied (publickey)", "Host key verification
//! failed") becomes the error message.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream};

use super::{TransportConfig, TransportError};

/// How long ssh gets to exit after the conversation ends before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(10);
/// How long to wait for ssh's exit status when its output ends early.
const FAILURE_WAIT: Duration = Duration::from_secs(5);
/// The most stderr kept for an error message, in bytes.
const STDERR_LIMIT: usize = 16 * 1024;
/// The most stderr lines quoted in an error message.
const STDERR_LINES: usize = 8;

/// Where an ssh remote's repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// The login name, if the URL gives one (else ssh's default or `~/.ssh/config`).
    pub user: Option<String>,
    /// The host name or address (IPv6 without brackets).
    pub host: String,
    /// The port, if not ssh's default.
    pub port: Option<u16>,
    /// The repository's path on the server, as the server's git will see it.
    pub path: String,
}

impl SshTarget {
    /// `user@host` or `host`, as ssh takes it.
    pub fn destination(&self) -> String {
        match &self.user {
            Some(user) => format!("{user}@{}", self.host),
            None => self.host.clone(),
        }
    }
}

/// Parses `ssh://[user@]host[:port]/path` (also `ssh+git://`, `git+ssh://`) and scp-like
/// `[user@]host:path`, refusing anything ssh could mistake for an option.
pub fn parse_ssh_url(url: &str) -> Result<SshTarget, TransportError> {
    let bad = |reason: &str| TransportError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let scheme_rest = ["ssh://", "ssh+git://", "git+ssh://"]
        .iter()
        .find_map(|scheme| strip_prefix_ignore_case(url, scheme));
    let (user, host, port, path) = match scheme_rest {
        Some(rest) => {
            let Some(slash) = rest.find('/') else {
                return Err(bad("no repository path after the host"));
            };
            let (authority, path) = rest.split_at(slash);
            let (user, host_port) = split_user(authority);
            let (host, port) = split_host_port(host_port).ok_or_else(|| bad("bad host or port"))?;
            // git's convention: `ssh://host/~/repo` and `ssh://host/~user/repo` are
            // relative to a home directory, so the leading slash goes.
            let path = if path.starts_with("/~") {
                &path[1..]
            } else {
                path
            };
            (user, host, port, path)
        }
        None => {
            // scp-like: a ':' before any '/' (else it would be a local path).
            let (user, rest) = split_user_scp(url);
            let (host, path) = split_scp_host(rest).ok_or_else(|| {
                bad("not an ssh URL: expected ssh://[user@]host[:port]/path or [user@]host:path")
            })?;
            (user, host, None, path)
        }
    };
    if let Some(user) = user {
        if user.contains(':') {
            return Err(TransportError::BadUrl {
                url: redact_ssh(url),
                reason: "an ssh URL cannot carry a password; use a key (ssh-agent, \
                         ~/.ssh/config, or git-ssh-key in the state folder)"
                    .to_owned(),
            });
        }
        if user.is_empty() || user.starts_with('-') || has_unsafe_chars(user) {
            return Err(bad(
                "the user name is empty, starts with '-' or has spaces or control characters",
            ));
        }
    }
    // A host like `-oProxyCommand=…` would be read by ssh as an option (CVE-2017-1000117).
    if host.is_empty() || host.starts_with('-') || has_unsafe_chars(host) || host.contains('/') {
        return Err(bad(
            "the host is empty, starts with '-' or has spaces or control characters",
        ));
    }
    if path.is_empty() || path.chars().any(char::is_control) {
        return Err(bad(
            "the repository path is empty or has control characters",
        ));
    }
    Ok(SshTarget {
        user: user.map(str::to_owned),
        host: host.to_owned(),
        port,
        path: path.to_owned(),
    })
}

/// `s` without `prefix`, compared case-insensitively (libgit2 matches schemes that way).
fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// True if a user or host has whitespace or control characters, which ssh would split on.
fn has_unsafe_chars(s: &str) -> bool {
    s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Splits `user@rest` at the last `@` (user names may contain `@`; hosts cannot).
fn split_user(authority: &str) -> (Option<&str>, &str) {
    match authority.rsplit_once('@') {
        Some((user, rest)) => (Some(user), rest),
        None => (None, authority),
    }
}

/// Splits the user off an scp-like URL: the `@` must come before the host's `:`.
fn split_user_scp(url: &str) -> (Option<&str>, &str) {
    let host_end = url.find([':', '/']).unwrap_or(url.len());
    match url[..host_end].rfind('@') {
        Some(at) => (Some(&url[..at]), &url[at + 1..]),
        None => (None, url),
    }
}

/// Splits `host[:port]` or `[v6][:port]`; `None` if the port is not a number.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0)?),
    };
    Some((host, port))
}

/// Splits scp-like `host:path` or `[v6]:path`; `None` when there is no `:` before a `/`.
fn split_scp_host(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return Some((host, after.strip_prefix(':')?));
    }
    let colon = s.find(':')?;
    if s[..colon].contains('/') {
        return None;
    }
    Some((&s[..colon], &s[colon + 1..]))
}

/// The URL with any `user:password@` reduced to the host, for a message.
fn redact_ssh(url: &str) -> String {
    let (prefix, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{prefix}{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Quotes `s` for a POSIX shell as git does (`sq_quote_buf`): inside single quotes, with
/// `'` written as `'\''` and `!` as `'\!'` (for csh-like login shells), so the server's
/// shell passes the path to git as one word, whatever it contains.
pub fn shell_quote(s: &str) -> String {
    let mut quoted = String::with_capacity(s.len() + 2);
    quoted.push('\'');
    for c in s.chars() {
        match c {
            '\'' => quoted.push_str("'\\''"),
            '!' => quoted.push_str("'\\!'"),
            c => quoted.push(c),
        }
    }
    quoted.push('\'');
    quoted
}

/// The git program a service runs on the server.
fn service_program(service: Service) -> &'static str {
    match service {
        Service::UploadPackLs | Service::UploadPack => "git-upload-pack",
        Service::ReceivePackLs | Service::ReceivePack => "git-receive-pack",
    }
}

/// The command line for one service: the program (ssh, or `sh -c` around AIE_GIT_SSH) and
/// its arguments. Returns the command and the program's name for messages.
pub fn ssh_command(
    config: &TransportConfig,
    target: &SshTarget,
    service: Service,
) -> (Command, String) {
    let mut args: Vec<OsString> = vec!["-o".into(), "BatchMode=yes".into()];
    if let Some(port) = target.port {
        args.push("-p".into());
        args.push(port.to_string().into());
    }
    if let Some(key) = config.ssh_key_path() {
        args.push("-i".into());
        args.push(key.into_os_string());
        // Only this key: an agent holding many keys would otherwise exhaust the server's
        // MaxAuthTries before reaching it.
        args.push("-o".into());
        args.push("IdentitiesOnly=yes".into());
    }
    args.push(target.destination().into());
    args.push(format!("{} {}", service_program(service), shell_quote(&target.path)).into());
    match &config.ssh_command {
        Some(custom) => {
            // Like GIT_SSH_COMMAND: a shell command line, to which our arguments are appended.
            let mut command = Command::new("sh");
            command
                .arg("-c")
                .arg(format!("{custom} \"$@\""))
                .arg("aie-git-ssh")
                .args(args);
            (command, custom.clone())
        }
        None => {
            let mut command = Command::new("ssh");
            command.args(args);
            (command, "ssh".to_owned())
        }
    }
}

/// libgit2's handle on the ssh transport for one remote connection.
pub struct SshSubtransport {
    config: Arc<TransportConfig>,
}

impl SshSubtransport {
    /// A transport using `config` for the ssh command and key.
    pub fn new(config: Arc<TransportConfig>) -> Self {
        Self { config }
    }

    /// Starts ssh running the service's git program on the server.
    fn start(&self, url: &str, action: Service) -> Result<SshStream, TransportError> {
        let target = parse_ssh_url(url)?;
        let (mut command, program) = ssh_command(&self.config, &target, action);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|source| TransportError::SshSpawn {
            url: url.to_owned(),
            program,
            source,
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(TransportError::SshFailed {
                url: url.to_owned(),
                status: "not started".to_owned(),
                stderr: "ssh's pipes could not be opened".to_owned(),
            });
        };
        Ok(SshStream {
            url: url.to_owned(),
            child,
            stdin: Some(stdin),
            stdout,
            stderr: StderrLog::collect(stderr),
        })
    }
}

impl SmartSubtransport for SshSubtransport {
    fn action(
        &self,
        url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        match self.start(url, action) {
            Ok(stream) => Ok(Box::new(stream)),
            Err(e) => Err(e.into_git2()),
        }
    }

    fn close(&self) -> Result<(), git2::Error> {
        // The stream owns ssh and ends it when libgit2 frees the stream.
        Ok(())
    }
}

/// ssh's stderr, read on a thread so a chatty ssh never blocks on a full pipe.
struct StderrLog {
    text: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl StderrLog {
    /// Starts reading `stderr` into memory (up to [`STDERR_LIMIT`]).
    fn collect(mut stderr: impl Read + Send + 'static) -> Self {
        let text = Arc::new(Mutex::new(Vec::new()));
        let sink = text.clone();
        let reader = std::thread::Builder::new()
            .name("aie-ssh-stderr".to_owned())
            .spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    let mut text = sink.lock().unwrap_or_else(|e| e.into_inner());
                    let room = STDERR_LIMIT.saturating_sub(text.len());
                    text.extend_from_slice(&chunk[..n.min(room)]);
                }
            })
            .ok();
        Self { text, reader }
    }

    /// The last lines of stderr, once the reader has caught up (briefly waited for).
    fn summary(&self) -> String {
        if let Some(reader) = &self.reader {
            let deadline = Instant::now() + Duration::from_secs(1);
            while !reader.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let text = self.text.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let start = lines.len().saturating_sub(STDERR_LINES);
        match lines[start..].join(" / ") {
            s if s.is_empty() => "(ssh printed nothing)".to_owned(),
            s => s,
        }
    }
}

/// The protocol stream: ssh's stdout to read, its stdin to write.
struct SshStream {
    url: String,
    child: Child,
    /// `None` once closed, which tells the server's git the conversation is over.
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    stderr: StderrLog,
}

impl SshStream {
    /// The error for an ssh that stopped early, if it has exited unsuccessfully.
    fn failure(&mut self) -> Option<TransportError> {
        let status = wait_for(&mut self.child, FAILURE_WAIT)?;
        if status.success() {
            return None;
        }
        Some(TransportError::SshFailed {
            url: self.url.clone(),
            status: status.to_string(),
            stderr: self.stderr.summary(),
        })
    }
}

impl Read for SshStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.stdout.read(buf) {
            // End of output: if ssh failed (no auth, unknown host, no repository), say why
            // instead of letting libgit2 report a bare "early EOF".
            Ok(0) if !buf.is_empty() => match self.failure() {
                Some(e) => Err(e.into()),
                None => Ok(0),
            },
            Ok(n) => Ok(n),
            Err(e) => Err(self.failure().map_or(e, io::Error::from)),
        }
    }
}

impl Write for SshStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "ssh's input is closed",
            ));
        };
        match stdin.write(buf) {
            Ok(n) => Ok(n),
            // A broken pipe means ssh is gone; its exit and stderr say why.
            Err(e) => Err(self.failure().map_or(e, io::Error::from)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.stdin.as_mut() {
            Some(stdin) => stdin.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for SshStream {
    fn drop(&mut self) {
        // Closing ssh's input ends the server's git; give it time to finish (a push's
        // hooks run after the last byte we read) before killing ssh.
        drop(self.stdin.take());
        if wait_for(&mut self.child, EXIT_GRACE).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits up to `limit` for `child` to exit; `None` if it is still running.
fn wait_for(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(user: Option<&str>, host: &str, port: Option<u16>, path: &str) -> SshTarget {
        SshTarget {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        }
    }

    /// ssh:// URLs in their usual shapes, including IPv6 and git's `~` convention.
    #[test]
    fn parses_ssh_urls() {
        let parse = |u: &str| parse_ssh_url(u).expect(u);
        assert_eq!(
            parse("ssh://git@example.com/srv/vault.git"),
            target(Some("git"), "example.com", None, "/srv/vault.git")
        );
        assert_eq!(
            parse("ssh://root@127.0.0.1:2222/tmp/r.git"),
            target(Some("root"), "127.0.0.1", Some(2222), "/tmp/r.git")
        );
        assert_eq!(
            parse("SSH://[::1]:22/r.git"),
            target(None, "::1", Some(22), "/r.git")
        );
        assert_eq!(
            parse("git+ssh://h.example/~/vault.git"),
            target(None, "h.example", None, "~/vault.git")
        );
        assert_eq!(
            parse("ssh+git://h.example/~alice/vault.git"),
            target(None, "h.example", None, "~alice/vault.git")
        );
    }

    /// scp-like URLs: a colon before any slash.
    #[test]
    fn parses_scp_like_urls() {
        let parse = |u: &str| parse_ssh_url(u).expect(u);
        assert_eq!(
            parse("git@github.com:owner/vault.git"),
            target(Some("git"), "github.com", None, "owner/vault.git")
        );
        assert_eq!(
            parse("host:/abs/path.git"),
            target(None, "host", None, "/abs/path.git")
        );
        assert_eq!(
            parse("u@[::1]:r.git"),
            target(Some("u"), "::1", None, "r.git")
        );
        assert!(parse_ssh_url("./dir/with:colon").is_err());
        assert!(parse_ssh_url("host:").is_err());
    }

    /// Anything ssh could read as an option, and passwords, are refused.
    #[test]
    fn refuses_option_injection_and_passwords() {
        for url in [
            "ssh://-oProxyCommand=touch%20x/r.git",
            "-oProxyCommand=x:r.git",
            "ssh://-l@h/r.git",
            "ssh://h x/r.git",
            "ssh://h:99999/r.git",
            "ssh://h:abc/r.git",
            "ssh://h",
            "ssh://h/r\n.git",
        ] {
            assert!(parse_ssh_url(url).is_err(), "{url:?} must be refused");
        }
        let err = parse_ssh_url("ssh://alice:hunter2@h/r.git").expect_err("password");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    /// The quoted path reaches a real shell as exactly one word, whatever it contains.
    #[test]
    fn shell_quote_survives_a_real_shell() {
        for path in [
            "/plain/path.git",
            "/it's/here.git",
            "/a;rm -rf x/r.git",
            "/$(touch pwned)/`id`/r.git",
            "/bang!/r.git",
            "/sp ace/\"dq\"/r.git",
            "'",
            "",
        ] {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quote(path)))
                .output()
                .expect("run sh");
            assert_eq!(String::from_utf8_lossy(&out.stdout), path, "{path:?}");
        }
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    /// The command carries BatchMode, port, key and the quoted remote command.
    #[test]
    fn builds_the_ssh_command_line() {
        let config = TransportConfig {
            ssh_key: Some("/state/git-ssh-key".into()),
            ..TransportConfig::default()
        };
        let t = target(Some("root"), "127.0.0.1", Some(2222), "/srv/it's.git");
        let (command, program) = ssh_command(&config, &t, Service::ReceivePackLs);
        assert_eq!(program, "ssh");
        assert_eq!(command.get_program(), "ssh");
        let args: Vec<_> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "-o",
                "BatchMode=yes",
                "-p",
                "2222",
                "-i",
                "/state/git-ssh-key",
                "-o",
                "IdentitiesOnly=yes",
                "root@127.0.0.1",
                r"git-receive-pack '/srv/it'\''s.git'",
            ]
        );
    }

    /// AIE_GIT_SSH runs through `sh -c` with our arguments appended, like GIT_SSH_COMMAND.
    #[test]
    fn custom_ssh_command_gets_the_arguments() {
        let config = TransportConfig {
            ssh_command: Some("printf '%s|'".into()),
            ..TransportConfig::default()
        };
        let t = target(None, "h.example", None, "/r.git");
        let (mut command, _) = ssh_command(&config, &t, Service::UploadPackLs);
        let out = command.output().expect("run sh");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "-o|BatchMode=yes|h.example|git-upload-pack '/r.git'|"
        );
    }

    /// A failing ssh's exit status and stderr become the read error.
    #[test]
    fn stream_reports_ssh_failure_with_stderr() {
        let config = Arc::new(TransportConfig {
            ssh_command: Some("echo 'Permission denied (publickey).' >&2; exit 255; :".into()),
            ..TransportConfig::default()
        });
        let sub = SshSubtransport::new(config);
        let mut stream = sub
            .start("ssh://h.example/r.git", Service::UploadPackLs)
            .expect("start");
        let mut buf = [0u8; 64];
        let err = stream.read(&mut buf).expect_err("ssh failed");
        let text = err.to_string();
        assert!(text.contains("Permission denied (publickey)"), "{text}");
        assert!(text.contains("ssh://h.example/r.git"), "{text}");
        assert!(text.contains("255"), "{text}");
    }
}
