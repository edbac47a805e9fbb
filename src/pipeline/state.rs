//! Conversation state owned by one shard.
//!
//! Invariants:
//! - Only the shard's worker thread mutates a `ShardState`; API readers take
//!   the shard's read lock briefly.
//! - At most one open conversation per (our number, customer).
//! - A conversation's id is the LSN of the event that opened it, and every
//!   change is guarded by `last_lsn`, so replaying the journal over a state
//!   that already contains some of its effects changes nothing twice.
//! - `activity` indexes every conversation by (last_message_at, id): the
//!   order of the conversation list.
//! - A conversation's timeline is its sealed chunks in sled plus the tail
//!   here: a message is appended to the tail under the same `last_lsn`
//!   guard as the rest of its filing; a tail is sealed (handed to the shard
//!   to write) when it reaches [`TIMELINE_CHUNK`] entries or the
//!   conversation is resolved. Sealing depends only on the events applied,
//!   so replay seals the same chunks under the same keys. Only open
//!   conversations keep a tail in memory.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::event::{Direction, Lsn, MessageEvent};
use crate::journal::RecordLoc;
use crate::store::records::{
    ConversationRecord, ConversationStatus, NumberCounters, TimelineEntries, TimelineEntry,
};

/// Entries of a sealed timeline chunk: one sled key per this many messages
/// of a conversation (sled keeps ~40 bytes of RAM and ~10 µs of CPU per key).
pub const TIMELINE_CHUNK: usize = 16;

/// The customer-service window: 24 hours from the customer's last message.
pub const SERVICE_WINDOW_SECS: i64 = 24 * 60 * 60;

/// Which conversations a listing wants.
#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    pub number_id: Option<String>,
    pub status: Option<ConversationStatus>,
}

impl ConversationFilter {
    fn matches(&self, c: &ConversationRecord) -> bool {
        self.number_id.as_deref().is_none_or(|n| n == c.number_id)
            && self.status.is_none_or(|s| s == c.status)
    }
}

/// What filing a message in a conversation needs to know.
pub struct Filing<'a> {
    pub number_id: &'a str,
    pub customer_id: &'a str,
    pub route: u32,
    /// Payload (or request) time, Unix seconds.
    pub timestamp: i64,
    /// Where the message's record is in the journal.
    pub loc: RecordLoc,
    /// A customer's own message: it opens or extends the service window
    /// and counts as unread.
    pub from_customer: bool,
}

// Maps that grow with every conversation or customer are B-trees: hash maps
// growing in step doubled (and rehashed) all at once, a 40-60 ms stall on
// the shard threads (BENCHMARKS.md, "Routing").
#[derive(Default)]
pub struct ShardState {
    convs: BTreeMap<u64, ConversationRecord>,
    /// number id -> customer id -> open conversation id.
    open: HashMap<String, BTreeMap<String, u64>>,
    activity: BTreeSet<(i64, u64)>,
    dirty: BTreeSet<u64>,
    /// Unsealed timeline entries of conversations, in filing order.
    tails: BTreeMap<u64, Vec<TimelineEntry>>,
    /// Chunks sealed by the last change, for the shard to write.
    sealed: Vec<(u64, TimelineEntries)>,
    /// Per-number counters since this process started (the persisted base is
    /// in `Numbers`).
    pub counters: HashMap<String, NumberCounters>,
}

impl ShardState {
    pub fn insert_loaded(&mut self, rec: ConversationRecord) {
        if rec.status.is_open() {
            self.open
                .entry(rec.number_id.clone())
                .or_default()
                .insert(rec.customer_id.clone(), rec.id);
        }
        self.activity.insert((rec.last_message_at, rec.id));
        self.convs.insert(rec.id, rec);
    }

    /// A persisted tail, loaded after the conversations.
    pub fn insert_loaded_tail(&mut self, conv: u64, tail: TimelineEntries) {
        if self.convs.contains_key(&conv) && !tail.entries.is_empty() {
            self.tails.insert(conv, tail.entries);
        }
    }

