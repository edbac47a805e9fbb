//! The routing mechanics every command shares: choosing an agent for a step
//! (the strategies), entering a step (assign, skip or queue), serving queues
//! when capacity frees (`drain`), restoring the at-rest state after changes
//! of presence or configuration (`rebalance`), and firing timers.
//!
//! Invariants:
//! - At rest (between commands) no queued conversation could be assigned:
//!   every change that can free capacity or make an agent eligible ends with
//!   `drain` (focused on the one agent whose capacity freed) or `rebalance`.
//!   Hence a conversation arriving at a step never overtakes one waiting in
//!   it, except one waiting to avoid the only free agent.
//! - Queues are served in arrival order (`Conv::seq`); sticky waiters of an
//!   agent are served before step queues, since they wait for that agent
//!   alone and for a bounded time.
//! - Every choice is a function of ordered data (agent-id order, arrival
//!   order, timer order), never of slot numbers or hash order.

use std::collections::BTreeMap;

use super::effect::{Effect, QueueRef, Reason};
use super::engine::Engine;
use super::model::{Actor, ConvId, Strategy, TeamId};
use super::state::{Agent, Conv, ConvState, StepState, Team, Timer};
use super::stats::push_recent;

pub(super) type Fx = Vec<Effect>;

pub(super) fn slot(agents: &[Option<Agent>], ix: u32) -> &Agent {
    agents[ix as usize]
        .as_ref()
        .expect("agent slots referenced by the engine are live")
}

pub(super) fn slot_mut(agents: &mut [Option<Agent>], ix: u32) -> &mut Agent {
    agents[ix as usize]
        .as_mut()
        .expect("agent slots referenced by the engine are live")
}

/// 1-based position of `seq` in `queue` (O(1) at the back, where arrivals go).
pub(super) fn position_of(queue: &BTreeMap<u64, ConvId>, seq: u64) -> u32 {
    match queue.last_key_value() {
        Some((&last, _)) if last == seq => queue.len() as u32,
        _ => queue.range(..=seq).count() as u32,
    }
}

/// The queue a waiting conversation is in.
pub(super) fn queue_ref(team: &TeamId, state: &ConvState) -> Option<QueueRef> {
    match state {
        ConvState::Queued { step, .. } => Some(QueueRef::Step {
            team: team.clone(),
            step: *step,
        }),
        ConvState::Sticky { agent, .. } => Some(QueueRef::Sticky {
            agent: agent.clone(),
        }),
        _ => None,
    }
}

impl Engine {
    pub(super) fn ag(&self, ix: u32) -> &Agent {
        slot(&self.agents, ix)
    }

    pub(super) fn ag_mut(&mut self, ix: u32) -> &mut Agent {
        slot_mut(&mut self.agents, ix)
    }

    /// The deadlines of a conversation, from its state and its team's policy.
    pub(super) fn deadlines(&self, conv: &Conv) -> Vec<(i64, Timer)> {
        let mut out = Vec::new();
        let Some(team) = self.teams.get(&conv.team) else {
            return out;
        };
        let p = &team.policy;
        let overflow = match (p.max_wait_ms, &p.overflow_team) {
            (Some(w), Some(_)) => {
                Some((conv.team_since.saturating_add(w), Timer::Overflow(conv.id)))
            }
            _ => None,
        };
        match &conv.state {
            ConvState::Queued { step, since } => {
                let s = *step as usize;
                if s + 1 < p.steps.len() {
                    if let Some(t) = p.steps[s].timeout_ms {
                        out.push((since.saturating_add(t), Timer::StepTimeout(conv.id)));
                    }
                }
                out.extend(overflow);
            }
            ConvState::Sticky { since, .. } => {
                out.push((
                    since.saturating_add(p.sticky_wait_ms),
                    Timer::StickyWait(conv.id),
                ));
                out.extend(overflow);
            }
            ConvState::Assigned {
                since,
                awaiting_reply: true,
                ..
            } => {
                if let Some(t) = p.first_reply_timeout_ms {
                    out.push((since.saturating_add(t), Timer::FirstReply(conv.id)));
                }
            }
            _ => {}
        }
        out
    }

    pub(super) fn schedule(&mut self, id: ConvId) {
        let Some(conv) = self.convs.get(&id) else {
            return;
        };
        let timers = self.deadlines(conv);
        for t in &timers {
            self.timers.insert(t.clone());
        }
        if let Some(conv) = self.convs.get_mut(&id) {
            conv.timers = timers;
        }
    }

