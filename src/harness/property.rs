//! Named properties: checks over generated input, too varied to write out as scenarios.
//!
//! A spec check names one (`property = "group-membership"`) and gives its parameters. Each
//! property reaches the server only through the [`Target`] and its control API, so it runs
//! against every target alike.

use std::collections::{BTreeMap, BTreeSet};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::subsequence;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use serde_json::{Value, json};

use super::evidence::ExchangeLog;
use crate::target::{Capabilities, Control, Target};
use crate::wire::{HttpRequest, HttpResponse};

/// What a property run gets.
pub struct PropertyCx<'a> {
    pub target: &'a dyn Target,
    pub caps: &'a Capabilities,
    /// The check's parameters, rendered, over the profile's and rule's parameters.
    pub params: BTreeMap<String, Value>,
    pub seed: u64,
    /// Overrides the check's `cases` parameter when set.
    pub cases: Option<u32>,
    /// Distinguishes this run's group names from other runs' on a shared server.
    pub run_id: String,
    /// The check's exchanges (the target records into it); a search keeps only the last
    /// case's, so a failure shows the minimal sequence's.
    pub log: &'a ExchangeLog,
    pub mode: Mode,
    /// Set by a failed search: the shrunk sequence, as JSON.
    pub found: std::sync::Mutex<Option<Value>>,
}

/// What a sequence property does with its generator.
#[derive(Debug, Clone, Default)]
pub enum Mode {
    /// Search for a failing sequence and shrink it (proptest).
    #[default]
    Search,
    /// Run this one sequence (from a replay file) once.
    Replay(Value),
    /// Run the first `cases` generated sequences, whatever their outcome: the same sequences
    /// for any target with the same seed, for a differential run.
    Sample,
}

impl<'a> PropertyCx<'a> {
    pub fn new(target: &'a dyn Target, caps: &'a Capabilities, log: &'a ExchangeLog) -> PropertyCx<'a> {
        PropertyCx {
            target,
            caps,
            params: BTreeMap::new(),
            seed: 0,
            cases: None,
            run_id: "run".into(),
            log,
            mode: Mode::Search,
            found: std::sync::Mutex::new(None),
        }
    }

    fn control(&self) -> Control<'_> {
        Control { target: self.target, caps: self.caps }
    }

    fn param(&self, name: &str) -> Result<u64, String> {
        self.params
            .get(name)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("property parameter `{name}` must be a non-negative integer"))
    }

    fn cases(&self) -> Result<u32, String> {
        match self.cases {
            Some(c) => Ok(c),
            None => Ok(u32::try_from(self.param("cases")?).unwrap_or(u32::MAX)),
        }
    }
}

pub struct PropertyDef {
    pub name: &'static str,
    pub summary: &'static str,
    /// Control-API capabilities it uses.
    pub needs: &'static [&'static str],
    /// Parameters it reads (from the check, the rule or the profile).
    pub params: &'static [&'static str],
    /// It generates random sequences from the seed: whether it finds a bug may depend on
    /// the seed, so no fault may be caught by such a property alone.
    pub seeded: bool,
    pub run: fn(&PropertyCx<'_>) -> Result<(), String>,
}

pub const PROPERTIES: &[PropertyDef] = &[
    PropertyDef {
        name: "group-membership",
        summary: "random create/add/remove/send sequences on one group agree with a model of its members, cap included",
        needs: &["instances", "inbox"],
        params: &["max_members", "cases", "max_ops", "spare_instances"],
        seeded: true,
        run: group_membership,
    },
    PropertyDef {
        name: "notification-keys-unguessable",
        summary: "notification keys are distinct and vary in enough positions to carry min_bits random bits",
        needs: &["instances"],
        params: &["samples", "min_bits"],
        seeded: false,
        run: keys_unguessable,
    },
    PropertyDef {
        name: "message-lifetime",
        summary: "random interleavings of sends, connectivity changes, clock advances and re-registrations keep every lifetime invariant",
        needs: &["instances", "inbox", "connectivity", "clock", "reregister"],
        params: &[
            "cases",
            "max_ops",
            "short_ttl_seconds",
            "long_ttl_seconds",
            "throttle_grant_interval_seconds",
            "max_payload_bytes",
        ],
        seeded: true,
        run: message_lifetime,
    },
    PropertyDef {
        name: "ccs-upstream",
        summary: "random interleavings of upstream messages, acks (on the right and the wrong connection), connects and closes keep the connection server's ack and resend rules",
        needs: &["instances", "upstream", "xmpp"],
        params: &["cases", "max_ops", "max_pending_per_connection"],
        seeded: true,
        run: ccs_upstream,
    },
];

pub fn find(name: &str) -> Option<&'static PropertyDef> {
    PROPERTIES.iter().find(|p| p.name == name)
}

