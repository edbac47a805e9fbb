//! Per-number send pacing: an adaptive rate below a ceiling, and the pair
//! limit per recipient. Pure (the caller passes `now`), so tests drive time.
//!
//! Invariants:
//! - Never more than `floor(ceiling)` sends start in any window of one
//!   second plus a margin (an exact sliding window, not a token bucket,
//!   which would allow a burst on top of the rate), nor more than
//!   `max_per_minute` in any minute plus a margin. The margin absorbs
//!   network jitter between our start and the platform's arrival count.
//! - The rate only grows while sends succeed and never beyond the ceiling;
//!   a throughput error cuts it multiplicatively and holds it; it then
//!   grows slowly near the rate at which the platform last objected (so
//!   throttles become rare once the real limit is learned) and normally
//!   elsewhere.
//! - Quality updates scale the ceiling: YELLOW 1/2, RED and FLAGGED 1/4,
//!   GREEN and UNFLAGGED restore it, THROUGHPUT_UPGRADE raises the base to
//!   the upgraded ceiling.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Added to the one-second and one-minute windows.
const WINDOW_MARGIN: Duration = Duration::from_millis(25);
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
/// The slowest a number is ever paced: one message per 10 s.
const MIN_RATE: f64 = 0.1;
/// Multiplicative decrease on a throughput error.
const DECREASE: f64 = 0.7;

#[derive(Debug, Clone, PartialEq)]
pub struct LimiterConfig {
    pub max_per_second: f64,
    pub max_per_minute: Option<u32>,
    pub initial_per_second: f64,
    pub upgraded_per_second: f64,
    pub hold: Duration,
}

#[derive(Debug)]
pub struct Limiter {
    cfg: LimiterConfig,
    base: f64,
    quality: f64,
    rate: f64,
    /// The rate at the last throughput error.
    learned: Option<f64>,
    hold_until: Option<Instant>,
    last_growth: Instant,
    next_at: Instant,
    recent: VecDeque<Instant>,
    recent_minute: VecDeque<Instant>,
}

impl Limiter {
    pub fn new(cfg: LimiterConfig, now: Instant) -> Limiter {
        let rate = cfg.initial_per_second.clamp(MIN_RATE, cfg.max_per_second);
        Limiter {
            base: cfg.max_per_second,
            quality: 1.0,
            rate,
            learned: None,
            hold_until: None,
            last_growth: now,
            next_at: now,
            recent: VecDeque::new(),
            recent_minute: VecDeque::new(),
            cfg,
        }
    }

    /// A config reload: new ceilings and settings. The learned state stays
    /// (current rate, hold, quality factor, the send windows), the rate is
    /// cut to a lower ceiling at once and grows towards a higher one as
    /// usual; an upgraded number (THROUGHPUT_UPGRADE) takes the new upgraded
    /// ceiling. Returns whether anything changed.
    pub fn reconfigure(&mut self, cfg: LimiterConfig) -> bool {
        if cfg == self.cfg {
            return false;
        }
        let upgraded = self.base > self.cfg.max_per_second;
        self.base = if upgraded {
            cfg.upgraded_per_second.max(cfg.max_per_second)
        } else {
            cfg.max_per_second
        };
        self.cfg = cfg;
        if self.cfg.max_per_minute.is_none() {
            self.recent_minute.clear();
        }
        self.rate = self.rate.min(self.ceiling()).max(MIN_RATE);
        true
    }

    /// Current ceiling, messages per second.
    pub fn ceiling(&self) -> f64 {
        (self.base * self.quality).max(MIN_RATE)
    }

    /// Current adaptive rate, messages per second.
    pub fn rate(&self) -> f64 {
        self.rate.min(self.ceiling())
    }

    fn per_second_cap(&self) -> usize {
        (self.ceiling().floor() as usize).max(1)
    }