    pub(super) fn unschedule(&mut self, id: ConvId) {
        if let Some(conv) = self.convs.get_mut(&id) {
            for t in std::mem::take(&mut conv.timers) {
                self.timers.remove(&t);
            }
        }
    }

    /// Take a conversation out of wherever it is (agent, queue, sticky
    /// queue) and cancel its timers; it is left `Routing`.
    pub(super) fn detach(&mut self, id: ConvId) -> ConvState {
        self.unschedule(id);
        let Some(conv) = self.convs.get_mut(&id) else {
            return ConvState::Routing;
        };
        let old = std::mem::replace(&mut conv.state, ConvState::Routing);
        match &old {
            ConvState::Assigned { agent, .. } => {
                if let Some(&ix) = self.agent_ix.get(agent) {
                    slot_mut(&mut self.agents, ix).active.remove(&id);
                }
            }
            ConvState::Queued { step, .. } => {
                if let Some(st) = self
                    .teams
                    .get_mut(&conv.team)
                    .and_then(|t| t.steps.get_mut(*step as usize))
                {
                    st.queue.remove(&conv.seq);
                }
            }
            ConvState::Sticky { agent, .. } => {
                if let Some(&ix) = self.agent_ix.get(agent) {
                    slot_mut(&mut self.agents, ix).sticky.remove(&conv.seq);
                }
            }
            ConvState::Routing => {}
        }
        old
    }