/// The generator of one search worker: worker 0 draws what a single search would.
fn seed_rng(seed: u64, worker: u64) -> TestRng {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&worker.to_le_bytes());
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

/// What a search worker found: the reason and shrunk sequence of a failure, or why it aborted.
type WorkerOutcome<T> = Result<(String, Vec<T>), String>;

/// A search runs its cases on this many workers, each with its own stream from the seed:
/// against a server that answers slowly, cases wait side by side rather than in a row. A
/// fixed number, so a seed means the same cases on any machine.
const SEARCH_WORKERS: u32 = 4;

fn exchange(cx: &PropertyCx<'_>, req: HttpRequest) -> Result<(HttpRequest, HttpResponse), String> {
    let resp = cx.target.exchange(&req).map_err(|e| e.to_string())?;
    Ok((req, resp))
}

fn server_request(method: &str, path: &str, sender: &crate::target::Sender) -> HttpRequest {
    HttpRequest::new(method, path)
        .with_header("authorization", &format!("key={}", sender.key))
        .with_header("project_id", &sender.id)
}

// ---- group-membership -----------------------------------------------------------------

/// One operation of a generated sequence. Member lists are indices into the case's pool of
/// registered instances.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Op {
    Create(Vec<usize>),
    Add(Vec<usize>),
    Remove(Vec<usize>),
    Send,
}

fn group_membership(cx: &PropertyCx<'_>) -> Result<(), String> {
    let cap = cx.param("max_members")? as usize;
    let pool = cap + cx.param("spare_instances")? as usize;
    let max_ops = cx.param("max_ops")?.max(1) as usize;
    let subset = move || subsequence((0..pool).collect::<Vec<_>>(), 1..=pool);
    let op = prop_oneof![
        2 => subset().prop_map(Op::Create),
        3 => subset().prop_map(Op::Add),
        2 => subset().prop_map(Op::Remove),
        2 => Just(Op::Send),
    ];
    let counter = std::sync::atomic::AtomicU64::new(0);
    let header = format!(
        "minimal failing sequence (seed {}, one group, ids by their index in a pool of {pool} instances, cap {cap}):",
        cx.seed
    );
    run_sequences(cx, vec(op, 1..=max_ops), &header, |ops| {
        let case = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Fresh instances each case: reused ones would soon have used up their throttle
        // bucket, and the messages they are sent would wait.
        let mut instances = Pool::register(cx, pool)?;
        run_membership_case(cx, cap, &mut instances, ops, case)
    })
}

/// A sender and the app instances a membership case draws its ids from, with how many
/// messages each has received so far.
struct Pool {
    sender: crate::target::Sender,
    ids: Vec<String>,
    received: Vec<usize>,
}

impl Pool {
    fn register(cx: &PropertyCx<'_>, size: usize) -> Result<Pool, String> {
        let control = cx.control();
        let sender = control.new_sender().map_err(|e| e.to_string())?;
        let ids: Vec<String> = (0..size)
            .map(|_| control.register(std::slice::from_ref(&sender.id), None, None, None))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        Ok(Pool { sender, ids, received: vec![0; size] })
    }
}

fn run_sequences<T: std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned + Send>(
    cx: &PropertyCx<'_>,
    strategy: impl Strategy<Value = Vec<T>> + Sync,
    header: &str,
    case: impl Fn(&[T]) -> Result<(), String> + Sync,
) -> Result<(), String> {
    // Shrinking stops early by default (4 tries a case); a minimal sequence is worth more.
    let config = Config { cases: cx.cases()?, failure_persistence: None, max_shrink_iters: 1024, ..Config::default() };
    let show = |steps: &[T]| -> String {
        steps.iter().enumerate().map(|(i, s)| format!("  {}. {s:?}", i + 1)).collect::<Vec<_>>().join("\n")
    };
    match &cx.mode {
        Mode::Replay(sequence) => {
            let steps: Vec<T> = serde_json::from_value(sequence.clone())
                .map_err(|e| format!("the replay's sequence does not fit this property: {e}"))?;
            case(&steps).map_err(|reason| format!("{header}\n{}\n{reason}", show(&steps)))
        }
        Mode::Sample => {
            let mut runner = TestRunner::new_with_rng(config.clone(), seed_rng(cx.seed, 0));
            for _ in 0..config.cases {
                let steps = strategy.new_tree(&mut runner).map_err(|e| format!("generating: {e}"))?.current();
                // Disagreements with the harness's model are not the point here: the caller
                // compares what two servers answered.
                let _ = case(&steps);
            }
            Ok(())
        }
        Mode::Search => {
            // Each worker searches its share and shrinks its own failure; the lowest worker's
            // failure is reported, whichever finished first, so a seed gives one answer.
            let share = config.cases.div_ceil(SEARCH_WORKERS);
            let outcomes: Vec<Option<WorkerOutcome<T>>> = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..SEARCH_WORKERS)
                    .map(|k| {
                        let cases = share.min(config.cases.saturating_sub(share * k));
                        let config = Config { cases, ..config.clone() };
                        let (strategy, case) = (&strategy, &case);
                        scope.spawn(move || {
                            if cases == 0 {
                                return None;
                            }
                            let mut runner = TestRunner::new_with_rng(config, seed_rng(cx.seed, u64::from(k)));
                            match runner.run(strategy, |steps| {
                                cx.log.clear();
                                case(&steps).map_err(TestCaseError::fail)
                            }) {
                                Ok(()) => None,
                                Err(TestError::Fail(reason, steps)) => Some(Ok((reason.to_string(), steps))),
                                Err(TestError::Abort(why)) => Some(Err(format!("property aborted: {why}"))),
                            }
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().unwrap_or_else(|_| Some(Err("a search worker panicked".into()))))
                    .collect()
            });
            match outcomes.into_iter().flatten().next() {
                None => Ok(()),
                Some(Err(why)) => Err(why),
                Some(Ok((reason, steps))) => {
                    *cx.found.lock().unwrap_or_else(|e| e.into_inner()) = serde_json::to_value(&steps).ok();
                    // Once more, so the log holds the minimal sequence's exchanges.
                    cx.log.clear();
                    let again = match case(&steps) {
                        Ok(()) => "\n(this sequence passed when run once more: the failure is intermittent)",
                        Err(_) => "",
                    };
                    Err(format!("{header}\n{}\n{reason}{again}", show(&steps)))
                }
            }
        }
    }
}

