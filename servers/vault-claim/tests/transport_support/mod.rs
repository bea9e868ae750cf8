//! What the https and ssh transport tests share: a bare repository seeded with git's own
//! command line, and the clone, commit and push steps they take through aie's transports.

use std::path::{Path, PathBuf};
use std::process::Command;

use aie_vault_claim::transport::{self, TransportConfig};

/// Runs `git` with `args` in `dir`, failing the test on error; returns stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
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

/// Creates the bare repository `<root>/<name>` with one seed commit on main; returns its path.
pub fn seed_bare_repo(root: &Path, name: &str) -> PathBuf {
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

/// Clones `url` into `into` through aie's transports with `config`.
pub fn clone(url: &str, into: &Path, config: &TransportConfig) -> Result<git2::Repository, String> {
    transport::register().map_err(|e| e.to_string())?;
    transport::with_config(config, || {
        git2::Repository::clone(url, into).map_err(|e| e.message().to_owned())
    })
}

/// Commits `name` with `content` on the current branch of `repo`, then pushes main to
/// origin through aie's transports with `config`.
pub fn commit_and_push(
    repo: &git2::Repository,
    config: &TransportConfig,
    name: &str,
    content: &str,
    message: &str,
) -> Result<(), String> {
    commit_file(repo, name, content, message);
    transport::with_config(config, || push_main(repo))
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
