//! Parser behaviour on crafted bodies: the edge cases the fixtures lack
//! (bad shapes at every level, lenient types, identity rules, deep nesting).

use super::payload::{dedupe_hash, parse_delivery, Delivery, NumberDirectory, PayloadError};
use crate::event::{AccountEvent, Event, InvalidEvent, MessageEvent, StatusEvent, UnroutedEvent};

const NOW_MS: i64 = 1_768_500_000_999;
const NUMBER: &str = "100000000000001";

struct One;

impl NumberDirectory for One {
    fn is_managed(&self, id: &str) -> bool {
        id == NUMBER
    }
    fn number_for_display(&self, display: &str) -> Option<String> {
        (display == "15550100001").then(|| NUMBER.to_owned())
    }
}

fn parse(body: &str) -> Delivery {
    parse_delivery(body.as_bytes(), &One, NOW_MS).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn err(body: &[u8]) -> PayloadError {
    parse_delivery(body, &One, NOW_MS).unwrap_err()
}

/// A body with one change of `field` whose value is `value`.
fn change(field: &str, value: &str) -> String {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"900","changes":[{{"field":"{field}","value":{value}}}]}}]}}"#
    )
}

/// A `messages` value for our number with the given `messages` array.
fn messages_value(messages: &str) -> String {
    change(
        "messages",
        &format!(
            r#"{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550100001","phone_number_id":"{NUMBER}"}},"messages":{messages}}}"#
        ),
    )
}

fn one(d: &Delivery) -> &Event {
    assert_eq!(d.events.len(), 1, "{:?}", d.events);
    &d.events[0]
}
fn msg(d: &Delivery) -> &MessageEvent {
    match one(d) {
        Event::Message(m) => m,
        e => panic!("{e:?}"),
    }
}
fn invalid(d: &Delivery) -> &InvalidEvent {
    match one(d) {
        Event::Invalid(i) => i,
        e => panic!("{e:?}"),
    }
}
fn account(d: &Delivery) -> &AccountEvent {
    match one(d) {
        Event::Account(a) => a,
        e => panic!("{e:?}"),
    }
}
fn unrouted(e: &Event) -> &UnroutedEvent {
    match e {
        Event::Unrouted(u) => u,
        e => panic!("{e:?}"),
    }
}
fn status(e: &Event) -> &StatusEvent {
    match e {
        Event::Status(s) => s,
        e => panic!("{e:?}"),
    }
}

#[test]
fn dedupe_hash_is_truncated_sha256_with_separators() {
    assert_eq!(
        hex::encode(dedupe_hash(&[b"a", b"b"])),
        "59b271ae1bbcb1d31d41929817f4b16f"
    );
    assert_eq!(
        hex::encode(dedupe_hash(&[])),
        "e3b0c44298fc1c149afbf4c8996fb924"
    );
    assert_eq!(
        hex::encode(dedupe_hash(&[b"unrouted", b"{}"])),
        "5730e603a00422fca1b2f32b55b39d54"
    );
    assert_ne!(dedupe_hash(&[b"ab"]), dedupe_hash(&[b"a", b"b"]));
    assert_ne!(dedupe_hash(&[b"a", b"bc"]), dedupe_hash(&[b"ab", b"c"]));
}

