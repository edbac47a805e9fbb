//! The rate rules of the simulated Graph API as plain data structures with an explicit clock:
//! the per-number sliding-window throughput limit, the exact peak-per-second meter, the
//! per-recipient pair-limit bucket and the customer-service window book.
//!
//! Invariants:
//! - only accepted sends are recorded here, so refusals never consume quota;
//! - [`SlidingLimit`] never holds more than `capacity` instants younger than `span`: for an
//!   integer rate r that is "at most r accepted sends in any sliding 1-second window";
//! - [`PeakMeter`] is exact: the busiest half-open 1-second window always ends at a send, and
//!   at each send the meter holds exactly the sends of the second that ends there;
//! - the maps keyed by recipient are pruned when they grow past a bound, dropping only entries
//!   that no rule needs (a full bucket, a closed window); the bound then doubles past what
//!   survived, so pruning costs amortised O(1) per insert.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// Sends allowed per sliding window. A rate r becomes `capacity = max(1, floor(r))` sends per
/// `span = capacity / r` seconds: exactly r per second for integer rates, and still
/// meaningful for fractional ones (0.5/s = 1 per 2 s).
#[derive(Debug)]
pub struct SlidingLimit {
    capacity: usize,
    span: Duration,
    accepted: VecDeque<Instant>,
}

impl SlidingLimit {
    pub fn per_second(rate: f64) -> Self {
        let capacity = (rate.floor() as usize).max(1);
        SlidingLimit {
            capacity,
            span: Duration::from_secs_f64(capacity as f64 / rate),
            accepted: VecDeque::with_capacity(capacity.min(4096)),
        }
    }

    /// Whether one more send fits at `now` (forgets what left the window).
    pub fn allows(&mut self, now: Instant) -> bool {
        while let Some(&front) = self.accepted.front() {
            if now.saturating_duration_since(front) >= self.span {
                self.accepted.pop_front();
            } else {
                break;
            }
        }
        self.accepted.len() < self.capacity
    }

    /// Records an accepted send; call only after [`allows`](Self::allows) said yes.
    pub fn record(&mut self, now: Instant) {
        self.accepted.push_back(now);
    }
}

/// The largest number of accepted sends seen in any 1-second window.
#[derive(Debug, Default)]
pub struct PeakMeter {
    recent: VecDeque<Instant>,
    peak: u64,
}

impl PeakMeter {
    pub fn record(&mut self, now: Instant) {
        while let Some(&front) = self.recent.front() {
            if now.saturating_duration_since(front) >= Duration::from_secs(1) {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        self.recent.push_back(now);
        self.peak = self.peak.max(self.recent.len() as u64);
    }

    pub fn peak(&self) -> u64 {
        self.peak
    }
}

/// A token bucket: `burst` tokens, one more every `interval`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Entries beyond which full buckets are forgotten (at least).
const PAIR_PRUNE_AT: usize = 65_536;

/// The pair limit of one number: a token bucket per recipient.
#[derive(Debug)]
pub struct PairLimit {
    burst: f64,
    interval: Duration,
    buckets: HashMap<String, Bucket>,
    prune_at: usize,
}

impl PairLimit {
    pub fn new(burst: u32, interval: Duration) -> Self {
        PairLimit {
            burst: f64::from(burst.max(1)),
            interval,
            buckets: HashMap::new(),
            prune_at: PAIR_PRUNE_AT,
        }
    }

    fn tokens(&self, bucket: &Bucket, now: Instant) -> f64 {
        let refill =
            now.saturating_duration_since(bucket.at).as_secs_f64() / self.interval.as_secs_f64();
        (bucket.tokens + refill).min(self.burst)
    }

    /// Whether `recipient` may get one more message at `now`.
    pub fn allows(&self, recipient: &str, now: Instant) -> bool {
        match self.buckets.get(recipient) {
            None => true,
            Some(b) => self.tokens(b, now) >= 1.0,
        }
    }

    /// Takes a token; call only after [`allows`](Self::allows) said yes.
    pub fn record(&mut self, recipient: &str, now: Instant) {
        if self.buckets.len() >= self.prune_at {
            let (burst, interval) = (self.burst, self.interval.as_secs_f64());
            self.buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() / interval < burst
            });
            self.prune_at = (self.buckets.len() * 2).max(PAIR_PRUNE_AT);
        }
        let tokens = match self.buckets.get(recipient) {
            Some(b) => self.tokens(b, now),
            None => self.burst,
        };
        self.buckets.insert(
            recipient.to_owned(),
            Bucket {
                tokens: tokens - 1.0,
                at: now,
            },
        );
    }
}

/// The customer-service window lasts this long after the customer's last message.
pub const SERVICE_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;
/// A Click-to-WhatsApp entry point makes messages free for this long.
pub const ENTRY_POINT_MS: i64 = 72 * 60 * 60 * 1000;
/// Entries beyond which closed windows are forgotten (at least).
const WINDOW_PRUNE_AT: usize = 1 << 20;

/// What the simulator knows about one (number, customer) conversation.
#[derive(Debug, Clone, Default)]
pub struct CustomerWindow {
    /// Unix ms of the customer's last inbound message (`None`: never seen).
    pub last_inbound_ms: Option<i64>,
    /// Unix ms until which a Click-to-WhatsApp entry point keeps messages free.
    pub entry_point_until_ms: Option<i64>,
    /// The last inbound wamid and the last wamid we sent: what a reply quotes.
    pub last_inbound_wamid: Option<String>,
    pub last_outbound_wamid: Option<String>,
}

