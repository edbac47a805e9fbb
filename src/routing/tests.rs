//! Engine tests: scenarios per feature, property tests of the strategies,
//! and a randomized stress run that audits every invariant after every
//! command.

use super::*;
use proptest::prelude::{any, prop_assert, prop_assert_eq, proptest, ProptestConfig};

const NUM: &str = "n1";

fn engine_with(grace_ms: i64) -> Engine {
    Engine::new(EngineConfig { grace_ms })
}

fn ok(r: CommandResult) -> Vec<Effect> {
    r.unwrap_or_else(|e| panic!("command failed: {e}"))
}

fn audit(e: &Engine) {
    if let Err(v) = e.check_invariants() {
        panic!("{v}");
    }
}

/// A team `t` with `policy`, agents `a0..a{n}` in it (online), number mapped.
fn setup(n: usize, max: u32, policy: Policy) -> Engine {
    let mut e = engine_with(1_000);
    ok(e.upsert_team(TeamSpec::new("t", "T").policy(policy), 0));
    for i in 0..n {
        ok(e.upsert_agent(
            AgentSpec::new(format!("a{i}"), "")
                .teams(["t"])
                .max_concurrent(max),
            0,
        ));
        ok(e.set_agent_status(&format!("a{i}"), AgentStatus::Online, 0));
    }
    ok(e.set_number_team(NUM, Some("t"), 0));
    audit(&e);
    e
}

fn conv(id: u64) -> ConvSpec {
    ConvSpec {
        id,
        number_id: NUM.into(),
        customer_id: format!("c{id}"),
        previous_agent: None,
    }
}

fn assignee(e: &Engine, id: u64) -> Option<String> {
    e.conversation(id).and_then(|c| c.assignee)
}

fn one_step(strategy: Strategy) -> Policy {
    Policy {
        steps: vec![Step::team("t", strategy)],
        ..Policy::default()
    }
}

#[test]
fn least_loaded_spreads_and_never_exceeds_capacity() {
    let mut e = setup(3, 2, one_step(Strategy::LeastLoaded));
    for id in 1..=8 {
        ok(e.conversation_opened(conv(id), id as i64));
        audit(&e);
    }
    let loads: Vec<u32> = e.agents().iter().map(|a| a.active).collect();
    assert_eq!(loads, vec![2, 2, 2]);
    // Two wait in arrival order.
    let q = e.conversation(7).unwrap();
    assert_eq!((q.status, q.position), (ConvStatus::Queued, Some(1)));
    assert_eq!(e.conversation(8).unwrap().position, Some(2));
    // Resolving frees capacity: the oldest waiter gets it at once.
    let holder = assignee(&e, 1).unwrap();
    let fx = ok(e.resolve(1, Actor::Admin, 100));
    assert!(fx
        .iter()
        .any(|f| matches!(f, Effect::Assigned { conv: 7, agent, .. } if *agent == holder)));
    assert_eq!(e.conversation(8).unwrap().position, Some(1));
    audit(&e);
}

#[test]
fn round_robin_rotates_in_id_order() {
    let mut e = setup(3, 10, one_step(Strategy::RoundRobin));
    let order: Vec<String> = (1..=6)
        .map(|id| {
            ok(e.conversation_opened(conv(id), 0));
            assignee(&e, id).unwrap()
        })
        .collect();
    assert_eq!(order, ["a0", "a1", "a2", "a0", "a1", "a2"]);
}

#[test]
fn longest_idle_prefers_never_assigned_then_oldest() {
    let mut e = setup(3, 10, one_step(Strategy::LongestIdle));
    ok(e.conversation_opened(conv(1), 10));
    ok(e.conversation_opened(conv(2), 20));
    ok(e.conversation_opened(conv(3), 30));
    ok(e.conversation_opened(conv(4), 40));
    assert_eq!(assignee(&e, 4).as_deref(), Some("a0"));
}

