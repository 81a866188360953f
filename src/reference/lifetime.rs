//! What happens to a message between "accepted" and "delivered" (seed 002): device
//! connectivity, the store with its collapse and size limits, time to live, throttling.
//!
//! An [`Instance`] is one app on one device. The model offers it messages and pumps its
//! queue whenever something changes (a send, a connectivity change, a clock advance).
//!
//! (Longer than a room should be: one device's queue, store, collapse, throttling, delivery
//! and inbox, is one state machine whose steps call each other; its state-file shape and a
//! unit test sit beside it.)

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::faults::{Fault, Faults, Variant, Variants};
use super::generated::rules;
use super::limits::Limits;
use crate::catalog::Path;

/// What a device's queue needs of the model when it changes.
pub struct Cx<'a> {
    /// A sender's clock, in milliseconds.
    pub now_of: &'a dyn Fn(&str) -> u64,
    pub limits: &'a Limits,
    pub faults: &'a Faults,
    pub variants: &'a Variants,
    /// How many received messages are kept for the control API, per device and in all.
    pub kept: &'a Kept,
    /// What the faults that share a device's state with the sender's other devices need to
    /// know of them (nothing, without those faults).
    pub scope: Scope,
}

/// The sender's stored messages on its other devices, for the faults that keep a device's
/// limits per sender.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope {
    pub others_stored: usize,
    pub others_keys: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    #[default]
    Android,
    Ios,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Connectivity {
    /// Connected and awake (screen on): messages are delivered right away.
    #[default]
    Awake,
    /// Connected but idle: messages with `delay_while_idle` wait until it wakes.
    Idle,
    /// Not connected: messages are stored until it connects.
    Offline,
}

/// A message as the device received it.
/// A message as the device received it. What every recipient of one send shares is held
/// once: a send to a group of 20 or a multicast to 1000 copies no payload, only pointers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "FlatDelivered")]
pub struct Delivered {
    pub message_id: Arc<str>,
    pub content: Arc<Content>,
}

/// What a message says, shared by all its recipients.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Content {
    pub from: String,
    /// `deleted_messages` for the notice that the store overflowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collapse_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification: Option<Value>,
    /// Set when the message came through a device group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification_key: Option<String>,
}

impl std::ops::Deref for Delivered {
    type Target = Content;
    fn deref(&self) -> &Content {
        &self.content
    }
}

/// As the control API shows it: the message id, then the content's fields.
impl Serialize for Delivered {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Flat<'a> {
            message_id: &'a str,
            #[serde(flatten)]
            content: &'a Content,
        }
        Flat { message_id: &self.message_id, content: &self.content }.serialize(serializer)
    }
}

/// What [`Delivered`]'s Serialize writes, read back (a state file's snapshot).
#[derive(Deserialize)]
struct FlatDelivered {
    message_id: String,
    #[serde(flatten)]
    content: Content,
}

impl From<FlatDelivered> for Delivered {
    fn from(f: FlatDelivered) -> Delivered {
        Delivered { message_id: Arc::from(f.message_id), content: Arc::new(f.content) }
    }
}

/// A message waiting on the server for one device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Queued {
    pub message: Delivered,
    pub delay_while_idle: bool,
    pub ttl_seconds: u64,
    /// On the sender's clock.
    pub sent_at_ms: u64,
    /// The device connected since the message was stored: `delay_while_idle` no longer holds it.
    pub released: bool,
    /// The app server's message id, when it asked for a delivery receipt (XMPP).
    pub receipt: Option<String>,
    /// Its place among the messages stored for the device (set by [`Instance::offer`]).
    pub ticket: u64,
    /// How it was sent (a fault that breaks a rule on one path looks at it).
    pub path: Path,
}

impl Queued {
    /// Whose message it is.
    pub fn sender(&self) -> &str {
        &self.message.from
    }

    fn expired(&self, now_ms: u64) -> bool {
        now_ms >= self.sent_at_ms.saturating_add(self.ttl_seconds.saturating_mul(1000))
    }
}

/// Idle token buckets an instance keeps at most (a guard on memory, not a documented number:
/// forgetting an idle bucket only grants its key a fresh one).
pub(crate) const MAX_IDLE_BUCKETS: usize = 64;

/// Token buckets by (sender, collapse key); `None` is the non-collapsible bucket.
///
/// A list searched in order, not a map: a device holds a few (at most about
/// `2 * MAX_IDLE_BUCKETS`), and a lookup then copies no key and hashes nothing, where a map
/// keyed by owned strings cost two copies a delivery. Serialized as the (key, bucket) pairs a
/// state file has always held.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Buckets(Vec<((String, Option<String>), Bucket)>);