fn run_membership_case(cx: &PropertyCx<'_>, cap: usize, pool: &mut Pool, ops: &[Op], case: u64) -> Result<(), String> {
    let control = cx.control();
    let (sender, ids, received) = (&pool.sender, &pool.ids, &mut pool.received);
    let name = format!("prop-{}-{case}", cx.run_id);
    let mut members: Option<BTreeSet<usize>> = None;
    let mut key: Option<String> = None;
    let names = |set: &[usize]| -> Value { json!(set.iter().map(|i| ids[*i].clone()).collect::<Vec<_>>()) };
    let send = |k: &str, step: usize| {
        let body = json!({"to": k, "data": {"step": step}});
        let req = HttpRequest::new("POST", "/fcm/send")
            .with_header("authorization", &format!("key={}", sender.key))
            .with_json(&body);
        exchange(cx, req)
    };
    for (n, op) in ops.iter().enumerate() {
        let step = n + 1;
        let before = members.as_ref().map_or(0, BTreeSet::len);
        let what = match op {
            Op::Create(set) => format!("create the group with {} ids", set.len()),
            Op::Add(set) => format!("add {} ids to the group of {before}", set.len()),
            Op::Remove(set) => format!("remove {} ids from the group of {before}", set.len()),
            Op::Send => format!("send to the group of {before}"),
        };
        let fail = |why: String, req: &HttpRequest, resp: &HttpResponse| {
            Err(format!("step {step} ({op:?}: {what}): {why}\n{}", super::scenario::describe(req, resp)))
        };
        let expected_change = match op {
            // Names are another rule's (group.name.unique): only the first create is sent.
            Op::Create(_) if members.is_some() => continue,
            Op::Create(set) => {
                let body =
                    json!({"operation": "create", "notification_key_name": name, "registration_ids": names(set)});
                let (req, resp) = exchange(cx, server_request("POST", "/gcm/notification", sender).with_json(&body))?;
                if set.len() <= cap {
                    let k = resp.body_json().and_then(|b| b["notification_key"].as_str().map(str::to_string));
                    match (resp.status, k) {
                        (200, Some(k)) => {
                            key = Some(k);
                            members = Some(set.iter().copied().collect());
                        }
                        _ => {
                            let why = format!("expected 200 with a notification_key: {} ≤ {cap} members", set.len());
                            return fail(why, &req, &resp);
                        }
                    }
                } else if !(400..500).contains(&resp.status) {
                    let why = format!("expected a 4xx refusal: {} > {cap} members", set.len());
                    return fail(why, &req, &resp);
                }
                (req, resp)
            }
            Op::Add(set) | Op::Remove(set) => {
                let (Some(k), Some(current)) = (&key, &members) else { continue };
                let adding = matches!(op, Op::Add(_));
                let next: BTreeSet<usize> = if adding {
                    current.union(&set.iter().copied().collect()).copied().collect()
                } else {
                    current.iter().filter(|m| !set.contains(m)).copied().collect()
                };
                if next.is_empty() {
                    // What an emptied group becomes is a separate (SHOULD) rule; stay clear of it.
                    continue;
                }
                let operation = if adding { "add" } else { "remove" };
                let body = json!({"operation": operation, "notification_key_name": name, "notification_key": k, "registration_ids": names(set)});
                let (req, resp) = exchange(cx, server_request("POST", "/gcm/notification", sender).with_json(&body))?;
                if next.len() <= cap {
                    if resp.status != 200 {
                        let why = format!("expected 200: the group would have {} ≤ {cap} members", next.len());
                        return fail(why, &req, &resp);
                    }
                    members = Some(next);
                } else if !(400..500).contains(&resp.status) {
                    let why = format!("expected a 4xx refusal: the group would have {} > {cap} members", next.len());
                    return fail(why, &req, &resp);
                }
                (req, resp)
            }
            Op::Send => {
                let (Some(k), Some(current)) = (&key, &members) else { continue };
                let (req, resp) = send(k, step)?;
                let b = resp.body_json().unwrap_or(Value::Null);
                if resp.status != 200 || b["success"] != json!(current.len()) || b["failure"] != json!(0) {
                    let why = format!(
                        "expected 200 with success {0} and failure 0: the group has {0} members",
                        current.len()
                    );
                    return fail(why, &req, &resp);
                }
                for (i, id) in ids.iter().enumerate() {
                    let (ireq, iresp) = control.inbox(id).map_err(|e| e.to_string())?;
                    let got = iresp.body_json().and_then(|b| b["messages"].as_array().map(Vec::len));
                    let want = received[i] + usize::from(current.contains(&i));
                    if got != Some(want) {
                        let who = if current.contains(&i) { "a member" } else { "not a member" };
                        let why = format!("instance {i} ({who}) should have received {want} messages, found {got:?}");
                        return fail(why, &ireq, &iresp);
                    }
                    received[i] = want;
                }
                continue;
            }
        };
        // After every operation, the group as the server has it: what a refused one left
        // half applied shows here, at its own step.
        let (Some(k), Some(current)) = (&key, &members) else { continue };
        let (req, resp) = send(k, step)?;
        let b = resp.body_json().unwrap_or(Value::Null);
        if resp.status != 200 || b["success"] != json!(current.len()) || b["failure"] != json!(0) {
            let (oreq, oresp) = &expected_change;
            let why = format!(
                "afterwards a send to the group reached success {} (failure {}), expected {}: the group should have {} members\n  the operation: {} {} -> {}",
                b["success"],
                b["failure"],
                current.len(),
                current.len(),
                oreq.method,
                oreq.path,
                oresp.status
            );
            return fail(why, &req, &resp);
        }
        current.iter().for_each(|i| received[*i] += 1);
    }
    Ok(())
}

