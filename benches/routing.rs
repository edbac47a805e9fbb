//! Routing decision latency with 500 agents and 10,000 open conversations.
//!
//! State: 5 teams of 100 agents (max_concurrent 30, every agent online;
//! team4's agents have `lang:ko` and `billing`), 10,000 open conversations
//! all assigned (2,000 per team, so every step has capacity: the figure is
//! the choice itself, not a queue). Teams 0-3 route with one team step;
//! team4 with two steps: `lang:ko AND billing` (timeout 10 s), then the
//! team. One decision = a new conversation opened and routed
//! (`conversation_opened`); each is followed by the resolve of the oldest
//! open conversation, so the engine stays at 10,000 open. Criterion times
//! the pair (open + resolve).
//!
//! Besides criterion's mean, an hdrhistogram over 200,000 individually
//! timed decisions prints the median and p99 (what the target,
//! p99 <= 50 us, is about).

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use switchboard::routing::{
    Actor, AgentSpec, AgentStatus, ConvSpec, Engine, EngineConfig, Policy, Step, Strategy, TeamSpec,
};

const AGENTS: usize = 500;
const TEAMS: usize = 5;
const OPEN: u64 = 10_000;

struct Fixture {
    e: Engine,
    next: u64,
    oldest: u64,
    now: i64,
}

impl Fixture {
    fn new(strategy: Strategy) -> Fixture {
        let mut e = Engine::new(EngineConfig { grace_ms: 60_000 });
        for t in 0..TEAMS {
            let id = format!("team{t}");
            let steps = if t == TEAMS - 1 {
                vec![
                    Step::skills("lang:ko AND billing", strategy)
                        .timeout_ms(10_000)
                        .skip_if_empty(),
                    Step::team(&id, strategy),
                ]
            } else {
                vec![Step::team(&id, strategy)]
            };
            let policy = Policy {
                steps,
                first_reply_timeout_ms: Some(300_000),
                ..Policy::default()
            };
            e.upsert_team(TeamSpec::new(&id, "").policy(policy), 0)
                .expect("team");
            e.set_number_team(&format!("n{t}"), Some(&id), 0)
                .expect("number");
        }
        for a in 0..AGENTS {
            let skills: &[&str] = if a % TEAMS == TEAMS - 1 {
                &["lang:ko", "billing"]
            } else {
                &["billing"]
            };
            e.upsert_agent(
                AgentSpec::new(format!("agent{a:04}"), "")
                    .teams([format!("team{}", a % TEAMS)])
                    .skills(skills.iter().copied())
                    .max_concurrent(30),
                0,
            )
            .expect("agent");
            e.set_agent_status(&format!("agent{a:04}"), AgentStatus::Online, 0)
                .expect("status");
        }
        let mut f = Fixture {
            e,
            next: 1,
            oldest: 1,
            now: 1,
        };
        for _ in 0..OPEN {
            f.open();
        }
        assert_eq!(f.e.open_conversations() as u64, OPEN);
        assert_eq!(f.e.queued_conversations(), 0, "every conversation assigned");
        f
    }

    fn spec(&self) -> ConvSpec {
        ConvSpec {
            id: self.next,
            number_id: format!("n{}", self.next % TEAMS as u64),
            customer_id: format!("c{}", self.next),
            previous_agent: None,
        }
    }

    fn open(&mut self) {
        let spec = self.spec();
        self.now += 1;
        black_box(self.e.conversation_opened(spec, self.now).expect("open"));
        self.next += 1;
    }

    /// One decision, timed, then the resolve that keeps the load steady.
    fn step(&mut self) -> u64 {
        let spec = self.spec();
        self.now += 1;
        let t = Instant::now();
        let fx = self.e.conversation_opened(spec, self.now).expect("open");
        let ns = t.elapsed().as_nanos() as u64;
        black_box(fx);
        self.next += 1;
        self.e
            .resolve(self.oldest, Actor::System, self.now)
            .expect("resolve");
        self.oldest += 1;
        ns
    }
}

fn decisions(c: &mut Criterion) {
    for (name, strategy) in [
        ("least_loaded", Strategy::LeastLoaded),
        ("round_robin", Strategy::RoundRobin),
        ("longest_idle", Strategy::LongestIdle),
    ] {
        let mut f = Fixture::new(strategy);
        let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
        for _ in 0..200_000 {
            h.record(f.step().max(1)).expect("record");
        }
        println!(
            "routing decision {name} (500 agents, 10,000 open): median {:.2} us, p99 {:.2} us, \
             p99.9 {:.2} us, max {:.2} us over {} decisions",
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
            h.value_at_quantile(0.999) as f64 / 1e3,
            h.max() as f64 / 1e3,
            h.len()
        );
        c.bench_function(&format!("routing_decision/{name}"), |b| {
            b.iter(|| black_box(f.step()))
        });
    }
}

criterion_group!(benches, decisions);
criterion_main!(benches);
