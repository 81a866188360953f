//! A journal entry's HTTP messages made from the exchange (credentials left out, bodies cut),
//! and the exchange packed for the grader's thread: the request's thread packs it into one
//! buffer (which crosses threads as a copy, [`super::handoff`]), and what a journal keeps of a
//! send journaled there stays packed ([`Stored::Packed`]) until it is read, when its entry is
//! made.
//!
//! Packed, because an entry made of a dozen strings costs a dozen allocations to make and to
//! drop, and most entries are never read.

use std::borrow::Cow;
use std::sync::Arc;

use crate::verdicts::entry::{FactsFound, Message};
use crate::verdicts::packing::{Reader, Writer};
use crate::verdicts::{Conn, Entry, Stamp, What};
use crate::wire::{HttpRequest, HttpResponse};

/// An HTTP request as a journal keeps it: its credentials left out.
pub fn request_message(req: &HttpRequest) -> Message {
    request_with_body(req, &req.body)
}

/// The same, with only the part of the body a journal keeps copied: for a request graded from
/// what the adapter parsed, when no state file wants the entry whole (a multicast's 100 KiB
/// body was copied whole to keep 16 KiB of it).
pub fn request_message_cut(req: &HttpRequest) -> Message {
    let at = kept_of(&req.body);
    Message { body_cut: req.body.len() - at, ..request_with_body(req, &req.body[..at]) }
}

/// How much of a body a journal keeps: [`Message::BODY_KEPT`] bytes, back to the start of a
/// character, so that no character is cut in two.
fn kept_of(body: &[u8]) -> usize {
    if body.len() <= Message::BODY_KEPT {
        return body.len();
    }
    let mut at = Message::BODY_KEPT;
    while at > 0 && (body[at] & 0xC0) == 0x80 {
        at -= 1;
    }
    at
}

fn request_with_body(req: &HttpRequest, body: &[u8]) -> Message {
    Message {
        method: Some(req.method.clone()),
        path: Some(req.path_and_query()),
        headers: req.headers.iter().filter(|(k, _)| !is_credential(k)).cloned().collect(),
        body: text_of(body),
        ..Default::default()
    }
}

fn is_credential(header: &str) -> bool {
    header.eq_ignore_ascii_case("authorization")
}

/// A body as text: valid UTF-8 (nearly every body) is checked by the fast path and copied
/// once; anything else has its bad bytes replaced.
fn text_of(body: &[u8]) -> String {
    match std::str::from_utf8(body) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    }
}

pub fn response_message(resp: &HttpResponse) -> Message {
    Message {
        status: Some(resp.status),
        headers: resp.headers.clone(),
        body: text_of(&resp.body),
        ..Default::default()
    }
}

/// What a journal keeps of an HTTP exchange but the request's body, packed into one buffer
/// (`verdicts::packing`'s form): one allocation to keep and to drop, not one per header, and
/// one byte string to copy into the grader's queue. Unpacked into the entry's messages when
/// read ([`Packed::messages`]).
#[derive(Debug, Default)]
pub struct Packed(Vec<u8>, std::cell::OnceCell<(usize, usize)>);

impl Packed {
    pub fn of(req: &HttpRequest, resp: &HttpResponse) -> Packed {
        let strings = req.headers.iter().chain(&resp.headers).map(|(k, v)| k.len() + v.len() + 8).sum::<usize>();
        let mut buf = Vec::with_capacity(req.path.len() + resp.body.len() + strings + 32);
        let mut p = Writer(&mut buf);
        p.bytes(req.method.as_bytes());
        match req.query.is_empty() {
            true => p.bytes(req.path.as_bytes()),
            false => p.bytes(req.path_and_query().as_bytes()),
        }
        p.count(req.headers.iter().filter(|(k, _)| !is_credential(k)).count());
        for (k, v) in req.headers.iter().filter(|(k, _)| !is_credential(k)) {
            p.bytes(k.as_bytes());
            p.bytes(v.as_bytes());
        }
        p.count(usize::from(resp.status));
        p.count(resp.headers.len());
        for (k, v) in &resp.headers {
            p.bytes(k.as_bytes());
            p.bytes(v.as_bytes());
        }
        p.bytes(&resp.body);
        Packed(buf, Default::default())
    }

    /// Its bytes, to copy it across threads ([`Self::from_bytes`] makes it again).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn from_bytes(bytes: &[u8]) -> Packed {
        Packed(bytes.to_vec(), Default::default())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The request (with `body`, cut as [`request_message_cut`] cuts it) and the answer, as
    /// [`request_message_cut`] and [`response_message`] make them.
    pub fn messages(&self, body: &[u8]) -> (Message, Message) {
        let kept = kept_of(body);
        self.messages_kept(&body[..kept], body.len() - kept)
    }

