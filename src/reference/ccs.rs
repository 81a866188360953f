//! The connection server's own state (seeds 000/003 and the legacy XMPP reference): which
//! app servers are connected, what each has not acknowledged yet, and what waits for them
//! (upstream messages from devices, delivery receipts, control messages).
//!
//! Transport-free: the XMPP adapter asks for a connection's outbox and reports acks.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde_json::{Value, json};

/// A message for the app server that must be acknowledged.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ForAppServer {
    pub message_id: String,
    pub json: Value,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Connection {
    sender: String,
    draining: bool,
    /// Acked here, remembered only by the fault that forgets acks at reconnection.
    acked: Vec<ForAppServer>,
    /// Sent on this connection, not yet acknowledged, oldest first.
    unacked: Vec<ForAppServer>,
    /// Written to the socket next (acked messages and control messages alike).
    outbox: VecDeque<Value>,
}

/// Why an app server's ack was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("no message {0} awaits an ack on this connection")]
    Unknown(String),
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Ccs {
    /// Grows whenever something is queued for a connection, so the transport knows to look.
    generation: u64,
    next_id: u64,
    connections: BTreeMap<u64, Connection>,
    /// Per sender, what waits for a connection with room, in order.
    waiting: HashMap<String, VecDeque<ForAppServer>>,
}

impl Ccs {
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn connect(&mut self, sender: &str, max_unacked: usize) -> u64 {
        self.next_id += 1;
        self.connections.insert(self.next_id, Connection { sender: sender.to_string(), ..Connection::default() });
        self.dispatch(sender, max_unacked);
        self.next_id
    }

    /// The connection is gone: what it had not acknowledged is sent again, first (unless
    /// `forget`, the fault that drops it).
    pub fn disconnect(&mut self, conn: u64, max_unacked: usize, forget: bool) {
        let Some(mut c) = self.connections.remove(&conn) else { return };
        c.unacked.append(&mut c.acked);
        let queue = self.waiting.entry(c.sender.clone()).or_default();
        for m in c.unacked.into_iter().rev().filter(|_| !forget) {
            queue.push_front(m);
        }
        self.dispatch(&c.sender, max_unacked);
    }

    pub fn connections(&self) -> Vec<u64> {
        self.connections.keys().copied().collect()
    }

    /// Each connection with its sender.
    pub fn senders(&self) -> Vec<(u64, String)> {
        self.connections.iter().map(|(n, c)| (*n, c.sender.clone())).collect()
    }

    pub fn is_draining(&self, conn: u64) -> bool {
        self.connections.get(&conn).is_some_and(|c| c.draining)
    }

    /// Queues a message for the sender's app server.
    pub fn enqueue(&mut self, sender: &str, message: ForAppServer, max_unacked: usize) {
        self.waiting.entry(sender.to_string()).or_default().push_back(message);
        self.dispatch(sender, max_unacked);
    }

    /// Moves waiting messages to connections with room (not draining), oldest first.
    fn dispatch(&mut self, sender: &str, max_unacked: usize) {
        let Some(queue) = self.waiting.get_mut(sender) else { return };
        while !queue.is_empty() {
            let open = self
                .connections
                .values_mut()
                .filter(|c| c.sender == sender && !c.draining && c.unacked.len() < max_unacked)
                .min_by_key(|c| c.unacked.len());
            let Some(conn) = open else { return };
            let m = queue.pop_front().expect("not empty");
            conn.outbox.push_back(m.json.clone());
            conn.unacked.push(m);
            self.generation += 1;
        }
    }

    /// An ack counts only on the connection that received the message (unless `anywhere`,
    /// the fault that takes it on any connection of the sender).
    pub fn ack(
        &mut self,
        conn: u64,
        message_id: &str,
        max_unacked: usize,
        anywhere: bool,
        remember: bool,
    ) -> Result<(), AckError> {
        let unknown = || AckError::Unknown(message_id.to_string());
        let sender = self.connections.get(&conn).ok_or_else(unknown)?.sender.clone();
        let holder = self
            .connections
            .iter_mut()
            .filter(|(id, c)| **id == conn || (anywhere && c.sender == sender))
            .find_map(|(_, c)| c.unacked.iter().position(|m| m.message_id == message_id).map(|at| (c, at)));
        let (c, at) = holder.ok_or_else(unknown)?;
        let m = c.unacked.remove(at);
        if remember {
            c.acked.push(m);
        }
        self.dispatch(&sender, max_unacked);
        Ok(())
    }

    /// Replies and control messages go straight to one connection.
    pub fn push(&mut self, conn: u64, json: Value) {
        if let Some(c) = self.connections.get_mut(&conn) {
            c.outbox.push_back(json);
            self.generation += 1;
        }
    }

    pub fn take_outbox(&mut self, conn: u64) -> Vec<Value> {
        self.connections.get_mut(&conn).map(|c| c.outbox.drain(..).collect()).unwrap_or_default()
    }

    /// Tells every connection of the sender to drain: it takes no new messages, and the
    /// app server should open another connection.
    /// `tell` false is the fault that drains without the control message.
    pub fn drain(&mut self, sender: &str, tell: bool) -> usize {
        let mut n = 0;
        for c in self.connections.values_mut().filter(|c| c.sender == sender && !c.draining) {
            c.draining = true;
            if tell {
                c.outbox.push_back(json!({ "message_type": "control", "control_type": "CONNECTION_DRAINING" }));
            }
            n += 1;
        }
        self.generation += 1;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str) -> ForAppServer {
        ForAppServer { message_id: id.into(), json: json!({ "message_id": id }) }
    }

    #[test]
    fn flow_control_resend_and_own_connection_acks() {
        let mut ccs = Ccs::default();
        let a = ccs.connect("s", 2);
        for id in ["1", "2", "3"] {
            ccs.enqueue("s", m(id), 2);
        }
        assert_eq!(ccs.take_outbox(a).len(), 2, "at most 2 unacked");
        let b = ccs.connect("s", 2);
        assert_eq!(ccs.take_outbox(b), vec![json!({"message_id": "3"})]);
        assert_eq!(ccs.ack(b, "1", 2, false, false), Err(AckError::Unknown("1".into())), "1 was sent on a");
        ccs.disconnect(a, 2, false);
        assert_eq!(ccs.take_outbox(b), vec![json!({"message_id": "1"})], "resent, as far as b has room");
        ccs.ack(b, "3", 2, false, false).unwrap();
        assert_eq!(ccs.take_outbox(b), vec![json!({"message_id": "2"})]);
    }
}
