//! The read API: ordering, keyset pagination under concurrent writes, and an
//! OpenAPI document that stays true to what the server answers.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::Value;

use crate::harness::*;

#[tokio::test]
async fn conversation_pages_are_newest_first_and_stable_under_concurrent_writes() {
    let d = Daemon::start().await;
    let base = 1_768_000_000;
    for i in 0..25 {
        let number = if i % 2 == 0 {
            "100000000000001"
        } else {
            "100000000000002"
        };
        d.post_ok(&text_body(
            number,
            &format!("1555100{i:04}"),
            &format!("wamid.P{i}"),
            base + i,
            "hi",
        ))
        .await;
    }
    let all = d.get_all("/api/v1/conversations").await;
    assert_eq!(all.len(), 25);
    let times: Vec<&str> = all
        .iter()
        .map(|c| c["last_message_at"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest activity first");

    let page1 = d.get_ok("/api/v1/conversations?limit=10").await;
    let cursor = page1["next_cursor"].as_str().unwrap().to_string();
    let first_ids: Vec<String> = page1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().into())
        .collect();
    // Writes between pages: new conversations, and new activity in one already seen.
    for i in 25..30 {
        d.post_ok(&text_body(
            "100000000000001",
            &format!("1555100{i:04}"),
            &format!("wamid.P{i}"),
            base + 100 + i,
            "new",
        ))
        .await;
    }
    let seen = &page1["items"][3];
    let seen_number = seen["number_id"].as_str().unwrap().to_string();
    let seen_customer = seen["customer"]["wa_id"].as_str().unwrap().to_string();
    d.post_ok(&text_body(
        &seen_number,
        &seen_customer,
        "wamid.AGAIN",
        base + 500,
        "again",
    ))
    .await;
    let mut rest: Vec<String> = Vec::new();
    let mut next = Some(cursor);
    while let Some(c) = next {
        let page = d
            .get_ok(&format!("/api/v1/conversations?limit=10&cursor={c}"))
            .await;
        rest.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_string()),
        );
        next = page["next_cursor"].as_str().map(String::from);
    }
    let mut union: Vec<String> = first_ids.clone();
    union.extend(rest);
    let unique: HashSet<&String> = union.iter().collect();
    assert_eq!(
        unique.len(),
        union.len(),
        "no conversation twice across pages"
    );
    assert_eq!(
        union.len(),
        25,
        "every conversation that existed is seen exactly once"
    );

    // Filters.
    let only = d
        .get_all("/api/v1/conversations?number=100000000000002")
        .await;
    assert!(!only.is_empty() && only.iter().all(|c| c["number_id"] == "100000000000002"));
    let unassigned = d.get_all("/api/v1/conversations?status=unassigned").await;
    assert_eq!(unassigned.len(), 30);
    assert_eq!(
        unassigned[0]["messages"], 2,
        "the conversation with new activity comes first"
    );
    assert!(d
        .get_all("/api/v1/conversations?status=resolved")
        .await
        .is_empty());
    let conv = d
        .get_ok(&format!("/api/v1/conversations/{}", first_ids[0]))
        .await;
    assert_eq!(conv["id"], first_ids[0].as_str());
}

/// The texts of a conversation's messages, read in pages of 7.
async fn texts_by_pages_of_7(d: &Daemon, id: &str) -> Vec<String> {
    let mut got = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("/api/v1/conversations/{id}/messages?limit=7&cursor={c}"),
            None => format!("/api/v1/conversations/{id}/messages?limit=7"),
        };
        let page = d.get_ok(&url).await;
        got.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["text"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.into()),
            None => break,
        }
    }
    got
}

/// A long conversation is stored in sealed chunks plus an unsealed tail that
/// checkpoints persist; across checkpoints, `kill -9` and a clean restart it
/// reads back whole, once, in time order.
#[tokio::test]
async fn a_long_conversation_reads_whole_and_in_order_across_restarts() {
    let mut d = Daemon::start_with(Options {
        checkpoint_interval: "100ms",
        ..Default::default()
    })
    .await;
    let base = 1_768_000_000;
    // 60 messages; arrival order scrambled so chunks overlap in time.
    let order: Vec<i64> = (0..60).map(|i| (i * 17) % 60).collect();
    let body = |i: i64| {
        text_body(
            "100000000000001",
            "15550006666",
            &format!("wamid.L{i:02}"),
            base + i,
            &format!("m{i}"),
        )
    };
    let expect = |upto: usize| -> Vec<String> {
        let mut v: Vec<i64> = order[..upto].to_vec();
        v.sort_unstable();
        v.iter().map(|i| format!("m{i}")).collect()
    };
    for i in &order[..25] {
        d.post_ok(&body(*i)).await;
    }
    let checkpointed = d.metric("switchboard_checkpoint_lsn", &[]).await;
    eventually(
        "a checkpoint after the first 25",
        Duration::from_secs(20),
        || {
            let d = &d;
            async move {
                (d.metric("switchboard_checkpoint_lsn", &[]).await > checkpointed).then_some(())
            }
        },
    )
    .await;
    for i in &order[25..45] {
        d.post_ok(&body(*i)).await;
    }
    let id = d.get_all("/api/v1/conversations").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(texts_by_pages_of_7(&d, &id).await, expect(45));
    d.kill9();
    d.restart().await;
    assert_eq!(
        texts_by_pages_of_7(&d, &id).await,
        expect(45),
        "after kill -9"
    );
    for i in &order[45..] {
        d.post_ok(&body(*i)).await;
    }
    assert_eq!(d.terminate().code(), Some(0));
    d.restart().await;
    assert_eq!(
        texts_by_pages_of_7(&d, &id).await,
        expect(60),
        "after a clean restart"
    );
    let conv = d.get_ok(&format!("/api/v1/conversations/{id}")).await;
    assert_eq!(conv["messages"], 60);
}

