//! What a replica accepts from the remote. The remote and the other zone are not trusted:
//! every tree a fetch brings is checked here before it is merged or checked out.
//!
//! An entry is refused when it is not a plain file or folder (a symbolic link, a submodule,
//! another mode), when its name is no safe vault name (`..`, `.git` in any case, a slash,
//! a control, bidi or invisible character, two names equal but for case), when its blob is
//! larger than [`MAX_FILE_BYTES`], and when it is a change to a path this replica writes
//! alone ([`super::writers`]). A refused change never takes effect here: the path keeps what
//! the merge base held, so the rest of the sync goes on and this replica's next push drops
//! the entry from the remote's tip.
//!
//! Only what differs from the merge base is looked at: the base was accepted already, so a
//! sync that brings 100 notes into a 10,000-note vault checks about 100 entries.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    hash::Hasher,
};

use git2::{ObjectType, Oid, Repository, Tree};

use super::{
    paths::classify,
    repo::{Entry, Files},
    report::{Refused, Zone},
    writers::{describe, roots_written_here, written_here_alone},
};
use aie_shared::vault::AgentName;

/// The largest file a replica takes from the remote. Vault notes are a few kB; an
/// attachment may be a few MB.
pub(crate) const MAX_FILE_BYTES: usize = 32 << 20;

/// The longest file or folder name most filesystems store.
const MAX_NAME_BYTES: usize = 255;

/// The git modes of a plain file (`0o100664` is an old spelling of `0o100644`).
const FILE_MODES: [i32; 3] = [0o100_644, 0o100_755, 0o100_664];
/// The git mode of a folder.
const TREE_MODE: i32 = 0o040_000;

/// Why an entry name is no safe vault name, if it is not.
pub(crate) fn name_problem(name: &[u8]) -> Option<&'static str> {
    let Ok(name) = std::str::from_utf8(name) else {
        return Some("its name is not UTF-8");
    };
    if name.is_empty() || name == "." || name == ".." {
        return Some("an unsafe name (empty, `.` or `..`)");
    }
    if name.len() > MAX_NAME_BYTES {
        return Some("a name longer than 255 bytes");
    }
    if name.contains(['/', '\\']) {
        return Some("a slash inside a name");
    }
    if name.chars().any(char::is_control) {
        return Some("a control character in its name");
    }
    if name.chars().any(is_invisible) {
        return Some("an invisible or bidi character in its name");
    }
    // `.git` in any case, also as Windows and macOS would read it: trailing dots and spaces
    // dropped, and the 8.3 short name `GIT~1`.
    let trimmed = name.trim_end_matches(['.', ' ']).to_ascii_lowercase();
    if trimmed == ".git" || trimmed == "git~1" {
        return Some("`.git` in some spelling: git's own folder");
    }
    None
}

/// Zero-width, bidi-control and other invisible formatting characters: a name holding one can
/// show a person another name than it is.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}' | '\u{3164}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF9}'..='\u{FFFB}')
}

/// Why an entry's mode is not a plain file or folder, if it is not.
fn mode_problem(mode: i32) -> Option<String> {
    match mode {
        TREE_MODE => None,
        m if FILE_MODES.contains(&m) => None,
        0o120_000 => Some("a symbolic link; a vault never holds links".to_owned()),
        0o160_000 => Some("a submodule; a vault never holds one".to_owned()),
        other => Some(format!("a special file mode {other:o}")),
    }
}

/// A path for people: the raw name bytes with anything not UTF-8 replaced.
fn shown(prefix: &str, name: &[u8]) -> String {
    format!("{prefix}{}", String::from_utf8_lossy(name))
}

/// Checks the entries of `incoming` that differ from `known` (the merge base; `None`: check
/// everything), folder by folder, and returns every refused entry.
pub(crate) fn check_tree(
    repo: &Repository,
    known: Option<&Tree<'_>>,
    incoming: &Tree<'_>,
) -> Vec<Refused> {
    let mut refused = Vec::new();
    match repo.odb() {
        Ok(odb) => check_level(repo, &odb, known, incoming, "", &mut refused),
        Err(e) => refused.push(Refused {
            path: String::new(),
            reason: format!("the object database cannot be read: {}", e.message()),
        }),
    }
    refused
}

