//! A send left for the grader's thread, copied into bytes that the two threads pass back and
//! forth ([`Queue`]), rather than handed over as the allocations it was made of.
//!
//! Why: memory one thread allocates and another frees comes back to the first through the
//! allocator's cross-thread list, on cache lines the other core last wrote, and the loads that
//! reuse it stall. Under wrk that was most of what journaling cost the request's thread (the
//! allocator's collection and the queue's pushes, about 0.5 µs of its 1.5 µs per one-token
//! send, docs/performance.md). Here the request's thread allocates and frees only on its own
//! side, and only writes, in order, into a buffer the grader last read; the grader makes the
//! journal's entry from its own allocations.
//!
//! Written and read in the one packed form of `verdicts::packing`.

use super::grader::Waiting;
use super::packed::Packed;
use crate::verdicts::entry::FactsFound;
use crate::verdicts::events::PreparedAnswer;
use crate::verdicts::packing::{Reader, Writer};
use crate::verdicts::{Conn, Stamp};

/// Room a queue keeps once emptied: about a pass's sends at 100k a second. Each sender's cell
/// holds one queue between passes, so what idle cells hold is bounded by the journals' cap on
/// senders times this, whatever burst a queue once took.
pub const ROOM_KEPT: usize = 64 << 10;

/// Sends waiting for the grader, as bytes, and how many.
#[derive(Debug, Default)]
pub struct Queue {
    bytes: Vec<u8>,
    len: usize,
}

impl Queue {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes held: what the bound on all queues counts.
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Empties it, keeping its room (up to [`ROOM_KEPT`]) for the sends it takes next.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.bytes.shrink_to(ROOM_KEPT);
        self.len = 0;
    }

    /// Copies `w` in; returns the bytes it took.
    pub fn push(&mut self, w: &Waiting) -> usize {
        let before = self.bytes.len();
        let mut out = Writer(&mut self.bytes);
        out.number(w.seq);
        out.number(w.stamp.at_ms);
        out.number(w.stamp.wall_ms);
        out.number(w.stamp.wall_us);
        let (tag, id) = match w.connection {
            None => (0, 0),
            Some(Conn::Http(id)) => (1, id),
            Some(Conn::Xmpp(id)) => (2, id),
        };
        out.byte(tag);
        out.number(id);
        out.byte(u8::from(w.connection_opened_us.is_some()));
        out.number(w.connection_opened_us.unwrap_or_default());
        out.bytes(w.exchange.as_bytes());
        out.bytes(&w.body);
        match &w.answer {
            PreparedAnswer::Results(results) => {
                out.byte(0);
                out.number(results.len() as u64);
                for r in results {
                    match r {
                        Ok(None) => out.byte(0),
                        Ok(Some(canonical)) => {
                            out.byte(1);
                            out.bytes(canonical.as_bytes());
                        }
                        Err(error) => {
                            out.byte(2);
                            out.bytes(error.as_bytes());
                        }
                    }
                }
            }
            PreparedAnswer::Group { failed, success } => {
                out.byte(1);
                out.number(*success as u64);
                out.number(failed.len() as u64);
                for id in failed {
                    out.bytes(id.as_bytes());
                }
            }
            PreparedAnswer::GroupFailed => out.byte(2),
        }
        match &w.scripted {
            None => out.byte(0),
            Some(s) => {
                out.byte(1);
                out.bytes(s.as_bytes());
            }
        }
        let (to_key, devices, count) = w.facts.as_parts();
        out.byte(u8::from(to_key));
        out.number(count as u64);
        out.bytes(devices);
        self.len += 1;
        self.bytes.len() - before
    }

    /// Each send it holds, made again, in the order pushed.
    pub fn drain(&self) -> impl Iterator<Item = Waiting> + '_ {
        let mut at = Reader::new(&self.bytes);
        (0..self.len).map(move |_| waiting(&mut at))
    }
}

