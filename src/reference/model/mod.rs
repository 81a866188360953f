//! The reference server's state machine: senders, app instances, device groups, deliveries.
//!
//! Synchronous and deterministic: time comes from an injected [`Clock`], randomness from a
//! seeded generator. Transports call these methods and translate the results; nothing here
//! knows about HTTP or XMPP.
//!
//! (Longer than a room should be: the `Model` struct with the registration, clock and
//! authentication operations every other part builds on, and the model's unit tests; sends,
//! groups, the connection server, scripts, the snapshot and the waiting list are rooms of
//! their own.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::ccs::{AckError, Ccs, ForAppServer};
use super::clock::Clock;
use super::faults::{Fault, Faults, Variant, Variants, WrongUnit};
use super::lifetime::{Buckets, Instance, Queued};
pub use super::lifetime::{Connectivity, Delivered, Platform};
pub use super::limits::{Limits, LimitsError, Throttle};
pub use crate::catalog::Path;

mod connection;
mod groups;
mod instances;
pub mod script;
mod sending;
mod snapshot;
mod waiting;

pub use sending::{send_outcome_body, send_outcome_json};

/// How much the model stores, in total and per sender, so that nothing a client can reach
/// grows without bound (docs/robustness.md). Operational numbers, not the documents': a
/// shared reference sets them with `serve --max-senders` and the like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreCaps {
    pub senders: usize,
    /// Received messages kept for the control API over every device (each device keeps its
    /// newest `inbox_limit`): past it, a device that receives keeps only its newest one.
    pub received: u64,
    /// Messages stored for devices that cannot take them yet (offline, idle, throttled), in
    /// total and per sender: past it, a message that would wait is refused `Unavailable` (a
    /// retry later may find room); one the device takes at once is still delivered.
    pub stored: u64,
    pub stored_per_sender: u64,
    /// App instances (registration ids), in total and per sender they are registered for.
    pub instances: usize,
    pub instances_per_sender: usize,
    pub groups: usize,
    pub groups_per_sender: usize,
    pub id_tokens_per_sender: usize,
}

impl Default for StoreCaps {
    fn default() -> Self {
        // A sender's share is a quarter of each total, so that no two tenants can fill one;
        // a load test with a million devices for one sender raises it (the load bench does).
        StoreCaps {
            senders: 100_000,
            received: 2_000_000,
            stored: 500_000,
            stored_per_sender: 125_000,
            instances: 2_000_000,
            instances_per_sender: 500_000,
            groups: 200_000,
            groups_per_sender: 50_000,
            id_tokens_per_sender: 10_000,
        }
    }
}

/// A store cap was reached: the request is refused and nothing is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this reference stores at most {max} {what}; it holds them all (a larger --max-{flag} raises the cap)")]
pub struct StoreFull {
    pub what: &'static str,
    pub max: usize,
    pub flag: &'static str,
}

/// Why an app instance was not registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Full(#[from] StoreFull),
}

/// What one sender holds of the store.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
struct Held {
    instances: usize,
    groups: usize,
    id_tokens: usize,
}

/// Server credentials of one sender (a project).
#[derive(Debug, Clone, Serialize)]
pub struct SenderCredentials {
    pub sender_id: String,
    pub server_key: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Group {
    /// Shared with the sender's entry.
    sender: Arc<str>,
    name: String,
    /// In insertion order, so responses list members the way they were added.
    members: Vec<Arc<str>>,
    /// The account of a group made through the client-side endpoint.
    owner: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct IdToken {
    sender: String,
    account: String,
}

/// Why a device-group operation was refused. The texts are those real servers gave, which
/// client libraries match on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("notification_key already exists")]
    AlreadyExists,
    #[error("no valid registration ids")]
    NoValidRegistrationIds,
    #[error("notification_key_name doesn't match the group name of the notification_key")]
    NameMismatch,
    #[error("notification_key not found")]
    NotFound,
    #[error("too many registration ids: a notification_key has at most {max} members")]
    TooManyMembers { max: usize },
    #[error("the id_token is missing, invalid, or not for this project_id")]
    BadIdToken,
    #[error("the id_token's account does not own this group")]
    NotOwner,
    #[error("registration_ids lists an id more than once")]
    DuplicateIds,
    #[error("a registration id is already a member of the group")]
    AlreadyMember,
    #[error("a registration id is not a member of the group")]
    NotAMember,
    #[error(transparent)]
    StoreFull(StoreFull),
}

/// A server-side group operation, as parsed from a request.
#[derive(Debug, Clone)]
pub enum GroupOp {
    Create { name: String, ids: Vec<String> },
    Add { key: String, name: Option<String>, ids: Vec<String> },
    Remove { key: String, name: Option<String>, ids: Vec<String> },
}

/// A client-side operation: groups are found by name, one registration id at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientOp {
    Add,
    Remove,
}

/// A downstream message, its fields parsed by the transport and checked here.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub collapse_key: Option<String>,
    pub data: Option<Value>,
    pub notification: Option<Value>,
    /// As sent; `None` means the default. Range-checked by the model (`InvalidTtl`).
    pub time_to_live: Option<i64>,
    pub delay_while_idle: bool,
    pub dry_run: bool,
    pub restricted_package_name: Option<String>,
    /// XMPP only: the app server's message id, to report delivery with a receipt.
    pub receipt_for: Option<String>,
    /// How it came: with its target, this is the delivery path (a fault that breaks a rule on
    /// one path looks at it).
    pub via: Via,
}

