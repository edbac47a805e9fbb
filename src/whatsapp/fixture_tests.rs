//! Every webhook fixture under [`fixtures_dir`](super::fixtures_dir) through
//! the parser, with the outcome INDEX.md describes for each kind.
//!
//! Bodies: one per file, except the pywa (`david-lev__pywa/`) files, where
//! each top-level key holds one body (named `file#key` here, as in INDEX.md).
//! The Bindambc `expected__message__*` files are outbound request bodies and
//! are skipped.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::value::RawValue;

use super::payload::{parse_delivery, Delivery, NumberDirectory, PayloadError};
use crate::event::{
    AccountEvent, Direction, Event, InvalidEvent, MessageEvent, PreferenceEvent, StatusEvent,
};

const RECEIVED_MS: i64 = 1_800_000_000_123;

/// (display number, phone_number_id) of every number in the fixtures.
const NUMBERS: &[(&str, &str)] = &[
    ("15550100001", "100000000000001"),
    ("15550100002", "100000000000002"),
    ("15550783881", "106540352242922"),
    ("101010101010", "109999999999999"),
    ("43330585569", "409552778964973"),
    ("972123456789", "1122334455667"),
    ("16505551111", "123456123"),
    ("16315553602", "37489742"),
    ("16315553601", "743897493242"),
    ("(none)", "5483758353"),
    ("(none)", "1111111111111"),
    (
        "<BUSINESS_DISPLAY_PHONE_NUMBER>",
        "<BUSINESS_PHONE_NUMBER_ID>",
    ),
];

/// Manages every number of the fixtures.
pub(super) struct FixtureNumbers;

impl NumberDirectory for FixtureNumbers {
    fn is_managed(&self, id: &str) -> bool {
        NUMBERS.iter().any(|(_, n)| *n == id)
    }
    fn number_for_display(&self, display: &str) -> Option<String> {
        NUMBERS
            .iter()
            .find(|(d, _)| *d == display)
            .map(|(_, n)| n.to_string())
    }
}

/// Manages nothing.
struct NoNumbers;

impl NumberDirectory for NoNumbers {
    fn is_managed(&self, _: &str) -> bool {
        false
    }
    fn number_for_display(&self, _: &str) -> Option<String> {
        None
    }
}

/// Every webhook body of the fixtures, by name.
pub(super) fn bodies() -> BTreeMap<String, Vec<u8>> {
    let root = super::fixtures_dir();
    let mut out = BTreeMap::new();
    for dir in [
        "david-lev__pywa",
        "Secreto31126__whatsapp-api-js",
        "Bindambc__whatsapp-business-java-api",
        "crafted",
    ] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("fixture dir {}: {e}", root.join(dir).display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for path in files {
            let file = path.file_name().unwrap().to_str().unwrap().to_owned();
            if file.starts_with("expected__message__") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            if dir == "david-lev__pywa" {
                // Each key is one body; RawValue keeps its exact bytes.
                let map: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(&bytes).unwrap();
                for (key, body) in map {
                    out.insert(
                        format!("{dir}/{file}#{key}"),
                        body.get().as_bytes().to_vec(),
                    );
                }
            } else {
                out.insert(format!("{dir}/{file}"), bytes);
            }
        }
    }
    out
}

const BROKEN: &str =
    "Bindambc__whatsapp-business-java-api/deserialization__textMessageStatusRead.json";

fn body(name: &str) -> Vec<u8> {
    let path = super::fixtures_dir().join(name.split('#').next().unwrap());
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match name.split_once('#') {
        None => bytes,
        Some((_, key)) => {
            let map: HashMap<String, Box<RawValue>> = serde_json::from_slice(&bytes).unwrap();
            map[key].get().as_bytes().to_vec()
        }
    }
}

