//! The engine's internal state: agents, teams with their compiled steps and
//! queues, open conversations, and timers.
//!
//! Invariants (checked by `Engine::check_invariants`):
//! - A conversation is in exactly one place: one agent's `active` set, one
//!   step queue, or one agent's `sticky` queue, matching its `ConvState`.
//! - Queues are `BTreeMap<arrival seq, conv>`: iteration is arrival order,
//!   never hash order.
//! - `StepState::matching` lists the agent slots that match the step's
//!   target, sorted by agent id; every tie-break walks it in that order, so
//!   slot numbers (which differ after a restore) never decide anything.
//! - `Conv::timers` is exactly what `Engine::deadlines` computes from the
//!   conversation and its team's policy, and every entry is in the engine's
//!   timer set.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::expr::SkillExpr;
use super::model::{AgentId, AgentStatus, ConvId, Policy, TeamId};
use super::stats::AgentStats;

#[derive(Debug, Clone)]
pub(super) struct Agent {
    pub id: AgentId,
    pub name: String,
    pub skills: BTreeSet<String>,
    pub max: u32,
    pub status: AgentStatus,
    /// Set while offline with conversations: when they move.
    pub grace_until: Option<i64>,
    pub teams: BTreeSet<TeamId>,
    pub active: BTreeSet<ConvId>,
    pub last_assigned: Option<i64>,
    /// Conversations waiting for this agent (sticky), by arrival.
    pub sticky: BTreeMap<u64, ConvId>,
    /// The (team, step) queues this agent matches: where freed capacity of
    /// this agent can go.
    pub steps: Vec<(TeamId, u32)>,
    pub stats: AgentStats,
}

impl Agent {
    pub fn new(id: AgentId) -> Self {
        Agent {
            id,
            name: String::new(),
            skills: BTreeSet::new(),
            max: 0,
            status: AgentStatus::Offline,
            grace_until: None,
            teams: BTreeSet::new(),
            active: BTreeSet::new(),
            last_assigned: None,
            sticky: BTreeMap::new(),
            steps: Vec::new(),
            stats: AgentStats::default(),
        }
    }

    pub fn online(&self) -> bool {
        self.status == AgentStatus::Online
    }

    pub fn has_capacity(&self) -> bool {
        (self.active.len() as u64) < u64::from(self.max)
    }

    /// Routing may give it a conversation now.
    pub fn available(&self) -> bool {
        self.online() && self.has_capacity()
    }

    pub fn load(&self) -> u32 {
        self.active.len() as u32
    }
}

#[derive(Debug, Clone)]
pub(super) enum CompiledTarget {
    Team(TeamId),
    Skills(SkillExpr),
}

impl CompiledTarget {
    pub fn matches(&self, agent: &Agent) -> bool {
        match self {
            CompiledTarget::Team(t) => agent.teams.contains(t),
            CompiledTarget::Skills(e) => e.matches(&agent.skills),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct StepState {
    pub target: CompiledTarget,
    /// Agent slots matching `target`, sorted by agent id.
    pub matching: Vec<u32>,
    pub queue: BTreeMap<u64, ConvId>,
    /// The agent this step chose last (round robin continues after it).
    pub rr_cursor: Option<AgentId>,
    /// Times of this step's last assignments (wait estimate).
    pub recent: VecDeque<i64>,
}

impl StepState {
    pub fn new(target: CompiledTarget) -> Self {
        StepState {
            target,
            matching: Vec::new(),
            queue: BTreeMap::new(),
            rr_cursor: None,
            recent: VecDeque::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Team {
    pub id: TeamId,
    pub name: String,
    pub members: BTreeSet<AgentId>,
    /// Validated and normalised (at least one step; canonical expressions).
    pub policy: Policy,
    /// One per policy step.
    pub steps: Vec<StepState>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ConvState {
    /// Only inside a command, between leaving one place and entering another.
    Routing,
    Assigned {
        agent: AgentId,
        since: i64,
        awaiting_reply: bool,
    },
    Queued {
        step: u32,
        since: i64,
    },
    Sticky {
        agent: AgentId,
        since: i64,
    },
}

#[derive(Debug, Clone)]
pub(super) struct Conv {
    pub id: ConvId,
    pub number_id: String,
    pub customer_id: String,
    /// The team whose policy governs it.
    pub team: TeamId,
    /// Arrival order: taken when opened or reopened, kept through step
    /// moves, overflow, transfers and returns to routing.
    pub seq: u64,
    pub opened_at: i64,
    /// When it entered routing under `team` (the overflow clock).
    pub team_since: i64,
    /// When it last became unassigned (what queue waits report).
    pub waiting_since: i64,
    pub state: ConvState,
    /// An agent routing should prefer not to give it to.
    pub avoid: Option<AgentId>,
    pub timers: Vec<(i64, Timer)>,
}

/// A deadline `tick` acts on. The derived order breaks ties between equal
/// deadlines deterministically.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    Grace(AgentId),
    StepTimeout(ConvId),
    Overflow(ConvId),
    StickyWait(ConvId),
    FirstReply(ConvId),
}
