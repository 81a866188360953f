//! The XMPP adapter: the connection server (CCS) over one byte stream per app server.
//!
//! Stream negotiation, SASL PLAIN as `<sender id>@gcm.googleapis.com` with the server key,
//! resource binding, then `<message><gcm xmlns="google:mobile:data">JSON</gcm></message>`
//! stanzas, each answered with an ack or a nack. Sends go through the same model calls as
//! HTTP (`http::parse_send`, `Model::send`), so both transports share state and rules.

use std::future::Future;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use super::faults::{Fault, Variant};
use super::http::parse_send;
use super::model::{Model, Path, SendOutcome, SendResult, Via};
use super::slots::{Probe, Slot, Slots};
use super::{LoginSlot, Reference, state};
use crate::xmpp::{self as wire, Element, Event, StreamParser};

/// Accepts app-server connections on `listener` until `shutdown` completes, within the
/// reference's connection policy (a cap on open connections; deadlines to log in and for
/// idleness).
pub async fn serve(
    listener: TcpListener,
    reference: Reference,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Slots::new(reference.connection_policy().max_connections);
    super::accept_loop(listener, "XMPP", shutdown, move |socket| {
        let Some(slot) = slots.take(Probe::of(&socket)) else { return };
        let reference = reference.clone();
        tokio::spawn(async move {
            serve_connection_from(socket, reference, tokio::time::Instant::now(), Some(slot)).await;
        });
    })
    .await
}

/// Like [`serve`], with TLS from the first byte (as CCS did). The handshake counts toward the
/// login deadline.
pub async fn serve_tls(
    listener: TcpListener,
    reference: Reference,
    config: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let slots = Slots::new(reference.connection_policy().max_connections);
    super::accept_loop(listener, "XMPP (TLS)", shutdown, move |socket| {
        let Some(slot) = slots.take(Probe::of(&socket)) else { return };
        let (acceptor, reference) = (acceptor.clone(), reference.clone());
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let deadline = reference.connection_policy().login_timeout;
            // Told to make room during its handshake, it goes then (not at the deadline).
            let stream = tokio::select! {
                accepted = tokio::time::timeout(deadline, acceptor.accept(socket)) => accepted.ok().and_then(Result::ok),
                () = slot.evicted() => None,
            };
            if stream.is_none() {
                slot.linger().await;
            }
            if let Some(stream) = stream {
                serve_connection_from(stream, reference, started, Some(slot)).await;
            }
        });
    })
    .await
}

/// Where a connection stands in the negotiation.
struct Session {
    /// The authenticated sender, after SASL success.
    sender: Option<String>,
    /// The model's id for this connection, after SASL success.
    conn: Option<u64>,
    streams: u32,
    /// Downstream messages taken on this connection (for the pipelining fault).
    downstream: usize,
    /// Ids for the stanzas the server sends.
    sent: u64,
    /// The domain the app server logged in with.
    domain: &'static str,
    /// Its sender's count of logged-in connections, after SASL success.
    login: Option<LoginSlot>,
    /// When it was bound (wall clock, µs), for the journal.
    opened_wall_us: u64,
    /// What the stanza being answered got back, as JSON (for the journal).
    replied: Vec<Value>,
    /// Whether that stanza was a downstream message (its ack may be held back).
    downstream_reply: bool,
    /// Acks held back by a script, with when each is written.
    held: Vec<(tokio::time::Instant, String, Vec<Value>)>,
}

/// Serves one app-server connection to its end.
pub async fn connection<S: AsyncRead + AsyncWrite + Unpin>(io: S, reference: Reference) {
    serve_connection_from(io, reference, tokio::time::Instant::now(), None).await;
}

