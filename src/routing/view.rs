//! Read-only views of the engine for the API and the live view.
//!
//! Invariants: queries never change the engine; lists come in id order
//! (agents, teams), arrival order (conversations of an agent) or queue order.
//!
//! Estimated wait of a conversation in a step queue:
//! `position × mean interval between the step's last assignments` (up to
//! [`super::RECENT_ASSIGNMENTS`] of them, counting immediate and queued
//! assignments and claims from that step); unknown (None) until the step has
//! made two assignments, and for sticky waits (bounded by `sticky_wait_ms`).

use super::decide::{position_of, queue_ref};
use super::effect::QueueRef;
use super::engine::Engine;
use super::model::{AgentId, AgentStatus, ConvId, Policy, TeamId};
use super::state::{Conv, ConvState};
use super::stats::mean_interval;

#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct AgentView {
    pub id: AgentId,
    pub name: String,
    pub teams: Vec<TeamId>,
    pub skills: Vec<String>,
    pub max_concurrent: u32,
    pub status: AgentStatus,
    /// While offline with conversations: when they return to routing.
    pub grace_until_ms: Option<i64>,
    pub active: u32,
    pub last_assigned_ms: Option<i64>,
}

#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct TeamView {
    pub id: TeamId,
    pub name: String,
    pub members: Vec<AgentId>,
    /// As normalised by the engine (never empty steps; canonical expressions).
    pub policy: Policy,
}

#[derive(serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConvStatus {
    /// Waiting in a step queue or for its sticky agent.
    Queued,
    Assigned,
}

#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ConversationView {
    pub id: ConvId,
    pub number_id: String,
    pub customer_id: String,
    /// The team whose policy governs it.
    pub team: TeamId,
    /// Arrival order (smaller arrived earlier); queues are served by it.
    pub arrival: u64,
    pub status: ConvStatus,
    pub assignee: Option<AgentId>,
    pub assigned_at_ms: Option<i64>,
    pub awaiting_first_reply: bool,
    pub queue: Option<QueueRef>,
    /// 1-based.
    pub position: Option<u32>,
    pub estimated_wait_ms: Option<i64>,
    /// When it last became unassigned (None while assigned).
    pub waiting_since_ms: Option<i64>,
    pub opened_at_ms: i64,
    /// Routing prefers agents other than this one (it had the conversation
    /// and did not reply, or transferred it away).
    pub avoid_agent: Option<AgentId>,
}

#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct QueueStat {
    pub queue: QueueRef,
    pub length: u32,
    /// Longest time any conversation in it has been waiting.
    pub oldest_wait_ms: Option<i64>,
}

#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct AgentLive {
    pub id: AgentId,
    pub name: String,
    pub status: AgentStatus,
    pub in_grace: bool,
    pub active: u32,
    pub max_concurrent: u32,
    /// Mean of the last [`super::FIRST_RESPONSE_RING`] first responses.
    pub avg_first_response_ms: Option<i64>,
    /// Resolved in the current minute and the 59 before.
    pub resolved_last_hour: u32,
    /// Conversations waiting for this agent (sticky).
    pub waiting_for_agent: u32,
}

#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct TeamLive {
    pub id: TeamId,
    pub name: String,
    pub online_members: u32,
    /// Conversations routed under this team and waiting (steps and sticky).
    pub queued: u32,
    pub longest_wait_ms: Option<i64>,
}

#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct LiveView {
    pub agents: Vec<AgentLive>,
    pub teams: Vec<TeamLive>,
}

impl Engine {
    pub fn agents(&self) -> Vec<AgentView> {
        self.agent_ix
            .keys()
            .filter_map(|id| self.agent(id))
            .collect()
    }

    pub fn agent(&self, id: &str) -> Option<AgentView> {
        let a = self.ag(*self.agent_ix.get(id)?);
        Some(AgentView {
            id: a.id.clone(),
            name: a.name.clone(),
            teams: a.teams.iter().cloned().collect(),
            skills: a.skills.iter().cloned().collect(),
            max_concurrent: a.max,
            status: a.status,
            grace_until_ms: a.grace_until,
            active: a.load(),
            last_assigned_ms: a.last_assigned,
        })
    }

    pub fn teams(&self) -> Vec<TeamView> {
        self.teams
            .values()
            .map(|t| TeamView {
                id: t.id.clone(),
                name: t.name.clone(),
                members: t.members.iter().cloned().collect(),
                policy: t.policy.clone(),
            })
            .collect()
    }

