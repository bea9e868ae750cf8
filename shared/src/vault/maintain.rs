//! `init`, `check` and `repair`: laying out a vault, finding what breaks its invariants, and
//! fixing only what is safe to fix. Nothing here deletes or rewrites a task or approval file;
//! the one thing `repair` removes is a temporary file that a crash left and that holds nothing
//! the task beside it does not.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt, fs,
    io::{self, Write},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Serialize;

use super::{
    AgentName, ApprovalId, Domain, TaskId, Vault, VaultError, fsio,
    layout::{
        DASHBOARD, DASHBOARD_SEED, GITIGNORE_LINES, IN_PROGRESS, NEEDS_ACTION, PENDING_APPROVAL,
        PLANS, README,
    },
    store::{Place, stem_id},
    task::now,
};

/// How old a temporary file must be, besides its writer being gone, before `repair` may take
/// it for abandoned: a claim's write lasts milliseconds, and the age also covers a writer in
/// another PID namespace (a container sharing the vault) whose PID means nothing here.
const ABANDONED_AFTER: Duration = Duration::from_secs(60);

/// The marker file that makes git keep an empty folder.
const GITKEEP: &str = ".gitkeep";

/// The comment heading the `.gitignore` that `init` writes.
const GITIGNORE_HEADER: &str = "# aie: secrets never enter a commit (contract invariant 5).\n";

/// Something `check` found; `repair` fixes the [`Finding::repairable`] ones and lists the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// A folder of the layout is missing.
    MissingFolder {
        /// The folder, relative to the vault root.
        path: String,
    },
    /// A secret-keeping line is missing from `.gitignore`.
    MissingGitignoreLine {
        /// The line.
        line: String,
    },
    /// `Dashboard.md` is missing.
    MissingDashboard,
    /// A task or approval file that cannot be read.
    BrokenFile {
        /// The file.
        path: String,
        /// Why, naming the field where there is one.
        error: String,
    },
    /// One task id in more than one place.
    DuplicateTask {
        /// The task.
        id: TaskId,
        /// Every file carrying it.
        paths: Vec<String>,
    },
    /// One approval id in more than one place.
    DuplicateApproval {
        /// The request.
        id: ApprovalId,
        /// Every file carrying it.
        paths: Vec<String>,
    },
    /// A file under a domain folder whose front matter names another domain.
    DomainMismatch {
        /// The file.
        path: String,
        /// The domain its folder says.
        folder: Domain,
        /// The domain its front matter says.
        front_matter: Domain,
    },
    /// An approval request whose `task_id` names no task.
    OrphanedApproval {
        /// The request's file.
        path: String,
        /// The task it names.
        task_id: TaskId,
    },
    /// An approval request whose payload no longer matches its hash: it may never run.
    ApprovalHashMismatch {
        /// The request's file.
        path: String,
    },
    /// A folder under `In_Progress/` whose name is not a valid agent name.
    BadAgentFolder {
        /// The folder.
        path: String,
    },
    /// A symbolic link inside the vault's folders: never followed, never a task.
    Symlink {
        /// The link.
        path: String,
    },
    /// A temporary file left by an interrupted write.
    LeftoverTempFile {
        /// The file.
        path: String,
    },
    /// A temporary file left by a claim's (or release's) rewrite that a crash interrupted:
    /// its writer is gone, and it differs from the whole task file beside it only in
    /// `owner`, `claimed_at` and `lease_until`, so it holds no work. `repair` removes it.
    AbandonedClaimTemp {
        /// The temporary file.
        path: String,
        /// The task file beside it, which stays as it is.
        task: String,
    },
    /// A claim whose lease ran out.
    StaleLease {
        /// The task's file.
        path: String,
        /// The agent whose folder holds it.
        owner: AgentName,
        /// When the lease ended.
        lease_until: DateTime<Utc>,
    },
}

