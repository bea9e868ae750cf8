//! The ssh git transport against a real OpenSSH server: a private `sshd` on 127.0.0.1 with
//! its own host key and authorized key, started by the test (as root, like CI), serving
//! bare repositories in a temporary folder through the server's `git-upload-pack` and
//! `git-receive-pack`.

mod transport_support;

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aie_vault_claim::transport::{self, TransportConfig};
use transport_support::{clone, commit_and_push, git, seed_bare_repo};

/// Where Debian's openssh-server puts the daemon (tests/run installs it).
const SSHD: &str = "/usr/sbin/sshd";

/// Options that keep the test's ssh client away from the machine's own ssh set-up.
const HERMETIC_SSH: &str = "ssh -F /dev/null -o StrictHostKeyChecking=no \
                            -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR";

/// A private sshd on 127.0.0.1; killed when dropped.
struct Sshd {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sshd {
    /// Starts sshd with a fresh host key, accepting only `authorized`'s public key.
    fn start(dir: &Path, authorized: &Path) -> Self {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install Debian's openssh-server (tests/run does)"
        );
        // sshd insists on its privilege-separation folder.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let host_key = dir.join("host_key");
        keygen(&host_key);
        let authorized_keys = dir.join("authorized_keys");
        std::fs::copy(authorized.with_extension("pub"), &authorized_keys).expect("authorized_keys");
        let port = free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\n\
                 ListenAddress 127.0.0.1\n\
                 HostKey {host_key}\n\
                 AuthorizedKeysFile {authorized_keys}\n\
                 PermitRootLogin yes\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\n\
                 PidFile none\n",
                host_key = host_key.display(),
                authorized_keys = authorized_keys.display(),
            ),
        )
        .expect("write sshd_config");
        let log = dir.join("sshd.log");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("sshd log"))
            .spawn()
            .expect("start sshd");
        let mut sshd = Self { child, port, log };
        sshd.wait_ready();
        sshd
    }

    /// Waits until sshd accepts connections, or fails with its log.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sshd exited ({status}): {}", self.log_text());
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sshd did not listen within 10 s: {}", self.log_text());
    }

    /// sshd's log so far.
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The ssh:// URL of `path` on this server, as the current user.
    fn url(&self, path: &Path) -> String {
        format!("ssh://{}@127.0.0.1:{}{}", user(), self.port, path.display())
    }
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind loopback");
    listener.local_addr().expect("local addr").port()
}

/// The current user's name (root in CI): sshd lets this user in with the test key.
fn user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Generates an ed25519 key pair without passphrase at `path` (and `path.pub`).
fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "aie-test", "-f"])
        .arg(path)
        .output()
        .expect("run ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fetches origin's main and returns the summary of its tip.
fn fetch_main(repo: &git2::Repository) -> Result<String, String> {
    let mut remote = repo.find_remote("origin").map_err(|e| e.to_string())?;
    remote
        .fetch(&["refs/heads/main:refs/remotes/origin/main"], None, None)
        .map_err(|e| e.message().to_owned())?;
    let tip = repo
        .find_reference("refs/remotes/origin/main")
        .and_then(|r| r.peel_to_commit())
        .map_err(|e| e.to_string())?;
    Ok(tip.summary().ok().flatten().unwrap_or_default().to_owned())
}

/// A state folder holding `key` as its `git-ssh-key`, and a config using it with the
/// hermetic ssh command (as AIE_GIT_SSH would give it).
fn state_with_key(dir: &Path, key: &Path) -> TransportConfig {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let target = state.join(transport::SSH_KEY_FILE);
    std::fs::copy(key, &target).expect("copy key");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    TransportConfig {
        state_dir: Some(state),
        ssh_command: Some(HERMETIC_SSH.to_owned()),
        ..TransportConfig::default()
    }
}

/// Clone, push and fetch over ssh:// with the key from the state folder: a push from one
/// replica reaches the bare repository and is fetched by another.
#[test]
fn push_and_fetch_over_ssh_with_the_state_folder_key() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();
    let key = root.join("client_key");
    keygen(&key);
    let sshd = Sshd::start(root, &key);
    let bare = seed_bare_repo(root, "vault.git");
    let url = sshd.url(&bare);
    let config = state_with_key(root, &key);

    let cloud = clone(&url, &root.join("cloud"), &config)
        .unwrap_or_else(|e| panic!("clone over ssh: {e}\nsshd: {}", sshd.log_text()));
    assert!(root.join("cloud/Dashboard.md").exists(), "seed checked out");
    let local = clone(&url, &root.join("local"), &config).expect("second clone");

    commit_and_push(
        &cloud,
        &config,
        "Updates/note.md",
        "from the cloud\n",
        "cloud note",
    )
    .expect("push over ssh");
    assert_eq!(
        git(&bare, &["log", "-1", "--format=%s", "main"]),
        "cloud note",
        "the push reached the bare repository"
    );

    let fetched = transport::with_config(&config, || fetch_main(&local)).expect("fetch over ssh");
    assert_eq!(fetched, "cloud note");
}

/// scp-like `user@host:path` URLs reach the ssh transport too, and a path with a quote, a
/// semicolon and spaces arrives at the server's git intact (quoted, never run).
#[test]
fn scp_like_url_and_a_path_that_needs_quoting() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();
    let key = root.join("client_key");
    keygen(&key);
    let sshd = Sshd::start(root, &key);
    let bare = seed_bare_repo(root, "it's; touch pwned $(id).git");
    // scp-like URLs have no port, so the port rides in the ssh command, as users do in
    // ~/.ssh/config.
    let mut config = state_with_key(root, &key);
    config.ssh_command = Some(format!("{HERMETIC_SSH} -p {}", sshd.port));
    let url = format!("{}@127.0.0.1:{}", user(), bare.display());

    let repo = clone(&url, &root.join("work"), &config)
        .unwrap_or_else(|e| panic!("clone over scp-like ssh: {e}\nsshd: {}", sshd.log_text()));
    commit_and_push(&repo, &config, "Done/t.md", "done\n", "quoted path works")
        .expect("push over ssh");
    assert_eq!(
        git(&bare, &["log", "-1", "--format=%s", "main"]),
        "quoted path works"
    );
    assert!(!root.join("pwned").exists() && !Path::new("pwned").exists());
}

/// A key the server does not accept fails with ssh's own message and the URL.
#[test]
fn wrong_key_fails_with_ssh_message() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();
    let key = root.join("client_key");
    keygen(&key);
    let wrong = root.join("wrong_key");
    keygen(&wrong);
    let sshd = Sshd::start(root, &key);
    let bare = seed_bare_repo(root, "vault.git");
    let url = sshd.url(&bare);
    let config = TransportConfig {
        ssh_command: Some(HERMETIC_SSH.to_owned()),
        ssh_key: Some(wrong),
        ..TransportConfig::default()
    };
    let err = clone(&url, &root.join("c"), &config)
        .err()
        .expect("a key sshd does not accept must fail");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(err.contains(&url), "{err}");
    assert!(err.contains("ssh failed"), "{err}");
}

/// A repository missing on the server fails with the server git's own message.
#[test]
fn missing_repository_over_ssh_names_the_path() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();
    let key = root.join("client_key");
    keygen(&key);
    let sshd = Sshd::start(root, &key);
    let url = sshd.url(&root.join("nothing-here.git"));
    let config = state_with_key(root, &key);
    let err = clone(&url, &root.join("c"), &config)
        .err()
        .expect("no repository there");
    assert!(err.contains("nothing-here.git"), "{err}");
    assert!(err.contains("ssh failed"), "{err}");
}