/// The form a send came in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Via {
    /// JSON over HTTP.
    #[default]
    Json,
    /// The plain-text form over HTTP.
    PlainText,
    Xmpp,
}

impl Via {
    /// The delivery path of a send in this form: to a notification key, or to registration
    /// ids (one, or a list).
    pub fn path(self, to_key: bool, multicast: bool) -> Path {
        match (self, to_key) {
            (Via::Xmpp, true) => Path::XmppKey,
            (Via::Xmpp, false) => Path::Xmpp,
            (Via::PlainText, _) => Path::PlainText,
            (Via::Json, true) => Path::Key,
            (Via::Json, false) if multicast => Path::Multicast,
            (Via::Json, false) => Path::Token,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Target {
    To(String),
    RegistrationIds(Vec<String>),
    /// Neither `to` nor `registration_ids`: documented as one result with
    /// `MissingRegistration`.
    Missing,
}

/// What a send did, for the transport to render.
/// How a multicast's answer is written: as documented, or as one of the faults writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerForm {
    Documented,
    /// `canonical_ids` left out.
    WithoutCanonicalIds,
    /// `success`, `failure` and `canonical_ids` as strings.
    CountsAsText,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    /// A send to a notification key that reached at least one member.
    Group { success: usize, failed: Vec<String> },
    /// A send to a notification key whose every member failed.
    GroupFailed,
    /// Per-registration results, in request order, and how the answer is written (a fault
    /// may write it otherwise).
    Multicast { multicast_id: u64, results: Vec<SendResult>, form: AnswerForm },
    /// The message itself is invalid (`InvalidTtl`, `InvalidDataKey`, `MessageTooBig`). It
    /// still has a multicast id: clients test it for truth.
    Invalid { error: &'static str, group: bool, targets: usize, multicast_id: u64 },
}

#[derive(Debug, Clone, PartialEq)]
pub enum SendResult {
    /// Accepted; `canonical` is the registration id to use from now on, if it changed.
    Sent {
        message_id: Arc<str>,
        canonical: Option<String>,
    },
    Error(&'static str),
}

/// What an app instance is registered with (the control API's `POST instances`).
#[derive(Debug, Clone, Default)]
pub struct NewInstance {
    pub senders: Vec<String>,
    pub account: Option<String>,
    pub package: Option<String>,
    pub platform: Platform,
}

/// What a device received, as the control API reads it.
pub struct InboxView<'a> {
    pub messages: &'a [Delivered],
    /// How many messages the device received before `messages[0]`.
    pub first: u64,
    /// How many of them the inbox limit dropped.
    pub dropped: u64,
}

/// The whole state of a reference server.
pub struct Model {
    /// The numbers it keeps (the documented ones, unless a fault takes one off by one).
    limits: Limits,
    /// The numbers it declares (capabilities): the documented ones, whatever the faults.
    declared: Limits,
    clock: Box<dyn Clock>,
    /// Per-sender clock offsets: a trial moves its own sender's time, no one else's.
    offsets: HashMap<String, u64>,
    rng: StdRng,
    /// For message ids only (see [`Model::new`]).
    message_ids: StdRng,
    faults: Faults,
    variants: Variants,
    /// Sender id -> server key. The ids are shared with every instance registered for them.
    senders: HashMap<Arc<str>, String>,
    senders_by_key: HashMap<String, String>,
    /// Ids are shared with the groups they are members of.
    instances: instances::Instances,
    /// The senders of the last device registered, shared with the next if they are the same.
    last_senders: Option<super::lifetime::SenderList>,
    /// The instances with messages waiting (stored, held or throttled): what a clock advance
    /// has to look at, so that it costs the waiting messages, not every instance registered.
    waiting: waiting::Waiting,
    /// Received messages kept for the control API, per device and in all.
    kept: Arc<super::lifetime::Kept>,
    /// Old registration id -> the one that replaced it (canonical ids).
    aliases: HashMap<String, String>,
    /// Old registration id -> each sender's clock when it was replaced (the variant in which old
    /// ids stop working once time has passed).
    replaced_at: HashMap<String, Vec<(String, u64)>>,
    /// By notification key, shared with `group_names`.
    groups: HashMap<Arc<str>, Group>,
    /// (sender, name) -> notification key.
    group_names: HashMap<(String, String), Arc<str>>,
    id_tokens: HashMap<String, IdToken>,
    minted_keys: u64,
    ccs: Ccs,
    /// Token buckets shared by every device: only under the fault that throttles per sender.
    shared_buckets: Buckets,
    caps: StoreCaps,
    held: HashMap<Arc<str>, Held>,
    /// The sender made first (`serve`'s banner shows it again after a restart).
    first_sender: Option<Arc<str>>,
    /// Scripted answers waiting, per sender ([`script`]).
    scripts: HashMap<String, Vec<script::Script>>,
    next_script: u64,
    /// Results a script imposes on the send in progress, by registration id.
    forced: HashMap<String, &'static str>,
    /// What the request in progress shows the journal, while one is being journaled.
    observation: Option<Observation>,
    /// What each sender's app server exchanged with the reference, graded.
    pub journals: super::journal::Journals,
}

/// What the model tells the journal about a request while it handles it: the facts of the
/// devices concerned, and the scripted answers that shaped it.
#[derive(Debug, Default)]
pub struct Observation {
    pub facts: crate::verdicts::entry::FactsFound,
    pub scripted: Vec<String>,
    /// A JSON send as the adapter parsed it, with the model's answer.
    pub prepared: Option<crate::verdicts::events::Prepared>,
    /// The sender that send authenticated as (so that journaling need not look it up again).
    pub sender: Option<String>,
}

impl Model {
    /// `seed` makes every key, token and id reproducible; `None` seeds from the OS.
    pub fn new(limits: Limits, clock: Box<dyn Clock>, seed: Option<u64>, faults: Faults) -> Self {
        let mut rng = seed.map_or_else(rand::make_rng::<StdRng>, StdRng::seed_from_u64);
        // Message ids are seen by every receiver: drawn from a generator of their own, they
        // say nothing of the one that makes keys and tokens.
        let message_ids = StdRng::from_rng(&mut rng);
        Model {
            declared: limits.clone(),
            limits: limits.with_faults(&faults),
            clock,
            offsets: HashMap::new(),
            rng,
            message_ids,
            faults,
            variants: Variants::default(),
            senders: HashMap::new(),
            senders_by_key: HashMap::new(),
            instances: instances::Instances::default(),
            last_senders: None,
            waiting: waiting::Waiting::default(),
            kept: super::lifetime::Kept::unlimited(),
            aliases: HashMap::new(),
            replaced_at: HashMap::new(),
            groups: HashMap::new(),
            group_names: HashMap::new(),
            id_tokens: HashMap::new(),
            minted_keys: 0,
            ccs: Ccs::default(),
            shared_buckets: Buckets::default(),
            caps: StoreCaps::default(),
            held: HashMap::new(),
            first_sender: None,
            scripts: HashMap::new(),
            next_script: 0,
            forced: HashMap::new(),
            observation: None,
            journals: Default::default(),
        }
    }

    /// Journals exchanges and grades them against `book` (the app-server rules).
    pub fn with_journals(mut self, journals: super::journal::Journals) -> Self {
        self.journals = journals;
        self
    }

    /// Starts collecting what the journal needs of the request about to be handled.
    pub fn observe(&mut self) {
        self.observation = self.journals.enabled().then(Observation::default);
    }

    /// What was collected since [`Self::observe`].
    pub fn observed(&mut self) -> Observation {
        self.observation.take().unwrap_or_default()
    }

    /// Notes, while observing, a JSON send and the model's answer to it, so that grading need
    /// not parse them again. Not under faults: a fault may render the answer otherwise, and
    /// grading judges what the app server was answered.
    pub fn observe_send(&mut self, sender: String, body: Map<String, Value>, outcome: &SendOutcome) {
        use crate::verdicts::events::{Prepared, PreparedAnswer, PreparedBody};
        if self.observation.is_none() || !self.faults.is_empty() {
            return;
        }
        let answer = match outcome {
            SendOutcome::Multicast { results, form: AnswerForm::Documented, .. } => PreparedAnswer::Results(
                results
                    .iter()
                    .map(|r| match r {
                        SendResult::Sent { canonical, .. } => Ok(canonical.clone()),
                        SendResult::Error(e) => Err(e.to_string()),
                    })
                    .collect(),
            ),
            SendOutcome::Group { success, failed } => {
                PreparedAnswer::Group { failed: failed.clone(), success: *success }
            }
            SendOutcome::GroupFailed => PreparedAnswer::GroupFailed,
            _ => return,
        };
        if let Some(o) = &mut self.observation {
            o.prepared = Some(Prepared { body: PreparedBody::Parsed(body), answer });
            o.sender = Some(sender);
        }
    }

    /// Notes, while observing, what the reference knows of the devices a request names.
    pub fn observe_devices(&mut self, ids: &[String]) {
        for id in ids {
            self.observe_device(id, None, None);
        }
    }

    /// Notes, while observing, what the reference knows of one device: for a send from
    /// `sender` with `collapse_key`, how many collapse keys of that sender it holds for it.
    pub(crate) fn observe_device(&mut self, id: &str, sender: Option<&str>, collapse_key: Option<&str>) {
        let Some(o) = &mut self.observation else { return };
        let instance = self.instances.get(resolve_in(&self.aliases, id));
        let mut d = crate::verdicts::entry::DeviceFound {
            id,
            known: instance.is_some(),
            ios: instance.is_some_and(|i| i.platform == Platform::Ios),
            unregistered: instance.is_some_and(|i| !i.registered),
            package: instance.and_then(|i| i.package()),
            ..Default::default()
        };
        if let (Some(i), Some(sender), Some(key)) = (instance, sender, collapse_key) {
            let mut keys: Vec<&str> = i
                .traffic()
                .pending
                .iter()
                .filter(|p| p.sender() == sender)
                .filter_map(|p| p.message.content.collapse_key.as_deref())
                .collect();
            keys.sort_unstable();
            keys.dedup();
            d.holds_key = keys.contains(&key);
            d.held_keys = Some(keys.len() - usize::from(d.holds_key));
        }
        o.facts.push(d);
    }

    /// The same model, drawing keys, tokens and ids from `rng` (a state file's seed).
    pub fn reseeded(mut self, mut rng: StdRng) -> Self {
        self.message_ids = StdRng::from_rng(&mut rng);
        self.rng = rng;
        self
    }

    /// The sender made first.
    pub fn first_sender(&self) -> Option<SenderCredentials> {
        let id = self.first_sender.as_ref()?;
        Some(SenderCredentials { sender_id: id.to_string(), server_key: self.senders.get(id)?.clone() })
    }

    /// The same model, behaving as these legal variants say.
    pub fn with_variants(mut self, variants: Variants) -> Self {
        self.variants = variants;
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The numbers it says it keeps: what the capabilities declare.
    pub fn declared_limits(&self) -> &Limits {
        &self.declared
    }

    pub fn variants(&self) -> &Variants {
        &self.variants
    }

    #[allow(dead_code)] // the first variant that changes behaviour uses it
    fn variant(&self, v: Variant) -> bool {
        self.variants.has(v)
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    fn fault(&self, f: Fault) -> bool {
        self.faults.has(f)
    }

    fn random_text(&mut self, bytes: usize) -> String {
        let mut buf = vec![0u8; bytes];
        self.rng.fill_bytes(&mut buf);
        base64url(&buf)
    }

    /// A sender's clock, in milliseconds.
    pub fn now_ms(&self, sender: &str) -> u64 {
        self.clock.now_ms().saturating_add(self.offsets.get(sender).copied().unwrap_or(0))
    }

    /// Whether an old id has stopped working for this sender (the variant that retires old ids
    /// once time has passed since the re-registration).
    fn retired(&self, registration_id: &str, sender: &str) -> bool {
        self.replaced_at
            .get(registration_id)
            .and_then(|at| at.iter().find(|(s, _)| s == sender))
            .is_some_and(|(_, t)| self.now_ms(sender) > *t)
    }

    /// The registration id a (possibly old) id stands for now.
    fn resolve<'a>(&'a self, registration_id: &'a str) -> &'a str {
        resolve_in(&self.aliases, registration_id)
    }

    fn instance_mut(&mut self, registration_id: &str) -> Option<&mut Instance> {
        // Over the fields it reads, so that no copy of the id is made.
        let Model { aliases, instances, .. } = self;
        instances.get_mut(resolve_in(aliases, registration_id))
    }

    /// Messages stored for devices that cannot take them yet, over every device.
    pub fn stored_messages(&self) -> u64 {
        self.waiting.stored()
    }

    /// Whether some device has messages waiting on time or connectivity.
    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Time has passed by itself (the machine's clock): what waited on it happens now.
    pub fn tick(&mut self) {
        self.pump_all();
    }

    /// Lets every device take what it can now (after a change of time or connectivity).
    fn pump_all(&mut self) {
        for id in self.waiting.all() {
            self.pump(&id);
        }
    }

    /// Keeps `waiting` true of an instance after its queue changed.
    fn note_waiting(&mut self, id: &str) {
        self.waiting.note(id, self.instances.get_mut(id));
    }

    fn pump(&mut self, registration_id: &str) {
        let base = self.clock.now_ms();
        let id = self.resolve(registration_id).to_string();
        let Model { instances, offsets, limits, faults, variants, shared_buckets, kept, .. } = self;
        let now_of = |s: &str| base.saturating_add(offsets.get(s).copied().unwrap_or(0));
        if let Some(inst) = instances.get_mut(id.as_str()) {
            let cx = super::lifetime::Cx { now_of: &now_of, limits, faults, variants, kept, scope: Default::default() };
            sending::with_shared_buckets(inst, shared_buckets, faults, |i| i.pump(&cx));
        }
        self.note_waiting(&id);
        self.collect_receipts(Some(&id));
    }

    // ---- control: what the harness sets up -------------------------------------------

    /// A new sender, for set-ups that stay far below the store caps (tests, the banner);
    /// what a client asks for goes through [`Self::try_create_sender`].
    pub fn create_sender(&mut self) -> SenderCredentials {
        self.try_create_sender().expect("a sender within the store caps")
    }

    pub fn try_create_sender(&mut self) -> Result<SenderCredentials, StoreFull> {
        if self.senders.len() >= self.caps.senders {
            return Err(StoreFull { what: "senders", max: self.caps.senders, flag: "senders" });
        }
        let sender_id = loop {
            let id = self.rng.random_range(100_000_000_000u64..1_000_000_000_000).to_string();
            if !self.senders.contains_key(id.as_str()) {
                break id;
            }
        };
        let server_key = format!("AIza{}", self.random_text(27));
        let id: Arc<str> = Arc::from(sender_id.as_str());
        self.first_sender.get_or_insert_with(|| id.clone());
        self.senders.insert(id, server_key.clone());
        self.senders_by_key.insert(server_key.clone(), sender_id.clone());
        Ok(SenderCredentials { sender_id, server_key })
    }

    /// Whether an id is one of a registered app instance (old ids included).
    pub fn is_registration_id(&self, id: &str) -> bool {
        self.instances.contains_key(self.resolve(id))
    }

    pub fn has_sender(&self, sender_id: &str) -> bool {
        self.senders.contains_key(sender_id)
    }

    /// Registers an Android app instance for these senders (a shorthand for tests).
    pub fn register_instance(&mut self, senders: Vec<String>, account: Option<String>) -> String {
        self.register(NewInstance { senders, account, ..NewInstance::default() })
            .expect("known senders, within the limit")
    }

    /// Whether `n` more app instances of these senders fit under the store caps.
    pub fn room_for(&self, senders: &[String], n: usize) -> Result<(), StoreFull> {
        if self.instances.len().saturating_add(n) > self.caps.instances {
            return Err(StoreFull { what: "app instances", max: self.caps.instances, flag: "devices" });
        }
        let per_sender = self.caps.instances_per_sender;
        // A sender that holds nothing yet has its whole share to fill, not an unlimited one.
        let full = |s: &String| self.held.get(s.as_str()).map_or(0, |h| h.instances).saturating_add(n) > per_sender;
        if senders.iter().any(full) {
            return Err(StoreFull { what: "app instances per sender", max: per_sender, flag: "devices-per-sender" });
        }
        Ok(())
    }

    /// Registers an app instance and returns its registration id.
    pub fn register(&mut self, new: NewInstance) -> Result<String, RegisterError> {
        let invalid = |why: String| Err(RegisterError::Invalid(why));
        if new.senders.is_empty() {
            return invalid("an app instance needs at least one sender id".into());
        }
        if new.senders.len() > self.limits.max_senders && !self.fault(Fault::MultipleSendersNoLimit) {
            return invalid(format!(
                "at most {} sender ids per registration, got {}",
                self.limits.max_senders,
                new.senders.len()
            ));
        }
        if let Some(unknown) = new.senders.iter().find(|s| !self.senders.contains_key(s.as_str())) {
            return invalid(format!("unknown sender id {unknown:?}"));
        }
        self.room_for(&new.senders, 1)?;
        // room_for has checked every sender's share.
        for s in &new.senders {
            let any = StoreFull { what: "app instances per sender", max: usize::MAX, flag: "devices-per-sender" };
            self.take_share(s, |h| &mut h.instances, any)?;
        }
        let id = self.new_registration_id();
        // Devices registered with the senders of the one before share its list.
        let senders = match &self.last_senders {
            Some(last) if last.len() == new.senders.len() && last.iter().zip(&new.senders).all(|(a, b)| **a == **b) => {
                last.clone()
            }
            _ => {
                let list: super::lifetime::SenderList = new.senders.iter().map(|s| self.shared_sender_id(s)).collect();
                self.last_senders = Some(list.clone());
                list
            }
        };
        let instance = Instance::new(senders, new.account, new.package, new.platform);
        self.instances.insert(Arc::from(id.as_str()), instance);
        Ok(id)
    }

    /// A sender's id as its entry holds it, for devices and groups to share (a copy for a
    /// sender the model does not know).
    fn shared_sender_id(&self, sender: &str) -> Arc<str> {
        self.senders.get_key_value(sender).map_or_else(|| Arc::from(sender), |(k, _)| k.clone())
    }

    fn new_registration_id(&mut self) -> String {
        format!("{}:APA91b{}", self.random_text(8), self.random_text(48))
    }

    /// Invalidates a registration: later deliveries to it fail with `NotRegistered` (in the
    /// delayed-unregistration variant, once half the propagation window has passed).
    pub fn unregister(&mut self, registration_id: &str) -> bool {
        let delayed = self.variant(Variant::DelayedUnregistration);
        let delay_ms = self.limits.unregistration_propagation_seconds.saturating_mul(1000) / 2;
        let id = self.resolve(registration_id).to_string();
        let Some(senders) = self.instances.get(id.as_str()).map(|i| i.senders.clone()) else { return false };
        let at: Vec<(String, u64)> = senders.iter().map(|s| (s.to_string(), self.now_ms(s) + delay_ms)).collect();
        let inst = self.instances.get_mut(id.as_str()).expect("looked up above");
        if delayed {
            inst.set_invalid_from(at);
        } else {
            inst.registered = false;
        }
        true
    }

    /// The app is uninstalled; the server finds out on its next delivery attempt.
    pub fn uninstall(&mut self, registration_id: &str) -> bool {
        self.instance_mut(registration_id).map(|i| i.installed = false).is_some()
    }

    /// Whether a re-registration fits: the old id stays stored (as an alias), so it counts
    /// as one more app instance of each of its senders.
    pub fn room_to_reregister(&self, registration_id: &str) -> Result<(), StoreFull> {
        let Some(instance) = self.instances.get(self.resolve(registration_id)) else { return Ok(()) };
        if self.aliases.len() + self.instances.len() >= self.caps.instances {
            return Err(StoreFull {
                what: "registration ids, old ones included",
                max: self.caps.instances,
                flag: "devices",
            });
        }
        let senders: Vec<String> = instance.senders.iter().map(|s| s.to_string()).collect();
        self.room_for(&senders, 1)
    }

    /// The app registers again on the same device: a new registration id replaces the old,
    /// which keeps working but answers with the new one as its canonical id.
    pub fn reregister(&mut self, registration_id: &str) -> Option<String> {
        let current = self.resolve(registration_id).to_string();
        if self.variant(Variant::SameIdOnReregister) {
            return self.instances.contains_key(current.as_str()).then_some(current);
        }
        let instance = self.instances.remove(current.as_str())?;
        for s in instance.senders.iter() {
            self.held.entry(s.clone()).or_default().instances += 1;
        }
        let new = self.new_registration_id();
        if self.variant(Variant::OldIdsRetire) {
            let at = instance.senders.iter().map(|s| (s.to_string(), self.now_ms(s))).collect();
            self.replaced_at.insert(current.clone(), at);
        }
        self.waiting.rename(&current, &new, &instance.senders);
        self.instances.insert(Arc::from(new.as_str()), instance);
        self.aliases.insert(current, new.clone());
        Some(new)
    }

    pub fn set_connectivity(&mut self, registration_id: &str, state: Connectivity) -> bool {
        let (faults, kept) = (self.faults.clone(), self.kept.clone());
        let Some(inst) = self.instance_mut(registration_id) else { return false };
        inst.set_connectivity(state, &faults, &kept);
        self.pump(registration_id);
        true
    }

    /// Moves one sender's clock forward; expiries and throttle grants follow.
    pub fn advance_clock(&mut self, sender: &str, seconds: u64) -> Option<u64> {
        self.advance_clock_ms(sender, seconds.saturating_mul(1000))
    }

    /// How far ahead of the reference's clock a sender's clock may be moved: a century, far
    /// past any time to live or retry window, and far from overflowing a millisecond count.
    pub const MAX_CLOCK_OFFSET_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

    /// How far `sender`'s clock may still be moved forward.
    pub fn clock_room_ms(&self, sender: &str) -> u64 {
        Self::MAX_CLOCK_OFFSET_MS - self.offsets.get(sender).copied().unwrap_or(0).min(Self::MAX_CLOCK_OFFSET_MS)
    }

    /// Moves one sender's clock forward by milliseconds (no further than
    /// [`Self::MAX_CLOCK_OFFSET_MS`] ahead in all).
    pub fn advance_clock_ms(&mut self, sender: &str, ms: u64) -> Option<u64> {
        if !self.senders.contains_key(sender) {
            return None;
        }
        let offset = self.offsets.entry(sender.to_string()).or_default();
        *offset = offset.saturating_add(ms).min(Self::MAX_CLOCK_OFFSET_MS);
        // Only what this sender sent waits on its clock.
        for id in self.waiting.of_sender(sender) {
            self.pump(&id);
        }
        Some(self.now_ms(sender))
    }

    /// What the device received, oldest first: the newest `inbox_limit` messages.
    pub fn inbox(&self, registration_id: &str) -> Option<&[Delivered]> {
        self.inbox_from(registration_id).map(|view| view.messages)
    }

    /// What the device received, with the position of the first message shown (how many came
    /// before it) and how many were dropped by the limit.
    pub fn inbox_from(&self, registration_id: &str) -> Option<InboxView<'_>> {
        let (messages, first, dropped) = self.instances.get(self.resolve(registration_id))?.inbox(&self.kept);
        Some(InboxView { messages, first, dropped })
    }

    /// Forgets what the device received; `false` for an unknown id.
    pub fn clear_inbox(&mut self, registration_id: &str) -> bool {
        let kept = self.kept.clone();
        self.instance_mut(registration_id).map(|i| i.clear_inbox(&kept)).is_some()
    }

    /// Keeps at most this many received messages per device (older ones are dropped).
    pub fn with_inbox_limit(mut self, limit: usize) -> Self {
        self.kept = super::lifetime::Kept::new(limit, self.kept.in_all);
        self
    }

    pub fn with_store_caps(mut self, caps: StoreCaps) -> Self {
        self.kept = super::lifetime::Kept::new(self.kept.per_device, caps.received);
        self.caps = caps;
        self
    }

    /// Counts one more of what `share` picks of `sender`'s holdings, unless it has `full.max`
    /// already (then `full` is the error). An unknown sender holds nothing.
    fn take_share(
        &mut self,
        sender: &str,
        share: fn(&mut Held) -> &mut usize,
        full: StoreFull,
    ) -> Result<(), StoreFull> {
        let Some(key) = self.senders.get_key_value(sender).map(|(k, _)| k.clone()) else { return Ok(()) };
        let held = share(self.held.entry(key).or_default());
        if *held >= full.max {
            return Err(full);
        }
        *held += 1;
        Ok(())
    }

    pub fn account_of(&self, registration_id: &str) -> Option<&str> {
        self.instances.get(self.resolve(registration_id))?.account()
    }

    /// A new id_token of `account` for `sender_id`; `Ok(None)` if the sender is unknown.
    pub fn mint_id_token(&mut self, sender_id: &str, account: &str) -> Result<Option<String>, StoreFull> {
        if !self.senders.contains_key(sender_id) {
            return Ok(None);
        }
        let max = self.caps.id_tokens_per_sender;
        let full = StoreFull { what: "id_tokens per sender", max, flag: "id-tokens-per-sender" };
        self.take_share(sender_id, |h| &mut h.id_tokens, full)?;
        let token = format!("idt.{}", self.random_text(36));
        self.id_tokens.insert(token.clone(), IdToken { sender: sender_id.into(), account: account.into() });
        Ok(Some(token))
    }

    /// The project an id_token was minted for (the fault that trusts it needs this).
    pub fn project_of_id_token(&self, token: &str) -> Option<String> {
        self.id_tokens.get(token).map(|t| t.sender.clone())
    }

    pub fn account_of_id_token(&self, token: &str) -> Option<String> {
        self.id_tokens.get(token).map(|t| t.account.clone())
    }

    // ---- authentication --------------------------------------------------------------

    /// The sender a server key belongs to.
    pub fn sender_for_key(&self, server_key: &str) -> Option<&str> {
        self.senders_by_key.get(server_key).map(String::as_str)
    }

    /// Under the server-key fault, any known sender id is taken at its word.
    pub fn sender_for_group_request(
        &self,
        server_key: Option<&str>,
        project_id: Option<&str>,
        path: Path,
    ) -> Option<String> {
        if let Some(s) = server_key.and_then(|k| self.sender_for_key(k)) {
            return Some(s.to_string());
        }
        if self.faults.on(Fault::ServerKeyAuth, path) {
            return project_id.filter(|p| self.senders.contains_key(*p)).map(str::to_string);
        }
        None
    }

    pub fn ignores_project_id(&self, path: Path) -> bool {
        self.faults.on(Fault::ProjectIdHeader, path)
    }

    /// Under the send-auth fault (on the send's path), an unauthenticated send acts for the
    /// target's sender.
    pub fn sender_for_send(&self, server_key: Option<&str>, target: &Target, via: Via) -> Option<String> {
        if let Some(s) = server_key.and_then(|k| self.sender_for_key(k)) {
            return Some(s.to_string());
        }
        let to_key = matches!(target, Target::To(to) if self.groups.contains_key(to.as_str()));
        let path = via.path(to_key, matches!(target, Target::RegistrationIds(_)));
        if !self.faults.on(Fault::SendAuth, path) {
            return None;
        }
        let first = match target {
            Target::To(t) => t.as_str(),
            Target::RegistrationIds(ids) => ids.first()?.as_str(),
            Target::Missing => return None,
        };
        self.groups
            .get(first)
            .map(|g| g.sender.to_string())
            .or_else(|| self.instances.get(self.resolve(first)).and_then(|i| i.senders.first().map(|s| s.to_string())))
    }
}

/// `from`, `message_type`, and anything starting with `google` or `gcm` are the server's.
pub use crate::wire::is_reserved_data_key;

/// Bytes of `data` keys and values (strings as text, other values as JSON); in another unit
/// under the faults that count it so.
pub fn payload_bytes(message: &Message, unit: Option<WrongUnit>) -> usize {
    let Some(Value::Object(data)) = &message.data else { return 0 };
    let len = |s: &str| if unit == Some(WrongUnit::Characters) { s.chars().count() } else { s.len() };
    match unit {
        Some(WrongUnit::SerializedJson) => Value::Object(data.clone()).to_string().len(),
        Some(WrongUnit::Characters) => {
            data.iter().map(|(k, v)| len(k) + v.as_str().map_or_else(|| len(&v.to_string()), len)).sum()
        }
        _ => crate::wire::data_payload_bytes(data),
    }
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded base64url: the alphabet real keys and tokens use.
fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 3);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(BASE64URL[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The current id of `registration_id`: its newest replacement, or itself.
fn resolve_in<'a>(aliases: &'a HashMap<String, String>, registration_id: &'a str) -> &'a str {
    let mut id = registration_id;
    while let Some(next) = aliases.get(id) {
        id = next;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::clock::VirtualClock;

    fn model(faults: &[Fault]) -> Model {
        let limits = Limits {
            max_members: 3,
            max_stored_messages: 5,
            max_collapse_keys: 2,
            max_ttl_seconds: 1000,
            default_ttl_seconds: 1000,
            max_payload_bytes: 64,
            max_payload_bytes_ios: Some(32),
            max_senders: 3,
            max_registration_ids: 10,
            max_pending_per_connection: 5,
            unregistration_propagation_seconds: 300,
            throttle: Throttle { initial_tokens: 3, grant_tokens: 1, grant_interval_ms: 60_000 },
        };
        Model::new(limits, Box::new(VirtualClock::new()), Some(7), Faults::new(faults.iter().copied()))
    }

    #[test]
    fn stored_messages_are_capped_in_total_and_per_sender() {
        let caps = StoreCaps { stored: 6, stored_per_sender: 4, ..StoreCaps::default() };
        let mut m = model(&[]).with_store_caps(caps);
        let stored = || Message { time_to_live: Some(600), ..Message::default() };
        let one = |m: &mut Model, s: &str, id: &str| match m.send(s, Target::To(id.into()), stored()) {
            SendOutcome::Multicast { results, .. } => results[0].clone(),
            other => panic!("{other:?}"),
        };
        let a = m.create_sender().sender_id;
        let b = m.create_sender().sender_id;
        let (a_off, a_on) = (m.register_instance(vec![a.clone()], None), m.register_instance(vec![a.clone()], None));
        let b_off = m.register_instance(vec![b.clone()], None);
        m.set_connectivity(&a_off, Connectivity::Offline);
        m.set_connectivity(&b_off, Connectivity::Offline);
        for _ in 0..4 {
            assert!(matches!(one(&mut m, &a, &a_off), SendResult::Sent { .. }));
        }
        // A's share is held: what would wait is refused, what a device takes now is not.
        assert_eq!(one(&mut m, &a, &a_off), SendResult::Error("Unavailable"));
        assert!(matches!(one(&mut m, &a, &a_on), SendResult::Sent { .. }));
        assert_eq!(m.stored_messages(), 4);
        // B has its own share, up to the total.
        for _ in 0..2 {
            assert!(matches!(one(&mut m, &b, &b_off), SendResult::Sent { .. }));
        }
        assert_eq!(one(&mut m, &b, &b_off), SendResult::Error("Unavailable"));
        // Delivered messages leave the count (three tokens: one of A's four still waits), and
        // A may store again.
        m.set_connectivity(&a_off, Connectivity::Awake);
        assert_eq!(m.stored_messages(), 3);
        m.set_connectivity(&a_off, Connectivity::Offline);
        assert!(matches!(one(&mut m, &a, &a_off), SendResult::Sent { .. }));
        assert_eq!(m.stored_messages(), 4);
    }

    #[test]
    fn base64url_matches_the_rfc_vectors() {
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn the_same_seed_gives_the_same_server() {
        let (mut a, mut b) = (model(&[]), model(&[]));
        assert_eq!(a.create_sender().server_key, b.create_sender().server_key);
    }

    #[test]
    fn cap_is_enforced_and_leaves_the_group_unchanged() {
        let mut m = model(&[]);
        let s = m.create_sender().sender_id;
        let ids: Vec<String> = (0..4).map(|_| m.register_instance(vec![s.clone()], None)).collect();
        let err = m.manage_group(&s, GroupOp::Create { name: "n".into(), ids: ids.clone() });
        assert_eq!(err, Err(GroupError::TooManyMembers { max: 3 }));
        let key = m.manage_group(&s, GroupOp::Create { name: "n".into(), ids: ids[..3].to_vec() }).unwrap();
        let add = m.manage_group(&s, GroupOp::Add { key: key.clone(), name: None, ids: ids[3..].to_vec() });
        assert!(add.is_err());
        assert_eq!(m.send(&s, Target::To(key), Message::default()), SendOutcome::Group { success: 3, failed: vec![] });
    }

    #[test]
    fn a_device_is_a_member_once_whatever_ids_it_is_known_by() {
        let mut m = model(&[]);
        let s = m.create_sender().sender_id;
        let old = m.register_instance(vec![s.clone()], None);
        let other = m.register_instance(vec![s.clone()], None);
        let key = m.manage_group(&s, GroupOp::Create { name: "n".into(), ids: vec![old.clone()] }).unwrap();
        let new = m.reregister(&old).unwrap();
        // Its canonical id joins as a no-op; a create naming both ids makes one member.
        m.manage_group(&s, GroupOp::Add { key: key.clone(), name: None, ids: vec![new.clone()] }).unwrap();
        let both = m.manage_group(&s, GroupOp::Create { name: "both".into(), ids: vec![old.clone(), new.clone()] });
        assert_eq!(m.groups_of(&s)["both"]["members"].as_array().map(Vec::len), Some(1), "{both:?}");
        // A send reaches the device once.
        let sent = m.send(&s, Target::To(key.clone()), Message::default());
        assert_eq!(sent, SendOutcome::Group { success: 1, failed: vec![] });
        assert_eq!(m.inbox(&new).map(<[_]>::len), Some(1));
        // Removing the canonical id removes the device, whichever id it joined by.
        m.manage_group(&s, GroupOp::Add { key: key.clone(), name: None, ids: vec![other] }).unwrap();
        m.manage_group(&s, GroupOp::Remove { key: key.clone(), name: None, ids: vec![new.clone()] }).unwrap();
        assert_eq!(m.send(&s, Target::To(key), Message::default()), SendOutcome::Group { success: 1, failed: vec![] });
        assert_eq!(m.inbox(&new).map(<[_]>::len), Some(1), "the removed device got nothing more");
    }

    #[test]
    fn a_new_collapse_key_on_every_send_keeps_no_state_per_key() {
        let mut m = model(&[]);
        let s = m.create_sender().sender_id;
        let id = m.register_instance(vec![s.clone()], None);
        for n in 0..1000 {
            let message = Message { collapse_key: Some(format!("k{n}")), ..Message::default() };
            m.send(&s, Target::To(id.clone()), message);
        }
        let held = m.instances.get(id.as_str()).expect("registered").buckets_held();
        assert!(held <= 2 * super::super::lifetime::MAX_IDLE_BUCKETS, "{held} buckets held");
        // Every one was delivered: forgetting idle buckets takes no message.
        assert_eq!(m.inbox(&id).map(<[_]>::len), Some(1000));
    }

    #[test]
    fn a_refused_message_still_has_a_multicast_id() {
        let mut m = model(&[]);
        let s = m.create_sender().sender_id;
        let id = m.register_instance(vec![s.clone()], None);
        let bad = Message { time_to_live: Some(-1), ..Message::default() };
        let outcome = m.send(&s, Target::RegistrationIds(vec![id]), bad);
        let (status, body) = send_outcome_json(&outcome, m.faults());
        assert_eq!(status, 200);
        let body = body.unwrap();
        assert_eq!(body["results"][0]["error"], "InvalidTtl");
        assert!(body["multicast_id"].as_u64().is_some_and(|n| n > 0), "{body}");
    }

    #[test]
    fn a_multicast_answer_written_directly_is_the_json_values_text() {
        let sent = |id: &str, canonical: Option<&str>| SendResult::Sent {
            message_id: Arc::from(id),
            canonical: canonical.map(str::to_string),
        };
        let results = vec![
            sent("0:1%00ab", None),
            SendResult::Error("NotRegistered"),
            sent("0:2%\"quoted\"", Some("new\nid")),
            SendResult::Error("Unavailable"),
        ];
        for form in [AnswerForm::Documented, AnswerForm::WithoutCanonicalIds, AnswerForm::CountsAsText] {
            for results in [results.clone(), Vec::new(), vec![SendResult::Error("InvalidRegistration")]] {
                let outcome = SendOutcome::Multicast { multicast_id: 42, results, form };
                let faults = Faults::default();
                let (status, value) = send_outcome_json(&outcome, &faults);
                let (written_status, written) = send_outcome_body(&outcome, &faults);
                assert_eq!(status, written_status);
                assert_eq!(value.map(|v| v.to_string().into_bytes()), written);
            }
        }
    }

    #[test]
    fn a_group_whose_members_all_fail_answers_503() {
        let mut m = model(&[]);
        let s = m.create_sender().sender_id;
        let id = m.register_instance(vec![s.clone()], None);
        let key = m.manage_group(&s, GroupOp::Create { name: "n".into(), ids: vec![id.clone()] }).unwrap();
        m.unregister(&id);
        let outcome = m.send(&s, Target::To(key), Message::default());
        assert_eq!(send_outcome_json(&outcome, m.faults()), (503, None));
    }
}
