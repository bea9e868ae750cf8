//! What every session and request of the gateway shares: the backends, their naming, the
//! guard, the catalog of what they serve, the merged server info, and which backend runs
//! which task.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::{Duration, Instant},
};

use aie_shared::rmcp::model::{
    Implementation, Prompt, Resource, ResourceTemplate, ServerCapabilities, ServerConfig, Tool,
};
use futures::future::join_all;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{
    backend::Backend,
    catalog::{Catalog, Conflict, Naming},
    guard::{CallGuard, ClientIdentity},
    lists::{ListKind, Page, list_pages},
};

/// The most task ids remembered for routing `tasks/*`.
const MAX_TASK_ROUTES: usize = 10_000;
/// The most legacy session owners remembered; past it the record starts over (each
/// session's next call then goes through rmcp once, which notes its owner again).
const MAX_SESSION_OWNERS: usize = 4096;
/// The least time between two catalog refreshes triggered by unknown names.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// What every session and request shares.
pub struct Shared {
    /// The backends, in configuration order (which breaks naming ties).
    pub backends: Vec<Arc<Backend>>,
    /// Each backend's naming rule, by index.
    pub naming: Vec<Naming>,
    /// Who may see and call what.
    pub guard: Arc<dyn CallGuard>,
    /// What the backends last listed.
    pub catalog: RwLock<Catalog>,
    /// The merged server info: the union of the backends' capabilities.
    pub info: RwLock<ServerConfig>,
    /// Which backend owns which task (Tasks extension).
    tasks: Mutex<TaskRoutes>,
    last_refresh: Mutex<Option<Instant>>,
    /// The client that owns each legacy session, as its calls through rmcp established;
    /// the direct path answers a session's call only for its owner.
    session_owners: Mutex<HashMap<String, ClientIdentity>>,
    /// Closes the hosted servers' open streams when the gateway goes away.
    pub streams: CancellationToken,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.streams.cancel();
    }
}

#[derive(Default)]
struct TaskRoutes {
    owner: HashMap<String, usize>,
    order: VecDeque<String>,
}

impl Shared {
    /// State over `backends`, with `guard`.
    pub fn new(
        backends: Vec<Arc<Backend>>,
        guard: Arc<dyn CallGuard>,
        streams: CancellationToken,
    ) -> Self {
        let naming = backends
            .iter()
            .map(|b| Naming {
                name: b.name.to_string(),
                prefix: b.prefix,
            })
            .collect();
        let shared = Self {
            catalog: RwLock::new(Catalog::new(backends.len())),
            backends,
            naming,
            guard,
            info: RwLock::new(ServerConfig::default()),
            tasks: Mutex::new(TaskRoutes::default()),
            last_refresh: Mutex::new(None),
            session_owners: Mutex::new(HashMap::new()),
            streams,
        };
        shared.refresh_info();
        shared
    }

