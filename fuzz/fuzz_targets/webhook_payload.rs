//! Any bytes as a webhook body: the parser must not panic, and what it
//! accepts must hold its invariants (raw slices of the body, events that
//! survive the journal codec).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::event::Event;
use switchboard::whatsapp::{parse_delivery, NumberDirectory};

/// Manages the numbers of the seed corpus (crafted and pywa fixtures).
struct Numbers;

const MANAGED: &[(&str, &str)] = &[
    ("15550100001", "100000000000001"),
    ("15550100002", "100000000000002"),
    ("972123456789", "1122334455667"),
    ("16505551111", "123456123"),
];

impl NumberDirectory for Numbers {
    fn is_managed(&self, id: &str) -> bool {
        MANAGED.iter().any(|(_, n)| *n == id)
    }
    fn number_for_display(&self, display: &str) -> Option<String> {
        MANAGED
            .iter()
            .find(|(d, _)| *d == display)
            .map(|(_, n)| n.to_string())
    }
}

fn raw(e: &Event) -> &str {
    e.raw().expect("webhook events keep their raw JSON")
}

fuzz_target!(|data: &[u8]| {
    let Ok(delivery) = parse_delivery(data, &Numbers, 1_768_500_000_000) else {
        return;
    };
    // Accepted bodies are UTF-8 (the parser checks before reading).
    let text = std::str::from_utf8(data).expect("accepted body is UTF-8");
    for e in &delivery.events {
        assert!(text.contains(raw(e)), "raw is not a slice of the body");
        let bytes = e.encode().expect("event encodes");
        let back = Event::decode(e.kind(), e.version(), &bytes).expect("event decodes");
        assert_eq!(&back, e);
    }
});