    /// The unsealed end of a conversation's timeline (see the module docs).
    pub fn timeline_tail(&self, conv: u64) -> Vec<TimelineEntry> {
        self.tails.get(&conv).cloned().unwrap_or_default()
    }

    /// Chunks sealed since the last call: the shard writes them before it
    /// releases its lock, so a reader finds every entry in one place or the
    /// other.
    pub fn take_sealed(&mut self) -> Vec<(u64, TimelineEntries)> {
        std::mem::take(&mut self.sealed)
    }

    fn seal(&mut self, conv: u64) {
        if let Some(entries) = self.tails.remove(&conv) {
            if !entries.is_empty() {
                self.sealed.push((conv, TimelineEntries { entries }));
            }
        }
    }

    pub fn len(&self) -> usize {
        self.convs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.convs.is_empty()
    }

    pub fn get(&self, id: u64) -> Option<&ConversationRecord> {
        self.convs.get(&id)
    }

    pub fn open_conversation(
        &self,
        number_id: &str,
        customer_id: &str,
    ) -> Option<&ConversationRecord> {
        let id = self.open.get(number_id)?.get(customer_id)?;
        self.convs.get(id)
    }

    /// Open conversations of one of our numbers in this shard.
    pub fn open_count(&self, number_id: &str) -> usize {
        self.open.get(number_id).map_or(0, BTreeMap::len)
    }

    pub fn counters_mut(&mut self, number_id: &str) -> &mut NumberCounters {
        if !self.counters.contains_key(number_id) {
            self.counters
                .insert(number_id.to_string(), NumberCounters::default());
        }
        self.counters.get_mut(number_id).expect("inserted above")
    }

    /// The conversation a message (whose customer `home` is set) belongs in:
    /// the open one of its number and customer, or a new one whose id would
    /// be `lsn`. Changes nothing.
    pub fn conversation_for(&self, lsn: Lsn, ev: &MessageEvent) -> u64 {
        self.conversation_of(lsn, &ev.number_id, &ev.customer.home)
    }

    /// [`Self::conversation_for`] by number and customer id.
    pub fn conversation_of(&self, lsn: Lsn, number_id: &str, customer_id: &str) -> u64 {
        self.open
            .get(number_id)
            .and_then(|m| m.get(customer_id))
            .copied()
            .unwrap_or(lsn)
    }

    /// File a message in conversation `id` (from [`Self::conversation_for`]),
    /// opening it if it does not exist yet.
    pub fn file_message(&mut self, id: u64, lsn: Lsn, loc: RecordLoc, ev: &MessageEvent) -> bool {
        self.file(
            id,
            lsn,
            &Filing {
                number_id: &ev.number_id,
                customer_id: &ev.customer.home,
                route: ev.route,
                timestamp: ev.timestamp,
                loc,
                from_customer: ev.direction == Direction::In && ev.kind != "system",
            },
        )
    }

    /// File a message described by `f` in conversation `id`, opening it if
    /// needed. True when this opened the conversation.
    pub fn file(&mut self, id: u64, lsn: Lsn, f: &Filing<'_>) -> bool {
        let home = f.customer_id;
        let opened = !self.convs.contains_key(&id);
        if opened {
            let rec = ConversationRecord {
                id,
                number_id: f.number_id.to_string(),
                customer_id: home.to_string(),
                route: f.route,
                status: ConversationStatus::Unassigned,
                assignee: None,
                opened_at: f.timestamp,
                last_message_at: f.timestamp,
                last_inbound_at: None,
                window_expires_at: None,
                unread: 0,
                messages: 0,
                last_lsn: 0,
            };
            self.open
                .entry(f.number_id.to_string())
                .or_default()
                .insert(home.to_string(), id);
            self.activity.insert((rec.last_message_at, id));
            self.convs.insert(id, rec);
            self.counters_mut(f.number_id).conversations_opened += 1;
        }
        let conv = self.convs.get_mut(&id).expect("inserted above");
        if lsn > conv.last_lsn {
            let before = (conv.last_message_at, id);
            conv.last_message_at = conv.last_message_at.max(f.timestamp);
            if f.from_customer {
                // The window is computed from the payload timestamp, never
                // from arrival time, and only moves forward.
                conv.last_inbound_at = Some(
                    conv.last_inbound_at
                        .map_or(f.timestamp, |t| t.max(f.timestamp)),
                );
                let expires = f.timestamp.saturating_add(SERVICE_WINDOW_SECS);
                conv.window_expires_at =
                    Some(conv.window_expires_at.map_or(expires, |t| t.max(expires)));
                conv.unread = conv.unread.saturating_add(1);
            }
            conv.messages = conv.messages.saturating_add(1);
            conv.last_lsn = lsn;
            let after = (conv.last_message_at, id);
            if before != after {
                self.activity.remove(&before);
                self.activity.insert(after);
            }
            self.dirty.insert(id);
            // A resolved conversation keeps no tail in memory.
            let still_open = conv.status.is_open();
            let tail = self.tails.entry(id).or_default();
            tail.push(TimelineEntry {
                timestamp: f.timestamp,
                lsn,
                loc: f.loc.into(),
            });
            if tail.len() >= TIMELINE_CHUNK || !still_open {
                self.seal(id);
            }
        }
        opened
    }