    /// Recomputes the merged server info from what the backends said about themselves.
    pub fn refresh_info(&self) {
        let mut capabilities = json!({"tools": {}});
        let mut instructions = Vec::new();
        for backend in &self.backends {
            let Some(facts) = backend.facts() else {
                continue;
            };
            if let Ok(caps) = serde_json::to_value(&facts.capabilities) {
                merge_json(&mut capabilities, &caps);
            }
            if let Some(text) = facts.instructions.filter(|t| !t.trim().is_empty()) {
                instructions.push(format!("[{}] {}", backend.name, text.trim()));
            }
        }
        let capabilities: ServerCapabilities =
            serde_json::from_value(capabilities).unwrap_or_default();
        let names: Vec<&str> = self.backends.iter().map(|b| b.name.as_ref()).collect();
        let mut text = format!(
            "aie gateway: the tools of {} behind one endpoint.",
            names.join(", ")
        );
        for line in instructions {
            text.push('\n');
            text.push_str(&line);
        }
        let info = ServerConfig::new(capabilities)
            .with_server_info(Implementation::new(
                "aie-gateway",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(text);
        *self.info.write().unwrap_or_else(PoisonError::into_inner) = info;
    }

    pub fn catalog(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        self.catalog.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn catalog_mut(&self) -> std::sync::RwLockWriteGuard<'_, Catalog> {
        self.catalog.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether backend `b` may serve `wanted` (unknown backends are asked anyway).
    pub fn serves(&self, b: usize, wanted: impl Fn(&ServerCapabilities) -> bool) -> bool {
        self.backends[b]
            .facts()
            .is_none_or(|facts| wanted(&facts.capabilities))
    }

    pub fn backends_serving(&self, wanted: impl Fn(&ServerCapabilities) -> bool) -> Vec<usize> {
        (0..self.backends.len())
            .filter(|b| self.serves(*b, &wanted))
            .collect()
    }

    /// Notes that legacy session `session` belongs to `owner` (checked by a call through
    /// rmcp).
    pub fn note_session_owner(&self, session: &str, owner: &ClientIdentity) {
        let mut owners = self
            .session_owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if owners.get(session) == Some(owner) {
            return;
        }
        if owners.len() >= MAX_SESSION_OWNERS {
            owners.clear();
        }
        owners.insert(session.to_owned(), owner.clone());
    }

    /// Whether legacy session `session` is known to belong to `client`.
    pub fn owns_session(&self, session: &str, client: &ClientIdentity) -> bool {
        self.session_owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(session)
            == Some(client)
    }

    pub fn remember_task(&self, task_id: String, b: usize) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        if tasks.owner.insert(task_id.clone(), b).is_none() {
            tasks.order.push_back(task_id);
        }
        while tasks.order.len() > MAX_TASK_ROUTES {
            if let Some(old) = tasks.order.pop_front() {
                tasks.owner.remove(&old);
            }
        }
    }

    pub fn task_owner(&self, task_id: &str) -> Option<usize> {
        let known = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .owner
            .get(task_id)
            .copied();
        known.or_else(|| {
            // Only one backend runs tasks: it must be that one.
            let runners = self.backends_serving(ServerCapabilities::supports_tasks);
            (runners.len() == 1).then(|| runners[0])
        })
    }

    /// Lists every backend's tools (and prompts, resources, templates where served) with
    /// the gateway's own requests and records them; returns the conflicts found.
    pub async fn refresh_catalog(&self) -> Vec<Conflict> {
        *self
            .last_refresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        let lists = join_all((0..self.backends.len()).map(|b| async move {
            let backend = &self.backends[b];
            if backend.facts().is_none() && backend.probe().await.is_err() {
                return (b, None);
            }
            let facts = backend.facts();
            let caps = facts.map(|f| f.capabilities).unwrap_or_default();
            let tools = if caps.tools.is_some() {
                list_pages::<Tool, _, _>(ListKind::Tools, |r| backend.own_request(r))
                    .await
                    .ok()
            } else {
                Some(Page::default())
            };
            let prompts = if caps.prompts.is_some() {
                list_pages::<Prompt, _, _>(ListKind::Prompts, |r| backend.own_request(r))
                    .await
                    .ok()
            } else {
                None
            };
            let resources = if caps.resources.is_some() {
                list_pages::<Resource, _, _>(ListKind::Resources, |r| backend.own_request(r))
                    .await
                    .ok()
            } else {
                None
            };
            let templates = if caps.resources.is_some() {
                list_pages::<ResourceTemplate, _, _>(ListKind::Templates, |r| {
                    backend.own_request(r)
                })
                .await
                .ok()
            } else {
                None
            };
            (b, Some((tools, prompts, resources, templates)))
        }))
        .await;
        self.refresh_info();
        let mut conflicts = Vec::new();
        let mut catalog = self.catalog_mut();
        for (b, lists) in lists {
            let Some((tools, prompts, resources, templates)) = lists else {
                continue;
            };
            if let Some(tools) = tools {
                conflicts.extend(catalog.set_tools(b, tools.items, &self.naming));
            }
            if let Some(prompts) = prompts {
                catalog.set_prompts(b, prompts.items, &self.naming);
            }
            if let Some(resources) = resources {
                catalog.set_resources(b, resources.items.into_iter().map(|r| r.uri).collect());
            }
            if let Some(templates) = templates {
                catalog.set_templates(b, templates.items);
            }
        }
        conflicts
    }

    /// Refreshes the catalog after a miss, at most once a second.
    pub async fn refresh_after_miss(&self) {
        let recent = self
            .last_refresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < REFRESH_INTERVAL);
        if !recent {
            for conflict in self.refresh_catalog().await {
                tracing::error!(?conflict, "tool name conflict between backends");
            }
        }
    }
}

/// Deep-merges `add` into `into`: objects key by key, booleans or-ed, anything else kept
/// from `into`. Capabilities merge this way: the gateway serves what any backend serves.
fn merge_json(into: &mut Value, add: &Value) {
    match (into, add) {
        (Value::Object(into), Value::Object(add)) => {
            for (key, value) in add {
                match into.get_mut(key) {
                    Some(existing) => merge_json(existing, value),
                    None => {
                        into.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Bool(into), Value::Bool(add)) => *into = *into || *add,
        _ => {}
    }
}
