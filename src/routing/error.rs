//! Typed errors of the routing engine.
//!
//! Invariant: a command that returns an error has changed nothing (not even
//! the engine's clock), so a journaled command that failed replays to the
//! same error and the same state.

use super::expr::ExprError;
use super::model::{AgentId, AgentStatus, ConvId, TeamId};

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    #[error("unknown agent {0:?}")]
    UnknownAgent(AgentId),
    #[error("unknown team {0:?}")]
    UnknownTeam(TeamId),
    #[error("unknown or closed conversation {0}")]
    UnknownConversation(ConvId),
    #[error("number {0:?} is not mapped to a team")]
    NumberNotMapped(String),
    #[error("conversation {0} is already open")]
    AlreadyOpen(ConvId),
    #[error("conversation {0} is not assigned")]
    NotAssigned(ConvId),
    #[error("conversation {conv} is already assigned to {agent:?}")]
    AlreadyAssigned { conv: ConvId, agent: AgentId },
    #[error("agent {agent:?} is at capacity ({active} of {max})")]
    AtCapacity {
        agent: AgentId,
        active: u32,
        max: u32,
    },
    #[error("agent {agent:?} is {status}")]
    AgentUnavailable { agent: AgentId, status: AgentStatus },
    #[error("agent {agent:?} is not eligible for conversation {conv}")]
    NotEligible { conv: ConvId, agent: AgentId },
    #[error("conversation {conv} is not assigned to agent {agent:?}")]
    NotAssignee { conv: ConvId, agent: AgentId },
    #[error(
        "agent {agent:?} has {active} active conversations; max_concurrent {requested} \
         would put it above its limit (transfer some first)"
    )]
    BelowActive {
        agent: AgentId,
        active: u32,
        requested: u32,
    },
    #[error("team {team:?} is still used by {by}")]
    TeamInUse { team: TeamId, by: String },
    #[error("invalid id: {0}")]
    InvalidId(String),
    #[error("policy of team {team:?}: {error}")]
    InvalidPolicy { team: TeamId, error: PolicyError },
    #[error("snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
}

/// What is wrong with a routing policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("step {step}: unknown team {team:?}")]
    UnknownTeam { step: u32, team: TeamId },
    #[error("step {step}: skill expression: {error}")]
    Expr { step: u32, error: ExprError },
    #[error("{field} must be positive (got {value})")]
    NotPositive { field: String, value: i64 },
    #[error("sticky_wait_ms must not be negative (got {0})")]
    NegativeStickyWait(i64),
    #[error("max_wait_ms and overflow_team go together")]
    IncompleteOverflow,
    #[error("overflow team {0:?} does not exist")]
    UnknownOverflowTeam(TeamId),
    #[error("a team cannot overflow into itself")]
    OverflowToSelf,
    #[error("{count} steps; at most {max}")]
    TooManySteps { count: usize, max: usize },
}

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("undecodable: {0}")]
    Codec(String),
    #[error("inconsistent: {0}")]
    Inconsistent(String),
}

/// A broken internal invariant (a bug, or an inconsistent snapshot).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("routing invariant violated: {0}")]
pub struct InvariantViolation(pub String);
