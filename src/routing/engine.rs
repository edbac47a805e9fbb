//! [`Engine`]: the routing state and its commands.
//!
//! Invariants:
//! - Pure and deterministic: no I/O, clock, threads or randomness. Every
//!   command takes the caller's `now_ms`; the engine's clock is the largest
//!   `now_ms` of a successful command, so time never runs backwards inside
//!   it. The same commands from the same state give the same effects and
//!   the same state (all maps are ordered; ties are broken by agent id or
//!   arrival order).
//! - A command either succeeds, or returns an error having changed nothing:
//!   each validates everything before its first mutation.
//! - Memory is O(agents + open conversations): a resolved conversation
//!   leaves the engine; statistics are bounded rings.

use std::collections::{BTreeMap, BTreeSet};

use super::decide::{queue_ref, Fx};
use super::effect::{Effect, Reason};
use super::error::{PolicyError, RoutingError};
use super::expr::SkillExpr;
use super::model::{
    Actor, AgentId, AgentSpec, AgentStatus, Command, ConvId, ConvSpec, EngineConfig, Policy, Step,
    StepTarget, Strategy, Target, TeamId, TeamSpec,
};
use super::state::{Agent, CompiledTarget, Conv, ConvState, StepState, Team, Timer};

/// Most steps a policy may have.
pub const MAX_STEPS: usize = 32;
/// Longest accepted agent, team or number id, in bytes.
pub const MAX_ID_LEN: usize = 256;

/// The result of every command.
pub type CommandResult = Result<Vec<Effect>, RoutingError>;

/// The routing engine. See the module documentation of [`super`].
#[derive(Debug, Clone)]
pub struct Engine {
    pub(super) grace_ms: i64,
    pub(super) now: i64,
    pub(super) next_seq: u64,
    /// Slots; `agent_ix` maps ids to them. Freed slots are reused.
    pub(super) agents: Vec<Option<Agent>>,
    pub(super) agent_ix: BTreeMap<AgentId, u32>,
    pub(super) free: Vec<u32>,
    pub(super) teams: BTreeMap<TeamId, Team>,
    pub(super) numbers: BTreeMap<String, TeamId>,
    pub(super) convs: BTreeMap<ConvId, Conv>,
    pub(super) timers: BTreeSet<(i64, Timer)>,
    /// Agent API tokens: SHA-256 hex -> agent.
    pub(super) tokens: BTreeMap<String, AgentId>,
}

fn check_id(what: &str, id: &str) -> Result<(), RoutingError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(RoutingError::InvalidId(format!(
            "{what} id must be 1 to {MAX_ID_LEN} bytes"
        )));
    }
    Ok(())
}