#[test]
fn whole_body_errors() {
    let e = err(b"hello");
    assert!(
        matches!(&e, PayloadError::Malformed(m) if m.contains("line 1 column 1")),
        "{e}"
    );
    assert!(matches!(err(b""), PayloadError::Malformed(_)));
    assert!(matches!(err(b"   \n"), PayloadError::Malformed(_)));
    assert_eq!(
        err(b"[1,2]"),
        PayloadError::Malformed("body is not a JSON object".into())
    );
    assert_eq!(
        err(b"\"x\""),
        PayloadError::Malformed("body is not a JSON object".into())
    );
    assert_eq!(
        err(br#"{"object":"page","entry":[]}"#),
        PayloadError::WrongObject("page".into())
    );
    assert_eq!(
        err(br#"{"object":7,"entry":[]}"#),
        PayloadError::WrongObject("7".into())
    );
    assert_eq!(
        err(br#"{"entry":[]}"#),
        PayloadError::Malformed("`object` is missing".into())
    );
    let wa = r#""object":"whatsapp_business_account""#;
    assert_eq!(
        err(format!("{{{wa}}}").as_bytes()),
        PayloadError::Malformed("`entry` is missing".into())
    );
    assert_eq!(
        err(format!("{{{wa},\"entry\":null}}").as_bytes()),
        PayloadError::Malformed("`entry` is missing".into())
    );
    assert_eq!(
        err(format!("{{{wa},\"entry\":{{}}}}").as_bytes()),
        PayloadError::Malformed("`entry` is not an array".into())
    );
    // Trailing data, invalid UTF-8, a BOM.
    let e = err(format!("{{{wa},\"entry\":[]}} {{").as_bytes());
    assert!(
        matches!(&e, PayloadError::Malformed(m) if m.contains("trailing characters at line 1")),
        "{e}"
    );
    let mut bad = format!("{{{wa},\"entry\":[{{\"id\":\"x").into_bytes();
    bad.extend_from_slice(&[0xff, 0xfe]);
    bad.extend_from_slice(b"\",\"changes\":[]}]}");
    assert!(matches!(err(&bad), PayloadError::Malformed(_)));
    assert!(matches!(
        err(format!("\u{feff}{{{wa},\"entry\":[]}}").as_bytes()),
        PayloadError::Malformed(_)
    ));
    // A huge wrong object name is clipped in the message.
    let huge = format!(r#"{{"object":"{}","entry":[]}}"#, "é".repeat(10_000));
    let PayloadError::WrongObject(name) = err(huge.as_bytes()) else {
        panic!()
    };
    assert!(name.len() <= 100 && name.chars().all(|c| c == 'é'));
    // The message is fit for a 400 answer.
    assert_eq!(
        PayloadError::WrongObject("page".into()).to_string(),
        "webhook object is \"page\", expected \"whatsapp_business_account\""
    );
}

#[test]
fn empty_and_whitespace_bodies_of_the_right_shape() {
    let d = parse(" \n{\"object\":\"whatsapp_business_account\",\"entry\":[]}\n");
    assert_eq!((d.events.len(), d.changes), (0, 0));
    let d = parse(
        r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[]}],"extra":{"x":[1]}}"#,
    );
    assert_eq!((d.events.len(), d.changes), (0, 0));
}

#[test]
fn bad_entries_and_changes_are_invalid_events() {
    let d = parse(
        r#"{"object":"whatsapp_business_account","entry":[5,{"id":"900"},{"id":"901","changes":{}}]}"#,
    );
    let reasons: Vec<(&str, &str, &str)> = d
        .events
        .iter()
        .map(|e| match e {
            Event::Invalid(i) => (i.reason.as_str(), i.waba_id.as_str(), i.raw.as_str()),
            e => panic!("{e:?}"),
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("malformed_entry", "", "5"),
            ("malformed_entry", "900", r#"{"id":"900"}"#),
            ("malformed_entry", "901", r#"{"id":"901","changes":{}}"#)
        ]
    );
    assert_eq!(d.changes, 0);

    let body = r#"{"object":"whatsapp_business_account","entry":[{"id":"900","changes":[
        "x", {"value":{}}, {"field":"messages"}, {"field":"messages","value":[1]},
        {"field":"messages","value":null}, {"field":"","value":{}}, ["messages",{}]]}]}"#;
    let d = parse(body);
    assert_eq!(d.changes, 7);
    let got: Vec<(&str, &str)> = d
        .events
        .iter()
        .map(|e| match e {
            Event::Invalid(i) => (i.reason.as_str(), i.field.as_str()),
            e => panic!("{e:?}"),
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("malformed_change", ""),
            ("malformed_change", ""),
            ("malformed_change", "messages"),
            ("malformed_change", "messages"),
            ("malformed_change", "messages"),
            ("malformed_change", ""),
            ("malformed_change", ""),
        ]
    );
}

