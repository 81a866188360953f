//! The one interface through which the harness reaches any server.
//!
//! A [`Target`] carries HTTP exchanges. [`InProcess`] hands them to a [`Reference`] in this
//! process; [`HttpTarget`] sends them over a socket to any server. Everything above this
//! (scenarios, properties, control-API calls) is written once against the trait.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

pub mod xmpp;

use crate::reference::Reference;
use crate::reference::control;
use crate::wire::{HttpRequest, HttpResponse};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("cannot reach {url}: {why}")]
    Connection { url: String, why: String },
    #[error("bad target URL {0:?}: expected http://HOST:PORT")]
    BadUrl(String),
    #[error("{url} answered with more than {max} bytes: cut off")]
    TooLarge { url: String, max: usize },
    #[error("the target stopped answering ({0}): not tried")]
    Stopped(String),
    #[error("the run's deadline ({0:?}) passed: not tried")]
    Deadline(Duration),
}

impl TargetError {
    /// Whether a check's failure came from a run that had stopped (the target stopped
    /// answering, or the deadline passed) rather than from what the target answered: the
    /// check was not tried, and is reported so.
    pub fn means_not_tried(failure: &str) -> bool {
        failure.contains(": not tried")
            && (failure.contains("the target stopped answering (") || failure.contains("the run's deadline ("))
    }
}

pub trait Target: Send + Sync {
    /// A short name for reports: `in-process reference`, `http://127.0.0.1:4000`.
    fn describe(&self) -> String;
    fn exchange(&self, req: &HttpRequest) -> Result<HttpResponse, TargetError>;
    /// Where the server's XMPP connection server listens, if it has one.
    fn xmpp_address(&self) -> Option<SocketAddr> {
        None
    }
    /// How to speak TLS to it, if it takes TLS from the first byte.
    fn xmpp_tls(&self) -> Option<std::sync::Arc<rustls::ClientConfig>> {
        None
    }
    /// When the run's deadline passes, and how long it was: an XMPP exchange with this target
    /// waits no longer than that. No default: a wrapper that forgot to pass it on would let
    /// XMPP exchanges outlive the run.
    fn deadline(&self) -> Option<(std::time::Instant, Duration)>;
    /// Whether nothing happens here unless asked: the in-process reference on its virtual
    /// clock, which writes whatever a connection is owed before answering its next stanza.
    /// Then a check that listens for silence asks and reads the answer instead of waiting
    /// (`XmppClient::quiet_by_asking`). A wrapper that does not say so only waits longer.
    fn time_is_virtual(&self) -> bool {
        false
    }
}

/// The bundled reference, called directly for HTTP (no sockets, same adapter code). Its
/// XMPP endpoint starts on a loopback port the first time a check asks for it.
pub struct InProcess {
    reference: Reference,
    xmpp: OnceLock<Option<(tokio::runtime::Runtime, SocketAddr)>>,
}

impl InProcess {
    pub fn new(reference: Reference) -> Self {
        InProcess { reference, xmpp: OnceLock::new() }
    }

    pub fn reference(&self) -> &Reference {
        &self.reference
    }
}

impl Target for InProcess {
    fn time_is_virtual(&self) -> bool {
        self.reference.clock() == crate::reference::ClockKind::Virtual
    }

    fn describe(&self) -> String {
        "in-process reference".into()
    }
    fn deadline(&self) -> Option<(std::time::Instant, Duration)> {
        None
    }
    fn exchange(&self, req: &HttpRequest) -> Result<HttpResponse, TargetError> {
        Ok(self.reference.handle(req))
    }
    fn xmpp_address(&self) -> Option<SocketAddr> {
        let started = self.xmpp.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().ok()?;
            let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).ok()?;
            let addr = listener.local_addr().ok()?;
            // Runs as long as this target (and so its runtime) lives.
            runtime.spawn(crate::reference::xmpp::serve(listener, self.reference.clone(), std::future::pending()));
            Some((runtime, addr))
        });
        started.as_ref().map(|(_, addr)| *addr)
    }
}

/// Any server over HTTP. Exchanges block the calling thread (trials run on their own
/// threads) and end within `timeout`.
pub struct HttpTarget {
    base: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    xmpp: Option<SocketAddr>,
    xmpp_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Sent with every control-API request, for a reference started with --control-token.
    control_token: Option<String>,
}