/// Serves one connection that began at `started` (its login deadline runs from there),
/// holding `slot` of its listener's cap (when it has one) until it ends.
async fn serve_connection_from<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    reference: Reference,
    started: tokio::time::Instant,
    mut slot: Option<Slot>,
) {
    let mut parser = StreamParser::default();
    let mut session = Session {
        sender: None,
        conn: None,
        streams: 0,
        downstream: 0,
        sent: 0,
        domain: wire::DOMAIN,
        login: None,
        opened_wall_us: 0,
        replied: Vec::new(),
        downstream_reply: false,
        held: Vec::new(),
    };
    let policy = reference.connection_policy();
    // Until it logs in, a peer's writes end at the login deadline too: one that never reads
    // cannot hold its slot for the idle timeout.
    let mut deadlined =
        Deadlined { io: &mut io, write_timeout: policy.idle_timeout, until: Some(started + policy.login_timeout) };
    serve_connection(&mut deadlined, &reference, &mut parser, &mut session, started, &mut slot).await;
    if let Some(conn) = session.conn {
        // What it had not acknowledged goes to the sender's other connections, or waits.
        reference.with_model(|m| {
            reference.record(|| state::Input::CcsDisconnect { conn });
            m.ccs_disconnect(conn);
            journal(m, &reference, &session, crate::verdicts::What::XmppClosed);
        });
    }
    // Close gracefully, briefly: our side first (TLS close_notify, then FIN), then read what
    // the peer still sends until it closes. Dropping a socket with unread data resets it, and
    // a reset can discard the last stanzas written (a client then sees ECONNRESET).
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        let _ = io.shutdown().await;
        let mut sink = [0u8; 1024];
        while let Ok(n) = io.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Deadlined<'_, S>,
    reference: &Reference,
    parser: &mut StreamParser,
    session: &mut Session,
    started: tokio::time::Instant,
    slot: &mut Option<Slot>,
) {
    let policy = reference.connection_policy();
    let mut buf = vec![0u8; 16 * 1024];
    let mut last_heard = started;
    loop {
        // Armed before looking, so that nothing queued meanwhile is missed.
        let notified = reference.changed();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Everything the events read so far call for is answered at once: their inputs go to
        // the journal in one sync, and nothing is written before it.
        let mut out = String::new();
        let mut unsettled = super::Unsettled::default();
        let mut close = false;
        loop {
            let event = match parser.next_event() {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => {
                    reference.settle(unsettled);
                    out.push_str(&stream_error("not-well-formed", &e.to_string()));
                    let _ = io.write_all(out.as_bytes()).await;
                    return;
                }
            };
            if let (Event::StreamOpen(_), Some(slot)) = (&event, slot.as_ref()) {
                slot.reached(super::slots::Progress::StreamOpened);
            }
            // What was queued before this stanza goes out before its reply (once bound: the
            // bind result itself must come first), and is journaled before it.
            if session.conn.is_some() {
                unsettled = unsettled.and(take_outbox(reference, session, &mut out));
            }
            let ((reply, ends), u) = reference.with_model_unsettled(|m| answer(m, session, event, reference));
            unsettled = unsettled.and(u);
            if session.login.is_some() {
                // Logged in: no longer one of the listener's anonymous connections.
                if !slot.as_mut().is_none_or(Slot::logged_in) {
                    // Told to make room meanwhile, and the cap has no other place.
                    reference.settle(unsettled);
                    let _ = io.write_all(stream_error("policy-violation", EVICTED).as_bytes()).await;
                    return;
                }
                io.until = None;
            }
            out.push_str(&reply);
            if ends {
                close = true;
                break;
            }
        }
        // What these stanzas queued goes out after their replies, in the order the journal
        // lists it: a receipt of a message the app server just sent follows that message's ack.
        if !close {
            unsettled = unsettled.and(take_outbox(reference, session, &mut out));
        }
        reference.settle(unsettled);
        if let Some(why) = reference.broken() {
            // Not kept: nothing these stanzas did may be acknowledged.
            let _ = io.write_all(stream_error("internal-server-error", &why).as_bytes()).await;
            return;
        }
        if (!out.is_empty() && io.write_all(out.as_bytes()).await.is_err()) || close {
            return;
        }
        if !flush_outbox(io, reference, session).await {
            return;
        }
        // Not logged in yet: the login deadline from connecting. Logged in: idleness.
        let (deadline, why) = match session.sender {
            None => (started + policy.login_timeout, "no login within the deadline"),
            Some(_) => (last_heard + policy.idle_timeout, "idle past the deadline"),
        };
        // Acks a script holds back are written when their time comes.
        let release = session.held.iter().map(|h| h.0).min();
        // Not logged in yet, it may be told to make room for a newer connection.
        tokio::select! {
            () = evicted_by(slot.as_ref()) => {
                if let Some(s) = slot.as_ref() {
                    s.linger().await;
                }
                let _ = io.write_all(stream_error("policy-violation", EVICTED).as_bytes()).await;
                return;
            }
            () = sleep_until_some(release) => {
                if !release_held(io, reference, session).await {
                    return;
                }
            }
            read = io.io.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    last_heard = tokio::time::Instant::now();
                    parser.feed(&buf[..n]);
                }
            },
            () = &mut notified => {}
            () = tokio::time::sleep_until(deadline) => {
                let _ = io.write_all(stream_error("connection-timeout", why).as_bytes()).await;
                return;
            }
        }
    }
}

