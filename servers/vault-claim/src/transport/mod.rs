//! Git over `ssh://` and `https://` without OpenSSL: aie's own transports, registered into
//! libgit2 through git2's smart-transport API.
//!
//! git2 is built without its `https` and `ssh` features, because those bring OpenSSL and
//! libssh2 as a second crypto stack beside rustls. libgit2 still speaks local paths and
//! `file://` itself; this module adds the network:
//!
//! - [`https`]: `https://` (and `http://` to loopback, for tests) as git's smart-HTTP
//!   protocol over reqwest on rustls (ring provider).
//! - [`ssh`]: `ssh://`, `ssh+git://`, `git+ssh://` and scp-like `user@host:path`, by running
//!   the system `ssh`, so ssh-agent, `~/.ssh/config` and known hosts work as with git.
//! - [`credentials`]: HTTP credentials from the local state folder (never from the vault).
//!
//! Call [`register`] once before any remote operation; it is idempotent and cheap after the
//! first call. Settings come from a [`TransportConfig`]: a process default set with
//! [`set_default_config`], or one scoped to the current thread's git calls with
//! [`with_config`]. See `specs/git-transports.md`.

pub mod credentials;
pub mod https;
pub mod ssh;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use git2::transport::Transport;

/// The environment variable naming a PEM bundle of CA certificates for `https://` remotes.
pub const ENV_CA: &str = "AIE_GIT_CA";
/// The environment variable replacing the `ssh` program, like git's `GIT_SSH_COMMAND`.
pub const ENV_SSH: &str = "AIE_GIT_SSH";
/// The file in the state folder holding HTTP credentials, one URL a line.
pub const CREDENTIALS_FILE: &str = "git-credentials";
/// The file in the state folder holding a private key for `ssh://` remotes, if any.
pub const SSH_KEY_FILE: &str = "git-ssh-key";

/// How the git transports reach remotes: where secrets live, which CAs to trust, which
/// `ssh` to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// The local state folder: `git-credentials` and `git-ssh-key` are read from here.
    /// Without it, HTTP requests carry no credentials and ssh uses only its own keys.
    pub state_dir: Option<PathBuf>,
    /// A PEM bundle of CA certificates; when set, `https://` trusts only these (like git's
    /// `http.sslCAInfo`), e.g. for a self-signed server. Without it, the system's roots.
    pub ca_file: Option<PathBuf>,
    /// A shell command run instead of `ssh` (like `GIT_SSH_COMMAND`), e.g.
    /// `ssh -o StrictHostKeyChecking=accept-new`; aie appends OpenSSH-style arguments.
    pub ssh_command: Option<String>,
    /// A private key for ssh; without it, `<state_dir>/git-ssh-key` when that file exists,
    /// else ssh's own choice (agent, `~/.ssh/config`, default keys).
    pub ssh_key: Option<PathBuf>,
    /// How long to wait for a TCP and TLS connection to an `https://` remote.
    pub connect_timeout: Duration,
    /// How long an `https://` remote may stay silent (waiting for headers or the next
    /// chunk of a body) before the operation fails.
    pub io_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            state_dir: None,
            ca_file: None,
            ssh_command: None,
            ssh_key: None,
            connect_timeout: Duration::from_secs(30),
            io_timeout: Duration::from_secs(120),
        }
    }
}

impl TransportConfig {
    /// A config for `state_dir`, with `AIE_GIT_CA` and `AIE_GIT_SSH` taken from the
    /// environment when they are set.
    pub fn from_env(state_dir: Option<PathBuf>) -> Self {
        let non_empty = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self {
            state_dir,
            ca_file: non_empty(ENV_CA).map(PathBuf::from),
            ssh_command: non_empty(ENV_SSH),
            ..Self::default()
        }
    }

    /// The credentials file in the state folder, if a state folder is configured.
    pub fn credentials_path(&self) -> Option<PathBuf> {
        self.state_dir.as_deref().map(|d| d.join(CREDENTIALS_FILE))
    }