impl Finding {
    /// Whether `repair` can fix this without deleting or rewriting anyone's file.
    pub fn repairable(&self) -> bool {
        matches!(
            self,
            Finding::MissingFolder { .. }
                | Finding::MissingGitignoreLine { .. }
                | Finding::MissingDashboard
                | Finding::AbandonedClaimTemp { .. }
        )
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::MissingFolder { path } => write!(f, "{path}/: folder missing"),
            Finding::MissingGitignoreLine { line } => {
                write!(
                    f,
                    ".gitignore: line `{line}` missing, so such secrets could be committed"
                )
            }
            Finding::MissingDashboard => write!(f, "{DASHBOARD}: missing"),
            Finding::BrokenFile { path, error } => write!(f, "{path}: {error}"),
            Finding::DuplicateTask { id, paths } => {
                write!(
                    f,
                    "task `{id}` is in more than one place: {}",
                    paths.join(", ")
                )
            }
            Finding::DuplicateApproval { id, paths } => write!(
                f,
                "approval `{id}` is in more than one place: {}",
                paths.join(", ")
            ),
            Finding::DomainMismatch {
                path,
                folder,
                front_matter,
            } => write!(
                f,
                "{path}: in the {folder} folder but its front matter says domain {front_matter}"
            ),
            Finding::OrphanedApproval { path, task_id } => {
                write!(
                    f,
                    "{path}: names task `{task_id}`, which is in no task folder"
                )
            }
            Finding::ApprovalHashMismatch { path } => {
                write!(
                    f,
                    "{path}: payload does not match payload_sha256; it will never run"
                )
            }
            Finding::BadAgentFolder { path } => {
                write!(
                    f,
                    "{path}/: not a valid agent name, so its tasks are ignored"
                )
            }
            Finding::Symlink { path } => {
                write!(f, "{path}: symbolic link; the vault never follows links")
            }
            Finding::LeftoverTempFile { path } => {
                write!(f, "{path}: temporary file left by an interrupted write")
            }
            Finding::AbandonedClaimTemp { path, task } => write!(
                f,
                "{path}: temporary file of a claim a crash interrupted; {task} is whole and \
                 this copy differs only in owner and lease"
            ),
            Finding::StaleLease {
                path,
                owner,
                lease_until,
            } => write!(f, "{path}: claim by `{owner}` went stale at {lease_until}"),
        }
    }
}

/// What `repair` did and what it left for a human.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct RepairReport {
    /// Findings fixed.
    pub fixed: Vec<Finding>,
    /// Findings left as they are, for a human to resolve.
    pub left: Vec<Finding>,
}

