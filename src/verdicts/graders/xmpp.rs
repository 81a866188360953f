//! The connection server's side of the app server's duties: message ids, acks for what the
//! server sends (on the connection that received it), draining, and flow control.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::{at, by_when};
use crate::verdicts::entry::{Conn, Stamp};
use crate::verdicts::events::{Event, ToAck};
use crate::verdicts::{Bounded, RuleLog};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdUse {
    /// The message, part by part: a retry may change a field and still be it.
    #[serde(default)]
    parts: Vec<u64>,
    seq: u64,
    acked: bool,
}

/// `message-id`: present on every downstream message, and never reused for another message.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct MessageIds {
    ids: Bounded<IdUse>,
}

impl MessageIds {
    pub fn feed(&mut self, event: &Event, log: &mut RuleLog) {
        match event {
            Event::Sent(s) if s.xmpp() => {
                log.exercised += 1;
                let Some(id) = s.message_id.as_ref().filter(|id| !id.is_empty()) else {
                    let what = if s.message_id.is_some() { "an empty message_id" } else { "no message_id" };
                    log.violate(s.stamp, &[s.seq], || format!("#{} at {} had {what}", s.seq, at(s.stamp)));
                    return;
                };
                if let Some(used) = self.ids.get(id) {
                    let why = if !s.like(&used.parts) {
                        Some("another message")
                    } else if used.acked {
                        Some("a message already acked")
                    } else {
                        None
                    };
                    if let Some(why) = why {
                        log.violate(s.stamp, &[used.seq, s.seq], || {
                            format!(
                                "#{} at {} reused message_id {id:?}, the id of {why} (#{})",
                                s.seq,
                                at(s.stamp),
                                used.seq
                            )
                        });
                    }
                }
                self.ids.insert(id.clone(), IdUse { parts: s.parts.clone(), seq: s.seq, acked: false });
            }
            Event::Answered(s, a) if s.xmpp() && a.acked => {
                if let Some(used) = s.message_id.as_deref().and_then(|id| self.ids.get_mut(id)) {
                    used.acked = true;
                }
            }
            _ => {}
        }
    }

    pub fn note(&self) -> Option<String> {
        self.ids.forgot_note("message ids")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Unacked {
    conn: u64,
    message_id: String,
    seq: u64,
    stamp: Stamp,
    /// The device it came from ([`Event::ToAck`]'s `peer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    peer: Option<String>,
}

/// Whether an ack naming `to` may be the ack of a message from `peer`: message ids are the
/// devices', so an ack is of a device's message when it names that device; an ack that names
/// none (or a message from no device, a receipt) is matched by its id alone.
fn names(peer: Option<&str>, to: Option<&str>) -> bool {
    match (peer, to) {
        (Some(p), Some(t)) => p == t,
        _ => true,
    }
}

/// `acks`: every upstream message (or receipt) written to a connection is acked on it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Acks {
    /// By `conn:message_id:copy`.
    open: Bounded<Unacked>,
    copies: u64,
    /// Copies left unacked by a close that came within in_flight_ms of them.
    #[serde(default)]
    excused: u64,
    /// The keys in `open` by message id and connection, oldest first, so that an ack finds
    /// its copy without a walk of the copies open (however many share its id). A key whose
    /// copy is gone is dropped when met at the front. Not kept in a state file: rebuilt.
    #[serde(skip)]
    by_id: Option<HashMap<String, BTreeMap<u64, VecDeque<String>>>>,
}

type ById = HashMap<String, BTreeMap<u64, VecDeque<String>>>;

impl Acks {
    fn index(&mut self) -> &mut ById {
        let open = &self.open;
        self.by_id.get_or_insert_with(|| {
            let mut index = ById::new();
            for (key, u) in open.iter_ordered() {
                index.entry(u.message_id.clone()).or_default().entry(u.conn).or_default().push_back(key.to_string());
            }
            index
        })
    }

    /// Drops the keys at the front of `message_id`'s queue on `conn` whose copies are gone
    /// (copies go oldest first, past their window or the bound), and empty queues.
    fn unindex(&mut self, message_id: &str, conn: u64) {
        let open = &self.open;
        let Some(index) = self.by_id.as_mut() else { return };
        let Some(conns) = index.get_mut(message_id) else { return };
        if let Some(queue) = conns.get_mut(&conn) {
            while queue.front().is_some_and(|k| open.get(k).is_none()) {
                queue.pop_front();
            }
            if queue.is_empty() {
                conns.remove(&conn);
            }
        }
        if conns.is_empty() {
            index.remove(message_id);
        }
    }

