//! The reference server: a deterministic model of the protocol, and its HTTP adapter.
//!
//! (Longer than a room should be: `Reference` is the one handle every adapter, the control
//! API and the state file share; its serving loop and accept loop stay beside it.)
//!
//! Use it in-process ([`Reference::handle`]), as a fake server inside any async Rust test
//! ([`Reference::start`], which binds `127.0.0.1:0` the way wiremock does), or standalone
//! through `gcmspec serve`, which calls [`serve`] (HTTP) and [`xmpp::serve`] (the XMPP
//! connection server) with listeners and a shutdown signal.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use tokio::net::TcpListener;

pub mod ccs;
pub mod clock;
pub mod control;
pub mod faults;
pub mod generated;
pub mod grader;
mod handoff;
pub mod http;
pub mod journal;
pub mod lifetime;
pub mod limits;
pub mod model;
pub mod packed;
mod slots;
pub mod state;
pub mod xmpp;

use crate::catalog::Profile;
use crate::wire::{HttpRequest, HttpResponse, parse_query};
pub use clock::ClockKind;
use clock::{VirtualClock, WallClock};
pub use faults::{Fault, Faults, Variant, Variants};
pub use model::StoreCaps;
use model::{Limits, LimitsError, Model};

/// How to build a reference server.
#[derive(Debug, Clone)]
pub struct Config {
    pub profile: String,
    pub limits: Limits,
    /// Seeds every random value: keys, tokens, ids. `None` draws the generator's whole
    /// state from the OS, so that nothing can be guessed (`serve` without `--seed`).
    pub seed: Option<u64>,
    pub faults: Faults,
    /// Legal behaviours that differ from the reference's defaults.
    pub variants: Variants,
    /// Larger request bodies get 413. Not a documented number: a guard for the fake.
    pub max_body_bytes: usize,
    /// Serve the control API (docs/control-api.md). Off, the server offers only the public
    /// protocol, like a third-party server would.
    pub control_api: bool,
    /// When set, every control-API request must carry `Authorization: Bearer <token>`
    /// (for a reference that others can reach; docs/control-api.md).
    pub control_token: Option<String>,
    /// Every HTTP answer comes this late, to rehearse a slow server (none by default).
    pub latency: std::time::Duration,
    /// Answer one HTTP request at a time, latency included, like a single-threaded server.
    pub one_at_a_time: bool,
    /// Deadlines and caps on connections: what one peer may hold.
    pub connections: ConnectionPolicy,
    /// Received messages kept per device for the control API; older ones are dropped (a
    /// long-running fake must not grow without end).
    pub inbox_limit: usize,
    /// How many senders, devices, groups and id_tokens it stores, in total and per sender.
    pub store: StoreCaps,
    /// With a state file: journal bytes it keeps before folding them into a snapshot (more,
    /// once the snapshot is larger; [`state`]).
    pub state_journal_bytes: u64,
    /// The app-server rules each sender's exchanges are journaled and graded against
    /// ([`journal`]); `None` journals nothing.
    pub app_rules: Option<Arc<crate::verdicts::Rulebook>>,
    /// How much the journals keep.
    pub journal_caps: journal::JournalCaps,
    /// Virtual time (the default: it moves when a sender's clock is advanced) or the
    /// machine's ([`run_clock`] then lets what waits on time happen by itself).
    pub clock: ClockKind,
}

/// What a peer may hold of a listener, and for how long (docs/robustness.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionPolicy {
    /// Open connections per listener; more are closed as soon as they are accepted. Of an
    /// XMPP listener's, at most half may be not yet logged in, so that peers without
    /// credentials cannot keep the app servers out.
    pub max_connections: usize,
    /// XMPP: logged-in connections per sender; a login past it is refused, so that one
    /// sender cannot hold the listener's whole cap.
    pub max_connections_per_sender: usize,
    /// HTTP: a request's headers must arrive within this, and an idle keep-alive connection
    /// is closed after it.
    pub header_timeout: std::time::Duration,
    /// HTTP: a request's body must arrive within this (408 otherwise).
    pub body_timeout: std::time::Duration,
    /// XMPP: from connecting to a successful login (TLS handshake included).
    pub login_timeout: std::time::Duration,
    /// XMPP: a logged-in connection that sends nothing for this long is closed; so is one
    /// that does not take what is written to it.
    pub idle_timeout: std::time::Duration,
}