// ---- notification-keys-unguessable ----------------------------------------------------

fn keys_unguessable(cx: &PropertyCx<'_>) -> Result<(), String> {
    let samples = cx.param("samples")?.max(2) as usize;
    let min_bits = cx.param("min_bits")? as f64;
    let control = cx.control();
    let sender = control.new_sender().map_err(|e| e.to_string())?;
    let mut keys = Vec::new();
    for i in 0..samples {
        let id = control.register(std::slice::from_ref(&sender.id), None, None, None).map_err(|e| e.to_string())?;
        let body = json!({"operation": "create", "notification_key_name": format!("keys-{}-{i}", cx.run_id), "registration_ids": [id]});
        let (req, resp) = exchange(cx, server_request("POST", "/gcm/notification", &sender).with_json(&body))?;
        match resp.body_json().and_then(|b| b["notification_key"].as_str().map(str::to_string)) {
            Some(k) if resp.status == 200 => keys.push(k),
            _ => return Err(format!("creating sample group {i} failed\n{}", super::scenario::describe(&req, &resp))),
        }
    }
    let distinct: BTreeSet<&String> = keys.iter().collect();
    if distinct.len() != keys.len() {
        return Err(format!("{} groups got only {} distinct notification keys", keys.len(), distinct.len()));
    }
    let bits = estimated_bits(&keys);
    if bits < min_bits {
        return Err(format!(
            "notification keys vary too little to hold {min_bits} random bits (estimated at most {bits:.0} bits from {samples} samples), e.g.\n  {}\n  {}",
            keys[0],
            keys[keys.len() - 1]
        ));
    }
    Ok(())
}

/// An upper bound on the random bits in a set of keys: positions that vary across samples,
/// times the bits per character of the alphabet seen there. Keys from a counter vary in a
/// few positions only; random keys vary in all of them.
pub fn estimated_bits(keys: &[String]) -> f64 {
    let chars: Vec<Vec<char>> = keys.iter().map(|k| k.chars().collect()).collect();
    let len = chars.iter().map(Vec::len).min().unwrap_or(0);
    let mut varying = 0usize;
    let mut alphabet = BTreeSet::new();
    for pos in 0..len {
        let at: BTreeSet<char> = chars.iter().map(|c| c[pos]).collect();
        if at.len() > 1 {
            varying += 1;
            alphabet.extend(at);
        }
    }
    if alphabet.len() < 2 {
        return 0.0;
    }
    varying as f64 * (alphabet.len() as f64).log2()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_carry_few_bits_and_random_keys_many() {
        let counter: Vec<String> = (0..16).map(|i| format!("APA91b{i:043}")).collect();
        assert!(estimated_bits(&counter) < 16.0);
        let hexish: Vec<String> = (0u64..16)
            .map(|i| {
                format!(
                    "{:016x}{:016x}",
                    i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    i.wrapping_mul(0xC2B2_AE3D_27D4_EB4F) ^ 0xdead_beef
                )
            })
            .collect();
        assert!(estimated_bits(&hexish) >= 120.0, "{}", estimated_bits(&hexish));
    }
}

