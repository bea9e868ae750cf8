//! SEP-2322 multi round-trip fixtures: tools (and one prompt) that answer an
//! `InputRequiredResult` until the client retries with the inputs they asked for.
//!
//! The answers a client sends back are untrusted: each one is parsed into rmcp's typed
//! result (`ElicitResult`, `CreateMessageResult`, `ListRootsResult`); one that is missing
//! or malformed is simply asked for again, as the SEP recommends, and unknown keys are
//! ignored. Progress between rounds lives only in the sealed `requestState`
//! ([`crate::request_state`]), never on the server.

#![allow(
    deprecated,
    reason = "sampling and roots requests are SEP-2322 input requests; rmcp marks their types deprecated (SEP-2577)"
)]

use aie_shared::rmcp::{
    ErrorData, RoleServer,
    model::{
        BooleanSchema, CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock,
        CreateMessageRequest, CreateMessageRequestParams, CreateMessageResult, ElicitRequest,
        ElicitRequestParams, ElicitResult, ElicitationAction, ElicitationSchema,
        GetPromptRequestParams, GetPromptResponse, GetPromptResult, InputRequest, InputRequests,
        InputRequiredResult, InputResponses, ListRootsRequest, ListRootsResult,
        PrimitiveSchemaDefinition, PromptMessage, Role, SamplingMessage, StringSchema, Tool,
    },
    service::RequestContext,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{
    ConformanceServer,
    request_state::{Sealer, Stage},
    tools::{no_args, tool},
};

/// The prompt that needs an elicited answer before it can be rendered.
pub const PROMPT: &str = "test_input_required_result_prompt";

const ELICITATION: &str = "test_input_required_result_elicitation";
const SAMPLING: &str = "test_input_required_result_sampling";
const LIST_ROOTS: &str = "test_input_required_result_list_roots";
const REQUEST_STATE: &str = "test_input_required_result_request_state";
const TAMPERED_STATE: &str = "test_input_required_result_tampered_state";
const MULTIPLE_INPUTS: &str = "test_input_required_result_multiple_inputs";
const MULTI_ROUND: &str = "test_input_required_result_multi_round";
const CAPABILITIES: &str = "test_input_required_result_capabilities";
const STREAMING: &str = "test_streaming_elicitation";

/// The key under which the user's name is asked for.
const NAME_KEY: &str = "user_name";

/// The tools this module serves, with their descriptions.
const TOOLS: &[(&str, &str)] = &[
    (
        ELICITATION,
        "Asks for the user's name via InputRequiredResult (SEP-2322)",
    ),
    (
        SAMPLING,
        "Asks the client's model a question via InputRequiredResult (SEP-2322)",
    ),
    (
        LIST_ROOTS,
        "Asks for the client's roots via InputRequiredResult (SEP-2322)",
    ),
    (
        REQUEST_STATE,
        "Round-trips a sealed requestState (SEP-2322)",
    ),
    (
        TAMPERED_STATE,
        "Rejects a requestState that fails verification (SEP-2322)",
    ),
    (
        MULTIPLE_INPUTS,
        "Asks for elicitation, sampling and roots in one round (SEP-2322)",
    ),
    (
        MULTI_ROUND,
        "Asks two questions in two rounds, state evolving (SEP-2322)",
    ),
    (
        CAPABILITIES,
        "Asks only for inputs the client declared it can give (SEP-2322)",
    ),
    (
        STREAMING,
        "Answers an InputRequiredResult holding an elicitation",
    ),
];

/// The declarations of this module's tools; none take arguments.
pub fn tools() -> Vec<Tool> {
    TOOLS
        .iter()
        .map(|(name, description)| tool(name, description, no_args()))
        .collect()
}

/// True for the tools [`call_tool`] serves.
pub fn is_mrtr_tool(name: &str) -> bool {
    TOOLS.iter().any(|(n, _)| *n == name)
}

/// Runs one round of an MRTR tool.
pub fn call_tool(
    server: &ConformanceServer,
    request: CallToolRequestParams,
    cx: &RequestContext<RoleServer>,
) -> Result<CallToolResponse, ErrorData> {
    let answers = Answers(request.input_responses.as_ref());
    let state = request.request_state.as_deref();
    let sealer = server.sealer();
    let name = request.name.as_ref();
    Ok(match name {
        ELICITATION => match answers.form(NAME_KEY, "name") {
            Some(Form::Accepted(who)) => text(format!("Hello, {who}!")).into(),
            Some(Form::Refused(action)) => {
                text(format!("No name given (the user chose {action})")).into()
            }
            None => ask_for_name().into(),
        },
        SAMPLING => match answers.model_text("capital_question") {
            Some(answer) => text(format!("Sampling response: {answer}")).into(),
            None => ask(
                [(
                    "capital_question",
                    ask_model("What is the capital of France?", 100),
                )],
                None,
            )
            .into(),
        },
        LIST_ROOTS => match answers.roots("client_roots") {
            Some(roots) => text(format!("Client roots: [{}]", roots.join(", "))).into(),
            None => ask([("client_roots", ask_roots())], None).into(),
        },
        REQUEST_STATE | TAMPERED_STATE => request_state(sealer, name, state, &answers)?,
        MULTIPLE_INPUTS => multiple_inputs(sealer, state, &answers)?,
        MULTI_ROUND => multi_round(sealer, state, &answers)?,
        CAPABILITIES => capabilities(cx, &answers),
        STREAMING => match answers.form("streaming_elicitation", "value") {
            Some(Form::Accepted(value)) => text(format!("Received: {value}")).into(),
            Some(Form::Refused(action)) => {
                text(format!("No value given (the user chose {action})")).into()
            }
            None => streaming_elicitation().into(),
        },
        other => {
            return Err(ErrorData::invalid_params(
                format!("unknown tool: {other}"),
                None,
            ));
        }
    })
}

/// `prompts/get` for [`PROMPT`]: asks for the context, then renders the prompt with it.
pub fn get_prompt(request: &GetPromptRequestParams) -> GetPromptResponse {
    let answers = Answers(request.input_responses.as_ref());
    match answers.form("user_context", "context") {
        Some(Form::Accepted(context)) => GetPromptResult::new(vec![PromptMessage::new_text(
            Role::User,
            format!("Prompt with elicited context: {context}"),
        )])
        .with_description("A prompt built from elicited context")
        .into(),
        Some(Form::Refused(action)) => GetPromptResult::new(vec![PromptMessage::new_text(
            Role::User,
            format!("Prompt without context (the user chose {action})"),
        )])
        .into(),
        None => ask(
            [(
                "user_context",
                ask_form(
                    "What context should the prompt use?",
                    "context",
                    text_field(),
                ),
            )],
            None,
        )
        .into(),
    }
}

/// `test_streaming_elicitation`'s first answer: one elicitation, no state.
fn streaming_elicitation() -> InputRequiredResult {
    ask(
        [(
            "streaming_elicitation",
            ask_form("Provide a value", "value", text_field()),
        )],
        None,
    )
}

/// `request_state` / `tampered_state`: round 1 asks for confirmation and seals
/// [`Stage::Confirm`]; the retry must carry that state intact.
fn request_state(
    sealer: &Sealer,
    owner: &str,
    state: Option<&str>,
    answers: &Answers<'_>,
) -> Result<CallToolResponse, ErrorData> {
    // The state is checked before anything else: a forged one is an error even when the
    // answers look fine.
    let opened = state.map(|s| sealer.open(owner, s)).transpose()?;
    let confirm = || ask_form("Please confirm", "ok", flag_field());
    match (opened, answers.form("confirm", "ok")) {
        (Some(Stage::Confirm), Some(Form::Accepted(ok))) => {
            Ok(text(format!("Confirmed: state-ok (ok = {ok})")).into())
        }
        (Some(Stage::Confirm), Some(Form::Refused(action))) => {
            Ok(text(format!("Not confirmed: state-ok (the user chose {action})")).into())
        }
        _ => Ok(ask(
            [("confirm", confirm())],
            Some(sealer.seal(owner, Stage::Confirm)?),
        )
        .into()),
    }
}

/// `multiple_inputs`: elicitation, sampling and roots asked together; complete once all
/// three answers and the sealed [`Stage::Gather`] come back.
fn multiple_inputs(
    sealer: &Sealer,
    state: Option<&str>,
    answers: &Answers<'_>,
) -> Result<CallToolResponse, ErrorData> {
    let opened = state.map(|s| sealer.open(MULTIPLE_INPUTS, s)).transpose()?;
    let name = answers.form(NAME_KEY, "name");
    let greeting = answers.model_text("greeting");
    let roots = answers.roots("client_roots");
    if let (Some(Stage::Gather), Some(name), Some(greeting), Some(roots)) =
        (opened, name, greeting, roots)
    {
        let name = match name {
            Form::Accepted(name) => name,
            Form::Refused(action) => format!("(none: {action})"),
        };
        return Ok(text(format!(
            "All inputs received: name = {name}, greeting = {greeting}, roots = [{}]",
            roots.join(", ")
        ))
        .into());
    }
    Ok(ask(
        [
            (NAME_KEY, ask_name()),
            ("greeting", ask_model("Generate a greeting", 50)),
            ("client_roots", ask_roots()),
        ],
        Some(sealer.seal(MULTIPLE_INPUTS, Stage::Gather)?),
    )
    .into())
}

/// `multi_round`: round 1 asks for a name, round 2 for a colour; the sealed state says
/// which answer is awaited, so each round's state differs.
fn multi_round(
    sealer: &Sealer,
    state: Option<&str>,
    answers: &Answers<'_>,
) -> Result<CallToolResponse, ErrorData> {
    let awaited = match state.map(|s| sealer.open(MULTI_ROUND, s)).transpose()? {
        Some(Stage::Round { round }) => round,
        // No state (or a state from another stage): start over.
        _ => 0,
    };
    let step1 = || ask_form("Step 1: What is your name?", "name", text_field());
    let step2 = || {
        ask_form(
            "Step 2: What is your favorite color?",
            "color",
            text_field(),
        )
    };
    let seal = |round| sealer.seal(MULTI_ROUND, Stage::Round { round });
    Ok(match awaited {
        1 if answers.form("step1", "name").is_some() => {
            ask([("step2", step2())], Some(seal(2)?)).into()
        }
        2 if answers.form("step2", "color").is_some() => text("Multi-round flow complete").into(),
        2 => ask([("step2", step2())], Some(seal(2)?)).into(),
        _ => ask([("step1", step1())], Some(seal(1)?)).into(),
    })
}

/// `capabilities`: asks only for the inputs the client declared it can provide.
fn capabilities(cx: &RequestContext<RoleServer>, answers: &Answers<'_>) -> CallToolResponse {
    let answered = answers.form(NAME_KEY, "name").is_some()
        || answers.model_text("greeting").is_some()
        || answers.roots("client_roots").is_some();
    if answered {
        return text("Capability-aware flow complete").into();
    }
    let declared = cx.client_capabilities().unwrap_or_default();
    let mut requests = InputRequests::new();
    if declared.elicitation.is_some() {
        requests.insert(NAME_KEY.into(), ask_name());
    }
    if declared.sampling.is_some() {
        requests.insert("greeting".into(), ask_model("Generate a greeting", 50));
    }
    if declared.roots.is_some() {
        requests.insert("client_roots".into(), ask_roots());
    }
    if requests.is_empty() {
        return text("The client declared no capability to answer input requests").into();
    }
    InputRequiredResult::from_input_requests(requests).into()
}

/// An `InputRequiredResult` asking for `requests`, carrying `state` if any.
fn ask<const N: usize>(
    requests: [(&str, InputRequest); N],
    state: Option<String>,
) -> InputRequiredResult {
    let requests: InputRequests = requests
        .into_iter()
        .map(|(key, request)| (key.to_owned(), request))
        .collect();
    InputRequiredResult::new(Some(requests), state)
}

/// The name question several fixtures ask.
fn ask_name() -> InputRequest {
    ask_form("What is your name?", "name", text_field())
}

/// A stateless round asking only for the user's name under `user_name`.
pub(crate) fn ask_for_name() -> InputRequiredResult {
    ask([(NAME_KEY, ask_name())], None)
}

/// A yes/no form: a required boolean `confirm`.
pub(crate) fn ask_confirmation(message: &str) -> InputRequest {
    ask_form(message, "confirm", flag_field())
}

/// A one-value form: a required string `value`.
pub(crate) fn ask_value(message: &str) -> InputRequest {
    ask_form(message, "value", text_field())
}

/// A plain string form field.
fn text_field() -> PrimitiveSchemaDefinition {
    PrimitiveSchemaDefinition::String(StringSchema::new())
}

/// A boolean form field.
fn flag_field() -> PrimitiveSchemaDefinition {
    PrimitiveSchemaDefinition::Boolean(BooleanSchema::new())
}

/// A form elicitation asking for one required `field`.
fn ask_form(message: &str, field: &str, schema: PrimitiveSchemaDefinition) -> InputRequest {
    let requested_schema = ElicitationSchema::builder()
        .required_property(field, schema)
        .build_unchecked();
    InputRequest::Elicitation(ElicitRequest::new(
        ElicitRequestParams::FormElicitationParams {
            meta: None,
            message: message.to_owned(),
            requested_schema,
        },
    ))
}

/// A sampling request for `prompt`.
fn ask_model(prompt: &str, max_tokens: u32) -> InputRequest {
    InputRequest::CreateMessage(CreateMessageRequest::new(CreateMessageRequestParams::new(
        vec![SamplingMessage::user_text(prompt)],
        max_tokens,
    )))
}

/// A `roots/list` request.
fn ask_roots() -> InputRequest {
    InputRequest::ListRoots(ListRootsRequest::default())
}

/// A one-text-block success.
fn text(message: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(message.into())])
}

