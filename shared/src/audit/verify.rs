//! `aie audit verify`: walks every agent's chain across its day files and names the first
//! broken record; with the state folder, also checks the log's end against the head this
//! machine remembers, so a cut-off, rewritten or foreign-extended end shows too.

use std::{
    collections::{BTreeMap, HashMap},
    fmt, fs,
    path::{Path, PathBuf},
};

use schemars::JsonSchema;
use serde::Serialize;

use super::{
    AuditError, End, GENESIS, Head, chain_fields, day_files, io_error, parse_day_file, read_heads,
    read_lossy, record_hash,
};
use crate::vault::{AgentName, Vault, layout::LOGS};

/// A line of a log file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct LineRef {
    /// The file, relative to the vault root.
    pub file: String,
    /// The line number, from 1.
    pub line: usize,
}

impl fmt::Display for LineRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// What is wrong at a chain's first broken record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// A record's content no longer matches its hash, cannot be read, or (re-hashed) no
    /// longer links to the next one.
    Edited,
    /// Records are missing: a gap in `seq`.
    Removed,
    /// Records are out of order (or repeated).
    Reordered,
    /// The log ends before the last record this machine wrote.
    Truncated,
    /// The log goes on past the last record this machine wrote: records it did not write.
    Extended,
}

impl fmt::Display for BreakKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BreakKind::Edited => "edited",
            BreakKind::Removed => "removed",
            BreakKind::Reordered => "reordered",
            BreakKind::Truncated => "truncated",
            BreakKind::Extended => "extended",
        })
    }
}

/// The first place an agent's chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ChainBreak {
    /// The file and line of the broken record (for `truncated`, the log's last record).
    pub at: LineRef,
    /// The record's `seq`, when it has one.
    pub seq: Option<u64>,
    /// What is wrong.
    pub kind: BreakKind,
    /// The details a person needs to look into it.
    pub detail: String,
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.at)?;
        if let Some(seq) = self.seq {
            write!(f, "seq {seq}: ")?;
        }
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

/// One agent's chain as `verify` found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct AgentChain {
    /// The agent (its folder under `Logs/`).
    pub agent: String,
    /// Day files read.
    pub files: usize,
    /// Records that hold, counted up to the first break.
    pub records: u64,
    /// The first broken record, if any.
    pub broken: Option<ChainBreak>,
    /// Lines left by interrupted writes; the chain continues past them, so they are no break.
    pub torn: Vec<LineRef>,
    /// Whether the log's end was compared with this machine's head (and held).
    pub head_checked: bool,
    /// Files in the folder that are not day files, left unchecked.
    pub notes: Vec<String>,
}

impl fmt::Display for AgentChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let files = if self.files == 1 { "file" } else { "files" };
        match &self.broken {
            Some(broken) => write!(f, "{}: BROKEN at {broken}", self.agent)?,
            None => {
                write!(
                    f,
                    "{}: {} records in {} {files}, chain intact",
                    self.agent, self.records, self.files
                )?;
                if self.head_checked {
                    write!(f, ", end matches this machine's head")?;
                }
            }
        }
        for torn in &self.torn {
            write!(
                f,
                "\n  {torn}: torn line from an interrupted write; the chain continues past it"
            )?;
        }
        for note in &self.notes {
            write!(f, "\n  {note}")?;
        }
        Ok(())
    }
}

/// Every agent's chain; `ok()` when none is broken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct VerifyReport {
    /// One entry per agent folder under `Logs/` (and per agent this machine has a head for).
    pub agents: Vec<AgentChain>,
    /// Entries under `Logs/` that are not agent folders, left unchecked.
    pub notes: Vec<String>,
}

impl VerifyReport {
    /// True when every chain holds.
    pub fn ok(&self) -> bool {
        self.agents.iter().all(|a| a.broken.is_none())
    }

    /// The first broken record, in agent order.
    pub fn first_break(&self) -> Option<&ChainBreak> {
        self.agents.iter().find_map(|a| a.broken.as_ref())
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.agents.is_empty() {
            writeln!(f, "no audit logs")?;
        }
        for agent in &self.agents {
            writeln!(f, "{agent}")?;
        }
        for note in &self.notes {
            writeln!(f, "{note}")?;
        }
        Ok(())
    }
}

/// How often `verify` reads the logs again when the heads changed while it read them.
const VERIFY_ATTEMPTS: usize = 5;

/// Checks every agent's chain in `vault`; with `state_dir`, also each remembered head: the
/// log of an agent this machine writes must end at its head (or, after a crash, one record
/// before it), so a record past the head is a break, whatever its chain says.
///
/// Never changes anything. An error means the logs could not be read at all; a broken chain
/// is a finding in the report. A running process may append meanwhile: the heads are read
/// before and after the logs, and the logs again if they moved, so a record written during
/// the read is never taken for a foreign one.
pub fn verify(vault: &Vault, state_dir: Option<&Path>) -> Result<VerifyReport, AuditError> {
    let Some(dir) = state_dir else {
        return verify_against(vault, None);
    };
    let mut heads = read_heads(dir)?;
    let mut attempt = 1;
    loop {
        let report = verify_against(vault, Some(&heads))?;
        let after = read_heads(dir)?;
        if after == heads || attempt == VERIFY_ATTEMPTS {
            return Ok(report);
        }
        heads = after;
        attempt += 1;
    }
}