impl Default for ConnectionPolicy {
    fn default() -> Self {
        use std::time::Duration;
        ConnectionPolicy {
            max_connections: 512,
            max_connections_per_sender: 32,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            login_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
        }
    }
}

impl Config {
    pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
    /// Far more than any check reads (the most is a few hundred).
    pub const DEFAULT_INBOX_LIMIT: usize = 1000;
    pub const DEFAULT_STATE_JOURNAL_BYTES: u64 = 64 << 20;

    pub fn from_profile(profile: &Profile) -> Result<Config, LimitsError> {
        Ok(Config {
            profile: profile.name.clone(),
            limits: Limits::from_profile(profile)?,
            seed: Some(0),
            faults: Faults::default(),
            variants: Variants::default(),
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            control_api: true,
            control_token: None,
            latency: std::time::Duration::ZERO,
            one_at_a_time: false,
            connections: ConnectionPolicy::default(),
            inbox_limit: Self::DEFAULT_INBOX_LIMIT,
            store: StoreCaps::default(),
            state_journal_bytes: Self::DEFAULT_STATE_JOURNAL_BYTES,
            app_rules: bundled_rulebook(&profile.name),
            journal_caps: journal::JournalCaps::default(),
            clock: ClockKind::Virtual,
        })
    }

    /// The configuration for `profile` of `catalog`, its app-server rules included.
    pub fn from_catalog(catalog: &crate::catalog::Catalog, profile: &str) -> Result<Config, String> {
        let p = catalog.profiles.get(profile).ok_or_else(|| format!("unknown profile `{profile}`"))?;
        let mut config = Config::from_profile(p).map_err(|e| e.to_string())?;
        config.app_rules = Some(Arc::new(crate::verdicts::Rulebook::from_catalog(catalog, profile)?));
        Ok(config)
    }

    /// The bundled specs' default profile (`fcm`).
    pub fn bundled() -> Config {
        let catalog = crate::bundled::catalog().expect("the bundled specs are checked by the test suite");
        let profile = &catalog.profiles[crate::bundled::DEFAULT_PROFILE];
        Config::from_profile(profile).expect("the bundled profiles are checked by the test suite")
    }

    /// Journals nothing: for a reference only the harness talks to (`gcmspec run` and
    /// `gcmspec diff` in-process), where no app server is judged and nobody reads verdicts.
    pub fn without_journal(mut self) -> Config {
        self.journal_caps.senders = 0;
        self
    }
}

/// The bundled specs' app-server rules under `profile`, read once per process.
fn bundled_rulebook(profile: &str) -> Option<Arc<crate::verdicts::Rulebook>> {
    static BOOKS: std::sync::OnceLock<std::collections::BTreeMap<String, Arc<crate::verdicts::Rulebook>>> =
        std::sync::OnceLock::new();
    BOOKS
        .get_or_init(|| {
            let Ok(catalog) = crate::bundled::catalog() else { return Default::default() };
            catalog
                .profiles
                .keys()
                .filter_map(|p| Some((p.clone(), Arc::new(crate::verdicts::Rulebook::from_catalog(&catalog, p).ok()?))))
                .collect()
        })
        .get(profile)
        .cloned()
}

struct Shared {
    model: Mutex<Model>,
    /// Woken when the model queues something for an XMPP connection.
    changed: tokio::sync::Notify,
    /// With the machine's clock: it, to be pinned while a state file replays, and the time
    /// the journal last noted (a state file keeps each input's time).
    wall: Option<WallClock>,
    noted_ms: std::sync::atomic::AtomicU64,
    site: http::Site,
    max_body_bytes: usize,
    latency: std::time::Duration,
    /// One permit when answering one request at a time.
    serial: Option<tokio::sync::Semaphore>,
    connections: ConnectionPolicy,
    /// XMPP: logged-in connections per sender, over every listener.
    logins: Mutex<std::collections::HashMap<String, usize>>,
    /// `--state`: the journal the model's inputs are kept in, if any.
    state: Option<state::StateFile>,
    /// Inputs taken under the model's lock, for the journal (only with `state`).
    tape: Mutex<Vec<state::Input>>,
    /// Set when the journal could not be written: the server then takes no more requests,
    /// since what it holds would no longer be what a restart gives back.
    broken: Mutex<Option<String>>,
}

/// A reference server's state, shared by every transport that serves it. Cheap to clone.
#[derive(Clone)]
pub struct Reference {
    shared: Arc<Shared>,
}