    pub fn feed(&mut self, kind: ToAck, in_flight_ms: u64, event: &Event, log: &mut RuleLog) {
        match event {
            Event::ToAck { seq, stamp, conn, message_id, kind: k, peer } if *k == kind => {
                self.copies += 1;
                let u = Unacked {
                    conn: *conn,
                    message_id: message_id.clone(),
                    seq: *seq,
                    stamp: *stamp,
                    peer: peer.clone(),
                };
                let key = format!("{conn}:{message_id}:{}", self.copies);
                self.index().entry(message_id.clone()).or_default().entry(*conn).or_default().push_back(key.clone());
                if let Some(forgotten) = self.open.insert(key, u) {
                    self.unindex(&forgotten.message_id, forgotten.conn);
                }
            }
            Event::AppAck { conn, message_id, to, .. } => {
                // One copy per ack (a message sent twice needs two), the oldest of the message
                // (its id, from the device the ack names) on this connection, else the oldest
                // anywhere: an ack on another connection than the message's is
                // app.xmpp.ack-own-connection's to judge.
                self.index();
                let open = &self.open;
                let Some(conns) = self.by_id.as_mut().and_then(|i| i.get_mut(message_id)) else { return };
                let first = |q: &VecDeque<String>| {
                    q.iter().enumerate().find_map(|(i, k)| {
                        open.get(k).filter(|u| names(u.peer.as_deref(), to.as_deref())).map(|u| (i, u.seq))
                    })
                };
                let from = if conns.get(conn).is_some_and(|q| first(q).is_some()) {
                    Some(*conn)
                } else {
                    conns.iter().filter_map(|(c, q)| first(q).map(|(_, seq)| (seq, *c))).min().map(|(_, c)| c)
                };
                let Some(from) = from else { return };
                let queue = conns.get_mut(&from).expect("found above");
                let Some((at, _)) = first(queue) else { return };
                let key = queue.remove(at).expect("found above");
                if self.open.remove(&key).is_some() {
                    log.exercised += 1;
                }
                self.unindex(message_id, from);
            }
            Event::Closed { seq, stamp, conn, lost } => {
                // A copy written just before the close was still in flight, and every copy on
                // a connection lost when the server stopped is the server's to send again: the
                // server sends it on another connection, and that copy carries the duty.
                let closed = self.open.take_where(|u| u.conn == *conn);
                for u in &closed {
                    self.unindex(&u.message_id, u.conn);
                }
                for u in closed {
                    if *lost || stamp.since(u.stamp) < in_flight_ms {
                        self.excused += 1;
                        continue;
                    }
                    log.exercised += 1;
                    log.violate(
                        *stamp,
                        &[u.seq, *seq],
                        || format!(
                            "{} {:?} was written at {} (#{}) and connection {conn} closed at {} (#{seq}) without its ack",
                            what(kind),
                            u.message_id,
                            at(u.stamp),
                            u.seq,
                            at(*stamp)
                        ),
                    );
                }
            }
            _ => {}
        }
    }

    pub fn settle(&mut self, kind: ToAck, within_ms: u64, now: Stamp, log: &mut RuleLog) {
        // Copies are open in the order they were written, so those past their window are the
        // oldest: the walk stops at the first still within it.
        let due = self.open.take_front_while(|u| now.since(u.stamp) > within_ms);
        for u in &due {
            self.unindex(&u.message_id, u.conn);
        }
        for u in due {
            log.exercised += 1;
            // A settled read has no moment of its own: the copy's writing stands for it.
            let when = if now.is_settled() { u.stamp } else { now };
            log.violate(when, &[u.seq], || {
                format!(
                    "{} {:?} was written at {} (#{}) and not acked {}",
                    what(kind),
                    u.message_id,
                    at(u.stamp),
                    u.seq,
                    by_when(now, within_ms)
                )
            });
        }
    }

    /// When (machine clock, ms) the youngest copy still awaiting its ack stops being in
    /// flight: before then its ack may be on its way, or its connection closing.
    pub fn in_flight_until(&self, in_flight_ms: u64) -> Option<u64> {
        self.open.values().map(|u| u.stamp.wall_ms.saturating_add(in_flight_ms)).max()
    }

    pub fn note(&self) -> Option<String> {
        let open = self.open.len();
        let waiting = (open > 0).then(|| format!("{open} message(s) awaiting their ack"));
        let excused = (self.excused > 0).then(|| {
            format!(
                "{} unacked copy(ies) excused: their connection closed while they were in flight (they are sent again)",
                self.excused
            )
        });
        [waiting, excused, self.open.forgot_note("messages")].into_iter().flatten().reduce(|a, b| format!("{a}; {b}"))
    }
}

fn what(kind: ToAck) -> &'static str {
    match kind {
        ToAck::Upstream => "the upstream message",
        ToAck::Receipt => "the receipt",
    }
}

/// `ack-connection`: an ack comes on a connection the message was written to, and still
/// waiting for its ack there.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct AckConnection {
    /// Message id -> where a message with it was written: connection, entry, the device it
    /// came from (message ids are the devices': two devices may use one), and how many of its
    /// copies there await an ack.
    written: Bounded<Vec<Written>>,
}