    /// Routing resolved conversation `id` (journal record `lsn`): the next
    /// message of its customer on its number opens a new conversation.
    /// Guarded by `last_lsn`, so replay changes nothing twice.
    pub fn resolve(&mut self, id: u64, lsn: Lsn) {
        let Some(conv) = self.convs.get_mut(&id) else {
            return;
        };
        if lsn <= conv.last_lsn || conv.status == ConversationStatus::Resolved {
            return;
        }
        conv.status = ConversationStatus::Resolved;
        conv.assignee = None;
        conv.last_lsn = lsn;
        if let Some(m) = self.open.get_mut(&conv.number_id) {
            if m.get(&conv.customer_id) == Some(&id) {
                m.remove(&conv.customer_id);
            }
        }
        self.dirty.insert(id);
        self.seal(id);
    }

    /// Routing reopened conversation `id`. Refused (false) while its customer
    /// has another open conversation on the same number.
    pub fn reopen(&mut self, id: u64, lsn: Lsn) -> bool {
        let Some(conv) = self.convs.get_mut(&id) else {
            return false;
        };
        if conv.status.is_open() {
            return true;
        }
        if lsn <= conv.last_lsn {
            return false;
        }
        let slot = self.open.entry(conv.number_id.clone()).or_default();
        if slot.contains_key(&conv.customer_id) {
            return false;
        }
        slot.insert(conv.customer_id.clone(), id);
        conv.status = ConversationStatus::Unassigned;
        conv.last_lsn = lsn;
        self.dirty.insert(id);
        true
    }

    /// Open conversations of this shard: (id, number, customer).
    pub fn open_conversations(&self) -> Vec<(u64, String, String)> {
        let mut v: Vec<(u64, String, String)> = self
            .open
            .iter()
            .flat_map(|(n, m)| m.iter().map(move |(c, id)| (*id, n.clone(), c.clone())))
            .collect();
        v.sort_unstable();
        v
    }

    /// Up to `limit` conversations matching `filter`, newest activity first,
    /// strictly after `cursor` in that order.
    pub fn page(
        &self,
        cursor: Option<(i64, u64)>,
        filter: &ConversationFilter,
        limit: usize,
    ) -> Vec<&ConversationRecord> {
        let upper = match cursor {
            Some(c) => std::ops::Bound::Excluded(c),
            None => std::ops::Bound::Unbounded,
        };
        self.activity
            .range((std::ops::Bound::Unbounded, upper))
            .rev()
            .filter_map(|(_, id)| self.convs.get(id))
            .filter(|c| filter.matches(c))
            .take(limit)
            .collect()
    }