impl HttpTarget {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// No answer of this protocol comes near this; a larger one is a misbehaving server.
    pub const MAX_RESPONSE_BYTES: usize = 8 << 20;

    pub fn new(url: &str, timeout: Duration) -> Result<HttpTarget, TargetError> {
        let base = url.trim_end_matches('/').to_string();
        if !base.starts_with("http://") || reqwest::Url::parse(&base).is_err() {
            return Err(TargetError::BadUrl(url.to_string()));
        }
        // A redirect is the server's answer, judged as such: following it would judge another
        // server, and would carry the request's headers there.
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| TargetError::Connection { url: base.clone(), why: e.to_string() })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| TargetError::Connection { url: base.clone(), why: e.to_string() })?;
        Ok(HttpTarget { base, client, runtime, xmpp: None, xmpp_tls: None, control_token: None })
    }

    /// The server's XMPP connection server, for the XMPP rules.
    pub fn with_xmpp(mut self, addr: SocketAddr) -> Self {
        self.xmpp = Some(addr);
        self
    }

    /// Control-API requests carry `Authorization: Bearer <token>`.
    pub fn with_control_token(mut self, token: String) -> Self {
        self.control_token = Some(token);
        self
    }

    /// The XMPP endpoint takes TLS from the first byte.
    pub fn with_xmpp_tls(mut self, config: std::sync::Arc<rustls::ClientConfig>) -> Self {
        self.xmpp_tls = Some(config);
        self
    }
}

impl Target for HttpTarget {
    fn describe(&self) -> String {
        match self.xmpp {
            Some(x) => format!("{} (XMPP {x})", self.base),
            None => self.base.clone(),
        }
    }

    fn deadline(&self) -> Option<(std::time::Instant, Duration)> {
        None
    }

    fn xmpp_address(&self) -> Option<SocketAddr> {
        self.xmpp
    }

    fn xmpp_tls(&self) -> Option<std::sync::Arc<rustls::ClientConfig>> {
        self.xmpp_tls.clone()
    }

    fn exchange(&self, req: &HttpRequest) -> Result<HttpResponse, TargetError> {
        let url = format!("{}{}", self.base, req.path_and_query());
        let conn = |e: reqwest::Error| TargetError::Connection { url: url.clone(), why: error_chain(&e.without_url()) };
        let method = reqwest::Method::from_bytes(req.method.as_bytes())
            .map_err(|e| TargetError::Connection { url: url.clone(), why: e.to_string() })?;
        let mut builder = self.client.request(method, &url).body(req.body.clone());
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        if let Some(token) = self.control_token.as_deref().filter(|_| req.path.starts_with(control::PREFIX)) {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        self.runtime.block_on(async {
            let resp = builder.send().await.map_err(conn)?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            // Read in chunks, so that a server sending without end is cut off, not trusted.
            let mut resp = resp;
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(conn)? {
                body.extend_from_slice(&chunk);
                if body.len() > Self::MAX_RESPONSE_BYTES {
                    return Err(TargetError::TooLarge { url: url.clone(), max: Self::MAX_RESPONSE_BYTES });
                }
            }
            Ok(HttpResponse { status, headers, body })
        })
    }
}

/// A target watched over a whole run. Once `STOP_AFTER` exchanges in a row got no answer at
/// all (refused, reset, timed out), the target is taken to have stopped answering, and every
/// later exchange fails at once rather than waiting out its own timeout; past the run's
/// deadline, likewise. The run then ends with one clear error, and what ran is reported.
pub struct Watched {
    inner: std::sync::Arc<dyn Target>,
    deadline: Option<(std::time::Instant, Duration)>,
    silent_in_a_row: std::sync::atomic::AtomicUsize,
    stopped: std::sync::Mutex<Option<String>>,
}

impl Watched {
    /// Exchanges in a row without an answer that mean the target stopped answering.
    pub const STOP_AFTER: usize = 3;