impl Reference {
    pub fn new(config: Config) -> Reference {
        Self::build(config, None, None)
    }

    fn build(config: Config, seed: Option<state::Seed>, state: Option<state::StateFile>) -> Reference {
        let wall = (config.clock == ClockKind::Wall).then(WallClock::default);
        let clock: Box<dyn clock::Clock> = match &wall {
            Some(w) => Box::new(w.clone()),
            None => Box::new(VirtualClock::new()),
        };
        let limits = config.limits.with_variants(&config.variants);
        let mut model = Model::new(limits, clock, config.seed, config.faults)
            .with_variants(config.variants)
            .with_inbox_limit(config.inbox_limit)
            .with_store_caps(config.store)
            .with_journals(journal::Journals::new(config.app_rules.clone(), config.journal_caps));
        if let Some(seed) = seed {
            model = model.reseeded(seed.rng());
        }
        Reference {
            shared: Arc::new(Shared {
                model: Mutex::new(model),
                changed: tokio::sync::Notify::new(),
                wall,
                noted_ms: Default::default(),
                site: http::Site {
                    profile: config.profile,
                    control_api: config.control_api,
                    control_token: config.control_token,
                },
                max_body_bytes: config.max_body_bytes,
                latency: config.latency,
                serial: config.one_at_a_time.then(|| tokio::sync::Semaphore::new(1)),
                connections: config.connections,
                logins: Mutex::default(),
                state,
                tape: Mutex::default(),
                broken: Mutex::default(),
            }),
        }
    }

    /// Answers one HTTP request. Never panics: a bug in the model becomes a 500.
    ///
    /// In-process, no socket: the same adapter `serve` runs behind its listener.
    ///
    /// ```
    /// use gcmspec::reference::{Config, Reference};
    /// use gcmspec::wire::HttpRequest;
    ///
    /// let reference = Reference::new(Config::bundled());
    /// let sender = reference.create_sender().unwrap();
    /// let send = HttpRequest::new("POST", "/fcm/send")
    ///     .with_header("authorization", &format!("key={}", sender.server_key))
    ///     .with_json(&serde_json::json!({"to": "no-such-token", "data": {"a": "b"}}));
    /// let answer = reference.handle(&send);
    /// assert_eq!(answer.status, 200);
    /// assert_eq!(answer.body_json().unwrap()["results"][0]["error"], "InvalidRegistration");
    /// ```
    pub fn handle(&self, req: &HttpRequest) -> HttpResponse {
        self.handle_on(req, None)
    }

    /// Like [`Self::handle`], for a request that came on an HTTP connection (the journal
    /// tells connections apart: a request on the connection that carried an answer, or on
    /// one opened after it, was sent after that answer was read).
    pub fn handle_on(&self, req: &HttpRequest, connection: Option<HttpConnection>) -> HttpResponse {
        self.handle_cow(Cow::Borrowed(req), connection)
    }

    /// As [`Self::handle_on`], giving the request up: a send journaled off the request path
    /// is journaled as received, not copied (the HTTP adapter's way).
    pub fn handle_owned(&self, req: HttpRequest, connection: Option<HttpConnection>) -> HttpResponse {
        self.handle_cow(Cow::Owned(req), connection)
    }

    fn handle_cow(&self, req: Cow<'_, HttpRequest>, connection: Option<HttpConnection>) -> HttpResponse {
        if req.body.len() > self.shared.max_body_bytes {
            return too_large(self.shared.max_body_bytes);
        }
        if let Some(why) = self.broken() {
            return HttpResponse::error(503, format!("the reference stopped taking requests: {why}"));
        }
        // Reads of the control API change nothing, nor does a request refused for who sent it
        // or how (no key, a foreign Host, no JSON): neither is kept, so that nobody without
        // credentials can grow the journal.
        let read = req.method == "GET" && req.path.starts_with(control::PREFIX);
        let result = catch_unwind(AssertUnwindSafe(|| {
            self.with_model(|m| {
                // Nothing is collected for a journal that keeps nothing (`--max-journals 0`).
                let journaled = m.journals.enabled() && http::journaled(&req);
                if journaled {
                    m.observe();
                }
                let resp = http::handle(m, &self.shared.site, &req);
                if !read && !matches!(resp.status, 401 | 403 | 405 | 413 | 415) {
                    self.record(|| state::Input::http(&req));
                }
                if journaled {
                    self.journal_http(m, req, &resp, connection);
                }
                resp
            })
        }));
        let resp = result.unwrap_or_else(|_| HttpResponse::error(500, "internal error in the reference server"));
        match self.broken() {
            // The answer would claim what a restart would not give back.
            Some(why) => HttpResponse::error(503, format!("the reference stopped taking requests: {why}")),
            None => resp,
        }
    }