const EVICTED: &str = "too many connections have not logged in: the oldest makes room";

async fn evicted_by(slot: Option<&Slot>) {
    match slot {
        Some(s) => s.evicted().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes the held acks whose time has come; false if the socket is gone.
async fn release_held<S: AsyncWrite + Unpin>(
    io: &mut Deadlined<'_, S>,
    reference: &Reference,
    session: &mut Session,
) -> bool {
    let now = tokio::time::Instant::now();
    let (due, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut session.held).into_iter().partition(|h| h.0 <= now);
    session.held = kept;
    let mut out = String::new();
    reference.with_model(|m| {
        for (_, xml, jsons) in due {
            out.push_str(&xml);
            for json in jsons {
                journal(m, reference, session, crate::verdicts::What::XmppSent { stanza: json, stanza_cut: 0 });
            }
        }
    });
    io.write_all(out.as_bytes()).await.is_ok()
}

/// Journals an XMPP exchange of a bound connection under its sender.
fn journal(m: &mut Model, reference: &Reference, session: &Session, what: crate::verdicts::What) {
    let (Some(sender), Some(conn)) = (&session.sender, session.conn) else { return };
    reference.journal_xmpp(m, sender, conn, session.opened_wall_us, what);
}

/// A connection whose writes have a deadline: a peer that takes nothing cannot hold a
/// writer (and what waits for it) forever.
struct Deadlined<'a, S> {
    io: &'a mut S,
    write_timeout: std::time::Duration,
    /// The login deadline, before login: no write outlasts it.
    until: Option<tokio::time::Instant>,
}

impl<S: AsyncWrite + Unpin> Deadlined<'_, S> {
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let idle = tokio::time::Instant::now() + self.write_timeout;
        let deadline = self.until.map_or(idle, |login| login.min(idle));
        match tokio::time::timeout_at(deadline, self.io.write_all(bytes)).await {
            Ok(done) => done,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }
}

/// Writes what the model queued for this connection; false if the socket is gone.
async fn flush_outbox<S: AsyncWrite + Unpin>(
    io: &mut Deadlined<'_, S>,
    reference: &Reference,
    session: &mut Session,
) -> bool {
    let mut out = String::new();
    let unsettled = take_outbox(reference, session, &mut out);
    reference.settle(unsettled);
    reference.broken().is_none() && (out.is_empty() || io.write_all(out.as_bytes()).await.is_ok())
}

/// Takes what waits for this connection into `out`, as stanzas (to be written once settled).
fn take_outbox(reference: &Reference, session: &mut Session, out: &mut String) -> super::Unsettled {
    let Some(conn) = session.conn else { return super::Unsettled::default() };
    let (outbox, unsettled) = reference.with_model_unsettled(|m| {
        let outbox = m.ccs_take(conn);
        // Taking nothing changes nothing: not kept.
        if !outbox.is_empty() {
            reference.record(|| state::Input::CcsTake { conn });
        }
        for json in &outbox {
            journal(m, reference, session, crate::verdicts::What::XmppSent { stanza: json.clone(), stanza_cut: 0 });
        }
        outbox
    });
    for json in outbox {
        session.sent += 1;
        out.push_str(&wire::gcm_message(&format!("ccs-{}", session.sent), &json.to_string()));
    }
    unsettled
}

