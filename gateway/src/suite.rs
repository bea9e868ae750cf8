//! The suite's servers, one row each: the composition root's table. `aie up` hosts a zone's
//! servers from it, `aie approvals` and `aie up` find every executor's journal in it, so
//! adding a server is adding its row (and its crate): no other server and no command names
//! it.
//!
//! A row says what the server is called (`email-draft`, its backend name `email`: its
//! tools' prefix and the `[[upstream]]` name that replaces it), which zones host it, how it
//! is built for a stack (none yet: not in this build), and the journals of its executors
//! (`aie_shared::executor::JournalSpec`), read by `aie approvals list|show` for the
//! executions in doubt.

use std::{path::Path, sync::Arc};

use aie_shared::{
    Config, Metrics, ToolServer,
    approvals::Approvals,
    executor::{AuthorizedActions, InDoubt, JournalSpec, read_in_doubt},
    policy::Zone,
    vault::AgentName,
};
use aie_vault_claim::sync::Replica;
use futures::future::BoxFuture;

/// What a stack gives a server it hosts.
#[derive(Clone)]
pub struct HostContext {
    /// The zone.
    pub zone: Zone,
    /// The agent.
    pub agent: AgentName,
    /// The state folder.
    pub state: std::path::PathBuf,
    /// The whole config, overrides applied.
    pub config: Arc<Config>,
    /// The vault's replica.
    pub replica: Arc<Replica>,
    /// The registry `/metrics` shows.
    pub metrics: Metrics,
    /// What the gateway's guard hands over to the executors it hosts: the authorized
    /// payloads (`aie_shared::executor::AuthorizedActions`).
    pub actions: AuthorizedActions,
    /// The local zone's approval ledger, where an executor settles what its journal proves;
    /// none in the cloud.
    pub approvals: Option<Approvals>,
}

/// Builds one server for a stack (and settles what its journals prove, before it serves).
pub type HostFn = fn(HostContext) -> BoxFuture<'static, anyhow::Result<ToolServer>>;

/// One of the suite's servers.
#[derive(Clone, Copy)]
pub struct SuiteServer {
    /// Its name, as `aie serve` knows it: `email-draft`.
    pub name: &'static str,
    /// Its backend name in the gateway (its tools' prefix); an `[[upstream]]` of this name
    /// replaces the in-process copy.
    pub backend: &'static str,
    /// The zones whose stack hosts it.
    pub zones: &'static [Zone],
    /// How a stack builds it; `None` while it is not in this build.
    pub host: Option<HostFn>,
    /// The journals of its executors, for the executions in doubt.
    pub journals: &'static [&'static JournalSpec],
}

impl std::fmt::Debug for SuiteServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuiteServer")
            .field("name", &self.name)
            .field("backend", &self.backend)
            .field("zones", &self.zones)
            .field("built", &self.host.is_some())
            .finish()
    }
}

const BOTH: &[Zone] = &[Zone::Cloud, Zone::Local];
const LOCAL: &[Zone] = &[Zone::Local];

/// The suite. Cloud hosts vault-claim, email-draft and social-draft; local hosts all five.
pub static SERVERS: &[SuiteServer] = &[
    SuiteServer {
        name: "vault-claim",
        backend: "vault",
        zones: BOTH,
        host: Some(host_vault_claim),
        journals: &[],
    },
    SuiteServer {
        name: "email-draft",
        backend: "email",
        zones: BOTH,
        host: Some(host_email_draft),
        journals: &[&aie_email_draft::send::JOURNAL],
    },
    SuiteServer {
        name: "social-draft",
        backend: "social",
        zones: BOTH,
        host: None,
        journals: &[],
    },
    SuiteServer {
        name: "whatsapp",
        backend: "whatsapp",
        zones: LOCAL,
        host: None,
        journals: &[],
    },
    SuiteServer {
        name: "payments",
        backend: "payments",
        zones: LOCAL,
        host: None,
        journals: &[],
    },
];

