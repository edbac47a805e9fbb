//! Retried deliveries are acknowledged and not processed twice: the same body
//! again, the same message inside another batch, and after a restart.

use serde_json::json;

use crate::harness::*;

fn two_message_batch(first: &str, second: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "900000000000001", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550100001", "phone_number_id": "100000000000001"},
            "contacts": [{"profile": {"name": "Ana"}, "wa_id": "15550002222"}],
            "messages": [
                {"from": "15550002222", "id": first, "timestamp": "1768000100", "type": "text", "text": {"body": first}},
                {"from": "15550002222", "id": second, "timestamp": "1768000200", "type": "text", "text": {"body": second}}
            ]
        }}]}]
    }))
    .unwrap()
}

#[tokio::test]
async fn duplicates_are_acknowledged_and_stored_once_even_across_a_restart() {
    let mut d = Daemon::start().await;
    let body = text_body(
        "100000000000001",
        "15550002222",
        "wamid.D1",
        1768000000,
        "first",
    );
    d.post_ok(&body).await;
    d.post_ok(&body).await;
    // D1 again inside a different batch, next to a new message.
    d.post_ok(&two_message_batch("wamid.D1", "wamid.D2")).await;
    let msgs = d.all_messages().await;
    let wamids: Vec<&str> = msgs.iter().map(|m| m["wamid"].as_str().unwrap()).collect();
    assert_eq!(wamids, vec!["wamid.D1", "wamid.D2"]);
    let convs = d.get_all("/api/v1/conversations").await;
    assert_eq!(
        (
            convs.len(),
            convs[0]["messages"].as_u64(),
            convs[0]["unread"].as_u64()
        ),
        (1, Some(2), Some(2))
    );
    assert_eq!(
        d.metric("switchboard_dedupe_hits_total", &[("kind", "message")])
            .await,
        2.0
    );

    // Account-level events have no id: the content hash is the key.
    let quality = fixture("crafted/quality_update_flagged.json");
    d.post_ok(&quality).await;
    d.post_ok(&quality).await;
    assert_eq!(
        d.get_all("/api/v1/webhook-events?kind=account").await.len(),
        1
    );

    // Dedupe state is durable: after a crash, Meta's retries are still recognised.
    d.kill9();
    d.restart().await;
    d.post_ok(&body).await;
    d.post_ok(&two_message_batch("wamid.D1", "wamid.D2")).await;
    d.post_ok(&quality).await;
    assert_eq!(d.all_messages().await.len(), 2);
    assert_eq!(
        d.get_all("/api/v1/webhook-events?kind=account").await.len(),
        1
    );
    let convs = d.get_all("/api/v1/conversations").await;
    assert_eq!(convs[0]["messages"], 2);
    // And after a clean stop (state from the checkpoint, not from replay).
    assert!(d.terminate().success());
    d.restart().await;
    d.post_ok(&body).await;
    assert_eq!(d.all_messages().await.len(), 2);
    assert_eq!(d.get_all("/api/v1/conversations").await[0]["unread"], 2);
}