impl CustomerWindow {
    pub fn is_open(&self, now_ms: i64) -> bool {
        self.last_inbound_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < SERVICE_WINDOW_MS)
    }

    pub fn in_entry_point(&self, now_ms: i64) -> bool {
        self.entry_point_until_ms.is_some_and(|t| now_ms < t)
    }
}

/// Windows by (number slot, customer).
#[derive(Debug)]
pub struct WindowBook {
    map: HashMap<(usize, String), CustomerWindow>,
    prune_at: usize,
}

impl Default for WindowBook {
    fn default() -> Self {
        WindowBook {
            map: HashMap::new(),
            prune_at: WINDOW_PRUNE_AT,
        }
    }
}

impl WindowBook {
    pub fn get(&self, number: usize, customer: &str) -> Option<&CustomerWindow> {
        self.map.get(&(number, customer.to_owned()))
    }

    /// Only customers already known (sends never create entries: a benchmark sending to
    /// millions of recipients must not grow the book).
    pub fn get_mut(&mut self, number: usize, customer: &str) -> Option<&mut CustomerWindow> {
        self.map.get_mut(&(number, customer.to_owned()))
    }

    /// The entry, created empty when new; `now_ms` drives pruning.
    pub fn entry(&mut self, number: usize, customer: &str, now_ms: i64) -> &mut CustomerWindow {
        if self.map.len() >= self.prune_at {
            self.map
                .retain(|_, w| w.is_open(now_ms) || w.in_entry_point(now_ms));
            self.prune_at = (self.map.len() * 2).max(WINDOW_PRUNE_AT);
        }
        self.map.entry((number, customer.to_owned())).or_default()
    }

    /// Records an inbound message at `at_ms` (keeps the latest time).
    pub fn inbound(&mut self, number: usize, customer: &str, at_ms: i64, now_ms: i64) {
        let w = self.entry(number, customer, now_ms);
        w.last_inbound_ms = Some(w.last_inbound_ms.map_or(at_ms, |t| t.max(at_ms)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_limit_allows_rate_per_second_and_frees_slots_a_second_later() {
        let t0 = Instant::now();
        let mut limit = SlidingLimit::per_second(20.0);
        let mut accepted = 0;
        for i in 0..30 {
            let now = t0 + Duration::from_millis(i);
            if limit.allows(now) {
                limit.record(now);
                accepted += 1;
            }
        }
        assert_eq!(accepted, 20);
        // The first send (t0) leaves the window exactly one second later.
        assert!(!limit.allows(t0 + Duration::from_millis(999)));
        assert!(limit.allows(t0 + Duration::from_secs(1)));

        let mut half = SlidingLimit::per_second(0.5);
        assert!(half.allows(t0));
        half.record(t0);
        assert!(!half.allows(t0 + Duration::from_millis(1999)));
        assert!(half.allows(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn peak_meter_finds_the_busiest_second() {
        let t0 = Instant::now();
        let mut meter = PeakMeter::default();
        // 5 at 0 ms, 5 at 900 ms, 5 at 1800 ms: any 1 s window holds at most 10.
        for base in [0u64, 900, 1800] {
            for _ in 0..5 {
                meter.record(t0 + Duration::from_millis(base));
            }
        }
        assert_eq!(meter.peak(), 10);
        let mut meter = PeakMeter::default();
        meter.record(t0);
        meter.record(t0 + Duration::from_secs(1));
        assert_eq!(meter.peak(), 1);
    }

    #[test]
    fn pair_limit_gives_a_burst_then_one_per_interval() {
        let t0 = Instant::now();
        let mut pair = PairLimit::new(3, Duration::from_secs(6));
        for _ in 0..3 {
            assert!(pair.allows("a", t0));
            pair.record("a", t0);
        }
        assert!(!pair.allows("a", t0));
        assert!(pair.allows("b", t0), "other recipients are independent");
        assert!(!pair.allows("a", t0 + Duration::from_millis(5999)));
        assert!(pair.allows("a", t0 + Duration::from_secs(6)));
        pair.record("a", t0 + Duration::from_secs(6));
        assert!(!pair.allows("a", t0 + Duration::from_secs(6)));
    }

    #[test]
    fn full_buckets_are_forgotten_when_the_map_grows() {
        let t0 = Instant::now();
        let mut pair = PairLimit::new(1, Duration::from_secs(1));
        for i in 0..PAIR_PRUNE_AT {
            pair.record(&i.to_string(), t0);
        }
        // One recipient is still limited when the prune runs; the refilled ones go.
        let later = t0 + Duration::from_secs(2);
        pair.record("busy", later);
        pair.record("new", later);
        assert_eq!(pair.buckets.len(), 2);
        assert!(!pair.allows("busy", later));
        assert!(pair.allows("0", later));
    }

    #[test]
    fn windows_open_for_24_hours_after_the_last_inbound() {
        let mut book = WindowBook::default();
        let now = 1_800_000_000_000;
        assert!(book.get(0, "1").is_none());
        book.inbound(0, "1", now - SERVICE_WINDOW_MS - 1, now);
        assert!(!book.get(0, "1").unwrap().is_open(now));
        book.inbound(0, "1", now - 1000, now);
        // An older declaration never moves the window back.
        book.inbound(0, "1", now - SERVICE_WINDOW_MS - 1, now);
        assert!(book.get(0, "1").unwrap().is_open(now));
        assert!(book.get(1, "1").is_none());
    }
}
