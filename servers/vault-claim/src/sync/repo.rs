//! Git plumbing for a replica: where the remote is, looking at it, fetching, the
//! compare-and-swap push, and trees as flat maps of path to blob.
//!
//! The push is what makes claims hold across replicas: the remote's `main` moves only from
//! the value this replica last saw to a descendant of it, in one atomic step, so of two
//! replicas pushing claims at once exactly one succeeds and the other must merge first.
//! A real git server does that compare-and-swap itself (receive-pack checks the old value
//! under a lock). libgit2's own push to a local path does not (it overwrites the ref), so for
//! paths and `file://` this module pushes by hand: objects first, then the ref with
//! `git_reference_create_matching`, which compares under the ref's lock file.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use git2::{
    AutotagOption, Direction, ErrorCode, FetchOptions, ObjectType, Oid, PushOptions, Remote,
    RemoteCallbacks, Repository, Signature, Tree,
};

/// The remote every replica syncs with.
pub(crate) const REMOTE: &str = "origin";
/// The one branch a vault lives on.
pub(crate) const BRANCH: &str = "refs/heads/main";
/// Where this replica keeps the remote's `main` as last fetched.
pub(crate) const TRACKING: &str = "refs/remotes/origin/main";
/// Fetching may move the tracking ref any way (it is ours); pushing never forces.
const FETCH_REFSPEC: &str = "+refs/heads/main:refs/remotes/origin/main";
/// No `+`: a push that is not a fast-forward is refused, never forced.
const PUSH_REFSPEC: &str = "refs/heads/main:refs/heads/main";

/// One file of a tree: its blob (or link, or submodule commit) and its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The object id.
    pub(crate) oid: Oid,
    /// The git file mode (`0o100644`, ...).
    pub(crate) mode: i32,
}

/// A tree flattened to vault-relative path (with `/`) → entry.
pub(crate) type Files = BTreeMap<String, Entry>;

/// How a remote URL is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RemoteKind {
    /// A path or `file://` URL: a bare repository on this machine.
    Local(PathBuf),
    /// `ssh://`, `https://` or scp-like: through the registered transports.
    Network,
}

/// Sorts a remote URL into local or network, or says why it is unusable.
pub(crate) fn remote_kind(url: &str) -> Result<RemoteKind, String> {
    if url.trim().is_empty() {
        return Err("it is empty".to_owned());
    }
    if url.chars().any(char::is_control) {
        return Err("it contains a control character".to_owned());
    }
    if let Some(rest) = url.strip_prefix("file://") {
        let path = rest.strip_prefix("localhost").unwrap_or(rest);
        if !path.starts_with('/') {
            return Err(
                "a file:// URL needs an absolute path, like file:///srv/vault.git".to_owned(),
            );
        }
        return Ok(RemoteKind::Local(PathBuf::from(percent_decode(path))));
    }
    if let Some((scheme, _)) = url.split_once("://") {
        return match scheme {
            "ssh" | "ssh+git" | "git+ssh" | "https" | "http" => Ok(RemoteKind::Network),
            other => Err(format!(
                "the scheme `{other}://` is not supported; use a path, file://, ssh:// or https://"
            )),
        };
    }
    // scp-like `user@host:path`: a colon before any slash, as git reads it.
    if url
        .find(':')
        .is_some_and(|colon| !url[..colon].contains('/'))
    {
        return Ok(RemoteKind::Network);
    }
    Ok(RemoteKind::Local(PathBuf::from(url)))
}

/// Decodes `%xx` escapes in a `file://` path (a space is `%20` there).
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why a look at the remote failed.
#[derive(Debug)]
pub(crate) enum ProbeError {
    /// A local remote that is a working copy, not a bare repository.
    NotBare,
    /// It could not be reached or read: the reason.
    Unreachable(String),
}

/// Looks at the remote without changing anything: its `main` (`None` while it has no
/// commits), or why it cannot be looked at.
pub(crate) fn probe(url: &str, kind: &RemoteKind) -> Result<Option<Oid>, ProbeError> {
    match kind {
        RemoteKind::Local(path) => {
            let remote = open_local(path).map_err(ProbeError::Unreachable)?;
            if !remote.is_bare() {
                return Err(ProbeError::NotBare);
            }
            Ok(remote.refname_to_id(BRANCH).ok())
        }
        RemoteKind::Network => {
            let unreachable = |e: git2::Error| ProbeError::Unreachable(e.message().to_owned());
            let mut remote = Remote::create_detached(url).map_err(unreachable)?;
            let connection = remote
                .connect_auth(Direction::Fetch, None, None)
                .map_err(unreachable)?;
            let heads = connection.list().map_err(unreachable)?;
            Ok(heads.iter().find(|h| h.name() == BRANCH).map(|h| h.oid()))
        }
    }
}

/// Opens a local remote by path, without searching parent folders.
fn open_local(path: &Path) -> Result<Repository, String> {
    if !path.exists() {
        return Err(format!("{} does not exist", path.display()));
    }
    Repository::open(path).map_err(|e| e.message().to_owned())
}

