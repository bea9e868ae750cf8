//! Naming and routing: which exposed tool, prompt or resource belongs to which backend.
//!
//! A backend with `prefix = true` has its tools and prompts exposed as `<name>_<tool>`;
//! one with `prefix = false` keeps its own names (aie's servers already prefix theirs).
//! Exposed tool names must match `^[a-zA-Z0-9_-]{1,64}$` and be unique across backends:
//! at start-up a violation refuses to start, naming both backends; later (a backend that
//! came up with new tools) the first backend in configuration order keeps the name and the
//! conflict is logged. Resource URIs are never renamed; a read goes to the backend that
//! listed the URI or a template matching it.

use std::collections::{BTreeMap, HashMap};

use aie_shared::{
    rmcp::model::{Prompt, ResourceTemplate, Tool},
    tools::valid_tool_name,
};

use super::error::GatewayError;

/// Where an exposed name leads.
#[derive(Debug, Clone)]
pub struct Route<T> {
    /// The backend's index.
    pub backend: usize,
    /// The name on the backend.
    pub upstream: String,
    /// The declaration as exposed (renamed when prefixed).
    pub item: T,
    /// Its position in the backend's own list (lists keep the backends' order).
    pub position: usize,
}

/// One backend's naming rule.
#[derive(Debug, Clone)]
pub struct Naming {
    /// The backend's name.
    pub name: String,
    /// Whether names get `<name>_` in front.
    pub prefix: bool,
}

impl Naming {
    /// The exposed form of `name`.
    pub fn expose(&self, name: &str) -> String {
        if self.prefix {
            format!("{}_{name}", self.name)
        } else {
            name.to_owned()
        }
    }
}

/// What each backend last listed, and the routes that follow from it.
#[derive(Debug, Default)]
pub struct Catalog {
    tools: Vec<Option<Vec<Tool>>>,
    prompts: Vec<Option<Vec<Prompt>>>,
    resources: Vec<Option<Vec<String>>>,
    templates: Vec<Option<Vec<ResourceTemplate>>>,
    tool_routes: BTreeMap<String, Route<Tool>>,
    prompt_routes: BTreeMap<String, Route<Prompt>>,
    resource_routes: HashMap<String, usize>,
}

/// A name two backends claim, or that is not portable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// Both backends expose `name`.
    Collision {
        /// The exposed name.
        name: String,
        /// The backend that keeps it.
        first: usize,
        /// The backend that loses it.
        second: usize,
    },
    /// The backend exposes a name outside the portable alphabet.
    BadName {
        /// The exposed name.
        name: String,
        /// The backend.
        backend: usize,
    },
}

impl Conflict {
    /// The start-up error for this conflict.
    pub fn into_error(self, naming: &[Naming]) -> GatewayError {
        let name_of = |i: usize| naming.get(i).map(|n| n.name.clone()).unwrap_or_default();
        match self {
            Conflict::Collision {
                name,
                first,
                second,
            } => GatewayError::ToolCollision {
                name,
                first: name_of(first),
                second: name_of(second),
            },
            Conflict::BadName { name, backend } => GatewayError::BadToolName {
                backend: name_of(backend),
                name,
            },
        }
    }
}

impl Catalog {
    /// An empty catalog for `backends` backends.
    pub fn new(backends: usize) -> Self {
        Self {
            tools: vec![None; backends],
            prompts: vec![None; backends],
            resources: vec![None; backends],
            templates: vec![None; backends],
            ..Self::default()
        }
    }

    /// Records backend `b`'s tools and rebuilds the routes; returns the conflicts found.
    pub fn set_tools(&mut self, b: usize, tools: Vec<Tool>, naming: &[Naming]) -> Vec<Conflict> {
        if let Some(slot) = self.tools.get_mut(b) {
            *slot = Some(tools);
        }
        self.rebuild_tools(naming)
    }

    /// Records backend `b`'s prompts.
    pub fn set_prompts(&mut self, b: usize, prompts: Vec<Prompt>, naming: &[Naming]) {
        if let Some(slot) = self.prompts.get_mut(b) {
            *slot = Some(prompts);
        }
        self.prompt_routes.clear();
        for (b, prompts) in self.prompts.iter().enumerate() {
            let Some(naming) = naming.get(b) else {
                continue;
            };
            for (position, prompt) in prompts.iter().flatten().enumerate() {
                let exposed = naming.expose(&prompt.name);
                if self.prompt_routes.contains_key(&exposed) {
                    tracing::warn!(prompt = %exposed, backend = %naming.name, "prompt name taken by an earlier backend; hidden");
                    continue;
                }
                let mut item = prompt.clone();
                item.name.clone_from(&exposed);
                self.prompt_routes.insert(
                    exposed,
                    Route {
                        backend: b,
                        upstream: prompt.name.clone(),
                        item,
                        position,
                    },
                );
            }
        }
    }

