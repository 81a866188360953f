//! A blocking XMPP client for the harness: enough of an app server to speak to any CCS
//! endpoint (plain TCP), with a timeout on every read.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use serde_json::{Value, json};

use crate::xmpp::{self as wire, Element, Event, StreamParser};

/// Plain TCP, or TLS from the first byte.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

pub struct XmppClient {
    stream: Stream,
    parser: StreamParser,
    timeout: Duration,
    /// The run's deadline (when it passes, and how long it was): no read waits past it.
    cutoff: Option<(Instant, Duration)>,
    /// The first bytes the server sent, kept to tell a TLS endpoint from broken XML.
    first_bytes: Vec<u8>,
    /// Pings sent by `quiet_by_asking`, for their ids.
    asked: u64,
}

/// How SASL ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    Success,
    /// The `<failure>` condition (`not-authorized`, ...).
    Failure(String),
}

/// What an exchange cut by the run's deadline says: the check was not tried.
fn deadline_passed(d: Duration) -> String {
    super::TargetError::Deadline(d).to_string()
}

impl XmppClient {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

    fn open(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
        timeout: Duration,
        cutoff: Option<(Instant, Duration)>,
    ) -> Result<XmppClient, String> {
        let wait = match cutoff {
            Some((at, d)) => match at.checked_duration_since(Instant::now()).filter(|left| !left.is_zero()) {
                Some(left) => left.min(timeout),
                None => return Err(deadline_passed(d)),
            },
            None => timeout,
        };
        let tcp = TcpStream::connect_timeout(&addr, wait).map_err(|e| format!("cannot reach XMPP {addr}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        // Until each read sets its own: the TLS handshake runs inside the first write, and a
        // server that accepts and never speaks must not hold it past the timeout.
        tcp.set_read_timeout(Some(wait)).map_err(|e| e.to_string())?;
        tcp.set_write_timeout(Some(wait)).map_err(|e| e.to_string())?;
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some(config) => {
                let name = ServerName::from(addr.ip());
                let conn = rustls::ClientConnection::new(config, name).map_err(|e| format!("TLS to {addr}: {e}"))?;
                Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
            }
        };
        Ok(XmppClient { stream, parser: StreamParser::default(), timeout, cutoff, first_bytes: Vec::new(), asked: 0 })
    }

    fn write(&mut self, xml: &str) -> Result<(), String> {
        self.stream.write_all(xml.as_bytes()).map_err(|e| match e.kind() {
            // With TLS the handshake happens here: a server that never answers it times out.
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                format!("no answer from the XMPP server within {:?}", self.timeout)
            }
            _ => format!("XMPP write: {e}"),
        })
    }

    /// Whether the XMPP endpoint `target` declares speaks XMPP: a stream header and its
    /// features come back (over TLS when the target says so), within `timeout`.
    pub fn probe(target: &dyn super::Target, timeout: Duration) -> Result<(), String> {
        let addr = target.xmpp_address().ok_or("the target has no XMPP endpoint")?;
        let mut c = Self::open(addr, target.xmpp_tls(), timeout, target.deadline())?;
        let result = c.open_stream();
        let _ = c.stream.tcp().shutdown(std::net::Shutdown::Both);
        result.map_err(|e| format!("the XMPP endpoint {addr}: {e}"))
    }

    fn open_stream(&mut self) -> Result<(), String> {
        self.write(&format!(
            "<stream:stream to=\"{}\" version=\"1.0\" xmlns=\"jabber:client\" xmlns:stream=\"http://etherx.jabber.org/streams\">",
            wire::DOMAIN
        ))?;
        match self.next_event()? {
            Event::StreamOpen(_) => {}
            other => return Err(format!("expected a stream header, got {other:?}")),
        }
        match self.next_event()? {
            Event::Stanza(f) if f.name == "stream:features" => Ok(()),
            other => Err(format!("expected <stream:features>, got {other:?}")),
        }
    }