    /// Journals an exchange of the public protocol under the sender it authenticated as.
    fn journal_http(
        &self,
        m: &mut Model,
        req: Cow<'_, HttpRequest>,
        resp: &HttpResponse,
        connection: Option<HttpConnection>,
    ) {
        let mut seen = m.observed();
        if resp.status == 401 {
            return;
        }
        // A send the model observed says whom it authenticated as; anything else is looked up.
        let Some(sender) = seen.sender.take().or_else(|| http::sender_of(m, &req)) else { return };
        let exchange = journal::Exchange {
            request: req,
            response: resp,
            scripted: (!seen.scripted.is_empty()).then(|| seen.scripted.join("; ")),
            facts: seen.facts,
        };
        let stamp = crate::verdicts::Stamp::now(m.now_ms(&sender));
        let connection = connection.map(|c| (crate::verdicts::Conn::Http(c.id), c.opened_wall_us));
        let keep = self.keeps_state();
        if let Some(entry) = m.journals.record_http(&sender, stamp, connection, exchange, keep, seen.prepared) {
            self.record(|| state::Input::Observed { sender, entry });
        }
    }

    /// How long a settled reading of `sender`'s verdicts should wait first: until the youngest
    /// copy awaiting its app server's ack is `in_flight_ms` old (its rule's), so that an ack,
    /// or a close, still on its way is judged as it lands rather than by who came first. The
    /// HTTP adapter waits so before answering `?settled=true`; in-process callers may too.
    pub fn settle_wait(&self, sender: &str) -> Option<std::time::Duration> {
        let now = journal::wall_ms();
        self.with_model(|m| m.journals.settle_wait_ms(sender, now)).map(std::time::Duration::from_millis)
    }

    /// Direct access to the model, for tests that set up state without HTTP (and read what
    /// devices received). It holds the model's lock for the call: keep `f` short.
    ///
    /// ```
    /// use gcmspec::reference::{Config, Reference};
    ///
    /// let reference = Reference::new(Config::bundled());
    /// let (sender, phone) = reference.with_model(|m| {
    ///     let sender = m.create_sender();
    ///     let phone = m.register_instance(vec![sender.sender_id.clone()], None);
    ///     (sender, phone)
    /// });
    /// assert!(reference.with_model(|m| m.is_registration_id(&phone)));
    /// assert_eq!(reference.with_model(|m| m.inbox(&phone).map(<[_]>::len)), Some(0));
    /// # let _ = sender;
    /// ```
    ///
    /// What `f` changes is not kept by a state file ([`Self::with_state`]): that keeps only
    /// what comes through the transports.
    pub fn with_model<R>(&self, f: impl FnOnce(&mut Model) -> R) -> R {
        let (result, unsettled) = self.with_model_unsettled(f);
        self.settle(unsettled);
        result
    }