/// One send as [`Queue::push`] wrote it.
fn waiting(r: &mut Reader<'_>) -> Waiting {
    let seq = r.number();
    let stamp = Stamp { at_ms: r.number(), wall_ms: r.number(), wall_us: r.number() };
    let (tag, id) = (r.byte(), r.number());
    let connection = match tag {
        1 => Some(Conn::Http(id)),
        2 => Some(Conn::Xmpp(id)),
        _ => None,
    };
    let opened = (r.byte() == 1, r.number());
    let exchange = Packed::from_bytes(r.bytes());
    let body = r.bytes().to_vec();
    let answer = match r.byte() {
        0 => {
            let n = r.number() as usize;
            // Bounded by the bytes there are, whatever the count says.
            let results = (0..n.min(r.left()))
                .map(|_| match r.byte() {
                    0 => Ok(None),
                    1 => Ok(Some(r.text())),
                    _ => Err(r.text()),
                })
                .collect();
            PreparedAnswer::Results(results)
        }
        1 => {
            let success = r.number() as usize;
            let n = r.number() as usize;
            let failed = (0..n.min(r.left())).map(|_| r.text()).collect();
            PreparedAnswer::Group { failed, success }
        }
        _ => PreparedAnswer::GroupFailed,
    };
    let scripted = (r.byte() == 1).then(|| r.text());
    let to_key = r.byte() == 1;
    let count = r.number() as usize;
    let facts = FactsFound::from_parts(to_key, r.bytes(), count);
    Waiting {
        seq,
        stamp,
        connection,
        connection_opened_us: opened.0.then_some(opened.1),
        exchange,
        body,
        answer,
        scripted,
        facts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdicts::entry::DeviceFound;
    use crate::wire::{HttpRequest, HttpResponse};

    fn waiting(seq: u64, answer: PreparedAnswer, connection: Option<Conn>, scripted: Option<&str>) -> Waiting {
        let req = HttpRequest::new("POST", "/fcm/send").with_header("content-type", "application/json");
        let resp = HttpResponse::json_bytes(200, br#"{"success":1}"#.to_vec());
        let mut facts = FactsFound::default();
        facts.to_key = seq.is_multiple_of(2);
        facts.push(DeviceFound {
            id: "tok-é",
            known: true,
            package: Some("com.example"),
            held_keys: Some(3),
            ..Default::default()
        });
        facts.push(DeviceFound { id: "other", ..Default::default() });
        Waiting {
            seq,
            stamp: Stamp { at_ms: seq * 10, wall_ms: 1_700_000_000_000 + seq, wall_us: 7 },
            connection,
            connection_opened_us: connection.map(|_| 42),
            exchange: Packed::of(&req, &resp),
            body: format!(r#"{{"to":"tok-{seq}","data":{{"n":"ü"}}}}"#).into_bytes(),
            answer,
            scripted: scripted.map(str::to_string),
            facts,
        }
    }

    /// Every kind of answer, connection and script comes out as it went in, in order, and a
    /// cleared queue takes new sends from empty.
    #[test]
    fn a_send_comes_out_of_the_queue_as_it_went_in() {
        let sends = [
            waiting(
                1,
                PreparedAnswer::Results(vec![Ok(None), Ok(Some("canon".into())), Err("NotRegistered".into())]),
                Some(Conn::Http(9)),
                None,
            ),
            waiting(
                2,
                PreparedAnswer::Group { failed: vec!["a".into(), "b".into()], success: 3 },
                Some(Conn::Xmpp(4)),
                Some("503 then 200"),
            ),
            waiting(3, PreparedAnswer::GroupFailed, None, Some("")),
            waiting(4, PreparedAnswer::Results(Vec::new()), None, None),
        ];
        let mut queue = Queue::default();
        let mut total = 0;
        for w in &sends {
            total += queue.push(w);
        }
        assert_eq!((queue.len(), queue.bytes()), (4, total));
        let out: Vec<Waiting> = queue.drain().collect();
        assert_eq!(format!("{out:?}"), format!("{sends:?}"));
        queue.clear();
        assert_eq!((queue.len(), queue.bytes()), (0, 0));
        // A burst's room is not kept past the bound.
        while queue.bytes() <= 2 * ROOM_KEPT {
            queue.push(&sends[0]);
        }
        queue.clear();
        assert!(queue.bytes.capacity() <= ROOM_KEPT, "{}", queue.bytes.capacity());
        queue.push(&sends[2]);
        assert_eq!(format!("{:?}", queue.drain().collect::<Vec<_>>()), format!("{:?}", [&sends[2]]));
    }

    /// Bytes cut short read as zeroes and empty strings, without panicking or looping on a
    /// count the bytes cannot hold.
    #[test]
    fn bytes_cut_short_read_as_empty() {
        let mut queue = Queue::default();
        queue.push(&waiting(1, PreparedAnswer::Results(vec![Ok(None); 3]), None, None));
        for cut in 0..queue.bytes.len() {
            let short = Queue { bytes: queue.bytes[..cut].to_vec(), len: 1 };
            assert_eq!(short.drain().count(), 1);
        }
        let huge = Queue { bytes: [vec![0u8; 70], u64::MAX.to_ne_bytes().to_vec()].concat(), len: 1 };
        assert_eq!(huge.drain().count(), 1);
    }
}
