//! What a sender's journal keeps, served: what the server wrote over XMPP in the order the
//! wire carried it, stanzas cut as HTTP bodies are, and caps taken at their word.

use gcmspec::driver::xmpp::XmppClient;
use gcmspec::reference::model::SenderCredentials;
use gcmspec::reference::{Config, Reference, RunningReference};
use libtest_mimic::Trial;
use serde_json::{Value, json};

use crate::trial;

/// A served reference (keep the first value: it is the server), a sender and `devices` of its
/// devices.
async fn served(devices: usize) -> Result<(RunningReference, Reference, SenderCredentials, Vec<String>), String> {
    let server = Reference::start_with(Config::bundled()).await.map_err(|e| e.to_string())?;
    let reference = server.reference().clone();
    let (sender, phones) = reference.with_model(|m| {
        let sender = m.create_sender();
        let phones = (0..devices).map(|_| m.register_instance(vec![sender.sender_id.clone()], None)).collect();
        (sender, phones)
    });
    Ok((server, reference, sender, phones))
}

/// The sender logged in over XMPP.
fn log_in(xmpp: std::net::SocketAddr, sender: &SenderCredentials) -> Result<XmppClient, String> {
    let timeout = std::time::Duration::from_secs(5);
    let (client, auth) = XmppClient::connect(xmpp, None, &sender.sender_id, &sender.server_key, timeout)?;
    client.ok_or(format!("XMPP login refused: {auth:?}"))
}

/// The stanzas the server wrote to the app server, as its journal lists them.
fn journaled_sent(reference: &Reference, sender: &str) -> Vec<Value> {
    let entries = reference.journal(sender, None).map(|v| v.entries).unwrap_or_default();
    entries.into_iter().filter(|e| e["kind"] == "xmpp-sent").map(|e| e["stanza"].clone()).collect()
}

