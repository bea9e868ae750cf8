//! Tools declared once: a typed handler per tool, from which the input schema, the output
//! schema, the structured result and its text rendering all follow.
//!
//! A server builds a [`ToolSet`] and hands it to [`ToolServer`](crate::mcp::ToolServer); it
//! never writes JSON Schema or result envelopes by hand.

use std::{collections::BTreeMap, future::Future, pin::Pin, sync::Arc};

use rmcp::{
    ErrorData,
    handler::server::common::{schema_for_output, schema_for_type},
    model::{CallToolResult, ContentBlock as Content, JsonObject, Tool, ToolAnnotations},
};
use schemars::JsonSchema;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::metrics::Metrics;

/// What a tool handler can answer besides success. Both become `isError` results whose text
/// tells the caller what to fix; neither is a protocol error.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The arguments parsed but make no sense (an unknown id, an empty field).
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The request was fine but the action was refused or failed (a claim lost, a policy
    /// refusal, a peer down).
    #[error("{0}")]
    Failed(String),
}

/// A tool's result: serialized as `structuredContent` and rendered as text for clients that
/// show only text.
pub trait ToolOutput: Serialize + JsonSchema + Send + 'static {
    /// A short human rendering; the default is the JSON itself.
    fn render(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// The descriptive half of a tool: everything but its types and its handler.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    /// Exposed name; must match `^[a-zA-Z0-9_-]{1,64}$`.
    pub name: &'static str,
    /// One-line title shown by clients.
    pub title: &'static str,
    /// What the tool does, for the model.
    pub description: &'static str,
    /// True when the tool changes nothing anywhere (a hint to clients, never trusted by the gateway).
    pub read_only: bool,
    /// True when the tool acts on the outside world (send, post, pay).
    pub destructive: bool,
    /// True when calling twice with the same arguments has no further effect.
    pub idempotent: bool,
}

