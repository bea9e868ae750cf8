//! The ssh git transport against a real OpenSSH server: a private `sshd` on 127.0.0.1 with
//! its own host key and authorized key, started by the test (as root, like CI), serving
//! bare repositories in a temporary folder through the server's `git-upload-pack` and
//! `git-receive-pack`.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aie_vault_claim::transport::{self, TransportConfig};

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

/// Runs `git` with `args` in `dir`, failing the test on error; returns stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Creates the bare repository `<root>/<name>` with one seed commit on main.
fn seed_bare_repo(root: &Path, name: &str) -> PathBuf {
    git(root, &["init", "--quiet", "--bare", "-b", "main", name]);
    let seed = root.join(format!("seed-{}", name.len()));
    git(
        root,
        &[
            "init",
            "--quiet",
            "-b",
            "main",
            seed.to_str().expect("utf-8"),
        ],
    );
    std::fs::write(seed.join("Dashboard.md"), "# Dashboard\n").expect("write seed");
    git(&seed, &["add", "."]);
    git(
        &seed,
        &[
            "-c",
            "user.name=seed",
            "-c",
            "user.email=seed@example.test",
            "commit",
            "--quiet",
            "-m",
            "seed",
        ],
    );
    let bare = root.join(name);
    git(
        &seed,
        &["push", "--quiet", bare.to_str().expect("utf-8"), "main"],
    );
    bare
}

/// Commits `name` with `content` on the current branch of `repo`.
fn commit_file(repo: &git2::Repository, name: &str, content: &str, message: &str) {
    let path = repo.workdir().expect("work tree").join(name);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("create folders");
    std::fs::write(&path, content).expect("write file");
    let mut index = repo.index().expect("index");
    index.add_path(Path::new(name)).expect("add");
    index.write().expect("write index");
    let tree = repo
        .find_tree(index.write_tree().expect("tree"))
        .expect("find tree");
    let parent = repo.head().expect("head").peel_to_commit().expect("commit");
    let sig = git2::Signature::now("agent", "agent@example.test").expect("signature");
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &[&parent])
        .expect("commit");
}

/// Pushes main to origin; a ref the server refused is an error too.
fn push_main(repo: &git2::Repository) -> Result<(), String> {
    let mut remote = repo.find_remote("origin").map_err(|e| e.to_string())?;
    let refused = std::cell::RefCell::new(None);
    let mut callbacks = git2::RemoteCallbacks::new();
    callbacks.push_update_reference(|name, status| {
        if let Some(status) = status {
            *refused.borrow_mut() = Some(format!("{name}: {status}"));
        }
        Ok(())
    });
    let mut options = git2::PushOptions::new();
    options.remote_callbacks(callbacks);
    remote
        .push(&["refs/heads/main:refs/heads/main"], Some(&mut options))
        .map_err(|e| e.message().to_owned())?;
    drop(options);
    match refused.into_inner() {
        Some(refusal) => Err(refusal),
        None => Ok(()),
    }
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

/// Clones `url` into `into` through aie's transports with `config`.
fn clone(url: &str, into: &Path, config: &TransportConfig) -> Result<git2::Repository, String> {
    transport::register().map_err(|e| e.to_string())?;
    transport::with_config(config, || {
        git2::Repository::clone(url, into).map_err(|e| e.message().to_owned())
    })
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

    commit_file(&cloud, "Updates/note.md", "from the cloud\n", "cloud note");
    transport::with_config(&config, || push_main(&cloud)).expect("push over ssh");
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
    commit_file(&repo, "Done/t.md", "done\n", "quoted path works");
    transport::with_config(&config, || push_main(&repo)).expect("push over ssh");
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
