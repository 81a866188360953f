//! Downstream sends (to registration ids and notification keys), and devices messaging
//! their group upstream, with the dismissal of handled group messages.

use std::sync::Arc;

use super::*;
use crate::reference::faults::WrongUnit;
use crate::reference::generated::rules;
use crate::reference::lifetime::{Content, Cx, Scope};

impl Model {
    /// A multicast id: never 0 (clients test it for truth), within a signed 64-bit number.
    fn multicast_id(&mut self) -> u64 {
        self.message_ids.random_range(1u64..i64::MAX as u64)
    }

    fn message_id(&mut self, sender: &str) -> Arc<str> {
        let now_ms = self.now_ms(sender);
        self.message_id_at(now_ms)
    }

    /// A message id at a sender's time, written where it is kept: a multicast makes one per
    /// recipient, so it reads the clock once and allocates each id once.
    fn message_id_at(&mut self, now_ms: u64) -> Arc<str> {
        use std::io::Write;
        // "0:" + at most 20 digits + "%" + 16 hex digits.
        let mut buf = [0u8; 40];
        let mut w = &mut buf[..];
        let random = self.message_ids.random::<u64>();
        write!(w, "0:{now_ms}%{random:016x}").expect("40 bytes hold any message id");
        let len = 40 - w.len();
        Arc::from(std::str::from_utf8(&buf[..len]).expect("written as text"))
    }

