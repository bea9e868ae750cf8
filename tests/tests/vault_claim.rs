//! `aie serve vault-claim` driven by a real MCP client (rmcp's): the contract's `vault_*`
//! tools on a real vault, two servers (two agents) on one vault, and bad ids.

use aie_e2e::{
    Aie,
    mcp::{call, connect, text},
};
use aie_shared::vault::{Domain, Task, TaskId, Vault};
use serde_json::json;

fn vault_with_tasks(n: usize) -> (tempfile::TempDir, Vault) {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::init(dir.path().join("vault")).expect("init");
    for i in 0..n {
        let id = TaskId::new(format!("email-{i}")).expect("id");
        vault
            .create_task(&Task::new(id, Domain::Email, format!("Mail {i}"), "Body\n"))
            .expect("create");
    }
    (dir, vault)
}

fn serve(vault: &Vault, agent: &str) -> Aie {
    let root = vault.root().to_str().expect("utf-8 path").to_owned();
    Aie::start(&[
        "serve",
        "vault-claim",
        "--listen",
        "127.0.0.1:0",
        "--vault",
        &root,
        "--agent",
        agent,
    ])
}

/// List, read, claim, complete and write an update through MCP; the files move as the
/// contract says.
#[tokio::test]
async fn tools_list_read_claim_complete_and_update() {
    let (_dir, vault) = vault_with_tasks(3);
    let server = serve(&vault, "cloud");
    let client = connect(&server).await;

    let names: Vec<String> = client
        .list_all_tools()
        .await
        .expect("tools")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    for expected in [
        "vault_list_tasks",
        "vault_read_task",
        "vault_claim_task",
        "vault_release_task",
        "vault_complete_task",
        "vault_write_update",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    let listed = call(
        &client,
        "vault_list_tasks",
        json!({"folder": "Needs_Action", "domain": "email"}),
    )
    .await;
    let tasks = listed
        .structured_content
        .as_ref()
        .and_then(|v| v["tasks"].as_array().cloned())
        .expect("tasks");
    assert_eq!(tasks.len(), 3);
    assert_eq!(tasks[0]["folder"], "Needs_Action");
    assert_eq!(tasks[0]["title"], "Mail 0");

    let claimed = call(&client, "vault_claim_task", json!({"task_id": "email-0"})).await;
    assert_eq!(
        claimed
            .structured_content
            .as_ref()
            .map(|v| v["claimed"].clone()),
        Some(json!(true)),
        "{}",
        text(&claimed)
    );
    assert!(vault.root().join("In_Progress/cloud/email-0.md").exists());
    assert!(!vault.root().join("Needs_Action/email/email-0.md").exists());

    let read = call(&client, "vault_read_task", json!({"task_id": "email-0"})).await;
    let read = read.structured_content.expect("structured");
    assert_eq!(read["front_matter"]["owner"], "cloud");
    assert_eq!(read["body"], "Body\n");

    let done = call(
        &client,
        "vault_complete_task",
        json!({"task_id": "email-0", "note": "replied"}),
    )
    .await;
    assert_ne!(done.is_error, Some(true), "{}", text(&done));
    assert!(vault.root().join("Done/email-0.md").exists());

    let update = call(
        &client,
        "vault_write_update",
        json!({"text": "Drafted 1 reply."}),
    )
    .await;
    let path = update.structured_content.expect("structured")["path"]
        .as_str()
        .expect("path")
        .to_owned();
    assert!(path.starts_with("Updates/"));
    assert!(
        std::fs::read_to_string(vault.root().join(&path))
            .expect("note")
            .contains("Drafted 1 reply.")
    );
    client.cancel().await.expect("close");
}

/// Two agents on one vault: the second claim of a task is refused naming the first owner.
#[tokio::test]
async fn second_agent_is_told_who_holds_the_task() {
    let (_dir, vault) = vault_with_tasks(1);
    let (cloud, local) = (serve(&vault, "cloud"), serve(&vault, "local"));
    let (a, b) = (connect(&cloud).await, connect(&local).await);
    let first = call(&a, "vault_claim_task", json!({"task_id": "email-0"})).await;
    assert_ne!(first.is_error, Some(true), "{}", text(&first));
    let second = call(&b, "vault_claim_task", json!({"task_id": "email-0"})).await;
    assert_eq!(second.is_error, Some(true));
    assert!(
        text(&second).contains("claimed by cloud"),
        "{}",
        text(&second)
    );
    a.cancel().await.expect("close");
    b.cancel().await.expect("close");
}

/// Ids with path tricks are refused before any file is touched; a bait file beside the
/// vault stays as it was.
#[tokio::test]
async fn path_tricks_in_task_ids_are_refused() {
    let (dir, vault) = vault_with_tasks(1);
    let bait = dir.path().join("bait.md");
    std::fs::write(
        &bait,
        "---\nid: bait\ndomain: email\ntitle: bait\ncreated: 2026-01-01T00:00:00Z\n---\nbait\n",
    )
    .expect("bait");
    let server = serve(&vault, "cloud");
    let client = connect(&server).await;
    for id in [
        "../bait",
        "..",
        "Needs_Action/email/email-0",
        "/etc/passwd",
        "a\u{0}b",
        "",
    ] {
        for tool in [
            "vault_claim_task",
            "vault_read_task",
            "vault_complete_task",
            "vault_release_task",
        ] {
            let result = call(&client, tool, json!({"task_id": id})).await;
            assert_eq!(
                result.is_error,
                Some(true),
                "{tool} {id:?}: {}",
                text(&result)
            );
            assert!(
                text(&result).contains("invalid arguments"),
                "{tool} {id:?}: {}",
                text(&result)
            );
        }
    }
    assert!(bait.exists());
    assert!(vault.root().join("Needs_Action/email/email-0.md").exists());
    client.cancel().await.expect("close");
}