/// [`check_tree`] for one folder, `prefix` its path with a trailing `/` (or empty).
fn check_level(
    repo: &Repository,
    odb: &git2::Odb<'_>,
    known: Option<&Tree<'_>>,
    incoming: &Tree<'_>,
    prefix: &str,
    refused: &mut Vec<Refused>,
) {
    let refuse = |refused: &mut Vec<Refused>, name: &[u8], reason: String| {
        refused.push(Refused {
            path: shown(prefix, name),
            reason,
        });
    };
    let clashing = case_clashes(known, incoming);
    for entry in incoming.iter() {
        let name = entry.name_bytes();
        let old = known.and_then(|k| k.get_name_bytes(name));
        if clashing.contains(name) {
            refuse(
                refused,
                name,
                "another name in its folder differs from it only by case".to_owned(),
            );
            continue;
        }
        if old
            .as_ref()
            .is_some_and(|o| o.id() == entry.id() && o.filemode() == entry.filemode())
        {
            continue; // As the base has it: accepted before.
        }
        if let Some(reason) = name_problem(name) {
            refuse(refused, name, reason.to_owned());
            continue;
        }
        if let Some(reason) = mode_problem(entry.filemode()) {
            refuse(refused, name, reason);
            continue;
        }
        let path = shown(prefix, name);
        if entry.filemode() == TREE_MODE {
            let Ok(subtree) = repo.find_tree(entry.id()) else {
                refuse(
                    refused,
                    name,
                    "a folder whose tree cannot be read".to_owned(),
                );
                continue;
            };
            let old_tree = old
                .filter(|o| o.kind() == Some(ObjectType::Tree))
                .and_then(|o| repo.find_tree(o.id()).ok());
            check_level(
                repo,
                odb,
                old_tree.as_ref(),
                &subtree,
                &format!("{path}/"),
                refused,
            );
            continue;
        }
        match blob_size(odb, entry.id()) {
            Some(size) if size <= MAX_FILE_BYTES => {}
            Some(size) => refuse(
                refused,
                name,
                format!("{size} bytes, over the {} MiB limit", MAX_FILE_BYTES >> 20),
            ),
            None => refuse(refused, name, "a file whose blob cannot be read".to_owned()),
        }
    }
}

/// The names of `incoming` that equal another of its names but for case (or twice the same
/// name, which git itself never writes): they would be one file on a case-insensitive disk,
/// so only the one `known` (the merge base) has is kept.
///
/// One pass hashes every name folded to lower case; only names whose hashes meet are
/// compared, so a folder of 10,000 names costs no allocation per name.
fn case_clashes(known: Option<&Tree<'_>>, incoming: &Tree<'_>) -> BTreeSet<Vec<u8>> {
    // Only a name the base did not have can make a new clash: a folder whose names the
    // base all had was accepted with them. A name written twice (git never does; a tree
    // written byte by byte can) sits next to itself in the sorted tree.
    let all_known = known.is_some_and(|k| {
        let mut previous: Option<Vec<u8>> = None;
        incoming.iter().all(|entry| {
            let name = entry.name_bytes();
            let again = previous.as_deref() == Some(name);
            previous = Some(name.to_vec());
            !again && k.get_name_bytes(name).is_some()
        })
    });
    if all_known {
        return BTreeSet::new();
    }
    let fold = |name: &[u8]| -> u64 {
        let mut hasher = std::hash::DefaultHasher::new();
        if name.is_ascii() {
            for byte in name {
                hasher.write_u8(byte.to_ascii_lowercase());
            }
        } else {
            hasher.write(String::from_utf8_lossy(name).to_lowercase().as_bytes());
        }
        hasher.finish()
    };
    let mut counts: HashMap<u64, u32> = HashMap::with_capacity(incoming.len());
    for entry in incoming.iter() {
        *counts.entry(fold(entry.name_bytes())).or_default() += 1;
    }
    let mut by_case: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for entry in incoming.iter() {
        let name = entry.name_bytes();
        if counts.get(&fold(name)).is_some_and(|n| *n > 1) {
            let lower = String::from_utf8_lossy(name).to_lowercase();
            by_case.entry(lower).or_default().push(name.to_vec());
        }
    }
    let mut clashing = BTreeSet::new();
    for names in by_case.values().filter(|names| names.len() > 1) {
        for name in names {
            let known_name = known.is_some_and(|k| k.get_name_bytes(name).is_some());
            let twice = names.iter().filter(|n| *n == name).count() > 1;
            if twice || !known_name {
                clashing.insert(name.clone());
            }
        }
    }
    clashing
}