    /// The same from a body already cut, `body_cut` bytes shorter than it came.
    fn messages_kept(&self, body: &[u8], body_cut: usize) -> (Message, Message) {
        let mut p = Reader::new(&self.0);
        let (method, path, headers) = (p.text(), p.text(), p.headers());
        let request = Message {
            method: Some(method),
            path: Some(path),
            headers,
            body: text_of(body),
            body_cut,
            ..Default::default()
        };
        let status = u16::try_from(p.count()).unwrap_or_default();
        let headers = p.headers();
        let response = Message { status: Some(status), headers, body: text_of(p.bytes()), ..Default::default() };
        (request, response)
    }

    /// [`Message::weight`] of both messages, with the request's body as kept, without making them.
    fn weight(&self, body: &[u8]) -> usize {
        let (headers, answer_len) = self.sizes();
        64 + text_len(body) + 64 + headers + answer_len
    }

    /// Whether the answer is kept whole ([`Message::BODY_KEPT`]), as a packed entry keeps it.
    pub fn fits(&self) -> bool {
        self.sizes().1 <= Message::BODY_KEPT
    }

    /// One walk of the buffer, the first time it is asked (whether it fits, then its weight):
    /// both messages' headers' part of their weight, and the answer's body as text, in bytes.
    fn sizes(&self) -> (usize, usize) {
        *self.1.get_or_init(|| self.walk())
    }

    fn walk(&self) -> (usize, usize) {
        let mut p = Reader::new(&self.0);
        p.bytes();
        p.bytes();
        let request = p.headers_weight();
        p.count();
        let response = p.headers_weight();
        (request + response, text_len(p.bytes()))
    }
}

/// The length of [`text_of`]`(body)`, without making it.
fn text_len(body: &[u8]) -> usize {
    match std::str::from_utf8(body) {
        Ok(text) => text.len(),
        Err(_) => String::from_utf8_lossy(body).len(),
    }
}

/// A journal entry as a journal keeps it: made, or, for a send journaled on the grader's
/// thread, still packed as received, made when it is read (most entries never are).
#[derive(Debug)]
pub enum Stored {
    Made(Box<Entry>),
    Packed(PackedEntry),
}

/// An HTTP send's entry, packed: the exchange, the request's body as kept (cut), the facts.
#[derive(Debug)]
pub struct PackedEntry {
    pub seq: u64,
    pub stamp: Stamp,
    pub connection: Option<Conn>,
    pub connection_opened_us: Option<u64>,
    exchange: Packed,
    body: Vec<u8>,
    body_cut: usize,
    pub scripted: Option<String>,
    /// Kept as found (one buffer), made into [`Facts`] when the entry is read: dropping the
    /// oldest entry frees one buffer rather than a device list of strings, cold.
    pub facts: FactsFound,
}

impl PackedEntry {
    /// The entry packed, its request's body cut as a journal keeps it. Only for an exchange
    /// whose answer [`Packed::fits`]: a longer one, the made entry would cut.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        seq: u64,
        stamp: Stamp,
        connection: Option<Conn>,
        connection_opened_us: Option<u64>,
        exchange: Packed,
        mut body: Vec<u8>,
        scripted: Option<String>,
        facts: FactsFound,
    ) -> PackedEntry {
        let kept = kept_of(&body);
        let body_cut = body.len() - kept;
        if body_cut > 0 {
            body.truncate(kept);
            body.shrink_to_fit();
        }
        PackedEntry { seq, stamp, connection, connection_opened_us, exchange, body, body_cut, scripted, facts }
    }

    pub fn entry(&self) -> Entry {
        let (request, response) = self.exchange.messages_kept(&self.body, self.body_cut);
        Entry {
            seq: self.seq,
            stamp: self.stamp,
            connection: self.connection,
            connection_opened_us: self.connection_opened_us,
            what: What::Http {
                request,
                response,
                scripted: self.scripted.clone(),
                facts: Arc::new(self.facts.facts()),
            },
        }
    }
}

impl Stored {
    pub fn seq(&self) -> u64 {
        match self {
            Stored::Made(e) => e.seq,
            Stored::Packed(p) => p.seq,
        }
    }

    pub fn stamp(&self) -> Stamp {
        match self {
            Stored::Made(e) => e.stamp,
            Stored::Packed(p) => p.stamp,
        }
    }

    /// The entry (made now, if it was kept packed).
    pub fn entry(&self) -> Cow<'_, Entry> {
        match self {
            Stored::Made(e) => Cow::Borrowed(&**e),
            Stored::Packed(p) => Cow::Owned(p.entry()),
        }
    }

    /// [`Entry::weight`], without making the entry.
    pub fn weight(&self) -> usize {
        match self {
            Stored::Made(e) => e.weight(),
            Stored::Packed(p) => p.exchange.weight(&p.body) + p.facts.weight(),
        }
    }
}

