//! Input = a term, `\n`, a message (lossy UTF-8). The sensitive-word filter's
//! normaliser must never panic, and its map must give one byte range of the
//! input per normalised char, on char boundaries, inside the input, never
//! going backwards. A filter built from the term must check the message
//! without panicking and report a match only as a char-aligned range of it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::outbound::filter::{normalise, Filter};

fn check_map(input: &str) {
    let n = normalise(input);
    assert_eq!(n.map.len(), n.text.chars().count(), "one range per char");
    let mut last_start = 0;
    for r in &n.map {
        assert!(r.start <= r.end && r.end <= input.len(), "{r:?} outside {}", input.len());
        assert!(input.is_char_boundary(r.start) && input.is_char_boundary(r.end), "{r:?}");
        assert!(r.start >= last_start, "ranges went backwards at {r:?}");
        last_start = r.start;
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (term, message) = text.split_once('\n').unwrap_or((&text, ""));
    check_map(term);
    check_map(message);
    if let Ok(filter) = Filter::from_terms([term]) {
        if let Some(m) = filter.check(message) {
            assert!(m.start <= m.end && m.end <= message.len(), "{m:?}");
            assert!(message.is_char_boundary(m.start) && message.is_char_boundary(m.end));
            assert_eq!(m.term, term.trim());
        }
    }
});