impl Buckets {
    fn get(&self, sender: &str, key: Option<&str>) -> Option<&Bucket> {
        self.0.iter().find(|((s, k), _)| s == sender && k.as_deref() == key).map(|(_, b)| b)
    }

    /// The bucket of (sender, collapse key), made by `fresh` when there is none.
    fn get_or_insert(&mut self, sender: &str, key: Option<&str>, fresh: impl FnOnce() -> Bucket) -> &mut Bucket {
        let at = self.0.iter().position(|((s, k), _)| s == sender && k.as_deref() == key);
        let at = at.unwrap_or_else(|| {
            self.0.push(((sender.to_string(), key.map(str::to_string)), fresh()));
            self.0.len() - 1
        });
        &mut self.0[at].1
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Bucket {
    tokens: u64,
    last_grant_ms: u64,
    /// Messages have been waiting since the last grant: every grant since was used as it
    /// came, so grants are counted without the cap (the cap limits idle accumulation).
    backlog: bool,
}

impl Bucket {
    /// Its tokens with the grants due by `now_ms` added, and how many grants those are.
    fn refilled(&self, now_ms: u64, t: &super::limits::Throttle) -> (u64, u64) {
        let grants = now_ms.saturating_sub(self.last_grant_ms) / t.grant_interval_ms.max(1);
        if grants == 0 {
            return (self.tokens, 0);
        }
        let granted = self.tokens.saturating_add(grants.saturating_mul(t.grant_tokens));
        (if self.backlog { granted } else { granted.min(t.initial_tokens) }, grants)
    }
}

/// The bucket a message takes its token from: its collapse key's (none is a bucket too), or
/// one for the whole application under the fault that throttles so.
fn bucket_key<'q>(q: &'q Queued, cx: &Cx<'_>) -> Option<&'q str> {
    if cx.faults.on(Fault::ThrottlePerApplication, q.path) { None } else { q.message.collapse_key.as_deref() }
}

/// How many received messages the control API can show: the newest `per_device` of each
/// device, and `in_all` over every device. Past `in_all`, a device that receives keeps only
/// its newest message: the total stays within `in_all` plus one per device.
#[derive(Debug)]
pub struct Kept {
    pub per_device: usize,
    pub in_all: u64,
    used: std::sync::atomic::AtomicU64,
}

impl Kept {
    pub fn new(per_device: usize, in_all: u64) -> Arc<Kept> {
        Arc::new(Kept { per_device: per_device.max(1), in_all, used: Default::default() })
    }

    /// No limit (a device made before its model sets one shares this).
    pub fn unlimited() -> Arc<Kept> {
        static UNLIMITED: std::sync::LazyLock<Arc<Kept>> = std::sync::LazyLock::new(|| Kept::new(usize::MAX, u64::MAX));
        UNLIMITED.clone()
    }

    /// Received messages kept now, over every device.
    pub fn used(&self) -> u64 {
        self.used.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn add(&self, n: u64) {
        self.used.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn sub(&self, n: u64) {
        let _ =
            self.used.fetch_update(std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }
}

/// The senders an app instance is registered for, behind one thin pointer (a slice's would
/// be two words in every instance); devices registered with the same senders share it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderList(Arc<Box<[Arc<str>]>>);

impl std::ops::Deref for SenderList {
    type Target = [Arc<str>];
    fn deref(&self) -> &[Arc<str>] {
        &self.0
    }
}

impl From<Vec<Arc<str>>> for SenderList {
    fn from(list: Vec<Arc<str>>) -> Self {
        SenderList(Arc::new(list.into_boxed_slice()))
    }
}

impl FromIterator<Arc<str>> for SenderList {
    fn from_iter<I: IntoIterator<Item = Arc<str>>>(iter: I) -> Self {
        SenderList::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl Serialize for SenderList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self[..].serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SenderList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<Arc<str>>::deserialize(deserializer).map(SenderList::from)
    }
}

/// One app on one device. Kept small (32 bytes): a million registered devices that were
/// never sent anything cost little more than their ids. What few devices have (an account, a
/// package name, a pending unregistration) is in [`Details`], what a device has been sent in
/// [`Traffic`], each allocated when first needed.
#[derive(Debug)]
pub struct Instance {
    /// Shared by the devices registered with the same senders (the model reuses the list).
    pub senders: SenderList,
    details: Option<Box<Details>>,
    traffic: Option<Box<Traffic>>,
    pub platform: Platform,
    /// False once the registration is invalid (unregistered, or found uninstalled).
    pub registered: bool,
    /// False once the app is uninstalled; the server notices on its next delivery attempt.
    pub installed: bool,
    pub connectivity: Connectivity,
    /// In the model's list of devices with messages waiting (kept by the model).
    pub(crate) listed_waiting: bool,
}

/// What few devices have.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Details {
    account: Option<Box<str>>,
    package: Option<Box<str>>,
    /// When an unregistration or an uninstall takes effect, per sender clock, where it does
    /// not at once (the delayed-unregistration and slow-uninstall variants).
    invalid_from: Option<Vec<(String, u64)>>,
}

/// An instance as a state file has always held it: its details among its fields.
#[derive(Serialize)]
struct InstanceOut<'a> {
    senders: &'a [Arc<str>],
    account: Option<&'a str>,
    package: Option<&'a str>,
    platform: Platform,
    registered: bool,
    installed: bool,
    connectivity: Connectivity,
    invalid_from: Option<&'a [(String, u64)]>,
    traffic: Option<&'a Traffic>,
}

#[derive(Deserialize)]
struct InstanceIn {
    senders: SenderList,
    account: Option<Box<str>>,
    package: Option<Box<str>>,
    platform: Platform,
    registered: bool,
    installed: bool,
    connectivity: Connectivity,
    invalid_from: Option<Vec<(String, u64)>>,
    traffic: Option<Box<Traffic>>,
}

impl Serialize for Instance {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        InstanceOut {
            senders: &self.senders,
            account: self.account(),
            package: self.package(),
            platform: self.platform,
            registered: self.registered,
            installed: self.installed,
            connectivity: self.connectivity,
            invalid_from: self.details.as_ref().and_then(|d| d.invalid_from.as_deref()),
            traffic: self.traffic.as_deref(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Instance {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let i = InstanceIn::deserialize(deserializer)?;
        let details = Details { account: i.account, package: i.package, invalid_from: i.invalid_from };
        let some = details.account.is_some() || details.package.is_some() || details.invalid_from.is_some();
        Ok(Instance {
            senders: i.senders,
            details: some.then(|| Box::new(details)),
            traffic: i.traffic,
            platform: i.platform,
            registered: i.registered,
            installed: i.installed,
            connectivity: i.connectivity,
            listed_waiting: false,
        })
    }
}

/// What a device has been sent: its inbox, its stored messages and its throttling state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Traffic {
    /// What the device received, oldest first, as the control API shows it: at most
    /// `inbox_limit` are kept (see [`Instance::receive`]).
    inbox: Vec<Delivered>,
    /// How many messages the device received before `inbox[0]` (dropped by the limit, or
    /// cleared): the position of `inbox[0]`, for readers' cursors.
    inbox_start: u64,
    /// How many of those the limit dropped (the rest were cleared on request).
    inbox_dropped: u64,
    pub pending: Vec<Queued>,
    /// The sender whose stored messages overflowed, owed a `deleted_messages` notice.
    deleted_notice: Option<String>,
    /// Messages stored for this device so far: the next one's ticket.
    stored: u64,
    /// Token buckets per (sender, collapse key); `None` is the non-collapsible bucket.
    buckets: Buckets,
    /// Delivered messages whose sender asked for a receipt: (sender, app message id, when).
    pub receipts: Vec<(String, String, u64)>,
    /// Collapse keys this device was ever sent (kept only by the fault that limits them).
    keys_ever: Vec<String>,
    /// The path of the last message it took (the fault that delivers it again looks at it).
    last_path: Option<Path>,
    /// `pending` per sender as the model last counted it toward its stored-message caps.
    #[serde(skip)]
    counted: Vec<(Arc<str>, u32)>,
}

/// What a device that was never sent anything shows.
static NO_TRAFFIC: std::sync::LazyLock<Traffic> = std::sync::LazyLock::new(Traffic::default);

impl Instance {
    pub fn new(senders: SenderList, account: Option<String>, package: Option<String>, platform: Platform) -> Self {
        let details = (account.is_some() || package.is_some()).then(|| {
            Box::new(Details {
                account: account.map(String::into_boxed_str),
                package: package.map(String::into_boxed_str),
                invalid_from: None,
            })
        });
        Instance {
            senders,
            details,
            traffic: None,
            platform,
            registered: true,
            installed: true,
            connectivity: Connectivity::Awake,
            listed_waiting: false,
        }
    }

    pub fn account(&self) -> Option<&str> {
        self.details.as_ref().and_then(|d| d.account.as_deref())
    }

    pub fn package(&self) -> Option<&str> {
        self.details.as_ref().and_then(|d| d.package.as_deref())
    }

    /// When an unregistration takes effect, per sender clock (instead of at once).
    pub fn set_invalid_from(&mut self, at: Vec<(String, u64)>) {
        self.details.get_or_insert_default().invalid_from = Some(at);
    }

    fn invalid_from(&self) -> Option<&[(String, u64)]> {
        self.details.as_ref().and_then(|d| d.invalid_from.as_deref())
    }

    /// What it has been sent (nothing, for a device never sent anything).
    pub fn traffic(&self) -> &Traffic {
        self.traffic.as_deref().unwrap_or(&NO_TRAFFIC)
    }

    pub fn traffic_mut(&mut self) -> &mut Traffic {
        self.traffic.get_or_insert_default()
    }

    /// Nothing waits here: a pump would change nothing.
    pub fn settled(&self) -> bool {
        self.traffic().pending.is_empty() && self.traffic().deleted_notice.is_none()
    }

    fn connected(&self) -> bool {
        self.connectivity != Connectivity::Offline
    }

    /// Whether the device would take this message now, throttling aside.
    fn can_receive(&self, q: &Queued, faults: &Faults) -> bool {
        match self.connectivity {
            Connectivity::Offline => false,
            Connectivity::Awake => true,
            Connectivity::Idle => !q.delay_while_idle || faults.on(Fault::DelayWhileIdle, q.path) || q.released,
        }
    }

    /// Takes a token for this message's bucket (per application and collapse key), refilled
    /// on the sender's clock.
    fn take_token(&mut self, q: &Queued, now_ms: u64, cx: &Cx<'_>) -> bool {
        self.take_token_from(q.sender(), bucket_key(q, cx), now_ms, cx.limits)
    }

    /// Whether this message would be stored rather than taken now (its token only looked at).
    pub fn would_wait(&self, q: &Queued, now_ms: u64, cx: &Cx<'_>) -> bool {
        // Now or never, or found uninstalled: never stored.
        if q.ttl_seconds == 0 || (!self.installed && self.connected()) {
            return false;
        }
        if !self.can_receive(q, cx.faults) {
            return true;
        }
        let t = &cx.limits.throttle;
        let bucket = self.traffic().buckets.get(q.sender(), bucket_key(q, cx));
        bucket.map_or(t.initial_tokens, |b| b.refilled(now_ms, t).0) == 0
    }

    /// Recounts the messages stored here per sender after a change; `apply` gets each
    /// sender's difference from the last count (what the model's totals move by).
    pub(crate) fn recount_stored(&mut self, mut apply: impl FnMut(&Arc<str>, i64)) {
        let Some(t) = self.traffic.as_deref_mut() else { return };
        if let [only] = &self.senders[..] {
            // Nearly every device: one sender, no list to build.
            let (n, before) = (t.pending.len() as u32, t.counted.first().map_or(0, |(_, m)| *m));
            if n != before {
                apply(only, i64::from(n) - i64::from(before));
                t.counted.clear();
                if n > 0 {
                    t.counted.push((only.clone(), n));
                }
            }
            return;
        }
        let mut now: Vec<(Arc<str>, u32)> = Vec::new();
        for q in &t.pending {
            match now.iter_mut().find(|(k, _)| **k == *q.sender()) {
                Some((_, n)) => *n += 1,
                None => {
                    let k = self.senders.iter().find(|k| ***k == *q.sender()).cloned();
                    now.push((k.unwrap_or_else(|| Arc::from(q.sender())), 1));
                }
            }
        }
        if now == t.counted {
            return;
        }
        for (s, n) in &t.counted {
            let after = now.iter().find(|(k, _)| k == s).map_or(0, |(_, m)| *m);
            if after != *n {
                apply(s, i64::from(after) - i64::from(*n));
            }
        }
        for (s, n) in now.iter().filter(|(s, _)| !t.counted.iter().any(|(k, _)| k == s)) {
            apply(s, i64::from(*n));
        }
        t.counted = now;
    }

    fn take_token_from(&mut self, sender: &str, key: Option<&str>, now_ms: u64, limits: &Limits) -> bool {
        let t = &limits.throttle;
        let fresh = || Bucket { tokens: t.initial_tokens, last_grant_ms: now_ms, backlog: false };
        let bucket = self.traffic_mut().buckets.get_or_insert(sender, key, fresh);
        let (tokens, grants) = bucket.refilled(now_ms, t);
        if grants > 0 {
            bucket.tokens = tokens;
            bucket.last_grant_ms += grants * t.grant_interval_ms.max(1);
        }
        if bucket.tokens == 0 {
            bucket.backlog = true;
            return false;
        }
        bucket.tokens -= 1;
        true
    }

    /// After a pump: buckets with nothing left waiting go back to the capped regime; one that
    /// has refilled since is forgotten (a fresh one is the same), and past
    /// `MAX_IDLE_BUCKETS` idle ones the fullest go too, so that a device sent a new collapse
    /// key every time does not keep a bucket for each.
    fn settle_buckets(&mut self, now_of: &dyn Fn(&str) -> u64, limits: &Limits) {
        let traffic = self.traffic_mut();
        let waiting: std::collections::HashSet<(&str, Option<&str>)> =
            traffic.pending.iter().map(|q| (q.sender(), q.message.collapse_key.as_deref())).collect();
        let t = &limits.throttle;
        let interval_ms = t.grant_interval_ms.max(1);
        // (position, tokens once refilled) of each bucket nothing waits on.
        let mut idle: Vec<(usize, u64)> = Vec::new();
        for (at, (key, bucket)) in traffic.buckets.0.iter_mut().enumerate() {
            if waiting.contains(&(key.0.as_str(), key.1.as_deref())) {
                continue;
            }
            bucket.backlog = false;
            bucket.tokens = bucket.tokens.min(t.initial_tokens);
            let grants = now_of(&key.0).saturating_sub(bucket.last_grant_ms) / interval_ms;
            let refilled = bucket.tokens.saturating_add(grants.saturating_mul(t.grant_tokens)).min(t.initial_tokens);
            idle.push((at, refilled));
        }
        idle.sort_by_key(|(_, tokens)| std::cmp::Reverse(*tokens));
        let over = idle.len().saturating_sub(MAX_IDLE_BUCKETS);
        let mut forget = vec![false; traffic.buckets.len()];
        for (i, (at, tokens)) in idle.into_iter().enumerate() {
            forget[at] = tokens >= t.initial_tokens || i < over;
        }
        let mut at = 0;
        traffic.buckets.0.retain(|_| {
            at += 1;
            !forget[at - 1]
        });
    }

    /// A message accepted for this device.
    ///
    /// Returns whether the whole queue must be pumped now (the store overflowed, and the
    /// device is owed a notice). Otherwise the newcomer has had its chance and nothing else
    /// can have changed: every message already waiting was blocked at this same time (each
    /// clock advance and connectivity change pumps), so a send costs the same with a hundred
    /// messages waiting as with none.
    pub fn offer(&mut self, mut q: Queued, cx: &Cx<'_>) -> bool {
        let (faults, limits) = (cx.faults, cx.limits);
        let now_ms = (cx.now_of)(q.sender());
        if !self.installed && self.connected() {
            self.found_uninstalled(q.path, cx);
            return false;
        }
        if q.ttl_seconds == 0 {
            // "Now or never": never stored, never throttled.
            let shared_bucket = faults.on(Fault::ThrottleTtlZero, q.path)
                || (faults.on(Fault::ThrottleTtlZeroCollapse, q.path) && q.message.collapse_key.is_some());
            let throttled = (shared_bucket && !self.take_token(&q, now_ms, cx))
                || (faults.on(Fault::ThrottleTtlZeroOwnBucket, q.path)
                    && !self.take_token_from(q.sender(), Some("\0ttl0"), now_ms, limits));
            if self.can_receive(&q, faults) && !throttled {
                self.take(q, now_ms, cx.kept);
                self.piggyback(cx);
            }
            return false;
        }
        self.traffic_mut().stored += 1;
        let ticket = self.traffic_mut().stored;
        q.ticket = ticket;
        let path = q.path;
        self.store(q, cx);
        if self.traffic_mut().deleted_notice.is_some() {
            return true;
        }
        let newcomer_waits = self.traffic_mut().pending.last().is_some_and(|p| p.ticket == ticket);
        if newcomer_waits && self.connected() && !faults.on(Fault::ConnectedNow, path) {
            let q = self.traffic_mut().pending.pop().expect("looked at above");
            match self.try_take(q, cx) {
                Some(q) => self.traffic_mut().pending.push(q),
                None => self.piggyback(cx),
            }
        }
        // Idle buckets are trimmed in batches: a device sent a new collapse key every time
        // pays for a trim once every `MAX_IDLE_BUCKETS` sends, not on each.
        if self.traffic_mut().buckets.len() > 2 * MAX_IDLE_BUCKETS {
            self.settle_buckets(cx.now_of, limits);
        }
        false
    }

    fn store(&mut self, q: Queued, cx: &Cx<'_>) {
        let (faults, limits, variants) = (cx.faults, cx.limits, cx.variants);
        match q.message.collapse_key.clone() {
            Some(key) => self.store_collapsible(q, key, cx),
            None => {
                // The faults that count another device's, or only this sender's, messages.
                let own_only = faults.scoped(rules::STORED_LIMIT, Path::TwoSenders);
                let counted = |p: &&Queued| {
                    (p.message.collapse_key.is_none() || faults.has(Fault::StoredLimitCountsCollapsible))
                        && (!own_only || p.sender() == q.sender())
                };
                let max = limits.max_stored_messages;
                // Counted only near the limit: far from it, every stored message counted is
                // still below it, and a send costs no walk over the device's store.
                let at_most = self.traffic_mut().pending.len() + cx.scope.others_stored;
                let stored = if at_most + 1 < max {
                    at_most
                } else {
                    self.traffic_mut().pending.iter().filter(counted).count() + cx.scope.others_stored
                };
                // "If the limit is reached" (the 100th) or "after that" (the 101st): both read.
                let reached = if variants.has(Variant::DiscardOnReaching) { stored + 1 >= max } else { stored >= max };
                if reached && !faults.on(Fault::StoredLimit, q.path) {
                    self.traffic_mut().deleted_notice = Some(q.sender().to_string());
                    if faults.on(Fault::StoredLimitDropsOldest, q.path) {
                        if let Some(oldest) =
                            self.traffic_mut().pending.iter().position(|p| p.message.collapse_key.is_none())
                        {
                            self.traffic_mut().pending.remove(oldest);
                        }
                        self.traffic_mut().pending.push(q);
                    } else {
                        self.traffic_mut().pending.clear();
                    }
                    return;
                }
                self.traffic_mut().pending.push(q);
            }
        }
    }

    /// A send-to-sync message replaces the stored one of its collapse key; at most
    /// `max_collapse_keys` keys are stored at once.
    fn store_collapsible(&mut self, q: Queued, key: String, cx: &Cx<'_>) {
        let (faults, limits, variants) = (cx.faults, cx.limits, cx.variants);
        let path = q.path;
        let same = |p: &Queued| p.sender() == q.sender() && p.message.collapse_key.as_deref() == Some(&key);
        if faults.on(Fault::CollapseKeepsOld, path) && self.traffic_mut().pending.iter().any(same) {
            return;
        }
        if !faults.on(Fault::CollapseReplaces, path) {
            self.traffic_mut().pending.retain(|p| !same(p));
        }
        if faults.on(Fault::CollapseKeyEverUsed, path) && !self.traffic_mut().keys_ever.contains(&key) {
            if self.traffic_mut().keys_ever.len() >= limits.max_collapse_keys {
                return;
            }
            self.traffic_mut().keys_ever.push(key.clone());
        }
        let sender = q.sender().to_string();
        self.traffic_mut().pending.push(q);
        if faults.on(Fault::CollapseKeyOverflow, path) {
            return;
        }
        let limit = if faults.on(Fault::CollapseKeyLimit, path) {
            limits.max_collapse_keys.saturating_sub(1)
        } else {
            limits.max_collapse_keys
        };
        let phantom = faults.on(Fault::CollapseKeyCountsNoKey, path);
        let own_only = faults.scoped(rules::COLLAPSE_KEY_LIMIT, Path::TwoSenders);
        // Past the limit, drop a key: the documents promise nothing about which, so by
        // default the oldest, and in a variant the newest.
        loop {
            let mut keys: Vec<&str> = Vec::new();
            for p in &self.traffic().pending {
                if let Some(k) = p.message.collapse_key.as_deref()
                    && !keys.contains(&k)
                    && (!own_only || p.sender() == sender)
                {
                    keys.push(k);
                }
            }
            let no_key = phantom && self.traffic().pending.iter().any(|p| p.message.collapse_key.is_none());
            if keys.len() + usize::from(no_key) + cx.scope.others_keys <= limit || keys.is_empty() {
                break;
            }
            let dropped =
                if variants.has(Variant::KeepOldestCollapseKeys) { keys[keys.len() - 1] } else { keys[0] }.to_string();
            self.traffic_mut().pending.retain(|p| p.message.collapse_key.as_deref() != Some(dropped.as_str()));
        }
    }

    /// The app was uninstalled and a delivery was attempted: drop everything, invalidate.
    fn found_uninstalled(&mut self, path: Path, cx: &Cx<'_>) {
        self.traffic_mut().pending.clear();
        if cx.faults.on(Fault::Uninstall, path) {
            return;
        }
        if cx.variants.has(Variant::SlowUninstall) {
            // "It might take a while for the registration ID be completely removed."
            let delay_ms = cx.limits.unregistration_propagation_seconds.saturating_mul(1000);
            if self.invalid_from().is_none() {
                let at = self.senders.iter().map(|s| (s.to_string(), (cx.now_of)(s) + delay_ms)).collect();
                self.set_invalid_from(at);
            }
        } else {
            self.registered = false;
        }
    }

    /// An unregistration (or a found uninstall) due by `sender`'s clock takes effect.
    pub fn settle_registration(&mut self, sender: &str, now_ms: u64) {
        let due = self.invalid_from().and_then(|at| at.iter().find(|(s, _)| s == sender)).map(|(_, t)| *t);
        if due.is_some_and(|t| now_ms >= t) {
            self.registered = false;
            if let Some(d) = &mut self.details {
                d.invalid_from = None;
            }
        }
    }

    pub fn set_connectivity(&mut self, state: Connectivity, faults: &Faults, kept: &Kept) {
        let reconnect = self.connectivity == Connectivity::Offline && state != Connectivity::Offline;
        if reconnect {
            for p in &mut self.traffic_mut().pending {
                p.released |= !faults.on(Fault::OfflineStored, p.path);
            }
        }
        let last = self.traffic().inbox.last().cloned();
        if reconnect
            && let Some((last, path)) = last.and_then(|l| self.traffic().last_path.map(|p| (l, p)))
            && faults.on(Fault::DeliveredOnce, path)
        {
            self.receive(last, kept);
        }
        self.connectivity = state;
    }

    /// Delivers what can be delivered now.
    pub fn pump(&mut self, cx: &Cx<'_>) {
        let (faults, variants) = (cx.faults, cx.variants);
        self.traffic_mut()
            .pending
            .retain(|q| faults.on(Fault::TtlExpiry, q.path) || !q.expired((cx.now_of)(q.sender())));
        if !self.connected() {
            return;
        }
        if !self.installed {
            let path = self.traffic().pending.first().map_or(Path::Token, |q| q.path);
            self.found_uninstalled(path, cx);
            return;
        }
        if let Some(sender) = self.traffic_mut().deleted_notice.take() {
            let notice = Content { from: sender, message_type: Some("deleted_messages".into()), ..Content::default() };
            self.receive(Delivered { message_id: Arc::from(""), content: Arc::new(notice) }, cx.kept);
        }
        let mut waiting = Vec::new();
        let mut queue = std::mem::take(&mut self.traffic_mut().pending);
        let newest_first = variants.has(Variant::NewestFirst);
        if newest_first {
            queue.reverse();
        }
        for q in queue {
            waiting.extend(self.try_take(q, cx));
        }
        if newest_first {
            waiting.reverse();
        }
        self.traffic_mut().pending = waiting;
        self.settle_buckets(cx.now_of, cx.limits);
    }

    /// In the piggyback variant, after a delivery that was not throttled: the messages that
    /// wait only for a token go with it (seed 002 allows it, "for network and battery
    /// efficiency reasons"), without spending tokens.
    fn piggyback(&mut self, cx: &Cx<'_>) {
        if !cx.variants.has(Variant::Piggyback) || self.traffic().pending.is_empty() {
            return;
        }
        let queue = std::mem::take(&mut self.traffic_mut().pending);
        let mut waiting = Vec::new();
        for q in queue {
            if self.can_receive(&q, cx.faults) {
                let now = (cx.now_of)(q.sender());
                self.take(q, now, cx.kept);
            } else {
                waiting.push(q);
            }
        }
        self.traffic_mut().pending = waiting;
    }

    /// Delivers one stored message if the device can take it now and its bucket has a token;
    /// gives it back if it must wait. (A throttled message is dropped by the fault that does.)
    fn try_take(&mut self, q: Queued, cx: &Cx<'_>) -> Option<Queued> {
        let now = (cx.now_of)(q.sender());
        if !self.can_receive(&q, cx.faults) {
            Some(q)
        } else if self.take_token(&q, now, cx) {
            self.take(q, now, cx.kept);
            None
        } else {
            (!cx.faults.on(Fault::ThrottleDelays, q.path)).then_some(q)
        }
    }

    /// The device takes the message.
    fn take(&mut self, q: Queued, now_ms: u64, kept: &Kept) {
        if let Some(id) = q.receipt {
            self.traffic_mut().receipts.push((q.message.from.clone(), id, now_ms));
        }
        self.traffic_mut().last_path = Some(q.path);
        self.receive(q.message, kept);
    }

    /// The device has the message: it is kept for the control API, within the limit. Older
    /// ones are dropped in batches (the buffer stays under twice the limit), so a delivery
    /// costs O(1) however long the device has been receiving.
    pub fn receive(&mut self, message: Delivered, kept: &Kept) {
        self.traffic_mut().inbox.push(message);
        kept.add(1);
        let limit = kept.per_device.max(1);
        let len = self.traffic().inbox.len();
        // Past the total, this device keeps its newest message only.
        let excess = if kept.used() > kept.in_all {
            len - 1
        } else if len >= limit.saturating_mul(2) {
            len - limit
        } else {
            0
        };
        if excess > 0 {
            let t = self.traffic_mut();
            t.inbox.drain(..excess);
            t.inbox_start += excess as u64;
            t.inbox_dropped += excess as u64;
            kept.sub(excess as u64);
        }
    }

    /// The newest `inbox_limit` messages received, with the position of the first (how many
    /// came before it) and how many the limit dropped in all.
    pub fn inbox(&self, kept: &Kept) -> (&[Delivered], u64, u64) {
        let over = self.traffic().inbox.len().saturating_sub(kept.per_device);
        (
            &self.traffic().inbox[over..],
            self.traffic().inbox_start + over as u64,
            self.traffic().inbox_dropped + over as u64,
        )
    }

    /// Trades this device's token buckets for `other` (the fault that shares them).
    pub fn swap_buckets(&mut self, other: &mut Buckets) {
        std::mem::swap(&mut self.traffic_mut().buckets, other);
    }

    /// Token buckets held: bounded however many collapse keys the device was sent.
    pub fn buckets_held(&self) -> usize {
        self.traffic().buckets.len()
    }

    /// Forgets what the device received (the control API's clear); positions go on.
    pub fn clear_inbox(&mut self, kept: &Kept) {
        let n = self.traffic().inbox.len();
        kept.sub(n as u64);
        self.traffic_mut().inbox_start += n as u64;
        self.traffic_mut().inbox.clear();
    }

    /// Messages held in the inbox buffer (what counts toward the total kept).
    pub fn inbox_held(&self) -> usize {
        self.traffic().inbox.len()
    }

    /// The group keys of the kept messages with this id.
    pub fn keys_of_received(&self, message_id: &str) -> Vec<String> {
        self.traffic()
            .inbox
            .iter()
            .filter(|d| *d.message_id == *message_id)
            .filter_map(|d| d.notification_key.clone())
            .collect()
    }

    /// Takes back a message that was never meant to arrive (the fault that counts without
    /// delivering).
    pub fn unreceive(&mut self, message_id: &str, kept: &Kept) {
        let before = self.traffic().inbox.len();
        self.traffic_mut().inbox.retain(|d| *d.message_id != *message_id);
        kept.sub((before - self.traffic().inbox.len()) as u64);
    }

    /// A group message handled elsewhere leaves this device's unsent queue.
    pub fn dismiss(&mut self, message_id: &str) {
        self.traffic_mut().pending.retain(|q| *q.message.message_id != *message_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_is_small_and_a_state_file_reads_it_as_before() {
        assert!(std::mem::size_of::<Instance>() <= 32, "{} bytes", std::mem::size_of::<Instance>());
        let senders = SenderList::from(vec![Arc::from("1234")]);
        let plain = Instance::new(senders.clone(), None, None, Platform::Android);
        let mut rich = Instance::new(senders, Some("me@example".into()), Some("com.example".into()), Platform::Ios);
        rich.set_invalid_from(vec![("1234".into(), 5)]);
        for (instance, json) in [
            (
                &plain,
                r#"{"senders":["1234"],"account":null,"package":null,"platform":"android","registered":true,"installed":true,"connectivity":"awake","invalid_from":null,"traffic":null}"#,
            ),
            (
                &rich,
                r#"{"senders":["1234"],"account":"me@example","package":"com.example","platform":"ios","registered":true,"installed":true,"connectivity":"awake","invalid_from":[["1234",5]],"traffic":null}"#,
            ),
        ] {
            assert_eq!(serde_json::to_string(instance).unwrap(), json);
            let back: Instance = serde_json::from_str(json).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), json);
        }
    }
}