/// A connection a message was written to: `[conn, seq, peer, awaiting]` (`[conn, seq]` in
/// state files made before the rest was kept, read as from no device, one copy awaiting).
#[derive(Debug, Clone, Serialize)]
struct Written(u64, u64, Option<String>, u32);

impl<'de> Deserialize<'de> for Written {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Kept {
            Now(u64, u64, Option<String>, u32),
            Before(u64, u64),
        }
        Ok(match Kept::deserialize(d)? {
            Kept::Now(c, s, p, n) => Written(c, s, p, n),
            Kept::Before(c, s) => Written(c, s, None, 1),
        })
    }
}

impl AckConnection {
    pub fn feed(&mut self, event: &Event, log: &mut RuleLog) {
        match event {
            Event::ToAck { seq, conn, message_id, peer, .. } => {
                let on = self.written.entry_or(message_id, Vec::new);
                match on.iter_mut().find(|w| w.0 == *conn && w.2 == *peer) {
                    Some(w) => w.3 = w.3.saturating_add(1),
                    None => on.push(Written(*conn, *seq, peer.clone(), 1)),
                }
            }
            Event::AppAck { seq, stamp, conn, message_id, to } => {
                let Some(on) = self.written.get_mut(message_id) else { return };
                // The writings of the message this ack names: its id, from the device in `to`.
                let named = |w: &&mut Written| names(w.2.as_deref(), to.as_deref());
                if let Some(w) = on.iter_mut().filter(named).find(|w| w.0 == *conn && w.3 > 0) {
                    log.exercised += 1;
                    w.3 -= 1;
                    return;
                }
                // None awaits it here: an ack of a copy another connection holds, or of one
                // written here and acked already while another connection's still waits.
                let Some(Written(first, first_seq, ..)) =
                    on.iter_mut().filter(named).find(|w| w.3 > 0).map(|w| w.clone())
                else {
                    return;
                };
                log.exercised += 1;
                let whose = to.as_deref().map(|t| format!(" (from {t})")).unwrap_or_default();
                log.violate(*stamp, &[first_seq, *seq], || {
                    format!(
                        "#{seq} at {} acked {message_id:?}{whose} on connection {conn}, where no copy of it awaited an ack; one written to connection {first} (#{first_seq}) did",
                        at(*stamp)
                    )
                });
            }
            _ => {}
        }
    }

    pub fn note(&self) -> Option<String> {
        self.written.forgot_note("message ids")
    }
}

/// `draining`: nothing new on a connection after CONNECTION_DRAINING.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Draining {
    /// Connection -> the entry that told it to drain.
    draining: Bounded<(u64, Stamp)>,
    reopened: bool,
}

impl Draining {
    pub fn feed(&mut self, in_flight_ms: u64, event: &Event, log: &mut RuleLog) {
        match event {
            Event::Draining { seq, stamp, conn } => {
                log.exercised += 1;
                self.reopened = false;
                self.draining.insert(conn.to_string(), (*seq, *stamp));
            }
            Event::Opened { .. } => self.reopened = true,
            Event::Closed { conn, .. } => {
                self.draining.remove(&conn.to_string());
            }
            Event::Sent(s) => {
                let Some(Conn::Xmpp(conn)) = s.conn else { return };
                let Some((told, told_at)) = self.draining.get(&conn.to_string()).copied() else { return };
                // Written before the app server could have read the control: in flight (as
                // for the stale-id rules, in_flight_ms or more is not).
                if s.stamp.since(told_at) < in_flight_ms {
                    return;
                }
                log.violate(s.stamp, &[told, s.seq], || {
                    format!(
                        "connection {conn} was told to drain at {} (#{told}), and #{} at {} sent a new message on it",
                        at(told_at),
                        s.seq,
                        at(s.stamp)
                    )
                });
            }
            _ => {}
        }
    }

    pub fn note(&self) -> Option<String> {
        (self.draining.len() > 0 && !self.reopened)
            .then(|| "no new connection was opened after CONNECTION_DRAINING (the text gives no time for it)".into())
    }
}

/// `pending-limit`: downstream messages read on a connection and not yet answered.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct PendingLimit {
    pending: HashMap<u64, usize>,
}

impl PendingLimit {
    pub fn feed(&mut self, max: usize, event: &Event, log: &mut RuleLog) {
        match event {
            Event::Sent(s) => {
                let Some(Conn::Xmpp(conn)) = s.conn else { return };
                log.exercised += 1;
                let n = self.pending.entry(conn).or_default();
                if *n >= max {
                    log.violate(
                        s.stamp,
                        &[s.seq],
                        || format!(
                            "#{} at {} came on connection {conn} while {n} messages there awaited their ack (at most {max})",
                            s.seq,
                            at(s.stamp)
                        ),
                    );
                }
                *n += 1;
            }
            Event::Replied { conn, .. } => {
                if let Some(n) = self.pending.get_mut(conn) {
                    *n = n.saturating_sub(1);
                }
            }
            Event::Closed { conn, .. } => {
                self.pending.remove(conn);
            }
            _ => {}
        }
    }
}