    pub fn new(inner: std::sync::Arc<dyn Target>, deadline: Option<Duration>) -> Watched {
        Watched {
            inner,
            deadline: deadline.map(|d| (std::time::Instant::now() + d, d)),
            silent_in_a_row: std::sync::atomic::AtomicUsize::new(0),
            stopped: std::sync::Mutex::new(None),
        }
    }

    /// Why the target was taken to have stopped answering, if it was.
    pub fn stopped(&self) -> Option<String> {
        self.stopped.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The run's deadline, if it has passed.
    pub fn deadline_passed(&self) -> Option<Duration> {
        self.deadline.filter(|(at, _)| std::time::Instant::now() >= *at).map(|(_, d)| d)
    }
}

impl Target for Watched {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn exchange(&self, req: &HttpRequest) -> Result<HttpResponse, TargetError> {
        use std::sync::atomic::Ordering;
        if let Some(d) = self.deadline_passed() {
            return Err(TargetError::Deadline(d));
        }
        if let Some(why) = self.stopped() {
            return Err(TargetError::Stopped(why));
        }
        let result = match self.deadline {
            None => self.inner.exchange(req),
            // The deadline holds an exchange in flight too: it is left to finish (within its own
            // timeout) on a thread of its own, and the check goes on with the deadline's error.
            Some((at, d)) => {
                let (tx, rx) = std::sync::mpsc::channel();
                let (inner, req) = (self.inner.clone(), req.clone());
                std::thread::spawn(move || {
                    let _ = tx.send(inner.exchange(&req));
                });
                rx.recv_timeout(at.saturating_duration_since(std::time::Instant::now()))
                    .unwrap_or(Err(TargetError::Deadline(d)))
            }
        };
        match &result {
            Err(e @ TargetError::Connection { .. }) => {
                let n = self.silent_in_a_row.fetch_add(1, Ordering::SeqCst) + 1;
                if n >= Self::STOP_AFTER {
                    let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
                    stopped.get_or_insert_with(|| format!("{n} exchanges in a row got no answer; the last: {e}"));
                }
            }
            _ => self.silent_in_a_row.store(0, Ordering::SeqCst),
        }
        result
    }

    fn xmpp_address(&self) -> Option<SocketAddr> {
        self.inner.xmpp_address()
    }

    fn xmpp_tls(&self) -> Option<std::sync::Arc<rustls::ClientConfig>> {
        self.inner.xmpp_tls()
    }

    fn time_is_virtual(&self) -> bool {
        self.inner.time_is_virtual()
    }

    fn deadline(&self) -> Option<(std::time::Instant, Duration)> {
        self.deadline
    }
}

/// An error and its causes on one line, each said once: a cause whose words its error
/// already gives (`cannot read F: {source}` over that source) is not said again.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let said = inner.to_string();
        if !s.contains(&said) {
            s.push_str(": ");
            s.push_str(&said);
        }
        src = inner.source();
    }
    s
}

/// Sender credentials: `{"id": ..., "key": ...}` as scenarios see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub id: String,
    pub key: String,
}

impl Sender {
    pub fn to_json(&self) -> Value {
        json!({ "id": self.id, "key": self.key })
    }
}

/// What a target offers beyond the public protocol.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// Control-API capabilities (see [`crate::catalog::CAPABILITIES`]).
    pub control: Vec<String>,
    /// The profile the server says it implements.
    pub profile: Option<String>,
    /// Credentials given on the command line, for servers without the control API.
    pub static_sender: Option<Sender>,
    /// Numbers the server declares where the documents give none (its throttle buckets):
    /// the checks use these instead of the reference's.
    pub params: BTreeMap<String, Value>,
    /// Why a capabilities answer was not taken, when the server gave one that is not a
    /// control-API document (so the run goes on as if it had no control API).
    pub note: Option<String>,
}