/// A blob's size from its header, without reading it; `None` when it is no readable blob.
fn blob_size(odb: &git2::Odb<'_>, id: Oid) -> Option<usize> {
    let (size, kind) = odb.read_header(id).ok()?;
    (kind == ObjectType::Blob).then_some(size)
}

/// Whether the remote changed, since `base`, anything under the folders this replica writes
/// alone: a comparison of a few tree ids, so the common case costs nothing.
pub(crate) fn touches_own_paths(
    base: Option<&Tree<'_>>,
    remote: &Tree<'_>,
    zone: Zone,
    agent: &AgentName,
) -> bool {
    roots_written_here(zone, agent).iter().any(|root| {
        let at = |tree: &Tree<'_>| {
            tree.get_path(std::path::Path::new(root))
                .ok()
                .map(|e| (e.id(), e.filemode()))
        };
        base.and_then(at) != at(remote)
    })
}

/// Flattens a tree to the files a vault may hold: entries with a bad name or mode, and
/// folders that cannot be read, are left out (they were refused by [`check_tree`]).
pub(crate) fn plain_files(repo: &Repository, tree: &Tree<'_>) -> Files {
    let mut files = Files::new();
    add_plain(repo, tree, "", &mut files);
    files
}

/// [`plain_files`] for one folder.
fn add_plain(repo: &Repository, tree: &Tree<'_>, prefix: &str, files: &mut Files) {
    for entry in tree.iter() {
        let name = entry.name_bytes();
        if name_problem(name).is_some() {
            continue;
        }
        let path = shown(prefix, name);
        match entry.filemode() {
            TREE_MODE => {
                if let Ok(subtree) = repo.find_tree(entry.id()) {
                    add_plain(repo, &subtree, &format!("{path}/"), files);
                }
            }
            mode if FILE_MODES.contains(&mode) => {
                files.insert(
                    path,
                    Entry {
                        oid: entry.id(),
                        mode,
                    },
                );
            }
            _ => {}
        }
    }
}

/// What this replica takes of the remote's tree: `remote` with every refused change undone
/// (the path, and all under it, as `base` holds it), and with the remote's changes to the
/// paths this replica writes alone undone too. A task or approval request is one thing
/// across its folders, so a change that moves it into such a path (the cloud moving its
/// request into `Approved/`) is undone whole: it stays where the base had it.
///
/// Returns the accepted files; `refused` gains a line for each change undone.
pub(crate) fn accepted(
    base: &Files,
    remote: Files,
    zone: Zone,
    agent: &AgentName,
    refused: &mut Vec<Refused>,
) -> Files {
    let mut files = remote;
    // Undo the refused entries: whatever was at or under their path comes back from the base.
    for r in refused.iter() {
        let under = format!("{}/", r.path);
        files.retain(|path, _| path != &r.path && !path.starts_with(&under));
        for (path, entry) in base {
            if path == &r.path || path.starts_with(&under) {
                files.insert(path.clone(), *entry);
            }
        }
    }
    // One writer per path: the remote's changes to what this replica writes alone.
    let changed: Vec<String> = base
        .keys()
        .chain(files.keys())
        .filter(|path| written_here_alone(path, zone, agent))
        .filter(|path| base.get(*path) != files.get(*path))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut groups = BTreeSet::new();
    for path in &changed {
        refused.push(Refused {
            path: path.clone(),
            reason: format!("the remote changed it, but {}", describe(path)),
        });
        match classify(path) {
            Some(file) => {
                groups.insert(file.key());
            }
            None => match base.get(path) {
                Some(entry) => {
                    files.insert(path.clone(), *entry);
                }
                None => {
                    files.remove(path);
                }
            },
        }
    }
    if !groups.is_empty() {
        let in_group = |path: &String| classify(path).is_some_and(|f| groups.contains(&f.key()));
        files.retain(|path, _| !in_group(path));
        for (path, entry) in base.iter().filter(|(path, _)| in_group(path)) {
            files.insert(path.clone(), *entry);
        }
    }
    files
}

