//! What a routing command did: [`Effect`]s, in the order they happened.
//!
//! Invariants:
//! - Every change of a conversation's assignee or queue is exactly one effect
//!   carrying who made it ([`Actor`]) and why ([`Reason`]): `Assigned`,
//!   `Unassigned`, `Queued` (entering a queue), `Moved` (a waiting
//!   conversation changing step, team or leaving a sticky wait), `Resolved`.
//! - Effects are derived data: the same commands give the same effects, so
//!   the daemon may publish them (SSE) without journaling them.

use super::model::{Actor, AgentId, AgentStatus, ConvId, TeamId};

/// A queue a conversation can wait in.
#[derive(
    serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QueueRef {
    /// The queue of step `step` (0-based) of `team`'s policy.
    Step { team: TeamId, step: u32 },
    /// Waiting (up to the policy's `sticky_wait_ms`) for the customer's
    /// previous agent, who is online but full.
    Sticky { agent: AgentId },
}

/// Why an assignment changed.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Chosen by the policy step named in the effect.
    Policy,
    /// The customer's previous agent.
    Sticky,
    /// An admin or API call named the agent or team (`assign`).
    Manual,
    /// The agent took it (`claim`).
    Claim,
    /// `transfer`.
    Transfer,
    /// The step's `timeout_ms` passed.
    Timeout,
    /// `skip_if_empty`: no online agent matched the step any more.
    Skipped,
    /// The team's `max_wait_ms` passed; now in its overflow team.
    Overflow,
    /// The sticky wait ended (timed out, or the agent left).
    StickyFallthrough,
    /// The agent stayed offline past the grace period.
    AgentOffline,
    /// No agent reply within the policy's `first_reply_timeout_ms`.
    NoFirstReply,
    /// The agent was removed.
    AgentRemoved,
    /// The team's policy changed and the conversation's step is gone.
    PolicyChanged,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Policy => "policy",
            Reason::Sticky => "sticky",
            Reason::Manual => "manual",
            Reason::Claim => "claim",
            Reason::Transfer => "transfer",
            Reason::Timeout => "timeout",
            Reason::Skipped => "skipped",
            Reason::Overflow => "overflow",
            Reason::StickyFallthrough => "sticky_fallthrough",
            Reason::AgentOffline => "agent_offline",
            Reason::NoFirstReply => "no_first_reply",
            Reason::AgentRemoved => "agent_removed",
            Reason::PolicyChanged => "policy_changed",
        }
    }
}

/// One thing a command did.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Effect {
    /// `conv` now belongs to `agent`. `team` is the team whose policy governs
    /// the conversation; `step` the policy step that chose the agent
    /// (`reason` Policy) or the step queue it was claimed from.
    Assigned {
        conv: ConvId,
        agent: AgentId,
        team: TeamId,
        step: Option<u32>,
        reason: Reason,
        actor: Actor,
    },
    /// `conv` entered `queue` at 1-based `position`.
    Queued {
        conv: ConvId,
        queue: QueueRef,
        position: u32,
    },
    /// A waiting `conv` left `from` for step `step` of `team`; an `Assigned`
    /// or `Queued` follows.
    Moved {
        conv: ConvId,
        from: QueueRef,
        team: TeamId,
        step: u32,
        reason: Reason,
        actor: Actor,
    },
    /// `conv` no longer belongs to `agent`; an `Assigned` or `Queued` (or
    /// nothing, when resolved) follows.
    Unassigned {
        conv: ConvId,
        agent: AgentId,
        reason: Reason,
        actor: Actor,
    },
    /// `conv` is resolved and left the engine; `agent` had it.
    Resolved {
        conv: ConvId,
        agent: Option<AgentId>,
        actor: Actor,
    },
    /// `conv` was opened again; routing effects follow.
    Reopened { conv: ConvId, actor: Actor },
    AgentStatusChanged {
        agent: AgentId,
        from: AgentStatus,
        to: AgentStatus,
    },
    /// The agent's first reply, `ms` after the assignment.
    FirstResponse {
        conv: ConvId,
        agent: AgentId,
        ms: i64,
    },
}

impl Effect {
    /// Every [`Effect::kind`] (keep in step with it: `?types=` of the event
    /// stream accepts only these).
    pub const KINDS: [&'static str; 8] = [
        "assigned",
        "queued",
        "moved",
        "unassigned",
        "resolved",
        "reopened",
        "agent_status_changed",
        "first_response",
    ];

    /// The effect's `type` as serialised.
    pub fn kind(&self) -> &'static str {
        match self {
            Effect::Assigned { .. } => "assigned",
            Effect::Queued { .. } => "queued",
            Effect::Moved { .. } => "moved",
            Effect::Unassigned { .. } => "unassigned",
            Effect::Resolved { .. } => "resolved",
            Effect::Reopened { .. } => "reopened",
            Effect::AgentStatusChanged { .. } => "agent_status_changed",
            Effect::FirstResponse { .. } => "first_response",
        }
    }

    /// The conversation the effect is about, if any.
    pub fn conv(&self) -> Option<ConvId> {
        match self {
            Effect::Assigned { conv, .. }
            | Effect::Queued { conv, .. }
            | Effect::Moved { conv, .. }
            | Effect::Unassigned { conv, .. }
            | Effect::Resolved { conv, .. }
            | Effect::Reopened { conv, .. }
            | Effect::FirstResponse { conv, .. } => Some(*conv),
            Effect::AgentStatusChanged { .. } => None,
        }
    }

    /// The agent the effect concerns (for filtering what an agent may see).
    pub fn agent(&self) -> Option<&str> {
        match self {
            Effect::Assigned { agent, .. }
            | Effect::Unassigned { agent, .. }
            | Effect::AgentStatusChanged { agent, .. }
            | Effect::FirstResponse { agent, .. } => Some(agent),
            Effect::Resolved { agent, .. } => agent.as_deref(),
            Effect::Queued {
                queue: QueueRef::Sticky { agent },
                ..
            } => Some(agent),
            _ => None,
        }
    }
}