#[test]
fn step_timeout_moves_to_next_step_and_skip_if_empty_is_immediate() {
    let mut e = engine_with(0);
    ok(e.upsert_team(TeamSpec::new("vip", ""), 0));
    ok(e.upsert_team(
        TeamSpec::new("t", "").policy(Policy {
            steps: vec![
                Step::skills("lang:ko AND billing", Strategy::LeastLoaded).timeout_ms(500),
                Step::team("vip", Strategy::LeastLoaded).skip_if_empty(),
                Step::team("t", Strategy::RoundRobin),
            ],
            ..Policy::default()
        }),
        0,
    ));
    ok(e.set_number_team(NUM, Some("t"), 0));
    ok(e.upsert_agent(
        AgentSpec::new("ko", "")
            .skills(["lang:ko", "billing"])
            .max_concurrent(1),
        0,
    ));
    ok(e.upsert_agent(AgentSpec::new("gen", "").teams(["t"]), 0));
    ok(e.set_agent_status("ko", AgentStatus::Online, 0));
    ok(e.set_agent_status("gen", AgentStatus::Online, 0));
    ok(e.conversation_opened(conv(1), 0));
    assert_eq!(assignee(&e, 1).as_deref(), Some("ko"));
    ok(e.conversation_opened(conv(2), 0));
    let c = e.conversation(2).unwrap();
    assert_eq!(
        c.queue,
        Some(QueueRef::Step {
            team: "t".into(),
            step: 0
        })
    );
    assert_eq!(e.next_deadline(), Some(500));
    let fx = ok(e.tick(499));
    assert!(fx.is_empty());
    // Step 1 (vip) has nobody online: skipped at once to step 2.
    let fx = ok(e.tick(500));
    assert!(fx.iter().any(|f| matches!(
        f,
        Effect::Moved {
            conv: 2,
            reason: Reason::Timeout,
            ..
        }
    )));
    assert_eq!(assignee(&e, 2).as_deref(), Some("gen"));
    audit(&e);
}

#[test]
fn sticky_goes_to_previous_agent_or_waits_then_falls_through() {
    let mut e = setup(
        2,
        1,
        Policy {
            steps: vec![Step::team("t", Strategy::LeastLoaded)],
            sticky_wait_ms: 300,
            ..Policy::default()
        },
    );
    let mut spec = conv(1);
    spec.previous_agent = Some("a1".into());
    ok(e.conversation_opened(spec, 0));
    assert_eq!(assignee(&e, 1).as_deref(), Some("a1"));
    // a1 is now full: a returning customer of a1 waits for a1.
    let mut spec = conv(2);
    spec.previous_agent = Some("a1".into());
    ok(e.conversation_opened(spec, 10));
    assert_eq!(
        e.conversation(2).unwrap().queue,
        Some(QueueRef::Sticky { agent: "a1".into() })
    );
    // The wait ends: routed by the policy (a0 is free).
    ok(e.tick(310));
    assert_eq!(assignee(&e, 2).as_deref(), Some("a0"));
    audit(&e);
}

#[test]
fn offline_grace_period_then_reassignment_with_reason() {
    let mut e = setup(2, 5, one_step(Strategy::RoundRobin));
    ok(e.conversation_opened(conv(1), 0));
    assert_eq!(assignee(&e, 1).as_deref(), Some("a0"));
    // A flap within the grace period moves nothing.
    ok(e.set_agent_status("a0", AgentStatus::Offline, 100));
    ok(e.set_agent_status("a0", AgentStatus::Online, 500));
    ok(e.tick(2_000));
    assert_eq!(assignee(&e, 1).as_deref(), Some("a0"));
    // Offline past the grace period: returned to routing, reason recorded.
    ok(e.set_agent_status("a0", AgentStatus::Offline, 3_000));
    let fx = ok(e.tick(4_000));
    assert!(fx.iter().any(|f| matches!(
        f,
        Effect::Unassigned {
            conv: 1,
            reason: Reason::AgentOffline,
            ..
        }
    )));
    assert_eq!(assignee(&e, 1).as_deref(), Some("a1"));
    audit(&e);
}

