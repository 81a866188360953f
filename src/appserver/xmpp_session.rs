//! The reference client's XMPP side: one or more connections to the connection server,
//! message ids unique for the sender, at most the pending limit in flight per connection,
//! acks for what the server sends (on the connection that received it), and a new
//! connection when one is told to drain.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::driver::xmpp::XmppClient;
use crate::driver::{Sender, Target};

/// The duties a session breaks (each an [`super::AppFault`]), and a legal variant.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SessionFaults {
    pub reuses_ids: bool,
    pub no_upstream_acks: bool,
    pub no_receipt_acks: bool,
    pub acks_on_newest: bool,
    pub ignores_draining: bool,
    pub no_flow_control: bool,
    pub connection_per_burst: bool,
}

struct Conn {
    client: XmppClient,
    draining: bool,
    pending: BTreeSet<String>,
    /// Messages numbered on this connection (the fault that numbers per connection).
    counter: u64,
}

pub(crate) struct Session {
    target: Arc<dyn Target>,
    sender: Sender,
    max_pending: usize,
    faults: SessionFaults,
    /// Oldest first.
    conns: Vec<Conn>,
    prefix: String,
    next_id: u64,
    /// Answers (acks, nacks) by message id, until taken.
    answers: HashMap<String, Value>,
}

/// How long one message may wait for its answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// One look at a connection for what arrived.
const GLANCE: Duration = Duration::from_millis(15);

impl Session {
    pub fn new(target: Arc<dyn Target>, sender: Sender, max_pending: usize, faults: SessionFaults) -> Session {
        let nonce = crate::reference::journal::wall_ms() % 1_000_000;
        Session {
            target,
            sender,
            max_pending,
            faults,
            conns: Vec::new(),
            prefix: format!("m{nonce}"),
            next_id: 0,
            answers: HashMap::new(),
        }
    }

    fn open(&mut self) -> Result<usize, String> {
        let (client, auth) =
            XmppClient::connect_to(&*self.target, &self.sender.id, &self.sender.key, Duration::from_secs(3))?;
        let client = client.ok_or_else(|| format!("XMPP login refused: {auth:?}"))?;
        self.conns.push(Conn { client, draining: false, pending: BTreeSet::new(), counter: 0 });
        Ok(self.conns.len() - 1)
    }

    /// The connection new messages go on: the newest one not draining (any, when the
    /// session ignores draining), opened if there is none.
    fn active(&mut self) -> Result<usize, String> {
        let ignore = self.faults.ignores_draining;
        match self.conns.iter().rposition(|c| ignore || !c.draining) {
            Some(i) => Ok(i),
            None => self.open(),
        }
    }

    fn message_id(&mut self, conn: usize) -> String {
        if self.faults.reuses_ids {
            let c = &mut self.conns[conn];
            c.counter += 1;
            return format!("m-{}", c.counter);
        }
        self.next_id += 1;
        format!("{}-{}", self.prefix, self.next_id)
    }

    /// Writes a message on the active connection once it has room; returns its id.
    fn write(&mut self, mut message: Value) -> Result<String, String> {
        let mut conn = self.active()?;
        let until = Instant::now() + ANSWER_WITHIN;
        while !self.faults.no_flow_control && self.conns[conn].pending.len() >= self.max_pending {
            if Instant::now() > until {
                return Err(format!("{} messages still await their ack", self.max_pending));
            }
            self.pump(GLANCE)?;
            conn = self.active()?;
        }
        let id = match message["message_id"].as_str() {
            Some(id) => id.to_string(),
            None => self.message_id(conn),
        };
        message["message_id"] = json!(id);
        let c = &mut self.conns[conn];
        c.client.send_gcm(&id, &message)?;
        c.pending.insert(id.clone());
        Ok(id)
    }

    /// Sends one message and waits for its answer (handling what else arrives meanwhile).
    pub fn send(&mut self, message: Value) -> Result<Value, String> {
        let id = self.write(message)?;
        self.await_answers(std::slice::from_ref(&id)).map(|mut a| a.remove(0))
    }

    /// Sends the messages as fast as flow control lets it, then waits for every answer.
    pub fn burst(&mut self, messages: Vec<Value>) -> Result<Vec<Value>, String> {
        if self.faults.connection_per_burst {
            for c in &mut self.conns {
                c.draining = true;
            }
            self.open()?;
        }
        let mut ids = Vec::new();
        for m in messages {
            ids.push(self.write(m)?);
        }
        self.await_answers(&ids)
    }

    fn await_answers(&mut self, ids: &[String]) -> Result<Vec<Value>, String> {
        let until = Instant::now() + ANSWER_WITHIN;
        while ids.iter().any(|id| !self.answers.contains_key(id)) {
            if Instant::now() > until {
                return Err(format!("no answer within {ANSWER_WITHIN:?}"));
            }
            self.pump(GLANCE)?;
        }
        Ok(ids.iter().filter_map(|id| self.answers.remove(id)).collect())
    }

    /// Keeps `connections` connections open for `d`, handling what arrives.
    pub fn listen(&mut self, d: Duration, connections: usize) -> Result<(), String> {
        while self.conns.iter().filter(|c| !c.draining).count() < connections {
            self.open()?;
        }
        let until = Instant::now() + d;
        loop {
            self.pump(GLANCE)?;
            if Instant::now() >= until {
                return Ok(());
            }
        }
    }

    /// One look at every connection; a connection that drained and has nothing pending is
    /// closed.
    fn pump(&mut self, glance: Duration) -> Result<(), String> {
        for i in 0..self.conns.len() {
            while let Some(json) = self.conns[i].client.quiet(glance)? {
                self.handle(i, json)?;
            }
        }
        let mut i = 0;
        while i < self.conns.len() {
            let c = &self.conns[i];
            if c.draining && c.pending.is_empty() && !self.faults.ignores_draining {
                self.conns.remove(i).client.close();
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    fn handle(&mut self, conn: usize, json: Value) -> Result<(), String> {
        let id = json["message_id"].as_str().unwrap_or_default().to_string();
        match json["message_type"].as_str() {
            Some("ack" | "nack") => {
                self.conns[conn].pending.remove(&id);
                self.answers.insert(id, json);
            }
            Some("control") if json["control_type"] == "CONNECTION_DRAINING" && !self.faults.ignores_draining => {
                self.conns[conn].draining = true;
            }
            Some("receipt") if !self.faults.no_receipt_acks => self.ack(conn, &json)?,
            None if json.get("from").is_some() && !self.faults.no_upstream_acks => self.ack(conn, &json)?,
            _ => {}
        }
        Ok(())
    }

    fn ack(&mut self, conn: usize, message: &Value) -> Result<(), String> {
        let on = if self.faults.acks_on_newest { self.conns.len() - 1 } else { conn };
        let ack = json!({ "to": message["from"], "message_id": message["message_id"], "message_type": "ack" });
        self.conns[on].client.send_gcm("ack", &ack)
    }

    pub fn close(self) {
        for c in self.conns {
            c.client.close();
        }
    }
}