    /// Records the resource URIs backend `b` listed.
    pub fn set_resources(&mut self, b: usize, uris: Vec<String>) {
        if let Some(slot) = self.resources.get_mut(b) {
            *slot = Some(uris);
        }
        self.resource_routes.clear();
        for (b, uris) in self.resources.iter().enumerate() {
            for uri in uris.iter().flatten() {
                self.resource_routes.entry(uri.clone()).or_insert(b);
            }
        }
    }

    /// Records the resource templates backend `b` listed.
    pub fn set_templates(&mut self, b: usize, templates: Vec<ResourceTemplate>) {
        if let Some(slot) = self.templates.get_mut(b) {
            *slot = Some(templates);
        }
    }

    fn rebuild_tools(&mut self, naming: &[Naming]) -> Vec<Conflict> {
        let mut conflicts = Vec::new();
        self.tool_routes.clear();
        for (b, tools) in self.tools.iter().enumerate() {
            let Some(naming) = naming.get(b) else {
                continue;
            };
            for (position, tool) in tools.iter().flatten().enumerate() {
                let exposed = naming.expose(&tool.name);
                if !valid_tool_name(&exposed) {
                    conflicts.push(Conflict::BadName {
                        name: exposed,
                        backend: b,
                    });
                    continue;
                }
                if let Some(first) = self.tool_routes.get(&exposed) {
                    conflicts.push(Conflict::Collision {
                        name: exposed,
                        first: first.backend,
                        second: b,
                    });
                    continue;
                }
                let mut item = tool.clone();
                item.name = exposed.clone().into();
                self.tool_routes.insert(
                    exposed,
                    Route {
                        backend: b,
                        upstream: tool.name.to_string(),
                        item,
                        position,
                    },
                );
            }
        }
        conflicts
    }

    /// The route of exposed tool `name`.
    pub fn tool(&self, name: &str) -> Option<&Route<Tool>> {
        self.tool_routes.get(name)
    }

    /// Every exposed tool of the backends in `answered`, in backend order, each backend's
    /// tools in the order it listed them.
    pub fn tools_of(&self, answered: &[usize]) -> Vec<&Route<Tool>> {
        let mut routes: Vec<_> = self
            .tool_routes
            .values()
            .filter(|r| answered.contains(&r.backend))
            .collect();
        routes.sort_by_key(|r| (r.backend, r.position));
        routes
    }

    /// The exposed tool names, sorted.
    pub fn tool_names(&self) -> Vec<String> {
        self.tool_routes.keys().cloned().collect()
    }

    /// The route of exposed prompt `name`.
    pub fn prompt(&self, name: &str) -> Option<&Route<Prompt>> {
        self.prompt_routes.get(name)
    }

    /// Every exposed prompt of the backends in `answered`.
    pub fn prompts_of(&self, answered: &[usize]) -> Vec<&Route<Prompt>> {
        let mut routes: Vec<_> = self
            .prompt_routes
            .values()
            .filter(|r| answered.contains(&r.backend))
            .collect();
        routes.sort_by_key(|r| (r.backend, r.position));
        routes
    }

    /// The backend that serves resource `uri`: the one that listed it, else the first whose
    /// template matches it.
    pub fn resource(&self, uri: &str) -> Option<usize> {
        if let Some(b) = self.resource_routes.get(uri) {
            return Some(*b);
        }
        self.templates
            .iter()
            .enumerate()
            .find_map(|(b, templates)| {
                templates
                    .iter()
                    .flatten()
                    .any(|t| template_matches(&t.uri_template, uri))
                    .then_some(b)
            })
    }

    /// The backend that listed template `uri_template` (for completions).
    pub fn template(&self, uri_template: &str) -> Option<usize> {
        self.templates
            .iter()
            .enumerate()
            .find_map(|(b, templates)| {
                templates
                    .iter()
                    .flatten()
                    .any(|t| t.uri_template == uri_template)
                    .then_some(b)
            })
    }
}

/// True when `uri` fits the RFC 6570 `template`, each `{…}` standing for one or more
/// characters other than `/` (`{+…}` and `{#…}` may span `/`).
pub fn template_matches(template: &str, uri: &str) -> bool {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        pieces.push((&rest[..open], &rest[open + 1..open + close]));
        rest = &rest[open + close + 1..];
    }
    matches_from(&pieces, rest, uri)
}