    /// The ssh key to pass with `-i`: the configured one, else the state folder's
    /// `git-ssh-key` when it exists.
    pub fn ssh_key_path(&self) -> Option<PathBuf> {
        if let Some(key) = &self.ssh_key {
            return Some(key.clone());
        }
        let key = self.state_dir.as_deref()?.join(SSH_KEY_FILE);
        key.is_file().then_some(key)
    }
}

/// Everything that can go wrong reaching a git remote. Every message names the remote
/// without its credentials, and says what to fix where that is knowable.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The URL cannot be used by this transport.
    #[error("{url}: {reason}")]
    BadUrl {
        /// The URL, credentials removed.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A password or token was written into the remote URL itself.
    #[error(
        "{url}: the remote URL carries a password; remove it from the URL and put the line \
         `https://USER:SECRET@HOST` in `git-credentials` in the state folder (mode 0600)"
    )]
    PasswordInUrl {
        /// The URL, credentials removed.
        url: String,
    },
    /// The credentials file exists but cannot be read.
    #[error("cannot read git credentials {}: {source}", path.display())]
    CredentialsRead {
        /// The credentials file.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The credentials file can be read by other users.
    #[error(
        "git credentials {} can be read by other users (mode {mode:04o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    CredentialsMode {
        /// The credentials file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A line of the credentials file is not a URL with credentials.
    #[error(
        "git credentials {}, line {line}: expected `https://USER:SECRET@HOST[:PORT][/PATH]` \
         or `https://bearer:TOKEN@HOST`",
        path.display()
    )]
    CredentialsLine {
        /// The credentials file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
    },
    /// The configured CA bundle cannot be used.
    #[error("CA bundle {} (AIE_GIT_CA or ca_file): {detail}", path.display())]
    CaBundle {
        /// The bundle's path.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The TLS handshake failed, typically because the server's certificate is not trusted.
    #[error(
        "{url}: TLS failed: {detail}; if the server uses a private or self-signed CA, point \
         AIE_GIT_CA (or ca_file) at its PEM certificate"
    )]
    Tls {
        /// The URL, credentials removed.
        url: String,
        /// The TLS library's reason.
        detail: String,
    },
    /// The server could not be reached or the connection broke.
    #[error("{url}: cannot reach the git server: {detail}")]
    Connect {
        /// The URL, credentials removed.
        url: String,
        /// Why.
        detail: String,
    },
    /// The server wants credentials (HTTP 401).
    #[error("{url}: the git server wants credentials (HTTP 401): {detail}")]
    Unauthorized {
        /// The URL, credentials removed.
        url: String,
        /// Which credentials were sent, or where to put them.
        detail: String,
    },
    /// The server refused access (HTTP 403).
    #[error("{url}: the git server refused access (HTTP 403){detail}")]
    Forbidden {
        /// The URL, credentials removed.
        url: String,
        /// Which credentials were sent, if any.
        detail: String,
    },
    /// No repository at that URL (HTTP 404).
    #[error("{url}: no git repository there (HTTP 404); check the remote URL")]
    NotFound {
        /// The URL, credentials removed.
        url: String,
    },
    /// Any other unexpected HTTP status.
    #[error("{url}: the git server answered HTTP {status}: {body}")]
    Status {
        /// The URL, credentials removed.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the response body, for a hint.
        body: String,
    },
    /// The server does not speak git's smart HTTP protocol at that URL.
    #[error(
        "{url}: not a git smart-HTTP endpoint: got content-type `{got}`, expected `{expected}` \
         (a web page, a login portal or a dumb-HTTP server; check the URL)"
    )]
    NotSmartHttp {
        /// The URL, credentials removed.
        url: String,
        /// The content type received.
        got: String,
        /// The content type git's protocol requires.
        expected: String,
    },
    /// The ssh program could not be started.
    #[error("{url}: cannot run `{program}`: {source}; install OpenSSH's client or set AIE_GIT_SSH")]
    SshSpawn {
        /// The URL.
        url: String,
        /// The program that failed to start.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// ssh ended before the git conversation did.
    #[error("{url}: ssh failed ({status}): {stderr}")]
    SshFailed {
        /// The URL.
        url: String,
        /// How ssh exited.
        status: String,
        /// What ssh (or the remote git) printed on stderr.
        stderr: String,
    },
    /// libgit2 refused to register a transport.
    #[error("cannot register aie's git transports with libgit2: {0}")]
    Register(String),
}