// ---- message-lifetime -----------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Ttl {
    Default,
    /// Now or never; generated only without a collapse key, where the documents are clear.
    Zero,
    Short,
    Long,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Device {
    Awake,
    Idle,
    Offline,
}

impl Device {
    fn name(self) -> &'static str {
        match self {
            Device::Awake => "awake",
            Device::Idle => "idle",
            Device::Offline => "offline",
        }
    }
}

/// The data payload: a few bytes, exactly the limit, or one byte over (to be refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Size {
    Small,
    AtLimit,
    OverLimit,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum LifeOp {
    /// `key`: one of three collapse keys, or none. `old_id`: address the first registration
    /// id even after re-registration (a canonical id is then expected).
    Send {
        key: Option<u8>,
        ttl: Ttl,
        delay_while_idle: bool,
        old_id: bool,
        size: Size,
    },
    Go(Device),
    Advance(u64),
    Reregister,
}

fn life_op() -> impl Strategy<Value = LifeOp> {
    let ttl = prop_oneof![Just(Ttl::Default), Just(Ttl::Zero), Just(Ttl::Short), Just(Ttl::Long)];
    let size = prop_oneof![8 => Just(Size::Small), 1 => Just(Size::AtLimit), 1 => Just(Size::OverLimit)];
    let send = (proptest::option::of(0u8..3), ttl, any::<bool>(), any::<bool>(), size).prop_map(
        |(key, ttl, delay_while_idle, old_id, size)| {
            let ttl = if key.is_some() && ttl == Ttl::Zero { Ttl::Default } else { ttl };
            LifeOp::Send { key, ttl, delay_while_idle, old_id, size }
        },
    );
    prop_oneof![
        6 => send,
        3 => prop_oneof![Just(Device::Awake), Just(Device::Idle), Just(Device::Offline)].prop_map(LifeOp::Go),
        2 => proptest::sample::select(vec![30u64, 61, 600, 4000]).prop_map(LifeOp::Advance),
        1 => Just(LifeOp::Reregister),
    ]
}

fn message_lifetime(cx: &PropertyCx<'_>) -> Result<(), String> {
    let max_ops = cx.param("max_ops")?.max(1) as usize;
    let header = format!("minimal failing sequence (seed {}), then the device wakes and time passes:", cx.seed);
    run_sequences(cx, vec(life_op(), 1..=max_ops), &header, |ops| run_lifetime_case(cx, ops))
}

/// What the harness knows about one sent message.
struct Sent {
    /// Refused (over the payload limit): must never arrive, need not.
    refused: bool,
    key: Option<u8>,
    /// Seconds; 0 for now-or-never.
    ttl: u64,
    sent_at: u64,
    /// Sent with delay_while_idle to an idle device and not yet released by a wake-up or a
    /// reconnection: must not be delivered.
    held: bool,
    /// The step that sent it (a time_to_live 0 message may appear only then).
    step: usize,
}

