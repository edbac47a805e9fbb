//! The routing vocabulary callers speak: agent and team specs, policies,
//! conversation specs, actors, targets, and [`Command`], the journalable form
//! of every engine call.
//!
//! Invariants:
//! - These are plain data: the engine validates them when a command is
//!   applied, never at construction, so a journaled command replays to the
//!   same result (including the same error).
//! - Commands are journaled and specs are part of snapshots, so they derive
//!   rkyv; a layout change is a new [`COMMAND_VERSION`] with a decoder for the
//!   old one. They derive serde for the JSON API.
//! - Times are milliseconds on the caller's clock; the engine never reads one.

use crate::codec::{self, CodecError};

/// An agent's id (the API's, e.g. a user name or uuid).
pub type AgentId = String;
/// A team's id.
pub type TeamId = String;
/// A conversation's id (the pipeline's: the LSN that opened it).
pub type ConvId = u64;

/// `max_concurrent` of an agent whose spec does not say.
pub const DEFAULT_MAX_CONCURRENT: u32 = 6;
/// How long an agent may be offline before its conversations move.
pub const DEFAULT_GRACE_MS: i64 = 60_000;
/// Version of the rkyv layout of [`Command`] (the daemon's journal record).
pub const COMMAND_VERSION: u16 = 1;

/// Engine-wide settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EngineConfig {
    /// Grace period after an agent goes offline before its conversations
    /// return to routing. 0 moves them at once.
    pub grace_ms: i64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            grace_ms: DEFAULT_GRACE_MS,
        }
    }
}

/// Presence of an agent.
#[derive(
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
)]
#[serde(rename_all = "snake_case")]
#[rkyv(derive(Debug))]
pub enum AgentStatus {
    /// Takes new conversations up to `max_concurrent`.
    Online,
    /// Keeps its conversations, gets no new ones from routing.
    Away,
    /// Gets nothing; after the grace period its conversations move.
    Offline,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Online => "online",
            AgentStatus::Away => "away",
            AgentStatus::Offline => "offline",
        }
    }
}

impl std::fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_max() -> u32 {
    DEFAULT_MAX_CONCURRENT
}

/// An agent as configured. Upserting replaces all of it (status, load and
/// statistics are kept); `teams` replaces the agent's memberships.
#[derive(
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
    Debug,
    Clone,
    PartialEq,
    Eq,
)]
pub struct AgentSpec {
    pub id: AgentId,
    #[serde(default)]
    pub name: String,
    /// Teams the agent belongs to (each must exist).
    #[serde(default)]
    pub teams: Vec<TeamId>,
    /// Free strings matched by skill expressions, e.g. `lang:ko`, `billing`.
    #[serde(default)]
    pub skills: Vec<String>,
    #[serde(default = "default_max")]
    pub max_concurrent: u32,
}

impl AgentSpec {
    /// An agent in no team, without skills, with the default capacity.
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        AgentSpec {
            id: id.into(),
            name: name.into(),
            teams: Vec::new(),
            skills: Vec::new(),
            max_concurrent: DEFAULT_MAX_CONCURRENT,
        }
    }

    pub fn teams<I: IntoIterator<Item = S>, S: Into<String>>(mut self, teams: I) -> Self {
        self.teams = teams.into_iter().map(Into::into).collect();
        self
    }

    pub fn skills<I: IntoIterator<Item = S>, S: Into<String>>(mut self, skills: I) -> Self {
        self.skills = skills.into_iter().map(Into::into).collect();
        self
    }

    pub fn max_concurrent(mut self, n: u32) -> Self {
        self.max_concurrent = n;
        self
    }
}

/// How a step chooses among its eligible agents.
#[derive(
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
)]
#[serde(rename_all = "snake_case")]
#[rkyv(derive(Debug))]
pub enum Strategy {
    /// The next eligible agent after the one this step chose last, in agent
    /// id order, wrapping.
    RoundRobin,
    /// Fewest active conversations; ties to the longest since their last
    /// assignment (never assigned first), then agent id.
    LeastLoaded,
    /// Longest since their last assignment (never assigned first), then id.
    LongestIdle,
    /// Nobody is chosen: the conversation waits until an eligible agent
    /// claims it (or the step times out).
    Manual,
}