/// Drops from a merge's result what a vault never holds (links, submodules, bad names): they
/// can only come from this replica's own older history, and checking the result out without
/// them removes them from the working tree.
pub(crate) fn keep_plain(files: &mut Files, refused: &mut Vec<Refused>) {
    files.retain(|path, entry| {
        let problem = path
            .split('/')
            .find_map(|name| name_problem(name.as_bytes()).map(str::to_owned))
            .or_else(|| match entry.mode {
                m if FILE_MODES.contains(&m) => None,
                m => mode_problem(m),
            });
        match problem {
            Some(reason) => {
                refused.push(Refused {
                    path: path.clone(),
                    reason: format!("{reason} (in this vault's own history; removed)"),
                });
                false
            }
            None => true,
        }
    });
}

/// What the remote's `main`, as this vault last fetched it, holds that a replica refuses
/// (links, unsafe names, oversized files), among what differs from this vault's `main`: what
/// `aie vault check` reports. Empty for a vault that is no git repository or never fetched.
pub fn refused_on_remote(vault: &std::path::Path) -> Result<Vec<Refused>, git2::Error> {
    let repo = match Repository::open(vault) {
        Ok(repo) => repo,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let tree_at = |name: &str| -> Result<Option<Tree<'_>>, git2::Error> {
        match super::repo::ref_target(&repo, name) {
            Some(commit) => Ok(Some(repo.find_commit(commit)?.tree()?)),
            None => Ok(None),
        }
    };
    let Some(remote) = tree_at(super::repo::TRACKING)? else {
        return Ok(Vec::new());
    };
    let local = tree_at(super::repo::BRANCH)?;
    Ok(check_tree(&repo, local.as_ref(), &remote))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names a vault never takes, and ordinary ones it does.
    #[test]
    fn sync_incoming_names() {
        for bad in [
            &b""[..],
            b".",
            b"..",
            b".git",
            b".GIT",
            b".Git.",
            b".git ",
            b"GIT~1",
            b"a/b",
            b"a\\b",
            b"a\x1b[2Jb",
            b"tab\there",
            b"nul\0",
            b"\xff\xfe",
            "evil\u{202E}gpj.md".as_bytes(),
            "zero\u{200B}width".as_bytes(),
        ] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
        assert!(name_problem(&[b'a'; 256]).is_some());
        for good in [
            "t1.md",
            ".gitkeep",
            ".gitignore",
            ".github",
            "git",
            "Résumé.md",
            "日本語.md",
            "a b.md",
            "..md",
        ] {
            assert_eq!(name_problem(good.as_bytes()), None, "{good}");
        }
    }

    /// Links, submodules and special modes are refused; files and folders are not.
    #[test]
    fn sync_incoming_modes() {
        assert_eq!(mode_problem(0o100_644), None);
        assert_eq!(mode_problem(0o100_755), None);
        assert_eq!(mode_problem(0o040_000), None);
        assert!(mode_problem(0o120_000).is_some());
        assert!(mode_problem(0o160_000).is_some());
        assert!(mode_problem(0o020_000).is_some());
    }
}
