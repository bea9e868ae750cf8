//! Resource fixtures: two static resources, one template, legacy subscriptions, and the
//! SEP-2164 not-found error.

use std::{
    collections::BTreeSet,
    sync::{Mutex, PoisonError},
};

use aie_shared::rmcp::{
    ErrorData,
    model::{ReadResourceResult, Resource, ResourceContents, ResourceTemplate},
};
use serde_json::json;

use crate::content;

/// The static text resource.
pub const STATIC_TEXT: &str = "test://static-text";
/// The static binary resource.
pub const STATIC_BINARY: &str = "test://static-binary";
/// The templated resource.
pub const TEMPLATE: &str = "test://template/{id}/data";

/// The direct resources.
pub fn list() -> Vec<Resource> {
    vec![
        Resource::new(STATIC_TEXT, "static-text")
            .with_title("Static Text Resource")
            .with_description("A static text resource for testing")
            .with_mime_type("text/plain"),
        Resource::new(STATIC_BINARY, "static-binary")
            .with_title("Static Binary Resource")
            .with_description("A static binary resource (a 1x1 PNG) for testing")
            .with_mime_type(content::PNG_MIME),
    ]
}

/// The resource templates.
pub fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(TEMPLATE, "template-data")
            .with_title("Dynamic Resource")
            .with_description("A JSON document for any {id}")
            .with_mime_type("application/json"),
    ]
}

/// Reads `uri`. An unknown URI is an error carrying the URI (SEP-2164); rmcp sends it as
/// -32602 under 2026-07-28 and as -32002 to older clients, as each era specifies.
pub fn read(uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let contents = match uri {
        STATIC_TEXT => {
            ResourceContents::text("This is the content of the static text resource.", uri)
        }
        STATIC_BINARY => {
            ResourceContents::blob(content::PNG_BASE64, uri).with_mime_type(content::PNG_MIME)
        }
        _ => match template_id(uri) {
            Some(id) => ResourceContents::text(
                json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")})
                    .to_string(),
                uri,
            )
            .with_mime_type("application/json"),
            None => {
                return Err(ErrorData::resource_not_found(
                    "Resource not found",
                    Some(json!({"uri": uri})),
                ));
            }
        },
    };
    Ok(ReadResourceResult::new(vec![contents]))
}

/// The `{id}` of a URI matching [`TEMPLATE`]: one non-empty path segment.
fn template_id(uri: &str) -> Option<&str> {
    let id = uri
        .strip_prefix("test://template/")?
        .strip_suffix("/data")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// Completion candidates for `argument` of the template `uri`.
pub fn completions(uri: &str, argument: &str) -> &'static [&'static str] {
    match (uri, argument) {
        (TEMPLATE, "id") => &["1", "2", "3", "123"],
        _ => &[],
    }
}

/// The URIs one legacy session subscribed to with `resources/subscribe`.
#[derive(Debug, Default)]
pub struct Subscriptions(Mutex<BTreeSet<String>>);

impl Subscriptions {
    /// Subscribes to `uri`; subscribing twice is not an error.
    pub fn add(&self, uri: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(uri);
    }

    /// Unsubscribes from `uri`; unknown URIs are ignored.
    pub fn remove(&self, uri: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(uri);
    }

    /// True when `uri` is subscribed.
    pub fn contains(&self, uri: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aie_shared::rmcp::model::ErrorCode;

    /// Template URIs substitute their id into the JSON document.
    #[test]
    fn template_reads_substitute_the_id() {
        let result = read("test://template/123/data").expect("template matches");
        let ResourceContents::TextResourceContents {
            text, mime_type, ..
        } = &result.contents[0]
        else {
            panic!("text contents expected");
        };
        assert_eq!(mime_type.as_deref(), Some("application/json"));
        let doc: serde_json::Value = serde_json::from_str(text).expect("JSON");
        assert_eq!(
            doc,
            json!({"id": "123", "templateTest": true, "data": "Data for ID: 123"})
        );
    }

    /// Unknown URIs, including near-misses of the template, are not-found errors naming
    /// the URI, never an empty result.
    #[test]
    fn unknown_uris_are_errors_with_the_uri() {
        for uri in [
            "test://nonexistent-resource-for-conformance-testing",
            "test://template//data",
            "test://template/a/b/data",
        ] {
            let err = read(uri).expect_err(uri);
            assert_eq!(err.code, ErrorCode::RESOURCE_NOT_FOUND);
            assert_eq!(err.data, Some(json!({"uri": uri})));
        }
    }

    /// Every listed resource can be read.
    #[test]
    fn listed_resources_are_readable() {
        for resource in list() {
            assert!(read(&resource.uri).is_ok(), "{}", resource.uri);
        }
    }

    /// Subscriptions are a set.
    #[test]
    fn subscriptions_track_uris() {
        let subs = Subscriptions::default();
        subs.add("test://watched-resource".into());
        subs.add("test://watched-resource".into());
        assert!(subs.contains("test://watched-resource"));
        subs.remove("test://watched-resource");
        subs.remove("test://never-subscribed");
        assert!(!subs.contains("test://watched-resource"));
    }
}