impl TransportError {
    /// The same error as a git2 error, so libgit2 reports our message from the operation.
    pub fn into_git2(self) -> git2::Error {
        let code = match &self {
            Self::Unauthorized { .. } | Self::Forbidden { .. } | Self::PasswordInUrl { .. } => {
                git2::ErrorCode::Auth
            }
            Self::Tls { .. } => git2::ErrorCode::Certificate,
            Self::NotFound { .. } => git2::ErrorCode::NotFound,
            _ => git2::ErrorCode::GenericError,
        };
        git2::Error::new(code, git2::ErrorClass::Net, self.to_string())
    }
}

impl From<TransportError> for std::io::Error {
    fn from(e: TransportError) -> Self {
        std::io::Error::other(e)
    }
}

/// The URL schemes (libgit2 prefixes, without `://`) served by [`https`].
const HTTP_SCHEMES: [&str; 2] = ["https", "http"];
/// The URL schemes served by [`ssh`]; libgit2 also sends scp-like `host:path` to `ssh`.
const SSH_SCHEMES: [&str; 3] = ["ssh", "ssh+git", "git+ssh"];

/// Registers the ssh and https transports with libgit2, once per process. Every remote
/// operation in aie must call it first; later calls only return the first call's result.
pub fn register() -> Result<(), TransportError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // The https transport's TLS client needs rustls' process-wide provider.
            aie_shared::init_crypto();
            for scheme in HTTP_SCHEMES {
                register_scheme(scheme, |remote| {
                    let sub = https::HttpsSubtransport::new(current_config());
                    // Smart HTTP is stateless ("rpc"): one request per protocol step.
                    Transport::smart(remote, true, sub)
                })
                .map_err(|e| format!("{scheme}://: {}", e.message()))?;
            }
            for scheme in SSH_SCHEMES {
                register_scheme(scheme, |remote| {
                    let sub = ssh::SshSubtransport::new(current_config());
                    // ssh is one long-lived stream for the whole conversation.
                    Transport::smart(remote, false, sub)
                })
                .map_err(|e| format!("{scheme}://: {}", e.message()))?;
            }
            Ok(())
        })
        .clone()
        .map_err(TransportError::Register)
}

/// The one call into git2's `unsafe` registration, kept apart so that the crate's
/// `unsafe_code` lint can be relaxed for this function alone.
#[allow(unsafe_code)]
fn register_scheme<F>(scheme: &str, factory: F) -> Result<(), git2::Error>
where
    F: Fn(&git2::Remote<'_>) -> Result<Transport, git2::Error> + Send + Sync + 'static,
{
    // SAFETY: git2 marks registration unsafe because libgit2 appends to its global list of
    // transports without a lock, so it must not overlap another thread looking a transport
    // up (any fetch, push or clone). We register only inside `register`'s `OnceLock`, which
    // runs once and makes every other caller wait for it, and every remote operation in aie
    // calls `register` before it opens a remote, so no lookup can run concurrently. (A git2
    // remote operation that skipped `register` could race it; that is the rule to keep.)
    unsafe { git2::transport::register(scheme, factory) }
}

/// The process-wide default config, used by threads with no [`with_config`] scope.
static DEFAULT_CONFIG: RwLock<Option<Arc<TransportConfig>>> = RwLock::new(None);

thread_local! {
    /// The config scoped to this thread's git calls by [`with_config`]. libgit2 runs a
    /// transport on the thread that called fetch, push or clone, so a thread-local reaches
    /// exactly that operation, and two vaults in one process can use two state folders.
    static SCOPED_CONFIG: RefCell<Option<Arc<TransportConfig>>> = const { RefCell::new(None) };
}

/// Sets the process-wide default config; the composition root calls it once at start-up.
/// Without it, the default is [`TransportConfig::from_env`] with no state folder.
pub fn set_default_config(config: TransportConfig) {
    let mut slot = DEFAULT_CONFIG.write().unwrap_or_else(|e| e.into_inner());
    *slot = Some(Arc::new(config));
}

/// Runs `f` (which performs git operations on this thread) with `config` instead of the
/// process default, and restores the previous config afterwards, even on panic.
pub fn with_config<R>(config: &TransportConfig, f: impl FnOnce() -> R) -> R {
    /// Puts the previous scoped config back when dropped.
    struct Restore(Option<Arc<TransportConfig>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            SCOPED_CONFIG.with(|c| *c.borrow_mut() = previous);
        }
    }
    let previous = SCOPED_CONFIG.with(|c| c.borrow_mut().replace(Arc::new(config.clone())));
    let _restore = Restore(previous);
    f()
}