    /// The earliest moment a send may start.
    pub fn ready_at(&mut self, now: Instant) -> Instant {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= SECOND + WINDOW_MARGIN)
        {
            self.recent.pop_front();
        }
        while self
            .recent_minute
            .front()
            .is_some_and(|t| now.duration_since(*t) >= MINUTE + WINDOW_MARGIN)
        {
            self.recent_minute.pop_front();
        }
        let mut at = self.next_at.max(now);
        let cap = self.per_second_cap();
        if self.recent.len() >= cap {
            at = at.max(self.recent[self.recent.len() - cap] + SECOND + WINDOW_MARGIN);
        }
        if let Some(m) = self.cfg.max_per_minute.map(|m| m as usize) {
            if self.recent_minute.len() >= m {
                at = at
                    .max(self.recent_minute[self.recent_minute.len() - m] + MINUTE + WINDOW_MARGIN);
            }
        }
        at
    }

    /// A send starts now (call only when `ready_at(now) <= now`).
    pub fn on_send(&mut self, now: Instant) {
        let interval = Duration::from_secs_f64(1.0 / self.rate());
        self.next_at = self.next_at.max(now) + interval;
        // Pacing debt never accumulates into a burst later.
        if self.next_at < now {
            self.next_at = now;
        }
        self.recent.push_back(now);
        if self.cfg.max_per_minute.is_some() {
            self.recent_minute.push_back(now);
        }
    }

    /// A send succeeded: grow the rate (additive increase).
    pub fn on_success(&mut self, now: Instant) {
        let dt = now
            .saturating_duration_since(self.last_growth)
            .as_secs_f64();
        self.last_growth = now;
        if self.hold_until.is_some_and(|h| now < h) {
            return;
        }
        let ceiling = self.ceiling();
        let step = (ceiling / 20.0).max(0.5);
        // Probe slowly near the rate the platform last refused.
        let near_limit = self.learned.is_some_and(|l| self.rate >= 0.9 * l);
        let step = if near_limit { step / 10.0 } else { step };
        self.rate = (self.rate + step * dt.min(5.0)).min(ceiling);
    }

    /// A throughput error (130429, 131048, 80007, HTTP 429): cut and hold.
    pub fn on_throttled(&mut self, now: Instant) {
        let rate = self.rate();
        self.learned = Some(rate);
        self.rate = (rate * DECREASE).max(MIN_RATE);
        self.hold_until = Some(now + self.cfg.hold);
        self.last_growth = now;
        // Let the window drain before sending again.
        self.next_at = self
            .next_at
            .max(now + Duration::from_secs_f64(1.0 / self.rate));
    }

    /// A `phone_number_quality_update` event.
    pub fn on_quality(&mut self, event: &str) {
        match event {
            "YELLOW" => self.quality = 0.5,
            "RED" | "FLAGGED" => self.quality = 0.25,
            "GREEN" | "UNFLAGGED" => self.quality = 1.0,
            "THROUGHPUT_UPGRADE" => {
                self.base = self.cfg.upgraded_per_second.max(self.cfg.max_per_second);
                self.learned = None;
            }
            _ => {}
        }
        self.rate = self.rate.min(self.ceiling());
    }
}

/// The pair limit: per recipient, one message per `interval` with bursts of
/// `burst` (a token bucket), and a penalty after the platform objects.
#[derive(Debug)]
pub struct PairLimiter {
    interval: Duration,
    burst: f64,
    buckets: HashMap<String, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// No send before this (after a 131056).
    blocked_until: Option<Instant>,
}

