//! Every payload kind of tests/fixtures/whatsapp/INDEX.md, posted signed to
//! the real daemon and checked through the read API.

use http::StatusCode;
use serde_json::{json, Value};

use crate::harness::*;

/// Each webhook body among the fixtures: (name, bytes). pywa files hold
/// several named bodies; `expected__message__*` are outbound bodies.
fn all_bodies() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs = vec![fixtures_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let name = path
                .strip_prefix(fixtures_dir())
                .unwrap()
                .display()
                .to_string();
            if !name.ends_with(".json") || name.contains("expected__message__") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            if name.starts_with("david-lev__pywa/") {
                let all: Value = serde_json::from_slice(&bytes).unwrap();
                for (key, body) in all.as_object().unwrap() {
                    out.push((format!("{name}#{key}"), serde_json::to_vec(body).unwrap()));
                }
            } else {
                out.push((name, bytes));
            }
        }
    }
    out.sort();
    out
}

/// Expected text bodies and sender name of a crafted text fixture.
fn texts_of(rel: &str) -> (Vec<String>, String) {
    let v: Value = serde_json::from_slice(&fixture(rel)).unwrap();
    let value = &v["entry"][0]["changes"][0]["value"];
    let texts = value["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"]["body"].as_str().unwrap().to_string())
        .collect();
    (
        texts,
        value["contacts"][0]["profile"]["name"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

#[tokio::test]
async fn every_fixture_is_accepted_and_the_daemon_stays_healthy() {
    let d = Daemon::start().await;
    let bodies = all_bodies();
    assert!(
        bodies.len() > 80,
        "expected the whole fixture set, found {}",
        bodies.len()
    );
    let mut accepted = 0;
    for (name, body) in &bodies {
        let (status, v) = d.post(body).await;
        if name.ends_with("deserialization__textMessageStatusRead.json") {
            // Upstream defect: a stray `{` after the object.
            assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {v}");
            assert_eq!(v["error"]["code"], "malformed_payload", "{name}");
        } else {
            assert_eq!(status, StatusCode::OK, "{name}: {v}");
            accepted += 1;
        }
    }
    assert_eq!(d.get_ok("/healthz").await["status"], "ok");
    assert_eq!(d.get_ok("/readyz").await["status"], "ready");
    let counted = d
        .metric(
            "switchboard_webhook_requests_total",
            &[("outcome", "accepted")],
        )
        .await;
    assert_eq!(counted as usize, accepted);
    // Something of every class arrived.
    assert!(!d.get_all("/api/v1/conversations").await.is_empty());
    for kind in ["account", "preference", "unrouted", "invalid"] {
        let events = d
            .get_all(&format!("/api/v1/webhook-events?kind={kind}"))
            .await;
        assert!(!events.is_empty(), "no {kind} events stored");
    }
}

#[tokio::test]
async fn non_ascii_text_is_kept_exactly_and_escaped_or_raw_bytes_are_the_same_message() {
    let d = Daemon::start().await;
    for rel in [
        "crafted/text_korean.json",
        "crafted/text_chinese.json",
        "crafted/text_arabic_rtl.json",
        "crafted/text_emoji_zwj.json",
    ] {
        assert_eq!(d.post_ok(&fixture(rel)).await["received"], 3, "{rel}");
        let (texts, name) = texts_of(rel);
        let v: Value = serde_json::from_slice(&fixture(rel)).unwrap();
        let from = v["entry"][0]["changes"][0]["value"]["messages"][0]["from"]
            .as_str()
            .unwrap()
            .to_string();
        let convs = d.get_all("/api/v1/conversations").await;
        let conv = convs
            .iter()
            .find(|c| c["customer"]["wa_id"] == from.as_str())
            .unwrap_or_else(|| panic!("{rel}: no conversation"));
        assert_eq!(conv["customer"]["name"], name.as_str(), "{rel}");
        assert_eq!(conv["messages"], 3);
        let msgs = d
            .get_all(&format!(
                "/api/v1/conversations/{}/messages",
                conv["id"].as_str().unwrap()
            ))
            .await;
        let got: Vec<&str> = msgs.iter().map(|m| m["text"].as_str().unwrap()).collect();
        assert_eq!(
            got,
            texts.iter().map(String::as_str).collect::<Vec<_>>(),
            "{rel}"
        );
        // `raw` is the item as Meta sent it.
        assert_eq!(msgs[0]["raw"]["text"]["body"], texts[0].as_str());
    }
    // The raw-UTF-8 twin of the Korean body carries the same three wamids.
    d.post_ok(&fixture("crafted/text_korean_raw_utf8.json"))
        .await;
    assert_eq!(d.all_messages().await.len(), 12);
    assert_eq!(
        d.metric("switchboard_dedupe_hits_total", &[("kind", "message")])
            .await,
        3.0
    );
}

#[tokio::test]
async fn customers_are_keyed_by_business_scoped_user_id_with_or_without_a_phone() {
    let d = Daemon::start().await;
    d.post_ok(&fixture("crafted/bsuid_only_sender.json")).await;
    d.post_ok(&fixture("crafted/bsuid_and_phone.json")).await;
    let only = d.get_ok("/api/v1/customers/KR.100000000000000001").await;
    assert_eq!(only["id"], "KR.100000000000000001");
    assert_eq!(only["user_id"], "KR.100000000000000001");
    assert_eq!(only["wa_id"], Value::Null);
    assert_eq!(only["username"], "@jisoo_k");
    // Reachable by phone number too, keyed by the user id.
    let both = d.get_ok("/api/v1/customers/821000000002").await;
    assert_eq!(both["id"], "KR.100000000000000002");
    assert_eq!(both["wa_id"], "821000000002");
    let convs = d.get_all("/api/v1/conversations").await;
    let ids: Vec<&str> = convs
        .iter()
        .map(|c| c["customer"]["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"KR.100000000000000001") && ids.contains(&"KR.100000000000000002"),
        "{ids:?}"
    );
    assert_eq!(
        d.get("/api/v1/customers/nobody").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn statuses_of_every_shape_are_kept_with_errors_and_pricing() {
    let d = Daemon::start().await;
    // PMP pricing and business-scoped recipient (WhatsApp's own v25 example).
    d.post_ok(&fixture("Secreto31126__whatsapp-api-js/sent.json"))
        .await;
    let m = d.get_ok("/api/v1/messages/ABGGFlA5Fpa").await;
    assert_eq!(
        m["message"],
        Value::Null,
        "only statuses are known for this wamid"
    );
    assert_eq!(m["status"], "sent");
    let s = &m["statuses"][0];
    assert_eq!(s["pricing"]["pricing_model"], "PMP");
    assert_eq!(s["pricing"]["type"], "regular");
    assert_eq!(s["pricing"]["category"], "marketing");
    assert_eq!(s["recipient_user_id"], "US.13491208655302741918");
    assert_eq!(s["timestamp"], "2017-09-08T20:36:28Z");
    // The older CBP shape with a conversation object.
    d.post_ok(&pywa("message_status.json", "sent")).await;
    let m = d.get_ok("/api/v1/messages/wamid.xyzxyz").await;
    assert_eq!(m["statuses"][0]["pricing"]["pricing_model"], "CBP");
    assert_eq!(
        m["statuses"][0]["conversation_id"],
        "7270432eae37498234f4444b35ffc5"
    );
    // Failures carry the platform's code and title.
    d.post_ok(&fixture("crafted/status_failed_131047.json"))
        .await;
    let v: Value = serde_json::from_slice(&fixture("crafted/status_failed_131047.json")).unwrap();
    let wamid = v["entry"][0]["changes"][0]["value"]["statuses"][0]["id"]
        .as_str()
        .unwrap();
    let m = d.get_ok(&format!("/api/v1/messages/{}", enc(wamid))).await;
    assert_eq!(m["status"], "failed");
    assert_eq!(m["statuses"][0]["errors"][0]["code"], 131047);
    assert!(m["statuses"][0]["errors"][0]["title"]
        .as_str()
        .unwrap()
        .contains("Re-engagement"));
    // Values outside sent < delivered < read are history, not state.
    for rel in [
        "crafted/status_unknown_value.json",
        "crafted/status_deleted.json",
    ] {
        d.post_ok(&fixture(rel)).await;
        let v: Value = serde_json::from_slice(&fixture(rel)).unwrap();
        let st = &v["entry"][0]["changes"][0]["value"]["statuses"][0];
        let m = d
            .get_ok(&format!(
                "/api/v1/messages/{}",
                enc(st["id"].as_str().unwrap())
            ))
            .await;
        assert_eq!(m["statuses"][0]["status"], st["status"], "{rel}");
        assert_eq!(m["status"], Value::Null, "{rel}");
    }
}

#[tokio::test]
async fn account_level_updates_reach_numbers_events_and_customers() {
    let d = Daemon::start().await;
    d.post_ok(&fixture("crafted/quality_update_flagged.json"))
        .await;
    let numbers = d.get_ok("/api/v1/numbers").await;
    let n = numbers["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["phone_number_id"] == "100000000000001")
        .unwrap()
        .clone();
    assert_eq!(n["quality_event"], "FLAGGED");
    assert_eq!(n["messaging_tier"], "TIER_1K");
    d.post_ok(&fixture("crafted/quality_update_throughput_upgrade.json"))
        .await;
    let numbers = d.get_ok("/api/v1/numbers").await;
    let n = numbers["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["phone_number_id"] == "100000000000001")
        .unwrap()
        .clone();
    assert_eq!(
        (n["quality_event"].as_str(), n["messaging_tier"].as_str()),
        (Some("THROUGHPUT_UPGRADE"), Some("TIER_UNLIMITED"))
    );

    d.post_ok(&fixture("crafted/template_status_paused.json"))
        .await;
    let events = d.get_all("/api/v1/webhook-events?kind=account").await;
    let paused = events
        .iter()
        .find(|e| e["field"] == "message_template_status_update")
        .expect("template event stored");
    assert_eq!(paused["event"], "PAUSED");
    assert_eq!(paused["raw"]["event"], "PAUSED");

    d.post_ok(&fixture("crafted/user_preferences_stop.json"))
        .await;
    let c = d.get_ok("/api/v1/customers/15550100901").await;
    assert_eq!(c["marketing"]["value"], "stop");
    assert_eq!(c["marketing"]["category"], "marketing_messages");
    assert_eq!(
        d.get_all("/api/v1/webhook-events?kind=preference")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn batches_are_processed_whole_and_duplicates_inside_them_stored_once() {
    let d = Daemon::start().await;
    let body = fixture("crafted/batch_multi_entry.json");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(d.post_ok(&body).await["received"], 12);
    let mut wamids = Vec::new();
    for entry in v["entry"].as_array().unwrap() {
        for change in entry["changes"].as_array().unwrap() {
            for m in change["value"]["messages"].as_array().into_iter().flatten() {
                wamids.push(m["id"].as_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(wamids.len(), 6);
    for w in &wamids {
        let m = d.get_ok(&format!("/api/v1/messages/{}", enc(w))).await;
        assert_eq!(m["message"]["direction"], "in");
    }
    // sent in entry[0], delivered in entry[2]: applied together.
    let m = d.get_ok("/api/v1/messages/wamid.CRAFTEDBATCHOUT0101").await;
    assert_eq!(m["status"], "delivered");
    let numbers: Vec<String> = d
        .get_all("/api/v1/conversations")
        .await
        .iter()
        .map(|c| c["number_id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        numbers.contains(&"100000000000001".into()) && numbers.contains(&"100000000000002".into())
    );

    d.post_ok(&fixture("crafted/batch_duplicate_ids.json"))
        .await;
    let m = d.get_ok("/api/v1/messages/wamid.CRAFTEDDUP0001").await;
    assert_eq!(m["message"]["type"], "text");
    assert_eq!(d.all_messages().await.len(), 6 + 2);
    assert_eq!(
        d.metric("switchboard_dedupe_hits_total", &[("kind", "message")])
            .await,
        1.0
    );
}

#[tokio::test]
async fn items_that_cannot_be_applied_are_kept_counted_and_acknowledged() {
    let d = Daemon::start().await;
    d.post_ok(&fixture("crafted/missing_sender.json")).await;
    d.post_ok(&fixture("crafted/non_numeric_from.json")).await;
    let invalid = d.get_all("/api/v1/webhook-events?kind=invalid").await;
    let reasons: Vec<&str> = invalid
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"missing_sender") && reasons.contains(&"invalid_sender"),
        "{reasons:?}"
    );
    assert!(
        invalid.iter().all(|e| e["raw"].is_object()),
        "the original item is kept"
    );
    assert_eq!(d.metric("switchboard_invalid_items_total", &[]).await, 2.0);
    assert!(d.get_all("/api/v1/conversations").await.is_empty());

    // A message with a non-numeric timestamp is kept, flagged, timed on arrival.
    d.post_ok(&fixture("crafted/invalid_timestamp.json")).await;
    let msgs = d.all_messages().await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["timestamp_valid"], false);
    assert_eq!(msgs[0]["raw"]["timestamp"], "yesterday");
}

/// A pywa message body with its (often shared) wamid replaced by `wamid`.
fn pywa_message(key: &str, wamid: &str) -> (Vec<u8>, Value) {
    let mut body: Value = serde_json::from_slice(&pywa("message.json", key)).unwrap();
    let m = &mut body["entry"][0]["changes"][0]["value"]["messages"][0];
    m["id"] = json!(wamid);
    let item = m.clone();
    (serde_json::to_vec(&body).unwrap(), item)
}

#[tokio::test]
async fn every_message_type_is_archived_with_its_content() {
    let d = Daemon::start().await;
    let cases: &[(&str, &str)] = &[
        ("text", "text"),
        ("image", "image"),
        ("media_with_url", "image"),
        ("video", "video"),
        ("document", "document"),
        ("audio", "audio"),
        ("voice", "audio"),
        ("static_sticker", "sticker"),
        ("animated_sticker", "sticker"),
        ("reaction", "reaction"),
        ("unreaction_empty", "reaction"),
        ("current_location", "location"),
        ("chosen_location", "location"),
        ("contacts", "contacts"),
        ("order", "order"),
        ("unsupported", "unsupported"),
        ("reply", "text"),
        ("forwarded", "text"),
        ("referral", "text"),
    ];
    for (i, (key, kind)) in cases.iter().enumerate() {
        let wamid = format!("wamid.KIND{i:03}");
        let (body, item) = pywa_message(key, &wamid);
        d.post_ok(&body).await;
        let m = d.get_ok(&format!("/api/v1/messages/{wamid}")).await;
        let msg = &m["message"];
        assert_eq!(msg["type"], *kind, "{key}");
        assert_eq!(msg["status"], "received", "{key}");
        assert_eq!(msg["raw"], item, "{key}: raw must be the item as sent");
        match *key {
            "image" | "video" | "document" | "audio" | "voice" | "static_sticker"
            | "animated_sticker" => {
                assert_eq!(msg["media"]["id"], item[*kind]["id"], "{key}");
                assert_eq!(msg["media"]["mime_type"], item[*kind]["mime_type"], "{key}");
            }
            _ => {}
        }
        match *key {
            "document" => {
                assert_eq!(msg["media"]["filename"], "filename.pdf");
                assert_eq!(msg["text"], "caption");
            }
            "voice" => assert_eq!(msg["media"]["voice"], true),
            "reaction" => assert_eq!(msg["text"], item["reaction"]["emoji"]),
            "unreaction_empty" => assert_eq!(msg["text"], Value::Null),
            "text" | "reply" | "forwarded" | "referral" => {
                assert_eq!(msg["text"], item["text"]["body"])
            }
            "chosen_location" => assert!(msg["text"]
                .as_str()
                .unwrap()
                .contains(item["location"]["name"].as_str().unwrap())),
            _ => {}
        }
        if *key == "reply" {
            assert_eq!(msg["context_id"], item["context"]["id"]);
        }
    }
    // The reaction emoji arrived as an escaped surrogate pair.
    assert_eq!(
        d.get_ok("/api/v1/messages/wamid.KIND009").await["message"]["text"],
        "\u{1F62E}"
    );
    // The first referral is the customer's lead origin.
    let c = d.get_ok("/api/v1/customers/972987654321").await;
    assert_eq!(c["referral"]["source_id"], "ADID");
    assert_eq!(c["referral"]["ctwa_clid"], "CTWA_CLID");
    // Interactive replies, template buttons and welcome requests.
    for (file, key) in [
        ("callback_button.json", "button"),
        ("callback_button.json", "quick_reply"),
        ("callback_selection.json", "callback"),
        ("flow_completion.json", "completion"),
    ] {
        d.post_ok(&pywa(file, key)).await;
    }
    d.post_ok(&fixture("crafted/request_welcome.json")).await;
    let types: Vec<String> = d
        .all_messages()
        .await
        .iter()
        .map(|m| m["type"].as_str().unwrap().to_string())
        .collect();
    for t in ["interactive", "button", "request_welcome"] {
        assert!(
            types.iter().any(|x| x == t),
            "no {t} message among {types:?}"
        );
    }
}

#[tokio::test]
async fn a_changed_number_keeps_the_same_customer_and_conversation() {
    let d = Daemon::start().await;
    d.post_ok(&text_body(
        "1122334455667",
        "972987654321",
        "wamid.BEFORE",
        1753851000,
        "hello",
    ))
    .await;
    d.post_ok(&pywa("system.json", "phone_number_change")).await;
    let c = d.get_ok("/api/v1/customers/972912345678").await;
    assert_eq!(c["id"], "972987654321");
    assert_eq!(c["wa_id"], "972912345678");
    d.post_ok(&text_body(
        "1122334455667",
        "972912345678",
        "wamid.AFTER",
        1753851400,
        "new phone",
    ))
    .await;
    let convs = d.get_all("/api/v1/conversations").await;
    assert_eq!(convs.len(), 1, "{convs:?}");
    assert_eq!(convs[0]["messages"], 3);
}

#[tokio::test]
async fn updates_for_numbers_we_do_not_manage_are_stored_unrouted_and_echoes_are_outbound() {
    let d = Daemon::start().await;
    d.post_ok(&text_body(
        UNMANAGED,
        "15550009999",
        "wamid.UNROUTED1",
        1768000000,
        "hi",
    ))
    .await;
    let unrouted = d.get_all("/api/v1/webhook-events?kind=unrouted").await;
    assert_eq!(unrouted.len(), 1);
    assert_eq!(unrouted[0]["number_id"], UNMANAGED);
    assert_eq!(unrouted[0]["raw"]["id"], "wamid.UNROUTED1");
    assert_eq!(
        d.metric("switchboard_unrouted_updates_total", &[]).await,
        1.0
    );
    assert!(d.get_all("/api/v1/conversations").await.is_empty());
    // Retried: acknowledged, stored once.
    d.post_ok(&text_body(
        UNMANAGED,
        "15550009999",
        "wamid.UNROUTED1",
        1768000000,
        "hi",
    ))
    .await;
    assert_eq!(
        d.get_all("/api/v1/webhook-events?kind=unrouted")
            .await
            .len(),
        1
    );

    // A message the business sent from the WhatsApp Business app (coexistence).
    d.post_ok(&text_body(
        "1122334455667",
        "972987654321",
        "wamid.IN1",
        1697043200,
        "question",
    ))
    .await;
    let echo = String::from_utf8(pywa("outgoing_message.json", "text"))
        .unwrap()
        .replace("<WHATSAPP_USER_PHONE_NUMBER>", "972987654321")
        .replace("<BSUID>", "US.13491208655302741918")
        .replace("<WHATSAPP_MESSAGE_ID>", "wamid.ECHO1");
    d.post_ok(echo.as_bytes()).await;
    let msgs = d.all_messages().await;
    assert_eq!(msgs.len(), 2);
    let out = msgs.iter().find(|m| m["wamid"] == "wamid.ECHO1").unwrap();
    assert_eq!(out["direction"], "out");
    assert_eq!(out["text"], "Test message");
}