    /// Checks the message itself and returns its time to live in seconds.
    fn check_message(&self, message: &Message, path: Path) -> Result<u64, &'static str> {
        let on = |f: Fault| self.faults.on(f, path);
        if message.dry_run && on(Fault::DryRunUnvalidated) {
            return Ok(self.limits.default_ttl_seconds);
        }
        let ttl = match message.time_to_live {
            None if on(Fault::TtlDefault) => 86_400,
            None => self.limits.default_ttl_seconds,
            Some(t) if on(Fault::TtlRange) => t.clamp(0, i64::MAX) as u64,
            Some(t) => u64::try_from(t).ok().filter(|t| *t <= self.limits.max_ttl_seconds).ok_or("InvalidTtl")?,
        };
        // The generated faults that keep a message one step too short or too long, or read
        // its time to live in minutes (0 stays now or never).
        let ttl = match message.time_to_live {
            Some(t) if t > 0 => {
                let minutes = self.faults.unit("ttl_seconds") == Some(WrongUnit::Minutes);
                let ttl = if minutes { ttl.saturating_mul(60) } else { ttl };
                ttl.saturating_add_signed(self.faults.delta("ttl_seconds")).max(1)
            }
            _ => ttl,
        };
        let reserved = |k: &str| is_reserved_data_key(k) && !(k == "message_type" && on(Fault::ReservedMessageType));
        if let Some(Value::Object(data)) = &message.data
            && !on(Fault::ReservedDataKeys)
            && data.keys().any(|k| reserved(k))
        {
            return Err("InvalidDataKey");
        }
        let unit = self.faults.unit("max_payload_bytes");
        if payload_bytes(message, unit) > self.limits.max_payload_bytes && !on(Fault::PayloadLimit) {
            return Err("MessageTooBig");
        }
        Ok(ttl)
    }

    /// Accepts a message for one registration (or says why not), and lets the device take it
    /// if it can. Returns the canonical registration id when the given one is old.
    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &mut self,
        sender: &str,
        registration_id: &str,
        message: &Message,
        queued: Delivered,
        ttl: u64,
        path: Path,
    ) -> Result<Option<String>, &'static str> {
        self.observe_device(registration_id, Some(sender), message.collapse_key.as_deref());
        if !self.forced.is_empty()
            && let Some(e) = self.forced.get(registration_id).or_else(|| self.forced.get(self.resolve(registration_id)))
        {
            return Err(e);
        }
        if self.retired(registration_id, sender) {
            return Err("NotRegistered");
        }
        // Most ids have no newer one: only an old id costs a copy of the current one.
        let replaced = self.aliases.contains_key(registration_id).then(|| self.resolve(registration_id).to_string());
        let current = replaced.as_deref().unwrap_or(registration_id);
        let canonical = replaced.clone().filter(|_| !self.faults.on(Fault::CanonicalId, path));
        let scope = self.scope_of(sender, current);
        let full = self.waiting.stored_full(sender, self.caps.stored, self.caps.stored_per_sender);
        let now = self.now_ms(sender);
        let base = self.clock.now_ms();
        // One lookup of the instance, the model's other parts borrowed beside it: a group
        // send does this once per member.
        let Model { instances, faults, limits, offsets, variants, waiting, shared_buckets, kept, .. } = self;
        let Some(instance) = instances.get_mut(current) else { return Err("InvalidRegistration") };
        instance.settle_registration(sender, now);
        let on = |f: Fault| faults.on(f, path);
        let senders = if on(Fault::MultipleSenders) { &instance.senders[..1] } else { &instance.senders[..] };
        if !senders.iter().any(|s| **s == *sender) {
            return Err("MismatchSenderId");
        }
        if !instance.registered {
            return Err(if on(Fault::RegistrationErrors) { "InvalidRegistration" } else { "NotRegistered" });
        }
        if let Some(package) = &message.restricted_package_name
            && instance.package() != Some(package.as_str())
            && !on(Fault::RestrictedPackage)
        {
            return Err("InvalidPackageName");
        }
        if instance.platform == Platform::Ios
            && let Some(limit) = limits.max_payload_bytes_ios
            && payload_bytes(message, faults.unit("max_payload_bytes_ios")) > limit
            && !on(Fault::PayloadLimitIos)
        {
            return Err("MessageTooBig");
        }
        if instance.connectivity == Connectivity::Offline && on(Fault::Accepted) {
            return Err("Unavailable");
        }
        let ttl = if ttl == 0 && on(Fault::TtlZero) { limits.default_ttl_seconds } else { ttl };
        if message.dry_run && !on(Fault::DryRun) {
            return Ok(canonical);
        }
        let q = Queued {
            message: queued,
            delay_while_idle: message.delay_while_idle,
            ttl_seconds: ttl,
            sent_at_ms: now,
            released: false,
            receipt: message.receipt_for.clone(),
            ticket: 0,
            path,
        };
        let now_of = |s: &str| base + offsets.get(s).copied().unwrap_or(0);
        let collapse_key = q.message.collapse_key.clone();
        let cx = Cx { now_of: &now_of, limits, faults, variants, kept, scope };
        // At the stored-message caps, what would wait is refused; what the device takes now is not.
        if full && instance.would_wait(&q, now, &cx) {
            return Err("Unavailable");
        }
        let needs_pump = with_shared_buckets(instance, shared_buckets, faults, |i| i.offer(q, &cx));
        waiting.note(current, Some(instance));
        let receipts = !instance.traffic().receipts.is_empty();
        let across = faults.on(Fault::CollapseAcrossRegistrations, path)
            || faults.scoped(crate::reference::generated::rules::COLLAPSE_REPLACES, Path::TwoDevices);
        let held = faults.on(Fault::ConnectedNow, path);
        if let Some(key) = collapse_key.filter(|_| across) {
            for (_, other) in self.instances.iter_mut().filter(|(id, _)| ***id != *current) {
                other
                    .traffic_mut()
                    .pending
                    .retain(|p| !(p.sender() == sender && p.message.collapse_key.as_deref() == Some(&key)));
            }
        }
        if needs_pump && !held {
            self.pump(current);
        } else if receipts {
            self.collect_receipts(Some(current));
        }
        Ok(canonical)
    }

    /// What the faults that keep a device's limits per sender need of the sender's other
    /// devices (nothing, without them: this costs a walk over every device).
    fn scope_of(&self, sender: &str, current: &str) -> Scope {
        let stored = self.faults.scoped(rules::STORED_LIMIT, Path::TwoDevices);
        let keys = self.faults.scoped(rules::COLLAPSE_KEY_LIMIT, Path::TwoDevices);
        if !stored && !keys {
            return Scope::default();
        }
        let mut scope = Scope::default();
        let mut seen: Vec<String> = Vec::new();
        for (id, inst) in self.instances.iter().filter(|(id, _)| ***id != *current) {
            for p in inst.traffic().pending.iter().filter(|p| p.sender() == sender) {
                match &p.message.collapse_key {
                    None if stored => scope.others_stored += 1,
                    Some(k) if keys && !seen.contains(&format!("{id}/{k}")) => {
                        seen.push(format!("{id}/{k}"));
                        scope.others_keys += 1;
                    }
                    _ => {}
                }
            }
        }
        scope
    }

    /// What every recipient of a message shares.
    fn content(sender: &str, message: &Message, notification_key: Option<&str>) -> Arc<Content> {
        Arc::new(Content {
            from: sender.to_string(),
            message_type: None,
            collapse_key: message.collapse_key.clone(),
            data: message.data.clone(),
            notification: message.notification.clone(),
            notification_key: notification_key.map(str::to_string),
        })
    }

    /// Notes, while observing, whether a send's `to` is one of `sender`'s notification keys:
    /// also for a send answered before the model took it (a scripted 5xx or nack), whose
    /// failure is then the group's to retry.
    pub fn observe_to(&mut self, sender: &str, to: &str) {
        if let Some(o) = &mut self.observation {
            o.facts.to_key = self.groups.get(to).is_some_and(|g| *g.sender == *sender);
        }
    }

    /// A downstream send from `sender`: the scripts for its ids or key take effect first,
    /// and while a request is observed, what the reference knows of each device it reaches
    /// is noted for the journal.
    pub fn send(&mut self, sender: &str, target: Target, message: Message) -> SendOutcome {
        self.apply_send_scripts(sender, &target);
        if let Target::To(to) = &target {
            self.observe_to(sender, to);
        }
        let outcome = self.send_unscripted(sender, target, message);
        self.forced.clear();
        outcome
    }

    fn send_unscripted(&mut self, sender: &str, target: Target, message: Message) -> SendOutcome {
        let to_key = matches!(&target, Target::To(to) if self.groups.contains_key(to.as_str()));
        let path = message.via.path(to_key, matches!(target, Target::RegistrationIds(_)));
        let foreign = self.faults.on(Fault::MultipleSendersForeignKey, path);
        let group = match &target {
            Target::To(to) => self
                .groups
                .get(to.as_str())
                .filter(|g| *g.sender == *sender || foreign)
                .map(|g| (g.members.clone(), g.sender.clone())),
            Target::RegistrationIds(_) | Target::Missing => None,
        };
        let ttl = match self.check_message(&message, path) {
            Ok(ttl) => ttl,
            Err(error) => {
                let targets = match &target {
                    Target::To(_) | Target::Missing => 1,
                    Target::RegistrationIds(ids) => ids.len(),
                };
                let multicast_id = self.multicast_id();
                return SendOutcome::Invalid { error, group: group.is_some(), targets, multicast_id };
            }
        };
        if let Some((members, _)) = &group
            && self.variant(Variant::IosPayloadRefusesSend)
            && let Some(limit) = self.limits.max_payload_bytes_ios
            && payload_bytes(&message, self.faults.unit("max_payload_bytes_ios")) > limit
            && members.iter().any(|m| self.instances.get(self.resolve(m)).is_some_and(|i| i.platform == Platform::Ios))
        {
            let multicast_id = self.multicast_id();
            return SendOutcome::Invalid { error: "MessageTooBig", group: true, targets: 1, multicast_id };
        }
        if let (Some((members, owner)), Target::To(key)) = (group, &target) {
            // Under the foreign-key fault, another sender's key acts for its owner.
            let sender = &*owner;
            let message_id = self.message_id(sender);
            let content = Self::content(sender, &message, Some(key));
            let mut success = 0;
            let mut failed = Vec::new();
            let mut only_unregistered = true;
            let mut unregistered: Vec<String> = Vec::new();
            // Once per device: members joined before their device registered again may share it.
            let mut devices: Vec<Arc<str>> = Vec::with_capacity(members.len());
            for (i, member) in members.iter().enumerate() {
                let device = match self.aliases.contains_key(&**member) {
                    true => Arc::from(self.resolve(member)),
                    false => member.clone(),
                };
                if devices.contains(&device) {
                    continue;
                }
                devices.push(device);
                let queued = Delivered { message_id: message_id.clone(), content: content.clone() };
                let delivered = if self.faults.on(Fault::SendFanOut, path) && i > 0 {
                    self.instances.get(self.resolve(member)).is_some_and(|m| m.registered)
                } else {
                    let result = self.deliver(sender, member, &message, queued, ttl, path);
                    if let Err(e) = result {
                        only_unregistered &= e == "NotRegistered";
                        if e == "NotRegistered" {
                            unregistered.push(member.to_string());
                        }
                    }
                    result.is_ok()
                };
                if delivered {
                    success += 1;
                } else {
                    failed.push(member.to_string());
                }
            }
            if !failed.is_empty() && self.faults.on(Fault::SendPartialCountsOnly, path) {
                for member in members.iter().filter(|m| !failed.iter().any(|f| **f == ***m)) {
                    let id = self.resolve(member).to_string();
                    if let Some(inst) = self.instances.get_mut(id.as_str()) {
                        inst.dismiss(&message_id);
                        inst.unreceive(&message_id, &self.kept);
                    }
                }
            }
            if !failed.is_empty() && self.faults.on(Fault::SendPartialInverted, path) {
                failed =
                    members.iter().filter(|m| !failed.iter().any(|f| **f == ***m)).map(|m| m.to_string()).collect();
            }
            // The variant that prunes what a send found unregistered: counted failed this once.
            if self.variant(Variant::PrunesUnregistered) && !unregistered.is_empty() {
                self.remove_members(key, &unregistered, path);
            }
            let answered_with_counts = self.faults.on(Fault::SendAllFailed, path)
                || (self.faults.on(Fault::SendAllFailedOtherCauses, path) && !only_unregistered);
            if success == 0 && !answered_with_counts {
                return SendOutcome::GroupFailed;
            }
            return SendOutcome::Group { success, failed };
        }
        let multicast_id = self.multicast_id();
        let ids = match target {
            Target::To(to) => vec![to],
            Target::RegistrationIds(ids) => ids,
            Target::Missing => {
                return SendOutcome::Multicast {
                    multicast_id,
                    results: vec![SendResult::Error("MissingRegistration")],
                    form: AnswerForm::Documented,
                };
            }
        };
        let content = Self::content(sender, &message, None);
        let now_ms = self.now_ms(sender);
        let mut results: Vec<SendResult> = ids
            .iter()
            .map(|id| {
                let message_id =
                    if message.dry_run { Arc::from("fake_message_id") } else { self.message_id_at(now_ms) };
                let queued = Delivered { message_id: message_id.clone(), content: content.clone() };
                match self.deliver(sender, id, &message, queued, ttl, path) {
                    Ok(canonical) => SendResult::Sent { message_id, canonical },
                    Err(e) => SendResult::Error(e),
                }
            })
            .collect();
        if self.faults.on(Fault::ResponseFormat, path) {
            results.sort_by_key(|r| matches!(r, SendResult::Error(_)));
        }
        let form = if self.faults.on(Fault::ResponseFormat, path) {
            AnswerForm::WithoutCanonicalIds
        } else if self.faults.on(Fault::ResponseFormatCountsAsText, path) {
            AnswerForm::CountsAsText
        } else {
            AnswerForm::Documented
        };
        SendOutcome::Multicast { multicast_id, results, form }
    }

    // ---- upstream and dismissal (seeds 000, 001, 003) ----------------------------------

    /// A device sends upstream to a notification key: the other members get it.
    pub fn upstream_to_group(
        &mut self,
        registration_id: &str,
        key: &str,
        data: Option<Value>,
    ) -> Result<usize, String> {
        let me = self.resolve(registration_id).to_string();
        let group = self.groups.get(key).ok_or_else(|| format!("no device group has notification key {key:?}"))?;
        if !group.members.iter().any(|m| self.resolve(m) == me) {
            return Err("the device is not a member of that device group".into());
        }
        let (sender, members) = (group.sender.clone(), group.members.clone());
        let message = Message { data, ..Message::default() };
        // Upstream fans out as a send to the group would.
        let ttl = self.check_message(&message, Path::Key).map_err(str::to_string)?;
        let message_id = self.message_id(&sender);
        let content = Self::content(&sender, &message, Some(key));
        let mut reached = 0;
        let echo = self.fault(Fault::UpstreamFanOut);
        let recipients: Vec<Arc<str>> = members.into_iter().filter(|m| echo || self.resolve(m) != me).collect();
        for member in &recipients {
            let queued = Delivered { message_id: message_id.clone(), content: content.clone() };
            if self.deliver(&sender, member, &message, queued, ttl, Path::Key).is_ok() {
                reached += 1;
            }
        }
        Ok(reached)
    }

    /// A group message was handled on this device: it leaves the other members' unsent
    /// queues (how "handled" is signalled is not documented; the control API says it).
    pub fn handled(&mut self, registration_id: &str, message_id: &str) -> Result<(), String> {
        let me = self.resolve(registration_id).to_string();
        if !self.instances.contains_key(me.as_str()) {
            return Err(format!("no app instance with registration id {registration_id:?}"));
        }
        if self.fault(Fault::Dismissal) {
            return Ok(());
        }
        let keys = self.instances[me.as_str()].keys_of_received(message_id);
        for key in keys {
            let members = self.groups.get(key.as_str()).map(|g| g.members.clone()).unwrap_or_default();
            for member in members {
                let id = self.resolve(&member).to_string();
                if id != me
                    && let Some(inst) = self.instances.get_mut(id.as_str())
                {
                    inst.dismiss(message_id);
                }
            }
        }
        Ok(())
    }

    /// A read-only view of the groups of one sender, for tests and debugging.
    pub fn groups_of(&self, sender: &str) -> BTreeMap<String, Value> {
        self.groups
            .iter()
            .filter(|(_, g)| *g.sender == *sender)
            .map(|(k, g)| {
                let members: Vec<&str> = g.members.iter().map(|m| &**m).collect();
                (g.name.clone(), json!({"notification_key": k, "members": members}))
            })
            .collect()
    }
}

