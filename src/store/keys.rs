//! The key schema of the one sled tree. Every key starts with a one-byte
//! prefix naming what it holds; integers are big-endian so keys sort by value.
//! ARCHITECTURE.md carries the same table; keep them together.
//!
//! | prefix | key                                   | value                         |
//! |--------|---------------------------------------|-------------------------------|
//! | `m`    | wamid                                 | `MessageIndex` (archive entry + inbound dedupe) |
//! | `x`    | conv id u64, first lsn u64            | `TimelineEntries`: a sealed chunk of a conversation's timeline |
//! | `x`    | conv id u64, timestamp i64*, lsn u64  | journal location (format 1: one key per message; still read) |
//! | `T`    | conv id u64                           | `TimelineEntries`: the unsealed tail (checkpoint) |
//! | `s`    | wamid len u16, wamid, status          | `Loc` of the status (status dedupe) |
//! | `e`    | lsn u64                               | `Loc` of an account/preference/unrouted/invalid event |
//! | `d`    | 16-byte content hash                  | `DedupeMark` (account-level dedupe) |
//! | `o`    | lsn u64 (the request's)               | `OutboxEntry` (outbound message by local id) |
//! | `p`    | lsn u64 (the request's)               | `PendingMark` (not yet sent or failed) |
//! | `C`    | conv id u64                           | `ConversationRecord` (checkpoint) |
//! | `U`    | customer id                           | `CustomerRecord` (checkpoint) |
//! | `N`    | phone_number_id                       | `NumberRecord` (checkpoint) |
//! | `z`    | name                                  | metadata (format version) |
//!
//! `*` timestamps are stored with the sign bit flipped so negative values sort first.

use crate::event::{ContentHash, Lsn};

pub const MESSAGE: u8 = b'm';
pub const CONV_MESSAGE: u8 = b'x';
pub const STATUS: u8 = b's';
pub const EVENT: u8 = b'e';
pub const DEDUPE: u8 = b'd';
pub const OUTBOX: u8 = b'o';
pub const PENDING: u8 = b'p';
pub const CONVERSATION: u8 = b'C';
pub const TIMELINE_TAIL: u8 = b'T';
pub const CUSTOMER: u8 = b'U';
pub const NUMBER: u8 = b'N';
pub const META: u8 = b'z';

fn prefixed(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

/// Order-preserving encoding of a signed timestamp.
pub fn sortable_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn from_sortable_i64(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

pub fn message(wamid: &str) -> Vec<u8> {
    prefixed(MESSAGE, wamid.as_bytes())
}

pub fn conv_message(conv: u64, timestamp: i64, lsn: Lsn) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[0] = CONV_MESSAGE;
    k[1..9].copy_from_slice(&conv.to_be_bytes());
    k[9..17].copy_from_slice(&sortable_i64(timestamp));
    k[17..25].copy_from_slice(&lsn.to_be_bytes());
    k
}

/// A sealed timeline chunk, named by its first entry's LSN (deterministic
/// under replay, so sealing again rewrites the same key).
pub fn timeline_chunk(conv: u64, first_lsn: Lsn) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = CONV_MESSAGE;
    k[1..9].copy_from_slice(&conv.to_be_bytes());
    k[9..17].copy_from_slice(&first_lsn.to_be_bytes());
    k
}

pub fn timeline_tail(conv: u64) -> [u8; 9] {
    lsn_key(TIMELINE_TAIL, conv)
}

pub fn conv_messages_prefix(conv: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = CONV_MESSAGE;
    k[1..9].copy_from_slice(&conv.to_be_bytes());
    k
}

/// (conv, timestamp, lsn) of a format-1 (one key per message) timeline key.
pub fn parse_conv_message(key: &[u8]) -> Option<(u64, i64, Lsn)> {
    if key.len() != 25 || key[0] != CONV_MESSAGE {
        return None;
    }
    let conv = u64::from_be_bytes(key[1..9].try_into().ok()?);
    let ts = from_sortable_i64(key[9..17].try_into().ok()?);
    let lsn = u64::from_be_bytes(key[17..25].try_into().ok()?);
    Some((conv, ts, lsn))
}

/// The wamid is length-prefixed so no wamid can masquerade as another's prefix.
pub fn status_prefix(wamid: &str) -> Vec<u8> {
    let len = u16::try_from(wamid.len()).unwrap_or(u16::MAX);
    let mut k = Vec::with_capacity(3 + wamid.len() + 12);
    k.push(STATUS);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(&wamid.as_bytes()[..usize::from(len)]);
    k
}

pub fn status(wamid: &str, status: &str) -> Vec<u8> {
    let mut k = status_prefix(wamid);
    k.extend_from_slice(status.as_bytes());
    k
}

pub fn event(lsn: Lsn) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = EVENT;
    k[1..].copy_from_slice(&lsn.to_be_bytes());
    k
}

pub fn parse_event(key: &[u8]) -> Option<Lsn> {
    (key.len() == 9 && key[0] == EVENT)
        .then(|| u64::from_be_bytes(key[1..9].try_into().unwrap_or_default()))
}

fn lsn_key(prefix: u8, lsn: Lsn) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&lsn.to_be_bytes());
    k
}

pub fn outbox(lsn: Lsn) -> [u8; 9] {
    lsn_key(OUTBOX, lsn)
}

pub fn pending(lsn: Lsn) -> [u8; 9] {
    lsn_key(PENDING, lsn)
}

/// The LSN of an `o` or `p` key.
pub fn parse_lsn_key(key: &[u8]) -> Option<Lsn> {
    (key.len() == 9).then(|| u64::from_be_bytes(key[1..9].try_into().unwrap_or_default()))
}

pub fn dedupe(hash: &ContentHash) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = DEDUPE;
    k[1..].copy_from_slice(hash);
    k
}

pub fn conversation(id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = CONVERSATION;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

pub fn customer(id: &str) -> Vec<u8> {
    prefixed(CUSTOMER, id.as_bytes())
}

pub fn number(id: &str) -> Vec<u8> {
    prefixed(NUMBER, id.as_bytes())
}

pub fn meta(name: &str) -> Vec<u8> {
    prefixed(META, name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_sort_in_order_including_negative() {
        let values = [i64::MIN, -5, -1, 0, 1, 1_749_416_383, i64::MAX];
        for w in values.windows(2) {
            assert!(sortable_i64(w[0]) < sortable_i64(w[1]));
            assert_eq!(from_sortable_i64(sortable_i64(w[0])), w[0]);
        }
    }

    #[test]
    fn conversation_timeline_keys_sort_by_time_then_lsn() {
        let a = conv_message(7, 100, 9);
        let b = conv_message(7, 100, 10);
        let c = conv_message(7, 101, 1);
        let d = conv_message(8, -1, 1);
        assert!(a < b && b < c && c < d);
        assert!(a.starts_with(&conv_messages_prefix(7)));
        assert_eq!(parse_conv_message(&b), Some((7, 100, 10)));
    }

    #[test]
    fn status_keys_cannot_collide_across_wamids() {
        // Without the length prefix, ("ab", "cread") and ("abc", "read") would share bytes.
        assert_ne!(status("ab", "cread"), status("abc", "read"));
        assert!(status("abc", "read").starts_with(&status_prefix("abc")));
        assert!(!status("abcd", "read").starts_with(&status_prefix("abc")));
    }
}