#[tokio::test]
async fn messages_come_in_time_order_whatever_the_arrival_order() {
    let d = Daemon::start().await;
    let base = 1_768_000_000;
    // Arrival order is scrambled; timestamps decide.
    let order: Vec<i64> = (0..30).map(|i| (i * 7) % 30).collect();
    for i in &order {
        d.post_ok(&text_body(
            "100000000000001",
            "15550005555",
            &format!("wamid.T{i:02}"),
            base + i,
            &format!("m{i}"),
        ))
        .await;
    }
    let conv = &d.get_all("/api/v1/conversations").await[0];
    let got = texts_by_pages_of_7(&d, conv["id"].as_str().unwrap()).await;
    let expected: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
    assert_eq!(got, expected);
    assert_eq!(
        conv["window_expires_at"], "2026-01-10T23:07:09Z",
        "24 h after the newest customer message"
    );
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    &doc["components"]["schemas"][name]
}

/// The object's keys must be exactly the schema's properties.
fn conforms(doc: &Value, name: &str, v: &Value) {
    let props: BTreeSet<String> = schema(doc, name)["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let keys: BTreeSet<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("{name}: not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, props, "{name} response does not match its schema");
}

#[tokio::test]
async fn the_openapi_document_matches_the_responses() {
    let d = Daemon::start().await;
    let (status, _, body) = d
        .raw(Method::GET, "/api/v1/openapi.json", &[], Vec::new())
        .await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");

    d.post_ok(&pywa("message.json", "image")).await;
    d.post_ok(&pywa("message.json", "referral")).await;
    d.post_ok(&fixture("crafted/statuses_out_of_order.json"))
        .await;
    d.post_ok(&fixture("crafted/quality_update_flagged.json"))
        .await;
    d.post_ok(&fixture("crafted/user_preferences_stop.json"))
        .await;

    let convs = d.get_ok("/api/v1/conversations").await;
    conforms(&doc, "Conversation", &convs["items"][0]);
    conforms(&doc, "CustomerRef", &convs["items"][0]["customer"]);
    let id = convs["items"][0]["id"].as_str().unwrap();
    let msgs = d
        .get_ok(&format!("/api/v1/conversations/{id}/messages"))
        .await;
    for m in msgs["items"].as_array().unwrap() {
        conforms(&doc, "Message", m);
    }
    let detail = d.get_ok("/api/v1/messages/wamid.CRAFTEDOOO0001").await;
    conforms(&doc, "MessageDetail", &detail);
    conforms(&doc, "Status", &detail["statuses"][0]);
    conforms(&doc, "Pricing", &detail["statuses"][1]["pricing"]);
    let img = d.get_all("/api/v1/conversations").await;
    let with_media = {
        let mut found = None;
        for c in &img {
            for m in d
                .get_all(&format!(
                    "/api/v1/conversations/{}/messages",
                    c["id"].as_str().unwrap()
                ))
                .await
            {
                if m["media"].is_object() {
                    found = Some(m);
                }
            }
        }
        found.expect("the image message")
    };
    conforms(&doc, "Media", &with_media["media"]);
    let customer = d.get_ok("/api/v1/customers/972987654321").await;
    conforms(&doc, "Customer", &customer);
    conforms(&doc, "Referral", &customer["referral"]);
    conforms(
        &doc,
        "Marketing",
        &d.get_ok("/api/v1/customers/15550100901").await["marketing"],
    );
    let numbers = d.get_ok("/api/v1/numbers").await;
    conforms(&doc, "Number", &numbers["items"][0]);
    conforms(&doc, "NumberCounters", &numbers["items"][0]["counters"]);
    for e in d.get_all("/api/v1/webhook-events").await {
        conforms(&doc, "WebhookEvent", &e);
    }
    conforms(&doc, "Error", &d.get("/api/v1/customers/nobody").await.1);
    conforms(&doc, "Error", &d.get("/api/v1/customers/nobody").await.1);
}
