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

/// The `_meta` key of an `isError` result whose server certifies that the call did nothing:
/// the handler never ran, or stopped before it acted on anything. The gateway reads it (from
/// servers it trusts) to leave the call's approval valid and unused; see [`not_executed`].
pub const NOT_EXECUTED_META: &str = "dev.aie/notExecuted";

/// The `_meta` key of an `isError` result whose server says the call may have happened
/// (a connection lost mid-send): the gateway reads it (from servers it trusts) to record the
/// approval in doubt, for the owner, rather than failed; see [`in_doubt`].
pub const IN_DOUBT_META: &str = "dev.aie/inDoubt";

/// What a tool handler can answer besides success. Each becomes an `isError` result whose
/// text tells the caller what to fix; none is a protocol error.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The arguments parsed but make no sense (an unknown id, an empty field). Nothing was
    /// done, so the result is marked not executed.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The call stopped before it acted on anything, and the handler knows it: a mail server
    /// that could not be reached before the message was handed over, a journal that could
    /// not be written first. The result is marked not executed ([`NOT_EXECUTED_META`]), so
    /// an approval it ran under stays valid. Never for a failure after something may have
    /// left.
    #[error("{0}")]
    NotExecuted(String),
    /// The action may have happened, and nobody here can tell (a connection lost while the
    /// message was on its way). The result is marked [`IN_DOUBT_META`]; whatever ran under an
    /// approval is then left for the owner, never retried.
    #[error("{0}")]
    InDoubt(String),
    /// The request was fine but the action was refused or failed (a claim lost, a policy
    /// refusal, a peer down), or whether it happened is unknown.
    #[error("{0}")]
    Failed(String),
    /// Refused past a bound (`[limits]`, [`crate::bounds`]) before anything was done: the
    /// reason names the bound and its key. Marked not executed, and counted in
    /// `aie_mcp_limit_refusals_total{limit}` when the server has metrics.
    #[error("{reason}")]
    Limit {
        /// The bound.
        limit: crate::bounds::Limit,
        /// What the caller reads.
        reason: String,
    },
}

impl ToolError {
    /// True when the error certifies that nothing was done.
    pub fn not_executed(&self) -> bool {
        matches!(
            self,
            ToolError::InvalidArguments(_) | ToolError::NotExecuted(_) | ToolError::Limit { .. }
        )
    }
}

/// True when `result` is an `isError` result marked [`IN_DOUBT_META`]: its server says the
/// call may have happened. Only as trustworthy as the server that wrote it.
pub fn in_doubt(result: &CallToolResult) -> bool {
    result.is_error == Some(true) && marked(result, IN_DOUBT_META)
}

/// Whether `result`'s `_meta` holds `key: true`.
fn marked(result: &CallToolResult, key: &str) -> bool {
    result.meta.as_ref().and_then(|meta| meta.0.get(key)) == Some(&Value::Bool(true))
}

/// True when `result` is an `isError` result marked [`NOT_EXECUTED_META`]: its server says
/// the call did nothing. Only as trustworthy as the server that wrote it; a success result
/// is never read as not executed.
pub fn not_executed(result: &CallToolResult) -> bool {
    result.is_error == Some(true) && marked(result, NOT_EXECUTED_META)
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
type Handler = Arc<dyn Fn(JsonObject) -> BoxFuture<Answer> + Send + Sync>;

/// What a handler answered, and the bound it refused past, if any (for the metric).
struct Answer {
    result: CallToolResult,
    limit: Option<crate::bounds::Limit>,
}

impl From<CallToolResult> for Answer {
    fn from(result: CallToolResult) -> Self {
        Self {
            result,
            limit: None,
        }
    }
}

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
        let mut tool = Tool::new(
            spec.name,
            spec.description,
            standard_formats(&schema_for_type::<A>()),
        );
        tool.title = Some(spec.title.to_owned());
        tool.output_schema = Some(standard_formats(&schema_for_output::<O>()));
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
                    // The handler never ran.
                    Err(e) => {
                        return marked_error(
                            format!(
                                "invalid arguments for {name}: {e}; see the tool's inputSchema"
                            ),
                            NOT_EXECUTED_META,
                        )
                        .into();
                    }
                };
                match handler(args).await {
                    Ok(output) => success_result(&output).into(),
                    Err(ToolError::Limit { limit, reason }) => Answer {
                        result: marked_error(format!("{name}: {reason}"), NOT_EXECUTED_META),
                        limit: Some(limit),
                    },
                    Err(e) if e.not_executed() => {
                        marked_error(format!("{name}: {e}"), NOT_EXECUTED_META).into()
                    }
                    Err(e @ ToolError::InDoubt(_)) => {
                        marked_error(format!("{name}: {e}"), IN_DOUBT_META).into()
                    }
                    Err(e) => error_result(format!("{name}: {e}")).into(),
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

    /// Whether `name` is declared.
    pub fn contains(&self, name: &str) -> bool {
        self.tools.contains_key(name)
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
        let Answer { result, limit } = handler(arguments.unwrap_or_default()).await;
        if let (Some(true), Some(metrics)) = (result.is_error, metrics) {
            metrics.tool_error(name);
            if let Some(limit) = limit {
                metrics.limit_refusal(limit.key());
            }
        }
        Ok(result)
    }
}

