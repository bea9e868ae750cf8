//! SEP-2663 Tasks extension fixtures (`io.modelcontextprotocol/tasks`, 2026-07-28).
//!
//! rmcp's [`TaskManager`] runs the tasks and answers `tasks/get`, `tasks/update` and
//! `tasks/cancel`; this module decides, per call, whether a tool runs as a task: only when
//! the request declared the extension, and never for `greet`. Tools that cannot work
//! without a task (they park on input mid-run) refuse undeclared clients with -32021.

use std::time::Duration;

use aie_shared::rmcp::{
    ErrorData, RoleServer,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ContentBlock,
        CreateTaskResult, Tool,
    },
    service::RequestContext,
    task_manager::{TaskContext, TaskExit, TaskFuture, TaskManager, TaskOptions},
};
use serde_json::{Value, json};

use crate::{
    mrtr::{self, Answers, Form},
    tools::{no_args, object, tool},
};

/// How a tool relates to tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Support {
    /// Always answers at once.
    Never,
    /// Runs as a task when the client declared the extension, inline otherwise.
    Optional,
    /// Cannot be served without a task.
    Required,
}

/// The task fixtures: name, task support, description.
const FIXTURES: &[(&str, Support, &str)] = &[
    (
        "greet",
        Support::Never,
        "Greets `name` at once (never a task)",
    ),
    (
        "slow_compute",
        Support::Optional,
        "Sleeps `seconds`, then answers; a task when the client supports tasks",
    ),
    (
        "failing_job",
        Support::Required,
        "A task that ends in a tool error after ~1 s (task support: required)",
    ),
    (
        "protocol_error_job",
        Support::Optional,
        "Fails with a protocol error; as a task it ends `failed`",
    ),
    (
        "confirm_delete",
        Support::Required,
        "A task that asks the user to confirm deleting `filename`",
    ),
    (
        "multi_input",
        Support::Required,
        "A task that asks two questions at once",
    ),
    (
        "test_tool_with_task",
        Support::Required,
        "Asks for the user's name (SEP-2322), then finishes as a task",
    ),
];

/// The task fixtures' declarations.
pub fn tools() -> Vec<Tool> {
    FIXTURES
        .iter()
        .map(|(name, _, description)| {
            let schema = match *name {
                "greet" => object(json!({"name": {"type": "string"}}), &["name"]),
                "slow_compute" => object(
                    json!({
                        "seconds": {"type": "number", "minimum": 0},
                        "label": {"type": "string"}
                    }),
                    &[],
                ),
                "confirm_delete" => object(json!({"filename": {"type": "string"}}), &[]),
                _ => no_args(),
            };
            tool(name, description, schema)
        })
        .collect()
}

/// True for the tools [`call_tool`] serves.
pub fn is_task_tool(name: &str) -> bool {
    support(name).is_some()
}

/// The task support of fixture `name`; `None` for tools this module does not serve.
fn support(name: &str) -> Option<Support> {
    FIXTURES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, s, _)| *s)
}

/// Runs a task fixture, as a task or inline.
pub async fn call_tool(
    tasks: &TaskManager,
    request: CallToolRequestParams,
    cx: &RequestContext<RoleServer>,
) -> Result<CallToolResponse, ErrorData> {
    let name = request.name.as_ref();
    let support = support(name)
        .ok_or_else(|| ErrorData::invalid_params(format!("unknown tool: {name}"), None))?;
    let declared = cx.client_capabilities().is_some_and(|c| c.supports_tasks());
    if support == Support::Required && !declared {
        return Err(ErrorData::missing_required_client_capability(
            ClientCapabilities::builder().enable_tasks().build(),
        ));
    }
    let as_task = declared && support != Support::Never;
    let args = request.arguments.clone().unwrap_or_default();
    let string = |key: &str, default: &str| {
        args.get(key)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_owned()
    };
    let job: Job = match name {
        "greet" => {
            let who = string("name", "world");
            return Ok(text(format!("Hello, {who}!")).into());
        }
        "slow_compute" => {
            let seconds = args.get("seconds").and_then(Value::as_f64).unwrap_or(1.0);
            // Bounded, so a client cannot park a worker for ever.
            let duration =
                Duration::try_from_secs_f64(seconds.clamp(0.0, 600.0)).unwrap_or(Duration::ZERO);
            Job::SlowCompute(duration, string("label", "compute"))
        }
        "failing_job" => Job::Failing,
        "protocol_error_job" => Job::ProtocolError,
        "confirm_delete" => Job::ConfirmDelete(string("filename", "file.txt")),
        "multi_input" => Job::MultiInput,
        "test_tool_with_task" => {
            // Round 1 is a plain SEP-2322 round trip; only the answer starts a task.
            let answers = Answers(request.input_responses.as_ref());
            match answers.form("user_name", "name") {
                Some(Form::Accepted(who)) => Job::Greeting(who),
                Some(Form::Refused(_)) => Job::Greeting("friend".into()),
                None => return Ok(mrtr::ask_for_name().into()),
            }
        }
        other => {
            return Err(ErrorData::invalid_params(
                format!("unknown tool: {other}"),
                None,
            ));
        }
    };
    if as_task {
        let task = tasks.spawn(TaskOptions::new(), move |ctx| job.run(Some(ctx)));
        return Ok(CreateTaskResult::new(task).into());
    }
    match job.run(None).await {
        Ok(result) => Ok(result.into()),
        Err(TaskExit::Error(e)) => Err(e),
        Err(TaskExit::Cancelled) => Err(ErrorData::internal_error("cancelled", None)),
    }
}