/// Validate a policy and normalise it: an empty step list becomes "this
/// team, least loaded"; expressions are stored in canonical form.
pub(super) fn compile_policy(
    team_id: &str,
    policy: &Policy,
    team_exists: impl Fn(&str) -> bool,
) -> Result<(Policy, Vec<CompiledTarget>), PolicyError> {
    if policy.steps.len() > MAX_STEPS {
        return Err(PolicyError::TooManySteps {
            count: policy.steps.len(),
            max: MAX_STEPS,
        });
    }
    let mut norm = policy.clone();
    if norm.steps.is_empty() {
        norm.steps.push(Step::team(team_id, Strategy::LeastLoaded));
    }
    let mut targets = Vec::with_capacity(norm.steps.len());
    for (i, step) in norm.steps.iter_mut().enumerate() {
        let i = i as u32;
        if let Some(t) = step.timeout_ms {
            if t <= 0 {
                return Err(PolicyError::NotPositive {
                    field: format!("steps[{i}].timeout_ms"),
                    value: t,
                });
            }
        }
        match &mut step.target {
            StepTarget::Team(t) => {
                if t != team_id && !team_exists(t) {
                    return Err(PolicyError::UnknownTeam {
                        step: i,
                        team: t.clone(),
                    });
                }
                targets.push(CompiledTarget::Team(t.clone()));
            }
            StepTarget::Skills(src) => {
                let e =
                    SkillExpr::parse(src).map_err(|error| PolicyError::Expr { step: i, error })?;
                *src = e.to_string();
                targets.push(CompiledTarget::Skills(e));
            }
        }
    }
    if norm.sticky_wait_ms < 0 {
        return Err(PolicyError::NegativeStickyWait(norm.sticky_wait_ms));
    }
    for (field, v) in [
        ("max_wait_ms", norm.max_wait_ms),
        ("first_reply_timeout_ms", norm.first_reply_timeout_ms),
    ] {
        if let Some(v) = v {
            if v <= 0 {
                return Err(PolicyError::NotPositive {
                    field: field.into(),
                    value: v,
                });
            }
        }
    }
    match (norm.max_wait_ms, &norm.overflow_team) {
        (Some(_), Some(t)) => {
            if t == team_id {
                return Err(PolicyError::OverflowToSelf);
            }
            if !team_exists(t) {
                return Err(PolicyError::UnknownOverflowTeam(t.clone()));
            }
        }
        (None, None) => {}
        _ => return Err(PolicyError::IncompleteOverflow),
    }
    Ok((norm, targets))
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new(EngineConfig::default())
    }
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Self {
        Engine {
            grace_ms: cfg.grace_ms.max(0),
            now: i64::MIN,
            next_seq: 0,
            agents: Vec::new(),
            agent_ix: BTreeMap::new(),
            free: Vec::new(),
            teams: BTreeMap::new(),
            numbers: BTreeMap::new(),
            convs: BTreeMap::new(),
            timers: BTreeSet::new(),
            tokens: BTreeMap::new(),
        }
    }

    /// The engine's configuration.
    pub fn config(&self) -> EngineConfig {
        EngineConfig {
            grace_ms: self.grace_ms,
        }
    }

    /// The latest time a successful command carried.
    pub fn now_ms(&self) -> i64 {
        self.now
    }

    /// Run a command: the clock only advances if it succeeds.
    fn run(
        &mut self,
        now_ms: i64,
        f: impl FnOnce(&mut Engine, i64, &mut Fx) -> Result<(), RoutingError>,
    ) -> CommandResult {
        let now = now_ms.max(self.now);
        let mut fx = Vec::new();
        f(self, now, &mut fx)?;
        self.now = now;
        Ok(fx)
    }

    fn lookup(&self, agent: &str) -> Result<u32, RoutingError> {
        self.agent_ix
            .get(agent)
            .copied()
            .ok_or_else(|| RoutingError::UnknownAgent(agent.to_string()))
    }

    fn get_conv(&self, conv: ConvId) -> Result<&Conv, RoutingError> {
        self.convs
            .get(&conv)
            .ok_or(RoutingError::UnknownConversation(conv))
    }

    fn alloc_agent(&mut self, agent: Agent) -> u32 {
        let id = agent.id.clone();
        let ix = match self.free.pop() {
            Some(ix) => {
                self.agents[ix as usize] = Some(agent);
                ix
            }
            None => {
                self.agents.push(Some(agent));
                (self.agents.len() - 1) as u32
            }
        };
        self.agent_ix.insert(id, ix);
        ix
    }

    /// Can an agent be given a conversation by hand (assign, transfer)?
    /// Away agents can: only routing skips them.
    fn check_can_take(&self, ix: u32) -> Result<(), RoutingError> {
        let a = self.ag(ix);
        if a.status == AgentStatus::Offline {
            return Err(RoutingError::AgentUnavailable {
                agent: a.id.clone(),
                status: a.status,
            });
        }
        if !a.has_capacity() {
            return Err(RoutingError::AtCapacity {
                agent: a.id.clone(),
                active: a.load(),
                max: a.max,
            });
        }
        Ok(())
    }

    /// Apply a journaled command.
    pub fn apply(&mut self, cmd: Command) -> CommandResult {
        match cmd {
            Command::UpsertAgent { spec, now_ms } => self.upsert_agent(spec, now_ms),
            Command::RemoveAgent { agent, now_ms } => self.remove_agent(&agent, now_ms),
            Command::SetAgentStatus {
                agent,
                status,
                now_ms,
            } => self.set_agent_status(&agent, status, now_ms),
            Command::SetMaxConcurrent {
                agent,
                max_concurrent,
                now_ms,
            } => self.set_max_concurrent(&agent, max_concurrent, now_ms),
            Command::UpsertTeam { spec, now_ms } => self.upsert_team(spec, now_ms),
            Command::RemoveTeam { team, now_ms } => self.remove_team(&team, now_ms),
            Command::SetNumberTeam {
                number_id,
                team,
                now_ms,
            } => self.set_number_team(&number_id, team.as_deref(), now_ms),
            Command::ConversationOpened { spec, now_ms } => self.conversation_opened(spec, now_ms),
            Command::AgentReplied {
                conv,
                agent,
                now_ms,
            } => self.agent_replied(conv, &agent, now_ms),
            Command::Assign {
                conv,
                target,
                actor,
                now_ms,
            } => self.assign(conv, target, actor, now_ms),
            Command::Claim {
                conv,
                agent,
                now_ms,
            } => self.claim(conv, &agent, now_ms),
            Command::Transfer {
                conv,
                target,
                actor,
                now_ms,
            } => self.transfer(conv, target, actor, now_ms),
            Command::Resolve {
                conv,
                actor,
                now_ms,
            } => self.resolve(conv, actor, now_ms),
            Command::Reopen {
                spec,
                actor,
                now_ms,
            } => self.reopen(spec, actor, now_ms),
            Command::Tick { now_ms } => self.tick(now_ms),
            Command::Configure { grace_ms, now_ms } => self.run(now_ms, |e, _, _| {
                e.grace_ms = grace_ms.max(0);
                Ok(())
            }),
            Command::SetAgentToken {
                agent,
                token_sha256,
                now_ms,
            } => self.set_agent_token(&agent, token_sha256, now_ms),
        }
    }

    /// Set or revoke an agent's API token (its SHA-256, hex).
    pub fn set_agent_token(
        &mut self,
        agent: &str,
        token_sha256: Option<String>,
        now_ms: i64,
    ) -> CommandResult {
        self.run(now_ms, |e, _, _| {
            e.lookup(agent)?;
            if let Some(h) = &token_sha256 {
                if e.tokens.get(h).is_some_and(|a| a != agent) {
                    return Err(RoutingError::InvalidId("token already in use".into()));
                }
            }
            e.tokens.retain(|_, a| a != agent);
            if let Some(h) = token_sha256 {
                e.tokens.insert(h, agent.to_string());
            }
            Ok(())
        })
    }

    /// The agent whose token hashes to `sha256_hex`.
    pub fn agent_by_token(&self, sha256_hex: &str) -> Option<&str> {
        self.tokens.get(sha256_hex).map(String::as_str)
    }

    /// Create or replace an agent. A new agent starts offline. Its `teams`
    /// replace its memberships; lowering `max_concurrent` below its current
    /// load is refused.
    pub fn upsert_agent(&mut self, spec: AgentSpec, now_ms: i64) -> CommandResult {
        self.run(now_ms, move |e, now, fx| {
            check_id("agent", &spec.id)?;
            if let Some(t) = spec.teams.iter().find(|t| !e.teams.contains_key(*t)) {
                return Err(RoutingError::UnknownTeam(t.clone()));
            }
            let existing = e.agent_ix.get(&spec.id).copied();
            if let Some(ix) = existing {
                let a = e.ag(ix);
                if spec.max_concurrent < a.load() {
                    return Err(RoutingError::BelowActive {
                        agent: spec.id,
                        active: a.load(),
                        requested: spec.max_concurrent,
                    });
                }
            }
            let ix = match existing {
                Some(ix) => ix,
                None => e.alloc_agent(Agent::new(spec.id.clone())),
            };
            let new_teams: BTreeSet<TeamId> = spec.teams.into_iter().collect();
            let old_teams = std::mem::take(&mut e.ag_mut(ix).teams);
            for t in old_teams.difference(&new_teams) {
                if let Some(team) = e.teams.get_mut(t) {
                    team.members.remove(&spec.id);
                }
            }
            for t in &new_teams {
                if let Some(team) = e.teams.get_mut(t) {
                    team.members.insert(spec.id.clone());
                }
            }
            let a = e.ag_mut(ix);
            a.name = spec.name;
            a.skills = spec.skills.into_iter().collect();
            a.max = spec.max_concurrent;
            a.teams = new_teams;
            e.refresh_agent_matches(ix);
            if existing.is_some() {
                e.rebalance(now, fx);
            }
            Ok(())
        })
    }

    /// Remove an agent: its conversations return to routing (reason
    /// `agent_removed`), and so do conversations waiting for it.
    pub fn remove_agent(&mut self, agent: &str, now_ms: i64) -> CommandResult {
        self.run(now_ms, |e, now, fx| {
            let ix = e.lookup(agent)?;
            let mut held: Vec<(u64, ConvId)> = {
                let a = e.ag(ix);
                a.active
                    .iter()
                    .chain(a.sticky.values())
                    .filter_map(|c| e.convs.get(c).map(|cv| (cv.seq, *c)))
                    .collect()
            };
            held.sort_unstable();
            // Detach first, while the agent still exists; route after it is
            // gone so routing cannot choose it.
            let mut detached = Vec::with_capacity(held.len());
            for (_, cid) in held {
                detached.push((cid, e.detach(cid)));
            }
            if let Some(t) = e.ag_mut(ix).grace_until.take() {
                e.timers.remove(&(t, Timer::Grace(agent.to_string())));
            }
            let gone = e.agents[ix as usize].take();
            e.agent_ix.remove(agent);
            e.tokens.retain(|_, a| a != agent);
            e.free.push(ix);
            if let Some(gone) = gone {
                for t in &gone.teams {
                    if let Some(team) = e.teams.get_mut(t) {
                        team.members.remove(agent);
                    }
                }
            }
            for team in e.teams.values_mut() {
                for st in &mut team.steps {
                    st.matching.retain(|&m| m != ix);
                }
            }
            for (cid, old) in detached {
                match &old {
                    ConvState::Assigned { .. } => {
                        fx.push(Effect::Unassigned {
                            conv: cid,
                            agent: agent.to_string(),
                            reason: Reason::AgentRemoved,
                            actor: Actor::System,
                        });
                        e.restart_wait(cid, now);
                    }
                    _ => {
                        if let Some(c) = e.convs.get(&cid) {
                            if let Some(from) = queue_ref(&c.team, &old) {
                                fx.push(Effect::Moved {
                                    conv: cid,
                                    from,
                                    team: c.team.clone(),
                                    step: 0,
                                    reason: Reason::AgentRemoved,
                                    actor: Actor::System,
                                });
                            }
                        }
                    }
                }
                e.route(cid, 0, now, fx);
            }
            e.rebalance(now, fx);
            Ok(())
        })
    }

    /// Change an agent's presence. Online: takes new conversations at once.
    /// Away: keeps its conversations, gets no new ones. Offline: gets none;
    /// if it has conversations and comes back (online or away) within the
    /// grace period nothing moves, otherwise they return to routing on the
    /// `tick` at the end of the grace period (reason `agent_offline`).
    /// Setting the current status again changes nothing (a repeated
    /// offline does not extend the grace period).
    pub fn set_agent_status(
        &mut self,
        agent: &str,
        status: AgentStatus,
        now_ms: i64,
    ) -> CommandResult {
        self.run(now_ms, |e, now, fx| {
            let ix = e.lookup(agent)?;
            let from = e.ag(ix).status;
            if from == status {
                return Ok(());
            }
            if let Some(t) = e.ag_mut(ix).grace_until.take() {
                e.timers.remove(&(t, Timer::Grace(agent.to_string())));
            }
            e.ag_mut(ix).status = status;
            fx.push(Effect::AgentStatusChanged {
                agent: agent.to_string(),
                from,
                to: status,
            });
            if status == AgentStatus::Offline && !e.ag(ix).active.is_empty() {
                if e.grace_ms > 0 {
                    let t = now.saturating_add(e.grace_ms);
                    e.ag_mut(ix).grace_until = Some(t);
                    e.timers.insert((t, Timer::Grace(agent.to_string())));
                } else {
                    e.release_agent(ix, Reason::AgentOffline, Actor::System, now, fx);
                }
            }
            e.rebalance(now, fx);
            Ok(())
        })
    }

    /// Change an agent's capacity. Raising it hands out waiting
    /// conversations at once; lowering it below the current load is refused.
    pub fn set_max_concurrent(&mut self, agent: &str, max: u32, now_ms: i64) -> CommandResult {
        self.run(now_ms, |e, now, fx| {
            let ix = e.lookup(agent)?;
            let a = e.ag(ix);
            if max < a.load() {
                return Err(RoutingError::BelowActive {
                    agent: agent.to_string(),
                    active: a.load(),
                    requested: max,
                });
            }
            let raised = max > a.max;
            e.ag_mut(ix).max = max;
            if raised {
                e.drain(Some(ix), now, fx);
            }
            Ok(())
        })
    }

    /// Create or replace a team and its policy; `members` replace its
    /// memberships. Conversations waiting in a step that no longer exists
    /// move to the last step (reason `policy_changed`); timers follow the
    /// new policy.
    pub fn upsert_team(&mut self, spec: TeamSpec, now_ms: i64) -> CommandResult {
        self.run(now_ms, move |e, now, fx| {
            check_id("team", &spec.id)?;
            if let Some(m) = spec.members.iter().find(|m| !e.agent_ix.contains_key(*m)) {
                return Err(RoutingError::UnknownAgent(m.clone()));
            }
            let (policy, targets) =
                compile_policy(&spec.id, &spec.policy, |t| e.teams.contains_key(t)).map_err(
                    |error| RoutingError::InvalidPolicy {
                        team: spec.id.clone(),
                        error,
                    },
                )?;
            let id = spec.id;
            let affected: Vec<ConvId> = e
                .convs
                .values()
                .filter(|c| c.team == id)
                .map(|c| c.id)
                .collect();
            for &c in &affected {
                e.unschedule(c);
            }
            let n = targets.len();
            let mut steps: Vec<StepState> = targets.into_iter().map(StepState::new).collect();
            let mut displaced: Vec<(u64, ConvId, u32)> = Vec::new();
            let new_members: BTreeSet<AgentId> = spec.members.into_iter().collect();
            let old_members = match e.teams.remove(&id) {
                Some(old) => {
                    for (s, old_step) in old.steps.into_iter().enumerate() {
                        if s < n {
                            let st = &mut steps[s];
                            st.queue = old_step.queue;
                            st.rr_cursor = old_step.rr_cursor;
                            st.recent = old_step.recent;
                        } else {
                            displaced.extend(
                                old_step
                                    .queue
                                    .into_iter()
                                    .map(|(seq, c)| (seq, c, s as u32)),
                            );
                        }
                    }
                    old.members
                }
                None => BTreeSet::new(),
            };
            for m in old_members.difference(&new_members) {
                if let Some(&ix) = e.agent_ix.get(m) {
                    e.ag_mut(ix).teams.remove(&id);
                }
            }
            for m in &new_members {
                if let Some(&ix) = e.agent_ix.get(m) {
                    e.ag_mut(ix).teams.insert(id.clone());
                }
            }
            e.teams.insert(
                id.clone(),
                Team {
                    id: id.clone(),
                    name: spec.name,
                    members: new_members,
                    policy,
                    steps,
                },
            );
            e.rebuild_matches();
            displaced.sort_unstable();
            let moved: BTreeSet<ConvId> = displaced.iter().map(|d| d.1).collect();
            for &c in affected.iter().filter(|c| !moved.contains(c)) {
                e.schedule(c);
            }
            let last = (n - 1) as u32;
            for (_, cid, old_step) in displaced {
                if let Some(c) = e.convs.get_mut(&cid) {
                    c.state = ConvState::Routing;
                }
                fx.push(Effect::Moved {
                    conv: cid,
                    from: super::effect::QueueRef::Step {
                        team: id.clone(),
                        step: old_step,
                    },
                    team: id.clone(),
                    step: last,
                    reason: Reason::PolicyChanged,
                    actor: Actor::System,
                });
                e.route(cid, last, now, fx);
            }
            e.rebalance(now, fx);
            Ok(())
        })
    }

    /// Remove a team. Refused while a number maps to it, another policy
    /// names it, or an open conversation is routed under it.
    pub fn remove_team(&mut self, team: &str, now_ms: i64) -> CommandResult {
        self.run(now_ms, |e, _now, _fx| {
            if !e.teams.contains_key(team) {
                return Err(RoutingError::UnknownTeam(team.to_string()));
            }
            let in_use = |by: String| RoutingError::TeamInUse {
                team: team.to_string(),
                by,
            };
            if let Some((number, _)) = e.numbers.iter().find(|(_, t)| *t == team) {
                return Err(in_use(format!("number {number}")));
            }
            for other in e.teams.values().filter(|t| t.id != team) {
                if other.policy.overflow_team.as_deref() == Some(team) {
                    return Err(in_use(format!("the overflow of team {}", other.id)));
                }
                for (s, step) in other.policy.steps.iter().enumerate() {
                    if step.target == StepTarget::Team(team.to_string()) {
                        return Err(in_use(format!("step {s} of team {}", other.id)));
                    }
                }
            }
            let open = e.convs.values().filter(|c| c.team == team).count();
            if open > 0 {
                return Err(in_use(format!("{open} open conversations")));
            }
            if let Some(gone) = e.teams.remove(team) {
                for m in &gone.members {
                    if let Some(&ix) = e.agent_ix.get(m) {
                        e.ag_mut(ix).teams.remove(team);
                    }
                }
            }
            e.rebuild_matches();
            Ok(())
        })
    }

    /// Map one of our numbers to the team that routes its new
    /// conversations (None removes the mapping). Open conversations stay
    /// where they are.
    pub fn set_number_team(
        &mut self,
        number_id: &str,
        team: Option<&str>,
        now_ms: i64,
    ) -> CommandResult {
        self.run(now_ms, |e, _now, _fx| {
            check_id("number", number_id)?;
            match team {
                Some(t) => {
                    if !e.teams.contains_key(t) {
                        return Err(RoutingError::UnknownTeam(t.to_string()));
                    }
                    e.numbers.insert(number_id.to_string(), t.to_string());
                }
                None => {
                    e.numbers.remove(number_id);
                }
            }
            Ok(())
        })
    }

    /// A new conversation: sticky to `previous_agent` if the policy allows
    /// and that agent is online (with capacity, or waiting up to
    /// `sticky_wait_ms` for it), otherwise routed from step 0 of the team
    /// its number maps to.
    pub fn conversation_opened(&mut self, spec: ConvSpec, now_ms: i64) -> CommandResult {
        self.run(now_ms, move |e, now, fx| e.open(spec, None, now, fx))
    }

    /// Open a resolved conversation again; routed like a new one (sticky to
    /// `previous_agent`), first response measured from the new assignment.
    pub fn reopen(&mut self, spec: ConvSpec, actor: Actor, now_ms: i64) -> CommandResult {
        self.run(now_ms, move |e, now, fx| e.open(spec, Some(actor), now, fx))
    }

    fn open(
        &mut self,
        spec: ConvSpec,
        reopened_by: Option<Actor>,
        now: i64,
        fx: &mut Fx,
    ) -> Result<(), RoutingError> {
        if self.convs.contains_key(&spec.id) {
            return Err(RoutingError::AlreadyOpen(spec.id));
        }
        let team = self
            .numbers
            .get(&spec.number_id)
            .cloned()
            .ok_or_else(|| RoutingError::NumberNotMapped(spec.number_id.clone()))?;
        if let Some(actor) = reopened_by {
            fx.push(Effect::Reopened {
                conv: spec.id,
                actor,
            });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let id = spec.id;
        self.convs.insert(
            id,
            Conv {
                id,
                number_id: spec.number_id,
                customer_id: spec.customer_id,
                team: team.clone(),
                seq,
                opened_at: now,
                team_since: now,
                waiting_since: now,
                state: ConvState::Routing,
                avoid: None,
                timers: Vec::new(),
            },
        );
        let (sticky, wait) = match self.teams.get(&team) {
            Some(t) => (t.policy.sticky, t.policy.sticky_wait_ms),
            None => (false, 0),
        };
        let prev = spec
            .previous_agent
            .as_ref()
            .and_then(|a| self.agent_ix.get(a).copied())
            .filter(|_| sticky);
        if let Some(ix) = prev {
            let a = self.ag(ix);
            if a.online() {
                if a.has_capacity() {
                    self.place_assigned(id, ix, Reason::Sticky, Actor::System, None, now, fx);
                    return Ok(());
                }
                if wait > 0 {
                    self.place_sticky(id, ix, now, fx);
                    return Ok(());
                }
            }
        }
        self.route(id, 0, now, fx);
        Ok(())
    }

    /// An agent replied (the pipeline does not call this for automated
    /// messages). The assignee's first reply yields `FirstResponse`; later
    /// replies change nothing.
    pub fn agent_replied(&mut self, conv: ConvId, agent: &str, now_ms: i64) -> CommandResult {
        self.run(now_ms, |e, now, fx| {
            let ix = e.lookup(agent)?;
            let c = e.get_conv(conv)?;
            let since = match &c.state {
                ConvState::Assigned {
                    agent: a,
                    since,
                    awaiting_reply,
                } if a == agent => {
                    if !awaiting_reply {
                        return Ok(());
                    }
                    *since
                }
                _ => {
                    return Err(RoutingError::NotAssignee {
                        conv,
                        agent: agent.to_string(),
                    })
                }
            };
            e.unschedule(conv);
            if let Some(c) = e.convs.get_mut(&conv) {
                if let ConvState::Assigned { awaiting_reply, .. } = &mut c.state {
                    *awaiting_reply = false;
                }
            }
            e.schedule(conv);
            let ms = now - since;
            e.ag_mut(ix).stats.record_first_response(ms);
            fx.push(Effect::FirstResponse {
                conv,
                agent: agent.to_string(),
                ms,
            });
            Ok(())
        })
    }

    /// Manual assignment of an open conversation (queued or assigned to
    /// someone else). To an agent: it must not be offline and must have
    /// capacity (away is allowed: only routing skips away agents). To a
    /// team: routed by that team's policy from step 0, preferring someone
    /// other than the agent who had it.
    pub fn assign(
        &mut self,
        conv: ConvId,
        target: Target,
        actor: Actor,
        now_ms: i64,
    ) -> CommandResult {
        self.run(now_ms, move |e, now, fx| {
            let c = e.get_conv(conv)?;
            match target {
                Target::Agent(a) => {
                    let ix = e.lookup(&a)?;
                    if let ConvState::Assigned { agent: cur, .. } = &c.state {
                        if *cur == a {
                            return Err(RoutingError::AlreadyAssigned { conv, agent: a });
                        }
                    }
                    e.check_can_take(ix)?;
                    let old = e.detach(conv);
                    let mut freed = None;
                    if let ConvState::Assigned { agent: cur, .. } = old {
                        freed = e.agent_ix.get(&cur).copied();
                        fx.push(Effect::Unassigned {
                            conv,
                            agent: cur,
                            reason: Reason::Manual,
                            actor: actor.clone(),
                        });
                    }
                    e.place_assigned(conv, ix, Reason::Manual, actor, None, now, fx);
                    if let Some(f) = freed {
                        e.drain(Some(f), now, fx);
                    }
                }
                Target::Team(t) => {
                    if !e.teams.contains_key(&t) {
                        return Err(RoutingError::UnknownTeam(t));
                    }
                    e.send_to_team(conv, t, Reason::Manual, actor, now, fx);
                }
            }
            Ok(())
        })
    }

    /// An agent takes a waiting conversation. It must be online with
    /// capacity and eligible: matching the conversation's current step, a
    /// member of its team, or (for a sticky wait) the awaited agent. Of two
    /// racing claims the first wins; the second gets `AlreadyAssigned`.
    pub fn claim(&mut self, conv: ConvId, agent: &str, now_ms: i64) -> CommandResult {
        self.run(now_ms, |e, now, fx| {
            let ix = e.lookup(agent)?;
            let c = e.get_conv(conv)?;
            if let ConvState::Assigned { agent: cur, .. } = &c.state {
                return Err(RoutingError::AlreadyAssigned {
                    conv,
                    agent: cur.clone(),
                });
            }
            let a = e.ag(ix);
            if !a.online() {
                return Err(RoutingError::AgentUnavailable {
                    agent: agent.to_string(),
                    status: a.status,
                });
            }
            if !a.has_capacity() {
                return Err(RoutingError::AtCapacity {
                    agent: agent.to_string(),
                    active: a.load(),
                    max: a.max,
                });
            }
            let team = e
                .teams
                .get(&c.team)
                .ok_or_else(|| RoutingError::UnknownTeam(c.team.clone()))?;
            let (eligible, step) = match &c.state {
                ConvState::Queued { step, .. } => (
                    e.matching_contains(&team.steps[*step as usize], ix),
                    Some(*step),
                ),
                ConvState::Sticky { agent: x, .. } => {
                    (x == agent || e.matching_contains(&team.steps[0], ix), None)
                }
                _ => (false, None),
            };
            if !(eligible || a.teams.contains(&c.team)) {
                return Err(RoutingError::NotEligible {
                    conv,
                    agent: agent.to_string(),
                });
            }
            e.detach(conv);
            e.place_assigned(
                conv,
                ix,
                Reason::Claim,
                Actor::Agent(agent.to_string()),
                step,
                now,
                fx,
            );
            Ok(())
        })
    }

    /// Move an assigned conversation: to an agent (not offline, with
    /// capacity), or to a team (routed from its step 0, preferring someone
    /// other than the previous agent).
    pub fn transfer(
        &mut self,
        conv: ConvId,
        target: Target,
        actor: Actor,
        now_ms: i64,
    ) -> CommandResult {
        self.run(now_ms, move |e, now, fx| {
            let c = e.get_conv(conv)?;
            let ConvState::Assigned { agent: cur, .. } = &c.state else {
                return Err(RoutingError::NotAssigned(conv));
            };
            let cur = cur.clone();
            match target {
                Target::Agent(b) => {
                    let ix = e.lookup(&b)?;
                    if b == cur {
                        return Err(RoutingError::AlreadyAssigned { conv, agent: b });
                    }
                    e.check_can_take(ix)?;
                    e.detach(conv);
                    fx.push(Effect::Unassigned {
                        conv,
                        agent: cur.clone(),
                        reason: Reason::Transfer,
                        actor: actor.clone(),
                    });
                    e.place_assigned(conv, ix, Reason::Transfer, actor, None, now, fx);
                    if let Some(&f) = e.agent_ix.get(&cur) {
                        e.drain(Some(f), now, fx);
                    }
                }
                Target::Team(t) => {
                    if !e.teams.contains_key(&t) {
                        return Err(RoutingError::UnknownTeam(t));
                    }
                    e.send_to_team(conv, t, Reason::Transfer, actor, now, fx);
                }
            }
            Ok(())
        })
    }

    /// Route a conversation (assigned or waiting) under another team.
    fn send_to_team(
        &mut self,
        conv: ConvId,
        team: TeamId,
        reason: Reason,
        actor: Actor,
        now: i64,
        fx: &mut Fx,
    ) {
        let old = self.detach(conv);
        let Some(c) = self.convs.get_mut(&conv) else {
            return;
        };
        let mut freed = None;
        match old {
            ConvState::Assigned { agent, .. } => {
                freed = self.agent_ix.get(&agent).copied();
                fx.push(Effect::Unassigned {
                    conv,
                    agent: agent.clone(),
                    reason,
                    actor,
                });
                c.avoid = Some(agent);
                c.waiting_since = now;
            }
            ref waiting => {
                if let Some(from) = queue_ref(&c.team, waiting) {
                    fx.push(Effect::Moved {
                        conv,
                        from,
                        team: team.clone(),
                        step: 0,
                        reason,
                        actor,
                    });
                }
            }
        }
        c.team = team;
        c.team_since = now;
        self.route(conv, 0, now, fx);
        if let Some(f) = freed {
            self.drain(Some(f), now, fx);
        }
    }

    /// Resolve an open conversation: it leaves the engine and its agent's
    /// capacity goes to whoever waits.
    pub fn resolve(&mut self, conv: ConvId, actor: Actor, now_ms: i64) -> CommandResult {
        self.run(now_ms, |e, now, fx| {
            e.get_conv(conv)?;
            let old = e.detach(conv);
            e.convs.remove(&conv);
            match old {
                ConvState::Assigned { agent, .. } => {
                    let ix = e.agent_ix.get(&agent).copied();
                    fx.push(Effect::Resolved {
                        conv,
                        agent: Some(agent),
                        actor,
                    });
                    if let Some(ix) = ix {
                        e.ag_mut(ix).stats.record_resolved(now);
                        e.drain(Some(ix), now, fx);
                    }
                }
                _ => fx.push(Effect::Resolved {
                    conv,
                    agent: None,
                    actor,
                }),
            }
            Ok(())
        })
    }

    /// Act on every deadline up to `now_ms` (step timeouts, sticky waits,
    /// overflow, first-reply timeouts, grace expiries), earliest first.
    /// Call it at [`Engine::next_deadline`]; a late tick acts late, and
    /// times measured from the actions start at the tick.
    pub fn tick(&mut self, now_ms: i64) -> CommandResult {
        self.run(now_ms, |e, now, fx| {
            loop {
                match e.timers.first() {
                    Some((t, _)) if *t <= now => {}
                    _ => break,
                }
                if let Some((_, timer)) = e.timers.pop_first() {
                    e.fire(timer, now, fx);
                }
            }
            Ok(())
        })
    }

    /// When `tick` has something to do next.
    pub fn next_deadline(&self) -> Option<i64> {
        self.timers.first().map(|(t, _)| *t)
    }
}