/// What a user did with a form.
#[derive(Debug, PartialEq)]
pub(crate) enum Form {
    /// Accepted, with the requested field's value rendered as text.
    Accepted(String),
    /// Declined or cancelled (the action's name).
    Refused(String),
}

/// The client's `inputResponses`, read defensively.
pub(crate) struct Answers<'a>(pub(crate) Option<&'a InputResponses>);

impl Answers<'_> {
    /// The response under `key`, if it parses as `T`.
    fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let value = self.0?.get(key)?;
        serde_json::from_value(value.clone()).ok()
    }

    /// A form answer; an accepted form without `field` counts as no answer.
    pub(crate) fn form(&self, key: &str, field: &str) -> Option<Form> {
        let result: ElicitResult = self.get(key)?;
        match result.action {
            ElicitationAction::Accept => {
                let value = result.content?.get(field)?.clone();
                Some(Form::Accepted(match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                }))
            }
            other => Some(Form::Refused(
                serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "unknown".to_owned()),
            )),
        }
    }

    /// The text of a sampling answer.
    fn model_text(&self, key: &str) -> Option<String> {
        let result: CreateMessageResult = self.get(key)?;
        result
            .message
            .content
            .into_vec()
            .into_iter()
            .find_map(|block| block.as_text().map(|t| t.text.clone()))
    }

    /// The URIs of a roots answer.
    fn roots(&self, key: &str) -> Option<Vec<String>> {
        let result: ListRootsResult = self.get(key)?;
        Some(result.roots.into_iter().map(|r| r.uri).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn responses(value: Value) -> InputResponses {
        serde_json::from_value(value).expect("a JSON object")
    }

    /// The harness's answers (as the suite sends them) parse into what the tools need.
    #[test]
    fn harness_answers_parse() {
        let r = responses(json!({
            "user_name": {"action": "accept", "content": {"name": "Alice"}},
            "greeting": {
                "role": "assistant",
                "content": {"type": "text", "text": "Hello there!"},
                "model": "test-model",
                "stopReason": "endTurn"
            },
            "client_roots": {"roots": [{"uri": "file:///test/root", "name": "Test Root"}]},
            "confirm": {"action": "accept", "content": {"ok": true}}
        }));
        let a = Answers(Some(&r));
        assert_eq!(
            a.form("user_name", "name"),
            Some(Form::Accepted("Alice".into()))
        );
        assert_eq!(a.model_text("greeting").as_deref(), Some("Hello there!"));
        assert_eq!(
            a.roots("client_roots"),
            Some(vec!["file:///test/root".into()])
        );
        assert_eq!(a.form("confirm", "ok"), Some(Form::Accepted("true".into())));
    }

    /// Malformed, missing or misplaced answers are no answers (so they get asked again);
    /// refusals are answers.
    #[test]
    fn bad_answers_are_ignored() {
        let r = responses(json!({
            "user_name": 12345,
            "wrong_key": {"action": "accept", "content": {"name": "Mallory"}},
            "empty": {"action": "accept", "content": {}},
            "declined": {"action": "decline"}
        }));
        let a = Answers(Some(&r));
        assert_eq!(a.form("user_name", "name"), None);
        assert_eq!(a.form("missing", "name"), None);
        assert_eq!(a.form("empty", "name"), None);
        assert_eq!(
            a.form("declined", "name"),
            Some(Form::Refused("decline".into()))
        );
        assert_eq!(Answers(None).form("user_name", "name"), None);
    }

    /// Every input request serializes with the method the suite looks for.
    #[test]
    fn input_requests_carry_their_methods() {
        let result = ask(
            [
                (NAME_KEY, ask_name()),
                ("greeting", ask_model("Generate a greeting", 50)),
                ("client_roots", ask_roots()),
            ],
            Some("state".into()),
        );
        let wire = serde_json::to_value(&result).expect("serializes");
        assert_eq!(wire["resultType"], "input_required");
        assert_eq!(wire["requestState"], "state");
        assert_eq!(
            wire["inputRequests"][NAME_KEY]["method"],
            "elicitation/create"
        );
        assert_eq!(
            wire["inputRequests"][NAME_KEY]["params"]["requestedSchema"]["required"],
            json!(["name"])
        );
        assert_eq!(
            wire["inputRequests"]["greeting"]["method"],
            "sampling/createMessage"
        );
        assert_eq!(
            wire["inputRequests"]["client_roots"]["method"],
            "roots/list"
        );
    }

    /// The multi-round flow advances only with the right answer and the state of the
    /// round it answers; a forged state is an error.
    #[test]
    fn multi_round_advances_through_sealed_states() {
        let sealer = Sealer::random();
        let round = |state: Option<&str>, answers: Value| {
            let r = responses(answers);
            match multi_round(&sealer, state, &Answers(Some(&r))).expect("no error") {
                CallToolResponse::InputRequired(ir) => Err(ir),
                CallToolResponse::Complete(done) => Ok(done),
                other => panic!("unexpected {other:?}"),
            }
        };
        let r1 = round(None, json!({})).expect_err("asks step 1");
        let s1 = r1.request_state.expect("state");
        let r2 = round(
            Some(&s1),
            json!({"step1": {"action": "accept", "content": {"name": "Alice"}}}),
        )
        .expect_err("asks step 2");
        assert!(r2.input_requests.expect("requests").contains_key("step2"));
        let s2 = r2.request_state.expect("state");
        assert_ne!(s1, s2);
        // Replaying round 1's state with round 2's answer starts nothing new.
        let replay = round(
            Some(&s1),
            json!({"step2": {"action": "accept", "content": {"color": "blue"}}}),
        )
        .expect_err("still asking");
        assert!(
            replay
                .input_requests
                .expect("requests")
                .contains_key("step1")
        );
        round(
            Some(&s2),
            json!({"step2": {"action": "accept", "content": {"color": "blue"}}}),
        )
        .expect("complete");
        let forged = multi_round(&sealer, Some("rs1.forged"), &Answers(None));
        assert!(forged.is_err());
    }

    /// The request-state tool completes only with its own, intact state.
    #[test]
    fn request_state_requires_the_sealed_state() {
        let sealer = Sealer::random();
        let r = responses(json!({"confirm": {"action": "accept", "content": {"ok": true}}}));
        let answers = Answers(Some(&r));
        let first = request_state(&sealer, REQUEST_STATE, None, &answers).expect("asks");
        let CallToolResponse::InputRequired(first) = first else {
            panic!("expected InputRequiredResult");
        };
        let state = first.request_state.expect("state");
        let done = request_state(&sealer, REQUEST_STATE, Some(&state), &answers).expect("ok");
        let CallToolResponse::Complete(done) = done else {
            panic!("expected a complete result");
        };
        let text = &done.content[0].as_text().expect("text").text;
        assert!(text.contains("state-ok"), "{text}");
        let tampered = format!("{state}-TAMPERED");
        assert!(request_state(&sealer, REQUEST_STATE, Some(&tampered), &answers).is_err());
        assert!(request_state(&sealer, TAMPERED_STATE, Some(&state), &answers).is_err());
    }
}
