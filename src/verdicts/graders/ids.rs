//! Registration ids the service said are stale (a canonical id came back for them, or
//! NotRegistered): an app server that took the answer in does not use them again.

use serde::{Deserialize, Serialize};

use super::at;
use crate::verdicts::entry::{Conn, Stamp};
use crate::verdicts::events::{Event, GroupVerb};
use crate::verdicts::{Bounded, RuleLog};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum After {
    Canonical,
    NotRegistered,
}

/// The rule's reading of "later": what it was told, how long a request on another connection
/// may have been in flight, and whether a connection opened after the answer was written is
/// after it (or, like another connection, in flight for `in_flight_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reading {
    pub after: After,
    pub in_flight_ms: u64,
    pub new_connection_is_later: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Marked {
    /// The canonical id, or "NotRegistered".
    by: String,
    seq: u64,
    stamp: Stamp,
    conn: Option<Conn>,
}

/// Where and when a later use came.
#[derive(Debug, Clone, Copy)]
struct On {
    seq: u64,
    stamp: Stamp,
    conn: Option<Conn>,
    opened_us: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct StaleIds {
    stale: Bounded<Marked>,
}

impl StaleIds {
    pub fn feed(&mut self, reading: &Reading, event: &Event, log: &mut RuleLog) {
        match event {
            Event::Answered(_, answer) => {
                for (id, result) in &answer.results {
                    let by = match (reading.after, result) {
                        (After::Canonical, Ok(Some(c))) if c != id => c.clone(),
                        (After::NotRegistered, Err(e)) if e == "NotRegistered" => e.clone(),
                        _ => continue,
                    };
                    log.exercised += 1;
                    self.stale
                        .insert(id.clone(), Marked { by, seq: answer.seq, stamp: answer.stamp, conn: answer.conn });
                }
            }
            Event::Sent(s) => {
                let on = On { seq: s.seq, stamp: s.stamp, conn: s.conn, opened_us: s.conn_opened_us };
                for id in s.each_target() {
                    self.check(reading, id, on, "sent to it", log);
                }
            }
            Event::Group(g) if matches!(g.verb, Some(GroupVerb::Create | GroupVerb::Add)) => {
                let on = On { seq: g.seq, stamp: g.stamp, conn: g.conn, opened_us: g.conn_opened_us };
                for id in &g.ids {
                    self.check(reading, id, on, "listed it in a group operation", log);
                }
            }
            _ => {}
        }
    }

    fn check(&self, reading: &Reading, id: &str, on: On, how: &str, log: &mut RuleLog) {
        let On { seq, stamp, conn, opened_us } = on;
        // Most app servers have no stale id to send: no target's id is hashed to look it up.
        if self.stale.len() == 0 {
            return;
        }
        let Some(m) = self.stale.get(id) else { return };
        // Sent after the answer was read: later on the same HTTP connection (or in-process),
        // on a connection opened after the answer (as the rule reads it), or long enough after
        // it that it cannot have been in flight already.
        let same_http = matches!((conn, m.conn), (Some(Conn::Http(a)), Some(Conn::Http(b))) if a == b)
            || (conn.is_none() && m.conn.is_none());
        // Ordered to the microsecond where the answer's stamp has it (a client that reads the
        // answer and reconnects within its millisecond is still after it); an answer stamped to
        // the millisecond only (an older state file's) takes a tie as in flight.
        let opened_after_by =
            opened_us.filter(|_| reading.new_connection_is_later).and_then(|o| match m.stamp.wall_us {
                0 => (o / 1000 > m.stamp.wall_ms).then(|| o.saturating_sub(m.stamp.wall_ms.saturating_mul(1000))),
                answered => (o > answered).then(|| o - answered),
            });
        let elapsed = stamp.since(m.stamp);
        let why = if same_http && seq > m.seq {
            "on the connection that carried the answer".to_string()
        } else if elapsed >= reading.in_flight_ms {
            format!("{elapsed} ms after it")
        } else if let Some(us) = opened_after_by {
            format!(
                "on a connection opened {} ms after it was written (read as sent after the answer: a send already in flight on a connection of its own looks the same)",
                us as f64 / 1000.0
            )
        } else {
            return;
        };
        let told = match reading.after {
            After::Canonical => format!("the canonical id {} was returned for {id}", m.by),
            After::NotRegistered => format!("NotRegistered was returned for {id}"),
        };
        log.violate(stamp, &[m.seq, seq], || {
            format!("{told} at {} (#{}), and #{seq} at {} {how} again, {why}", at(m.stamp), m.seq, at(stamp))
        });
    }

    pub fn note(&self) -> Option<String> {
        self.stale.forgot_note("stale ids")
    }
}