#[test]
fn bad_items_are_invalid_events() {
    let cases = [
        (r#"[7]"#, "not_an_object"),
        (r#"[{"from":"15550100201","timestamp":"1"}]"#, "missing_id"),
        (r#"[{"id":"","from":"15550100201"}]"#, "missing_id"),
        (r#"[{"id":"w1"}]"#, "missing_sender"),
        (
            r#"[{"id":"w1","from":null,"from_user_id":null}]"#,
            "missing_sender",
        ),
        (r#"[{"id":"w1","from":"+15550100201"}]"#, "invalid_sender"),
        (
            r#"[{"id":"w1","from":"123456789012345678901"}]"#,
            "invalid_sender",
        ),
        (r#"[{"id":"w1","from":""}]"#, "invalid_sender"),
        (r#"[{"id":"w1","from_user_id":"US 1"}]"#, "invalid_sender"),
        (
            r#"[{"id":"w1","from":"x","from_user_id":"US.\u0007"}]"#,
            "invalid_sender",
        ),
        (r#"{"id":"w1"}"#, "not_an_array"),
        // Duplicate keys are not a typed view serde will build.
        (r#"[{"id":"w1","id":"w2","from":"1"}]"#, "unreadable_item"),
    ];
    for (messages, reason) in cases {
        let d = parse(&messages_value(messages));
        let i = invalid(&d);
        assert_eq!(i.reason, reason, "{messages}");
        assert_eq!(i.number_id.as_deref(), Some(NUMBER));
        assert_eq!(i.waba_id, "900");
        assert_eq!(i.field, "messages");
    }
    let long_id = format!(r#"[{{"id":"w1","from_user_id":"{}"}}]"#, "U".repeat(65));
    assert_eq!(
        invalid(&parse(&messages_value(&long_id))).reason,
        "invalid_sender"
    );
    // Bad items do not hide good ones.
    let d = parse(&messages_value(
        r#"[1,{"id":"w1","from":"1555"},{"id":"w2"}]"#,
    ));
    let kinds: Vec<u16> = d.events.iter().map(Event::kind).collect();
    assert_eq!(kinds, vec![6, 1, 6]);
}

#[test]
fn user_id_sender_with_garbage_phone_is_kept_without_phone() {
    let d = parse(&messages_value(
        r#"[{"id":"w1","from":"not_a_number","from_user_id":"KR.1","type":"text","text":{"body":"hi"}}]"#,
    ));
    let m = msg(&d);
    assert_eq!(
        (m.customer.wa_id.as_deref(), m.customer.user_id.as_deref()),
        (None, Some("KR.1"))
    );
    let long_ok = "가".repeat(64); // 64 characters, 192 bytes: the limit counts characters.
    let d = parse(&messages_value(&format!(
        r#"[{{"id":"w1","from_user_id":"{long_ok}"}}]"#
    )));
    assert_eq!(msg(&d).customer.user_id.as_deref(), Some(long_ok.as_str()));
}

#[test]
fn lenient_types() {
    let d = parse(&messages_value(
        r#"[{"id":12345,"from":15550100201,"timestamp":1768467600,"type":"text","text":{"body":null},"context":"odd","image":{"id":1}}]"#,
    ));
    let m = msg(&d);
    assert_eq!(
        (m.wamid.as_str(), m.customer.wa_id.as_deref()),
        ("12345", Some("15550100201"))
    );
    assert_eq!((m.timestamp, m.timestamp_valid), (1_768_467_600, true));
    assert_eq!(
        (
            m.text.as_deref(),
            m.context_id.as_deref(),
            m.media.is_none()
        ),
        (None, None, true)
    );

    let d = parse(&messages_value(
        r#"[{"id":"w","from":"1","timestamp":"17.5","type":{"x":1}}]"#,
    ));
    let m = msg(&d);
    assert_eq!(
        (m.timestamp, m.timestamp_valid, m.kind.as_str()),
        (NOW_MS / 1000, false, "")
    );
    let d = parse(&messages_value(
        r#"[{"id":"w","from":"1","timestamp":-5,"type":7}]"#,
    ));
    assert_eq!((msg(&d).timestamp, msg(&d).kind.as_str()), (-5, "7"));

    // Unknown fields are ignored by the view but kept in raw.
    let raw = r#"{"id":"w","from":"1","type":"text","text":{"body":"b","future":[{"x":1}]},"new_thing":{"deep":[[[]]]}}"#;
    let d = parse(&messages_value(&format!("[{raw}]")));
    assert_eq!(msg(&d).raw, raw);
    assert_eq!(msg(&d).text.as_deref(), Some("b"));
}

#[test]
fn unknown_message_types_keep_readable_text() {
    let d = parse(&messages_value(
        r#"[{"id":"w","from":"1","type":"poll","poll":{"title":"Lunch?"}}]"#,
    ));
    assert_eq!(
        (msg(&d).kind.as_str(), msg(&d).text.as_deref()),
        ("poll", Some("Lunch?"))
    );
    let d = parse(&messages_value(
        r#"[{"id":"w","from":"1","type":"future","text":{"body":"still text"}}]"#,
    ));
    assert_eq!(msg(&d).text.as_deref(), Some("still text"));
    let d = parse(&messages_value(
        r#"[{"id":"w","from":"1","type":"future","future":[1]}]"#,
    ));
    assert_eq!(msg(&d).text, None);
}

#[test]
fn escapes_decode_and_raw_keeps_them() {
    let raw = r#"{"id":"w","from":"1","type":"text","text":{"body":"\uc548\ub155 \ud83d\udc4d \"q\" \/ \\"}}"#;
    let d = parse(&messages_value(&format!("[{raw}]")));
    assert_eq!(msg(&d).text.as_deref(), Some("안녕 👍 \"q\" / \\"));
    assert_eq!(msg(&d).raw, raw);
}

#[test]
fn lone_surrogate_makes_the_item_unreadable_not_the_delivery() {
    let d = parse(&messages_value(
        r#"[{"id":"w","from":"1","type":"text","text":{"body":"\ud83d"}},{"id":"w2","from":"1"}]"#,
    ));
    let kinds: Vec<u16> = d.events.iter().map(Event::kind).collect();
    assert_eq!(kinds, vec![6, 1]);
    let Event::Invalid(i) = &d.events[0] else {
        panic!()
    };
    assert_eq!(i.reason, "unreadable_item");
}

#[test]
fn contacts_matching() {
    let body = |contacts: &str, message: &str| {
        change(
            "messages",
            &format!(
                r#"{{"metadata":{{"phone_number_id":"{NUMBER}"}},"contacts":{contacts},"messages":[{message}]}}"#
            ),
        )
    };
    // Matched among several by wa_id.
    let d = parse(&body(
        r#"[{"profile":{"name":"A"},"wa_id":"1"},{"profile":{"name":"B","username":"@b"},"wa_id":"2","user_id":"U.2","parent_user_id":"P.2"}]"#,
        r#"{"id":"w","from":"2"}"#,
    ));
    let c = &msg(&d).customer;
    assert_eq!(
        (
            c.name.as_deref(),
            c.username.as_deref(),
            c.user_id.as_deref(),
            c.parent_user_id.as_deref()
        ),
        (Some("B"), Some("@b"), Some("U.2"), Some("P.2"))
    );
    // Matched by user id; the contact's phone is taken when the message has none.
    let d = parse(&body(
        r#"[{"profile":{"name":"A"},"wa_id":"1"},{"profile":{"name":"B"},"wa_id":"2","user_id":"U.2"}]"#,
        r#"{"id":"w","from_user_id":"U.2"}"#,
    ));
    assert_eq!(
        (
            msg(&d).customer.name.as_deref(),
            msg(&d).customer.wa_id.as_deref()
        ),
        (Some("B"), Some("2"))
    );
    // A lone contact without ids is used; one naming someone else is not.
    let d = parse(&body(
        r#"[{"profile":{"name":"Solo"}}]"#,
        r#"{"id":"w","from":"3"}"#,
    ));
    assert_eq!(msg(&d).customer.name.as_deref(), Some("Solo"));
    let d = parse(&body(
        r#"[{"profile":{"name":"Other"},"wa_id":"4","user_id":"U.4"}]"#,
        r#"{"id":"w","from":"3"}"#,
    ));
    assert_eq!(
        (
            msg(&d).customer.name.as_deref(),
            msg(&d).customer.user_id.as_deref()
        ),
        (None, None)
    );
    // Several unmatched contacts: none is guessed.
    let d = parse(&body(
        r#"[{"profile":{"name":"A"}},{"profile":{"name":"B"}}]"#,
        r#"{"id":"w","from":"3"}"#,
    ));
    assert_eq!(msg(&d).customer.name, None);
    // Odd contacts never break the message.
    let d = parse(&body(
        r#"[1,null,{"wa_id":{"x":1}},{"profile":[]}]"#,
        r#"{"id":"w","from":"3"}"#,
    ));
    assert_eq!(msg(&d).customer.wa_id.as_deref(), Some("3"));
    let d = parse(&body(r#"{"not":"an array"}"#, r#"{"id":"w","from":"3"}"#));
    assert_eq!(msg(&d).customer.wa_id.as_deref(), Some("3"));
}

#[test]
fn unknown_value_keys_are_one_extra_event() {
    let value = format!(
        r#"{{"metadata":{{"phone_number_id":"{NUMBER}"}},"messages":[{{"id":"w","from":"1"}}],"group_info":{{"id":"g"}},"history":[]}}"#
    );
    let d = parse(&change("messages", &value));
    assert_eq!(d.events.len(), 2);
    let Event::Account(a) = &d.events[1] else {
        panic!("{:?}", d.events)
    };
    assert_eq!(
        (a.event.as_deref(), a.detail.as_deref()),
        (Some("unhandled_keys"), Some("group_info,history"))
    );
    assert_eq!(a.raw, value);
    assert_eq!(a.number_id.as_deref(), Some(NUMBER));
    assert_eq!(
        a.dedupe,
        dedupe_hash(&[b"900", b"messages.unhandled_keys", value.as_bytes()])
    );
    assert_eq!(a.route, crc32c::crc32c(b"900"));
    // Unmanaged number: unrouted, still nothing lost.
    let other = value.replace(NUMBER, "555");
    let d = parse(&change("messages", &other));
    let items: Vec<&str> = d.events.iter().map(|e| unrouted(e).item.as_str()).collect();
    assert_eq!(items, vec!["message", "unhandled_keys"]);
    assert_eq!(unrouted(&d.events[1]).raw, other);
    assert_eq!(unrouted(&d.events[0]).route, crc32c::crc32c(b"555"));
}

#[test]
fn no_metadata_means_unrouted() {
    let d = parse(&change(
        "messages",
        r#"{"messages":[{"id":"w","from":"1"}],"statuses":"odd"}"#,
    ));
    let got: Vec<(&str, &str)> = d
        .events
        .iter()
        .map(|e| (unrouted(e).item.as_str(), unrouted(e).number_id.as_str()))
        .collect();
    assert_eq!(got, vec![("message", ""), ("status", "")]);
}

#[test]
fn value_errors_alone() {
    let value = format!(
        r#"{{"metadata":{{"phone_number_id":"{NUMBER}"}},"errors":[{{"code":"0","title":"auth"}}]}}"#
    );
    let d = parse(&change("messages", &value));
    let a = account(&d);
    assert_eq!(
        (a.event.as_deref(), a.detail.as_deref()),
        (Some("errors"), Some("0"))
    );
    assert_eq!(a.raw, r#"[{"code":"0","title":"auth"}]"#);
    assert_eq!(a.timestamp, NOW_MS / 1000);
}

#[test]
fn statuses_edge_cases() {
    let value = |statuses: &str| {
        change(
            "messages",
            &format!(r#"{{"metadata":{{"phone_number_id":"{NUMBER}"}},"statuses":{statuses}}}"#),
        )
    };
    let cases = [
        (r#"[{"status":"sent","recipient_id":"1"}]"#, "missing_id"),
        (r#"[{"id":"w","recipient_id":"1"}]"#, "missing_status"),
        (
            r#"[{"id":"w","status":"","recipient_id":"1"}]"#,
            "missing_status",
        ),
        (r#"[{"id":"w","status":"sent"}]"#, "missing_recipient"),
        (
            r#"[{"id":"w","status":"sent","recipient_id":"group-1"}]"#,
            "invalid_recipient",
        ),
    ];
    for (statuses, reason) in cases {
        assert_eq!(
            invalid(&parse(&value(statuses))).reason,
            reason,
            "{statuses}"
        );
    }
    // Recipient by user id only; lenient error and pricing fields.
    let d = parse(&value(
        r#"[{"id":"w","status":"failed","timestamp":"x","recipient_user_id":"US.9","errors":[{"code":"131047"},7,{"title":"no code"}],"pricing":{"billable":"true","pricing_model":null}}]"#,
    ));
    let s = status(one(&d));
    assert_eq!(
        (s.customer.wa_id.as_deref(), s.customer.user_id.as_deref()),
        (None, Some("US.9"))
    );
    let codes: Vec<i64> = s.errors.iter().map(|e| e.code).collect();
    assert_eq!(codes, vec![131047, 0]);
    let p = s.pricing.clone().unwrap();
    assert_eq!((p.billable, p.model), (Some(true), None));
    assert_eq!((s.timestamp, s.timestamp_valid), (NOW_MS / 1000, false));
}

#[test]
fn echoes_need_a_recipient() {
    let value = |echo: &str| {
        change(
            "smb_message_echoes",
            &format!(
                r#"{{"metadata":{{"phone_number_id":"{NUMBER}"}},"message_echoes":[{echo}]}}"#
            ),
        )
    };
    assert_eq!(
        invalid(&parse(&value(r#"{"id":"w","from":"1"}"#))).reason,
        "missing_recipient"
    );
    assert_eq!(
        invalid(&parse(&value(r#"{"id":"w","to":"abc"}"#))).reason,
        "invalid_recipient"
    );
    assert_eq!(
        invalid(&parse(&value(r#"{"id":"w","to":"abc"}"#))).field,
        "smb_message_echoes"
    );
}

#[test]
fn preferences_edge_cases() {
    let value = |prefs: &str, number: &str| {
        change(
            "user_preferences",
            &format!(
                r#"{{"metadata":{{"phone_number_id":"{number}"}},"user_preferences":{prefs}}}"#
            ),
        )
    };
    assert_eq!(
        invalid(&parse(&value(r#"[{"wa_id":"1","category":"m"}]"#, NUMBER))).reason,
        "missing_value"
    );
    assert_eq!(
        invalid(&parse(&value(r#"[{"value":"stop"}]"#, NUMBER))).reason,
        "missing_sender"
    );
    let d = parse(&value(
        r#"[{"user_id":"US.1","value":"stop","timestamp":"1768469900"}]"#,
        NUMBER,
    ));
    let Event::Preference(p) = one(&d) else {
        panic!()
    };
    assert_eq!(
        (
            p.customer.user_id.as_deref(),
            p.timestamp,
            p.category.as_str()
        ),
        (Some("US.1"), 1_768_469_900, "")
    );
    let d = parse(&value(r#"[{"wa_id":"1","value":"stop"}]"#, "555"));
    assert_eq!(unrouted(one(&d)).item, "user_preference");
}

#[test]
fn calls_split_into_statuses_and_one_account_event() {
    let value = format!(
        r#"{{"metadata":{{"phone_number_id":"{NUMBER}"}},"statuses":[{{"id":"wacid.1","type":"call","status":"ACCEPTED","recipient_id":"1"}}],"calls":[{{"id":"wacid.1","event":"connect","timestamp":"1768000000","direction":"USER_INITIATED"}}]}}"#
    );
    let d = parse(&change("calls", &value));
    assert_eq!(d.events.len(), 2);
    assert_eq!(status(&d.events[0]).status, "ACCEPTED");
    let Event::Account(a) = &d.events[1] else {
        panic!()
    };
    assert_eq!(
        (a.event.as_deref(), a.detail.as_deref(), a.timestamp),
        (Some("connect"), Some("USER_INITIATED"), 1_768_000_000)
    );
    assert_eq!(a.raw, value);
    // Only call statuses: nothing account-level to report.
    let only = format!(
        r#"{{"metadata":{{"phone_number_id":"{NUMBER}"}},"statuses":[{{"id":"wacid.1","status":"RINGING","recipient_id":"1"}}]}}"#
    );
    assert_eq!(parse(&change("calls", &only)).events.len(), 1);
}

#[test]
fn unknown_fields_are_account_events() {
    let d = parse(&change(
        "brand_new_field",
        r#"{"status":"ON","reason":"because","timestamp":1700000000}"#,
    ));
    let a = account(&d);
    assert_eq!(
        (
            a.field.as_str(),
            a.event.as_deref(),
            a.detail.as_deref(),
            a.timestamp
        ),
        (
            "brand_new_field",
            Some("ON"),
            Some("because"),
            1_700_000_000
        )
    );
    assert_eq!(a.number_id, None);
    let d = parse(&change(
        "security",
        r#"{"display_phone_number":"15550100001","event":"PIN_CHANGED"}"#,
    ));
    let a = account(&d);
    assert_eq!(
        (a.event.as_deref(), a.number_id.as_deref()),
        (Some("PIN_CHANGED"), Some(NUMBER))
    );
    // An unmanaged metadata id falls back to the display number.
    let d = parse(&change(
        "flows",
        r#"{"metadata":{"phone_number_id":"555","display_phone_number":"15550100001"},"event":"FLOW_STATUS_CHANGE","flow_id":123}"#,
    ));
    let a = account(&d);
    assert_eq!(
        (a.detail.as_deref(), a.number_id.as_deref()),
        (Some("123"), Some(NUMBER))
    );
    let d = parse(&change("x", "{}"));
    assert_eq!(
        (account(&d).event.as_deref(), account(&d).detail.as_deref()),
        (None, None)
    );
}

#[test]
fn deep_nesting_does_not_overflow() {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let n = 200_000;
    // Top level, inside an item, inside an account value, inside an unknown key.
    assert!(matches!(
        err(deep(n).as_bytes()),
        PayloadError::Malformed(_)
    ));
    let d = parse(&messages_value(&format!(
        r#"[{{"id":"w","from":"1","x":{}}}]"#,
        deep(n)
    )));
    assert_eq!(msg(&d).wamid, "w");
    let d = parse(&messages_value(&format!(
        r#"[{{"id":"w","from":"1","type":"text","text":{}}}]"#,
        deep(n)
    )));
    assert_eq!(msg(&d).text, None);
    let d = parse(&change(
        "account_update",
        &format!(r#"{{"event":{},"ban_info":{}}}"#, deep(n), deep(n)),
    ));
    assert_eq!(account(&d).event, None);
    let body = format!(
        r#"{{"object":"whatsapp_business_account","entry":[],"x":{}}}"#,
        deep(n)
    );
    assert_eq!(parse(&body).events.len(), 0);
    // Unclosed nesting is malformed, not a crash.
    assert!(matches!(
        err(format!(
            r#"{{"object":"whatsapp_business_account","entry":{}"#,
            "[".repeat(n)
        )
        .as_bytes()),
        PayloadError::Malformed(_)
    ));
}

#[test]
fn many_items_scale_linearly() {
    // 1,000 messages with 1,000 contacts: the documented items × contacts bound.
    let contacts: Vec<String> = (0..1000)
        .map(|i| format!(r#"{{"profile":{{"name":"N{i}"}},"wa_id":"{i}"}}"#))
        .collect();
    let messages: Vec<String> = (0..1000)
        .map(|i| format!(r#"{{"id":"w{i}","from":"{i}","type":"text","text":{{"body":"t"}}}}"#))
        .collect();
    let value = format!(
        r#"{{"metadata":{{"phone_number_id":"{NUMBER}"}},"contacts":[{}],"messages":[{}]}}"#,
        contacts.join(","),
        messages.join(",")
    );
    let d = parse(&change("messages", &value));
    assert_eq!(d.events.len(), 1000);
    let Event::Message(m) = &d.events[999] else {
        panic!()
    };
    assert_eq!(m.customer.name.as_deref(), Some("N999"));
}

#[test]
fn duplicate_keys_in_containers_are_tolerated() {
    // Entry and change: the first of duplicate keys wins; nothing is refused.
    let body = r#"{"object":"whatsapp_business_account","entry":[{"id":"a","id":"b","changes":[{"field":"x","field":"y","value":{"event":"E"},"value":5}],"changes":7}]}"#;
    let a = account(&parse(body)).clone();
    assert_eq!(
        (a.waba_id.as_str(), a.field.as_str(), a.event.as_deref()),
        ("a", "x", Some("E"))
    );
    // A first `changes` that is not an array makes the entry malformed, and
    // its raw is found the same way.
    let body =
        r#"{"object":"whatsapp_business_account","entry":[{"id":"a","changes":{},"changes":[]}]}"#;
    let i = invalid(&parse(body)).clone();
    assert_eq!(
        (i.reason.as_str(), i.raw.as_str()),
        ("malformed_entry", r#"{"id":"a","changes":{},"changes":[]}"#)
    );
    // At the top level duplicates are the body's fault: a clear 400.
    let e = err(br#"{"object":"whatsapp_business_account","entry":[],"entry":[]}"#);
    assert!(
        matches!(&e, PayloadError::Malformed(m) if m.contains("duplicate field `entry`")),
        "{e}"
    );
}

#[test]
fn many_malformed_parts_stay_linear() {
    // Each malformed part's raw is looked up once per level, not per part.
    let n = 50_000;
    let entries = vec!["1"; n].join(",");
    let d = parse(&format!(
        r#"{{"object":"whatsapp_business_account","entry":[{entries}]}}"#
    ));
    assert_eq!(d.events.len(), n);
    let changes = vec![r#"{"field":"x"}"#; n].join(",");
    let body = format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"9","changes":[{changes}]}},{{"id":"8","changes":[2,3]}}]}}"#
    );
    let started = std::time::Instant::now();
    let d = parse(&body);
    assert_eq!((d.events.len(), d.changes), (n + 2, n + 2));
    let Event::Invalid(last) = d.events.last().unwrap() else {
        panic!()
    };
    assert_eq!((last.raw.as_str(), last.waba_id.as_str()), ("3", "8"));
    let Event::Invalid(first) = &d.events[0] else {
        panic!()
    };
    assert_eq!(first.raw, r#"{"field":"x"}"#);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn duplicate_bad_arrays_do_not_multiply_the_value() {
    // 20,000 `"messages":1` members: one invalid event holding the value once.
    let members = vec![r#""messages":1"#; 20_000].join(",");
    let value = format!(r#"{{"metadata":{{"phone_number_id":"{NUMBER}"}},{members}}}"#);
    let d = parse(&change("messages", &value));
    let i = invalid(&d);
    assert_eq!(
        (i.reason.as_str(), i.raw.len()),
        ("not_an_array", value.len())
    );
    let d = parse(&change("messages", &value.replace(NUMBER, "555")));
    assert_eq!(unrouted(one(&d)).item, "message");
}