impl serde::Serialize for Stored {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.entry().serialize(s)
    }
}

/// Reads a [`Packed`] in the order it was written.
/// What a packed exchange reads besides [`Reader`]'s own: header pairs.
trait Headers {
    /// Header pairs' part of [`Message::weight`], skipping them.
    fn headers_weight(&mut self) -> usize;
    fn headers(&mut self) -> Vec<(String, String)>;
}

impl Headers for Reader<'_> {
    fn headers_weight(&mut self) -> usize {
        // Never more pairs than the buffer has bytes for.
        let n = self.count().min(self.left() / 8);
        (0..n).map(|_| self.bytes().len() + self.bytes().len() + 8).sum()
    }

    fn headers(&mut self) -> Vec<(String, String)> {
        let n = self.count().min(self.left() / 8);
        (0..n).map(|_| (self.text(), self.text())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdicts::entry::DeviceFound;

    #[test]
    fn a_body_cut_before_copying_is_the_body_copied_then_cut() {
        // Long enough to be cut, with two-byte characters across the cut.
        let body = format!("{{\"data\":\"{}\"}}", "é".repeat(crate::verdicts::entry::Message::BODY_KEPT));
        let req = crate::wire::HttpRequest::new("POST", "/fcm/send").with_header("content-type", "application/json");
        let req = crate::wire::HttpRequest { body: body.into_bytes(), ..req };
        let mut whole = request_message(&req);
        whole.cut();
        let cut = request_message_cut(&req);
        assert_eq!((cut.body.len(), cut.body_cut), (whole.body.len(), whole.body_cut));
        assert_eq!(cut.body, whole.body);
        assert!(cut.body_cut > 0);
    }

    #[test]
    fn an_answer_too_long_to_keep_whole_is_not_kept_packed() {
        let req = crate::wire::HttpRequest::new("POST", "/fcm/send");
        let resp = HttpResponse { status: 200, headers: Vec::new(), body: vec![b'x'; Message::BODY_KEPT + 1] };
        assert!(!Packed::of(&req, &resp).fits());
        assert!(Packed::of(&req, &HttpResponse { body: b"{}".to_vec(), ..resp }).fits());
    }

    #[test]
    fn a_packed_exchange_unpacks_to_the_messages_made_directly() {
        let long = format!("{{\"data\":\"{}\"}}", "é".repeat(crate::verdicts::entry::Message::BODY_KEPT));
        for body in [String::new(), "{\"to\":\"a\"}".to_string(), long] {
            let mut req = crate::wire::HttpRequest::new("POST", "/fcm/send")
                .with_header("authorization", "key=secret")
                .with_header("content-type", "application/json")
                .with_header("x-empty", "");
            req.query = vec![("a b".into(), "c&d".into())];
            req.body = body.into_bytes();
            let resp = HttpResponse {
                status: 503,
                headers: vec![("retry-after".into(), "10".into()), ("content-type".into(), "text/plain".into())],
                body: "ünavailable".as_bytes().to_vec(),
            };
            let (request, response) = Packed::of(&req, &resp).messages(&req.body);
            assert_eq!(request, request_message_cut(&req));
            assert_eq!(response, response_message(&resp));
            assert!(request.header("authorization").is_none());
            // Kept packed, it reads and weighs as the entry made and cut.
            let mut found = FactsFound::default();
            // One package far longer than the rest: an entry weighs what its facts hold.
            let long_package = "p".repeat(5000);
            for n in 0..3 {
                let id = format!("device-{n}");
                let package = if n == 2 { long_package.as_str() } else { "com.example" };
                found.push(DeviceFound {
                    id: &id,
                    known: n > 0,
                    package: Some(package),
                    held_keys: Some(n),
                    ..Default::default()
                });
            }
            let facts = Arc::new(found.facts());
            let (stamp, conn) = (Stamp { at_ms: 5, wall_ms: 6, wall_us: 6_001 }, Some(Conn::Http(2)));
            let packed =
                PackedEntry::new(9, stamp, conn, Some(1), Packed::of(&req, &resp), req.body.clone(), None, found);
            let what = What::Http { request, response, scripted: None, facts };
            let made = Entry { seq: 9, stamp, connection: conn, connection_opened_us: Some(1), what };
            let packed = Stored::Packed(packed);
            assert_eq!(*packed.entry(), made);
            assert_eq!(packed.weight(), made.weight());
            assert!(made.weight() > long_package.len(), "{}", made.weight());
            assert_eq!((packed.seq(), packed.stamp()), (9, stamp));
        }
    }
}