    /// A conversation starts a new routing episode (returned, transferred):
    /// the wait and the overflow clock restart.
    pub(super) fn restart_wait(&mut self, id: ConvId, now: i64) {
        if let Some(c) = self.convs.get_mut(&id) {
            c.waiting_since = now;
            c.team_since = now;
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn place_assigned(
        &mut self,
        id: ConvId,
        ix: u32,
        reason: Reason,
        actor: Actor,
        step: Option<u32>,
        now: i64,
        fx: &mut Fx,
    ) {
        let agent = slot_mut(&mut self.agents, ix);
        agent.active.insert(id);
        agent.last_assigned = Some(now);
        let agent_id = agent.id.clone();
        let Some(conv) = self.convs.get_mut(&id) else {
            return;
        };
        conv.state = ConvState::Assigned {
            agent: agent_id.clone(),
            since: now,
            awaiting_reply: true,
        };
        conv.avoid = None;
        let team_id = conv.team.clone();
        if let Some(s) = step {
            if let Some(st) = self
                .teams
                .get_mut(&team_id)
                .and_then(|t| t.steps.get_mut(s as usize))
            {
                if reason == Reason::Policy {
                    st.rr_cursor = Some(agent_id.clone());
                }
                push_recent(&mut st.recent, now);
            }
        }
        self.schedule(id);
        fx.push(Effect::Assigned {
            conv: id,
            agent: agent_id,
            team: team_id,
            step,
            reason,
            actor,
        });
    }

    pub(super) fn place_queued(&mut self, id: ConvId, step: u32, now: i64, fx: &mut Fx) {
        let Some(conv) = self.convs.get_mut(&id) else {
            return;
        };
        conv.state = ConvState::Queued { step, since: now };
        let (seq, team_id) = (conv.seq, conv.team.clone());
        let position = match self
            .teams
            .get_mut(&team_id)
            .and_then(|t| t.steps.get_mut(step as usize))
        {
            Some(st) => {
                st.queue.insert(seq, id);
                position_of(&st.queue, seq)
            }
            None => 0,
        };
        self.schedule(id);
        fx.push(Effect::Queued {
            conv: id,
            queue: QueueRef::Step {
                team: team_id,
                step,
            },
            position,
        });
    }

    pub(super) fn place_sticky(&mut self, id: ConvId, ix: u32, now: i64, fx: &mut Fx) {
        let agent_id = self.ag(ix).id.clone();
        let Some(conv) = self.convs.get_mut(&id) else {
            return;
        };
        conv.state = ConvState::Sticky {
            agent: agent_id.clone(),
            since: now,
        };
        let seq = conv.seq;
        let sticky = &mut slot_mut(&mut self.agents, ix).sticky;
        sticky.insert(seq, id);
        let position = position_of(sticky, seq);
        self.schedule(id);
        fx.push(Effect::Queued {
            conv: id,
            queue: QueueRef::Sticky { agent: agent_id },
            position,
        });
    }

    /// Route a detached conversation through its team's policy from step
    /// `from`: assign, skip an empty step, or queue.
    pub(super) fn route(&mut self, id: ConvId, from: u32, now: i64, fx: &mut Fx) {
        let Some(conv) = self.convs.get(&id) else {
            return;
        };
        let Some(team) = self.teams.get(&conv.team) else {
            return;
        };
        let n = team.steps.len() as u32;
        let mut s = from.min(n.saturating_sub(1));
        let avoid = conv.avoid.as_deref();
        let decision = loop {
            if let Some(ix) = self.pick(team, s, avoid) {
                break Ok((s, ix));
            }
            if s + 1 < n && team.policy.steps[s as usize].skip_if_empty && !self.any_online(team, s)
            {
                s += 1;
                continue;
            }
            break Err(s);
        };
        match decision {
            Ok((s, ix)) => {
                self.place_assigned(id, ix, Reason::Policy, Actor::System, Some(s), now, fx)
            }
            Err(s) => self.place_queued(id, s, now, fx),
        }
    }

    /// Move a waiting conversation to step `step` (of `to_team`, or of its
    /// own team) and route it there.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn move_waiting(
        &mut self,
        id: ConvId,
        to_team: Option<TeamId>,
        step: u32,
        reason: Reason,
        actor: Actor,
        now: i64,
        fx: &mut Fx,
    ) {
        let old = self.detach(id);
        let Some(conv) = self.convs.get_mut(&id) else {
            return;
        };
        let from = queue_ref(&conv.team, &old);
        if let Some(t) = to_team {
            conv.team = t;
            conv.team_since = now;
        }
        if let Some(from) = from {
            fx.push(Effect::Moved {
                conv: id,
                from,
                team: conv.team.clone(),
                step,
                reason,
                actor,
            });
        }
        self.route(id, step, now, fx);
    }

    pub(super) fn any_online(&self, team: &Team, s: u32) -> bool {
        team.steps[s as usize]
            .matching
            .iter()
            .any(|&ix| self.ag(ix).online())
    }

    pub(super) fn matching_contains(&self, st: &StepState, ix: u32) -> bool {
        let id = &self.ag(ix).id;
        st.matching
            .binary_search_by(|&m| self.ag(m).id.cmp(id))
            .is_ok()
    }

    /// The agent step `s` of `team` gives a conversation to now, if any.
    /// `avoid` is preferred against: chosen only when no other agent
    /// matching the step is online at all.
    pub(super) fn pick(&self, team: &Team, s: u32, avoid: Option<&str>) -> Option<u32> {
        let strategy = team.policy.steps.get(s as usize)?.strategy;
        let st = team.steps.get(s as usize)?;
        let avoid_ix = avoid.and_then(|a| self.agent_ix.get(a).copied());
        let chosen = self.pick_among(strategy, st, avoid_ix);
        if chosen.is_some() {
            return chosen;
        }
        let a = avoid_ix?;
        let others_online = st
            .matching
            .iter()
            .any(|&ix| ix != a && self.ag(ix).online());
        if strategy == Strategy::Manual
            || others_online
            || !self.ag(a).available()
            || !self.matching_contains(st, a)
        {
            return None;
        }
        Some(a)
    }

    fn pick_among(&self, strategy: Strategy, st: &StepState, exclude: Option<u32>) -> Option<u32> {
        let free = |ix: u32| Some(ix) != exclude && self.ag(ix).available();
        // `matching` is in agent-id order and only a strictly better key
        // replaces the best, so equal keys go to the smallest id.
        match strategy {
            Strategy::Manual => None,
            Strategy::LeastLoaded => {
                let mut best: Option<((u32, Option<i64>), u32)> = None;
                for &ix in &st.matching {
                    if !free(ix) {
                        continue;
                    }
                    let a = self.ag(ix);
                    let key = (a.load(), a.last_assigned);
                    if best.as_ref().is_none_or(|(k, _)| key < *k) {
                        best = Some((key, ix));
                    }
                }
                best.map(|b| b.1)
            }
            Strategy::LongestIdle => {
                let mut best: Option<(Option<i64>, u32)> = None;
                for &ix in &st.matching {
                    if !free(ix) {
                        continue;
                    }
                    let key = self.ag(ix).last_assigned;
                    if best.as_ref().is_none_or(|(k, _)| key < *k) {
                        best = Some((key, ix));
                    }
                }
                best.map(|b| b.1)
            }
            Strategy::RoundRobin => {
                let n = st.matching.len();
                let start = match &st.rr_cursor {
                    Some(c) => st
                        .matching
                        .partition_point(|&ix| self.ag(ix).id.as_str() <= c.as_str()),
                    None => 0,
                };
                (0..n)
                    .map(|k| st.matching[(start + k) % n])
                    .find(|&ix| free(ix))
            }
        }
    }

    /// The first conversation of a step queue that can be assigned now, by
    /// arrival, with its agent: `(seq, conv, agent slot)`.
    pub(super) fn queue_candidate(&self, team: &Team, s: u32) -> Option<(u64, ConvId, u32)> {
        let st = &team.steps[s as usize];
        if st.queue.is_empty() || team.policy.steps[s as usize].strategy == Strategy::Manual {
            return None;
        }
        // Nobody free for a plain conversation means nobody at all: avoiding
        // an agent only narrows the choice.
        let plain = self.pick(team, s, None)?;
        for (&seq, &cid) in &st.queue {
            match self.convs.get(&cid).and_then(|c| c.avoid.as_deref()) {
                None => return Some((seq, cid, plain)),
                Some(a) => {
                    if let Some(ix) = self.pick(team, s, Some(a)) {
                        return Some((seq, cid, ix));
                    }
                }
            }
        }
        None
    }

    /// Give freed capacity to waiting conversations until none can be
    /// placed. `focus`: only one agent's capacity changed, so only its sticky
    /// waiters and the queues it matches can move.
    pub(super) fn drain(&mut self, focus: Option<u32>, now: i64, fx: &mut Fx) {
        let sticky_agents: Vec<u32> = match focus {
            Some(ix) => vec![ix],
            None => self
                .agent_ix
                .values()
                .copied()
                .filter(|&ix| !self.ag(ix).sticky.is_empty())
                .collect(),
        };
        for ix in sticky_agents {
            while self.ag(ix).available() {
                let Some((_, &cid)) = self.ag(ix).sticky.first_key_value() else {
                    break;
                };
                self.detach(cid);
                self.place_assigned(cid, ix, Reason::Sticky, Actor::System, None, now, fx);
            }
        }
        loop {
            let mut best: Option<(u64, ConvId, u32, u32)> = None;
            let mut consider = |cand: Option<(u64, ConvId, u32)>, s: u32| {
                if let Some((seq, cid, ix)) = cand {
                    if best.is_none_or(|b| seq < b.0) {
                        best = Some((seq, cid, s, ix));
                    }
                }
            };
            match focus {
                Some(fix) => {
                    for (tid, s) in &self.ag(fix).steps {
                        if let Some(team) = self.teams.get(tid) {
                            consider(self.queue_candidate(team, *s), *s);
                        }
                    }
                }
                None => {
                    for team in self.teams.values() {
                        for s in 0..team.steps.len() as u32 {
                            consider(self.queue_candidate(team, s), s);
                        }
                    }
                }
            }
            let Some((_, cid, s, ix)) = best else {
                break;
            };
            self.detach(cid);
            self.place_assigned(cid, ix, Reason::Policy, Actor::System, Some(s), now, fx);
        }
    }

    /// Bring the engine back to rest after presence or configuration
    /// changed: sticky waits for agents no longer online end, queues of
    /// `skip_if_empty` steps with nobody online move on, and free capacity
    /// is handed out.
    pub(super) fn rebalance(&mut self, now: i64, fx: &mut Fx) {
        let stale: Vec<ConvId> = self
            .agent_ix
            .values()
            .map(|&ix| self.ag(ix))
            .filter(|a| !a.online())
            .flat_map(|a| a.sticky.values().copied())
            .collect();
        for cid in stale {
            self.move_waiting(
                cid,
                None,
                0,
                Reason::StickyFallthrough,
                Actor::System,
                now,
                fx,
            );
        }
        let mut skips = Vec::new();
        for team in self.teams.values() {
            for s in 0..team.steps.len().saturating_sub(1) {
                let st = &team.steps[s];
                if team.policy.steps[s].skip_if_empty
                    && !st.queue.is_empty()
                    && !self.any_online(team, s as u32)
                {
                    skips.extend(st.queue.values().map(|&c| (c, s as u32 + 1)));
                }
            }
        }
        for (cid, next) in skips {
            self.move_waiting(cid, None, next, Reason::Skipped, Actor::System, now, fx);
        }
        self.drain(None, now, fx);
    }

    /// Return every conversation of an agent to routing, in arrival order.
    pub(super) fn release_agent(
        &mut self,
        ix: u32,
        reason: Reason,
        actor: Actor,
        now: i64,
        fx: &mut Fx,
    ) {
        let agent_id = self.ag(ix).id.clone();
        let mut held: Vec<(u64, ConvId)> = self
            .ag(ix)
            .active
            .iter()
            .filter_map(|c| self.convs.get(c).map(|cv| (cv.seq, *c)))
            .collect();
        held.sort_unstable();
        for (_, cid) in held {
            self.detach(cid);
            fx.push(Effect::Unassigned {
                conv: cid,
                agent: agent_id.clone(),
                reason,
                actor: actor.clone(),
            });
            self.restart_wait(cid, now);
            self.route(cid, 0, now, fx);
        }
    }

    /// Act on one expired deadline.
    pub(super) fn fire(&mut self, timer: Timer, now: i64, fx: &mut Fx) {
        match timer {
            Timer::Grace(agent) => {
                let Some(&ix) = self.agent_ix.get(&agent) else {
                    return;
                };
                self.ag_mut(ix).grace_until = None;
                self.release_agent(ix, Reason::AgentOffline, Actor::System, now, fx);
            }
            Timer::StepTimeout(cid) => {
                let Some(ConvState::Queued { step, .. }) = self.convs.get(&cid).map(|c| &c.state)
                else {
                    return;
                };
                let next = step + 1;
                self.move_waiting(cid, None, next, Reason::Timeout, Actor::System, now, fx);
            }
            Timer::Overflow(cid) => {
                let Some(over) = self
                    .convs
                    .get(&cid)
                    .and_then(|c| self.teams.get(&c.team))
                    .and_then(|t| t.policy.overflow_team.clone())
                else {
                    return;
                };
                self.move_waiting(cid, Some(over), 0, Reason::Overflow, Actor::System, now, fx);
            }
            Timer::StickyWait(cid) => {
                self.move_waiting(
                    cid,
                    None,
                    0,
                    Reason::StickyFallthrough,
                    Actor::System,
                    now,
                    fx,
                );
            }
            Timer::FirstReply(cid) => {
                let Some(ConvState::Assigned { agent, .. }) =
                    self.convs.get(&cid).map(|c| c.state.clone())
                else {
                    return;
                };
                self.detach(cid);
                fx.push(Effect::Unassigned {
                    conv: cid,
                    agent: agent.clone(),
                    reason: Reason::NoFirstReply,
                    actor: Actor::System,
                });
                let freed = self.agent_ix.get(&agent).copied();
                if let Some(c) = self.convs.get_mut(&cid) {
                    c.avoid = Some(agent);
                }
                self.restart_wait(cid, now);
                self.route(cid, 0, now, fx);
                if let Some(ix) = freed {
                    self.drain(Some(ix), now, fx);
                }
            }
        }
    }

    /// Recompute which agents match every step (after team changes).
    pub(super) fn rebuild_matches(&mut self) {
        let order: Vec<u32> = self.agent_ix.values().copied().collect();
        for a in self.agents.iter_mut().flatten() {
            a.steps.clear();
        }
        for team in self.teams.values_mut() {
            for (s, st) in team.steps.iter_mut().enumerate() {
                st.matching = order
                    .iter()
                    .copied()
                    .filter(|&ix| st.target.matches(slot(&self.agents, ix)))
                    .collect();
                for &ix in &st.matching {
                    slot_mut(&mut self.agents, ix)
                        .steps
                        .push((team.id.clone(), s as u32));
                }
            }
        }
    }

    /// Recompute which steps one agent matches (after its spec changed).
    pub(super) fn refresh_agent_matches(&mut self, ix: u32) {
        let mut steps = Vec::new();
        for team in self.teams.values_mut() {
            for (s, st) in team.steps.iter_mut().enumerate() {
                let agent = slot(&self.agents, ix);
                let want = st.target.matches(agent);
                let pos = st
                    .matching
                    .binary_search_by(|&m| slot(&self.agents, m).id.cmp(&agent.id));
                match (want, pos) {
                    (true, Err(p)) => st.matching.insert(p, ix),
                    (false, Ok(p)) => {
                        st.matching.remove(p);
                    }
                    _ => {}
                }
                if want {
                    steps.push((team.id.clone(), s as u32));
                }
            }
        }
        self.ag_mut(ix).steps = steps;
    }
}