/// [`verify`] with the heads already read.
fn verify_against(
    vault: &Vault,
    heads: Option<&BTreeMap<String, Head>>,
) -> Result<VerifyReport, AuditError> {
    let mut report = VerifyReport::default();
    let logs = vault.root().join(LOGS);
    let mut agents: BTreeMap<String, PathBuf> = BTreeMap::new();
    if fs::symlink_metadata(&logs).is_ok() && !vault.is_real_dir(&logs) {
        report.notes.push(format!(
            "{LOGS}: a link or not a folder, never followed; not checked"
        ));
    } else if vault.is_real_dir(&logs) {
        for entry in fs::read_dir(&logs).map_err(|e| io_error(&logs, e))? {
            let entry = entry.map_err(|e| io_error(&logs, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if name.starts_with('.') {
                continue;
            }
            if is_dir && AgentName::new(name.as_str()).is_ok() {
                agents.insert(name, entry.path());
            } else {
                report.notes.push(format!(
                    "{LOGS}/{name}: not an agent's log folder (a file, a link or a bad name); not checked"
                ));
            }
        }
    }
    for agent in heads.into_iter().flat_map(|h| h.keys()) {
        agents
            .entry(agent.clone())
            .or_insert_with(|| logs.join(agent));
    }
    for (agent, dir) in agents {
        let head = heads.and_then(|h| h.get(&agent));
        report.agents.push(check_agent(vault, agent, &dir, head)?);
    }
    Ok(report)
}

/// One line of an agent's log, as far as the chain is concerned.
struct Line {
    at: LineRef,
    /// Whether the line ended with a line break (a torn last write does not).
    terminated: bool,
    /// `None` when the line is no readable record.
    record: Option<Link>,
}

/// A readable record's chain fields, and whether it is what it claims.
struct Link {
    seq: u64,
    prev: Option<String>,
    hash: String,
    hash_ok: bool,
    agent: Option<String>,
}

/// Reads every line of the agent's day files, oldest file first.
fn read_lines(vault: &Vault, dir: &Path, chain: &mut AgentChain) -> Result<Vec<Line>, AuditError> {
    let mut lines = Vec::new();
    if !vault.is_real_dir(dir) {
        if fs::symlink_metadata(dir).is_ok() {
            chain
                .notes
                .push(format!("{}: a link, never followed", vault.rel(dir)));
        }
        return Ok(lines);
    }
    for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if !name.starts_with('.') && (parse_day_file(&name).is_none() || !is_file) {
            chain.notes.push(format!(
                "{}: not a day file (YYYY-MM-DD.jsonl); not checked",
                vault.rel(&entry.path())
            ));
        }
    }
    let files = day_files(dir).map_err(|e| io_error(dir, e))?;
    chain.files = files.len();
    for (_, path) in files {
        let text = read_lossy(&path)?;
        let file = vault.rel(&path);
        let mut segments: Vec<&str> = text.split('\n').collect();
        // After the final line break comes either nothing or an unterminated line.
        let last = segments.pop().unwrap_or_default();
        let count = segments.len();
        for (index, segment) in segments.into_iter().chain([last]).enumerate() {
            if segment.trim().is_empty() {
                continue;
            }
            lines.push(Line {
                at: LineRef {
                    file: file.clone(),
                    line: index + 1,
                },
                terminated: index < count,
                record: chain_fields(segment).map(|(seq, hash, value)| Link {
                    seq,
                    hash_ok: record_hash(&value) == hash,
                    prev: value
                        .get("prev")
                        .and_then(|p| p.as_str())
                        .map(str::to_owned),
                    agent: value
                        .get("agent")
                        .and_then(|a| a.as_str())
                        .map(str::to_owned),
                    hash,
                }),
            });
        }
    }
    Ok(lines)
}

/// Walks one agent's chain and compares its end with the remembered head.
fn check_agent(
    vault: &Vault,
    agent: String,
    dir: &Path,
    head: Option<&Head>,
) -> Result<AgentChain, AuditError> {
    let mut chain = AgentChain {
        agent,
        files: 0,
        records: 0,
        broken: None,
        torn: Vec::new(),
        head_checked: false,
        notes: Vec::new(),
    };
    let lines = read_lines(vault, dir, &mut chain)?;
    // Where each seq last appears, to tell a record that comes later (reordered) from one
    // that is gone (removed).
    let mut last_index: HashMap<u64, usize> = HashMap::new();
    for (index, line) in lines.iter().enumerate() {
        if let Some(link) = &line.record {
            last_index.insert(link.seq, index);
        }
    }
    let broken = |at: &LineRef, seq: Option<u64>, kind, detail: String| ChainBreak {
        at: at.clone(),
        seq,
        kind,
        detail,
    };
    let mut expected = 1u64;
    let mut prev_hash = GENESIS.to_owned();
    let mut prev_at: Option<&LineRef> = None;
    let mut hashes: Vec<(&str, &LineRef)> = Vec::new();
    let mut unreadable: Vec<&Line> = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let Some(link) = &line.record else {
            unreadable.push(line);
            continue;
        };
        let continues = link.hash_ok
            && link.seq == expected
            && link.prev.as_deref() == Some(prev_hash.as_str());
        if let Some(first) = unreadable.first() {
            if !continues {
                chain.broken = Some(broken(
                    &first.at,
                    None,
                    BreakKind::Edited,
                    "the line cannot be read as an audit record".into(),
                ));
                return Ok(chain);
            }
            // The chain goes on as if the line were not there: it never was a record.
            chain
                .torn
                .extend(unreadable.drain(..).map(|l| l.at.clone()));
        }
        let seq = Some(link.seq);
        let found = if !link.hash_ok {
            Some((
                BreakKind::Edited,
                "its content does not match its hash".to_owned(),
            ))
        } else if link.agent.as_deref() != Some(chain.agent.as_str()) {
            Some((
                BreakKind::Edited,
                format!(
                    "it names agent {:?} but is in agent `{}`'s log",
                    link.agent.as_deref().unwrap_or_default(),
                    chain.agent
                ),
            ))
        } else if link.seq > expected {
            if last_index.get(&expected).is_some_and(|at| *at > index) {
                Some((
                    BreakKind::Reordered,
                    format!("seq {expected} should come here but comes later in the log"),
                ))
            } else if link.seq == expected + 1 {
                Some((BreakKind::Removed, format!("seq {expected} is missing")))
            } else {
                Some((
                    BreakKind::Removed,
                    format!("seq {expected} to {} are missing", link.seq - 1),
                ))
            }
        } else if link.seq < expected {
            Some((
                BreakKind::Reordered,
                format!(
                    "it comes after seq {}: records are out of order or repeated",
                    expected - 1
                ),
            ))
        } else if link.prev.as_deref() != Some(prev_hash.as_str()) {
            let detail = match prev_at {
                None => "the first record's `prev` is not 64 zeros: earlier records were removed"
                    .to_owned(),
                Some(at) => format!(
                    "its `prev` is not the hash of seq {} ({at}): that record was edited and re-hashed, or replaced",
                    expected - 1
                ),
            };
            Some((BreakKind::Edited, detail))
        } else {
            None
        };
        if let Some((kind, detail)) = found {
            chain.broken = Some(broken(&line.at, seq, kind, detail));
            return Ok(chain);
        }
        chain.records += 1;
        expected += 1;
        prev_hash.clone_from(&link.hash);
        prev_at = Some(&line.at);
        hashes.push((&link.hash, &line.at));
    }
    for line in unreadable {
        if line.terminated {
            // A crash leaves the last line unterminated; a whole unreadable line at the end
            // was written or changed by someone.
            chain.broken = Some(broken(
                &line.at,
                None,
                BreakKind::Edited,
                "the line cannot be read as an audit record".into(),
            ));
            return Ok(chain);
        }
        chain.torn.push(line.at.clone());
    }
    if let Some(head) = head {
        let last_seq = expected - 1;
        let end = prev_at.cloned().unwrap_or_else(|| LineRef {
            file: vault.rel(dir),
            line: 0,
        });
        let last = (last_seq > 0).then_some(last_seq);
        // The record with `seq`, when the walk got that far (seq 0: before the first).
        let record = |seq: u64| {
            seq.checked_sub(1)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| hashes.get(i))
        };
        let hash_at_head = match head.seq {
            0 => Some(GENESIS),
            seq => record(seq).map(|(hash, _)| *hash),
        };
        match head.accepts_end(last_seq, &prev_hash, hash_at_head) {
            End::AtHead | End::OldHeadLagging => chain.head_checked = true,
            End::LineLost => {
                chain.head_checked = true;
                chain.notes.push(format!(
                    "seq {}, which this machine began, is not in the log: a crash (or a failed write) came between recording it and writing it; the next start takes the head back",
                    head.seq
                ));
            }
            End::Truncated => {
                chain.broken = Some(broken(
                    &end,
                    last,
                    BreakKind::Truncated,
                    format!(
                        "the log ends at seq {last_seq}, but this machine wrote up to seq {}: records were removed from its end",
                        head.seq
                    ),
                ));
            }
            End::Rewritten => {
                let seq = head.seq.min(last_seq);
                let at = record(seq).map_or(&end, |(_, at)| *at);
                chain.broken = Some(broken(
                    at,
                    Some(seq),
                    BreakKind::Edited,
                    "not the record this machine wrote with this seq: the log was rewritten from here on"
                        .into(),
                ));
            }
            End::Extended => {
                let first = head.seq + 1;
                let at = record(first).map_or(&end, |(_, at)| *at);
                chain.broken = Some(broken(
                    at,
                    Some(first),
                    BreakKind::Extended,
                    format!(
                        "not written by this machine: it wrote this log up to seq {}, and the log goes on to seq {last_seq}",
                        head.seq
                    ),
                ));
            }
        }
    }
    Ok(chain)
}