fn stream_error(condition: &str, text: &str) -> String {
    format!(
        "<stream:error><{condition} xmlns=\"{}\"/><text xmlns=\"{}\">{}</text></stream:error></stream:stream>",
        wire::STREAMS_NS,
        wire::STREAMS_NS,
        wire::escape(text)
    )
}

/// The reply to one event, and whether the stream ends with it.
fn answer(model: &mut Model, session: &mut Session, event: Event, reference: &Reference) -> (String, bool) {
    match event {
        Event::StreamOpen(_) => {
            session.streams += 1;
            let header = format!(
                "<?xml version='1.0'?><stream:stream from=\"{}\" id=\"s{}\" version=\"1.0\" xmlns=\"jabber:client\" xmlns:stream=\"http://etherx.jabber.org/streams\">",
                wire::DOMAIN,
                session.streams
            );
            let features = match session.sender {
                None => format!(
                    "<stream:features><mechanisms xmlns=\"{}\"><mechanism>X-OAUTH2</mechanism><mechanism>X-GOOGLE-TOKEN</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>",
                    wire::SASL_NS
                ),
                Some(_) => format!(
                    "<stream:features><bind xmlns=\"{}\"/><session xmlns=\"{}\"/></stream:features>",
                    wire::BIND_NS,
                    wire::SESSION_NS
                ),
            };
            (header + &features, false)
        }
        Event::StreamClose => ("</stream:stream>".into(), true),
        Event::Stanza(stanza) => match (stanza.name.as_str(), &session.sender) {
            ("auth", None) => authenticate(model, session, &stanza, reference),
            (_, None) => (stream_error("not-authorized", "authenticate with SASL PLAIN first"), true),
            ("iq", Some(_)) => (iq(model, session, &stanza, reference), false),
            ("presence", Some(_)) => (String::new(), false),
            ("message", Some(_)) if session.conn.is_none() => {
                (stream_error("not-authorized", "bind a resource before sending messages"), true)
            }
            ("message", Some(_)) => (message_journaled(model, session, &stanza, reference), false),
            (other, Some(_)) => {
                (stream_error("unsupported-stanza-type", &format!("<{other}> is not a stanza here")), true)
            }
        },
    }
}

fn authenticate(model: &mut Model, session: &mut Session, auth: &Element, reference: &Reference) -> (String, bool) {
    let failure = |condition: &str| {
        (format!("<failure xmlns=\"{}\"><{condition}/></failure></stream:stream>", wire::SASL_NS), true)
    };
    if auth.attr("mechanism") != Some("PLAIN") {
        return failure("invalid-mechanism");
    }
    let Some(decoded) = wire::base64_decode(&auth.text()) else { return failure("incorrect-encoding") };
    let text = String::from_utf8_lossy(&decoded).into_owned();
    // authzid \0 authcid \0 password; the authcid is `<sender id>@gcm.googleapis.com`.
    let parts: Vec<&str> = text.split('\0').collect();
    let [_, user, password] = parts.as_slice() else { return failure("incorrect-encoding") };
    // `<sender id>@gcm.googleapis.com`, or `@fcm.googleapis.com` as FCM-era clients log in.
    let (sender_id, domain) = wire::app_server(user).unwrap_or((user, wire::DOMAIN));
    if domain == wire::FCM_DOMAIN && model.faults().has(Fault::XmppFcmDomain) {
        return failure("not-authorized");
    }
    let valid = model.sender_for_key(password) == Some(sender_id)
        || (model.faults().has(Fault::XmppAuth) && model.has_sender(sender_id));
    if !valid {
        return failure("not-authorized");
    }
    // Its share of connections held: refused, as a server at its limit refuses a login.
    let Some(login) = reference.xmpp_login(sender_id) else { return failure("temporary-auth-failure") };
    session.login = Some(login);
    session.sender = Some(sender_id.to_string());
    session.domain = domain;
    (format!("<success xmlns=\"{}\"/>", wire::SASL_NS), false)
}