/// Who a step offers conversations to.
#[derive(
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
    Debug,
    Clone,
    PartialEq,
    Eq,
)]
#[serde(rename_all = "snake_case")]
pub enum StepTarget {
    /// Members of a team (this team or another).
    Team(TeamId),
    /// Agents of any team whose skills match the expression, e.g.
    /// `lang:ko AND (billing OR NOT sales)`; see [`super::SkillExpr`].
    Skills(String),
}

/// One step of a routing policy.
#[derive(
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
    Debug,
    Clone,
    PartialEq,
    Eq,
)]
pub struct Step {
    pub target: StepTarget,
    pub strategy: Strategy,
    /// A conversation still waiting in this step after this long moves to
    /// the next step. None (and on the last step, always): it stays.
    #[serde(default)]
    pub timeout_ms: Option<i64>,
    /// With no online agent matching the target at all (capacity aside),
    /// conversations go to the next step at once.
    #[serde(default)]
    pub skip_if_empty: bool,
}

impl Step {
    pub fn new(target: StepTarget, strategy: Strategy) -> Self {
        Step {
            target,
            strategy,
            timeout_ms: None,
            skip_if_empty: false,
        }
    }

    pub fn team(team: impl Into<String>, strategy: Strategy) -> Self {
        Step::new(StepTarget::Team(team.into()), strategy)
    }

    pub fn skills(expr: impl Into<String>, strategy: Strategy) -> Self {
        Step::new(StepTarget::Skills(expr.into()), strategy)
    }

    pub fn timeout_ms(mut self, ms: i64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    pub fn skip_if_empty(mut self) -> Self {
        self.skip_if_empty = true;
        self
    }
}

fn yes() -> bool {
    true
}

/// A team's routing policy.
#[derive(
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
    Debug,
    Clone,
    PartialEq,
    Eq,
)]
pub struct Policy {
    /// Tried in order. Empty means one step: this team, least loaded.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// A returning customer goes first to their previous agent.
    #[serde(default = "yes")]
    pub sticky: bool,
    /// If that agent is online but full, wait this long for them.
    #[serde(default)]
    pub sticky_wait_ms: i64,
    /// After waiting this long in this team (and with `overflow_team`), the
    /// conversation moves to the overflow team's policy.
    #[serde(default)]
    pub max_wait_ms: Option<i64>,
    #[serde(default)]
    pub overflow_team: Option<TeamId>,
    /// An assigned conversation with no agent reply within this long returns
    /// to routing, preferring other agents.
    #[serde(default)]
    pub first_reply_timeout_ms: Option<i64>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            steps: Vec::new(),
            sticky: true,
            sticky_wait_ms: 0,
            max_wait_ms: None,
            overflow_team: None,
            first_reply_timeout_ms: None,
        }
    }
}

/// A team as configured. Upserting replaces it; `members` replaces the
/// team's memberships (the same relation as [`AgentSpec::teams`]).
#[derive(
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
    Debug,
    Clone,
    PartialEq,
    Eq,
)]
pub struct TeamSpec {
    pub id: TeamId,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub members: Vec<AgentId>,
    #[serde(default)]
    pub policy: Policy,
}

impl TeamSpec {
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        TeamSpec {
            id: id.into(),
            name: name.into(),
            members: Vec::new(),
            policy: Policy::default(),
        }
    }

    pub fn members<I: IntoIterator<Item = S>, S: Into<String>>(mut self, members: I) -> Self {
        self.members = members.into_iter().map(Into::into).collect();
        self
    }

    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }
}

/// A conversation the pipeline opened (or reopens).
#[derive(
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
    Debug,
    Clone,
    PartialEq,
    Eq,
)]
pub struct ConvSpec {
    pub id: ConvId,
    /// Our WhatsApp number (phone_number_id); picks the team.
    pub number_id: String,
    pub customer_id: String,
    /// The agent who served this customer last (sticky routing).
    #[serde(default)]
    pub previous_agent: Option<AgentId>,
}

/// Who made a change.
#[derive(
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
    Debug,
    Clone,
    PartialEq,
    Eq,
    Hash,
)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// The engine (policy decisions, timeouts).
    System,
    Agent(AgentId),
    Admin,
    Api,
}

/// Where a manual assignment or transfer sends a conversation.
#[derive(
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
    Debug,
    Clone,
    PartialEq,
    Eq,
)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Agent(AgentId),
    /// Routed by that team's policy from its first step.
    Team(TeamId),
}