    /// Conversations changed since the last call, each with its unsealed
    /// tail (empty: none to keep), for the checkpoint.
    pub fn take_dirty(&mut self) -> Vec<(ConversationRecord, TimelineEntries)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .iter()
            .filter_map(|id| {
                let rec = self.convs.get(id)?.clone();
                let entries = self.tails.get(id).cloned().unwrap_or_default();
                Some((rec, TimelineEntries { entries }))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::CustomerRef;

    fn file(s: &mut ShardState, lsn: Lsn, m: &MessageEvent) -> u64 {
        let conv = s.conversation_for(lsn, m);
        s.file_message(conv, lsn, at(lsn), m);
        conv
    }

    /// A shard state loaded from a checkpoint snapshot, as at start-up.
    fn restore(snapshot: Vec<(ConversationRecord, TimelineEntries)>) -> ShardState {
        let mut restored = ShardState::default();
        for (rec, tail) in snapshot {
            let id = rec.id;
            restored.insert_loaded(rec);
            restored.insert_loaded_tail(id, tail);
        }
        restored
    }

    fn at(lsn: Lsn) -> RecordLoc {
        RecordLoc {
            segment: 1,
            offset: lsn * 100,
        }
    }

    fn msg(number: &str, customer: &str, ts: i64, direction: Direction) -> MessageEvent {
        MessageEvent {
            number_id: number.into(),
            waba_id: "w".into(),
            route: 0,
            direction,
            customer: CustomerRef {
                wa_id: Some(customer.into()),
                home: customer.into(),
                ..Default::default()
            },
            wamid: format!("wamid.{customer}.{ts}"),
            kind: "text".into(),
            timestamp: ts,
            timestamp_valid: true,
            received_at_ms: ts * 1000,
            text: None,
            media: None,
            context_id: None,
            referral: None,
            system: None,
            raw: "{}".into(),
        }
    }

    #[test]
    fn one_open_conversation_per_number_and_customer_with_window_from_payload_time() {
        let mut s = ShardState::default();
        let a = file(&mut s, 10, &msg("n1", "c1", 1000, Direction::In));
        let b = file(&mut s, 11, &msg("n1", "c1", 1500, Direction::In));
        let c = file(&mut s, 12, &msg("n2", "c1", 1200, Direction::In));
        assert_eq!(a, 10);
        assert_eq!(b, 10);
        assert_eq!(c, 12);
        let conv = s.get(10).unwrap();
        assert_eq!(
            (conv.messages, conv.unread, conv.last_message_at),
            (2, 2, 1500)
        );
        assert_eq!(conv.window_expires_at, Some(1500 + SERVICE_WINDOW_SECS));
        assert_eq!(s.counters["n1"].conversations_opened, 1);
    }

    #[test]
    fn out_of_order_and_outbound_messages_do_not_move_the_window_back() {
        let mut s = ShardState::default();
        file(&mut s, 1, &msg("n", "c", 2000, Direction::In));
        file(&mut s, 2, &msg("n", "c", 1000, Direction::In));
        file(&mut s, 3, &msg("n", "c", 3000, Direction::Out));
        let conv = s.get(1).unwrap();
        assert_eq!(conv.window_expires_at, Some(2000 + SERVICE_WINDOW_SECS));
        assert_eq!(conv.last_inbound_at, Some(2000));
        assert_eq!(conv.last_message_at, 3000);
        assert_eq!(conv.unread, 2);
    }

    #[test]
    fn replayed_events_are_not_applied_twice() {
        let mut s = ShardState::default();
        let m = msg("n", "c", 100, Direction::In);
        file(&mut s, 5, &m);
        let mut restored = restore(s.take_dirty());
        assert_eq!(file(&mut restored, 5, &m), 5);
        assert_eq!(restored.get(5).unwrap().messages, 1);
        assert!(restored.take_dirty().is_empty());
    }

    /// Every chunk sealed so far by `s`, as lists of LSNs.
    fn sealed_lsns(s: &mut ShardState) -> Vec<(u64, Vec<Lsn>)> {
        s.take_sealed()
            .into_iter()
            .map(|(c, t)| (c, t.entries.iter().map(|e| e.lsn).collect()))
            .collect()
    }

    #[test]
    fn timeline_tails_seal_every_chunk_and_on_resolve() {
        let mut s = ShardState::default();
        let n = TIMELINE_CHUNK as u64;
        for i in 1..=n + 3 {
            file(&mut s, i, &msg("n", "c", 100 + i as i64, Direction::In));
            if i == n {
                // The chunk is handed over by the filing that filled it.
                assert_eq!(sealed_lsns(&mut s), vec![(1, (1..=n).collect())]);
                assert!(s.timeline_tail(1).is_empty());
            }
        }
        assert!(s.take_sealed().is_empty(), "taken once");
        let tail = s.timeline_tail(1);
        assert_eq!(
            tail.iter().map(|e| e.lsn).collect::<Vec<_>>(),
            vec![n + 1, n + 2, n + 3]
        );
        assert_eq!(
            (tail[0].timestamp, RecordLoc::from(tail[0].loc)),
            (100 + n as i64 + 1, at(n + 1))
        );
        // A replayed filing adds nothing.
        file(
            &mut s,
            n + 3,
            &msg("n", "c", 100 + n as i64 + 3, Direction::In),
        );
        assert_eq!(s.timeline_tail(1).len(), 3);
        // Resolving seals the rest; a resolved conversation keeps no tail,
        // so a message filed in it (an agent's late reply) is sealed at once.
        s.resolve(1, n + 10);
        assert_eq!(sealed_lsns(&mut s), vec![(1, vec![n + 1, n + 2, n + 3])]);
        assert!(s.timeline_tail(1).is_empty());
        s.file(
            1,
            n + 11,
            &Filing {
                number_id: "n",
                customer_id: "c",
                route: 0,
                timestamp: 500,
                loc: at(n + 11),
                from_customer: false,
            },
        );
        assert_eq!(sealed_lsns(&mut s), vec![(1, vec![n + 11])]);
        assert!(s.timeline_tail(1).is_empty());
    }

    #[test]
    fn replay_from_a_checkpointed_tail_seals_the_same_chunks() {
        let n = TIMELINE_CHUNK as u64;
        let events: Vec<MessageEvent> = (1..=2 * n)
            .map(|i| msg("n", "c", 1000 + i as i64, Direction::In))
            .collect();
        // Straight through.
        let mut a = ShardState::default();
        let mut a_sealed = Vec::new();
        for (i, m) in events.iter().enumerate() {
            file(&mut a, i as u64 + 1, m);
            a_sealed.extend(sealed_lsns(&mut a));
        }
        // A checkpoint after 5 events, then a crash after 20, then a
        // restart from the checkpoint replaying everything after it (and,
        // being at-least-once, a few before it too).
        let mut b = ShardState::default();
        for (i, m) in events.iter().take(5).enumerate() {
            file(&mut b, i as u64 + 1, m);
        }
        let mut restored = restore(b.take_dirty());
        let mut b_sealed = Vec::new();
        for (i, m) in events.iter().enumerate().skip(3) {
            file(&mut restored, i as u64 + 1, m);
            b_sealed.extend(sealed_lsns(&mut restored));
        }
        assert_eq!(a_sealed, b_sealed);
        assert_eq!(a_sealed.len(), 2);
        assert_eq!(restored.get(1).unwrap().messages, 2 * n as u32);
    }

    #[test]
    fn pages_are_newest_first_and_stable_by_cursor() {
        let mut s = ShardState::default();
        for i in 0..10 {
            file(
                &mut s,
                i + 1,
                &msg(
                    if i % 2 == 0 { "even" } else { "odd" },
                    &format!("c{i}"),
                    100 + i as i64,
                    Direction::In,
                ),
            );
        }
        let first: Vec<u64> = s
            .page(None, &ConversationFilter::default(), 4)
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(first, vec![10, 9, 8, 7]);
        let last = s.get(7).unwrap();
        let next: Vec<u64> = s
            .page(
                Some((last.last_message_at, 7)),
                &ConversationFilter::default(),
                4,
            )
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(next, vec![6, 5, 4, 3]);
        let even = ConversationFilter {
            number_id: Some("even".into()),
            status: None,
        };
        assert!(s
            .page(None, &even, 100)
            .iter()
            .all(|c| c.number_id == "even"));
        assert_eq!(s.page(None, &even, 100).len(), 5);
    }
}