fn iq(model: &mut Model, session: &mut Session, stanza: &Element, reference: &Reference) -> String {
    let id = wire::escape(stanza.attr("id").unwrap_or(""));
    let sender = session.sender.clone().unwrap_or_default();
    if let Some(bind) = stanza.child("bind") {
        // Bound: from now on the connection takes upstream messages, receipts and control.
        if session.conn.is_none() {
            reference.record(|| state::Input::CcsConnect { sender: sender.clone() });
            session.conn = Some(model.ccs_connect(&sender));
            session.opened_wall_us = crate::verdicts::entry::wall_us();
            journal(model, reference, session, crate::verdicts::What::XmppOpened);
        }
        let resource =
            bind.child("resource").map(Element::text).filter(|r| !r.is_empty()).unwrap_or_else(|| "gcmspec".into());
        let jid = format!("{sender}@{}/{resource}", session.domain);
        return format!(
            "<iq id=\"{id}\" type=\"result\"><bind xmlns=\"{}\"><jid>{}</jid></bind></iq>",
            wire::BIND_NS,
            wire::escape(&jid)
        );
    }
    if stanza.child("session").is_some() || stanza.attr("type") == Some("result") {
        return format!("<iq id=\"{id}\" type=\"result\"/>");
    }
    format!(
        "<iq id=\"{id}\" type=\"error\"><error type=\"cancel\"><feature-not-implemented xmlns=\"{}\"/></error></iq>",
        wire::STANZAS_NS
    )
}

fn stanza_error(stanza: &Element, condition: &str) -> String {
    format!(
        "<message id=\"{}\" type=\"error\"><error type=\"modify\"><{condition} xmlns=\"{}\"/></error></message>",
        wire::escape(stanza.attr("id").unwrap_or("")),
        wire::STANZAS_NS
    )
}

fn reply(session: &mut Session, stanza: &Element, json: &Value) -> String {
    session.replied.push(json.clone());
    wire::gcm_message(stanza.attr("id").unwrap_or(""), &json.to_string())
}

/// A `<gcm>` message from the app server, answered, with both journaled; a downstream
/// message's answer may be held back by a script (late acks).
fn message_journaled(model: &mut Model, session: &mut Session, stanza: &Element, reference: &Reference) -> String {
    model.observe();
    session.replied.clear();
    session.downstream_reply = false;
    let xml = message(model, session, stanza, reference);
    // A held ack is part of how the message was answered: decided before the entry is made,
    // so that the entry names the script.
    let hold = match (&session.sender, session.downstream_reply && !xml.is_empty()) {
        (Some(sender), true) => model.scripted_hold(sender),
        _ => None,
    };
    let seen = model.observed();
    let payload = stanza.gcm_payload().map(|p| serde_json::from_str::<Value>(&p).unwrap_or(Value::String(p)));
    if let Some(payload) = payload {
        let scripted = (!seen.scripted.is_empty()).then(|| seen.scripted.join("; "));
        journal(
            model,
            reference,
            session,
            crate::verdicts::What::XmppReceived {
                stanza: payload,
                stanza_cut: 0,
                scripted,
                facts: std::sync::Arc::new(seen.facts.facts()),
            },
        );
    }
    let replied = std::mem::take(&mut session.replied);
    if let (Some(ms), Some(sender)) = (hold, session.sender.clone()) {
        reference.record(|| state::Input::XmppScripted { sender, hold: true });
        let at = tokio::time::Instant::now() + std::time::Duration::from_millis(ms);
        session.held.push((at, xml, replied));
        return String::new();
    }
    for json in replied {
        journal(model, reference, session, crate::verdicts::What::XmppSent { stanza: json, stanza_cut: 0 });
    }
    xml
}

fn nack(from: &str, message_id: &Value, error: &str, description: &str) -> Value {
    json!({ "message_type": "nack", "from": from, "message_id": message_id, "error": error, "error_description": description })
}

