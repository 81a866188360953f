//! `message-lifetime`: random interleavings of sends, connectivity changes, clock advances
//! and re-registrations against every lifetime invariant at once.

use crate::harness::expect::same_json;
use std::collections::BTreeSet;

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::{PropertyCx, exchange, run_sequences};
use crate::wire::HttpRequest;

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

pub(super) fn message_lifetime(cx: &PropertyCx<'_>) -> Result<(), String> {
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
    // When the first id (the one old-id sends address) was replaced: it may stop working once
    // time has passed ("eventually the ID you're using will stop working", seed 002).
    let mut reregistered_at: Option<u64> = None;
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
                let too_big = *size == Size::OverLimit;
                // Refused, with an error in the result (MessageTooBig fits; no sentence ties it
                // to the case) or a 4xx.
                let is_refused =
                    (resp.status == 200 && same_json(&b["failure"], &json!(1)) && result["error"].is_string())
                        || resp.status / 100 == 4;
                if too_big && !is_refused {
                    // Refused with a count of the wrong type: said so, not blamed on the refusal.
                    let cause =
                        b.get("failure").and_then(|f| crate::harness::causes::wrong_type("/failure", f, &json!(1)));
                    return fail(format!(
                        "expected it refused: the data is one byte over {max_payload}{}\n{}",
                        cause.map(|c| format!(" ({c})")).unwrap_or_default(),
                        crate::harness::expect::describe(&req, &resp)
                    ));
                }
                // An old id, once time has passed since the device registered again, may no
                // longer work: refused then, the message is not sent.
                let old_and_late = target != current && reregistered_at.is_some_and(|at| now > at);
                let stopped = !too_big && old_and_late && resp.status == 200 && result["error"].is_string();
                let refused = too_big || stopped;
                if !refused
                    && (resp.status != 200 || !same_json(&b["success"], &json!(1)) || !result["message_id"].is_string())
                {
                    // What of the answer has the wrong type, in the form a run's summary counts.
                    let causes: Vec<String> = [
                        b.get("success").and_then(|v| crate::harness::causes::wrong_type("/success", v, &json!(1))),
                        result
                            .get("message_id")
                            .and_then(|v| crate::harness::causes::wrong_type("/results/0/message_id", v, &json!(""))),
                    ]
                    .into_iter()
                    .flatten()
                    .collect();
                    return fail(format!(
                        "expected 200 with success 1 and a message_id{}\n{}",
                        if causes.is_empty() { String::new() } else { format!(" ({})", causes.join("; ")) },
                        crate::harness::expect::describe(&req, &resp)
                    ));
                }
                let canonical = result.get("registration_id").and_then(Value::as_str);
                let expected = (target != current && !refused).then_some(current.as_str());
                if canonical != expected {
                    return fail(format!(
                        "expected registration_id {expected:?} (the canonical id), got {canonical:?}\n{}",
                        crate::harness::expect::describe(&req, &resp)
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
                // The same id again (seed 002: "GCM may return the same ID or a different ID").
                if ids.last() != Some(&new) {
                    ids.push(new);
                    reregistered_at.get_or_insert(now);
                }
            }
        }

        let (ireq, iresp) = control.inbox(ids.last().expect("one id")).map_err(|e| e.to_string())?;
        let messages = iresp.body_json().and_then(|b| b["messages"].as_array().cloned()).ok_or_else(|| {
            format!(
                "step {step}: the inbox is not {{\"messages\": [...]}}\n{}",
                crate::harness::expect::describe(&ireq, &iresp)
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
                return fail(format!("m{index} was refused, yet delivered"));
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
