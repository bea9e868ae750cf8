//! Finding, reading and listing tasks. Reading never changes a file: a task whose front
//! matter is broken is reported with the reason and left exactly as it is.

use std::{
    fs,
    path::{Path, PathBuf},
};

use schemars::JsonSchema;
use serde::Serialize;

use super::{AgentName, Domain, Task, TaskFolder, TaskId, Vault, VaultError, nofollow};

/// Which tasks to list; `None` means all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only this state folder.
    pub folder: Option<TaskFolder>,
    /// Only this domain (from the front matter).
    pub domain: Option<Domain>,
}

/// One line of a task listing: the contract's `{id, folder, domain, owner, title}`, plus path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct TaskSummary {
    /// The task's id.
    pub id: TaskId,
    /// Its state folder.
    pub folder: TaskFolder,
    /// Its domain.
    pub domain: Domain,
    /// The agent holding it (its `In_Progress/` folder) or that finished it.
    pub owner: Option<AgentName>,
    /// Its title.
    pub title: String,
    /// Its file, relative to the vault root.
    pub path: String,
}

/// A file that could not be read as a task; it is reported and left untouched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct BrokenFile {
    /// The file, relative to the vault root.
    pub path: String,
    /// Why it could not be read, naming the field where there is one.
    pub error: String,
}

/// The tasks found, and the files that could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct TaskListing {
    /// Readable tasks, ordered by folder, domain and id.
    pub tasks: Vec<TaskSummary>,
    /// Unreadable task files.
    pub broken: Vec<BrokenFile>,
}

/// One task read from the vault, with where it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredTask {
    /// Its state folder.
    pub folder: TaskFolder,
    /// The agent holding it, when it is in `In_Progress/`.
    pub holder: Option<AgentName>,
    /// Its file, relative to the vault root.
    pub path: String,
    /// Front matter and body.
    pub task: Task,
}

/// Where in the lifecycle a task file sits, as its folder says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
    /// `Needs_Action/<domain>/`.
    NeedsAction(Domain),
    /// `In_Progress/<agent>/`.
    InProgress(AgentName),
    /// `Done/`.
    Done,
}

/// A task file and its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    /// Its place in the lifecycle.
    pub(crate) place: Place,
    /// Its absolute path.
    pub(crate) path: PathBuf,
}

impl Location {
    /// The state folder of this place.
    pub(crate) fn folder(&self) -> TaskFolder {
        match self.place {
            Place::NeedsAction(_) => TaskFolder::NeedsAction,
            Place::InProgress(_) => TaskFolder::InProgress,
            Place::Done => TaskFolder::Done,
        }
    }

    /// The agent whose folder holds it.
    pub(crate) fn holder(&self) -> Option<&AgentName> {
        match &self.place {
            Place::InProgress(agent) => Some(agent),
            _ => None,
        }
    }
}

/// The file's stem as a task id, or why it is not one.
pub(crate) fn stem_id(path: &Path) -> Result<TaskId, String> {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    TaskId::new(stem).map_err(|e| format!("file name is not a valid task id: {e}"))
}

impl Vault {
    /// Whether `dir` is a folder of this vault reached without following any symbolic link:
    /// a synced vault is untrusted input, and a link could point a folder anywhere.
    pub(crate) fn is_real_dir(&self, dir: &Path) -> bool {
        nofollow::is_plain_dir(&self.root, dir)
    }

