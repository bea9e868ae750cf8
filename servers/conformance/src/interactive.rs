//! Fixtures that talk to the client while they run: log messages, progress, and the
//! 2025-11-25 server-to-client requests (sampling, elicitation).
//!
//! rmcp marks logging and sampling deprecated (SEP-2577), but the 2025-11-25 requirement
//! set still scores them, so this module is where those APIs are used on purpose. Under
//! 2026-07-28 rmcp refuses server-to-client requests; the fixtures then answer an
//! `isError` result naming the SEP-2322 tools that replace them.

#![allow(
    deprecated,
    reason = "these fixtures exercise the 2025-11-25 logging and sampling APIs SEP-2577 deprecates"
)]

use std::time::Duration;

use aie_shared::rmcp::{
    ErrorData, RoleServer,
    model::{
        CallToolResult, ContentBlock, CreateMessageRequestParams, ElicitRequestParams,
        ElicitResult, ElicitationSchema, JsonObject, LoggingLevel, LoggingMessageNotificationParam,
        ProgressNotificationParam, SamplingMessage,
    },
    service::RequestContext,
};
use serde_json::{Value, json};

use crate::{ConformanceServer, is_stateless};

/// The pause between a fixture's notifications, so a client sees them arrive over time.
const STEP: Duration = Duration::from_millis(50);

/// The logger name on every fixture log message.
const LOGGER: &str = "aie-conformance";

/// The least severe level a client wants to hear: levels rank from debug (0) to
/// emergency (7). A new session hears everything until it calls `logging/setLevel`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogThreshold(u8);

impl From<LoggingLevel> for LogThreshold {
    fn from(level: LoggingLevel) -> Self {
        Self(rank(level))
    }
}

impl LogThreshold {
    /// True when a message at `level` should be sent.
    pub fn allows(self, level: LoggingLevel) -> bool {
        rank(level) >= self.0
    }
}

/// RFC 5424 severity, least severe first (LoggingLevel has no ordering of its own).
fn rank(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

/// The threshold for this request: its own `_meta` log level if it set one; otherwise the
/// session's on a legacy session, and silence under 2026-07-28, where a request that did
/// not ask for logs MUST NOT get any.
fn threshold(server: &ConformanceServer, cx: &RequestContext<RoleServer>) -> Option<LogThreshold> {
    match cx.meta.log_level() {
        Some(level) => Some(level.into()),
        None if is_stateless(cx) => None,
        None => Some(server.session_log_level()),
    }
}

/// Sends `message` at `level` if the client wants it; a client gone away is not the
/// fixture's failure, so send errors are only logged.
async fn log(
    server: &ConformanceServer,
    cx: &RequestContext<RoleServer>,
    level: LoggingLevel,
    message: &str,
) {
    if !threshold(server, cx).is_some_and(|t| t.allows(level)) {
        return;
    }
    let param = LoggingMessageNotificationParam::new(level, json!(message)).with_logger(LOGGER);
    if let Err(e) = cx.peer.notify_logging_message(param).await {
        tracing::debug!(error = %e, "log notification not delivered");
    }
}

/// `test_tool_with_logging`: three info messages ~50 ms apart, then a text result.
pub async fn with_logging(
    server: &ConformanceServer,
    cx: &RequestContext<RoleServer>,
) -> CallToolResult {
    let steps = [
        "Tool execution started",
        "Tool processing data",
        "Tool execution completed",
    ];
    for (i, step) in steps.into_iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(STEP).await;
        }
        log(server, cx, LoggingLevel::Info, step).await;
    }
    text("Logging test completed")
}

/// `test_logging_tool`: one info message, sent only when the level allows it (the
/// 2026-07-28 "no log without logLevel" probe).
pub async fn logging_probe(
    server: &ConformanceServer,
    cx: &RequestContext<RoleServer>,
) -> CallToolResult {
    log(server, cx, LoggingLevel::Info, "logLevel was requested").await;
    text("Logging tool completed")
}