    /// Like [`Self::with_model`], leaving the journal's sync (and the wake-up of XMPP writers)
    /// to [`Self::settle`]: a transport that answers several inputs at once syncs once for all.
    /// Nothing an input did may be told to anyone before it is settled.
    pub(crate) fn with_model_unsettled<R>(&self, f: impl FnOnce(&mut Model) -> R) -> (R, Unsettled) {
        // A panic inside the lock was already turned into a 500; the state is still usable.
        let mut guard = self.shared.model.lock().unwrap_or_else(|e| e.into_inner());
        let before = guard.ccs_generation();
        let result = f(&mut guard);
        let upto = self.shared.state.as_ref().and_then(|state| {
            let tape = std::mem::take(&mut *self.shared.tape.lock().unwrap_or_else(|e| e.into_inner()));
            if tape.is_empty() {
                return None;
            }
            let upto = state.queue(&tape);
            // Folded under the lock, so that the snapshot is the state after every input
            // numbered so far (theirs included: they are committed with it).
            if state.compaction_due() {
                let folded = guard
                    .snapshot()
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| state.compact(&bytes).map_err(|e| e.to_string()));
                if let Err(why) = folded {
                    self.break_off(why);
                }
            }
            Some(upto)
        });
        let changed = guard.ccs_generation() != before;
        (result, Unsettled { upto, changed })
    }

    /// Puts what the inputs did on disk, then wakes the XMPP writers it concerns.
    pub(crate) fn settle(&self, unsettled: Unsettled) {
        if let (Some(state), Some(upto)) = (&self.shared.state, unsettled.upto)
            && let Err(e) = off_the_runtime(|| state.sync(upto))
        {
            self.break_off(e.to_string());
        }
        if unsettled.changed {
            self.shared.changed.notify_waiters();
        }
    }

    /// Whether a state file keeps the inputs (and so wants journal entries whole).
    pub(crate) fn keeps_state(&self) -> bool {
        self.shared.state.is_some()
    }

    fn break_off(&self, why: String) {
        self.shared.broken.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(why);
    }

    /// Completes after the model next queues something for an XMPP connection.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.shared.changed.notified()
    }

    /// Which clock it keeps.
    pub fn clock(&self) -> ClockKind {
        if self.shared.wall.is_some() { ClockKind::Wall } else { ClockKind::Virtual }
    }

    /// Lets time pass by itself: with the machine's clock, what waits on time (throttled and
    /// held messages, expiries) is looked at every `TICK`, until `shutdown` completes. With
    /// the virtual clock there is nothing to do.
    pub async fn run_clock(&self, shutdown: impl Future<Output = ()>) {
        const TICK: std::time::Duration = std::time::Duration::from_millis(100);
        if self.shared.wall.is_none() {
            return;
        }
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(TICK) => {}
            }
            let (_, unsettled) = self.with_model_unsettled(|m| {
                if m.has_waiting() {
                    self.record(|| state::Input::Tick);
                    m.tick();
                }
            });
            self.settle(unsettled);
        }
    }

    /// Counts one more logged-in XMPP connection of `sender`, unless it has its share
    /// (`max_connections_per_sender`); the slot is given back when the guard drops.
    pub(crate) fn xmpp_login(&self, sender: &str) -> Option<LoginSlot> {
        let mut logins = self.shared.logins.lock().unwrap_or_else(|e| e.into_inner());
        let held = logins.entry(sender.to_string()).or_default();
        if *held >= self.shared.connections.max_connections_per_sender {
            return None;
        }
        *held += 1;
        Some(LoginSlot { reference: self.clone(), sender: sender.to_string() })
    }

    /// The deadlines and caps its listeners apply.
    pub fn connection_policy(&self) -> ConnectionPolicy {
        self.shared.connections
    }

    /// Starts the bundled reference on an ephemeral loopback port, as a fake server for a
    /// test. It stops when the returned handle is dropped.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let server = gcmspec::Reference::start().await;
    /// // Set up what phones would have done, straight on the model.
    /// let (sender, phones) = server.reference().with_model(|m| {
    ///     let sender = m.create_sender();
    ///     let phones: Vec<String> = (0..2).map(|_| m.register_instance(vec![sender.sender_id.clone()], None)).collect();
    ///     (sender, phones)
    /// });
    /// // The code under test talks to server.url() like it would to Google.
    /// let http = reqwest::Client::new();
    /// let create = serde_json::json!({"operation": "create", "notification_key_name": "appUser-Chris", "registration_ids": phones});
    /// let resp = http
    ///     .post(format!("{}/gcm/notification", server.url()))
    ///     .header("authorization", format!("key={}", sender.server_key))
    ///     .header("project_id", &sender.sender_id)
    ///     .header("content-type", "application/json")
    ///     .body(create.to_string())
    ///     .send()
    ///     .await
    ///     .unwrap();
    /// assert_eq!(resp.status(), 200);
    /// let key: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    /// let send = serde_json::json!({"to": key["notification_key"], "data": {"hello": "world"}});
    /// let resp = http
    ///     .post(format!("{}/fcm/send", server.url()))
    ///     .header("authorization", format!("key={}", sender.server_key))
    ///     .body(send.to_string())
    ///     .send()
    ///     .await
    ///     .unwrap();
    /// assert_eq!(resp.text().await.unwrap(), r#"{"failure":0,"success":2}"#);
    /// // Then check what each phone received.
    /// let received = server.reference().with_model(|m| m.inbox(&phones[1]).map(<[_]>::to_vec)).unwrap();
    /// assert_eq!(received[0].data, Some(serde_json::json!({"hello": "world"})));
    /// # }
    /// ```
    pub async fn start() -> RunningReference {
        Self::start_with(Config::bundled()).await.expect("binding 127.0.0.1:0")
    }

    /// Starts a reference with HTTP and XMPP on ephemeral loopback ports.
    pub async fn start_with(config: Config) -> std::io::Result<RunningReference> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let xmpp_listener = TcpListener::bind("127.0.0.1:0").await?;
        let tls_listener = TcpListener::bind("127.0.0.1:0").await?;
        let (addr, xmpp_addr, xmpp_tls_addr) =
            (listener.local_addr()?, xmpp_listener.local_addr()?, tls_listener.local_addr()?);
        let identity = crate::tls::generate().map_err(std::io::Error::other)?;
        let tls = crate::tls::server_config(&identity).map_err(std::io::Error::other)?;
        let reference = Reference::new(config);
        let (tx, rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        tokio::spawn(serve(listener, reference.clone(), stopped(rx.clone())));
        tokio::spawn(xmpp::serve(xmpp_listener, reference.clone(), stopped(rx.clone())));
        tokio::spawn(xmpp::serve_tls(tls_listener, reference.clone(), tls, stopped(rx.clone())));
        let ticking = reference.clone();
        tokio::spawn(async move { ticking.run_clock(stopped(rx)).await });
        Ok(RunningReference {
            reference,
            addr,
            xmpp_addr,
            xmpp_tls_addr,
            certificate_pem: identity.cert_pem,
            shutdown: tx,
        })
    }
}