/// Runs `f` on an instance, its token buckets shared with every device of the model under the
/// fault that throttles per sender rather than per application.
pub(super) fn with_shared_buckets<R>(
    instance: &mut Instance,
    shared: &mut crate::reference::lifetime::Buckets,
    faults: &Faults,
    f: impl FnOnce(&mut Instance) -> R,
) -> R {
    if !faults.scoped(rules::THROTTLE_PER_APPLICATION, Path::TwoDevices) {
        return f(instance);
    }
    instance.swap_buckets(shared);
    let r = f(instance);
    instance.swap_buckets(shared);
    r
}

/// [`send_outcome_json`]'s body as bytes, the same bytes as that value's text: a multicast's
/// answer is written straight from its results (building a JSON value of a thousand results
/// only to print it cost a tenth of the send).
pub fn send_outcome_body(outcome: &SendOutcome, faults: &Faults) -> (u16, Option<Vec<u8>>) {
    match outcome {
        SendOutcome::Multicast { multicast_id, results, form } => {
            let answer = MulticastAnswer::new(*multicast_id, results, *form);
            (200, Some(serde_json::to_vec(&answer).expect("plain fields serialize")))
        }
        _ => {
            let (status, body) = send_outcome_json(outcome, faults);
            (status, body.map(|b| b.to_string().into_bytes()))
        }
    }
}