    /// Connects and authenticates with SASL PLAIN as `<sender_id>@gcm.googleapis.com`; on
    /// success, binds a resource. A refused login is `Ok((None, Auth::Failure))`.
    pub fn connect(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
        sender_id: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<(Option<XmppClient>, Auth), String> {
        Self::connect_in(addr, tls, sender_id, wire::DOMAIN, password, timeout)
    }

    /// Like [`Self::connect`], logging in as `<sender_id>@domain`.
    pub fn connect_in(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
        sender_id: &str,
        domain: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<(Option<XmppClient>, Auth), String> {
        Self::log_in(Self::open(addr, tls, timeout, None)?, sender_id, domain, password)
    }

    fn log_in(
        mut c: XmppClient,
        sender_id: &str,
        domain: &str,
        password: &str,
    ) -> Result<(Option<XmppClient>, Auth), String> {
        c.open_stream()?;
        let credentials = wire::base64_encode(format!("\0{sender_id}@{domain}\0{password}").as_bytes());
        c.write(&format!("<auth mechanism=\"PLAIN\" xmlns=\"{}\">{credentials}</auth>", wire::SASL_NS))?;
        match c.next_event()? {
            Event::Stanza(s) if s.name == "success" => {}
            Event::Stanza(s) if s.name == "failure" => {
                let condition = s.children.iter().find_map(|ch| match ch {
                    wire::Child::Element(e) => Some(e.name.clone()),
                    wire::Child::Text(_) => None,
                });
                return Ok((None, Auth::Failure(condition.unwrap_or_default())));
            }
            other => return Err(format!("expected SASL <success> or <failure>, got {other:?}")),
        }
        c.open_stream()?;
        c.write(&format!(
            "<iq type=\"set\" id=\"bind-1\"><bind xmlns=\"{}\"><resource>gcmspec</resource></bind></iq>",
            wire::BIND_NS
        ))?;
        match c.next_stanza()? {
            iq if iq.name == "iq" && iq.attr("type") == Some("result") => Ok((Some(c), Auth::Success)),
            other => Err(format!("expected the bind result, got {other:?}")),
        }
    }

    /// Connects to the XMPP endpoint `target` declares, with its TLS settings.
    pub fn connect_to(
        target: &dyn super::Target,
        sender_id: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<(Option<XmppClient>, Auth), String> {
        Self::connect_to_in(target, sender_id, wire::DOMAIN, password, timeout)
    }

    /// Like [`Self::connect_to`], logging in as `<sender_id>@domain`.
    pub fn connect_to_in(
        target: &dyn super::Target,
        sender_id: &str,
        domain: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<(Option<XmppClient>, Auth), String> {
        let addr = target.xmpp_address().ok_or("the target has no XMPP endpoint")?;
        Self::log_in(Self::open(addr, target.xmpp_tls(), timeout, target.deadline())?, sender_id, domain, password)
    }

    /// The next event, waiting at most the timeout.
    /// The next event, waiting at most the timeout (and never past the run's deadline).
    pub fn next_event(&mut self) -> Result<Event, String> {
        let until = Instant::now() + self.timeout;
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.parser.next_event() {
                Ok(Some(e)) => return Ok(e),
                Ok(None) => {}
                Err(e) => return Err(format!("{e}{}", self.tls_hint())),
            }
            let now = Instant::now();
            if let Some((_, d)) = self.cutoff.filter(|(at, _)| *at <= now) {
                return Err(deadline_passed(d));
            }
            let left = until.saturating_duration_since(now);
            if left.is_zero() {
                return Err(format!("no answer from the XMPP server within {:?}", self.timeout));
            }
            let wait = self.cutoff.map_or(left, |(at, _)| left.min(at.saturating_duration_since(now)));
            self.stream.tcp().set_read_timeout(Some(wait.max(Duration::from_millis(1)))).map_err(|e| e.to_string())?;
            match self.stream.read(&mut buf) {
                Ok(0) => return Err("the XMPP server closed the connection".into()),
                Ok(n) => {
                    if self.first_bytes.len() < 2 {
                        let take = n.min(2 - self.first_bytes.len());
                        self.first_bytes.extend_from_slice(&buf[..take]);
                    }
                    self.parser.feed(&buf[..n])
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(format!("XMPP read: {e}")),
            }
        }
    }

    /// A plain connection whose first bytes are a TLS record (a handshake or an alert, version
    /// 3.x) met an endpoint that takes TLS from the first byte.
    fn tls_hint(&self) -> &'static str {
        let tls_record = matches!(self.first_bytes.as_slice(), [0x15 | 0x16, 0x03, ..]);
        if tls_record && matches!(self.stream, Stream::Plain(_)) {
            " (the server answered with TLS: try --xmpp-tls)"
        } else {
            ""
        }
    }

    pub fn next_stanza(&mut self) -> Result<Element, String> {
        match self.next_event()? {
            Event::Stanza(s) => Ok(s),
            Event::StreamClose => Err("the XMPP server closed the stream".into()),
            Event::StreamOpen(_) => Err("an unexpected stream header".into()),
        }
    }

    /// Waits `wait` for anything to arrive: `Ok(None)` if nothing did.
    pub fn quiet(&mut self, wait: Duration) -> Result<Option<Value>, String> {
        let saved = self.timeout;
        self.timeout = wait;
        let got = self.next_as_json();
        self.timeout = saved;
        match got {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.starts_with("no answer") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Silence, asked rather than waited for, of a server that writes everything a connection
    /// is owed before it answers the connection's next stanza (the in-process reference): an
    /// `iq` ping goes out, and whatever arrives before its answer is what the server had to
    /// send. `Ok(None)` if only the answer came.
    pub fn quiet_by_asking(&mut self) -> Result<Option<Value>, String> {
        self.asked += 1;
        let id = format!("gcmspec-quiet-{}", self.asked);
        self.write(&format!("<iq id=\"{id}\" type=\"get\"><ping xmlns=\"urn:xmpp:ping\"/></iq>"))?;
        let stanza = self.next_stanza()?;
        if stanza.name == "iq" && stanza.attr("id") == Some(id.as_str()) {
            return Ok(None);
        }
        if let Some(payload) = stanza.gcm_payload() {
            return serde_json::from_str(&payload)
                .map(Some)
                .map_err(|e| format!("the gcm payload is not JSON ({e}): {payload}"));
        }
        Ok(Some(json!({ "stanza": stanza.name })))
    }

    pub fn send_raw(&mut self, xml: &str) -> Result<(), String> {
        self.write(xml)
    }

    /// Ends the stream and closes gracefully: our half first, then whatever the server still
    /// sends is read and dropped until it closes too (or for at most the timeout). Dropping a
    /// socket with unread data resets it, and a reset can discard what we sent last (acks)
    /// before the server reads it: a server would then rightly send those messages again.
    pub fn close(mut self) {
        let _ = self.write("</stream:stream>");
        if let Stream::Tls(s) = &mut self.stream {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
        let _ = self.stream.tcp().shutdown(std::net::Shutdown::Write);
        let mut deadline = Instant::now() + self.timeout;
        if let Some((at, _)) = self.cutoff {
            deadline = deadline.min(at);
        }
        let mut buf = [0u8; 4096];
        while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            let _ = self.stream.tcp().set_read_timeout(Some(left));
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    pub fn send_gcm(&mut self, id: &str, json: &Value) -> Result<(), String> {
        self.write(&wire::gcm_message(id, &json.to_string()))
    }

    /// The next stanza as JSON: a gcm payload as is, a stanza error as
    /// `{"stanza_error": "<condition>"}`.
    pub fn next_as_json(&mut self) -> Result<Value, String> {
        let stanza = self.next_stanza()?;
        if let Some(payload) = stanza.gcm_payload() {
            return serde_json::from_str(&payload).map_err(|e| format!("the gcm payload is not JSON ({e}): {payload}"));
        }
        if stanza.attr("type") == Some("error") {
            let condition = stanza.child("error").and_then(|e| {
                e.children.iter().find_map(|c| match c {
                    wire::Child::Element(x) => Some(x.name.clone()),
                    wire::Child::Text(_) => None,
                })
            });
            return Ok(json!({ "stanza": stanza.name, "stanza_error": condition.unwrap_or_default() }));
        }
        Err(format!("expected a gcm message or a stanza error, got {stanza:?}"))
    }
}