impl Capabilities {
    /// Asks the target's control API; a server without one offers nothing.
    pub fn probe(target: &dyn Target) -> Result<Capabilities, TargetError> {
        let resp = target.exchange(&HttpRequest::new("GET", &format!("{}capabilities", control::PREFIX)))?;
        let json = resp.body_json();
        let body = json.as_ref().filter(|b| resp.status == 200 && b["protocol"] == control::PROTOCOL);
        let mut caps = Capabilities::default();
        if matches!(resp.status, 401 | 403) {
            let why = json.as_ref().and_then(|b| b["error"].as_str().map(str::to_string));
            caps.note = Some(format!(
                "it refused the capabilities request ({}{}); a reference started with --control-token needs the same \
                 --control-token here",
                resp.status,
                why.map(|w| format!(": {w}")).unwrap_or_default()
            ));
        }
        if resp.status == 200 && body.is_none() {
            let excerpt: String = String::from_utf8_lossy(&resp.body).chars().take(120).collect();
            caps.note = Some(match &json {
                None => format!("its capabilities answer is not JSON: {excerpt:?}"),
                Some(b) => format!(
                    "its capabilities answer's protocol is {}, not \"{}\"",
                    b.get("protocol").map_or_else(|| "missing".to_string(), Value::to_string),
                    control::PROTOCOL
                ),
            });
        }
        if let Some(body) = body {
            caps.control = body["capabilities"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            caps.profile = body["profile"].as_str().map(str::to_string);
            if let Some(params) = body["params"].as_object() {
                caps.params = params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            }
        }
        if target.xmpp_address().is_some() {
            caps.control.push("xmpp".into());
        }
        Ok(caps)
    }

    pub fn has(&self, capability: &str) -> bool {
        self.control.iter().any(|c| c == capability)
    }

    /// What is missing for `needs`; every trial also needs some sender.
    pub fn missing(&self, needs: &[String]) -> Vec<String> {
        let mut missing: Vec<String> = needs.iter().filter(|n| !self.has(n)).cloned().collect();
        if !self.has("senders") && self.static_sender.is_none() {
            missing.push("senders (or --api-key with --sender-id)".into());
        }
        missing.dedup();
        missing
    }
}

/// Typed calls to the control API of a target: what a harness (or your own test) uses to
/// set up senders and devices on any server that offers it (docs/control-api.md).
///
/// ```
/// use gcmspec::driver::{Capabilities, Control, InProcess};
/// use gcmspec::reference::{Config, Reference};
///
/// // Any Target: the in-process reference here, `HttpTarget::new(url, timeout)` for a server.
/// let target = InProcess::new(Reference::new(Config::bundled()));
/// let caps = Capabilities::probe(&target).unwrap();
/// let control = Control { target: &target, caps: &caps };
/// let sender = control.new_sender().unwrap();
/// let phone = control.register(&[sender.id.clone()], None, None, None).unwrap();
/// control.set_connectivity(&phone, "offline").unwrap();
/// ```
pub struct Control<'a> {
    pub target: &'a dyn Target,
    pub caps: &'a Capabilities,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("control API {what}: answered {status}: {body}")]
    Refused { what: String, status: u16, body: String },
}