#[test]
fn no_first_reply_returns_to_routing_preferring_someone_else() {
    let mut e = setup(
        2,
        5,
        Policy {
            steps: vec![Step::team("t", Strategy::LeastLoaded)],
            first_reply_timeout_ms: Some(1_000),
            ..Policy::default()
        },
    );
    ok(e.conversation_opened(conv(1), 0));
    let first = assignee(&e, 1).unwrap();
    let fx = ok(e.tick(1_000));
    assert!(fx.iter().any(|f| matches!(
        f,
        Effect::Unassigned {
            reason: Reason::NoFirstReply,
            ..
        }
    )));
    let second = assignee(&e, 1).unwrap();
    assert_ne!(first, second);
    // A reply stops the clock and is measured from the assignment.
    let fx = ok(e.agent_replied(1, &second, 1_250));
    assert!(fx
        .iter()
        .any(|f| matches!(f, Effect::FirstResponse { ms: 250, .. })));
    ok(e.tick(10_000));
    assert_eq!(assignee(&e, 1), Some(second.clone()));
    let live = e.live(10_000);
    let a = live.agents.iter().find(|a| a.id == second).unwrap();
    assert_eq!(a.avg_first_response_ms, Some(250));
    audit(&e);
}

#[test]
fn claim_is_exclusive_and_checks_eligibility() {
    let mut e = setup(2, 5, one_step(Strategy::Manual));
    ok(e.conversation_opened(conv(1), 0));
    assert_eq!(assignee(&e, 1), None);
    ok(e.claim(1, "a1", 5));
    let err = e.claim(1, "a0", 5).unwrap_err();
    assert!(matches!(err, RoutingError::AlreadyAssigned { .. }));
    ok(e.upsert_agent(AgentSpec::new("outsider", ""), 5));
    ok(e.set_agent_status("outsider", AgentStatus::Online, 5));
    ok(e.conversation_opened(conv(2), 6));
    let err = e.claim(2, "outsider", 7).unwrap_err();
    assert!(matches!(err, RoutingError::NotEligible { .. }));
    audit(&e);
}

#[test]
fn failed_commands_change_nothing() {
    let mut e = setup(1, 1, one_step(Strategy::LeastLoaded));
    ok(e.conversation_opened(conv(1), 0));
    let before = format!("{:?}", e);
    assert!(e.set_max_concurrent("a0", 0, 50).is_err());
    assert!(e.conversation_opened(conv(1), 60).is_err());
    assert!(e
        .assign(1, Target::Agent("nobody".into()), Actor::Admin, 70)
        .is_err());
    assert!(e.resolve(99, Actor::Admin, 80).is_err());
    assert_eq!(before, format!("{:?}", e));
}

#[test]
fn transfer_and_manual_assign_and_overflow() {
    let mut e = engine_with(0);
    ok(e.upsert_team(TeamSpec::new("over", ""), 0));
    ok(e.upsert_team(
        TeamSpec::new("t", "").policy(Policy {
            max_wait_ms: Some(1_000),
            overflow_team: Some("over".into()),
            ..Policy::default()
        }),
        0,
    ));
    ok(e.set_number_team(NUM, Some("t"), 0));
    ok(e.upsert_agent(AgentSpec::new("x", "").teams(["t"]).max_concurrent(1), 0));
    ok(e.upsert_agent(AgentSpec::new("y", "").teams(["over"]), 0));
    ok(e.set_agent_status("x", AgentStatus::Online, 0));
    ok(e.set_agent_status("y", AgentStatus::Online, 0));
    ok(e.conversation_opened(conv(1), 0));
    ok(e.conversation_opened(conv(2), 0));
    assert_eq!(assignee(&e, 2), None);
    let fx = ok(e.tick(1_000));
    assert!(fx.iter().any(|f| matches!(
        f,
        Effect::Moved {
            conv: 2,
            reason: Reason::Overflow,
            ..
        }
    )));
    assert_eq!(assignee(&e, 2).as_deref(), Some("y"));
    // x is full: the transfer is refused, y keeps it.
    assert!(e
        .transfer(2, Target::Agent("x".into()), Actor::Admin, 1_100)
        .is_err());
    ok(e.resolve(1, Actor::Admin, 1_200));
    ok(e.transfer(2, Target::Agent("x".into()), Actor::Admin, 1_300));
    assert_eq!(assignee(&e, 2).as_deref(), Some("x"));
    ok(e.conversation_opened(conv(3), 1_400));
    ok(e.assign(3, Target::Agent("y".into()), Actor::Admin, 1_500));
    assert_eq!(assignee(&e, 3).as_deref(), Some("y"));
    audit(&e);
}

