//! The tool list, and the fixtures that answer at once.
//!
//! Names, arguments and outputs are the suite's: each entry says which scenario calls it.
//! The list is built once and always in the same order (2026-07-28 wants a deterministic
//! `tools/list`).

use std::time::Duration;

use aie_shared::rmcp::{
    ErrorData, RoleServer,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ContentBlock,
        JsonObject, ResourceContents, Tool,
    },
    service::RequestContext,
};
use serde_json::{Value, json};

use crate::{ConformanceServer, content, interactive, is_stateless, mrtr, tasks};

/// The JSON Schema 2020-12 dialect the `json-schema-2020-12` scenario checks for.
const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// Every tool, in list order.
pub fn list() -> Vec<Tool> {
    let mut tools = vec![
        // tools-call-* content scenarios.
        tool("test_simple_text", "Returns simple text content", no_args()),
        tool("test_image_content", "Returns a 1x1 PNG image", no_args()),
        tool("test_audio_content", "Returns a short WAV clip", no_args()),
        tool(
            "test_embedded_resource",
            "Returns an embedded text resource",
            no_args(),
        ),
        tool(
            "test_multiple_content_types",
            "Returns text, an image and an embedded resource",
            no_args(),
        ),
        tool(
            "test_error_handling",
            "Always fails with an isError result",
            no_args(),
        ),
        // Fixtures that talk back while they run.
        tool(
            "test_tool_with_logging",
            "Sends three info log messages while it runs",
            no_args(),
        ),
        tool(
            "test_tool_with_progress",
            "Reports progress 0, 50 and 100 of 100",
            no_args(),
        ),
        tool(
            "test_sampling",
            "Asks the client's model a question (sampling/createMessage)",
            object(
                json!({"prompt": {"type": "string", "description": "The prompt to send"}}),
                &["prompt"],
            ),
        ),
        tool(
            "test_elicitation",
            "Asks the user for a username and email (elicitation/create)",
            object(
                json!({"message": {"type": "string", "description": "The message to show"}}),
                &["message"],
            ),
        ),
        tool(
            "test_elicitation_sep1034_defaults",
            "Elicits a form whose fields all have defaults (SEP-1034)",
            no_args(),
        ),
        tool(
            "test_elicitation_sep1330_enums",
            "Elicits a form with every enum shape (SEP-1330)",
            no_args(),
        ),
        tool(
            "test_logging_tool",
            "Logs one message, only when the request asked for a log level",
            no_args(),
        ),
        // Schema and transport fixtures.
        tool(
            "json_schema_2020_12_tool",
            "Tool with JSON Schema 2020-12 features",
            json_schema_2020_12(),
        ),
        tool(
            "test_custom_header",
            "Echoes a value bound to the Mcp-Param-Value header (SEP-2243)",
            object(
                json!({"value": {"type": "string", "x-mcp-header": "Value"}}),
                &["value"],
            ),
        ),
        tool(
            "test_reconnection",
            "Answers after a short pause (SSE polling, SEP-1699)",
            no_args(),
        ),
        // 2026-07-28 stateless-server probes.
        tool(
            "test_missing_capability",
            "Needs the client's sampling capability; fails with -32021 without it",
            no_args(),
        ),
        tool(
            "test_trigger_tool_change",
            "Sends notifications/tools/list_changed to the listeners",
            no_args(),
        ),
        tool(
            "test_trigger_prompt_change",
            "Sends notifications/prompts/list_changed to the listeners",
            no_args(),
        ),
    ];
    tools.extend(mrtr::tools());
    tools.extend(tasks::tools());
    tools
}