fn parse(name: &str) -> Delivery {
    parse_delivery(&body(name), &FixtureNumbers, RECEIVED_MS)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn messages(d: &Delivery) -> Vec<&MessageEvent> {
    d.events
        .iter()
        .filter_map(|e| {
            if let Event::Message(m) = e {
                Some(m)
            } else {
                None
            }
        })
        .collect()
}
fn statuses(d: &Delivery) -> Vec<&StatusEvent> {
    d.events
        .iter()
        .filter_map(|e| {
            if let Event::Status(s) = e {
                Some(s)
            } else {
                None
            }
        })
        .collect()
}
fn accounts(d: &Delivery) -> Vec<&AccountEvent> {
    d.events
        .iter()
        .filter_map(|e| {
            if let Event::Account(a) = e {
                Some(a)
            } else {
                None
            }
        })
        .collect()
}
fn invalids(d: &Delivery) -> Vec<&InvalidEvent> {
    d.events
        .iter()
        .filter_map(|e| {
            if let Event::Invalid(i) = e {
                Some(i)
            } else {
                None
            }
        })
        .collect()
}
fn preferences(d: &Delivery) -> Vec<&PreferenceEvent> {
    d.events
        .iter()
        .filter_map(|e| {
            if let Event::Preference(p) = e {
                Some(p)
            } else {
                None
            }
        })
        .collect()
}

fn only_message(name: &str) -> MessageEvent {
    let d = parse(name);
    assert_eq!(d.events.len(), 1, "{name}: {:?}", d.events);
    messages(&d)
        .pop()
        .unwrap_or_else(|| panic!("{name}: {:?}", d.events))
        .clone()
}

fn only_status(name: &str) -> StatusEvent {
    let d = parse(name);
    assert_eq!(d.events.len(), 1, "{name}: {:?}", d.events);
    statuses(&d)
        .pop()
        .unwrap_or_else(|| panic!("{name}: {:?}", d.events))
        .clone()
}

fn only_account(name: &str) -> AccountEvent {
    let d = parse(name);
    assert_eq!(d.events.len(), 1, "{name}: {:?}", d.events);
    accounts(&d)
        .pop()
        .unwrap_or_else(|| panic!("{name}: {:?}", d.events))
        .clone()
}

fn raw_of(e: &Event) -> &str {
    e.raw().expect("webhook events keep their raw JSON")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Bodies whose invalid events are expected, and why.
const EXPECTED_INVALID: &[(&str, &str)] = &[
    ("crafted/missing_sender.json", "missing_sender"),
    ("crafted/non_numeric_from.json", "invalid_sender"),
    // `from` is the placeholder `<WHATSAPP_USER_PHONE_NUMBER>`.
    (
        "david-lev__pywa/deleted_message.json#revoke",
        "invalid_sender",
    ),
    // A group status: `recipient_id` is a group id, not a phone number.
    (
        "david-lev__pywa/message_status.json#group",
        "invalid_recipient",
    ),
];

#[test]
fn every_fixture_parses() {
    let all = bodies();
    assert!(all.len() > 100, "only {} fixture bodies found", all.len());
    let mut totals: BTreeMap<u16, usize> = BTreeMap::new();
    for (name, bytes) in &all {
        let result = parse_delivery(bytes, &FixtureNumbers, RECEIVED_MS);
        if name == BROKEN {
            assert!(
                matches!(&result, Err(PayloadError::Malformed(m)) if m.contains("trailing")),
                "{name}: {result:?}"
            );
            continue;
        }
        let d = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(d.changes >= 1, "{name}");
        assert!(!d.events.is_empty(), "{name}: no events");
        for e in &d.events {
            *totals.entry(e.kind()).or_default() += 1;
            // The raw JSON is an exact slice of the body.
            assert!(
                contains(bytes, raw_of(e).as_bytes()),
                "{name}: raw is not a slice of the body"
            );
            assert!(!matches!(e, Event::Unrouted(_)), "{name}: unrouted {e:?}");
            if let Event::Invalid(i) = e {
                assert!(
                    EXPECTED_INVALID.contains(&(name.as_str(), i.reason.as_str())),
                    "{name}: unexpected invalid {i:?}"
                );
            }
            // Every event survives the journal codec.
            let bytes = e.encode().unwrap();
            assert_eq!(&Event::decode(e.kind(), e.version(), &bytes).unwrap(), e);
        }
    }
    // Kinds seen across the fixtures: message, status, account, preference, invalid.
    for kind in [1u16, 2, 3, 4, 6] {
        assert!(
            totals.get(&kind).copied().unwrap_or(0) > 0,
            "no events of kind {kind}: {totals:?}"
        );
    }
}

#[test]
fn broken_upstream_file_is_malformed_with_position() {
    let err = parse_delivery(&body(BROKEN), &FixtureNumbers, RECEIVED_MS).unwrap_err();
    let PayloadError::Malformed(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(msg.contains("line 29"), "{msg}");
}

fn texts(d: &Delivery) -> Vec<&str> {
    messages(d)
        .iter()
        .map(|m| m.text.as_deref().unwrap())
        .collect()
}

#[test]
fn korean_text_decoded_and_equal_to_raw_utf8_twin() {
    let escaped = parse("crafted/text_korean.json");
    let raw_utf8 = parse("crafted/text_korean_raw_utf8.json");
    assert_eq!(
        texts(&escaped),
        vec![
            "안녕하세요! 이 블루투스 스피커 가격이 얼마예요? 2개 사면 할인되나요?",
            "제주도까지 배송비는 얼마인가요? 주문하면 보통 며칠 걸려요?",
            "1/14에 주문했는데 아직 배송 준비중이에요. 주문번호 KR-20260114-0042 배송 상태 확인 부탁드립니다.",
        ]
    );
    let (a, b) = (messages(&escaped), messages(&raw_utf8));
    assert_eq!(a.len(), 3);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.customer.name.as_deref(), Some("김민준"));
        assert_eq!(x.customer.wa_id.as_deref(), Some("821000000003"));
        // Same content; only the raw bytes differ (escapes kept as sent).
        let (mut x, mut y) = ((*x).clone(), (*y).clone());
        assert!(
            x.raw.contains("\\uc548") || x.raw.contains("\\u"),
            "{}",
            x.raw
        );
        assert!(!y.raw.contains("\\u"));
        x.raw.clear();
        y.raw.clear();
        assert_eq!(x, y);
    }
}

#[test]
fn chinese_arabic_emoji_text_decoded() {
    let zh = parse("crafted/text_chinese.json");
    assert_eq!(
        texts(&zh),
        vec![
            "你好，请问这款保温杯多少钱？买两个有优惠吗？",
            "寄到上海包邮吗？一般几天能到？",
            "我的订单号是 CN20260114007，显示已发货三天了，物流一直没更新，麻烦帮我查一下。",
        ]
    );
    assert_eq!(messages(&zh)[0].customer.name.as_deref(), Some("王小明"));
    let ar = parse("crafted/text_arabic_rtl.json");
    assert_eq!(
        texts(&ar),
        vec![
            "مرحباً، كم سعر سماعة البلوتوث هذه؟ هل السعر ٢٥٠ ريال شامل الضريبة؟",
            "هل يتوفر الشحن إلى جدة؟ وكم تكلفة التوصيل؟",
            "طلبت يوم الأحد ورقم طلبي SA-48213، ما هي حالة الطلب؟ لم يصلني أي تحديث.",
        ]
    );
    assert_eq!(messages(&ar)[0].customer.name.as_deref(), Some("أحمد"));
    let emoji = parse("crafted/text_emoji_zwj.json");
    let t = texts(&emoji);
    assert_eq!(t[0], "Hi! How much is the family photo package? We are 4 \u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}\u{200D}\u{1F466}");
    assert_eq!(t[1], "Do you ship to 🇰🇷 and 🇯🇵? How much is shipping? 📦✈️");
    assert_eq!(
        t[2],
        "Any update on order #1042? Still says processing 🤷🏽‍♀️🙏🏽"
    );
    assert!(t[1].contains("\u{2708}\u{FE0F}"));
    assert_eq!(messages(&emoji)[0].customer.name.as_deref(), Some("Sam 🌻"));
}

#[test]
fn reaction_emoji_escaped_and_raw() {
    let m = only_message("david-lev__pywa/message.json#reaction");
    assert_eq!(m.kind, "reaction");
    assert_eq!(m.text.as_deref(), Some("😮"));
    assert!(
        m.raw.contains("\\ud83d\\ude2e"),
        "raw keeps the escape: {}",
        m.raw
    );
    let m = only_message("Bindambc__whatsapp-business-java-api/deserialization__reactMessage.json");
    assert_eq!(m.text.as_deref(), Some("👍"));
    for name in [
        "david-lev__pywa/message.json#unreaction_empty",
        "david-lev__pywa/message.json#unreaction_no_emoji",
    ] {
        let m = only_message(name);
        assert_eq!(
            (m.kind.as_str(), m.text.as_deref()),
            ("reaction", None),
            "{name}"
        );
    }
}

#[test]
fn bsuid_identities() {
    let m = only_message("crafted/bsuid_only_sender.json");
    assert_eq!(m.customer.user_id.as_deref(), Some("KR.100000000000000001"));
    assert_eq!(m.customer.wa_id, None);
    assert_eq!(m.customer.username.as_deref(), Some("@jisoo_k"));
    assert_eq!(m.customer.name.as_deref(), Some("Jisoo"));
    assert_eq!(m.customer.parent_user_id, None);
    assert_eq!(m.customer.home, "");
    assert_eq!(m.route, 0);

    let m = only_message("crafted/bsuid_and_phone.json");
    assert_eq!(m.customer.user_id.as_deref(), Some("KR.100000000000000002"));
    assert_eq!(m.customer.wa_id.as_deref(), Some("821000000002"));
    assert_eq!(m.customer.username.as_deref(), Some("@minho.lee"));

    let m = only_message("Secreto31126__whatsapp-api-js/incoming.json");
    assert_eq!(m.customer.wa_id.as_deref(), Some("16315551181"));
    assert_eq!(
        m.customer.user_id.as_deref(),
        Some("US.13491208655302741918")
    );
    assert_eq!(
        m.customer.parent_user_id.as_deref(),
        Some("US.11815799212886844830")
    );
    assert_eq!(m.customer.username.as_deref(), Some("@testusername"));
    assert_eq!(m.number_id, "123456123");
    assert_eq!(m.waba_id, "1");

    // user_id from the matching contact when the message carries none.
    let m = only_message("david-lev__pywa/message.json#text");
    assert_eq!(
        m.customer.user_id.as_deref(),
        Some("US.13491208655302741918")
    );
    assert_eq!(
        m.customer.parent_user_id.as_deref(),
        Some("US.ENT.11815799212886844830")
    );
    assert_eq!(m.customer.name.as_deref(), Some("Test Name"));
    assert_eq!(
        (m.kind.as_str(), m.text.as_deref()),
        ("text", Some("Body Text"))
    );
    assert_eq!((m.timestamp, m.timestamp_valid), (1_697_043_223, true));
    assert_eq!(m.direction, Direction::In);
    assert_eq!(m.received_at_ms, RECEIVED_MS);

    let statuses_with_bsuid = ["sent", "delivered", "read"];
    for s in statuses_with_bsuid {
        let st = only_status(&format!("Secreto31126__whatsapp-api-js/{s}.json"));
        assert_eq!(st.status, s);
        assert_eq!(st.customer.wa_id.as_deref(), Some("16315551181"));
        assert_eq!(
            st.customer.user_id.as_deref(),
            Some("US.13491208655302741918")
        );
        assert_eq!(
            st.customer.parent_user_id.as_deref(),
            Some("US.11815799212886844830")
        );
    }
}

#[test]
fn status_shapes() {
    // PMP pricing.
    let s = only_status("Secreto31126__whatsapp-api-js/sent.json");
    let p = s.pricing.clone().unwrap();
    assert_eq!(
        (
            p.billable,
            p.model.as_deref(),
            p.kind.as_deref(),
            p.category.as_deref()
        ),
        (Some(true), Some("PMP"), Some("regular"), Some("marketing"))
    );
    // CBP pricing with a conversation.
    let s = only_status("david-lev__pywa/message_status.json#sent");
    let p = s.pricing.clone().unwrap();
    assert_eq!(
        (p.model.as_deref(), p.kind.as_deref(), p.category.as_deref()),
        (Some("CBP"), None, Some("service"))
    );
    assert_eq!(
        s.conversation_id.as_deref(),
        Some("7270432eae37498234f4444b35ffc5")
    );
    assert_eq!(
        s.customer.name.as_deref(),
        Some("Test Name"),
        "contact matched by recipient_id"
    );
    assert!(s.errors.is_empty());
    for (name, code) in [
        ("crafted/status_failed_131047.json", 131047),
        ("crafted/status_failed_130429.json", 130429),
        ("david-lev__pywa/message_status.json#failed", 130472),
        (
            "Bindambc__whatsapp-business-java-api/deserialization__reEngagementMessageError.json",
            131047,
        ),
        (
            "Bindambc__whatsapp-business-java-api/deserialization__mediaUploadError.json",
            131053,
        ),
    ] {
        let s = only_status(name);
        assert_eq!(s.status, "failed", "{name}");
        assert_eq!(s.errors.len(), 1, "{name}");
        assert_eq!(s.errors[0].code, code, "{name}");
        assert!(s.errors[0].title.is_some(), "{name}");
    }
    let s = only_status("crafted/status_failed_131047.json");
    assert_eq!(s.errors[0].title.as_deref(), Some("Re-engagement message"));
    assert!(s.errors[0]
        .details
        .as_deref()
        .unwrap()
        .starts_with("Message failed to send because more than 24 hours"));
    assert_eq!(s.customer.wa_id.as_deref(), Some("15550100501"));
    assert_eq!((s.timestamp, s.timestamp_valid), (1_768_468_900, true));
    assert!(s.pricing.is_none());

    for (name, status) in [
        ("crafted/status_unknown_value.json", "in_orbit"),
        ("crafted/status_deleted.json", "deleted"),
        ("david-lev__pywa/message_status.json#played", "played"),
    ] {
        assert_eq!(only_status(name).status, status);
    }
    // Call status (field `calls`): a status event keyed by the call id.
    let s = only_status("david-lev__pywa/call_status.json#call_status");
    assert_eq!(
        (s.wamid.as_str(), s.status.as_str()),
        ("wacid.ABGGFjFVU2AfAgo6V", "RINGING")
    );
    assert_eq!(s.number_id, "5483758353");

    let d = parse("crafted/statuses_out_of_order.json");
    let order: Vec<(&str, i64)> = statuses(&d)
        .iter()
        .map(|s| (s.status.as_str(), s.timestamp))
        .collect();
    assert_eq!(
        order,
        vec![
            ("read", 1_768_468_890),
            ("sent", 1_768_468_800),
            ("delivered", 1_768_468_802)
        ]
    );
}

#[test]
fn account_level_fields() {
    let a = only_account("crafted/quality_update_flagged.json");
    assert_eq!(a.field, "phone_number_quality_update");
    assert_eq!(a.event.as_deref(), Some("FLAGGED"));
    assert_eq!(a.detail.as_deref(), Some("TIER_1K"));
    assert_eq!(
        a.number_id.as_deref(),
        Some("100000000000001"),
        "resolved from the display number"
    );
    assert_eq!(a.waba_id, "900000000000001");
    assert_eq!(a.timestamp, 1_768_469_600);
    assert_eq!(a.route, crc32c::crc32c(b"900000000000001"));
    assert_eq!(
        a.dedupe,
        super::dedupe_hash(&[
            b"900000000000001",
            b"phone_number_quality_update",
            a.raw.as_bytes()
        ])
    );

    let a = only_account("crafted/quality_update_throughput_upgrade.json");
    assert_eq!(
        (a.event.as_deref(), a.detail.as_deref()),
        (Some("THROUGHPUT_UPGRADE"), Some("TIER_UNLIMITED"))
    );

    let a =
        only_account("Bindambc__whatsapp-business-java-api/deserialization__qualityUpdate.json");
    assert_eq!(
        (a.event.as_deref(), a.detail.as_deref()),
        (Some("FLAGGED"), Some("TIER_10K"))
    );
    assert_eq!(a.number_id.as_deref(), Some("123456123"));

    let a = only_account("crafted/template_status_paused.json");
    assert_eq!(a.field, "message_template_status_update");
    assert_eq!(
        (a.event.as_deref(), a.detail.as_deref()),
        (Some("PAUSED"), Some("crafted_winter_sale"))
    );
    assert_eq!(a.number_id, None);

    let cases: &[(&str, Option<&str>, Option<&str>)] = &[
        (
            "david-lev__pywa/template_status_update.json#rejected",
            Some("REJECTED"),
            Some("abandoned_cart"),
        ),
        (
            "david-lev__pywa/template_quality_update.json#yellow",
            Some("YELLOW"),
            Some("welcome_template"),
        ),
        (
            "david-lev__pywa/template_category_update.json#marketing",
            Some("MARKETING"),
            Some("my_message_template"),
        ),
        (
            "david-lev__pywa/template_components_update.json#element",
            None,
            Some("my_message_template"),
        ),
        (
            "david-lev__pywa/account_update.json#account_disabled",
            Some("DISABLED_UPDATE"),
            Some("REINSTATE"),
        ),
        (
            "david-lev__pywa/account_update.json#account_violation",
            Some("ACCOUNT_VIOLATION"),
            Some("ADULT"),
        ),
        (
            "david-lev__pywa/account_update.json#account_restriction",
            Some("ACCOUNT_RESTRICTION"),
            Some("RESTRICTED_BIZ_INITIATED_MESSAGING"),
        ),
        (
            "david-lev__pywa/account_update.json#account_deleted",
            Some("ACCOUNT_DELETED"),
            None,
        ),
        (
            "Bindambc__whatsapp-business-java-api/deserialization__accountReview.json",
            Some("APPROVED"),
            None,
        ),
        (
            "Bindambc__whatsapp-business-java-api/deserialization__phoneNumberNameUpdate.json",
            Some("APPROVED"),
            Some("WhatsApp"),
        ),
        (
            "Bindambc__whatsapp-business-java-api/deserialization__verifiedAccount.json",
            Some("VERIFIED_ACCOUNT"),
            None,
        ),
        (
            "david-lev__pywa/call_connect.json#user_initiated",
            Some("connect"),
            Some("USER_INITIATED"),
        ),
        (
            "david-lev__pywa/call_terminate.json#call_terminate",
            Some("terminate"),
            Some("COMPLETED"),
        ),
    ];
    for (name, event, detail) in cases {
        let a = only_account(name);
        assert_eq!(
            (a.event.as_deref(), a.detail.as_deref()),
            (*event, *detail),
            "{name}"
        );
    }
    // A template id given as a number still reads as text where needed.
    let a =
        only_account("Bindambc__whatsapp-business-java-api/deserialization__rejectedTemplate.json");
    assert_eq!(a.event.as_deref(), Some("REJECTED"));
    // Calls: number from metadata; time from the call.
    let a = only_account("david-lev__pywa/call_connect.json#business_initiated");
    assert_eq!(a.number_id.as_deref(), Some("743897493242"));
    assert_eq!(a.timestamp, 1_752_582_933);
    // `entry[].time` wins over the receive time.
    let a = only_account("david-lev__pywa/account_update.json#account_deleted");
    assert_eq!(a.timestamp, 1_743_451_903);
}

#[test]
fn user_preferences() {
    let d = parse("crafted/user_preferences_stop.json");
    assert_eq!(d.events.len(), 1);
    let p = preferences(&d)[0];
    assert_eq!(
        (p.category.as_str(), p.value.as_str()),
        ("marketing_messages", "stop")
    );
    assert_eq!(p.customer.wa_id.as_deref(), Some("15550100901"));
    assert_eq!(p.customer.name.as_deref(), Some("Kai"));
    assert_eq!(p.timestamp, 1_768_469_900);
    assert_eq!(p.number_id, "100000000000001");
    assert_eq!(
        p.dedupe,
        super::dedupe_hash(&[b"900000000000001", b"user_preferences", p.raw.as_bytes()])
    );

    // The lone contact names another phone: it is not attached.
    let d = parse("david-lev__pywa/user_marketing_preferences.json#resume");
    let p = preferences(&d)[0];
    assert_eq!(p.value, "resume");
    assert_eq!(p.customer.wa_id.as_deref(), Some("16505551234"));
    assert_eq!(p.customer.name, None);
    assert_eq!(p.customer.user_id, None);
}

#[test]
fn batches() {
    let d = parse("crafted/batch_multi_entry.json");
    assert_eq!(d.changes, 6);
    let m = messages(&d);
    let s = statuses(&d);
    assert_eq!((m.len(), s.len(), d.events.len()), (6, 6, 12));
    let by_number = |id: &str| {
        (
            m.iter().filter(|x| x.number_id == id).count(),
            s.iter().filter(|x| x.number_id == id).count(),
        )
    };
    assert_eq!(by_number("100000000000001"), (5, 3));
    assert_eq!(by_number("100000000000002"), (1, 3));
    let wamids: Vec<&str> = m.iter().map(|x| x.wamid.as_str()).collect();
    assert_eq!(
        wamids,
        (1..=6)
            .map(|i| format!("wamid.CRAFTEDBATCHIN000{i}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(m[2].waba_id, "900000000000002");
    assert_eq!(m[1].customer.name.as_deref(), Some("Bea"));
    assert_eq!(m[4].customer.name.as_deref(), Some("Dana"));
    assert_eq!(
        s[0].pricing.as_ref().unwrap().kind.as_deref(),
        Some("free_customer_service")
    );
    assert_eq!(s[0].pricing.as_ref().unwrap().billable, Some(false));

    let d = parse("crafted/batch_duplicate_ids.json");
    let m = messages(&d);
    assert_eq!(m.len(), 3, "dedupe is the pipeline's job");
    assert_eq!(m[0].wamid, m[2].wamid);
    assert_eq!(m[0].raw, m[2].raw);
}

#[test]
fn invalid_items() {
    let d = parse("crafted/missing_sender.json");
    let i = invalids(&d);
    assert_eq!(
        (d.events.len(), i[0].reason.as_str()),
        (1, "missing_sender")
    );
    assert_eq!(i[0].field, "messages");
    assert_eq!(i[0].number_id.as_deref(), Some("100000000000001"));
    assert_eq!(
        i[0].dedupe,
        super::dedupe_hash(&[b"invalid", i[0].raw.as_bytes()])
    );
    assert_eq!(i[0].route, crc32c::crc32c(&i[0].dedupe));
    assert!(i[0].raw.contains("wamid.CRAFTEDNOFROM0001"));

    let d = parse("crafted/non_numeric_from.json");
    assert_eq!(invalids(&d)[0].reason, "invalid_sender");
    assert_eq!(d.events.len(), 1);
}

#[test]
fn message_kinds() {
    let m = only_message("crafted/invalid_timestamp.json");
    assert_eq!(
        (m.timestamp, m.timestamp_valid),
        (RECEIVED_MS / 1000, false)
    );
    assert_eq!(m.text.as_deref(), Some("Do you have this in stock?"));

    let m = only_message("crafted/request_welcome.json");
    assert_eq!(
        (m.kind.as_str(), m.text.as_deref(), m.media.is_none()),
        ("request_welcome", None, true)
    );
    assert_eq!(m.wamid, "wamid.CRAFTEDWELCOME0001");

    let m = only_message("crafted/referred_product.json");
    assert_eq!(m.context_id.as_deref(), Some("wamid.CRAFTEDCATALOGMSG0001"));
    assert!(m
        .text
        .as_deref()
        .unwrap()
        .starts_with("Is this available in size M"));

    let m = only_message("david-lev__pywa/message.json#referral");
    let r = m.referral.clone().unwrap();
    assert_eq!(r.source_url.as_deref(), Some("AD_OR_POST_FB_URL"));
    assert_eq!(r.source_id.as_deref(), Some("ADID"));
    assert_eq!(r.source_type.as_deref(), Some("ad or post"));
    assert_eq!(r.headline.as_deref(), Some("AD_TITLE"));
    assert_eq!(r.body.as_deref(), Some("AD_DESCRIPTION"));
    assert_eq!(r.media_type.as_deref(), Some("image or video"));
    assert_eq!(r.ctwa_clid.as_deref(), Some("CTWA_CLID"));
    assert_eq!(m.text.as_deref(), Some("BODY"));

    let m = only_message("david-lev__pywa/system.json#phone_number_change");
    let s = m.system.clone().unwrap();
    assert_eq!(s.kind, "user_changed_number");
    assert_eq!(s.new_wa_id.as_deref(), Some("972912345678"));
    assert_eq!(
        m.text.as_deref(),
        Some("User A changed from 972987654321 to 972912345678")
    );
    assert_eq!(m.customer.wa_id.as_deref(), Some("972987654321"));
    let m = only_message("david-lev__pywa/system.json#identity_change");
    assert_eq!(m.system.unwrap().kind, "customer_identity_changed");

    let m = only_message("david-lev__pywa/message.json#voice");
    let media = m.media.unwrap();
    assert!(media.voice);
    assert_eq!(media.mime_type.as_deref(), Some("audio/ogg; codecs=opus"));
    assert!(
        !only_message("david-lev__pywa/message.json#audio")
            .media
            .unwrap()
            .voice
    );
    assert!(
        only_message("david-lev__pywa/message.json#animated_sticker")
            .media
            .unwrap()
            .animated
    );

    let m = only_message("david-lev__pywa/message.json#document");
    assert_eq!(m.text.as_deref(), Some("caption"));
    let media = m.media.unwrap();
    assert_eq!(media.filename.as_deref(), Some("filename.pdf"));
    assert_eq!(media.id.as_deref(), Some("1234567890987654321"));

    let m = only_message("david-lev__pywa/message.json#media_with_url");
    assert!(m
        .media
        .unwrap()
        .url
        .unwrap()
        .starts_with("https://lookaside.fbsbx.com/"));
    let m = only_message("Bindambc__whatsapp-business-java-api/deserialization__imageMessage.json");
    assert_eq!(m.kind, "image");
    assert!(m.media.unwrap().sha256.is_some());

    let cases: &[(&str, &str, Option<&str>)] = &[
        (
            "david-lev__pywa/callback_button.json#button",
            "interactive",
            Some("title"),
        ),
        (
            "david-lev__pywa/callback_selection.json#description",
            "interactive",
            Some("title"),
        ),
        (
            "david-lev__pywa/flow_completion.json#completion",
            "interactive",
            Some("Sent"),
        ),
        (
            "david-lev__pywa/call_permission_update.json#accept",
            "interactive",
            Some("accept"),
        ),
        (
            "david-lev__pywa/callback_button.json#quick_reply",
            "button",
            Some("title"),
        ),
        (
            "david-lev__pywa/message.json#chosen_location",
            "location",
            Some("Facebook HQ, 1 Hacker Way, Menlo Park, CA 94025"),
        ),
        (
            "david-lev__pywa/message.json#current_location",
            "location",
            Some("12.25089,43.90539"),
        ),
        (
            "david-lev__pywa/message.json#contacts",
            "contacts",
            Some("Chandler Bing, Monica, Rachel Green"),
        ),
        ("david-lev__pywa/message.json#order", "order", None),
        (
            "david-lev__pywa/message.json#unsupported_with_type",
            "unsupported",
            None,
        ),
        (
            "david-lev__pywa/message.json#interactive_message_with_err",
            "interactive",
            None,
        ),
        (
            "david-lev__pywa/edited_message.json#image",
            "edit",
            Some("Updated image caption"),
        ),
        (
            "david-lev__pywa/message.json#reply",
            "text",
            Some("replied text"),
        ),
        (
            "Bindambc__whatsapp-business-java-api/deserialization__videoMessage.json",
            "video",
            None,
        ),
        (
            "Bindambc__whatsapp-business-java-api/deserialization__locationMessage.json",
            "location",
            Some("-10.93941311633,-10.606395436721"),
        ),
    ];
    for (name, kind, text) in cases {
        let d = parse(name);
        let m = messages(&d)[0];
        assert_eq!(m.kind, *kind, "{name}");
        if *name != "Bindambc__whatsapp-business-java-api/deserialization__videoMessage.json" {
            assert_eq!(m.text.as_deref(), *text, "{name}");
        } else {
            assert!(
                m.text.is_some() && m.media.is_some(),
                "{name}: video with caption"
            );
        }
    }
    let m = only_message("david-lev__pywa/message.json#reply");
    assert_eq!(m.context_id.as_deref(), Some("wamid.xyzxyz=="));
}

#[test]
fn value_level_errors_are_an_account_event() {
    let d = parse("david-lev__pywa/message.json#interactive_message_with_err");
    assert_eq!(d.events.len(), 2);
    let a = accounts(&d)[0];
    assert_eq!(
        (a.field.as_str(), a.event.as_deref(), a.detail.as_deref()),
        ("messages", Some("errors"), Some("131000"))
    );
    assert!(a.raw.starts_with('[') && a.raw.contains("131000"));
    assert_eq!(a.number_id.as_deref(), Some("1122334455667"));
    assert_eq!(
        a.dedupe,
        super::dedupe_hash(&[b"1234567890987654321", b"messages.errors", a.raw.as_bytes()])
    );
}

#[test]
fn echoes_are_outbound() {
    for key in ["text", "delete", "edit"] {
        let m = only_message(&format!("david-lev__pywa/outgoing_message.json#{key}"));
        assert_eq!(m.direction, Direction::Out, "{key}");
        assert_eq!(m.number_id, "1122334455667");
    }
    // `to` is a placeholder, `to_user_id` a valid id: keyed by the user id.
    let m = only_message("david-lev__pywa/outgoing_message.json#text");
    assert_eq!(
        (m.customer.wa_id.as_deref(), m.customer.user_id.as_deref()),
        (None, Some("<BSUID>"))
    );
    assert_eq!(m.text.as_deref(), Some("Test message"));
    let m = only_message("david-lev__pywa/outgoing_message.json#edit");
    assert_eq!(
        (m.kind.as_str(), m.text.as_deref()),
        ("edit", Some("Text was edited"))
    );
    assert_eq!(m.customer.wa_id.as_deref(), Some("972123456789"));
}

#[test]
fn message_raw_is_the_exact_body_slice() {
    let bytes = body("crafted/text_korean.json");
    let d = parse_delivery(&bytes, &FixtureNumbers, RECEIVED_MS).unwrap();
    let text = std::str::from_utf8(&bytes).unwrap();
    for m in messages(&d) {
        let start = text.find(&m.raw).unwrap();
        assert!(
            m.raw.starts_with("{\"from\":\"821000000003\",\"id\":\"")
                && m.raw.ends_with("\"type\":\"text\"}")
        );
        assert_eq!(&bytes[start..start + m.raw.len()], m.raw.as_bytes());
    }
    assert!(
        messages(&d)[2].raw.contains("1\\/14"),
        "escaped slash kept as sent"
    );
}

#[test]
fn unmanaged_number_is_unrouted() {
    let d = parse_delivery(
        &body("crafted/batch_multi_entry.json"),
        &NoNumbers,
        RECEIVED_MS,
    )
    .unwrap();
    assert_eq!(d.events.len(), 12);
    for e in &d.events {
        let Event::Unrouted(u) = e else {
            panic!("{e:?}")
        };
        assert!(u.item == "message" || u.item == "status", "{u:?}");
        assert_eq!(u.field, "messages");
        assert_eq!(
            u.dedupe,
            super::dedupe_hash(&[b"unrouted", u.raw.as_bytes()])
        );
        assert!(u.number_id.starts_with("10000000000000"));
    }
    let d = parse_delivery(
        &body("david-lev__pywa/message.json#interactive_message_with_err"),
        &NoNumbers,
        RECEIVED_MS,
    )
    .unwrap();
    let items: Vec<&str> = d
        .events
        .iter()
        .map(|e| {
            if let Event::Unrouted(u) = e {
                u.item.as_str()
            } else {
                "?"
            }
        })
        .collect();
    assert_eq!(items, vec!["message", "errors"]);
    // Account-level changes are not number-scoped: still account events, without a number.
    let d = parse_delivery(
        &body("crafted/quality_update_flagged.json"),
        &NoNumbers,
        RECEIVED_MS,
    )
    .unwrap();
    assert_eq!(accounts(&d)[0].number_id, None);
}

#[test]
fn truncation_never_panics() {
    let started = std::time::Instant::now();
    let mut parsed = 0usize;
    for (name, bytes) in bodies() {
        let end = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .unwrap();
        for cut in 0..bytes.len() {
            let result = parse_delivery(&bytes[..cut], &FixtureNumbers, RECEIVED_MS);
            // A prefix that stops before the closing brace is never complete JSON.
            if cut <= end && name != BROKEN {
                assert!(result.is_err(), "{name} cut at {cut} parsed");
            }
            parsed += 1;
        }
    }
    assert!(parsed > 10_000);
    eprintln!("truncation: {parsed} prefixes in {:?}", started.elapsed());
}

#[test]
fn random_mutations_never_panic() {
    // Deterministic xorshift: byte flips, deletions and duplications of
    // structural characters, so the parser sees every kind of near-miss.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    const TOKENS: &[u8] = b"{}[]\",:0123456789 nultrefasx\\u";
    let mut outcomes = [0usize; 2];
    for (_, bytes) in bodies() {
        for _ in 0..40 {
            let mut b = bytes.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % b.len();
                match next() % 3 {
                    0 => b[at] = TOKENS[(next() as usize) % TOKENS.len()],
                    1 => {
                        b.remove(at);
                    }
                    _ => b.insert(at, b[at]),
                }
                if b.is_empty() {
                    break;
                }
            }
            outcomes[parse_delivery(&b, &FixtureNumbers, RECEIVED_MS).is_ok() as usize] += 1;
        }
    }
    // Both outcomes occur: the mutations reach past the JSON syntax check.
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
}

#[test]
fn fixtures_dir_points_at_index() {
    assert!(Path::new(&super::fixtures_dir()).join("INDEX.md").is_file());
}
