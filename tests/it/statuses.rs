//! Statuses apply monotonically whatever order they arrive in:
//! sent < delivered < read, failed is terminal, duplicates change nothing.

use crate::harness::*;

#[tokio::test]
async fn out_of_order_and_duplicated_statuses_end_at_the_right_state() {
    let d = Daemon::start().await;
    // The crafted fixture: read, sent, delivered in one change.
    d.post_ok(&fixture("crafted/statuses_out_of_order.json"))
        .await;
    let m = d.get_ok("/api/v1/messages/wamid.CRAFTEDOOO0001").await;
    assert_eq!(m["status"], "read");
    let order: Vec<&str> = m["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        vec!["sent", "delivered", "read"],
        "history in platform time order"
    );

    // Read first, then delivered, then duplicates of both, in separate deliveries.
    let n = "100000000000001";
    d.post_ok(&status_body(
        n,
        "15550003333",
        "wamid.S1",
        "read",
        1768000030,
    ))
    .await;
    d.post_ok(&status_body(
        n,
        "15550003333",
        "wamid.S1",
        "delivered",
        1768000020,
    ))
    .await;
    d.post_ok(&status_body(
        n,
        "15550003333",
        "wamid.S1",
        "read",
        1768000030,
    ))
    .await;
    d.post_ok(&status_body(
        n,
        "15550003333",
        "wamid.S1",
        "delivered",
        1768000020,
    ))
    .await;
    let m = d.get_ok("/api/v1/messages/wamid.S1").await;
    assert_eq!(m["status"], "read");
    assert_eq!(
        m["statuses"].as_array().unwrap().len(),
        2,
        "duplicates are not stored twice"
    );
    assert_eq!(
        d.metric("switchboard_dedupe_hits_total", &[("kind", "status")])
            .await,
        2.0
    );

    // Failed is terminal, even when a later status arrives.
    d.post_ok(&status_body(
        n,
        "15550003333",
        "wamid.S2",
        "sent",
        1768000040,
    ))
    .await;
    d.post_ok(&status_body(
        n,
        "15550003333",
        "wamid.S2",
        "failed",
        1768000041,
    ))
    .await;
    d.post_ok(&status_body(
        n,
        "15550003333",
        "wamid.S2",
        "delivered",
        1768000042,
    ))
    .await;
    assert_eq!(
        d.get_ok("/api/v1/messages/wamid.S2").await["status"],
        "failed"
    );

    // `delivered` may never come when `read` does.
    d.post_ok(&status_body(
        n,
        "15550003333",
        "wamid.S3",
        "sent",
        1768000050,
    ))
    .await;
    d.post_ok(&status_body(
        n,
        "15550003333",
        "wamid.S3",
        "read",
        1768000052,
    ))
    .await;
    assert_eq!(
        d.get_ok("/api/v1/messages/wamid.S3").await["status"],
        "read"
    );
}
