//! `ccs-upstream`: random interleavings of upstream messages, connects, closes and acks
//! against the connection server's ack and resend rules.

use std::collections::BTreeSet;

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::json;

use super::{PropertyCx, exchange, run_sequences};
use crate::wire::HttpRequest;

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
    /// Acks the n-th connection's oldest message on another connection: it must not count.
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

pub(super) fn ccs_upstream(cx: &PropertyCx<'_>) -> Result<(), String> {
    let max_ops = cx.param("max_ops")?.max(1) as usize;
    let header =
        format!("minimal failing sequence (seed {}), then one connection drains and acks everything:", cx.seed);
    run_sequences(cx, vec(ccs_op(), 1..=max_ops), &header, |ops| run_ccs_case(cx, ops))
}

/// An app-server connection as the harness tracks it.
struct Conn {
    client: crate::driver::xmpp::XmppClient,
    /// Received here and not acked, oldest first.
    unacked: Vec<String>,
    pings: u64,
}

fn run_ccs_case(cx: &PropertyCx<'_>, ops: &[CcsOp]) -> Result<(), String> {
    use crate::driver::xmpp::XmppClient;
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
    // Left unacknowledged on a connection that closed (acked elsewhere at most): owed again.
    let mut owed: BTreeSet<String> = BTreeSet::new();

    // Reads what connection `i` was sent before a ping's answer, checking each message.
    let sync = |conns: &mut Vec<Conn>,
                i: usize,
                acked: &BTreeSet<String>,
                received: &mut BTreeSet<String>,
                owed: &mut BTreeSet<String>,
                generated: &BTreeSet<String>|
     -> Result<(), String> {
        let c = &mut conns[i];
        c.pings += 1;
        let ping = format!("ping-{}", c.pings);
        c.client.send_gcm(&ping, &json!({"to": "not-a-registration-id", "message_id": ping, "data": {}}))?;
        loop {
            let m = c.client.next_as_json()?;
            if m["message_id"] == ping.as_str() {
                break;
            }
            // A nack here answers a misplaced ack; the reference does not say whether one
            // comes (BAD_ACK fits), so it is neither required nor refused.
            if m["message_type"] == "nack" {
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
            owed.remove(&id);
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
        Ok(())
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
                            crate::harness::expect::describe(&req, &resp)
                        ));
                    }
                    generated.insert(id);
                }
            }
            CcsOp::Connect if conns.len() < 3 => conns.push(connect()?),
            CcsOp::Connect => {}
            CcsOp::Close(k) => {
                if let Some(i) = pick(k, &conns) {
                    let closed = conns.remove(i);
                    owed.extend(closed.unacked);
                    closed.client.close();
                }
            }
            CcsOp::Sync(k) => {
                if let Some(i) = pick(k, &conns) {
                    sync(&mut conns, i, &acked, &mut received, &mut owed, &generated).map_err(at)?;
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
                // It does not count: the id stays unacked on connection i, and is owed again
                // once that closes (the final drain closes every connection).
                sync(&mut conns, j, &acked, &mut received, &mut owed, &generated).map_err(at)?;
            }
        }
    }

    // Finally one connection takes and acks everything: nothing may be lost.
    for c in conns.drain(..) {
        owed.extend(c.unacked);
        c.client.close();
    }
    conns.push(connect()?);
    for _round in 0..generated.len() / max_pending.max(1) + 3 {
        sync(&mut conns, 0, &acked, &mut received, &mut owed, &generated).map_err(|e| format!("final drain: {e}"))?;
        let taken = std::mem::take(&mut conns[0].unacked);
        if taken.is_empty() && received.len() == generated.len() && owed.is_empty() {
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
    if !owed.is_empty() {
        return Err(format!(
            "{} upstream message(s) left unacknowledged on a closed connection (acked, if at all, on another) \
             were never sent again: {:?}",
            owed.len(),
            owed.iter().take(5).collect::<Vec<_>>()
        ));
    }
    Ok(())
}
