//! One journaled exchange between an app server and the reference, as plain data: what the
//! reference saw and answered, when, on which connection, and what it knew of the devices
//! concerned at that moment (`Facts`). Entries are what the control API's journal shows and
//! what the graders read; nothing here knows a transport's types.

use super::packing::{self, Reader, Writer};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// When something happened, on both clocks: the sender's (virtual or wall, with the sender's
/// advances) and the machine's. Timing rules take whichever moved more, so that a test may
/// either sleep or advance the reference's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub at_ms: u64,
    pub wall_ms: u64,
    /// The machine's clock to the microsecond (0 where not known: older state files, tests):
    /// orders a connection's opening against an answer written in the same millisecond.
    #[serde(default, skip_serializing_if = "unknown_us")]
    pub wall_us: u64,
}

fn unknown_us(us: &u64) -> bool {
    *us == 0
}

/// The machine's clock in microseconds, as stamps and connections' openings take it.
pub fn wall_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

impl Stamp {
    /// The moment a settled reading judges at: far enough that every window has passed,
    /// far from overflowing.
    pub const SETTLED: Stamp = Stamp { at_ms: u64::MAX / 4, wall_ms: u64::MAX / 4, wall_us: 0 };

    /// Now: `at_ms` on the sender's clock, and the machine's clock as it reads.
    pub fn now(at_ms: u64) -> Stamp {
        let wall_us = wall_us();
        Stamp { at_ms, wall_ms: wall_us / 1000, wall_us }
    }

    /// Whether this is [`Stamp::SETTLED`]: a violation found then is worded as what was
    /// still open when the verdicts were read, not as a window that ran out.
    pub fn is_settled(self) -> bool {
        self == Stamp::SETTLED
    }

    /// Milliseconds from `earlier` to `self`, on whichever clock moved more.
    pub fn since(self, earlier: Stamp) -> u64 {
        self.at_ms.saturating_sub(earlier.at_ms).max(self.wall_ms.saturating_sub(earlier.wall_ms))
    }
}

/// The connection an exchange came on: HTTP keep-alive connections and XMPP streams are
/// numbered apart. `None`: in-process (`Reference::handle`), one caller at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "transport", content = "id", rename_all = "lowercase")]
pub enum Conn {
    Http(u64),
    Xmpp(u64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    #[serde(flatten)]
    pub stamp: Stamp,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub connection: Option<Conn>,
    /// When that connection was opened (wall clock, µs): a request on a connection opened
    /// after an answer was written cannot have been sent before it was read.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub connection_opened_us: Option<u64>,
    #[serde(flatten)]
    pub what: What,
}

/// What was exchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum What {
    /// An HTTP request of the public protocol and its answer.
    Http {
        request: Message,
        response: Message,
        /// The scripted answer that shaped it, if one did (`POST .../script`).
        #[serde(skip_serializing_if = "Option::is_none", default)]
        scripted: Option<String>,
        /// Shared with the events read from it (no copy per event).
        #[serde(skip_serializing_if = "Facts::is_empty", default)]
        facts: std::sync::Arc<Facts>,
    },
    /// An XMPP connection logged in and bound (`opened`) or ended (`closed`).
    XmppOpened,
    XmppClosed,
    /// An XMPP connection that was open when the server stopped (a crash or a shutdown), as
    /// the restarted server journals it: neither side closed it, and what it had not
    /// acknowledged the server sends again on the sender's next connection.
    XmppLost,
    /// A `<gcm>` payload the app server sent (a downstream message, or its ack of something
    /// the server sent it).
    XmppReceived {
        stanza: Value,
        /// Bytes of the stanza's JSON text left out past [`Message::BODY_KEPT`]: a stanza cut
        /// so is kept as the text before the cut.
        #[serde(skip_serializing_if = "is_zero", default)]
        stanza_cut: usize,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        scripted: Option<String>,
        /// Shared with the events read from it (no copy per event).
        #[serde(skip_serializing_if = "Facts::is_empty", default)]
        facts: std::sync::Arc<Facts>,
    },
    /// A `<gcm>` payload the server wrote to the app server (an ack or nack, an upstream
    /// message, a receipt, a control message).
    XmppSent {
        stanza: Value,
        /// As for [`What::XmppReceived`].
        #[serde(skip_serializing_if = "is_zero", default)]
        stanza_cut: usize,
    },
}

