//! `Engine::check_invariants`: a full O(agents × steps + conversations)
//! audit of the engine's state, for tests, the stress test and snapshot
//! restore (a snapshot is untrusted input).
//!
//! What it proves when it passes:
//! - no agent above `max_concurrent`; no conversation assigned twice; every
//!   open conversation assigned or in exactly one queue; queues in arrival
//!   order and consistent with the conversations;
//! - the engine is at rest: no waiting conversation could be assigned now,
//!   no sticky wait for an agent who is not online, no conversation left in
//!   a `skip_if_empty` step with nobody online;
//! - derived data (memberships, matching lists, timers) equals what it is
//!   derived from.

use std::collections::BTreeSet;

use super::engine::Engine;
use super::error::InvariantViolation;
use super::model::{AgentStatus, StepTarget, Strategy};
use super::state::ConvState;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(InvariantViolation(format!($($msg)+)));
        }
    };
}

impl Engine {
    /// Audit the whole state (see the module documentation of `check`).
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        self.check_agents()?;
        self.check_teams()?;
        self.check_conversations()?;
        Ok(())
    }

    fn check_agents(&self) -> Result<(), InvariantViolation> {
        let live = self.agents.iter().filter(|a| a.is_some()).count();
        ensure!(
            live == self.agent_ix.len(),
            "{live} live agent slots, {} ids",
            self.agent_ix.len()
        );
        for (id, &ix) in &self.agent_ix {
            let a = self.agents[ix as usize]
                .as_ref()
                .ok_or_else(|| InvariantViolation(format!("agent {id} points at a free slot")))?;
            ensure!(a.id == *id, "slot of {id} holds {}", a.id);
            ensure!(
                a.load() <= a.max,
                "agent {id} has {} conversations, max {}",
                a.load(),
                a.max
            );
            for c in &a.active {
                let conv = self
                    .convs
                    .get(c)
                    .ok_or_else(|| InvariantViolation(format!("agent {id} holds closed {c}")))?;
                ensure!(
                    matches!(&conv.state, ConvState::Assigned { agent, .. } if agent == id),
                    "agent {id} holds {c} which is {:?}",
                    conv.state
                );
            }
            for (seq, c) in &a.sticky {
                let conv = self.convs.get(c).ok_or_else(|| {
                    InvariantViolation(format!("sticky queue of {id} holds closed {c}"))
                })?;
                ensure!(
                    conv.seq == *seq
                        && matches!(&conv.state, ConvState::Sticky { agent, .. } if agent == id),
                    "sticky queue of {id} holds {c} which is {:?}",
                    conv.state
                );
            }
            if !a.sticky.is_empty() {
                ensure!(
                    a.online() && !a.has_capacity(),
                    "conversations wait for {id} who is {} with {} of {}",
                    a.status,
                    a.load(),
                    a.max
                );
            }
            match a.grace_until {
                Some(t) => {
                    ensure!(
                        a.status == AgentStatus::Offline,
                        "{id} in grace while {}",
                        a.status
                    );
                    ensure!(
                        self.timers
                            .contains(&(t, super::state::Timer::Grace(id.clone()))),
                        "grace of {id} has no timer"
                    );
                }
                None => ensure!(
                    a.status != AgentStatus::Offline || a.active.is_empty(),
                    "offline {id} keeps conversations without a grace period"
                ),
            }
            for t in &a.teams {
                ensure!(
                    self.teams
                        .get(t)
                        .is_some_and(|team| team.members.contains(id)),
                    "{id} lists team {t} which does not list it"
                );
            }
            let mut steps = Vec::new();
            for team in self.teams.values() {
                for (s, st) in team.steps.iter().enumerate() {
                    if st.target.matches(a) {
                        steps.push((team.id.clone(), s as u32));
                    }
                }
            }
            ensure!(a.steps == steps, "steps of {id} are stale");
        }
        Ok(())
    }

    fn check_teams(&self) -> Result<(), InvariantViolation> {
        for (number, team) in &self.numbers {
            ensure!(
                self.teams.contains_key(team),
                "number {number} maps to missing {team}"
            );
        }
        let order: Vec<u32> = self.agent_ix.values().copied().collect();
        for (tid, team) in &self.teams {
            ensure!(team.id == *tid, "team {tid} is keyed wrongly");
            let p = &team.policy;
            ensure!(
                !p.steps.is_empty() && p.steps.len() == team.steps.len(),
                "team {tid} has {} policy steps and {} step states",
                p.steps.len(),
                team.steps.len()
            );
            if let Some(o) = &p.overflow_team {
                ensure!(self.teams.contains_key(o), "{tid} overflows to missing {o}");
            }
            for m in &team.members {
                ensure!(
                    self.agent_ix
                        .get(m)
                        .is_some_and(|&ix| self.ag(ix).teams.contains(tid)),
                    "team {tid} lists {m} which does not list it"
                );
            }
            let last = team.steps.len() - 1;
            for (s, (st, step)) in team.steps.iter().zip(&p.steps).enumerate() {
                if let StepTarget::Team(t) = &step.target {
                    ensure!(
                        self.teams.contains_key(t),
                        "{tid} step {s} targets missing {t}"
                    );
                }
                let want: Vec<u32> = order
                    .iter()
                    .copied()
                    .filter(|&ix| st.target.matches(self.ag(ix)))
                    .collect();
                ensure!(
                    st.matching == want,
                    "matching list of {tid} step {s} is stale"
                );
                for (seq, c) in &st.queue {
                    let conv = self.convs.get(c).ok_or_else(|| {
                        InvariantViolation(format!("queue {tid}/{s} holds closed {c}"))
                    })?;
                    ensure!(
                        conv.seq == *seq
                            && conv.team == *tid
                            && matches!(conv.state, ConvState::Queued { step, .. } if step as usize == s),
                        "queue {tid}/{s} holds {c} which is {:?} in {}",
                        conv.state,
                        conv.team
                    );
                }
                // At rest.
                if step.strategy != Strategy::Manual {
                    if let Some((_, c, ix)) = self.queue_candidate(team, s as u32) {
                        return Err(InvariantViolation(format!(
                            "{c} waits in {tid}/{s} while {} could take it",
                            self.ag(ix).id
                        )));
                    }
                }
                if s < last && step.skip_if_empty && !st.queue.is_empty() {
                    ensure!(
                        self.any_online(team, s as u32),
                        "{tid}/{s} skips when empty but holds conversations with nobody online"
                    );
                }
            }
        }
        Ok(())
    }

    fn check_conversations(&self) -> Result<(), InvariantViolation> {
        let mut seqs = BTreeSet::new();
        let (mut assigned, mut waiting, mut timers) = (0usize, 0usize, 0usize);
        for (id, c) in &self.convs {
            ensure!(c.id == *id, "conversation {id} is keyed wrongly");
            ensure!(
                c.seq < self.next_seq && seqs.insert(c.seq),
                "conversation {id} has a bad arrival {}",
                c.seq
            );
            ensure!(
                self.teams.contains_key(&c.team),
                "{id} routed under missing team {}",
                c.team
            );
            match &c.state {
                ConvState::Routing => {
                    return Err(InvariantViolation(format!("{id} left mid-routing")))
                }
                ConvState::Assigned { agent, .. } => {
                    assigned += 1;
                    ensure!(
                        self.agent_ix
                            .get(agent)
                            .is_some_and(|&ix| self.ag(ix).active.contains(id)),
                        "{id} assigned to {agent} who does not hold it"
                    );
                }
                ConvState::Queued { step, .. } => {
                    waiting += 1;
                    let held = self
                        .teams
                        .get(&c.team)
                        .and_then(|t| t.steps.get(*step as usize))
                        .and_then(|st| st.queue.get(&c.seq));
                    ensure!(held == Some(id), "{id} not in its queue {}/{step}", c.team);
                }
                ConvState::Sticky { agent, .. } => {
                    waiting += 1;
                    let held = self
                        .agent_ix
                        .get(agent)
                        .and_then(|&ix| self.ag(ix).sticky.get(&c.seq));
                    ensure!(held == Some(id), "{id} not in the sticky queue of {agent}");
                }
            }
            ensure!(
                c.timers == self.deadlines(c),
                "timers of {id} are stale: {:?} vs {:?}",
                c.timers,
                self.deadlines(c)
            );
            for t in &c.timers {
                ensure!(self.timers.contains(t), "timer {t:?} of {id} is not set");
            }
            timers += c.timers.len();
        }
        let held: usize = self
            .agent_ix
            .values()
            .map(|&ix| self.ag(ix).active.len())
            .sum();
        ensure!(
            held == assigned,
            "agents hold {held} conversations, {assigned} are assigned"
        );
        let queued: usize = self
            .teams
            .values()
            .flat_map(|t| t.steps.iter())
            .map(|st| st.queue.len())
            .sum::<usize>()
            + self
                .agent_ix
                .values()
                .map(|&ix| self.ag(ix).sticky.len())
                .sum::<usize>();
        ensure!(
            queued == waiting,
            "queues hold {queued} conversations, {waiting} are waiting"
        );
        let graces = self
            .agent_ix
            .values()
            .filter(|&&ix| self.ag(ix).grace_until.is_some())
            .count();
        ensure!(
            self.timers.len() == timers + graces,
            "{} timers set, {} expected",
            self.timers.len(),
            timers + graces
        );
        Ok(())
    }
}