/// The formats JSON Schema defines (draft 2020-12, "Defined Formats"). Validators know
/// these; anything else (schemars' `uint32`, `int64`, `double`...) makes some of them warn
/// (`unknown format "uint" ignored in schema`, the TypeScript SDK's Ajv) or refuse.
pub const STANDARD_FORMATS: [&str; 19] = [
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// A schemars [`Transform`](schemars::transform::Transform) that keeps only
/// [`STANDARD_FORMATS`]: any other `format` is dropped, in every subschema, and an unsigned
/// one (`uint`, `uint8` ... `uint128`) becomes `minimum: 0` where no minimum is given.
#[derive(Debug, Clone, Copy, Default)]
pub struct StandardFormats;

impl schemars::transform::Transform for StandardFormats {
    fn transform(&mut self, schema: &mut schemars::Schema) {
        if let Some(object) = schema.as_object_mut()
            && let Some(Value::String(format)) = object.get("format")
            && !STANDARD_FORMATS.contains(&format.as_str())
        {
            let unsigned = format.starts_with("uint");
            object.remove("format");
            if unsigned {
                object.entry("minimum").or_insert(Value::from(0));
            }
        }
        schemars::transform::transform_subschemas(self, schema);
    }
}

/// `schema` with [`StandardFormats`] applied.
fn standard_formats(schema: &JsonObject) -> Arc<JsonObject> {
    use schemars::transform::Transform as _;
    let mut schema = schemars::Schema::from(schema.clone());
    StandardFormats.transform(&mut schema);
    match schema.to_value() {
        Value::Object(object) => Arc::new(object),
        // A schema made from an object stays one.
        _ => Arc::new(JsonObject::new()),
    }
}

/// Every `format` in `schema` (any depth) that is not one of [`STANDARD_FORMATS`]: what a
/// test checks is empty for each declared tool.
pub fn nonstandard_formats(schema: &JsonObject) -> Vec<String> {
    fn walk(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(object) => {
                if let Some(Value::String(format)) = object.get("format")
                    && !STANDARD_FORMATS.contains(&format.as_str())
                {
                    found.push(format.clone());
                }
                object.values().for_each(|v| walk(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    schema.values().for_each(|v| walk(v, &mut found));
    found
}

fn success_result<O: ToolOutput>(output: &O) -> CallToolResult {
    match serde_json::to_value(output) {
        Ok(value) => {
            let mut result = CallToolResult::structured(value);
            // The text rendering quotes vault files and mail: shown escaped, as to the owner.
            result.content = vec![Content::text(
                crate::render::text(&output.render()).into_owned(),
            )];
            result
        }
        Err(e) => error_result(format!("internal error: result not serializable: {e}")),
    }
}

fn error_result(text: String) -> CallToolResult {
    CallToolResult::error(vec![Content::text(crate::render::text(&text).into_owned())])
}

/// An error result marked `key: true` in its `_meta`.
fn marked_error(text: String, key: &str) -> CallToolResult {
    let mut result = error_result(text);
    let mut meta = rmcp::model::MetaObject::new();
    meta.0.insert(key.to_owned(), Value::Bool(true));
    result.meta = Some(meta);
    result
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

    /// Arguments that do not parse, `InvalidArguments` and `NotExecuted` are marked not
    /// executed in `_meta`; `Failed` and success are not.
    #[tokio::test]
    async fn not_executed_and_in_doubt_are_marked_in_meta() {
        let mut set = set();
        set.add(
            ToolSpec::execute("act", "Act", "Fails as told"),
            |a: EchoArgs| async move {
                match a.text.as_str() {
                    "down" => Err(ToolError::NotExecuted("not sent: server down".into())),
                    "failed" => Err(ToolError::Failed("refused by the server".into())),
                    "doubt" => Err(ToolError::InDoubt("in doubt: connection lost".into())),
                    _ => Ok(EchoOut { echoed: a.text }),
                }
            },
        );
        let arg = |text: &str| Some(JsonObject::from_iter([("text".into(), text.into())]));
        let call = |args| set.call("act", args, None);
        let down = call(arg("down")).await.expect("known tool");
        assert!(not_executed(&down));
        assert_eq!(
            serde_json::to_value(&down).expect("json")["_meta"][NOT_EXECUTED_META],
            Value::Bool(true)
        );
        assert_eq!(
            down.content[0].as_text().map(|t| t.text.as_str()),
            Some("act: not sent: server down")
        );
        let doubt = call(arg("doubt")).await.expect("known tool");
        assert!(!not_executed(&doubt));
        assert!(in_doubt(&doubt));
        assert!(!in_doubt(&down));
        assert_eq!(
            serde_json::to_value(&doubt).expect("json")["_meta"][IN_DOUBT_META],
            Value::Bool(true)
        );
        let failed = call(arg("failed")).await.expect("known tool");
        assert!(!not_executed(&failed) && !in_doubt(&failed));
        assert!(!not_executed(&call(arg("fine")).await.expect("known tool")));
        assert!(not_executed(&call(None).await.expect("known tool")));
        let empty = set.call("echo", arg(""), None).await.expect("known tool");
        assert!(
            not_executed(&empty),
            "InvalidArguments: the handler did nothing"
        );
        // A success that claims it did not run is read as a success.
        let mut lying = call(arg("fine")).await.expect("known tool");
        lying.meta = down.meta.clone();
        assert!(!not_executed(&lying));
    }

    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code, reason = "only the schema is looked at")]
    struct Counts {
        /// How many.
        count: u32,
        limit: Option<u64>,
        small: u8,
        offset: i64,
        ratio: f64,
        nested: Vec<Inner>,
        when: chrono::DateTime<chrono::Utc>,
    }

    #[derive(Deserialize, Serialize, JsonSchema)]
    struct Inner {
        size: usize,
    }

    #[derive(Serialize, JsonSchema)]
    struct CountsOut {
        total: u64,
        items: Vec<Inner>,
    }
    impl ToolOutput for CountsOut {}

    /// Declared schemas carry only standard formats: unsigned integers become `minimum: 0`,
    /// nested and referenced ones too; `date-time` stays.
    #[test]
    fn declared_schemas_use_standard_formats_only() {
        let mut set = ToolSet::new();
        set.add(
            ToolSpec::read("count", "Count", "Counts"),
            |_: Counts| async move {
                Ok(CountsOut {
                    total: 0,
                    items: Vec::new(),
                })
            },
        );
        let tool = set.get("count").expect("declared");
        let input = Value::Object((*tool.input_schema).clone());
        let output = Value::Object((*tool.output_schema.clone().expect("output")).clone());
        // Without the transform, schemars writes non-standard formats.
        assert!(
            !nonstandard_formats(&schema_for_type::<Counts>()).is_empty(),
            "the fixture has none to remove"
        );
        assert_eq!(
            nonstandard_formats(&tool.input_schema),
            Vec::<String>::new()
        );
        assert_eq!(
            nonstandard_formats(tool.output_schema.as_ref().expect("output")),
            Vec::<String>::new()
        );
        let count = &input["properties"]["count"];
        assert_eq!(count["minimum"], 0, "{input}");
        assert_eq!(count["description"], "How many.");
        assert_eq!(input["properties"]["small"]["minimum"], 0, "{input}");
        assert!(input["properties"]["offset"].get("minimum").is_none());
        assert_eq!(input["properties"]["when"]["format"], "date-time");
        assert_eq!(input["$defs"]["Inner"]["properties"]["size"]["minimum"], 0);
        assert_eq!(output["properties"]["total"]["minimum"], 0, "{output}");
    }

    /// A refusal past a bound is a not-executed result naming the bound, counted by its key.
    #[tokio::test]
    async fn limit_refusals_are_not_executed_and_counted() {
        let mut set = set();
        set.add(
            ToolSpec::draft("full", "Full", "Always full"),
            |_: EchoArgs| async move {
                Err::<EchoOut, _>(ToolError::Limit {
                    limit: crate::bounds::Limit::PendingApprovals,
                    reason: "100 waiting, the limit ([limits] max_pending_approvals = 100)".into(),
                })
            },
        );
        let metrics = Metrics::new();
        let args = JsonObject::from_iter([("text".into(), "x".into())]);
        let refused = set
            .call("full", Some(args), Some(&metrics))
            .await
            .expect("known tool");
        assert!(not_executed(&refused));
        assert_eq!(
            refused.content[0].as_text().map(|t| t.text.as_str()),
            Some("full: 100 waiting, the limit ([limits] max_pending_approvals = 100)")
        );
        assert!(
            metrics
                .render()
                .contains(r#"aie_mcp_limit_refusals_total{limit="max_pending_approvals"} 1"#)
        );
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