impl What {
    /// Cuts what a journal keeps of it to [`Message::BODY_KEPT`]: an HTTP body, or an XMPP
    /// stanza's JSON text (kept as the text before the cut). Graded whole first.
    pub fn cut(&mut self) {
        match self {
            What::Http { request, response, .. } => {
                request.cut();
                response.cut();
            }
            What::XmppReceived { stanza, stanza_cut, .. } | What::XmppSent { stanza, stanza_cut } => {
                let len = match &*stanza {
                    Value::String(s) => s.len(),
                    other => json_len(other),
                };
                if *stanza_cut > 0 || len <= Message::BODY_KEPT {
                    return;
                }
                let mut text = match &mut *stanza {
                    Value::String(s) => std::mem::take(s),
                    other => other.to_string(),
                };
                *stanza_cut = cut_text(&mut text);
                *stanza = Value::String(text);
            }
            What::XmppOpened | What::XmppClosed | What::XmppLost => {}
        }
    }
}

/// Cuts `text` to [`Message::BODY_KEPT`] bytes, back to the start of a character; the bytes
/// left out.
fn cut_text(text: &mut String) -> usize {
    if text.len() <= Message::BODY_KEPT {
        return 0;
    }
    let mut at = Message::BODY_KEPT;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let cut = text.len() - at;
    text.truncate(at);
    // What the journal counts is what it holds: a 1 MiB body cut to 16 KiB kept its 1 MiB of
    // room, and a sender's 512 KiB of entries held 30 MiB.
    text.shrink_to_fit();
    cut
}

/// The length of a value's JSON text, without making it.
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, v);
    count.0
}

/// An HTTP request or response as journaled: the authorization header is not kept (it
/// carries the sender's key), and a body longer than [`Message::BODY_KEPT`] is cut.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8).
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub body: String,
    /// Bytes of body left out past [`Message::BODY_KEPT`].
    #[serde(skip_serializing_if = "is_zero", default)]
    pub body_cut: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Message {
    /// Body bytes a journal entry keeps: far more than any protocol message this project's
    /// checks send, little enough that a journal's cap holds many.
    pub const BODY_KEPT: usize = 16 * 1024;

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// Cuts the body to what a journal keeps (on a character boundary).
    pub fn cut(&mut self) {
        let cut = cut_text(&mut self.body);
        if cut > 0 {
            self.body_cut = cut;
        }
    }

    /// Roughly what it costs to keep, for the journal's byte caps.
    pub fn weight(&self) -> usize {
        64 + self.body.len() + self.headers.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>()
    }
}

/// What the reference knew when it took a send or a group operation: whether `to` named a
/// notification key, and about each device concerned. The app server cannot see these; the
/// graders of rules read "as the server sees it" use them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    /// A send whose `to` was one of the sender's notification keys.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub to_key: bool,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub devices: Vec<Device>,
}

impl Facts {
    /// What a device costs a journal besides its id and package.
    const DEVICE_WEIGHT: usize = 96;

    /// Roughly what they cost to keep, for the journal's byte caps: each device's id and
    /// package as they are (a device registered with a 300 KB package made a 150-byte send's
    /// entry hold 300 KB, counted as 96 bytes: one sender's 512 KiB journal held 150 MB).
    pub fn weight(&self) -> usize {
        self.devices.iter().map(|d| Self::DEVICE_WEIGHT + d.id.len() + d.package.as_ref().map_or(0, String::len)).sum()
    }
}

impl Facts {
    pub fn is_empty(&self) -> bool {
        !self.to_key && self.devices.is_empty()
    }

    pub fn device(&self, id: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.id == id)
    }
}

/// [`Facts`] as the model finds them while it handles a request, in one buffer: served, the
/// grader's thread makes the [`Facts`] of them ([`FactsFound::facts`]), so that the request's
/// thread allocates once per request rather than twice per device (and memory freed on
/// another thread than the one that allocated it costs the allocating thread later).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FactsFound {
    pub to_key: bool,
    devices: Vec<u8>,
    /// How many devices were pushed.
    count: usize,
}