impl ToolSpec {
    /// A read-only tool.
    pub const fn read(name: &'static str, title: &'static str, description: &'static str) -> Self {
        Self {
            name,
            title,
            description,
            read_only: true,
            destructive: false,
            idempotent: true,
        }
    }
    /// A tool that writes only to the vault.
    pub const fn draft(name: &'static str, title: &'static str, description: &'static str) -> Self {
        Self {
            name,
            title,
            description,
            read_only: false,
            destructive: false,
            idempotent: false,
        }
    }
    /// A tool that acts on the outside world.
    pub const fn execute(
        name: &'static str,
        title: &'static str,
        description: &'static str,
    ) -> Self {
        Self {
            name,
            title,
            description,
            read_only: false,
            destructive: true,
            idempotent: false,
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Handler = Arc<dyn Fn(JsonObject) -> BoxFuture<CallToolResult> + Send + Sync>;

/// The tools of one server, each with its declaration and handler.
#[derive(Clone, Default)]
pub struct ToolSet {
    tools: BTreeMap<String, (Tool, Handler)>,
}

/// Why a name cannot be a tool name; checked when the set is built, so a bad name is a
/// programming error caught by the first test, never a client-facing surprise.
pub fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl ToolSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a tool: `A` gives the input schema, `O` the output schema.
    ///
    /// # Panics
    /// On an invalid or duplicate tool name: a bug in the server's code, found at start-up.
    pub fn add<A, O, F, Fut>(&mut self, spec: ToolSpec, handler: F) -> &mut Self
    where
        A: DeserializeOwned + JsonSchema + Send + 'static,
        O: ToolOutput,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, ToolError>> + Send + 'static,
    {
        assert!(
            valid_tool_name(spec.name),
            "invalid tool name {:?}",
            spec.name
        );
        let mut tool = Tool::new(spec.name, spec.description, schema_for_type::<A>());
        tool.title = Some(spec.title.to_owned());
        tool.output_schema = Some(schema_for_output::<O>());
        let mut annotations = ToolAnnotations::default();
        annotations.title = Some(spec.title.to_owned());
        annotations.read_only_hint = Some(spec.read_only);
        annotations.destructive_hint = Some(spec.destructive);
        annotations.idempotent_hint = Some(spec.idempotent);
        annotations.open_world_hint = Some(spec.destructive);
        tool.annotations = Some(annotations);

        let name = spec.name;
        let handler = Arc::new(handler);
        let call: Handler = Arc::new(move |arguments: JsonObject| {
            let handler = handler.clone();
            Box::pin(async move {
                let args: A = match serde_json::from_value(Value::Object(arguments)) {
                    Ok(args) => args,
                    Err(e) => {
                        return error_result(format!(
                            "invalid arguments for {name}: {e}; see the tool's inputSchema"
                        ));
                    }
                };
                match handler(args).await {
                    Ok(output) => success_result(&output),
                    Err(e) => error_result(format!("{name}: {e}")),
                }
            })
        });
        let previous = self.tools.insert(name.to_owned(), (tool, call));
        assert!(previous.is_none(), "tool {name} declared twice");
        self
    }

    /// The declarations, sorted by name.
    pub fn list(&self) -> Vec<Tool> {
        self.tools.values().map(|(tool, _)| tool.clone()).collect()
    }

    /// One declaration.
    pub fn get(&self, name: &str) -> Option<Tool> {
        self.tools.get(name).map(|(tool, _)| tool.clone())
    }

    /// Calls a tool. An unknown name is a protocol error (-32602), as the spec prescribes;
    /// everything else, including bad arguments, is a result.
    pub async fn call(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
        metrics: Option<&Metrics>,
    ) -> Result<CallToolResult, ErrorData> {
        let Some((_, handler)) = self.tools.get(name) else {
            return Err(ErrorData::invalid_params(
                format!("unknown tool: {name}"),
                None,
            ));
        };
        let result = handler(arguments.unwrap_or_default()).await;
        if let (Some(true), Some(metrics)) = (result.is_error, metrics) {
            metrics.tool_error(name);
        }
        Ok(result)
    }
}

fn success_result<O: ToolOutput>(output: &O) -> CallToolResult {
    match serde_json::to_value(output) {
        Ok(value) => {
            let mut result = CallToolResult::structured(value);
            result.content = vec![Content::text(output.render())];
            result
        }
        Err(e) => error_result(format!("internal error: result not serializable: {e}")),
    }
}

fn error_result(text: String) -> CallToolResult {
    CallToolResult::error(vec![Content::text(text)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, JsonSchema)]
    struct EchoArgs {
        /// The text to send back.
        text: String,
    }

    #[derive(Serialize, JsonSchema)]
    struct EchoOut {
        echoed: String,
    }
    impl ToolOutput for EchoOut {
        fn render(&self) -> String {
            self.echoed.clone()
        }
    }

    fn set() -> ToolSet {
        let mut set = ToolSet::new();
        set.add(
            ToolSpec::read("echo", "Echo", "Sends the text back"),
            |a: EchoArgs| async move {
                if a.text.is_empty() {
                    return Err(ToolError::InvalidArguments("text is empty".into()));
                }
                Ok(EchoOut { echoed: a.text })
            },
        );
        set
    }

    /// The declaration carries the field's doc comment and an output schema.
    #[test]
    fn declaration_has_described_input_and_output_schema() {
        let tool = set().get("echo").expect("declared");
        let input = Value::Object((*tool.input_schema).clone());
        assert_eq!(
            input.pointer("/properties/text/description"),
            Some(&"The text to send back.".into())
        );
        let output = Value::Object((*tool.output_schema.expect("output schema")).clone());
        assert_eq!(
            output.pointer("/properties/echoed/type"),
            Some(&"string".into())
        );
    }

    /// Success yields structuredContent plus the text rendering; failures are isError results.
    #[tokio::test]
    async fn results_are_structured_and_errors_are_results() {
        let set = set();
        let mut args = JsonObject::new();
        args.insert("text".into(), "hi".into());
        let ok = set
            .call("echo", Some(args), None)
            .await
            .expect("known tool");
        assert_eq!(
            ok.structured_content,
            Some(serde_json::json!({"echoed": "hi"}))
        );
        assert_eq!(ok.content[0].as_text().map(|t| t.text.as_str()), Some("hi"));

        let bad = set.call("echo", None, None).await.expect("known tool");
        assert_eq!(bad.is_error, Some(true));
        let text = &bad.content[0].as_text().expect("text").text;
        assert!(text.contains("missing field `text`"), "{text}");

        let refused = set.call(
            "echo",
            Some(JsonObject::from_iter([("text".into(), "".into())])),
            None,
        );
        let refused = refused.await.expect("known tool");
        assert_eq!(refused.is_error, Some(true));

        let unknown = set
            .call("nope", None, None)
            .await
            .expect_err("unknown tool");
        assert_eq!(unknown.code, rmcp::model::ErrorCode::INVALID_PARAMS);
    }

    /// Names outside the portable alphabet are rejected.
    #[test]
    fn tool_names_are_portable() {
        assert!(valid_tool_name("vault_list_tasks"));
        assert!(!valid_tool_name("vault.list"));
        assert!(!valid_tool_name(""));
        assert!(!valid_tool_name(&"a".repeat(65)));
    }
}