/// A multicast's answer, its fields in the order a JSON value's map prints them (by name), so
/// that it writes the same text as a value or as bytes.
#[derive(Serialize)]
struct MulticastAnswer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    canonical_ids: Option<Count>,
    failure: Count,
    multicast_id: u64,
    results: Vec<Rendered<'a>>,
    success: Count,
}

/// A count, as a number (or as a fault writes it, a string).
#[derive(Serialize)]
#[serde(untagged)]
enum Count {
    Number(usize),
    Text(String),
}

#[derive(Serialize)]
struct Rendered<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    registration_id: Option<&'a str>,
}

impl<'a> MulticastAnswer<'a> {
    fn new(multicast_id: u64, results: &'a [SendResult], form: AnswerForm) -> Self {
        let success = results.iter().filter(|r| matches!(r, SendResult::Sent { .. })).count();
        let canonical = results.iter().filter(|r| matches!(r, SendResult::Sent { canonical: Some(_), .. })).count();
        let results: Vec<Rendered> = results
            .iter()
            .map(|r| match r {
                SendResult::Sent { message_id, canonical } => {
                    Rendered { error: None, message_id: Some(message_id), registration_id: canonical.as_deref() }
                }
                SendResult::Error(e) => Rendered { error: Some(e), message_id: None, registration_id: None },
            })
            .collect();
        let failure = results.len() - success;
        let count = |n: usize| match form {
            AnswerForm::CountsAsText => Count::Text(n.to_string()),
            _ => Count::Number(n),
        };
        MulticastAnswer {
            canonical_ids: (form != AnswerForm::WithoutCanonicalIds).then(|| count(canonical)),
            failure: count(failure),
            multicast_id,
            results,
            success: count(success),
        }
    }
}