    /// The numbers whose new conversations go to `team`.
    pub fn team_numbers(&self, team: &str) -> Vec<String> {
        self.numbers
            .iter()
            .filter(|(_, t)| t.as_str() == team)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The team a number's new conversations go to.
    pub fn number_team(&self, number_id: &str) -> Option<&str> {
        self.numbers.get(number_id).map(String::as_str)
    }

    /// Open conversations held.
    pub fn open_conversations(&self) -> usize {
        self.convs.len()
    }

    /// Conversations waiting (step and sticky queues).
    pub fn queued_conversations(&self) -> usize {
        self.convs
            .values()
            .filter(|c| !matches!(c.state, ConvState::Assigned { .. }))
            .count()
    }

    /// (number id, customer id) of an open conversation.
    pub fn conversation_parties(&self, conv: ConvId) -> Option<(&str, &str)> {
        self.convs
            .get(&conv)
            .map(|c| (c.number_id.as_str(), c.customer_id.as_str()))
    }

    pub fn conversation(&self, conv: ConvId) -> Option<ConversationView> {
        self.convs.get(&conv).map(|c| self.conv_view(c))
    }

    /// The conversations assigned to an agent, by arrival.
    pub fn agent_conversations(
        &self,
        agent: &str,
    ) -> Result<Vec<ConversationView>, super::RoutingError> {
        let ix = self
            .agent_ix
            .get(agent)
            .ok_or_else(|| super::RoutingError::UnknownAgent(agent.to_string()))?;
        let mut v: Vec<ConversationView> = self
            .ag(*ix)
            .active
            .iter()
            .filter_map(|c| self.conversation(*c))
            .collect();
        v.sort_by_key(|c| c.arrival);
        Ok(v)
    }

    fn conv_view(&self, c: &Conv) -> ConversationView {
        let mut v = ConversationView {
            id: c.id,
            number_id: c.number_id.clone(),
            customer_id: c.customer_id.clone(),
            team: c.team.clone(),
            arrival: c.seq,
            status: ConvStatus::Queued,
            assignee: None,
            assigned_at_ms: None,
            awaiting_first_reply: false,
            queue: queue_ref(&c.team, &c.state),
            position: None,
            estimated_wait_ms: None,
            waiting_since_ms: Some(c.waiting_since),
            opened_at_ms: c.opened_at,
            avoid_agent: c.avoid.clone(),
        };
        match &c.state {
            ConvState::Assigned {
                agent,
                since,
                awaiting_reply,
            } => {
                v.status = ConvStatus::Assigned;
                v.assignee = Some(agent.clone());
                v.assigned_at_ms = Some(*since);
                v.awaiting_first_reply = *awaiting_reply;
                v.waiting_since_ms = None;
            }
            ConvState::Queued { step, .. } => {
                if let Some(st) = self
                    .teams
                    .get(&c.team)
                    .and_then(|t| t.steps.get(*step as usize))
                {
                    let pos = position_of(&st.queue, c.seq);
                    v.position = Some(pos);
                    v.estimated_wait_ms =
                        mean_interval(&st.recent).map(|m| m.saturating_mul(i64::from(pos)));
                }
            }
            ConvState::Sticky { agent, .. } => {
                if let Some(&ix) = self.agent_ix.get(agent) {
                    v.position = Some(position_of(&self.ag(ix).sticky, c.seq));
                }
            }
            ConvState::Routing => {}
        }
        v
    }

    /// Every step queue (empty ones too) and every non-empty sticky queue.
    pub fn queues(&self, now_ms: i64) -> Vec<QueueStat> {
        let now = now_ms.max(self.now);
        let oldest = |ids: &mut dyn Iterator<Item = &ConvId>| {
            ids.filter_map(|c| self.convs.get(c))
                .map(|c| now - c.waiting_since)
                .max()
        };
        let mut out = Vec::new();
        for team in self.teams.values() {
            for (s, st) in team.steps.iter().enumerate() {
                out.push(QueueStat {
                    queue: QueueRef::Step {
                        team: team.id.clone(),
                        step: s as u32,
                    },
                    length: st.queue.len() as u32,
                    oldest_wait_ms: oldest(&mut st.queue.values()),
                });
            }
        }
        for &ix in self.agent_ix.values() {
            let a = self.ag(ix);
            if !a.sticky.is_empty() {
                out.push(QueueStat {
                    queue: QueueRef::Sticky {
                        agent: a.id.clone(),
                    },
                    length: a.sticky.len() as u32,
                    oldest_wait_ms: oldest(&mut a.sticky.values()),
                });
            }
        }
        out
    }

    /// The supervisors' live view.
    pub fn live(&self, now_ms: i64) -> LiveView {
        let now = now_ms.max(self.now);
        let agents = self
            .agent_ix
            .values()
            .map(|&ix| {
                let a = self.ag(ix);
                AgentLive {
                    id: a.id.clone(),
                    name: a.name.clone(),
                    status: a.status,
                    in_grace: a.grace_until.is_some(),
                    active: a.load(),
                    max_concurrent: a.max,
                    avg_first_response_ms: a.stats.avg_first_response(),
                    resolved_last_hour: a.stats.resolved_last_hour(now),
                    waiting_for_agent: a.sticky.len() as u32,
                }
            })
            .collect();
        let mut waiting: std::collections::BTreeMap<&str, (u32, Option<i64>)> =
            self.teams.keys().map(|t| (t.as_str(), (0, None))).collect();
        for c in self.convs.values() {
            if matches!(c.state, ConvState::Assigned { .. }) {
                continue;
            }
            if let Some(w) = waiting.get_mut(c.team.as_str()) {
                w.0 += 1;
                w.1 = w.1.max(Some(now - c.waiting_since));
            }
        }
        let teams = self
            .teams
            .values()
            .map(|t| {
                let (queued, longest) = waiting.get(t.id.as_str()).copied().unwrap_or((0, None));
                TeamLive {
                    id: t.id.clone(),
                    name: t.name.clone(),
                    online_members: t
                        .members
                        .iter()
                        .filter_map(|m| self.agent_ix.get(m))
                        .filter(|&&ix| self.ag(ix).online())
                        .count() as u32,
                    queued,
                    longest_wait_ms: longest,
                }
            })
            .collect();
        LiveView { agents, teams }
    }
}
