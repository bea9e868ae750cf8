//! Prompt fixtures and completion of their arguments.

use aie_shared::rmcp::{
    ErrorData,
    model::{
        ContentBlock, GetPromptResult, JsonObject, Prompt, PromptArgument, PromptMessage,
        ResourceContents, Role,
    },
};
use serde_json::Value;

use crate::{content, mrtr};

const SIMPLE: &str = "test_simple_prompt";
const WITH_ARGUMENTS: &str = "test_prompt_with_arguments";
const EMBEDDED_RESOURCE: &str = "test_prompt_with_embedded_resource";
const WITH_IMAGE: &str = "test_prompt_with_image";

/// Every prompt, in list order.
pub fn list() -> Vec<Prompt> {
    let argument = |name: &str, description: &str| {
        PromptArgument::new(name)
            .with_description(description)
            .with_required(true)
    };
    vec![
        Prompt::new(SIMPLE, Some("A simple prompt without arguments"), None),
        Prompt::new(
            WITH_ARGUMENTS,
            Some("A prompt with two arguments"),
            Some(vec![
                argument("arg1", "First test argument"),
                argument("arg2", "Second test argument"),
            ]),
        ),
        Prompt::new(
            EMBEDDED_RESOURCE,
            Some("A prompt embedding the resource it is given"),
            Some(vec![argument(
                "resourceUri",
                "URI of the resource to embed",
            )]),
        ),
        Prompt::new(WITH_IMAGE, Some("A prompt with an image"), None),
        Prompt::new(
            mrtr::PROMPT,
            Some("A prompt that first asks the user for context (SEP-2322)"),
            None,
        ),
    ]
}

/// Renders the prompt `name` with `arguments`; a missing required argument or an unknown
/// prompt is a -32602 error, as the spec prescribes.
pub fn get(name: &str, arguments: Option<&JsonObject>) -> Result<GetPromptResult, ErrorData> {
    let arg = |key: &str| {
        arguments
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ErrorData::invalid_params(
                    format!("prompt {name} needs the string argument `{key}`"),
                    None,
                )
            })
    };
    let messages = match name {
        SIMPLE => vec![PromptMessage::new_text(
            Role::User,
            "This is a simple prompt for testing.",
        )],
        WITH_ARGUMENTS => vec![PromptMessage::new_text(
            Role::User,
            format!(
                "Prompt with arguments: arg1='{}', arg2='{}'",
                arg("arg1")?,
                arg("arg2")?
            ),
        )],
        EMBEDDED_RESOURCE => vec![
            PromptMessage::new(
                Role::User,
                ContentBlock::resource(ResourceContents::text(
                    "Embedded resource content for testing.",
                    arg("resourceUri")?,
                )),
            ),
            PromptMessage::new_text(Role::User, "Please process the embedded resource above."),
        ],
        WITH_IMAGE => vec![
            PromptMessage::new(
                Role::User,
                ContentBlock::image(content::PNG_BASE64, content::PNG_MIME),
            ),
            PromptMessage::new_text(Role::User, "Please analyze the image above."),
        ],
        _ => {
            return Err(ErrorData::invalid_params(
                format!("unknown prompt: {name}"),
                None,
            ));
        }
    };
    Ok(GetPromptResult::new(messages))
}

/// Completion candidates for `argument` of the prompt `name`.
pub fn completions(name: &str, argument: &str) -> &'static [&'static str] {
    match (name, argument) {
        (WITH_ARGUMENTS, "arg1") => &["paris", "park", "party"],
        (WITH_ARGUMENTS, "arg2") => &["hello", "world"],
        (EMBEDDED_RESOURCE, "resourceUri") => &["test://static-text", "test://static-binary"],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(value: Value) -> JsonObject {
        serde_json::from_value(value).expect("object")
    }

    /// Arguments are substituted; missing ones are -32602 errors.
    #[test]
    fn arguments_are_substituted_or_required() {
        let a = args(json!({"arg1": "testValue1", "arg2": "testValue2"}));
        let result = get(WITH_ARGUMENTS, Some(&a)).expect("renders");
        let text = serde_json::to_string(&result.messages).expect("serializes");
        assert!(
            text.contains("testValue1") && text.contains("testValue2"),
            "{text}"
        );
        let missing = get(WITH_ARGUMENTS, Some(&args(json!({"arg1": "x"})))).expect_err("arg2");
        assert_eq!(
            missing.code,
            aie_shared::rmcp::model::ErrorCode::INVALID_PARAMS
        );
    }

    /// The embedded resource carries the URI it was given.
    #[test]
    fn embedded_resource_uses_the_given_uri() {
        let a = args(json!({"resourceUri": "test://example-resource"}));
        let result = get(EMBEDDED_RESOURCE, Some(&a)).expect("renders");
        let wire = serde_json::to_value(&result.messages[0]).expect("serializes");
        assert_eq!(wire["content"]["type"], "resource");
        assert_eq!(
            wire["content"]["resource"]["uri"],
            "test://example-resource"
        );
    }

    /// Every listed prompt except the MRTR one renders with its required arguments.
    #[test]
    fn listed_prompts_render() {
        for prompt in list() {
            if prompt.name == mrtr::PROMPT {
                continue;
            }
            let mut a = JsonObject::new();
            for arg in prompt.arguments.unwrap_or_default() {
                a.insert(arg.name, "x".into());
            }
            get(&prompt.name, Some(&a)).expect("renders");
        }
    }
}
