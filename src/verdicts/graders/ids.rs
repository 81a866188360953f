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
    pub fn feed(&mut self, after: After, in_flight_ms: u64, event: &Event, log: &mut RuleLog) {
        match event {
            Event::Answered(_, answer) => {
                for (id, result) in &answer.results {
                    let by = match (after, result) {
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
                for id in s.targets() {
                    self.check(after, in_flight_ms, id, on, "sent to it", log);
                }
            }
            Event::Group(g) if matches!(g.verb, Some(GroupVerb::Create | GroupVerb::Add)) => {
                let on = On { seq: g.seq, stamp: g.stamp, conn: g.conn, opened_us: g.conn_opened_us };
                for id in &g.ids {
                    self.check(after, in_flight_ms, id, on, "listed it in a group operation", log);
                }
            }
            _ => {}
        }
    }

    fn check(&self, after: After, in_flight_ms: u64, id: &str, on: On, how: &str, log: &mut RuleLog) {
        let On { seq, stamp, conn, opened_us } = on;
        let Some(m) = self.stale.get(id) else { return };
        // Sent after the answer was read: later on the same HTTP connection (or in-process),
        // on a connection opened after the answer, or long enough after it that it cannot
        // have been in flight already.
        let same_http = matches!((conn, m.conn), (Some(Conn::Http(a)), Some(Conn::Http(b))) if a == b)
            || (conn.is_none() && m.conn.is_none());
        // Ordered to the microsecond where the answer's stamp has it (a client that reads the
        // answer and reconnects within its millisecond is still after it); an answer stamped to
        // the millisecond only (an older state file's) takes a tie as in flight.
        let opened_after = opened_us.is_some_and(|o| match m.stamp.wall_us {
            0 => o / 1000 > m.stamp.wall_ms,
            answered => o > answered,
        });
        let later = (same_http && seq > m.seq) || opened_after || stamp.since(m.stamp) >= in_flight_ms;
        if !later {
            return;
        }
        let told = match after {
            After::Canonical => format!("the canonical id {} was returned for {id}", m.by),
            After::NotRegistered => format!("NotRegistered was returned for {id}"),
        };
        log.violate(stamp, vec![m.seq, seq], || {
            format!("{told} at {} (#{}), and #{seq} at {} {how} again", at(m.stamp), m.seq, at(stamp))
        });
    }

    pub fn note(&self) -> Option<String> {
        self.stale.forgot_note("stale ids")
    }
}