impl PairLimiter {
    pub fn new(interval: Duration, burst: u32) -> PairLimiter {
        PairLimiter {
            interval,
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    fn tokens(&self, b: &Bucket, now: Instant) -> f64 {
        (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() / self.interval.as_secs_f64())
            .min(self.burst)
    }

    /// When a message to `recipient` may go.
    pub fn ready_at(&self, recipient: &str, now: Instant) -> Instant {
        let Some(b) = self.buckets.get(recipient) else {
            return now;
        };
        let mut at = now;
        if let Some(blocked) = b.blocked_until {
            at = at.max(blocked);
        }
        let t = self.tokens(b, at);
        if t >= 1.0 {
            at
        } else {
            at + self.interval.mul_f64(1.0 - t)
        }
    }

    pub fn on_send(&mut self, recipient: &str, now: Instant) {
        let burst = self.burst;
        let tokens = self
            .buckets
            .get(recipient)
            .map_or(burst, |b| self.tokens(b, now));
        let blocked_until = self.buckets.get(recipient).and_then(|b| b.blocked_until);
        self.buckets.insert(
            recipient.to_string(),
            Bucket {
                tokens: (tokens - 1.0).max(0.0),
                at: now,
                blocked_until,
            },
        );
    }

    /// The platform refused with 131056: wait 4^attempt seconds (Meta's advice).
    pub fn on_limited(&mut self, recipient: &str, attempt: u32, now: Instant) {
        let wait = Duration::from_secs(4u64.saturating_pow(attempt.clamp(1, 6)));
        self.buckets.insert(
            recipient.to_string(),
            Bucket {
                tokens: 0.0,
                at: now,
                blocked_until: Some(now + wait),
            },
        );
    }

    /// Forget recipients whose bucket is full again (keeps the map small).
    pub fn prune(&mut self, now: Instant) {
        let (interval, burst) = (self.interval, self.burst);
        self.buckets.retain(|_, b| {
            let full = b.tokens
                + now.saturating_duration_since(b.at).as_secs_f64() / interval.as_secs_f64()
                >= burst;
            !full || b.blocked_until.is_some_and(|t| t > now)
        });
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max: f64, initial: f64) -> LimiterConfig {
        LimiterConfig {
            max_per_second: max,
            max_per_minute: None,
            initial_per_second: initial,
            upgraded_per_second: max,
            hold: Duration::from_secs(10),
        }
    }

    /// Drive the limiter as fast as it allows for `secs`, returning send times.
    fn run(
        l: &mut Limiter,
        start: Instant,
        secs: f64,
        mut on_each: impl FnMut(&mut Limiter, Instant),
    ) -> Vec<Instant> {
        let mut now = start;
        let end = start + Duration::from_secs_f64(secs);
        let mut sent = Vec::new();
        while now < end {
            now = l.ready_at(now).max(now);
            if now >= end {
                break;
            }
            l.on_send(now);
            sent.push(now);
            on_each(l, now);
        }
        sent
    }

    fn max_in_window(times: &[Instant], window: Duration) -> usize {
        let mut best = 0;
        let mut j = 0;
        for i in 0..times.len() {
            while times[i].duration_since(times[j]) >= window {
                j += 1;
            }
            best = best.max(i - j + 1);
        }
        best
    }

    #[test]
    fn never_more_than_the_ceiling_in_any_second_even_at_full_rate() {
        let start = Instant::now();
        let mut l = Limiter::new(cfg(80.0, 80.0), start);
        let sent = run(&mut l, start, 30.0, |l, now| l.on_success(now));
        assert!(max_in_window(&sent, SECOND) <= 80);
        assert!(
            sent.len() as f64 >= 0.95 * 80.0 * 30.0,
            "uses the ceiling: {}",
            sent.len()
        );
    }

    #[test]
    fn per_minute_ceiling_holds_for_a_warming_number() {
        let start = Instant::now();
        let mut c = cfg(5.0, 5.0);
        c.max_per_minute = Some(20);
        let mut l = Limiter::new(c, start);
        let sent = run(&mut l, start, 300.0, |l, now| l.on_success(now));
        assert!(max_in_window(&sent, MINUTE) <= 20);
        assert!(sent.len() >= 95, "{}", sent.len());
    }

    #[test]
    fn grows_from_the_initial_rate_to_the_ceiling_while_sends_succeed() {
        let start = Instant::now();
        let mut l = Limiter::new(cfg(80.0, 10.0), start);
        assert_eq!(l.rate(), 10.0);
        run(&mut l, start, 30.0, |l, now| l.on_success(now));
        assert_eq!(l.rate(), 80.0);
    }

    /// A platform that refuses beyond `limit` per second: the limiter
    /// learns it and keeps refusals rare.
    #[test]
    fn converges_below_a_lower_platform_limit_with_few_refusals() {
        let start = Instant::now();
        let limit = 20;
        let mut l = Limiter::new(cfg(80.0, 20.0), start);
        let mut accepted: VecDeque<Instant> = VecDeque::new();
        let (mut refused_late, mut late) = (0, 0);
        run(&mut l, start, 300.0, |l, now| {
            while accepted
                .front()
                .is_some_and(|t| now.duration_since(*t) >= SECOND)
            {
                accepted.pop_front();
            }
            let ok = accepted.len() < limit;
            if now.duration_since(start) >= Duration::from_secs(5) {
                late += 1;
                refused_late += usize::from(!ok);
            }
            if ok {
                accepted.push_back(now);
                l.on_success(now);
            } else {
                l.on_throttled(now);
            }
        });
        let ratio = refused_late as f64 / late as f64;
        assert!(ratio < 0.01, "{refused_late} of {late} refused after 5 s");
        assert!(
            late as f64 > 0.6 * 20.0 * 295.0,
            "still uses most of the platform's limit: {late}"
        );
    }

    #[test]
    fn quality_scales_the_ceiling_and_upgrade_raises_it() {
        let start = Instant::now();
        let mut c = cfg(80.0, 80.0);
        c.upgraded_per_second = 200.0;
        let mut l = Limiter::new(c, start);
        l.on_quality("FLAGGED");
        assert_eq!((l.ceiling(), l.rate()), (20.0, 20.0));
        l.on_quality("YELLOW");
        assert_eq!(l.ceiling(), 40.0);
        l.on_quality("UNFLAGGED");
        assert_eq!(l.ceiling(), 80.0);
        l.on_quality("THROUGHPUT_UPGRADE");
        assert_eq!(l.ceiling(), 200.0);
        let sent = run(&mut l, start, 20.0, |l, now| l.on_success(now));
        assert!(max_in_window(&sent, SECOND) <= 200);
    }

    #[test]
    fn pair_limit_allows_a_burst_then_one_per_interval_and_backs_off_after_refusal() {
        let now = Instant::now();
        let mut p = PairLimiter::new(Duration::from_secs(6), 3);
        for _ in 0..3 {
            assert_eq!(p.ready_at("c", now), now);
            p.on_send("c", now);
        }
        assert_eq!(p.ready_at("c", now), now + Duration::from_secs(6));
        assert_eq!(p.ready_at("other", now), now, "recipients are independent");
        p.on_limited("c", 2, now);
        assert!(p.ready_at("c", now) >= now + Duration::from_secs(16));
        p.prune(now + Duration::from_secs(100));
        assert!(p.is_empty());
    }

    #[test]
    fn reconfigure_applies_new_ceilings_at_once_and_keeps_what_was_learned() {
        let start = Instant::now();
        let mut l = Limiter::new(cfg(20.0, 20.0), start);
        let sent = run(&mut l, start, 2.0, |l, now| l.on_success(now));
        assert!(sent.len() >= 30, "{}", sent.len());
        assert!(
            !l.reconfigure(cfg(20.0, 20.0)),
            "the same settings change nothing"
        );
        l.on_quality("YELLOW");
        assert!(l.reconfigure(cfg(8.0, 1.0)));
        // The quality factor stays; the rate is cut to the new ceiling now.
        assert_eq!(l.ceiling(), 4.0);
        assert!(l.rate() <= 4.0);
        let later = start + Duration::from_secs(2);
        let sent = run(&mut l, later, 3.0, |l, now| l.on_success(now));
        for (i, t) in sent.iter().enumerate() {
            let in_window = sent[i..]
                .iter()
                .take_while(|u| u.duration_since(*t) < SECOND)
                .count();
            assert!(
                in_window <= 4,
                "{in_window} sends within a second at ceiling 4"
            );
        }
        // A higher ceiling is grown into, not jumped to.
        l.on_quality("GREEN");
        assert!(l.reconfigure(cfg(40.0, 1.0)));
        assert_eq!(l.ceiling(), 40.0);
        assert!(l.rate() <= 8.0, "{}", l.rate());
        let mut minute = cfg(40.0, 1.0);
        minute.max_per_minute = Some(30);
        assert!(l.reconfigure(minute));
        let at = start + Duration::from_secs(10);
        let sent = run(&mut l, at, 20.0, |l, now| l.on_success(now));
        assert!(
            sent.len() <= 30,
            "{} sends in 20 s with 30 per minute",
            sent.len()
        );
    }
}