#[test]
fn commands_roundtrip_through_rkyv_and_replay_identically() {
    let mut e = setup(3, 2, one_step(Strategy::RoundRobin));
    let cmds = vec![
        Command::ConversationOpened {
            spec: conv(1),
            now_ms: 1,
        },
        Command::Claim {
            conv: 1,
            agent: "a2".into(),
            now_ms: 2,
        },
        Command::SetAgentStatus {
            agent: "a0".into(),
            status: AgentStatus::Offline,
            now_ms: 3,
        },
        Command::Tick { now_ms: 5_000 },
    ];
    let mut replica = e.clone();
    for c in cmds {
        let bytes = c.encode().unwrap();
        let back = Command::decode(COMMAND_VERSION, &bytes).unwrap();
        assert_eq!(back, c);
        let a = e.apply(c);
        let b = replica.apply(back);
        assert_eq!(a, b);
    }
    assert_eq!(format!("{e:?}"), format!("{replica:?}"));
}

// ---- property tests of the strategies ----

/// Agents with random loads/capacities/idle times, one step; the choice
/// must equal the strategy's definition computed by brute force.
fn strategy_engine(
    specs: &[(u32, u32, bool, Option<i64>)],
    strategy: Strategy,
) -> (Engine, Vec<String>) {
    let mut e = engine_with(0);
    ok(e.upsert_team(TeamSpec::new("t", "").policy(one_step(strategy)), 0));
    ok(e.upsert_team(
        TeamSpec::new("load", "").policy(one_step(Strategy::Manual)),
        0,
    ));
    ok(e.set_number_team(NUM, Some("t"), 0));
    ok(e.set_number_team("load", Some("load"), 0));
    let mut ids = Vec::new();
    let mut next = 1_000u64;
    for (i, &(load, max, online, idle)) in specs.iter().enumerate() {
        let id = format!("a{i:03}");
        ok(e.upsert_agent(
            AgentSpec::new(&id, "")
                .teams(["t", "load"])
                .max_concurrent(max.max(load)),
            0,
        ));
        ok(e.set_agent_status(&id, AgentStatus::Online, 0));
        // Give it `load` conversations through the manual team, at time `idle`.
        for _ in 0..load {
            ok(e.conversation_opened(
                ConvSpec {
                    id: next,
                    number_id: "load".into(),
                    customer_id: format!("l{next}"),
                    previous_agent: None,
                },
                0,
            ));
            ok(e.assign(
                next,
                Target::Agent(id.clone()),
                Actor::Admin,
                idle.unwrap_or(0),
            ));
            next += 1;
        }
        if !online {
            ok(e.set_agent_status(&id, AgentStatus::Away, 0));
        }
        ids.push(id);
    }
    (e, ids)
}