/// Whether reading a body failed on its size, not on its framing (a malformed chunk).
fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

fn too_large(max: usize) -> HttpResponse {
    HttpResponse::error(413, format!("the request body is larger than {max} bytes"))
}

/// A reference serving HTTP and XMPP in the background until dropped.
pub struct RunningReference {
    reference: Reference,
    addr: SocketAddr,
    xmpp_addr: SocketAddr,
    xmpp_tls_addr: SocketAddr,
    certificate_pem: String,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl RunningReference {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn address(&self) -> SocketAddr {
        self.addr
    }

    /// Where the XMPP connection server listens (plain TCP).
    pub fn xmpp_address(&self) -> SocketAddr {
        self.xmpp_addr
    }

    /// Where it listens with TLS from the first byte, under [`Self::certificate_pem`].
    pub fn xmpp_tls_address(&self) -> SocketAddr {
        self.xmpp_tls_addr
    }

    /// The generated self-signed certificate of the TLS endpoint, for clients to trust.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    pub fn reference(&self) -> &Reference {
        &self.reference
    }
}

impl Drop for RunningReference {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Serves HTTP on `listener` until `shutdown` completes. Port and signal policy belong to
/// the caller (the binary, or a test). Each connection has a deadline for its headers (and
/// for its idle keep-alive), one for its body, and the listener a cap on open connections
/// (`Config::connections`).
pub async fn serve(
    listener: TcpListener,
    reference: Reference,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Served, the parsed sends are graded on a thread of their own (verdicts read the same).
    reference.with_model(|m| m.journals.grade_in_background())?;
    let policy = reference.connection_policy();
    let slots = Arc::new(tokio::sync::Semaphore::new(policy.max_connections));
    let connections = std::sync::atomic::AtomicU64::new(0);
    accept_loop(listener, "HTTP", shutdown, move |socket| {
        // Over the cap: closed at once, so the ones held cannot starve the rest.
        let Ok(slot) = slots.clone().try_acquire_owned() else { return };
        // Numbered, so that the journal can tell which requests shared a connection.
        let n = connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let connection = HttpConnection { id: n, opened_wall_us: crate::verdicts::entry::wall_us() };
        let reference = reference.clone();
        // hyper's own service: one function, no router (every path is the adapter's to route).
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let reference = reference.clone();
            async move { Ok::<_, std::convert::Infallible>(adapter(reference, connection, request).await) }
        });
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(policy.header_timeout);
            let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(socket), service).await;
            drop(slot);
        });
    })
    .await
}

