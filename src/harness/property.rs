//! Named properties: checks over generated input, too varied to write out as scenarios.
//!
//! A spec check names one (`property = "group-membership"`) and gives its parameters. Each
//! property reaches the server only through the [`Target`] and its control API, so it runs
//! against every target alike.

use std::collections::{BTreeMap, BTreeSet};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::subsequence;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use serde_json::{Value, json};

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
}

impl PropertyCx<'_> {
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
    pub run: fn(&PropertyCx<'_>) -> Result<(), String>,
}

pub const PROPERTIES: &[PropertyDef] = &[
    PropertyDef {
        name: "group-membership",
        summary: "random create/add/remove/send sequences on one group agree with a model of its members, cap included",
        needs: &["instances", "inbox"],
        params: &["max_members", "cases", "max_ops", "spare_instances"],
        run: group_membership,
    },
    PropertyDef {
        name: "notification-keys-unguessable",
        summary: "notification keys are distinct and vary in enough positions to carry min_bits random bits",
        needs: &["instances"],
        params: &["samples", "min_bits"],
        run: keys_unguessable,
    },
];

pub fn find(name: &str) -> Option<&'static PropertyDef> {
    PROPERTIES.iter().find(|p| p.name == name)
}

fn seed_rng(seed: u64) -> TestRng {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

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
#[derive(Debug, Clone)]
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
    let config = Config { cases: cx.cases()?, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, seed_rng(cx.seed));
    let counter = std::sync::atomic::AtomicU64::new(0);
    let result = runner.run(&vec(op, 1..=max_ops), |ops| {
        let case = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        run_membership_case(cx, cap, pool, &ops, case).map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => Ok(()),
        Err(TestError::Fail(reason, ops)) => {
            let steps: Vec<String> = ops.iter().enumerate().map(|(i, op)| format!("  {}. {op:?}", i + 1)).collect();
            Err(format!(
                "minimal failing sequence (seed {}, pool of {pool} instances, cap {cap}):\n{}\n{reason}",
                cx.seed,
                steps.join("\n")
            ))
        }
        Err(TestError::Abort(why)) => Err(format!("property aborted: {why}")),
    }
}

fn run_membership_case(cx: &PropertyCx<'_>, cap: usize, pool: usize, ops: &[Op], case: u64) -> Result<(), String> {
    let control = cx.control();
    let sender = control.new_sender().map_err(|e| e.to_string())?;
    let ids: Vec<String> = (0..pool)
        .map(|_| control.register(std::slice::from_ref(&sender.id), None, None, None))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let name = format!("prop-{}-{case}", cx.run_id);
    let mut members: Option<BTreeSet<usize>> = None;
    let mut key: Option<String> = None;
    let mut received = vec![0usize; pool];
    let names = |set: &[usize]| -> Value { json!(set.iter().map(|i| ids[*i].clone()).collect::<Vec<_>>()) };
    for (n, op) in ops.iter().enumerate() {
        let step = n + 1;
        let fail = |why: String, req: &HttpRequest, resp: &HttpResponse| {
            Err(format!("step {step} ({op:?}): {why}\n{}", super::scenario::describe(req, resp)))
        };
        match op {
            Op::Create(set) => {
                let body =
                    json!({"operation": "create", "notification_key_name": name, "registration_ids": names(set)});
                let (req, resp) = exchange(cx, server_request("POST", "/gcm/notification", &sender).with_json(&body))?;
                let ok = members.is_none() && set.len() <= cap;
                if ok {
                    let k = resp.body_json().and_then(|b| b["notification_key"].as_str().map(str::to_string));
                    match (resp.status, k) {
                        (200, Some(k)) => {
                            key = Some(k);
                            members = Some(set.iter().copied().collect());
                        }
                        _ => {
                            return fail(
                                format!(
                                    "expected 200 with a notification_key (a new group of {} ≤ {cap} members)",
                                    set.len()
                                ),
                                &req,
                                &resp,
                            );
                        }
                    }
                } else if !(400..500).contains(&resp.status) {
                    let why = if members.is_some() { "the name is taken" } else { "that is over the cap" };
                    return fail(format!("expected a 4xx refusal: {why}"), &req, &resp);
                }
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
                let (req, resp) = exchange(cx, server_request("POST", "/gcm/notification", &sender).with_json(&body))?;
                if next.len() <= cap {
                    if resp.status != 200 {
                        return fail(
                            format!("expected 200: the group would have {} ≤ {cap} members", next.len()),
                            &req,
                            &resp,
                        );
                    }
                    members = Some(next);
                } else if !(400..500).contains(&resp.status) {
                    return fail(
                        format!("expected a 4xx refusal: the group would have {} > {cap} members", next.len()),
                        &req,
                        &resp,
                    );
                }
            }
            Op::Send => {
                let (Some(k), Some(current)) = (&key, &members) else { continue };
                let body = json!({"to": k, "data": {"step": step}});
                let req = HttpRequest::new("POST", "/fcm/send")
                    .with_header("authorization", &format!("key={}", sender.key))
                    .with_json(&body);
                let (req, resp) = exchange(cx, req)?;
                let b = resp.body_json().unwrap_or(Value::Null);
                if resp.status != 200 || b["success"] != json!(current.len()) || b["failure"] != json!(0) {
                    return fail(
                        format!(
                            "expected 200 with success {} and failure 0: the group has {} members",
                            current.len(),
                            current.len()
                        ),
                        &req,
                        &resp,
                    );
                }
                for (i, id) in ids.iter().enumerate() {
                    let (ireq, iresp) = control.inbox(id).map_err(|e| e.to_string())?;
                    let got = iresp.body_json().and_then(|b| b["messages"].as_array().map(Vec::len));
                    let want = received[i] + usize::from(current.contains(&i));
                    if got != Some(want) {
                        let who = if current.contains(&i) { "a member" } else { "not a member" };
                        return fail(
                            format!("instance {i} ({who}) should have received {want} messages"),
                            &ireq,
                            &iresp,
                        );
                    }
                    received[i] = want;
                }
            }
        }
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
