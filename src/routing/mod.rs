//! Conversation routing: agents, teams, skills, presence, capacity, queues,
//! reassignment and the live view.
//!
//! This module owns the routing *decision*: [`Engine`] is a pure,
//! deterministic state machine (no I/O, clock, threads or randomness) that
//! takes [`Command`]s, each stamped with the caller's `now_ms`, and answers
//! with the [`Effect`]s it caused. The daemon runs exactly one engine behind
//! a single writer ([`service`]), journals every command before it is applied
//! and rebuilds the engine after a restart by replaying them in LSN order;
//! determinism makes that replay reproduce the same assignments.
//!
//! Invariants (audited by [`Engine::check_invariants`] after every command
//! in the tests):
//! - no agent ever holds more than `max_concurrent` conversations;
//! - a conversation is in exactly one place: one agent, one step queue, or
//!   one agent's sticky queue; never assigned twice, never lost;
//! - at rest, no waiting conversation could be assigned (capacity freed is
//!   handed out within the same command), and queues are served by arrival;
//! - a command either succeeds or changes nothing (replay of a refused
//!   command is refused again);
//! - memory is O(agents + open conversations): resolved conversations leave
//!   the engine and statistics are bounded rings.

mod check;
mod decide;
mod effect;
mod engine;
mod error;
mod expr;
mod model;
pub mod service;
mod state;
mod stats;
mod view;

#[cfg(test)]
pub(crate) mod tests;

pub use effect::{Effect, QueueRef, Reason};
pub use engine::{CommandResult, Engine, MAX_ID_LEN, MAX_STEPS};
pub use error::{InvariantViolation, PolicyError, RoutingError, SnapshotError};
pub use expr::{ExprError, SkillExpr, MAX_DEPTH, MAX_EXPR_LEN};
pub use model::{
    Actor, AgentId, AgentSpec, AgentStatus, Command, ConvId, ConvSpec, EngineConfig, Policy, Step,
    StepTarget, Strategy, Target, TeamId, TeamSpec, COMMAND_VERSION, DEFAULT_GRACE_MS,
    DEFAULT_MAX_CONCURRENT,
};
pub use stats::{FIRST_RESPONSE_RING, RECENT_ASSIGNMENTS};
pub use view::{
    AgentLive, AgentView, ConvStatus, ConversationView, LiveView, QueueStat, TeamLive, TeamView,
};