/// `test_tool_with_progress`: 0, 50 and 100 of 100, ~50 ms apart, when the request
/// carries a progress token; the same pacing without one.
pub async fn with_progress(cx: &RequestContext<RoleServer>) -> CallToolResult {
    let token = cx.meta.get_progress_token();
    for (i, (progress, message)) in [(0.0, "Starting"), (50.0, "Halfway"), (100.0, "Complete")]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            tokio::time::sleep(STEP).await;
        }
        let Some(token) = &token else { continue };
        let param = ProgressNotificationParam::new(token.clone(), progress)
            .with_total(100.0)
            .with_message(message);
        if let Err(e) = cx.peer.notify_progress(param).await {
            tracing::debug!(error = %e, "progress notification not delivered");
        }
    }
    text("Progress test completed")
}

/// `test_sampling`: asks the client's model `prompt` and returns its text.
pub async fn sampling(args: &JsonObject, cx: &RequestContext<RoleServer>) -> CallToolResult {
    let Some(prompt) = args.get("prompt").and_then(Value::as_str) else {
        return CallToolResult::error(vec![ContentBlock::text(
            "invalid arguments: `prompt` (string) is required",
        )]);
    };
    let params = CreateMessageRequestParams::new(vec![SamplingMessage::user_text(prompt)], 100);
    match cx.peer.create_message(params).await {
        Ok(result) => {
            let answer = result
                .message
                .content
                .into_vec()
                .into_iter()
                .find_map(|block| block.as_text().map(|t| t.text.clone()))
                .unwrap_or_else(|| "(no text in the response)".to_owned());
            text(format!("LLM response: {answer}"))
        }
        Err(e) => unavailable("sampling", &e.to_string()),
    }
}

/// `test_elicitation`: asks the user for a username and email with `message`.
pub async fn elicitation(args: &JsonObject, cx: &RequestContext<RoleServer>) -> CallToolResult {
    let Some(message) = args.get("message").and_then(Value::as_str) else {
        return CallToolResult::error(vec![ContentBlock::text(
            "invalid arguments: `message` (string) is required",
        )]);
    };
    let schema = json!({
        "type": "object",
        "properties": {
            "username": {"type": "string", "description": "User's response"},
            "email": {"type": "string", "description": "User's email address"}
        },
        "required": ["username", "email"]
    });
    match elicit(cx, message, schema).await {
        Ok(result) => text(format!("User response: {}", describe(&result))),
        Err(e) => e,
    }
}

/// `test_elicitation_sep1034_defaults`: a form whose every primitive field has a default.
pub async fn elicitation_defaults(cx: &RequestContext<RoleServer>) -> CallToolResult {
    match elicit(
        cx,
        "Please review and update the form fields with defaults",
        defaults_schema(),
    )
    .await
    {
        Ok(result) => text(format!("Elicitation completed: {}", describe(&result))),
        Err(e) => e,
    }
}

/// `test_elicitation_sep1330_enums`: a form with all five enum shapes.
pub async fn elicitation_enums(cx: &RequestContext<RoleServer>) -> CallToolResult {
    match elicit(
        cx,
        "Please select options from the enum fields",
        enums_schema(),
    )
    .await
    {
        Ok(result) => text(format!("Elicitation completed: {}", describe(&result))),
        Err(e) => e,
    }
}

/// The SEP-1034 form: a default for each of string, integer, number, enum and boolean.
pub fn defaults_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "User's name", "default": "John Doe"},
            "age": {"type": "integer", "description": "User's age", "default": 30},
            "score": {"type": "number", "description": "User's score", "default": 95.5},
            "status": {
                "type": "string",
                "description": "User's status",
                "enum": ["active", "inactive", "pending"],
                "default": "active"
            },
            "verified": {"type": "boolean", "description": "Whether user is verified", "default": true}
        }
    })
}