/// The servers `zone`'s stack hosts.
pub fn in_zone(zone: Zone) -> impl Iterator<Item = &'static SuiteServer> {
    SERVERS.iter().filter(move |s| s.zones.contains(&zone))
}

/// Every executor's journal.
pub fn journals() -> impl Iterator<Item = &'static JournalSpec> {
    SERVERS.iter().flat_map(|s| s.journals.iter().copied())
}

/// Every execution in doubt in `state`'s journals, with the journal that holds it; a
/// journal that cannot be read or is damaged is reported by `warn`, and the rest go on.
/// Blocking.
pub fn in_doubt(state: &Path, warn: impl Fn(String)) -> Vec<(&'static JournalSpec, InDoubt)> {
    let mut out = Vec::new();
    for spec in journals() {
        match read_in_doubt(state, spec) {
            Ok((doubts, damaged)) => {
                if let Some(why) = damaged {
                    warn(format!(
                        "the {}'s {} is damaged: {why}",
                        spec.labels.server, spec.labels.journal
                    ));
                }
                out.extend(doubts.into_iter().map(|d| (spec, d)));
            }
            Err(e) => warn(format!(
                "cannot read the {}'s {} in {}: {e}",
                spec.labels.server,
                spec.labels.journal,
                state.display()
            )),
        }
    }
    out
}

/// The executor journal that carries out `tool`, if any.
pub fn journal_of(tool: &str) -> Option<&'static JournalSpec> {
    journals().find(|spec| spec.tools.contains(&tool))
}

fn host_vault_claim(cx: HostContext) -> BoxFuture<'static, anyhow::Result<ToolServer>> {
    Box::pin(async move {
        let claims = aie_vault_claim::server::VaultClaim::with_replica(cx.replica.clone());
        Ok(aie_vault_claim::server::server(claims).with_metrics(cx.metrics.clone()))
    })
}

fn host_email_draft(cx: HostContext) -> BoxFuture<'static, anyhow::Result<ToolServer>> {
    Box::pin(async move {
        let config = email_config(cx.zone, &cx.agent, &cx.state, &cx.config)?;
        let email = aie_email_draft::EmailDraft::hosted(
            cx.replica.vault().clone(),
            config,
            cx.actions.clone(),
            cx.approvals.clone(),
        )?;
        // A send the journal shows sent whose result the gateway never recorded (a crash
        // between the two) is settled in the ledger before anything else runs.
        for settled in email.sender().reconcile().await {
            tracing::info!(approval_id = %settled.approval_id, detail = %settled.detail, "settled from the send journal");
        }
        Ok(aie_email_draft::server(email).with_metrics(cx.metrics.clone()))
    })
}

/// The email-draft settings for `zone`: the cloud reads and drafts (never an SMTP server);
/// the local zone sends, through `--smtp` / `[email] smtp_url`, else to the `.eml` outbox.
fn email_config(
    zone: Zone,
    agent: &AgentName,
    state: &Path,
    config: &Config,
) -> anyhow::Result<aie_email_draft::EmailConfig> {
    let mut email = aie_email_draft::EmailConfig::new(agent.clone(), state);
    email
        .apply_file(&config.email)
        .map_err(|e| anyhow::anyhow!("[email]: {e}"))?;
    email.max_pending_approvals = config.limits.max_pending_approvals;
    match zone {
        Zone::Cloud => email.smtp = None,
        Zone::Local => {
            if let Some(smtp) = &mut email.smtp {
                // The password lives in the state folder, never in the vault or the URL.
                let default_file = state.join("smtp-password");
                if smtp.password_file.is_none() && default_file.exists() {
                    smtp.password_file = Some(default_file);
                }
            } else if let Some(url) = &config.email.smtp_url {
                email.smtp = Some(aie_email_draft::SmtpConfig::new(
                    url.url()
                        .as_str()
                        .parse()
                        .map_err(|e: String| anyhow::anyhow!("[email] smtp_url: {e}"))?,
                ));
            }
        }
    }
    Ok(email)
}