fn run_lifetime_case(cx: &PropertyCx<'_>, ops: &[LifeOp]) -> Result<(), String> {
    let control = cx.control();
    let short = cx.param("short_ttl_seconds")?;
    let long = cx.param("long_ttl_seconds")?;
    let grant = cx.param("throttle_grant_interval_seconds")?;
    let max_payload = cx.param("max_payload_bytes")? as usize;
    let sender = control.new_sender().map_err(|e| e.to_string())?;
    let first = control.register(std::slice::from_ref(&sender.id), None, None, None).map_err(|e| e.to_string())?;
    let mut ids = vec![first];
    let mut device = Device::Awake;
    let mut now = 0u64;
    let mut sent: Vec<Sent> = Vec::new();
    let mut seen: BTreeSet<usize> = BTreeSet::new();
    let mut inbox_len = 0usize;

    // The device wakes and enough time passes for every throttled message to get a token.
    let finale = [LifeOp::Go(Device::Awake), LifeOp::Advance(grant.saturating_mul(ops.len() as u64 + 1))];
    for (n, op) in ops.iter().chain(finale.iter()).enumerate() {
        let step = n + 1;
        let fail = |why: String| Err(format!("step {step} ({op:?}): {why}"));
        let (before, device_before) = (now, device);
        match op {
            LifeOp::Send { key, ttl, delay_while_idle, old_id, size } => {
                let current = ids.last().expect("one id at least").clone();
                let target = if *old_id { ids[0].clone() } else { current.clone() };
                let ttl_seconds = match ttl {
                    Ttl::Default => None,
                    Ttl::Zero => Some(0),
                    Ttl::Short => Some(short),
                    Ttl::Long => Some(long),
                };
                // The payload counts data keys and values: "tag", "m<n>", "pad" and the padding.
                let tag = format!("m{}", sent.len());
                let pad = match size {
                    Size::Small => 0,
                    Size::AtLimit | Size::OverLimit => {
                        max_payload.saturating_sub("tag".len() + tag.len() + "pad".len())
                            + usize::from(*size == Size::OverLimit)
                    }
                };
                let mut body = json!({"to": target, "delay_while_idle": delay_while_idle, "data": {"tag": tag, "pad": "x".repeat(pad)}});
                if let Some(k) = key {
                    body["collapse_key"] = json!(format!("key-{k}"));
                }
                if let Some(t) = ttl_seconds {
                    body["time_to_live"] = json!(t);
                }
                let req = HttpRequest::new("POST", "/fcm/send")
                    .with_header("authorization", &format!("key={}", sender.key))
                    .with_json(&body);
                let (req, resp) = exchange(cx, req)?;
                let b = resp.body_json().unwrap_or(Value::Null);
                let result = &b["results"][0];
                let refused = *size == Size::OverLimit;
                if refused && !(resp.status == 200 && b["failure"] == json!(1) && result["error"] == "MessageTooBig") {
                    return fail(format!(
                        "expected 200 with the error MessageTooBig: the data is one byte over {max_payload}\n{}",
                        super::scenario::describe(&req, &resp)
                    ));
                }
                if !refused && (resp.status != 200 || b["success"] != json!(1) || !result["message_id"].is_string()) {
                    return fail(format!(
                        "expected 200 with success 1 and a message_id\n{}",
                        super::scenario::describe(&req, &resp)
                    ));
                }
                let canonical = result.get("registration_id").and_then(Value::as_str);
                let expected = (target != current && !refused).then_some(current.as_str());
                if canonical != expected {
                    return fail(format!(
                        "expected registration_id {expected:?} (the canonical id), got {canonical:?}\n{}",
                        super::scenario::describe(&req, &resp)
                    ));
                }
                sent.push(Sent {
                    refused,
                    key: *key,
                    ttl: ttl_seconds.unwrap_or(u64::MAX),
                    sent_at: now,
                    held: *delay_while_idle && device == Device::Idle,
                    step,
                });
            }
            LifeOp::Go(state) => {
                control.set_connectivity(ids.last().expect("one id"), state.name()).map_err(|e| e.to_string())?;
                let reconnect = device == Device::Offline && *state != Device::Offline;
                if *state == Device::Awake || reconnect {
                    sent.iter_mut().for_each(|m| m.held = false);
                }
                device = *state;
            }
            LifeOp::Advance(seconds) => {
                control.advance_clock(&sender.id, *seconds).map_err(|e| e.to_string())?;
                now += seconds;
            }
            LifeOp::Reregister => {
                let new = control.reregister(ids.last().expect("one id")).map_err(|e| e.to_string())?;
                ids.push(new);
            }
        }

        let (ireq, iresp) = control.inbox(ids.last().expect("one id")).map_err(|e| e.to_string())?;
        let messages = iresp.body_json().and_then(|b| b["messages"].as_array().cloned()).ok_or_else(|| {
            format!(
                "step {step}: the inbox is not {{\"messages\": [...]}}\n{}",
                super::scenario::describe(&ireq, &iresp)
            )
        })?;
        if messages.len() < inbox_len {
            return fail(format!("the inbox shrank from {inbox_len} to {} messages", messages.len()));
        }
        let mut keys_now: Vec<u8> = Vec::new();
        for m in &messages[inbox_len..] {
            if m.get("message_type").is_some() {
                return fail(format!("unexpected {m}: far fewer messages than the storage limit were sent"));
            }
            let tag = m["data"]["tag"].as_str().and_then(|t| t.strip_prefix('m')).and_then(|t| t.parse::<usize>().ok());
            let Some(index) = tag.filter(|i| *i < sent.len()) else {
                return fail(format!("delivered a message that was never sent: {m}"));
            };
            if !seen.insert(index) {
                return fail(format!("message m{index} delivered twice"));
            }
            let msg = &sent[index];
            if msg.refused {
                return fail(format!("m{index} was refused as too big, yet delivered"));
            }
            if msg.ttl == 0 && msg.step != step {
                return fail(format!(
                    "m{index} (time_to_live 0, sent at step {}) delivered later, at step {step}",
                    msg.step
                ));
            }
            if msg.ttl != 0 && msg.ttl != u64::MAX && msg.sent_at + msg.ttl <= before {
                return fail(format!(
                    "m{index} delivered after its time to live ({} s, sent at t={} s, now t={before} s)",
                    msg.ttl, msg.sent_at
                ));
            }
            if msg.held {
                return fail(format!("m{index} (delay_while_idle) delivered while the device is still idle"));
            }
            if device_before == Device::Offline && device == Device::Offline {
                return fail(format!("m{index} delivered to an offline device"));
            }
            if let Some(k) = msg.key {
                if keys_now.contains(&k) {
                    return fail(format!(
                        "two messages of collapse key key-{k} delivered at once: a stored one should have been replaced"
                    ));
                }
                keys_now.push(k);
            }
        }
        inbox_len = messages.len();
    }

    // Liveness: what has not expired must have arrived; of a collapse key, the newest.
    for (index, msg) in sent.iter().enumerate() {
        let expired = msg.ttl == 0 || (msg.ttl != u64::MAX && msg.sent_at + msg.ttl <= now);
        let superseded =
            msg.key.is_some() && sent[index + 1..].iter().any(|later| later.key == msg.key && !later.refused);
        if !expired && !superseded && !msg.refused && !seen.contains(&index) {
            return Err(format!(
                "m{index} (sent at step {}, time to live {}) was never delivered, though it has not expired",
                msg.step,
                if msg.ttl == u64::MAX { "default".to_string() } else { format!("{} s", msg.ttl) }
            ));
        }
    }
    Ok(())
}