/// Fetches the remote's `main` into the tracking ref; the error is why it was unreachable.
pub(crate) fn fetch(repo: &Repository) -> Result<(), String> {
    let mut remote = repo
        .find_remote(REMOTE)
        .map_err(|e| e.message().to_owned())?;
    let mut options = FetchOptions::new();
    options.download_tags(AutotagOption::None);
    remote
        .fetch(&[FETCH_REFSPEC], Some(&mut options), Some("aie: fetch"))
        .map_err(|e| e.message().to_owned())
}

/// Why a push did not land.
#[derive(Debug)]
pub(crate) enum PushError {
    /// The remote's `main` is no longer what this replica merged with: fetch and merge first.
    Rejected(String),
    /// The remote could not be reached or written: the reason.
    Unreachable(String),
}

/// Pushes `head` to the remote's `main`, but only if `main` is still `expected` (`None`:
/// still missing) and `head` descends from it. Never forces.
pub(crate) fn push(
    repo: &Repository,
    kind: &RemoteKind,
    head: Oid,
    expected: Option<Oid>,
) -> Result<(), PushError> {
    if let Some(old) = expected.filter(|old| *old != head) {
        // The guard that makes "never force" true even if a merge was skipped by an error.
        let descends = repo.graph_descendant_of(head, old).unwrap_or(false);
        if !descends {
            return Err(PushError::Rejected(
                "local main does not contain the remote's".to_owned(),
            ));
        }
    }
    match kind {
        RemoteKind::Local(path) => push_local(repo, path, head, expected)?,
        RemoteKind::Network => push_network(repo)?,
    }
    // Record what the remote now holds, as a fetch would.
    repo.reference(TRACKING, head, true, "aie: push")
        .map_err(|e| PushError::Unreachable(e.message().to_owned()))?;
    Ok(())
}

/// The push over git's own protocol: the server compares the old value atomically, and
/// libgit2 refuses locally what is not a fast-forward of the advertised ref.
fn push_network(repo: &Repository) -> Result<(), PushError> {
    let unreachable = |e: git2::Error| PushError::Unreachable(e.message().to_owned());
    let mut remote = repo.find_remote(REMOTE).map_err(unreachable)?;
    let refused = std::cell::RefCell::new(None::<String>);
    let mut callbacks = RemoteCallbacks::new();
    callbacks.push_update_reference(|_, status| {
        if let Some(message) = status {
            *refused.borrow_mut() = Some(message.to_owned());
        }
        Ok(())
    });
    let mut options = PushOptions::new();
    options.remote_callbacks(callbacks);
    match remote.push(&[PUSH_REFSPEC], Some(&mut options)) {
        Err(e) if e.code() == ErrorCode::NotFastForward => {
            return Err(PushError::Rejected(e.message().to_owned()));
        }
        Err(e) => return Err(unreachable(e)),
        Ok(()) => {}
    }
    drop(options);
    match refused.into_inner() {
        Some(message) => Err(PushError::Rejected(message)),
        None => Ok(()),
    }
}

/// The push to a bare repository on this machine: copy the missing objects (children
/// before parents, so the remote never holds a dangling reference), then move `main` with a
/// compare-and-swap under its lock.
fn push_local(
    repo: &Repository,
    path: &Path,
    head: Oid,
    expected: Option<Oid>,
) -> Result<(), PushError> {
    let remote = open_local(path).map_err(PushError::Unreachable)?;
    if !remote.is_bare() {
        return Err(PushError::Unreachable(format!(
            "{} is not a bare repository",
            path.display()
        )));
    }
    let failed = |e: git2::Error| PushError::Unreachable(e.message().to_owned());
    copy_objects(repo, &remote, head, expected).map_err(failed)?;
    let old = expected.unwrap_or(Oid::ZERO_SHA1);
    match remote.reference_matching(BRANCH, head, true, old, "aie: push") {
        Ok(_) => {}
        // Another replica moved `main` since we looked (or holds its lock right now).
        Err(e)
            if matches!(
                e.code(),
                ErrorCode::Modified | ErrorCode::Locked | ErrorCode::Exists
            ) =>
        {
            return Err(PushError::Rejected(e.message().to_owned()));
        }
        Err(e) => return Err(failed(e)),
    }
    if expected.is_none() && remote.head().is_err() {
        // A fresh bare repository's HEAD may name another default branch; point it at ours
        // so a plain `git clone` of the remote checks out the vault.
        let _ = remote.set_head(BRANCH);
    }
    Ok(())
}

/// Copies every object reachable from `head` and missing from `to`, oldest commit first.
///
/// Each commit's tree is compared with its first parent's, so only changed subtrees are
/// visited: a claim in a 10,000-note vault copies a handful of objects.
fn copy_objects(
    from: &Repository,
    to: &Repository,
    head: Oid,
    known: Option<Oid>,
) -> Result<(), git2::Error> {
    let (from_odb, to_odb) = (from.odb()?, to.odb()?);
    let mut walk = from.revwalk()?;
    walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::REVERSE)?;
    walk.push(head)?;
    if let Some(known) = known.filter(|k| to_odb.exists(*k) && from_odb.exists(*k)) {
        walk.hide(known)?;
    }
    for id in walk {
        let id = id?;
        if to_odb.exists(id) {
            continue;
        }
        let commit = from.find_commit(id)?;
        let baseline = match commit.parent_ids().next() {
            Some(parent) => Some(from.find_commit(parent)?.tree_id()),
            None => None,
        };
        copy_tree(from, &from_odb, &to_odb, commit.tree_id(), baseline)?;
        copy_raw(&from_odb, &to_odb, id)?;
    }
    Ok(())
}