/// One device's facts as [`FactsFound::push`] takes them, borrowed from the model.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceFound<'a> {
    pub id: &'a str,
    pub known: bool,
    pub ios: bool,
    pub unregistered: bool,
    pub package: Option<&'a str>,
    pub held_keys: Option<usize>,
    pub holds_key: bool,
}

impl FactsFound {
    const KNOWN: u8 = 1;
    const IOS: u8 = 2;
    const UNREGISTERED: u8 = 4;
    const HOLDS_KEY: u8 = 8;
    const PACKAGE: u8 = 16;
    const HELD: u8 = 32;

    pub fn push(&mut self, d: DeviceFound<'_>) {
        self.count += 1;
        let flag = |on: bool, f: u8| if on { f } else { 0 };
        let b = &mut self.devices;
        b.push(
            flag(d.known, Self::KNOWN)
                | flag(d.ios, Self::IOS)
                | flag(d.unregistered, Self::UNREGISTERED)
                | flag(d.holds_key, Self::HOLDS_KEY)
                | flag(d.package.is_some(), Self::PACKAGE)
                | flag(d.held_keys.is_some(), Self::HELD),
        );
        let mut w = Writer(b);
        if let Some(n) = d.held_keys {
            w.count(n);
        }
        w.bytes(d.id.as_bytes());
        if let Some(p) = d.package {
            w.bytes(p.as_bytes());
        }
    }

    /// Each device as pushed: its flags, held keys, id and package, borrowed.
    fn each(&self) -> impl Iterator<Item = (u8, Option<usize>, &[u8], Option<&[u8]>)> + '_ {
        let mut r = Reader::new(&self.devices);
        std::iter::from_fn(move || {
            let flags = r.next_byte()?;
            let held_keys = (flags & Self::HELD != 0).then(|| r.count());
            let id = r.bytes();
            let package = (flags & Self::PACKAGE != 0).then(|| r.bytes());
            Some((flags, held_keys, id, package))
        })
    }

    /// The facts found, as the graders read them.
    pub fn facts(&self) -> Facts {
        let devices = self
            .each()
            .map(|(flags, held_keys, id, package)| Device {
                id: packing::text(id),
                known: flags & Self::KNOWN != 0,
                ios: flags & Self::IOS != 0,
                unregistered: flags & Self::UNREGISTERED != 0,
                package: package.map(packing::text),
                held_keys,
                holds_key: flags & Self::HOLDS_KEY != 0,
            })
            .collect();
        Facts { to_key: self.to_key, devices }
    }

    /// [`Facts::weight`], without making them.
    pub fn weight(&self) -> usize {
        self.each().map(|(_, _, id, package)| Facts::DEVICE_WEIGHT + id.len() + package.map_or(0, <[u8]>::len)).sum()
    }

    /// Bytes held, for the bound on what may wait.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// How many devices' facts it holds.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Its bytes as [`Self::push`] wrote them, and the count (to copy it across threads).
    pub fn as_parts(&self) -> (bool, &[u8], usize) {
        (self.to_key, &self.devices, self.count)
    }

    /// Made again from [`Self::as_parts`].
    pub fn from_parts(to_key: bool, devices: &[u8], count: usize) -> FactsFound {
        FactsFound { to_key, devices: devices.to_vec(), count }
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

/// One device a send reached or a group operation named, as the reference knew it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// The registration id as the request named it (a group member's, for a key).
    pub id: String,
    /// Some device was ever given this id (the current one, or an older one of it).
    pub known: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub ios: bool,
    /// The device it is had unregistered (a send to it fails whenever it is tried).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub unregistered: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub package: Option<String>,
    /// For a send with a collapse key: how many distinct collapse keys of this sender, other
    /// than this send's, the reference held for the device (stored, not delivered) just
    /// before, and whether it held this send's key too.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub held_keys: Option<usize>,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub holds_key: bool,
}