    /// Makes `dir` (inside this vault) and any missing parents, refusing to create anything
    /// through a symbolic link: every existing part must be a real folder. Returns whether
    /// `dir` is now a real folder of the vault.
    pub(crate) fn create_real_dir(&self, dir: &Path) -> std::io::Result<bool> {
        match self.make_dir(dir) {
            Ok(()) => Ok(true),
            Err(e) if nofollow::refusal(&e).is_some() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether `path` is a regular file (not a link) in a real folder of this vault.
    pub(crate) fn is_plain_file(&self, path: &Path) -> bool {
        nofollow::is_plain_file(&self.root, path)
    }

    /// The visible markdown files of a vault folder, sorted; a missing or linked folder has
    /// none. Hidden files (temporary writes, `.gitkeep`) and links are not tasks.
    pub fn markdown_files(&self, dir: &Path) -> Result<Vec<PathBuf>, VaultError> {
        nofollow::plain_files(&self.root, dir, ".md").map_err(|e| self.io(dir, e))
    }

    /// The agents with a real folder under a real `In_Progress/`: an entry's own type is read,
    /// so a link is never taken for a folder (folders that are no valid name are skipped here
    /// and reported by `check`).
    pub(crate) fn agents(&self) -> Result<Vec<AgentName>, VaultError> {
        let root = self.in_progress_root();
        if !self.is_real_dir(&root) {
            return Ok(Vec::new());
        }
        let mut agents = Vec::new();
        for entry in fs::read_dir(&root).map_err(|e| self.io(&root, e))? {
            let entry = entry.map_err(|e| self.io(&root, e))?;
            let is_dir = entry.file_type().map_err(|e| self.io(&root, e))?.is_dir();
            if let (true, Ok(agent)) = (is_dir, AgentName::new(entry.file_name().to_string_lossy()))
            {
                agents.push(agent);
            }
        }
        agents.sort();
        Ok(agents)
    }

    /// Every file carrying this task id, in any state folder (normally one).
    pub(crate) fn locate(&self, id: &TaskId) -> Result<Vec<Location>, VaultError> {
        let name = id.file_name();
        let mut candidates: Vec<_> = Domain::ALL
            .into_iter()
            .map(|d| (Place::NeedsAction(d), self.needs_action_dir(d).join(&name)))
            .collect();
        for agent in self.agents()? {
            let path = self.in_progress_dir(&agent).join(&name);
            candidates.push((Place::InProgress(agent), path));
        }
        candidates.push((Place::Done, self.done_dir().join(&name)));
        Ok(candidates
            .into_iter()
            .filter(|(_, path)| self.is_plain_file(path))
            .map(|(place, path)| Location { place, path })
            .collect())
    }

    /// The one place of a task, or why there is not exactly one.
    pub(crate) fn locate_one(&self, id: &TaskId) -> Result<Location, VaultError> {
        let mut locations = self.locate(id)?;
        if locations.len() != 1 {
            // The folders are looked at one after another, so a task moving meanwhile can
            // be seen twice or not at all; a second look tells a move from a real problem.
            std::thread::yield_now();
            locations = self.locate(id)?;
        }
        match locations.len() {
            0 => Err(VaultError::TaskNotFound { id: id.clone() }),
            1 => Ok(locations.remove(0)),
            _ => Err(self.duplicate(id, &locations)),
        }
    }

    /// The error for a task found in several places.
    pub(crate) fn duplicate(&self, id: &TaskId, locations: &[Location]) -> VaultError {
        VaultError::DuplicateTask {
            id: id.clone(),
            paths: locations.iter().map(|l| self.rel(&l.path)).collect(),
        }
    }

    /// Reads and parses a task file, checking that its front matter's id is `id`.
    pub(crate) fn load(&self, path: &Path, id: &TaskId) -> Result<Task, VaultError> {
        let bytes = self.read_plain_file(path).map_err(|e| self.io(path, e))?;
        self.parse_task(path, id, &bytes)
    }

    /// Parses a task file's bytes read from `path`, checking its id against `id`.
    pub(crate) fn parse_task(
        &self,
        path: &Path,
        id: &TaskId,
        bytes: &[u8],
    ) -> Result<Task, VaultError> {
        let text = std::str::from_utf8(bytes).map_err(|_| VaultError::BadFrontMatter {
            path: self.rel(path),
            reason: "the file is not UTF-8 text".to_owned(),
        })?;
        let task = Task::parse(text).map_err(|reason| VaultError::BadFrontMatter {
            path: self.rel(path),
            reason,
        })?;
        if &task.meta.id != id {
            return Err(VaultError::IdMismatch {
                path: self.rel(path),
                found: task.meta.id.to_string(),
                expected: id.to_string(),
            });
        }
        Ok(task)
    }

    /// Reads one task: front matter and body, and where it is.
    pub fn read_task(&self, id: &TaskId) -> Result<StoredTask, VaultError> {
        let location = self.locate_one(id)?;
        let task = match location.holder() {
            Some(agent) => self.load_held(&location.path, id, agent)?,
            None => self.load(&location.path, id)?,
        };
        Ok(StoredTask {
            folder: location.folder(),
            holder: location.holder().cloned(),
            path: self.rel(&location.path),
            task,
        })
    }

    /// Every task file in the chosen state folders, with its place (unparsed).
    pub(crate) fn task_files(
        &self,
        folder: Option<TaskFolder>,
    ) -> Result<Vec<(Place, PathBuf)>, VaultError> {
        let wanted = |f: TaskFolder| folder.is_none_or(|only| only == f);
        let mut dirs = Vec::new();
        if wanted(TaskFolder::NeedsAction) {
            for domain in Domain::ALL {
                dirs.push((Place::NeedsAction(domain), self.needs_action_dir(domain)));
            }
        }
        if wanted(TaskFolder::InProgress) {
            for agent in self.agents()? {
                let dir = self.in_progress_dir(&agent);
                dirs.push((Place::InProgress(agent), dir));
            }
        }
        if wanted(TaskFolder::Done) {
            dirs.push((Place::Done, self.done_dir()));
        }
        let mut files = Vec::new();
        for (place, dir) in dirs {
            let found = self.markdown_files(&dir)?;
            files.extend(found.into_iter().map(|path| (place.clone(), path)));
        }
        Ok(files)
    }

    /// Reads one task file found by a scan: the task, or the reason it is broken.
    pub(crate) fn load_found(&self, path: &Path) -> Result<Task, BrokenFile> {
        let broken = |error: String| BrokenFile {
            path: self.rel(path),
            error,
        };
        let id = stem_id(path).map_err(broken)?;
        self.load(path, &id).map_err(|e| broken(e.detail()))
    }

    /// Lists tasks by state folder and domain; unreadable files are listed apart, untouched.
    pub fn list_tasks(&self, filter: TaskFilter) -> Result<TaskListing, VaultError> {
        let mut listing = TaskListing::default();
        for (place, path) in self.task_files(filter.folder)? {
            let task = match self.load_found(&path) {
                Ok(task) => task,
                Err(broken) => {
                    listing.broken.push(broken);
                    continue;
                }
            };
            if filter.domain.is_some_and(|d| d != task.meta.domain) {
                continue;
            }
            let location = Location { place, path };
            listing.tasks.push(TaskSummary {
                folder: location.folder(),
                // The folder is the truth about who holds a task; the field may lag behind.
                owner: location.holder().cloned().or(task.meta.owner),
                id: task.meta.id,
                domain: task.meta.domain,
                title: task.meta.title,
                path: self.rel(&location.path),
            });
        }
        listing
            .tasks
            .sort_by(|a, b| (a.folder, a.domain, &a.id).cmp(&(b.folder, b.domain, &b.id)));
        Ok(listing)
    }

    /// Adds a new task to `Needs_Action/<domain>/`; refused if its id exists anywhere.
    pub fn create_task(&self, task: &Task) -> Result<String, VaultError> {
        let id = &task.meta.id;
        if let Some(existing) = self.locate(id)?.first() {
            return Err(VaultError::AlreadyExists {
                path: self.rel(&existing.path),
            });
        }
        let dir = self.needs_action_dir(task.meta.domain);
        self.make_dir(&dir).map_err(|e| self.io(&dir, e))?;
        let path = dir.join(id.file_name());
        let text = task.render().map_err(|reason| VaultError::Encode {
            path: self.rel(&path),
            reason,
        })?;
        self.write_new_file(&path, text.as_bytes())
            .map_err(|e| self.exists_or_io(&path, e))?;
        Ok(self.rel(&path))
    }
}