/// The work behind a task fixture.
enum Job {
    /// Sleep this long, then report the label.
    SlowCompute(Duration, String),
    /// End in a tool error.
    Failing,
    /// End in a protocol error.
    ProtocolError,
    /// Ask to confirm deleting this file.
    ConfirmDelete(String),
    /// Ask two questions at once.
    MultiInput,
    /// Greet this person (the MRTR-gathered name).
    Greeting(String),
}

impl Job {
    /// The work as a future; `ctx` is present when it runs as a task.
    fn run(self, ctx: Option<TaskContext>) -> TaskFuture {
        Box::pin(async move {
            match self {
                Job::SlowCompute(duration, label) => {
                    let done = text(format!(
                        "slow_compute({label}) done after {}s",
                        duration.as_secs_f64()
                    ));
                    let Some(ctx) = ctx else {
                        tokio::time::sleep(duration).await;
                        return Ok(done);
                    };
                    // Cancellation is cooperative: settle as `cancelled` when asked.
                    tokio::select! {
                        () = ctx.cancelled() => Err(TaskExit::Cancelled),
                        () = tokio::time::sleep(duration) => Ok(done),
                    }
                }
                Job::Failing => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    // A tool error: the task completes, with isError in its result.
                    Ok(CallToolResult::error(vec![ContentBlock::text(
                        "failing_job: intentional tool execution error",
                    )]))
                }
                Job::ProtocolError => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    // A protocol error: the task fails, with the error inlined.
                    Err(TaskExit::Error(ErrorData::internal_error(
                        "protocol_error_job: intentional protocol-level failure",
                        None,
                    )))
                }
                Job::ConfirmDelete(filename) => {
                    let ctx = ctx.ok_or_else(needs_task)?;
                    let answer = ctx
                        .request_input(
                            "confirm",
                            mrtr::ask_confirmation(&format!("Delete {filename}?")),
                        )
                        .await?;
                    let confirmed = answer
                        .pointer("/content/confirm")
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    Ok(text(format!(
                        "confirm_delete({filename}): confirmed = {confirmed}"
                    )))
                }
                Job::MultiInput => {
                    let ctx = ctx.ok_or_else(needs_task)?;
                    // Both questions are pending at once, so a client can answer them
                    // one at a time.
                    let (a, b) = tokio::join!(
                        ctx.request_input("input-a", mrtr::ask_value("Provide value A")),
                        ctx.request_input("input-b", mrtr::ask_value("Provide value B")),
                    );
                    let show = |answer: &Value| answer.pointer("/content").map(Value::to_string);
                    Ok(text(format!(
                        "multi_input: a = {}, b = {}",
                        show(&a?).unwrap_or_default(),
                        show(&b?).unwrap_or_default()
                    )))
                }
                Job::Greeting(who) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok(text(format!("Hello, {who}! (async)")))
                }
            }
        })
    }
}

/// The error for a task-only job run inline; the -32021 check above prevents it.
fn needs_task() -> TaskExit {
    TaskExit::Error(ErrorData::internal_error(
        "this tool only runs as a task",
        None,
    ))
}

/// A one-text-block success.
fn text(message: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(message.into())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use aie_shared::rmcp::model::TaskStatus;

    /// Every fixture is declared once and known to the dispatcher.
    #[test]
    fn fixtures_are_declared() {
        let tools = tools();
        assert_eq!(tools.len(), FIXTURES.len());
        for tool in &tools {
            assert!(is_task_tool(&tool.name), "{}", tool.name);
        }
        assert!(!is_task_tool("test_simple_text"));
    }

    /// A slow job settles as cancelled when cancelled, and a failing one as a completed
    /// tool error.
    #[tokio::test]
    async fn tasks_settle_as_the_spec_says() {
        let manager = TaskManager::new();
        let slow = manager.spawn(TaskOptions::new(), |ctx| {
            Job::SlowCompute(Duration::from_secs(60), "t".into()).run(Some(ctx))
        });
        manager.cancel_task(&slow.task_id).expect("known task");
        let failing = manager.spawn(TaskOptions::new(), |ctx| Job::Failing.run(Some(ctx)));
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let a = manager.get_task(&slow.task_id).expect("known").task.status;
            let b = manager
                .get_task(&failing.task_id)
                .expect("known")
                .task
                .status;
            if a == TaskStatus::Cancelled && b == TaskStatus::Completed {
                return;
            }
        }
        panic!("tasks did not settle");
    }
}