/// Runs one of this module's fixtures (or an [`interactive`] one).
pub async fn call(
    server: &ConformanceServer,
    request: CallToolRequestParams,
    cx: RequestContext<RoleServer>,
) -> Result<CallToolResponse, ErrorData> {
    let args = request.arguments.unwrap_or_default();
    let result = match request.name.as_ref() {
        "test_simple_text" => text("This is a simple text response for testing."),
        "test_image_content" => success(vec![ContentBlock::image(
            content::PNG_BASE64,
            content::PNG_MIME,
        )]),
        "test_audio_content" => success(vec![ContentBlock::audio(
            content::wav_base64(),
            content::WAV_MIME,
        )]),
        "test_embedded_resource" => success(vec![ContentBlock::resource(ResourceContents::text(
            "This is an embedded resource content.",
            "test://embedded-resource",
        ))]),
        "test_multiple_content_types" => success(vec![
            ContentBlock::text("Multiple content types test:"),
            ContentBlock::image(content::PNG_BASE64, content::PNG_MIME),
            ContentBlock::resource(
                ResourceContents::text(
                    r#"{"test":"data","value":123}"#,
                    "test://mixed-content-resource",
                )
                .with_mime_type("application/json"),
            ),
        ]),
        "test_error_handling" => CallToolResult::error(vec![ContentBlock::text(
            "This tool intentionally returns an error for testing",
        )]),
        "test_tool_with_logging" => interactive::with_logging(server, &cx).await,
        "test_tool_with_progress" => interactive::with_progress(&cx).await,
        "test_sampling" => interactive::sampling(&args, &cx).await,
        "test_elicitation" => interactive::elicitation(&args, &cx).await,
        "test_elicitation_sep1034_defaults" => interactive::elicitation_defaults(&cx).await,
        "test_elicitation_sep1330_enums" => interactive::elicitation_enums(&cx).await,
        "test_logging_tool" => interactive::logging_probe(server, &cx).await,
        "json_schema_2020_12_tool" => {
            let who = args
                .get("name")
                .or_else(|| args.get("email"))
                .or_else(|| args.get("phone"))
                .and_then(Value::as_str)
                .unwrap_or("world");
            text(format!("Hello, {who}!"))
        }
        "test_custom_header" => match args.get("value").and_then(Value::as_str) {
            Some(value) => text(value),
            None => CallToolResult::error(vec![ContentBlock::text(
                "invalid arguments: `value` (string) is required",
            )]),
        },
        "test_reconnection" => {
            tokio::time::sleep(Duration::from_millis(100)).await;
            text("Reconnection test completed")
        }
        "test_missing_capability" => {
            // Per SEP-2575 a server must not lean on a capability the client did not
            // declare: refuse with -32021, naming what is missing.
            if cx
                .client_capabilities()
                .is_none_or(|c| c.sampling.is_none())
            {
                #[allow(deprecated, reason = "sampling is the capability this probe names")]
                let required = ClientCapabilities::builder().enable_sampling().build();
                return Err(ErrorData::missing_required_client_capability(required));
            }
            text("Required capability declared")
        }
        "test_trigger_tool_change" => {
            if is_stateless(&cx) {
                server.listeners().tools_changed().await;
            } else if let Err(e) = cx.peer.notify_tool_list_changed().await {
                tracing::debug!(error = %e, "tools/list_changed not delivered");
            }
            text("Tool list change triggered")
        }
        "test_trigger_prompt_change" => {
            if is_stateless(&cx) {
                server.listeners().prompts_changed().await;
            } else if let Err(e) = cx.peer.notify_prompt_list_changed().await {
                tracing::debug!(error = %e, "prompts/list_changed not delivered");
            }
            text("Prompt list change triggered")
        }
        other => {
            return Err(ErrorData::invalid_params(
                format!("unknown tool: {other}"),
                None,
            ));
        }
    };
    Ok(result.into())
}

/// A tool declaration.
pub(crate) fn tool(name: &'static str, description: &'static str, schema: JsonObject) -> Tool {
    Tool::new(name, description, schema)
}

/// The input schema of a tool without arguments.
pub(crate) fn no_args() -> JsonObject {
    object(json!({}), &[])
}

/// An object schema with `properties` and `required`.
pub(crate) fn object(properties: Value, required: &[&str]) -> JsonObject {
    let mut schema = JsonObject::new();
    schema.insert("type".into(), "object".into());
    schema.insert("properties".into(), properties);
    if !required.is_empty() {
        schema.insert("required".into(), json!(required));
    }
    schema
}

/// The `json-schema-2020-12` fixture's input schema: `$schema`, `$defs` with an
/// `$anchor`, `allOf`/`anyOf`, `if`/`then`/`else` and `additionalProperties`, all of
/// which must reach the client untouched.
fn json_schema_2020_12() -> JsonObject {
    let schema = json!({
        "$schema": DRAFT_2020_12,
        "type": "object",
        "$defs": {
            "address": {
                "$anchor": "addressDef",
                "type": "object",
                "properties": {"street": {"type": "string"}, "city": {"type": "string"}}
            }
        },
        "properties": {
            "name": {"type": "string"},
            "address": {"$ref": "#/$defs/address"},
            "contactMethod": {"type": "string", "enum": ["phone", "email"]},
            "phone": {"type": "string"},
            "email": {"type": "string"}
        },
        "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
        "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
        "then": {"required": ["phone"]},
        "else": {"required": ["email"]},
        "additionalProperties": false
    });
    match schema {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    }
}

/// A one-text-block success.
fn text(message: impl Into<String>) -> CallToolResult {
    success(vec![ContentBlock::text(message.into())])
}

/// A success with `content`.
fn success(content: Vec<ContentBlock>) -> CallToolResult {
    CallToolResult::success(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 2020-12 keywords survive into the declared schema.
    #[test]
    fn json_schema_2020_12_keywords_are_kept() {
        let tool = list()
            .into_iter()
            .find(|t| t.name == "json_schema_2020_12_tool")
            .expect("declared");
        let schema = &tool.input_schema;
        assert_eq!(schema["$schema"], DRAFT_2020_12);
        for key in [
            "$defs",
            "allOf",
            "if",
            "then",
            "else",
            "additionalProperties",
        ] {
            assert!(schema.contains_key(key), "{key} lost");
        }
        assert_eq!(schema["$defs"]["address"]["$anchor"], "addressDef");
    }

    /// Every tool name follows the spec's portable alphabet and every schema is an object.
    #[test]
    fn declarations_are_well_formed() {
        for tool in list() {
            assert!(
                tool.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{}",
                tool.name
            );
            assert_eq!(tool.input_schema["type"], "object", "{}", tool.name);
            assert!(tool.description.is_some(), "{}", tool.name);
        }
    }

    /// The header-bound fixture declares its string parameter for SEP-2243.
    #[test]
    fn custom_header_fixture_declares_its_header() {
        let tool = list()
            .into_iter()
            .find(|t| t.name == "test_custom_header")
            .expect("declared");
        assert_eq!(
            tool.input_schema["properties"]["value"]["x-mcp-header"],
            "Value"
        );
    }
}
