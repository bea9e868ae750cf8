//! Flags and `AIE_*` variables over the file.
//!
//! The contract's order is file < flag < environment: "Flags override the config file, and
//! `AIE_*` environment variables override both where a flag exists." clap's own `env =`
//! gives the flag precedence over the variable, the other way round, so the CLI reads the
//! variables itself with [`Overrides::from_env`] and layers them with [`Overrides::then`].

use std::{net::SocketAddr, path::PathBuf, str::FromStr};

use super::{
    error::OverrideError,
    model::{Config, GitRemote, SmtpUrl},
};
use crate::{policy::Zone, vault::AgentName};

/// Values that replace the file's: one per flag of `aie up` / `aie serve` that has a key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `--zone` / `AIE_ZONE` over `zone`.
    pub zone: Option<Zone>,
    /// `--agent` / `AIE_AGENT` over `agent`.
    pub agent: Option<AgentName>,
    /// `--vault` / `AIE_VAULT` over `vault`.
    pub vault: Option<PathBuf>,
    /// `--state` / `AIE_STATE` over `state`.
    pub state: Option<PathBuf>,
    /// `--remote` / `AIE_REMOTE` over `remote`.
    pub remote: Option<GitRemote>,
    /// `--listen` / `AIE_LISTEN` over `listen`.
    pub listen: Option<SocketAddr>,
    /// `--maildir` / `AIE_MAILDIR` over `email.maildir`.
    pub maildir: Option<PathBuf>,
    /// `--smtp` / `AIE_SMTP` over `email.smtp_url`.
    pub smtp_url: Option<SmtpUrl>,
}

/// The variables read by [`Overrides::from_env`], each standing for the flag of the same name.
pub const OVERRIDE_VARS: &[&str] = &[
    "AIE_ZONE",
    "AIE_AGENT",
    "AIE_VAULT",
    "AIE_STATE",
    "AIE_REMOTE",
    "AIE_LISTEN",
    "AIE_MAILDIR",
    "AIE_SMTP",
];

impl Overrides {
    /// The overrides in the process environment's `AIE_*` variables.
    pub fn from_env() -> Result<Self, OverrideError> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    /// The overrides in the `AIE_*` variables `lookup` finds; an empty variable counts as
    /// unset, and a bad value is an error naming the variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, OverrideError> {
        let get = |var: &'static str| lookup(var).filter(|v| !v.is_empty()).map(|v| (var, v));
        fn parse<T>(
            found: Option<(&'static str, String)>,
            parse: impl Fn(&str) -> Result<T, String>,
        ) -> Result<Option<T>, OverrideError> {
            found
                .map(|(var, value)| {
                    parse(&value).map_err(|reason| OverrideError { var, value, reason })
                })
                .transpose()
        }
        Ok(Overrides {
            zone: parse(get("AIE_ZONE"), Zone::from_str)?,
            agent: parse(get("AIE_AGENT"), |v| {
                AgentName::new(v).map_err(|e| e.to_string())
            })?,
            vault: get("AIE_VAULT").map(|(_, v)| v.into()),
            state: get("AIE_STATE").map(|(_, v)| v.into()),
            remote: parse(get("AIE_REMOTE"), GitRemote::from_str)?,
            listen: parse(get("AIE_LISTEN"), |v| {
                v.parse::<SocketAddr>()
                    .map_err(|e| format!("{e}: write IP:PORT, e.g. 127.0.0.1:8700"))
            })?,
            maildir: get("AIE_MAILDIR").map(|(_, v)| v.into()),
            smtp_url: parse(get("AIE_SMTP"), SmtpUrl::from_str)?,
        })
    }

    /// `self` with `later` laid on top: every value `later` sets wins. The contract's order
    /// is `flags.then(env)`.
    pub fn then(self, later: Overrides) -> Overrides {
        Overrides {
            zone: later.zone.or(self.zone),
            agent: later.agent.or(self.agent),
            vault: later.vault.or(self.vault),
            state: later.state.or(self.state),
            remote: later.remote.or(self.remote),
            listen: later.listen.or(self.listen),
            maildir: later.maildir.or(self.maildir),
            smtp_url: later.smtp_url.or(self.smtp_url),
        }
    }
}

impl Config {
    /// Replaces the file's values with every value `overrides` sets. Paths from flags and
    /// variables are taken as given (relative to the working directory), unlike the file's.
    pub fn apply_overrides(&mut self, overrides: &Overrides) {
        let o = overrides.clone();
        if o.zone.is_some() {
            self.zone = o.zone;
        }
        if o.agent.is_some() {
            self.agent = o.agent;
        }
        if o.vault.is_some() {
            self.vault = o.vault;
        }
        if o.state.is_some() {
            self.state = o.state;
        }
        if o.remote.is_some() {
            self.remote = o.remote;
        }
        if let Some(listen) = o.listen {
            self.listen = listen;
        }
        if o.maildir.is_some() {
            self.email.maildir = o.maildir;
        }
        if o.smtp_url.is_some() {
            self.email.smtp_url = o.smtp_url;
        }
    }
}
