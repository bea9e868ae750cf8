//! Shared set-up for the sync tests: bare remotes made with git2 in temporary folders,
//! replicas on them, seeded tasks, and readers for what is on disk and on the remote.
// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use aie_shared::vault::{AgentName, Domain, Task, TaskId};
use aie_vault_claim::sync::{Replica, Zone};
use git2::{Oid, Repository, RepositoryInitOptions};

/// A bare remote and a folder for replicas, all in one temporary folder.
pub struct Net {
    /// Keeps the temporary folder alive.
    pub dir: tempfile::TempDir,
    /// The bare remote's path.
    pub remote: PathBuf,
}

impl Net {
    /// A fresh temporary folder with an empty bare remote on `main`.
    ///
    /// In RAM (`/dev/shm`) where the machine has it: these tests make thousands of small
    /// files and fsyncs, and on a shared disk their time would measure the disk, not git.
    pub fn new() -> Self {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::Builder::new().prefix("aie-sync-").tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("tempdir");
        let remote = dir.path().join("remote.git");
        bare_remote(&remote);
        Self { dir, remote }
    }

    /// The remote as a URL string (a plain path).
    pub fn url(&self) -> String {
        self.remote.display().to_string()
    }

    /// A path where no remote exists: pointing a replica there cuts it off.
    pub fn nowhere(&self) -> String {
        self.dir.path().join("missing.git").display().to_string()
    }

    /// The vault folder for a replica named `name`.
    pub fn vault(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Opens (cloning or laying out) the replica `name` for agent `name`.
    pub fn replica(&self, name: &str, zone: Zone) -> Replica {
        Replica::open(self.vault(name), Some(&self.url()), agent(name), zone).expect("open replica")
    }

    /// The remote's `main` flattened to path → content.
    pub fn remote_files(&self) -> BTreeMap<String, Vec<u8>> {
        let repo = Repository::open(&self.remote).expect("open remote");
        let head = repo.refname_to_id("refs/heads/main").expect("remote main");
        files_at(&repo, head)
    }

    /// The remote's `main`.
    pub fn remote_head(&self) -> Oid {
        Repository::open(&self.remote)
            .expect("open remote")
            .refname_to_id("refs/heads/main")
            .expect("remote main")
    }
}

/// Makes an empty bare repository whose HEAD names `main`.
pub fn bare_remote(path: &Path) {
    let mut options = RepositoryInitOptions::new();
    options.bare(true).initial_head("main");
    Repository::init_opts(path, &options).expect("bare remote");
}

/// A valid agent name.
pub fn agent(name: &str) -> AgentName {
    AgentName::new(name).expect("agent name")
}

/// A valid task id.
pub fn task_id(raw: &str) -> TaskId {
    TaskId::new(raw).expect("task id")
}

/// Creates `n` email tasks `t000`, `t001`, ... in the replica's vault and syncs them.
pub fn seed_tasks(replica: &Replica, n: usize) -> Vec<TaskId> {
    let ids: Vec<TaskId> = (0..n).map(|i| task_id(&format!("t{i:03}"))).collect();
    replica.with_vault(|vault| {
        for id in &ids {
            let task = Task::new(id.clone(), Domain::Email, format!("Task {id}"), "Body.\n");
            vault.create_task(&task).expect("create task");
        }
    });
    let report = replica.sync().expect("seed sync");
    assert!(report.offline.is_none(), "{report:?}");
    ids
}

/// The state-folder task files on disk under `root`: id → every path holding it.
pub fn task_files(root: &Path) -> BTreeMap<String, Vec<String>> {
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut dirs: Vec<PathBuf> = Domain::ALL
        .iter()
        .map(|d| root.join("Needs_Action").join(d.as_str()))
        .collect();
    dirs.push(root.join("Done"));
    if let Ok(agents) = fs::read_dir(root.join("In_Progress")) {
        dirs.extend(agents.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    for dir in dirs {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".md").filter(|_| !name.starts_with('.')) {
                let rel = entry
                    .path()
                    .strip_prefix(root)
                    .expect("under root")
                    .display()
                    .to_string();
                found.entry(stem.to_owned()).or_default().push(rel);
            }
        }
    }
    found
}

/// The same view of a flattened tree: id → paths, for state-folder task files.
pub fn task_paths_in(files: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<String>> {
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for path in files.keys() {
        let parts: Vec<&str> = path.split('/').collect();
        let file = match parts.as_slice() {
            ["Needs_Action", domain, file] if *domain != "conflicts" => file,
            ["In_Progress", _, file] | ["Done", file] => file,
            _ => continue,
        };
        if let Some(stem) = file.strip_suffix(".md").filter(|_| !file.starts_with('.')) {
            found.entry(stem.to_owned()).or_default().push(path.clone());
        }
    }
    found
}

/// A commit's tree flattened to path → content.
pub fn files_at(repo: &Repository, commit: Oid) -> BTreeMap<String, Vec<u8>> {
    let tree = repo
        .find_commit(commit)
        .expect("commit")
        .tree()
        .expect("tree");
    let mut files = BTreeMap::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |root, entry| {
        if entry.kind() == Some(git2::ObjectType::Blob) {
            let blob = repo.find_blob(entry.id()).expect("blob");
            let name = entry.name().expect("utf-8 name");
            files.insert(format!("{root}{name}"), blob.content().to_vec());
        }
        git2::TreeWalkResult::Ok
    })
    .expect("walk");
    files
}

/// A replica's `main` (its HEAD commit).
pub fn head_of(vault: &Path) -> Oid {
    Repository::open(vault)
        .expect("open vault repo")
        .refname_to_id("refs/heads/main")
        .expect("main")
}

/// The agent holding a task on disk, from its `In_Progress/<agent>/` folder.
pub fn holder(paths: &[String]) -> Option<String> {
    paths.iter().find_map(|p| {
        p.strip_prefix("In_Progress/")
            .and_then(|rest| rest.split_once('/'))
            .map(|(agent, _)| agent.to_owned())
    })
}

/// Syncs every replica until a whole round pulls and pushes nothing (at most `rounds`).
pub fn settle(replicas: &[&Replica], rounds: usize) {
    for _ in 0..rounds {
        let mut moved = 0;
        for replica in replicas {
            let report = replica.sync().expect("settling sync");
            assert!(report.offline.is_none(), "{report:?}");
            moved += report.pushed + report.pulled;
        }
        if moved == 0 {
            return;
        }
    }
    panic!("replicas did not settle in {rounds} rounds");
}