/// Copies a tree and whatever under it differs from `baseline` (a tree `to` already has).
fn copy_tree(
    from: &Repository,
    from_odb: &git2::Odb<'_>,
    to_odb: &git2::Odb<'_>,
    tree_id: Oid,
    baseline: Option<Oid>,
) -> Result<(), git2::Error> {
    if baseline == Some(tree_id) || to_odb.exists(tree_id) {
        return Ok(());
    }
    let tree = from.find_tree(tree_id)?;
    let base = match baseline {
        Some(id) => Some(from.find_tree(id)?),
        None => None,
    };
    for entry in tree.iter() {
        let old = base
            .as_ref()
            .and_then(|b| b.get_name_bytes(entry.name_bytes()));
        if old.as_ref().is_some_and(|o| o.id() == entry.id()) {
            continue;
        }
        match entry.kind() {
            Some(ObjectType::Tree) => {
                let old_tree = old
                    .filter(|o| o.kind() == Some(ObjectType::Tree))
                    .map(|o| o.id());
                copy_tree(from, from_odb, to_odb, entry.id(), old_tree)?;
            }
            Some(ObjectType::Blob) if !to_odb.exists(entry.id()) => {
                copy_raw(from_odb, to_odb, entry.id())?;
            }
            // Submodule commits live elsewhere; blobs the remote has need nothing.
            _ => {}
        }
    }
    copy_raw(from_odb, to_odb, tree_id)
}

/// Copies one object as it is.
fn copy_raw(from: &git2::Odb<'_>, to: &git2::Odb<'_>, id: Oid) -> Result<(), git2::Error> {
    let object = from.read(id)?;
    to.write(object.kind(), object.data())?;
    Ok(())
}

/// The commit a ref points at, `None` when it does not exist (yet).
pub(crate) fn ref_target(repo: &Repository, name: &str) -> Option<Oid> {
    repo.refname_to_id(name).ok()
}

/// Flattens a commit's tree (`None`: the empty tree) to path → entry.
///
/// `remote` names the remote in the error about a name that is not UTF-8.
pub(crate) fn files_of(repo: &Repository, commit: Option<Oid>) -> Result<Files, FlattenError> {
    let mut files = Files::new();
    if let Some(commit) = commit {
        let tree = repo.find_commit(commit)?.tree()?;
        flatten(repo, &tree, "", &mut files)?;
    }
    Ok(files)
}

/// Why a tree could not be flattened.
#[derive(Debug)]
pub(crate) enum FlattenError {
    /// libgit2 failed.
    Git(git2::Error),
    /// A name that is not UTF-8 (shown with the bad bytes replaced).
    NonUtf8(String),
}

impl From<git2::Error> for FlattenError {
    fn from(e: git2::Error) -> Self {
        FlattenError::Git(e)
    }
}

/// Adds `tree`'s files under `prefix` to `files`.
fn flatten(
    repo: &Repository,
    tree: &Tree<'_>,
    prefix: &str,
    files: &mut Files,
) -> Result<(), FlattenError> {
    for entry in tree.iter() {
        let name = std::str::from_utf8(entry.name_bytes()).map_err(|_| {
            FlattenError::NonUtf8(format!(
                "{prefix}{}",
                String::from_utf8_lossy(entry.name_bytes())
            ))
        })?;
        let path = format!("{prefix}{name}");
        if entry.kind() == Some(ObjectType::Tree) {
            let subtree = repo.find_tree(entry.id())?;
            flatten(repo, &subtree, &format!("{path}/"), files)?;
        } else {
            files.insert(
                path,
                Entry {
                    oid: entry.id(),
                    mode: entry.filemode(),
                },
            );
        }
    }
    Ok(())
}

/// Writes `files` as a tree (through an in-memory index, which builds every subtree).
pub(crate) fn write_files(repo: &Repository, files: &Files) -> Result<Oid, git2::Error> {
    let mut index = git2::Index::new()?;
    let zero = git2::IndexTime::new(0, 0);
    for (path, entry) in files {
        index.add(&git2::IndexEntry {
            ctime: zero,
            mtime: zero,
            dev: 0,
            ino: 0,
            mode: entry.mode as u32,
            uid: 0,
            gid: 0,
            file_size: 0,
            id: entry.oid,
            flags: 0,
            flags_extended: 0,
            path: path.as_bytes().to_vec(),
        })?;
    }
    index.write_tree_to(repo)
}

/// The signature of an agent's commits: its name, and an address that is clearly no mailbox.
pub(crate) fn signature(agent: &str) -> Result<Signature<'static>, git2::Error> {
    Signature::now(agent, &format!("{agent}@aie.invalid"))
}