/// One engine call, as the daemon journals it. [`super::Engine::apply`]
/// replays it; every variant carries the time it was made.
#[derive(
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
    Debug,
    Clone,
    PartialEq,
    Eq,
)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    UpsertAgent {
        spec: AgentSpec,
        now_ms: i64,
    },
    RemoveAgent {
        agent: AgentId,
        now_ms: i64,
    },
    SetAgentStatus {
        agent: AgentId,
        status: AgentStatus,
        now_ms: i64,
    },
    SetMaxConcurrent {
        agent: AgentId,
        max_concurrent: u32,
        now_ms: i64,
    },
    UpsertTeam {
        spec: TeamSpec,
        now_ms: i64,
    },
    RemoveTeam {
        team: TeamId,
        now_ms: i64,
    },
    SetNumberTeam {
        number_id: String,
        team: Option<TeamId>,
        now_ms: i64,
    },
    ConversationOpened {
        spec: ConvSpec,
        now_ms: i64,
    },
    AgentReplied {
        conv: ConvId,
        agent: AgentId,
        now_ms: i64,
    },
    Assign {
        conv: ConvId,
        target: Target,
        actor: Actor,
        now_ms: i64,
    },
    Claim {
        conv: ConvId,
        agent: AgentId,
        now_ms: i64,
    },
    Transfer {
        conv: ConvId,
        target: Target,
        actor: Actor,
        now_ms: i64,
    },
    Resolve {
        conv: ConvId,
        actor: Actor,
        now_ms: i64,
    },
    Reopen {
        spec: ConvSpec,
        actor: Actor,
        now_ms: i64,
    },
    Tick {
        now_ms: i64,
    },
    /// Engine-wide settings from the daemon's configuration; journaled so
    /// replay applies the grace period that was in force at the time.
    Configure {
        grace_ms: i64,
        now_ms: i64,
    },
    /// Set (or with None, revoke) an agent's API token, as its SHA-256 hex.
    SetAgentToken {
        agent: AgentId,
        token_sha256: Option<String>,
        now_ms: i64,
    },
}

impl Command {
    /// The time the command was made.
    pub fn now_ms(&self) -> i64 {
        match self {
            Command::UpsertAgent { now_ms, .. }
            | Command::RemoveAgent { now_ms, .. }
            | Command::SetAgentStatus { now_ms, .. }
            | Command::SetMaxConcurrent { now_ms, .. }
            | Command::UpsertTeam { now_ms, .. }
            | Command::RemoveTeam { now_ms, .. }
            | Command::SetNumberTeam { now_ms, .. }
            | Command::ConversationOpened { now_ms, .. }
            | Command::AgentReplied { now_ms, .. }
            | Command::Assign { now_ms, .. }
            | Command::Claim { now_ms, .. }
            | Command::Transfer { now_ms, .. }
            | Command::Resolve { now_ms, .. }
            | Command::Reopen { now_ms, .. }
            | Command::Configure { now_ms, .. }
            | Command::SetAgentToken { now_ms, .. }
            | Command::Tick { now_ms } => *now_ms,
        }
    }

    /// Bounded name, for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::UpsertAgent { .. } => "upsert_agent",
            Command::RemoveAgent { .. } => "remove_agent",
            Command::SetAgentStatus { .. } => "set_agent_status",
            Command::SetMaxConcurrent { .. } => "set_max_concurrent",
            Command::UpsertTeam { .. } => "upsert_team",
            Command::RemoveTeam { .. } => "remove_team",
            Command::SetNumberTeam { .. } => "set_number_team",
            Command::ConversationOpened { .. } => "conversation_opened",
            Command::AgentReplied { .. } => "agent_replied",
            Command::Assign { .. } => "assign",
            Command::Claim { .. } => "claim",
            Command::Transfer { .. } => "transfer",
            Command::Resolve { .. } => "resolve",
            Command::Reopen { .. } => "reopen",
            Command::Tick { .. } => "tick",
            Command::Configure { .. } => "configure",
            Command::SetAgentToken { .. } => "set_agent_token",
        }
    }

    /// rkyv bytes for the journal ([`COMMAND_VERSION`]).
    pub fn encode(&self) -> Result<rkyv::util::AlignedVec, CodecError> {
        codec::to_aligned(self)
    }

    /// Validate and decode journal bytes of `version`.
    pub fn decode(version: u16, bytes: &[u8]) -> Result<Command, CodecError> {
        match version {
            COMMAND_VERSION => codec::from_unaligned(bytes),
            v => Err(CodecError::UnknownVersion {
                kind: 0,
                version: v,
            }),
        }
    }
}