fn matches_from(pieces: &[(&str, &str)], tail: &str, uri: &str) -> bool {
    let Some(((literal, variable), more)) = pieces.split_first() else {
        return uri == tail;
    };
    let Some(after) = uri.strip_prefix(literal) else {
        return false;
    };
    let spans_slashes = variable.starts_with(['+', '#']);
    // Try every non-empty value for the variable, shortest first.
    let ends = after
        .char_indices()
        .map(|(at, _)| at)
        .skip(1)
        .chain(std::iter::once(after.len()));
    for end in ends {
        let value = &after[..end];
        if value.is_empty() {
            continue;
        }
        if !spans_slashes && value.contains('/') {
            break;
        }
        if matches_from(more, tail, &after[end..]) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use aie_shared::rmcp::model::JsonObject;

    use super::*;

    fn tool(name: &str) -> Tool {
        Tool::new(name.to_owned(), "t", JsonObject::new())
    }

    fn naming() -> Vec<Naming> {
        vec![
            Naming {
                name: "fixtures".into(),
                prefix: false,
            },
            Naming {
                name: "other".into(),
                prefix: true,
            },
            Naming {
                name: "vault".into(),
                prefix: false,
            },
        ]
    }

    /// Prefixed backends expose `<name>_<tool>` and route back to the upstream name.
    #[test]
    fn prefixes_apply_and_route_back() {
        let mut catalog = Catalog::new(3);
        assert!(
            catalog
                .set_tools(0, vec![tool("echo")], &naming())
                .is_empty()
        );
        assert!(
            catalog
                .set_tools(1, vec![tool("echo")], &naming())
                .is_empty()
        );
        let route = catalog.tool("other_echo").expect("prefixed");
        assert_eq!((route.backend, route.upstream.as_str()), (1, "echo"));
        assert_eq!(route.item.name, "other_echo");
        assert_eq!(catalog.tool("echo").map(|r| r.backend), Some(0));
        assert_eq!(catalog.tool_names(), vec!["echo", "other_echo"]);
        catalog.set_tools(2, vec![tool("vault_z"), tool("vault_a")], &naming());
        let order: Vec<_> = catalog
            .tools_of(&[0, 1, 2])
            .into_iter()
            .map(|r| r.item.name.to_string())
            .collect();
        assert_eq!(order, ["echo", "other_echo", "vault_z", "vault_a"]);
    }

    /// A name two backends expose is a collision naming both; the first keeps it.
    #[test]
    fn collisions_name_both_backends() {
        let mut catalog = Catalog::new(3);
        catalog.set_tools(0, vec![tool("vault_list")], &naming());
        let conflicts = catalog.set_tools(2, vec![tool("vault_list")], &naming());
        assert_eq!(
            conflicts,
            vec![Conflict::Collision {
                name: "vault_list".into(),
                first: 0,
                second: 2
            }]
        );
        assert_eq!(catalog.tool("vault_list").map(|r| r.backend), Some(0));
        let error = conflicts[0].clone().into_error(&naming()).to_string();
        assert!(
            error.contains("`fixtures`") && error.contains("`vault`"),
            "{error}"
        );
    }

    /// Names outside the portable alphabet, or too long once prefixed, are refused.
    #[test]
    fn bad_names_are_refused() {
        let mut catalog = Catalog::new(3);
        let conflicts = catalog.set_tools(0, vec![tool("has.dot")], &naming());
        assert!(
            matches!(&conflicts[..], [Conflict::BadName { name, backend: 0 }] if name == "has.dot")
        );
        let long = "a".repeat(60);
        let conflicts = catalog.set_tools(1, vec![tool(&long)], &naming());
        // Every conflict in the catalog is reported, the earlier one included.
        assert_eq!(conflicts.len(), 2);
        assert!(catalog.tool(&format!("other_{long}")).is_none());
    }

    /// Templates match one path segment per variable.
    #[test]
    fn templates_match_uris() {
        assert!(template_matches(
            "test://template/{id}/data",
            "test://template/123/data"
        ));
        assert!(!template_matches(
            "test://template/{id}/data",
            "test://template/1/2/data"
        ));
        assert!(!template_matches(
            "test://template/{id}/data",
            "test://template//data"
        ));
        assert!(template_matches("file:///{+path}", "file:///a/b/c"));
        assert!(template_matches("x://{a}-{b}", "x://1-2"));
        assert!(!template_matches("x://static", "x://other"));
    }
}