// ---- ccs-upstream ---------------------------------------------------------------------

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum CcsOp {
    /// The device sends this many upstream messages to the app server.
    Upstream(usize),
    /// The app server opens one more connection (at most three are open).
    Connect,
    /// Closes the n-th open connection, without acking what it holds.
    Close(usize),
    /// Reads what the n-th open connection has been sent (up to a sync ping's answer).
    Sync(usize),
    /// Acks everything the n-th open connection holds.
    AckAll(usize),
    /// Acks the n-th connection's oldest message on another connection: must be refused.
    AckElsewhere(usize),
}

fn ccs_op() -> impl Strategy<Value = CcsOp> {
    prop_oneof![
        3 => prop_oneof![4 => 1usize..4, 1 => 40usize..70].prop_map(CcsOp::Upstream),
        2 => Just(CcsOp::Connect),
        1 => (0usize..3).prop_map(CcsOp::Close),
        4 => (0usize..3).prop_map(CcsOp::Sync),
        2 => (0usize..3).prop_map(CcsOp::AckAll),
        1 => (0usize..3).prop_map(CcsOp::AckElsewhere),
    ]
}

fn ccs_upstream(cx: &PropertyCx<'_>) -> Result<(), String> {
    let max_ops = cx.param("max_ops")?.max(1) as usize;
    let header =
        format!("minimal failing sequence (seed {}), then one connection drains and acks everything:", cx.seed);
    run_sequences(cx, vec(ccs_op(), 1..=max_ops), &header, |ops| run_ccs_case(cx, ops))
}

/// An app-server connection as the harness tracks it.
struct Conn {
    client: crate::target::xmpp::XmppClient,
    /// Received here and not acked, oldest first.
    unacked: Vec<String>,
    pings: u64,
}

