//! Reading a backend's list (tools, prompts, resources, templates) page by page, and
//! merging the cache hints of several backends' lists.

use aie_shared::rmcp::model::{
    CacheScope, ClientRequest, ListPromptsRequest, ListResourceTemplatesRequest,
    ListResourcesRequest, ListToolsRequest, PaginatedRequestParams,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::Failure;

/// The most pages the gateway reads of one backend's list.
const MAX_PAGES: usize = 64;

/// One page of a list, with its cache hints.
#[derive(Debug)]
pub struct Page<T> {
    /// The items of every page.
    pub items: Vec<T>,
    /// The shortest `ttlMs` of the pages (none if a page gave none).
    pub ttl_ms: Option<u64>,
    /// The strictest `cacheScope` of the pages.
    pub cache_scope: Option<CacheScope>,
}

impl<T> Default for Page<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            ttl_ms: None,
            cache_scope: None,
        }
    }
}

/// Which list.
#[derive(Debug, Clone, Copy)]
pub enum ListKind {
    /// `tools/list`.
    Tools,
    /// `prompts/list`.
    Prompts,
    /// `resources/list`.
    Resources,
    /// `resources/templates/list`.
    Templates,
}

impl ListKind {
    /// The key of the items in the result.
    pub fn key(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::Templates => "resourceTemplates",
        }
    }

    /// The request for the page at `cursor`.
    pub fn request(self, cursor: Option<String>) -> ClientRequest {
        let params = cursor.map(|c| PaginatedRequestParams::default().with_cursor(Some(c)));
        match self {
            ListKind::Tools => ClientRequest::ListToolsRequest(ListToolsRequest {
                method: Default::default(),
                params,
                extensions: Default::default(),
            }),
            ListKind::Prompts => ClientRequest::ListPromptsRequest(ListPromptsRequest {
                method: Default::default(),
                params,
                extensions: Default::default(),
            }),
            ListKind::Resources => ClientRequest::ListResourcesRequest(ListResourcesRequest {
                method: Default::default(),
                params,
                extensions: Default::default(),
            }),
            ListKind::Templates => {
                ClientRequest::ListResourceTemplatesRequest(ListResourceTemplatesRequest {
                    method: Default::default(),
                    params,
                    extensions: Default::default(),
                })
            }
        }
    }
}

/// Reads every page of a list through `send`. The cache hints are the strictest seen.
pub async fn list_pages<T, F, Fut>(kind: ListKind, send: F) -> Result<Page<T>, Failure>
where
    T: DeserializeOwned,
    F: Fn(ClientRequest) -> Fut,
    Fut: Future<Output = Result<Value, Failure>>,
{
    let mut page = Page::default();
    let mut cursor = None;
    for number in 0..MAX_PAGES {
        let value = send(kind.request(cursor.take())).await?;
        if let Some(items) = value.get(kind.key()).and_then(Value::as_array) {
            for item in items {
                match serde_json::from_value(item.clone()) {
                    Ok(item) => page.items.push(item),
                    Err(e) => {
                        tracing::warn!(error = %e, kind = kind.key(), "malformed list item skipped")
                    }
                }
            }
        }
        let ttl = value.get("ttlMs").and_then(Value::as_u64);
        page.ttl_ms = match (number, page.ttl_ms, ttl) {
            (0, _, ttl) => ttl,
            (_, Some(a), Some(b)) => Some(a.min(b)),
            _ => None,
        };
        let scope = value
            .get("cacheScope")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok());
        page.cache_scope = strictest_scope(page.cache_scope, scope);
        match value.get("nextCursor").and_then(Value::as_str) {
            Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
            _ => return Ok(page),
        }
    }
    Ok(page)
}

/// `private` if either says so.
fn strictest_scope(current: Option<CacheScope>, next: Option<CacheScope>) -> Option<CacheScope> {
    match (current, next) {
        (Some(CacheScope::Private), _) | (_, Some(CacheScope::Private)) => {
            Some(CacheScope::Private)
        }
        (Some(a), _) => Some(a),
        (None, b) => b,
    }
}

/// Merges the cache hints of several backends' lists: the shortest ttl, the strictest
/// scope; none when a backend gave none (rmcp then fills its defaults).
pub struct Hints {
    ttl_ms: Option<u64>,
    /// The strictest scope.
    pub scope: Option<CacheScope>,
    complete: bool,
}

impl Hints {
    /// No list seen yet.
    pub fn new() -> Self {
        Self {
            ttl_ms: None,
            scope: None,
            complete: true,
        }
    }

    /// Takes `page`'s hints into account.
    pub fn add<T>(&mut self, page: &Page<T>) {
        match (self.ttl_ms, page.ttl_ms) {
            (_, None) => self.complete = false,
            (None, Some(b)) => self.ttl_ms = Some(b),
            (Some(a), Some(b)) => self.ttl_ms = Some(a.min(b)),
        }
        self.scope = strictest_scope(self.scope, page.cache_scope);
    }

    /// The merged `ttlMs`.
    pub fn ttl(&self) -> Option<u64> {
        self.ttl_ms.filter(|_| self.complete)
    }
}
