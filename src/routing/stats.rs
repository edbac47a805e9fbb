//! Bounded statistics the live view and the wait estimate read: per agent,
//! the last first-response times and resolutions per minute of the last
//! hour; per policy step, the times of its last assignments.
//!
//! Invariants: every structure here has a fixed maximum size, whatever the
//! traffic; all of it is part of the snapshot, so queries after a restore
//! answer as if the engine had never stopped.

use std::collections::VecDeque;

/// First-response times averaged in the live view.
pub const FIRST_RESPONSE_RING: usize = 64;
/// Assignments per step the wait estimate looks back over.
pub const RECENT_ASSIGNMENTS: usize = 16;
const MINUTE_MS: i64 = 60_000;
const HOUR_MINUTES: usize = 60;

/// Per-agent statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AgentStats {
    /// Milliseconds from assignment to first reply, newest last.
    pub first_responses: VecDeque<i64>,
    /// `(minute number, resolutions in it)`, slot = minute mod 60.
    pub resolved: [(i64, u32); HOUR_MINUTES],
}

impl Default for AgentStats {
    fn default() -> Self {
        AgentStats {
            first_responses: VecDeque::new(),
            resolved: [(i64::MIN, 0); HOUR_MINUTES],
        }
    }
}

impl AgentStats {
    pub fn record_first_response(&mut self, ms: i64) {
        if self.first_responses.len() == FIRST_RESPONSE_RING {
            self.first_responses.pop_front();
        }
        self.first_responses.push_back(ms);
    }

    /// Mean of the recorded first responses (integer ms).
    pub fn avg_first_response(&self) -> Option<i64> {
        let n = self.first_responses.len() as i64;
        (n > 0).then(|| self.first_responses.iter().sum::<i64>() / n)
    }

    pub fn record_resolved(&mut self, now: i64) {
        let minute = now.div_euclid(MINUTE_MS);
        let slot = &mut self.resolved[minute.rem_euclid(HOUR_MINUTES as i64) as usize];
        if slot.0 != minute {
            *slot = (minute, 0);
        }
        slot.1 = slot.1.saturating_add(1);
    }

    /// Resolutions in the current minute and the 59 before it.
    pub fn resolved_last_hour(&self, now: i64) -> u32 {
        let minute = now.div_euclid(MINUTE_MS);
        self.resolved
            .iter()
            .filter(|(m, _)| *m <= minute && *m > minute - HOUR_MINUTES as i64)
            .map(|(_, c)| *c)
            .sum()
    }
}

/// Push `t` onto a ring of recent assignment times.
pub(super) fn push_recent(ring: &mut VecDeque<i64>, t: i64) {
    if ring.len() == RECENT_ASSIGNMENTS {
        ring.pop_front();
    }
    ring.push_back(t);
}

/// Mean time between the assignments in `ring` (None with fewer than two).
pub(super) fn mean_interval(ring: &VecDeque<i64>) -> Option<i64> {
    match (ring.front(), ring.back()) {
        (Some(first), Some(last)) if ring.len() >= 2 => {
            Some((last - first) / (ring.len() as i64 - 1))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_response_ring_is_bounded_and_averaged() {
        let mut s = AgentStats::default();
        assert_eq!(s.avg_first_response(), None);
        for ms in 0..200 {
            s.record_first_response(ms);
        }
        assert_eq!(s.first_responses.len(), FIRST_RESPONSE_RING);
        // The last 64 values: 136..=199, mean 167.5 -> 167.
        assert_eq!(s.avg_first_response(), Some(167));
    }

    #[test]
    fn resolved_counts_the_last_sixty_minutes() {
        let mut s = AgentStats::default();
        s.record_resolved(0);
        s.record_resolved(59_999);
        s.record_resolved(30 * MINUTE_MS);
        assert_eq!(s.resolved_last_hour(30 * MINUTE_MS), 3);
        // Minute 0 is the oldest of the hour at minute 59, gone at minute 60.
        assert_eq!(s.resolved_last_hour(59 * MINUTE_MS + 5), 3);
        assert_eq!(s.resolved_last_hour(60 * MINUTE_MS), 1);
        // A slot is reused for a later minute: the old count is dropped.
        s.record_resolved(60 * MINUTE_MS);
        assert_eq!(s.resolved_last_hour(60 * MINUTE_MS), 2);
        assert_eq!(s.resolved_last_hour(200 * MINUTE_MS), 0);
    }

    #[test]
    fn mean_interval_needs_two_points() {
        let mut r = VecDeque::new();
        assert_eq!(mean_interval(&r), None);
        push_recent(&mut r, 1_000);
        assert_eq!(mean_interval(&r), None);
        push_recent(&mut r, 4_000);
        push_recent(&mut r, 7_000);
        assert_eq!(mean_interval(&r), Some(3_000));
        for t in 0..100 {
            push_recent(&mut r, t * 10);
        }
        assert_eq!(r.len(), RECENT_ASSIGNMENTS);
        assert_eq!(mean_interval(&r), Some(10));
    }
}