/// The SEP-1330 form: untitled, titled and legacy single-select; untitled and titled
/// multi-select.
pub fn enums_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
            "titledSingle": {
                "type": "string",
                "oneOf": [
                    {"const": "value1", "title": "First Option"},
                    {"const": "value2", "title": "Second Option"},
                    {"const": "value3", "title": "Third Option"}
                ]
            },
            "legacyEnum": {
                "type": "string",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"]
            },
            "untitledMulti": {
                "type": "array",
                "items": {"type": "string", "enum": ["option1", "option2", "option3"]}
            },
            "titledMulti": {
                "type": "array",
                "items": {
                    "anyOf": [
                        {"const": "value1", "title": "First Choice"},
                        {"const": "value2", "title": "Second Choice"},
                        {"const": "value3", "title": "Third Choice"}
                    ]
                }
            }
        }
    })
}

/// Parses a fixture's form schema into rmcp's typed elicitation schema.
pub fn form_schema(schema: Value) -> Result<ElicitationSchema, ErrorData> {
    serde_json::from_value(schema)
        .map_err(|e| ErrorData::internal_error(format!("fixture schema is invalid: {e}"), None))
}

/// Sends one form elicitation; any failure becomes the fixture's `isError` result.
async fn elicit(
    cx: &RequestContext<RoleServer>,
    message: &str,
    schema: Value,
) -> Result<ElicitResult, CallToolResult> {
    let requested_schema = form_schema(schema)
        .map_err(|e| CallToolResult::error(vec![ContentBlock::text(e.message.to_string())]))?;
    let params = ElicitRequestParams::FormElicitationParams {
        meta: None,
        message: message.to_owned(),
        requested_schema,
    };
    cx.peer
        .create_elicitation(params)
        .await
        .map_err(|e| unavailable("elicitation", &e.to_string()))
}

/// `action=accept, content={...}`, the shape the suite's fixtures describe.
fn describe(result: &ElicitResult) -> String {
    let action = serde_json::to_value(&result.action)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    let content = result
        .content
        .as_ref()
        .map_or_else(|| "null".to_owned(), Value::to_string);
    format!("action={action}, content={content}")
}

/// The `isError` result for a server-to-client request that could not be made.
fn unavailable(what: &str, why: &str) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(format!(
        "{what} failed: {why} (under 2026-07-28 use the test_input_required_result_* tools)"
    ))])
}

/// A one-text-block success.
fn text(message: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(message.into())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use aie_shared::rmcp::model::ElicitationAction;

    /// Both SEP forms parse into rmcp's schema and keep every field on the wire.
    #[test]
    fn fixture_forms_parse_and_round_trip() {
        for schema in [defaults_schema(), enums_schema()] {
            let typed = form_schema(schema.clone()).expect("fixture schema parses");
            let back = serde_json::to_value(&typed).expect("serializes");
            for (name, field) in schema["properties"].as_object().expect("object") {
                assert_eq!(
                    &back["properties"][name], field,
                    "{name} changed on the wire"
                );
            }
        }
    }

    /// Thresholds order by severity and a fresh session hears everything.
    #[test]
    fn thresholds_filter_by_severity() {
        let default = LogThreshold::default();
        assert!(default.allows(LoggingLevel::Debug));
        let warning = LogThreshold::from(LoggingLevel::Warning);
        assert!(!warning.allows(LoggingLevel::Info));
        assert!(warning.allows(LoggingLevel::Warning));
        assert!(warning.allows(LoggingLevel::Emergency));
    }

    /// The elicitation summary names the action and the content.
    #[test]
    fn elicitation_summary() {
        let result = ElicitResult::new(ElicitationAction::Accept).with_content(json!({"a": 1}));
        assert_eq!(describe(&result), r#"action=accept, content={"a":1}"#);
        assert_eq!(
            describe(&ElicitResult::new(ElicitationAction::Decline)),
            "action=decline, content=null"
        );
    }
}