impl Vault {
    /// Lays out a vault at `root` (created if missing): folders with a `.gitkeep`, a
    /// `.gitignore` that keeps secrets out, a README for Obsidian users, `Dashboard.md`.
    /// Running it again changes nothing; existing files are never replaced.
    pub fn init(root: impl Into<PathBuf>) -> Result<Self, VaultError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| VaultError::Io {
            path: root.display().to_string(),
            source: e,
        })?;
        let vault = Self::open(root)?;
        for dir in Self::layout_dirs() {
            skip_refused(vault.ensure_folder(&dir))?;
        }
        skip_refused(vault.ensure_gitignore())?;
        skip_refused(vault.ensure_file(Path::new("README.md"), README))?;
        skip_refused(vault.ensure_file(Path::new(DASHBOARD), DASHBOARD_SEED))?;
        Ok(vault)
    }

    /// Checks the vault's invariants and lists what is wrong; changes nothing.
    pub fn check(&self) -> Result<Vec<Finding>, VaultError> {
        let mut findings = self.check_layout()?;
        let task_ids = self.check_tasks(&mut findings)?;
        self.check_approvals(&task_ids, &mut findings)?;
        self.check_strays(&mut findings)?;
        for lease in self.stale_leases(now())? {
            findings.push(Finding::StaleLease {
                path: lease.path,
                owner: lease.owner,
                lease_until: lease.lease_until,
            });
        }
        Ok(findings)
    }

    /// Fixes the safe findings (missing folders, `.gitignore` lines, `Dashboard.md`, the
    /// temporary files of interrupted claims) and lists the rest; never deletes, moves or
    /// rewrites a task or approval file.
    pub fn repair(&self) -> Result<RepairReport, VaultError> {
        let mut report = RepairReport::default();
        for finding in self.check()? {
            if finding.repairable() {
                self.fix(&finding)?;
                report.fixed.push(finding);
            } else {
                report.left.push(finding);
            }
        }
        Ok(report)
    }

    /// Applies the fix for one repairable finding.
    fn fix(&self, finding: &Finding) -> Result<(), VaultError> {
        match finding {
            Finding::MissingFolder { path } => self.ensure_folder(Path::new(path)),
            Finding::MissingGitignoreLine { .. } => self.ensure_gitignore(),
            Finding::MissingDashboard => self.ensure_file(Path::new(DASHBOARD), DASHBOARD_SEED),
            Finding::AbandonedClaimTemp { path, .. } => {
                let temp = self.root.join(path);
                self.check_file_path(&temp).map_err(|e| self.io(&temp, e))?;
                match fs::remove_file(&temp) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(self.io(&temp, e)),
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// Creates a layout folder and its `.gitkeep` when missing.
    fn ensure_folder(&self, relative: &Path) -> Result<(), VaultError> {
        let dir = self.root.join(relative);
        self.make_dir(&dir).map_err(|e| self.io(&dir, e))?;
        self.ensure_file(&relative.join(GITKEEP), "")
    }

    /// Creates a file with `contents` unless one exists already.
    fn ensure_file(&self, relative: &Path, contents: &str) -> Result<(), VaultError> {
        let path = self.root.join(relative);
        if fs::symlink_metadata(&path).is_ok() {
            return Ok(());
        }
        // Create-only even so: another process may make it between the look and the write.
        match self.write_new_file(&path, contents.as_bytes()) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(self.io(&path, e)),
            _ => Ok(()),
        }
    }

    /// The secret-keeping lines missing from `.gitignore` (all of them if it is missing).
    fn missing_gitignore_lines(&self) -> Result<Vec<&'static str>, VaultError> {
        let path = self.gitignore_path();
        let text = match self.read_plain_file(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            // A linked `.gitignore` is not ours to read or extend; `check` names the link.
            Err(e) if super::nofollow::refusal(&e).is_some() => return Ok(Vec::new()),
            Err(e) => return Err(self.io(&path, e)),
        };
        let present: BTreeSet<&str> = text.lines().map(str::trim).collect();
        Ok(GITIGNORE_LINES
            .iter()
            .copied()
            .filter(|line| !present.contains(line))
            .collect())
    }

    /// Appends the missing secret-keeping lines to `.gitignore`, keeping what is there.
    fn ensure_gitignore(&self) -> Result<(), VaultError> {
        let missing = self.missing_gitignore_lines()?;
        if missing.is_empty() {
            return Ok(());
        }
        let path = self.gitignore_path();
        let existing = self.read_plain_file(&path).unwrap_or_default();
        let mut addition = String::new();
        if existing.is_empty() {
            addition.push_str(GITIGNORE_HEADER);
        } else if !existing.ends_with(b"\n") {
            addition.push('\n');
        }
        for line in missing {
            addition.push_str(line);
            addition.push('\n');
        }
        let mut file = self.open_append(&path).map_err(|e| self.io(&path, e))?;
        file.write_all(addition.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| self.io(&path, e))
    }

    /// Missing folders, `.gitignore` lines and `Dashboard.md`.
    fn check_layout(&self) -> Result<Vec<Finding>, VaultError> {
        let mut findings: Vec<_> = Self::layout_dirs()
            .into_iter()
            .filter(|dir| !self.root.join(dir).is_dir())
            .map(|dir| Finding::MissingFolder {
                path: self.rel(&self.root.join(dir)),
            })
            .collect();
        for line in self.missing_gitignore_lines()? {
            findings.push(Finding::MissingGitignoreLine {
                line: line.to_owned(),
            });
        }
        if !self.root.join(DASHBOARD).is_file() {
            findings.push(Finding::MissingDashboard);
        }
        Ok(findings)
    }

    /// Broken task files, domain mismatches, duplicates and bad agent folders; returns every
    /// task id present (broken files included, by file name, so their approvals are not
    /// called orphans).
    fn check_tasks(&self, findings: &mut Vec<Finding>) -> Result<BTreeSet<TaskId>, VaultError> {
        let mut places: BTreeMap<TaskId, Vec<String>> = BTreeMap::new();
        for (place, path) in self.task_files(None)? {
            if let Ok(id) = stem_id(&path) {
                places.entry(id).or_default().push(self.rel(&path));
            }
            match self.load_found(&path) {
                Err(broken) => findings.push(Finding::BrokenFile {
                    path: broken.path,
                    error: broken.error,
                }),
                Ok(task) => match place {
                    Place::NeedsAction(folder) if folder != task.meta.domain => {
                        findings.push(Finding::DomainMismatch {
                            path: self.rel(&path),
                            folder,
                            front_matter: task.meta.domain,
                        })
                    }
                    _ => {}
                },
            }
        }
        for (id, paths) in &places {
            // Looked at again: a task moving during the scan can show up twice once.
            if paths.len() > 1 && self.locate(id)?.len() > 1 {
                findings.push(Finding::DuplicateTask {
                    id: id.clone(),
                    paths: paths.clone(),
                });
            }
        }
        self.check_agent_folders(findings)?;
        Ok(places.into_keys().collect())
    }

    /// Folders under `In_Progress/` that are not valid agent names.
    fn check_agent_folders(&self, findings: &mut Vec<Finding>) -> Result<(), VaultError> {
        let root = self.in_progress_root();
        // A linked `In_Progress` is named by `check_strays`; what lies behind it is not ours.
        if !self.is_real_dir(&root) {
            return Ok(());
        }
        let Ok(entries) = fs::read_dir(&root) else {
            return Ok(());
        };
        for entry in entries {
            let entry = entry.map_err(|e| self.io(&root, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_dir = entry.file_type().map_err(|e| self.io(&root, e))?.is_dir();
            if is_dir && AgentName::new(name.as_str()).is_err() {
                findings.push(Finding::BadAgentFolder {
                    path: format!("{IN_PROGRESS}/{name}"),
                });
            }
        }
        Ok(())
    }

    /// Broken, tampered, duplicated and orphaned approval requests.
    fn check_approvals(
        &self,
        task_ids: &BTreeSet<TaskId>,
        findings: &mut Vec<Finding>,
    ) -> Result<(), VaultError> {
        let mut places: BTreeMap<ApprovalId, Vec<String>> = BTreeMap::new();
        for (folder_domain, dir) in self.approval_folders() {
            for path in self.markdown_files(&dir)? {
                let rel = self.rel(&path);
                match self.load_approval_found(&path) {
                    Err(error) => findings.push(Finding::BrokenFile { path: rel, error }),
                    Ok(request) => {
                        let meta = &request.meta;
                        if !request.hash_matches() {
                            findings.push(Finding::ApprovalHashMismatch { path: rel.clone() });
                        }
                        if let Some(folder) = folder_domain.filter(|d| *d != meta.domain) {
                            findings.push(Finding::DomainMismatch {
                                path: rel.clone(),
                                folder,
                                front_matter: meta.domain,
                            });
                        }
                        if let Some(task_id) =
                            meta.task_id.as_ref().filter(|t| !task_ids.contains(t))
                        {
                            findings.push(Finding::OrphanedApproval {
                                path: rel.clone(),
                                task_id: task_id.clone(),
                            });
                        }
                        places
                            .entry(meta.approval_id.clone())
                            .or_default()
                            .push(rel);
                    }
                }
            }
        }
        for (id, paths) in places {
            if paths.len() > 1 {
                findings.push(Finding::DuplicateApproval { id, paths });
            }
        }
        Ok(())
    }

    /// Reads an approval file found by a scan, checking its id against its file name.
    fn load_approval_found(&self, path: &Path) -> Result<super::ApprovalRequest, String> {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let id = ApprovalId::new(stem)
            .map_err(|e| format!("file name is not a valid approval id: {e}"))?;
        let request = self.read_approval_file(path).map_err(|e| e.detail())?;
        if request.meta.approval_id != id {
            return Err(format!(
                "front matter says approval_id `{}` but the file name says `{id}`",
                request.meta.approval_id
            ));
        }
        Ok(request)
    }

    /// Symbolic links, and temporary files left by an interrupted write, in any vault folder.
    fn check_strays(&self, findings: &mut Vec<Finding>) -> Result<(), VaultError> {
        let mut dirs: Vec<PathBuf> = vec![self.root.clone()];
        for parent in [NEEDS_ACTION, PLANS, PENDING_APPROVAL] {
            dirs.push(self.root.join(parent));
        }
        dirs.extend(Self::layout_dirs().into_iter().map(|d| self.root.join(d)));
        let agent_dirs: Vec<PathBuf> = self
            .agents()?
            .iter()
            .map(|a| self.in_progress_dir(a))
            .collect();
        dirs.extend(agent_dirs.iter().cloned());
        for dir in dirs {
            // A linked folder is named from its parent's listing; its target is not looked into.
            if !self.is_real_dir(&dir) {
                continue;
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let entry = entry.map_err(|e| self.io(&dir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = self.rel(&entry.path());
                if entry.file_type().is_ok_and(|t| t.is_symlink()) {
                    findings.push(Finding::Symlink { path });
                } else if name.starts_with('.') && name.ends_with(fsio::TEMP_SUFFIX) {
                    let abandoned = agent_dirs
                        .contains(&dir)
                        .then(|| self.abandoned_claim_temp(&dir, &name))
                        .flatten();
                    findings.push(match abandoned {
                        Some(task) => Finding::AbandonedClaimTemp { path, task },
                        None => Finding::LeftoverTempFile { path },
                    });
                }
            }
        }
        Ok(())
    }
}

impl Vault {
    /// The task file beside a temporary file in an agent's folder, when that temporary file is
    /// a claim's rewrite that a crash left: its writer is gone, and it is the same task as the
    /// whole file beside it apart from `owner`, `claimed_at` and `lease_until`. Anything else
    /// (a completion's note, a file that does not parse, a live writer) is `None`.
    fn abandoned_claim_temp(&self, dir: &Path, name: &str) -> Option<String> {
        let (target, pid) = temp_target(name)?;
        let temp = dir.join(name);
        let modified = fs::symlink_metadata(&temp).ok()?.modified().ok()?;
        let old = SystemTime::now()
            .duration_since(modified)
            .is_ok_and(|age| age >= ABANDONED_AFTER);
        if !old || !writer_gone(pid) {
            return None;
        }
        let task_path = dir.join(target);
        let id = stem_id(&task_path).ok()?;
        let task = self.load(&task_path, &id).ok()?;
        let copy = self.load(&temp, &id).ok()?;
        let unclaimed = |mut t: super::Task| {
            t.meta.clear_claim();
            t
        };
        (unclaimed(task) == unclaimed(copy)).then(|| self.rel(&task_path))
    }
}

/// A layout step that the link guard refused counts as done: a linked folder or file is
/// left as it is (never followed, never replaced) and `check` names it, so a link in the
/// tree never stops a replica from starting.
fn skip_refused(step: Result<(), VaultError>) -> Result<(), VaultError> {
    match step {
        Err(VaultError::Refused(refused)) => {
            tracing::warn!(%refused, "vault layout: left as it is");
            Ok(())
        }
        other => other,
    }
}

/// The file a temporary file `.<name>.<pid>.<n>.tmp` was to become, and its writer's PID.
fn temp_target(temp_name: &str) -> Option<(&str, u32)> {
    let inner = temp_name
        .strip_prefix('.')?
        .strip_suffix(fsio::TEMP_SUFFIX)?;
    let mut parts = inner.rsplitn(3, '.');
    let _n: u64 = parts.next()?.parse().ok()?;
    let pid: u32 = parts.next()?.parse().ok()?;
    let target = parts.next().filter(|t| t.ends_with(".md"))?;
    Some((target, pid))
}

/// Whether the process that wrote a temporary file has ended. Only Linux can tell (from
/// `/proc`); elsewhere a writer is taken to be alive, so nothing is removed.
fn writer_gone(pid: u32) -> bool {
    if pid == std::process::id() {
        return false;
    }
    cfg!(any(target_os = "linux", target_os = "android"))
        && Path::new("/proc/self").exists()
        && !Path::new("/proc").join(pid.to_string()).exists()
}