fn agent_specs() -> impl proptest::strategy::Strategy<Value = Vec<(u32, u32, bool, Option<i64>)>> {
    proptest::collection::vec(
        (
            0u32..4,
            0u32..5,
            any::<bool>(),
            proptest::option::of(1i64..50),
        ),
        1..12,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn least_loaded_picks_fewest_then_longest_idle_then_id(specs in agent_specs()) {
        let (mut e, ids) = strategy_engine(&specs, Strategy::LeastLoaded);
        let views = e.agents();
        let expect = ids.iter().filter_map(|id| {
            let a = views.iter().find(|v| &v.id == id)?;
            (a.status == AgentStatus::Online && a.active < a.max_concurrent)
                .then(|| ((a.active, a.last_assigned_ms), id.clone()))
        }).min().map(|x| x.1);
        ok(e.conversation_opened(conv(1), 100));
        prop_assert_eq!(assignee(&e, 1), expect);
        prop_assert!(e.check_invariants().is_ok());
    }

    #[test]
    fn longest_idle_picks_oldest_assignment_then_id(specs in agent_specs()) {
        let (mut e, ids) = strategy_engine(&specs, Strategy::LongestIdle);
        let views = e.agents();
        let expect = ids.iter().filter_map(|id| {
            let a = views.iter().find(|v| &v.id == id)?;
            (a.status == AgentStatus::Online && a.active < a.max_concurrent)
                .then(|| (a.last_assigned_ms, id.clone()))
        }).min().map(|x| x.1);
        ok(e.conversation_opened(conv(1), 100));
        prop_assert_eq!(assignee(&e, 1), expect);
    }

    #[test]
    fn round_robin_is_fair_over_a_cycle(n in 1usize..10, rounds in 1usize..4) {
        let mut e = setup(n, 100, one_step(Strategy::RoundRobin));
        let mut count = std::collections::BTreeMap::<String, usize>::new();
        for id in 0..(n * rounds) as u64 {
            ok(e.conversation_opened(conv(id + 1), 0));
            *count.entry(assignee(&e, id + 1).unwrap()).or_default() += 1;
        }
        prop_assert_eq!(count.len(), n);
        prop_assert!(count.values().all(|&c| c == rounds));
    }

    #[test]
    fn no_strategy_exceeds_capacity_and_queue_is_fifo(
        n in 1usize..6, max in 0u32..4, convs in 1u64..40, which in 0usize..3,
    ) {
        let strategy = [Strategy::LeastLoaded, Strategy::RoundRobin, Strategy::LongestIdle][which];
        let mut e = setup(n, max, one_step(strategy));
        for id in 1..=convs {
            ok(e.conversation_opened(conv(id), id as i64));
        }
        prop_assert!(e.check_invariants().is_ok());
        let cap = n as u64 * u64::from(max);
        let assigned = (1..=convs).filter(|&id| assignee(&e, id).is_some()).count() as u64;
        prop_assert_eq!(assigned, convs.min(cap));
        // The first `cap` arrivals are the assigned ones; the rest wait in order.
        for id in 1..=convs {
            let c = e.conversation(id).unwrap();
            if id <= cap {
                prop_assert!(c.assignee.is_some());
            } else {
                prop_assert_eq!(c.position, Some((id - cap) as u32));
            }
        }
    }
}

// ---- stress ----

/// A tiny deterministic generator (SplitMix64), so a failure reproduces.
pub(super) struct Rng(pub u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A random command against the engine's current state.
pub(super) fn random_command(r: &mut Rng, e: &Engine, next_conv: &mut u64, now: i64) -> Command {
    let agent = |r: &mut Rng| format!("a{}", r.below(24));
    let open: Vec<ConvId> = (0..4)
        .filter_map(|_| {
            let lo = next_conv.saturating_sub(400);
            let id = lo + r.below(*next_conv - lo + 1);
            e.conversation(id).map(|c| c.id)
        })
        .collect();
    let pick_conv = |r: &mut Rng| match open.first() {
        Some(&c) if r.below(5) > 0 => c,
        _ => r.below(*next_conv + 2),
    };
    match r.below(100) {
        0..=34 => {
            *next_conv += 1;
            let prev = (r.below(3) == 0).then(|| agent(r));
            Command::ConversationOpened {
                spec: ConvSpec {
                    id: *next_conv,
                    number_id: ["n1", "n2", "n3"][r.below(3) as usize].into(),
                    customer_id: format!("c{}", r.below(500)),
                    previous_agent: prev,
                },
                now_ms: now,
            }
        }
        35..=52 => Command::Resolve {
            conv: pick_conv(r),
            actor: Actor::Admin,
            now_ms: now,
        },
        53..=66 => Command::SetAgentStatus {
            agent: agent(r),
            status: [AgentStatus::Online, AgentStatus::Away, AgentStatus::Offline]
                [r.below(3) as usize],
            now_ms: now,
        },
        67..=74 => Command::Claim {
            conv: pick_conv(r),
            agent: agent(r),
            now_ms: now,
        },
        75..=80 => Command::Transfer {
            conv: pick_conv(r),
            target: if r.below(2) == 0 {
                Target::Agent(agent(r))
            } else {
                Target::Team(["sales", "support", "ko"][r.below(3) as usize].into())
            },
            actor: Actor::Admin,
            now_ms: now,
        },
        81..=84 => Command::Assign {
            conv: pick_conv(r),
            target: Target::Agent(agent(r)),
            actor: Actor::Admin,
            now_ms: now,
        },
        85..=88 => Command::SetMaxConcurrent {
            agent: agent(r),
            max_concurrent: r.below(8) as u32,
            now_ms: now,
        },
        89..=92 => Command::AgentReplied {
            conv: pick_conv(r),
            agent: agent(r),
            now_ms: now,
        },
        93..=95 => {
            let skills = [
                ["lang:ko"].as_slice(),
                &["billing"],
                &["lang:ko", "billing"],
                &[],
            ][r.below(4) as usize];
            let teams = [
                ["sales"].as_slice(),
                &["support"],
                &["sales", "support"],
                &["ko"],
            ][r.below(4) as usize];
            Command::UpsertAgent {
                spec: AgentSpec::new(agent(r), "")
                    .skills(skills.iter().copied())
                    .teams(teams.iter().copied())
                    .max_concurrent(1 + r.below(7) as u32),
                now_ms: now,
            }
        }
        _ => Command::Tick { now_ms: now },
    }
}

/// The teams, numbers and agents of the stress runs, as commands.
pub(super) fn stress_setup_commands() -> Vec<Command> {
    let mut c = vec![Command::UpsertTeam {
        spec: TeamSpec::new("ko", ""),
        now_ms: 0,
    }];
    c.push(Command::UpsertTeam {
        spec: TeamSpec::new("support", "").policy(Policy {
            steps: vec![
                Step::skills("lang:ko AND billing", Strategy::LeastLoaded)
                    .timeout_ms(3_000)
                    .skip_if_empty(),
                Step::team("support", Strategy::RoundRobin).timeout_ms(5_000),
                Step::team("ko", Strategy::LongestIdle),
            ],
            sticky_wait_ms: 1_500,
            first_reply_timeout_ms: Some(20_000),
            ..Policy::default()
        }),
        now_ms: 0,
    });
    c.push(Command::UpsertTeam {
        spec: TeamSpec::new("sales", "").policy(Policy {
            steps: vec![Step::team("sales", Strategy::LeastLoaded)],
            max_wait_ms: Some(8_000),
            overflow_team: Some("support".into()),
            ..Policy::default()
        }),
        now_ms: 0,
    });
    for (n, t) in [("n1", "support"), ("n2", "sales"), ("n3", "ko")] {
        c.push(Command::SetNumberTeam {
            number_id: n.into(),
            team: Some(t.into()),
            now_ms: 0,
        });
    }
    for i in 0..24 {
        let teams: &[&str] = match i % 3 {
            0 => &["sales"],
            1 => &["support"],
            _ => &["support", "ko"],
        };
        c.push(Command::UpsertAgent {
            spec: AgentSpec::new(format!("a{i}"), "")
                .teams(teams.iter().copied())
                .skills(if i % 4 == 0 {
                    vec!["lang:ko", "billing"]
                } else {
                    vec![]
                })
                .max_concurrent(1 + i % 6),
            now_ms: 0,
        });
    }
    c
}

fn stress_setup(seed: u64) -> (Engine, Rng) {
    let mut e = engine_with(2_000);
    for cmd in stress_setup_commands() {
        ok(e.apply(cmd));
    }
    (e, Rng(seed))
}

#[test]
fn stress_invariants_hold_after_every_command() {
    for seed in [1u64, 2, 3] {
        let (mut e, mut r) = stress_setup(seed);
        let mut replica = e.clone();
        let mut next_conv = 0u64;
        let mut now = 0i64;
        let (mut applied, mut refused) = (0usize, 0usize);
        for _ in 0..6_000 {
            now += r.below(400) as i64;
            let cmd = random_command(&mut r, &e, &mut next_conv, now);
            let before = Some(e.open_conversations());
            let result = e.apply(cmd.clone());
            match &result {
                Ok(_) => applied += 1,
                Err(_) => {
                    refused += 1;
                    assert_eq!(before, Some(e.open_conversations()));
                }
            }
            audit(&e);
            // Determinism: a replica fed the same commands agrees exactly.
            assert_eq!(replica.apply(cmd), result);
        }
        assert_eq!(format!("{e:?}"), format!("{replica:?}"));
        assert!(next_conv > 1_500, "thousands of conversations: {next_conv}");
        assert!(applied > 2_000 && refused > 100, "{applied} / {refused}");
    }
}