/// Renders a send outcome as the legacy HTTP API does: `(status, body)`.
pub fn send_outcome_json(outcome: &SendOutcome, faults: &Faults) -> (u16, Option<Value>) {
    match outcome {
        SendOutcome::GroupFailed => (503, None),
        SendOutcome::Group { success, failed } => {
            let mut body = Map::new();
            body.insert("success".into(), json!(success));
            if !(failed.is_empty() && faults.on(Fault::SendSuccess, Path::Key)) {
                body.insert("failure".into(), json!(failed.len()));
            }
            if !failed.is_empty() && !faults.on(Fault::SendPartial, Path::Key) && *success > 0 {
                body.insert("failed_registration_ids".into(), json!(failed));
            }
            (200, Some(Value::Object(body)))
        }
        SendOutcome::Multicast { multicast_id, results, form } => {
            let answer = MulticastAnswer::new(*multicast_id, results, *form);
            (200, Some(serde_json::to_value(&answer).expect("plain fields serialize")))
        }
        // A group response has no per-target results to put the error in.
        SendOutcome::Invalid { error, group: true, .. } => (400, Some(json!({ "error": error }))),
        SendOutcome::Invalid { error, targets, multicast_id, .. } => (
            200,
            Some(json!({
                "multicast_id": multicast_id,
                "success": 0,
                "failure": targets,
                "canonical_ids": 0,
                "results": vec![json!({ "error": error }); *targets],
            })),
        ),
    }
}