/// The CCS error code for a per-registration error of the model.
fn ccs_error(error: &str) -> &'static str {
    match error {
        "NotRegistered" => "DEVICE_UNREGISTERED",
        "InvalidRegistration" | "MismatchSenderId" => "BAD_REGISTRATION",
        "Unavailable" => "SERVICE_UNAVAILABLE",
        "InternalServerError" => "INTERNAL_SERVER_ERROR",
        "DeviceMessageRateExceeded" => "DEVICE_MESSAGE_RATE_EXCEEDED",
        "TopicsMessageRateExceeded" => "TOPICS_MESSAGE_RATE_EXCEEDED",
        _ => "INVALID_JSON",
    }
}

fn message(model: &mut Model, session: &mut Session, stanza: &Element, reference: &Reference) -> String {
    let (Some(sender), Some(conn)) = (session.sender.clone(), session.conn) else { return String::new() };
    let Some(payload) = stanza.gcm_payload() else {
        return if model.faults().has(Fault::XmppBadRequest) {
            reply(session, stanza, &nack("", &Value::Null, "INVALID_JSON", "no gcm payload"))
        } else {
            stanza_error(stanza, "bad-request")
        };
    };
    let parsed = serde_json::from_str::<Value>(&payload);
    let why = match &parsed {
        Ok(Value::Object(_)) => String::new(),
        Ok(_) => "the gcm payload is JSON, but not an object".to_string(),
        Err(e) => format!("the gcm payload is not valid JSON: {e}"),
    };
    let body: Map<String, Value> = match parsed {
        Ok(Value::Object(o)) => o,
        _ if model.faults().has(Fault::XmppInvalidJson) => return String::new(),
        _ if model.faults().has(Fault::XmppInvalidJsonAcked) => {
            return reply(session, stanza, &json!({ "message_type": "ack", "from": "", "message_id": Value::Null }));
        }
        _ if model.variants().has(Variant::InvalidJsonStanzaError) => return stanza_error(stanza, "bad-request"),
        _ => return reply(session, stanza, &nack("", &Value::Null, "INVALID_JSON", &why)),
    };
    let message_id = body.get("message_id").cloned().unwrap_or(Value::Null);
    let to = body.get("to").and_then(Value::as_str).unwrap_or("").to_string();
    if let Some(kind) = body.get("message_type").and_then(Value::as_str) {
        // The app server acknowledges (or refuses: either way, done) an upstream message or
        // a receipt, on the connection that received it.
        let id = message_id.as_str().unwrap_or_default();
        let code = if model.variants().has(Variant::OtherNackCodes) { "INVALID_JSON" } else { "BAD_ACK" };
        reference.record(|| state::Input::CcsAck { conn, message_id: id.to_string() });
        return match model.ccs_ack(conn, id) {
            Ok(()) => String::new(),
            Err(_) if model.variants().has(Variant::SilentBadAck) => String::new(),
            Err(e) => reply(session, stanza, &nack(&to, &message_id, code, &format!("{kind}: {e}"))),
        };
    }
    if !message_id.is_string() {
        return reply(
            session,
            stanza,
            &nack(&to, &message_id, "INVALID_JSON", "missing `message_id`: every downstream message needs one"),
        );
    }
    session.downstream_reply = true;
    // Refused before it is read as a send (a scripted nack, a draining connection), it is
    // still journaled with what `to` named: a key's failure is the group's to retry.
    let scripted = model.scripted_nack(&sender);
    let draining =
        scripted.is_none() && model.ccs_is_draining(conn) && !model.faults().has(Fault::XmppDrainingRefusesNew);
    if (scripted.is_some() || draining)
        && let Some(to) = body.get("to").and_then(Value::as_str)
    {
        model.observe_to(&sender, to);
    }
    if let Some(code) = scripted {
        reference.record(|| state::Input::XmppScripted { sender: sender.clone(), hold: false });
        let why = match code {
            "SERVICE_UNAVAILABLE" | "INTERNAL_SERVER_ERROR" => "scripted: the service could not take it now",
            _ => "scripted",
        };
        return reply(session, stanza, &nack(&to, &message_id, code, why));
    }
    if draining {
        let code =
            if model.variants().has(Variant::OtherNackCodes) { "SERVICE_UNAVAILABLE" } else { "CONNECTION_DRAINING" };
        return reply(session, stanza, &nack(&to, &message_id, code, "this connection is draining: open a new one"));
    }
    session.downstream += 1;
    if model.faults().has(Fault::XmppPipelined) && session.downstream > model.limits().max_pending_per_connection / 2 {
        return reply(session, stanza, &nack(&to, &message_id, "QUOTA_EXCEEDED", "too many pending messages"));
    }
    if body.contains_key("registration_ids") {
        return reply(
            session,
            stanza,
            &nack(&to, &message_id, "INVALID_JSON", "XMPP sends to one `to`; `registration_ids` is HTTP only"),
        );
    }
    let (target, mut message) = match parse_send(model, &body, Via::Xmpp) {
        Ok(parsed) => parsed,
        Err(resp) => {
            let why = resp.body_json().and_then(|b| b["error"].as_str().map(str::to_string)).unwrap_or_default();
            return reply(session, stanza, &nack(&to, &message_id, "INVALID_JSON", &why));
        }
    };
    if body.get("delivery_receipt_requested") == Some(&Value::Bool(true)) {
        message.receipt_for = message_id.as_str().map(str::to_string);
    }
    let faults = model.faults().clone();
    let ack = |extra: Value| {
        let mut a = json!({ "message_type": "ack", "from": to, "message_id": message_id });
        if faults.has(Fault::XmppAck) {
            a.as_object_mut().expect("an object").remove("message_id");
        }
        if let (Some(a), Value::Object(extra)) = (a.as_object_mut(), extra) {
            a.extend(extra);
        }
        a
    };
    // A device-group send is answered from the notification key (seed 003's examples).
    let group_answer = |mut a: Value| {
        if faults.has(Fault::XmppGroupAck) {
            a["from"] = json!(format!("{sender}@{}", crate::xmpp::DOMAIN));
        }
        if faults.has(Fault::XmppGroupAckNoMessageId) {
            a.as_object_mut().expect("an object").remove("message_id");
        }
        if faults.has(Fault::XmppGroupAckOtherMessageId) {
            a["message_id"] = json!(stanza.attr("id").unwrap_or_default());
        }
        a
    };
    reference.record(|| state::Input::XmppSend {
        sender: sender.clone(),
        target: target.clone(),
        message: message.clone(),
    });
    let json = match model.send(&sender, target, message) {
        // The device-group faults break both transports alike.
        SendOutcome::Group { success, failed } => {
            let mut counts = json!({ "success": success });
            if !(failed.is_empty() && faults.on(Fault::SendSuccess, Path::XmppKey)) {
                counts["failure"] = json!(failed.len());
            }
            if !failed.is_empty() && success > 0 && !faults.on(Fault::SendPartial, Path::XmppKey) {
                counts["failed_registration_ids"] = json!(failed);
            }
            group_answer(ack(counts))
        }
        SendOutcome::GroupFailed if faults.has(Fault::SendAllFailedStanzaError) => {
            return stanza_error(stanza, "service-unavailable");
        }
        SendOutcome::GroupFailed => {
            let code = if model.variants().has(Variant::OtherNackCodes) {
                "DEVICE_UNREGISTERED"
            } else {
                "SERVICE_UNAVAILABLE"
            };
            group_answer(nack(&to, &message_id, code, "the message reached no member of the group"))
        }
        SendOutcome::Multicast { results, .. } => match results.first() {
            Some(SendResult::Sent { canonical: Some(c), .. }) => ack(json!({ "registration_id": c })),
            Some(SendResult::Sent { canonical: None, .. }) => ack(json!({})),
            Some(SendResult::Error("InvalidRegistration")) if faults.has(Fault::XmppNack) => ack(json!({})),
            Some(SendResult::Error(e)) if faults.has(Fault::XmppNackUnlisted) => nack(&to, &message_id, e, e),
            Some(SendResult::Error(e)) => nack(&to, &message_id, ccs_error(e), e),
            None => nack(&to, &message_id, "INVALID_JSON", "no target"),
        },
        SendOutcome::Invalid { error, .. } => nack(&to, &message_id, "INVALID_JSON", error),
    };
    reply(session, stanza, &json)
}