impl Control<'_> {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<HttpResponse, ControlError> {
        let mut req = HttpRequest::new(method, &format!("{}{path}", control::PREFIX));
        // A request that changes state is JSON, `{}` at least: the reference refuses any
        // other (docs/control-api.md).
        match body {
            Some(b) => req = req.with_json(&b),
            None if method != "GET" => req = req.with_json(&json!({})),
            None => {}
        }
        let resp = self.target.exchange(&req)?;
        if !(200..300).contains(&resp.status) {
            return Err(ControlError::Refused {
                what: format!("{method} {path}"),
                status: resp.status,
                body: String::from_utf8_lossy(&resp.body).into_owned(),
            });
        }
        Ok(resp)
    }

    fn field(resp: &HttpResponse, field: &str, what: &str) -> Result<String, ControlError> {
        resp.body_json().and_then(|b| b[field].as_str().map(str::to_string)).ok_or_else(|| ControlError::Refused {
            what: what.into(),
            status: resp.status,
            body: format!("no string `{field}` in {}", String::from_utf8_lossy(&resp.body)),
        })
    }

    /// A fresh sender, or the one given on the command line.
    pub fn new_sender(&self) -> Result<Sender, ControlError> {
        if !self.caps.has("senders")
            && let Some(s) = &self.caps.static_sender
        {
            return Ok(s.clone());
        }
        let resp = self.call("POST", "senders", Some(json!({})))?;
        Ok(Sender {
            id: Self::field(&resp, "sender_id", "senders")?,
            key: Self::field(&resp, "server_key", "senders")?,
        })
    }

    pub fn register(
        &self,
        sender_ids: &[String],
        account: Option<&Value>,
        platform: Option<&Value>,
        package: Option<&Value>,
    ) -> Result<String, ControlError> {
        let resp = self.call("POST", "instances", Some(Self::instance(sender_ids, account, platform, package)))?;
        Self::field(&resp, "registration_id", "instances")
    }

    /// A registration that may be refused (a step that expects it): the exchange as it was.
    pub fn try_register(
        &self,
        sender_ids: &[String],
        account: Option<&Value>,
        platform: Option<&Value>,
        package: Option<&Value>,
    ) -> Result<(HttpRequest, HttpResponse), ControlError> {
        let req = HttpRequest::new("POST", &format!("{}instances", control::PREFIX))
            .with_json(&Self::instance(sender_ids, account, platform, package));
        let resp = self.target.exchange(&req)?;
        Ok((req, resp))
    }

    fn instance(
        sender_ids: &[String],
        account: Option<&Value>,
        platform: Option<&Value>,
        package: Option<&Value>,
    ) -> Value {
        let mut body = json!({ "sender_ids": sender_ids });
        for (k, v) in [("account", account), ("platform", platform), ("package", package)] {
            if let Some(v) = v {
                body[k] = v.clone();
            }
        }
        body
    }

    pub fn unregister(&self, registration_id: &str) -> Result<(), ControlError> {
        self.call("POST", &format!("instances/{registration_id}/unregister"), None).map(|_| ())
    }

    pub fn id_token(&self, sender_id: &str, account: &str) -> Result<String, ControlError> {
        let resp = self.call("POST", "id_tokens", Some(json!({ "sender_id": sender_id, "account": account })))?;
        Self::field(&resp, "id_token", "id_tokens")
    }

    pub fn set_connectivity(&self, registration_id: &str, state: &str) -> Result<(), ControlError> {
        self.call("POST", &format!("instances/{registration_id}/connectivity"), Some(json!({ "state": state })))
            .map(|_| ())
    }

    pub fn uninstall(&self, registration_id: &str) -> Result<(), ControlError> {
        self.call("POST", &format!("instances/{registration_id}/uninstall"), None).map(|_| ())
    }

    /// Registers the app again on the same device; returns the new registration id.
    pub fn reregister(&self, registration_id: &str) -> Result<String, ControlError> {
        let resp = self.call("POST", &format!("instances/{registration_id}/reregister"), None)?;
        Self::field(&resp, "registration_id", "reregister")
    }

    pub fn upstream(&self, registration_id: &str, to: &str, data: Option<&Value>) -> Result<(), ControlError> {
        let body = json!({ "to": to, "data": data });
        self.call("POST", &format!("instances/{registration_id}/upstream"), Some(body)).map(|_| ())
    }

    pub fn handled(&self, registration_id: &str, message_id: &str) -> Result<(), ControlError> {
        self.call("POST", &format!("instances/{registration_id}/handled"), Some(json!({ "message_id": message_id })))
            .map(|_| ())
    }

    pub fn drain(&self, sender_id: &str) -> Result<(), ControlError> {
        self.call("POST", &format!("senders/{sender_id}/drain"), None).map(|_| ())
    }

    pub fn advance_clock(&self, sender_id: &str, seconds: u64) -> Result<(), ControlError> {
        self.call("POST", &format!("senders/{sender_id}/clock"), Some(json!({ "advance_seconds": seconds })))
            .map(|_| ())
    }

    /// Moves the sender's clock by milliseconds (a client's wait, on a virtual clock).
    pub fn advance_clock_ms(&self, sender_id: &str, ms: u64) -> Result<(), ControlError> {
        self.call("POST", &format!("senders/{sender_id}/clock"), Some(json!({ "advance_ms": ms }))).map(|_| ())
    }

    /// The raw inbox exchange, so that scenarios can check and snapshot it.
    pub fn inbox(&self, registration_id: &str) -> Result<(HttpRequest, HttpResponse), ControlError> {
        let req = HttpRequest::new("GET", &format!("{}instances/{registration_id}/messages", control::PREFIX));
        let resp = self.target.exchange(&req)?;
        Ok((req, resp))
    }
}