impl Entry {
    /// The entry as the control API shows it: bodies that are JSON shown as JSON.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_else(|_| json!({}));
        for side in ["request", "response"] {
            if let Some(m) = v.get_mut(side)
                && let Some(Value::String(text)) = m.get("body")
                && let Ok(parsed) = serde_json::from_str::<Value>(text)
            {
                m["body"] = parsed;
            }
        }
        v
    }

    /// An entry as [`Self::to_json`] showed it (the control API's journal), read back.
    pub fn from_json(mut v: Value) -> Option<Entry> {
        for side in ["request", "response"] {
            if let Some(m) = v.get_mut(side)
                && let Some(body) = m.get("body").filter(|b| !b.is_string() && !b.is_null())
            {
                m["body"] = Value::String(body.to_string());
            }
        }
        serde_json::from_value(v).ok()
    }

    /// Roughly what it costs to keep.
    pub fn weight(&self) -> usize {
        match &self.what {
            What::Http { request, response, facts, .. } => request.weight() + response.weight() + facts.weight(),
            What::XmppReceived { stanza, .. } | What::XmppSent { stanza, .. } => 64 + json_len(stanza),
            What::XmppOpened | What::XmppClosed | What::XmppLost => 64,
        }
    }

    /// A line naming the entry in a violation's text.
    pub fn describe(&self) -> String {
        let conn = match self.connection {
            Some(Conn::Http(n)) => format!(" (HTTP connection {n})"),
            Some(Conn::Xmpp(n)) => format!(" (XMPP connection {n})"),
            None => String::new(),
        };
        let what = match &self.what {
            What::Http { request, response, .. } => format!(
                "{} {} answered {}",
                request.method.as_deref().unwrap_or("?"),
                request.path.as_deref().unwrap_or("?"),
                response.status.unwrap_or(0)
            ),
            What::XmppOpened => "XMPP connection opened".into(),
            What::XmppClosed => "XMPP connection closed".into(),
            What::XmppLost => "XMPP connection lost when the server stopped".into(),
            What::XmppReceived { stanza, .. } => format!("XMPP message from the app server {stanza}"),
            What::XmppSent { stanza, .. } => format!("XMPP message to the app server {stanza}"),
        };
        format!("#{} at {}{conn}: {what}", self.seq, clock_text(self.stamp.at_ms))
    }
}

/// A sender-clock time as `HH:MM:SS.mmm` (UTC): what violations quote.
pub fn clock_text(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}.{:03}", (s / 3600) % 24, (s / 60) % 60, s % 60, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal holds what it counts: a body or stanza cut keeps no more room than it shows
    /// (a 1 MiB body cut to 16 KiB kept its 1 MiB, and a sender's 512 KiB of entries held 30
    /// MiB), whether the text was a body, a stanza's string, or a stanza made into text.
    #[test]
    fn what_is_cut_keeps_no_room_past_the_cut() {
        let big = "é".repeat(600 * 1024);
        let mut message = Message { body: big.clone(), ..Default::default() };
        message.cut();
        assert_eq!(message.body.len() + message.body_cut, big.len());
        assert!(message.body.capacity() <= Message::BODY_KEPT, "{}", message.body.capacity());
        for stanza in [Value::String(big.clone()), serde_json::json!({"data": {"x": big}})] {
            let mut what = What::XmppSent { stanza, stanza_cut: 0 };
            what.cut();
            let What::XmppSent { stanza: Value::String(text), stanza_cut } = what else { panic!("not cut to text") };
            assert!(stanza_cut > 0);
            assert!(text.capacity() <= Message::BODY_KEPT, "{}", text.capacity());
        }
    }

    #[test]
    fn facts_found_read_back_as_they_were_pushed() {
        let devices = [
            Device { id: "a".into(), known: true, ios: true, package: Some("com.x".into()), ..Default::default() },
            Device { id: "é-b".into(), unregistered: true, held_keys: Some(4), holds_key: true, ..Default::default() },
            Device {
                id: String::new(),
                known: true,
                held_keys: Some(0),
                package: Some(String::new()),
                ..Default::default()
            },
        ];
        let mut found = FactsFound { to_key: true, ..Default::default() };
        for d in &devices {
            found.push(DeviceFound {
                id: &d.id,
                known: d.known,
                ios: d.ios,
                unregistered: d.unregistered,
                package: d.package.as_deref(),
                held_keys: d.held_keys,
                holds_key: d.holds_key,
            });
        }
        assert_eq!(found.facts(), Facts { to_key: true, devices: devices.to_vec() });
        assert_eq!(FactsFound::default().facts(), Facts::default());
    }
}