/// The config in force for a transport created on this thread now.
fn current_config() -> Arc<TransportConfig> {
    if let Some(scoped) = SCOPED_CONFIG.with(|c| c.borrow().clone()) {
        return scoped;
    }
    let slot = DEFAULT_CONFIG.read().unwrap_or_else(|e| e.into_inner());
    slot.clone()
        .unwrap_or_else(|| Arc::new(TransportConfig::from_env(None)))
}

/// Checks that a secret file is readable by its owner only, as ssh does for keys.
#[cfg(unix)]
fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), TransportError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TransportError::CredentialsMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Other systems have no mode bits to check.
#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &std::fs::Metadata) -> Result<(), TransportError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scoped config reaches this thread only, and the previous one comes back after.
    #[test]
    fn with_config_scopes_to_the_thread_and_restores() {
        let a = TransportConfig {
            ssh_command: Some("a".into()),
            ..TransportConfig::default()
        };
        let b = TransportConfig {
            ssh_command: Some("b".into()),
            ..TransportConfig::default()
        };
        with_config(&a, || {
            assert_eq!(current_config().ssh_command.as_deref(), Some("a"));
            with_config(&b, || {
                assert_eq!(current_config().ssh_command.as_deref(), Some("b"));
                let other = std::thread::spawn(|| current_config().ssh_command.clone());
                assert_ne!(other.join().ok().flatten().as_deref(), Some("b"));
            });
            assert_eq!(current_config().ssh_command.as_deref(), Some("a"));
        });
    }

    /// The state folder's key is used only when it exists; an explicit key always wins.
    #[test]
    fn ssh_key_comes_from_config_or_state_folder() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = TransportConfig {
            state_dir: Some(dir.path().to_path_buf()),
            ..TransportConfig::default()
        };
        assert_eq!(config.ssh_key_path(), None);
        std::fs::write(dir.path().join(SSH_KEY_FILE), "key").expect("write key");
        assert_eq!(config.ssh_key_path(), Some(dir.path().join(SSH_KEY_FILE)));
        config.ssh_key = Some(PathBuf::from("/elsewhere/key"));
        assert_eq!(config.ssh_key_path(), Some(PathBuf::from("/elsewhere/key")));
    }

    /// Registering twice is harmless: the second call returns the first's result.
    #[test]
    fn register_is_idempotent() {
        register().expect("first registration");
        register().expect("second registration");
    }

    /// Our messages survive the trip through git2's error type.
    #[test]
    fn errors_keep_their_message_as_git2_errors() {
        let e = TransportError::NotFound {
            url: "https://example.test/r.git".into(),
        }
        .into_git2();
        assert_eq!(e.code(), git2::ErrorCode::NotFound);
        assert!(e.message().contains("https://example.test/r.git"));
    }
}