/// Accepts connections on `listener` until `shutdown` completes, handing each to
/// `on_socket`. An accept error (out of file descriptors, say) does not end the listener:
/// it is reported, and accepting resumes after a pause that grows while errors repeat.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    what: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_socket: impl Fn(tokio::net::TcpStream),
) -> std::io::Result<()> {
    use std::time::Duration;
    tokio::pin!(shutdown);
    let mut pause = Duration::from_millis(10);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    pause = Duration::from_millis(10);
                    let _ = socket.set_nodelay(true);
                    on_socket(socket);
                }
                Err(e) => {
                    // The first error of a storm, then one a second at most.
                    if pause == Duration::from_millis(10) || pause == Duration::from_secs(1) {
                        eprintln!("gcmspec: {what} listener: accepting a connection failed ({e}); trying again in {pause:?}");
                    }
                    tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            },
        }
    }
}

type Response = hyper::Response<Full<Bytes>>;

/// How often a settled read looks again for the acks it waits for.
const SETTLE_POLL: std::time::Duration = std::time::Duration::from_millis(5);

async fn adapter(reference: Reference, connection: HttpConnection, request: hyper::Request<Incoming>) -> Response {
    let uri = request.uri();
    if reference.shared.site.control_api
        && let Some(sender) = control::settled_read_of(request.method().as_str(), uri.path(), uri.query())
    {
        // Bounded: twice the first wait (itself at most the rules' in_flight_ms), so a sender
        // whose copies keep coming is read all the same; looked at again every few
        // milliseconds, so an ack that lands ends it.
        if let Some(first) = reference.settle_wait(sender) {
            let deadline = tokio::time::Instant::now() + first * 2;
            while let Some(wait) = reference.settle_wait(sender) {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    break;
                }
                tokio::time::sleep(wait.min(SETTLE_POLL).min(deadline - now)).await;
            }
        }
    }
    let permit = match &reference.shared.serial {
        Some(one) => one.acquire().await.ok(),
        None => None,
    };
    if !reference.shared.latency.is_zero() {
        tokio::time::sleep(reference.shared.latency).await;
    }
    let response = answer(&reference, connection, request).await;
    drop(permit);
    response
}

/// The HTTP connection a request came on: its number, and when it was accepted (wall clock, µs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConnection {
    pub id: u64,
    pub opened_wall_us: u64,
}

async fn answer(reference: &Reference, connection: HttpConnection, request: hyper::Request<Incoming>) -> Response {
    let (parts, body) = request.into_parts();
    let max = reference.shared.max_body_bytes;
    let deadline = reference.shared.connections.body_timeout;
    let read = Limited::new(body, max).collect();
    let response = match tokio::time::timeout(deadline, read).await.map(|r| r.map(|c| c.to_bytes())) {
        Err(_) => HttpResponse::error(408, format!("the request body did not arrive within {deadline:?}")),
        Ok(Err(e)) if is_length_limit(&*e) => too_large(max),
        Ok(Err(e)) => HttpResponse::error(400, format!("the request body could not be read: {e}")),
        Ok(Ok(bytes)) => {
            let req = HttpRequest {
                method: parts.method.as_str().to_string(),
                path: parts.uri.path().to_string(),
                query: parts.uri.query().map(parse_query).unwrap_or_default(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                    .collect(),
                body: bytes.to_vec(),
            };
            reference.handle_owned(req, Some(connection))
        }
    };
    let mut builder = hyper::Response::builder().status(response.status);
    for (k, v) in &response.headers {
        builder = builder.header(k, v);
    }
    builder.body(Full::new(Bytes::from(response.body))).unwrap_or_else(|_| {
        let mut r = hyper::Response::new(Full::new(Bytes::from_static(b"internal error: unrepresentable response")));
        *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

/// What [`Reference::with_model_unsettled`] leaves to do: the journal's sync up to `upto`, and
/// whether XMPP writers have something new.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Unsettled {
    upto: Option<u64>,
    changed: bool,
}

impl Unsettled {
    pub(crate) fn and(self, other: Unsettled) -> Unsettled {
        Unsettled { upto: self.upto.max(other.upto), changed: self.changed || other.changed }
    }
}

/// Runs `f`, which waits for the disk, without holding up the other tasks of a multi-thread
/// runtime (they move to another worker meanwhile, and their inputs join the same commit).
fn off_the_runtime<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// One logged-in XMPP connection of a sender, counted toward its share until dropped.
pub(crate) struct LoginSlot {
    reference: Reference,
    sender: String,
}

impl Drop for LoginSlot {
    fn drop(&mut self) {
        let mut logins = self.reference.shared.logins.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = logins.get_mut(&self.sender) {
            *held -= 1;
            if *held == 0 {
                logins.remove(&self.sender);
            }
        }
    }
}