/// An app server sends messages asking for delivery receipts to a device that takes them at
/// once: each is acked and its receipt follows. The journal lists what the server wrote in
/// the order the app server read it, acks and receipts alike.
async fn xmpp_writes_are_journaled_in_the_wires_order() -> Result<(), String> {
    let (server, reference, sender, phones) = served(3).await?;
    let (xmpp, id) = (server.xmpp_address(), sender.sender_id.clone());
    tokio::task::spawn_blocking(move || {
        let mut client = log_in(xmpp, &sender)?;
        let mut wire = Vec::new();
        for n in 0..12 {
            let to = &phones[n % phones.len()];
            let message = json!({ "to": to, "message_id": format!("m-{n}"), "data": { "n": n },
                "delivery_receipt_requested": true });
            client.send_gcm("", &message)?;
        }
        // Twelve acks and twelve receipts, in whatever order the server chose.
        for _ in 0..24 {
            let got = client.next_as_json()?;
            if got["message_type"] == "receipt" {
                let ack = json!({ "to": got["from"], "message_id": got["message_id"], "message_type": "ack" });
                client.send_gcm("", &ack)?;
            }
            wire.push(got);
        }
        if let Some(more) = client.quiet(std::time::Duration::from_millis(100))? {
            return Err(format!("more than an ack and a receipt per message: {more}"));
        }
        client.close();
        let journaled = journaled_sent(&reference, &id);
        if journaled != wire {
            let kinds = |v: &[Value]| {
                v.iter().map(|s| format!("{} {}", s["message_type"], s["message_id"])).collect::<Vec<_>>()
            };
            return Err(format!(
                "the journal's order is not the wire's:\n wire:    {:?}\n journal: {:?}",
                kinds(&wire),
                kinds(&journaled)
            ));
        }
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// A stanza far past what a journal keeps of an HTTP body is graded whole and kept cut, as
/// the body is: it does not push the sender's earlier entries out of the journal.
async fn a_huge_stanza_is_kept_cut() -> Result<(), String> {
    let (server, reference, sender, phones) = served(1).await?;
    let (xmpp, id, phone) = (server.xmpp_address(), sender.sender_id.clone(), phones[0].clone());
    tokio::task::spawn_blocking(move || {
        let mut client = log_in(xmpp, &sender)?;
        for n in 0..5 {
            client.send_gcm("", &json!({ "to": phone, "message_id": format!("m-{n}"), "data": { "n": n } }))?;
            client.next_as_json()?;
        }
        // 600 KB of data: past the payload limit (a nack), and 37 times what is kept.
        let big = "x".repeat(600_000);
        client.send_gcm("", &json!({ "to": phone, "message_id": "big", "data": { "big": big } }))?;
        let answer = client.next_as_json()?;
        if answer["message_type"] != "nack" {
            return Err(format!("600 KB of data was not refused: {answer}"));
        }
        client.close();
        let entries = reference.journal(&id, None).map(|v| v.entries).unwrap_or_default();
        let received: Vec<&Value> = entries.iter().filter(|e| e["kind"] == "xmpp-received").collect();
        if received.len() != 6 {
            return Err(format!("the five sends before it were pushed out: {} received kept", received.len()));
        }
        let cut = received[5];
        let kept = cut["stanza"].as_str().map_or(0, str::len);
        let left = cut["stanza_cut"].as_u64().unwrap_or(0) as usize;
        if kept != gcmspec::verdicts::entry::Message::BODY_KEPT || kept + left < 600_000 {
            return Err(format!("the stanza is not kept cut at 16 KiB: {kept} bytes kept, {left} said cut"));
        }
        let v = reference.verdicts(&id).ok_or("no verdicts")?;
        match v.rule("app.send.payload-limit") {
            Some(r) if r.violations_total == 1 => Ok(()),
            _ => Err(format!("the cut stanza was not graded whole: {}", v.to_json())),
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

/// `--journal-entries 0` (`JournalCaps::entries`): the journal shows nothing, counts every
/// entry as dropped, and grades each all the same.
fn no_entries_shown_and_every_one_graded() -> Result<(), String> {
    let mut config = Config::bundled();
    config.journal_caps.entries = 0;
    let reference = Reference::new(config);
    let sender = reference.create_sender().map_err(|e| e.to_string())?;
    let key = format!("key={}", sender.server_key);
    for ttl in [60, -1, 5_000_000] {
        let req = gcmspec::wire::HttpRequest::new("POST", "/fcm/send")
            .with_header("authorization", &key)
            .with_json(&json!({ "to": "some-token", "time_to_live": ttl }));
        reference.handle(&req);
    }
    let view = reference.journal(&sender.sender_id, None).ok_or("no journal")?;
    if !view.entries.is_empty() || view.dropped != 3 || view.next != 3 {
        return Err(format!("{} entries shown, {} dropped, next {}", view.entries.len(), view.dropped, view.next));
    }
    let v = reference.verdicts(&sender.sender_id).ok_or("no verdicts")?;
    match v.rule("app.send.ttl-range") {
        Some(r) if r.violations_total == 2 => Ok(()),
        _ => Err(format!("the entries were not graded: {}", v.to_json())),
    }
}

/// A send to a notification key refused before it is read as a send (the connection is
/// draining) is journaled with what `to` named: its failure is the group's to retry
/// (`app.group.retry`), not a single device's (`app.retry.server-error`).
async fn a_key_send_refused_early_is_the_groups_to_retry() -> Result<(), String> {
    let (server, reference, sender, phones) = served(2).await?;
    let xmpp = server.xmpp_address();
    let key_auth = format!("key={}", sender.server_key);
    let call = |method: &str, path: &str, body: Value| {
        let req = gcmspec::wire::HttpRequest::new(method, path)
            .with_header("authorization", &key_auth)
            .with_header("project_id", &sender.sender_id)
            .with_json(&body);
        reference.handle(&req)
    };
    let created = call(
        "POST",
        "/gcm/notification",
        json!({ "operation": "create", "notification_key_name": "u", "registration_ids": phones }),
    );
    let key = created.body_json().and_then(|b| b["notification_key"].as_str().map(str::to_string));
    let key = key.ok_or(format!("no key: {}", String::from_utf8_lossy(&created.body)))?;
    let id = sender.sender_id.clone();
    let drain = format!("/_gcmspec/v1/senders/{id}/drain");
    let reference2 = reference.clone();
    let nack = tokio::task::spawn_blocking(move || {
        let mut client = log_in(xmpp, &sender)?;
        let drained = reference2.handle(
            &gcmspec::wire::HttpRequest::new("POST", &drain)
                .with_header("authorization", &format!("key={}", sender.server_key))
                .with_json(&json!({})),
        );
        if !(200..300).contains(&drained.status) {
            return Err(format!("drain refused: {}", drained.status));
        }
        let control = client.next_as_json()?;
        if control["control_type"] != "CONNECTION_DRAINING" {
            return Err(format!("no draining control: {control}"));
        }
        client.send_gcm("", &json!({ "to": key, "message_id": "m1", "data": { "m": "1" } }))?;
        let nack = client.next_as_json()?;
        client.close();
        Ok::<_, String>(nack)
    })
    .await
    .map_err(|e| e.to_string())??;
    if nack["error"] != "CONNECTION_DRAINING" {
        return Err(format!("the send on a draining connection: {nack}"));
    }
    let v = reference.with_model(|m| m.journals.settled_verdicts(&id)).ok_or("no verdicts")?;
    let read = (v.rule("app.group.retry").map(|r| r.outcome), v.rule("app.retry.server-error").map(|r| r.outcome));
    match read {
        (Some(gcmspec::verdicts::Outcome::Violated), Some(gcmspec::verdicts::Outcome::NotExercised)) => Ok(()),
        _ => Err(format!("a key's send nacked CONNECTION_DRAINING and never sent again: {read:?}: {}", v.to_json())),
    }
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("journals::xmpp-writes-are-journaled-in-the-wires-order", || {
            crate::block_on(xmpp_writes_are_journaled_in_the_wires_order())
        }),
        trial("journals::a-huge-stanza-is-kept-cut", || crate::block_on(a_huge_stanza_is_kept_cut())),
        trial("journals::no-entries-shown-and-every-one-graded", no_entries_shown_and_every_one_graded),
        trial("journals::a-key-send-refused-early-is-the-groups-to-retry", || {
            crate::block_on(a_key_send_refused_early_is_the_groups_to_retry())
        }),
    ]
}