fn run_ccs_case(cx: &PropertyCx<'_>, ops: &[CcsOp]) -> Result<(), String> {
    use crate::target::xmpp::XmppClient;
    let control = cx.control();
    let max_pending = cx.param("max_pending_per_connection")? as usize;
    let sender = control.new_sender().map_err(|e| e.to_string())?;
    let phone = control.register(std::slice::from_ref(&sender.id), None, None, None).map_err(|e| e.to_string())?;
    let to_app_server = format!("{}@{}", sender.id, crate::xmpp::DOMAIN);
    let connect = || -> Result<Conn, String> {
        let (client, auth) = XmppClient::connect_to(cx.target, &sender.id, &sender.key, XmppClient::DEFAULT_TIMEOUT)?;
        Ok(Conn { client: client.ok_or_else(|| format!("login refused: {auth:?}"))?, unacked: Vec::new(), pings: 0 })
    };
    let mut conns: Vec<Conn> = Vec::new();
    let mut generated: BTreeSet<String> = BTreeSet::new();
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut received: BTreeSet<String> = BTreeSet::new();

    // Reads what connection `i` was sent before a ping's answer, checking each message.
    let sync = |conns: &mut Vec<Conn>,
                i: usize,
                acked: &BTreeSet<String>,
                received: &mut BTreeSet<String>,
                generated: &BTreeSet<String>|
     -> Result<Vec<Value>, String> {
        let c = &mut conns[i];
        c.pings += 1;
        let ping = format!("ping-{}", c.pings);
        c.client.send_gcm(&ping, &json!({"to": "not-a-registration-id", "message_id": ping, "data": {}}))?;
        let mut others = Vec::new();
        loop {
            let m = c.client.next_as_json()?;
            if m["message_id"] == ping.as_str() {
                break;
            }
            if m["message_type"] == "nack" {
                others.push(m);
                continue;
            }
            let id = m["message_id"].as_str().unwrap_or_default().to_string();
            if !generated.contains(&id) {
                return Err(format!("connection {i} got a message that was never sent: {m}"));
            }
            if acked.contains(&id) {
                return Err(format!("{id} sent again after its ack was taken"));
            }
            received.insert(id.clone());
            c.unacked.push(id);
        }
        let id_sets: Vec<BTreeSet<&String>> = conns.iter().map(|c| c.unacked.iter().collect()).collect();
        // How many a connection may hold is another rule's (xmpp.upstream.flow-control).
        for (a, set) in id_sets.iter().enumerate() {
            for (b, other) in id_sets.iter().enumerate().skip(a + 1) {
                if let Some(both) = set.intersection(other).next() {
                    return Err(format!("{both} is unacknowledged on connections {a} and {b} at once"));
                }
            }
        }
        Ok(others)
    };

    for (n, op) in ops.iter().enumerate() {
        let at = |why: String| format!("step {} ({op:?}): {why}", n + 1);
        let fail = |why: String| Err(at(why));
        let pick = |k: &usize, conns: &Vec<Conn>| (!conns.is_empty()).then(|| k % conns.len());
        match op {
            CcsOp::Upstream(count) => {
                for _ in 0..*count {
                    let id = format!("up-{}", generated.len());
                    let body = json!({"to": to_app_server, "message_id": id, "data": {"n": id}});
                    let req = HttpRequest::new(
                        "POST",
                        &format!("{}instances/{phone}/upstream", crate::reference::control::PREFIX),
                    )
                    .with_json(&body);
                    let (req, resp) = exchange(cx, req)?;
                    if !(200..300).contains(&resp.status) {
                        return fail(format!(
                            "the control API refused the upstream message\n{}",
                            super::scenario::describe(&req, &resp)
                        ));
                    }
                    generated.insert(id);
                }
            }
            CcsOp::Connect if conns.len() < 3 => conns.push(connect()?),
            CcsOp::Connect => {}
            CcsOp::Close(k) => {
                if let Some(i) = pick(k, &conns) {
                    conns.remove(i).client.close();
                }
            }
            CcsOp::Sync(k) => {
                if let Some(i) = pick(k, &conns) {
                    sync(&mut conns, i, &acked, &mut received, &generated).map_err(at)?;
                }
            }
            CcsOp::AckAll(k) => {
                if let Some(i) = pick(k, &conns) {
                    for id in std::mem::take(&mut conns[i].unacked) {
                        conns[i]
                            .client
                            .send_gcm("a", &json!({"to": phone, "message_id": id, "message_type": "ack"}))?;
                        acked.insert(id);
                    }
                }
            }
            CcsOp::AckElsewhere(k) => {
                let Some(i) = pick(k, &conns) else { continue };
                if conns.len() < 2 || conns[i].unacked.is_empty() {
                    continue;
                }
                let j = (i + 1) % conns.len();
                let id = conns[i].unacked[0].clone();
                conns[j].client.send_gcm("w", &json!({"to": phone, "message_id": id, "message_type": "ack"}))?;
                let nacks = sync(&mut conns, j, &acked, &mut received, &generated).map_err(at)?;
                // BAD_ACK fits; the reference ties no code to a misplaced ack, so any nack does.
                if !nacks.iter().any(|m| m["message_id"] == id.as_str() && m["message_type"] == "nack") {
                    return fail(format!(
                        "an ack for {id} on connection {j} (it was sent on {i}) was not refused with a nack"
                    ));
                }
            }
        }
    }

    // Finally one connection takes and acks everything: nothing may be lost.
    for c in conns.drain(..) {
        c.client.close();
    }
    conns.push(connect()?);
    for _round in 0..generated.len() / max_pending.max(1) + 3 {
        sync(&mut conns, 0, &acked, &mut received, &generated).map_err(|e| format!("final drain: {e}"))?;
        let taken = std::mem::take(&mut conns[0].unacked);
        if taken.is_empty() && received.len() == generated.len() {
            break;
        }
        for id in taken {
            conns[0].client.send_gcm("a", &json!({"to": phone, "message_id": id, "message_type": "ack"}))?;
            acked.insert(id);
        }
    }
    let lost: Vec<&String> = generated.difference(&received).collect();
    if !lost.is_empty() {
        return Err(format!(
            "{} upstream message(s) never reached the app server: {:?}",
            lost.len(),
            lost.iter().take(5).collect::<Vec<_>>()
        ));
    }
    Ok(())
}
