//! `group-membership`: random create/add/remove/send sequences on one group against a model
//! of its members, the cap included.
//!
//! Its sends have a time to live of 0: never throttled (seed 002), so each arrives at once
//! whatever bucket the server keeps. Where the documents say nothing, the model takes the
//! server's answer the first time and holds it to it: an add that lists a member again, or a
//! remove that lists a non-member, may be refused (changing nothing) or taken (the union, the
//! difference), but the same way every time.

use crate::harness::expect::same_json;
use std::collections::BTreeSet;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::subsequence;
use serde_json::{Value, json};

use super::{PropertyCx, exchange, run_sequences, server_request};
use crate::wire::{HttpRequest, HttpResponse};

/// One operation of a generated sequence. Member lists are indices into the case's pool of
/// registered instances.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Op {
    Create(Vec<usize>),
    Add(Vec<usize>),
    Remove(Vec<usize>),
    Send,
}

pub(super) fn group_membership(cx: &PropertyCx<'_>) -> Result<(), String> {
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
    sender: crate::driver::Sender,
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

fn run_membership_case(cx: &PropertyCx<'_>, cap: usize, pool: &mut Pool, ops: &[Op], case: u64) -> Result<(), String> {
    let control = cx.control();
    let (sender, ids, received) = (&pool.sender, &pool.ids, &mut pool.received);
    let name = format!("prop-{}-{case}", cx.run_id);
    let mut members: Option<BTreeSet<usize>> = None;
    let mut key: Option<String> = None;
    let names = |set: &[usize]| -> Value { json!(set.iter().map(|i| ids[*i].clone()).collect::<Vec<_>>()) };
    // How the server answers what the documents leave open, once it has shown it.
    let mut readds: Option<bool> = None;
    let mut removes_absent: Option<bool> = None;
    let send = |k: &str, step: usize| {
        let body = json!({"to": k, "time_to_live": 0, "data": {"step": step}});
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
            Err(format!("step {step} ({op:?}: {what}): {why}\n{}", crate::harness::expect::describe(req, resp)))
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
                // Ids the documents say nothing of here: members added again, non-members removed.
                let unsaid = if adding {
                    set.iter().any(|i| current.contains(i))
                } else {
                    set.iter().any(|i| !current.contains(i))
                };
                let mode = if adding { &mut readds } else { &mut removes_absent };
                let operation = if adding { "add" } else { "remove" };
                let body = json!({"operation": operation, "notification_key_name": name, "notification_key": k, "registration_ids": names(set)});
                let (req, resp) = exchange(cx, server_request("POST", "/gcm/notification", sender).with_json(&body))?;
                let refused = (400..500).contains(&resp.status);
                let what = if adding { "an add that lists a member again" } else { "a remove that lists a non-member" };
                let takes = match (unsaid, *mode) {
                    (false, _) => true,
                    (true, Some(m)) => m,
                    // Past the cap it is refused anyway: that shows nothing of the server's way.
                    (true, None) if next.len() > cap => true,
                    // The first such request shows the server's way; later ones must keep it.
                    (true, None) => *mode.insert(!refused),
                };
                if next.len() > cap {
                    if !refused {
                        let why =
                            format!("expected a 4xx refusal: the group would have {} > {cap} members", next.len());
                        return fail(why, &req, &resp);
                    }
                } else if takes {
                    if resp.status != 200 {
                        let why = match unsaid {
                            true => format!(
                                "expected 200, as the server took {what} before: the group would have {} ≤ {cap} members",
                                next.len()
                            ),
                            false => format!("expected 200: the group would have {} ≤ {cap} members", next.len()),
                        };
                        return fail(why, &req, &resp);
                    }
                    members = Some(next);
                } else if !refused {
                    let why = format!("expected a 4xx refusal, as the server refused {what} before");
                    return fail(why, &req, &resp);
                }
                (req, resp)
            }
            Op::Send => {
                let (Some(k), Some(current)) = (&key, &members) else { continue };
                let (req, resp) = send(k, step)?;
                let b = resp.body_json().unwrap_or(Value::Null);
                if resp.status != 200
                    || !same_json(&b["success"], &json!(current.len()))
                    || !same_json(&b["failure"], &json!(0))
                {
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
        if resp.status != 200
            || !same_json(&b["success"], &json!(current.len()))
            || !same_json(&b["failure"], &json!(0))
        {
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
