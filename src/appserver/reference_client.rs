//! The project's own app server: what the app-server rules ask, done plainly. It keeps the
//! tokens devices gave it (replacing one the service answers a canonical id for, deleting one
//! it answers NotRegistered for), the keys of the groups it made, and at most the allowed
//! collapse keys per device; it retries what the service could not take, backing off and
//! honouring Retry-After, and over XMPP it numbers messages once for all, acks what it is
//! sent on the connection that received it, leaves a draining connection and keeps to the
//! pending limit. An [`AppFault`] breaks one of these duties; an [`AppVariant`] keeps it
//! another way the documents allow.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::store::Store;
use super::xmpp_session::{Session, SessionFaults};
use super::{AppFault, AppVariant, Client, ClientError, Command, Outgoing, To, Via};
use crate::driver::{Sender, Target};
use crate::verdicts::Numbers;
use crate::wire::{HttpRequest, HttpResponse};

/// How the client waits between retries: a real sleep, or (against a reference on the
/// virtual clock) an advance of the sender's clock.
pub type Wait = Arc<dyn Fn(Duration) + Send + Sync>;

/// Sends of one message before it gives up.
const ATTEMPTS: u32 = 4;
/// The first retry's wait; each next one is twice (three times, jittered) the one before.
const FIRST_WAIT: Duration = Duration::from_secs(1);

pub struct ReferenceClient {
    target: Arc<dyn Target>,
    sender: Sender,
    numbers: Numbers,
    faults: BTreeSet<AppFault>,
    variants: BTreeSet<AppVariant>,
    wait: Wait,
    /// The tokens and group keys it keeps.
    store: Store,
    /// Per device token: its collapse keys in use, with when their message expires.
    collapse: HashMap<String, Vec<(String, u64)>>,
    started: Instant,
    /// Time waited by advancing the reference's clock rather than sleeping.
    waited_ms: u64,
    session: Option<Session>,
    made_up: u64,
    jitter: u64,
}

impl ReferenceClient {
    pub fn new(target: Arc<dyn Target>, sender: Sender, numbers: Numbers, wait: Wait) -> ReferenceClient {
        ReferenceClient {
            target,
            sender,
            numbers,
            faults: BTreeSet::new(),
            variants: BTreeSet::new(),
            wait,
            store: Store::default(),
            collapse: HashMap::new(),
            started: Instant::now(),
            waited_ms: 0,
            session: None,
            made_up: 0,
            jitter: 0,
        }
    }

    pub fn with_fault(mut self, fault: AppFault) -> Self {
        self.faults.insert(fault);
        self
    }

    pub fn with_variant(mut self, variant: AppVariant) -> Self {
        self.variants.insert(variant);
        self
    }

    fn has(&self, f: AppFault) -> bool {
        self.faults.contains(&f)
    }

    /// Sends of one message before it gives up.
    fn attempts(&self) -> u32 {
        if self.variants.contains(&AppVariant::GivesUpAfterOneRetry) { 2 } else { ATTEMPTS }
    }

    /// A retry's fields: the message's, marked with the attempt under that variant.
    fn retry_fields(&self, fields: &Map<String, Value>, attempt: u32) -> Map<String, Value> {
        let mut f = fields.clone();
        if attempt > 1
            && self.variants.contains(&AppVariant::MarksRetries)
            && let Some(Value::Object(data)) = f.get_mut("data")
        {
            data.insert("attempt".into(), json!(attempt.to_string()));
        }
        f
    }

    /// The token stored for a device (a canonical id replaces it); `None` once deleted.
    pub fn token(&self, given: &str) -> Option<String> {
        self.store.token(given)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + self.waited_ms
    }

    fn pause(&mut self, d: Duration) {
        self.waited_ms += d.as_millis() as u64;
        (self.wait)(d);
    }

    /// The wait before retry `attempt` (1 for the first retry), at least `retry_after`.
    fn backoff(&mut self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let mut wait = if self.has(AppFault::NoBackoff) {
            FIRST_WAIT
        } else if self.variants.contains(&AppVariant::JitteredBackoff) {
            self.jitter = (self.jitter * 31 + 7) % 16;
            FIRST_WAIT * 3u32.pow(attempt - 1) * (100 + self.jitter as u32) / 100
        } else if self.variants.contains(&AppVariant::ShortFirstWait) {
            FIRST_WAIT / 2 * 2u32.pow(attempt - 1)
        } else {
            FIRST_WAIT * 2u32.pow(attempt - 1)
        };
        if let Some(ra) = retry_after.filter(|_| !self.has(AppFault::IgnoresRetryAfter)) {
            wait = wait.max(ra);
        }
        wait
    }

    /// What the client refuses to send: the checks an app server makes before a send.
    fn check(&mut self, to_devices: &[String], m: &Outgoing) -> Result<(), ClientError> {
        let refuse = |why: String| Err(ClientError::Failed(format!("not sent: {why}")));
        if let Some(t) = m.time_to_live
            && !(0..=self.numbers.max_ttl_seconds as i64).contains(&t)
            && !self.has(AppFault::TtlOutOfRange)
        {
            return refuse(format!("time_to_live {t} is outside 0 to {}", self.numbers.max_ttl_seconds));
        }
        let bytes = crate::wire::data_payload_bytes(&m.data);
        if bytes > self.numbers.max_payload_bytes && !self.has(AppFault::OversizedPayload) {
            return refuse(format!("{bytes} bytes of data is past the limit of {}", self.numbers.max_payload_bytes));
        }
        if let Some(k) = m.data.keys().find(|k| crate::wire::is_reserved_data_key(k)) {
            return refuse(format!("the data key {k:?} is reserved"));
        }
        let fresh_keys = self.has(AppFault::CollapseKeyPerMessage);
        if let Some(key) = &m.collapse_key
            && !fresh_keys
            && m.time_to_live != Some(0)
        {
            let now = self.now_ms();
            let until = now + m.time_to_live.unwrap_or(self.numbers.default_ttl_seconds as i64).max(0) as u64 * 1000;
            let max = self.numbers.max_collapse_keys;
            for d in to_devices {
                let keys = self.collapse.entry(d.clone()).or_default();
                keys.retain(|(_, u)| *u > now);
                if !keys.iter().any(|(k, _)| k == key) && keys.len() >= max {
                    return refuse(format!("{d} has {max} collapse keys in flight"));
                }
            }
            for d in to_devices {
                let keys = self.collapse.entry(d.clone()).or_default();
                keys.retain(|(k, _)| k != key);
                keys.push((key.clone(), until));
            }
        }
        Ok(())
    }

    /// The message's JSON fields, as this client writes them.
    fn fields(&mut self, m: &Outgoing) -> Map<String, Value> {
        let mut data = m.data.clone();
        if self.has(AppFault::ReservedKey) {
            data.insert("from".into(), json!("app-server"));
        }
        let mut f = Map::new();
        f.insert("data".into(), Value::Object(data));
        let fresh = match &m.collapse_key {
            Some(_) => self.has(AppFault::CollapseKeyPerMessage),
            None => self.has(AppFault::MakesUpCollapseKeys),
        };
        match (&m.collapse_key, fresh) {
            (_, true) => {
                self.made_up += 1;
                f.insert("collapse_key".into(), json!(format!("update-{}", self.made_up)));
            }
            (Some(k), false) => {
                f.insert("collapse_key".into(), json!(k));
            }
            (None, false) => {}
        }
        if let Some(t) = m.time_to_live {
            let t = if self.has(AppFault::TtlOutOfRange) { self.numbers.max_ttl_seconds as i64 + 1 } else { t };
            f.insert("time_to_live".into(), json!(t));
        }
        f
    }

    fn post(&self, path: &str, body: &Value) -> Result<HttpResponse, ClientError> {
        let req = HttpRequest::new("POST", path)
            .with_header("authorization", &format!("key={}", self.sender.key))
            .with_header("project_id", &self.sender.id)
            .with_json(body);
        self.target.exchange(&req).map_err(|e| ClientError::Failed(e.to_string()))
    }

    fn group_name(&self, user: &str, app: Option<&str>) -> String {
        match app.filter(|_| !self.has(AppFault::OneGroupPerUser)) {
            Some(app) => format!("{user}-{app}"),
            None => user.to_string(),
        }
    }

    /// The key of a group this client made, or one a lookup finds.
    fn key_of(&mut self, name: &str) -> Result<String, ClientError> {
        if !self.variants.contains(&AppVariant::LooksUpKeys)
            && let Some(k) = self.store.key(name)
        {
            return Ok(k.clone());
        }
        let req = HttpRequest::new("GET", "/gcm/notification")
            .with_header("authorization", &format!("key={}", self.sender.key))
            .with_header("project_id", &self.sender.id)
            .with_query("notification_key_name", name);
        let resp = self.target.exchange(&req).map_err(|e| ClientError::Failed(e.to_string()))?;
        let key = resp.body_json().and_then(|b| b["notification_key"].as_str().map(str::to_string));
        let key = key.ok_or_else(|| ClientError::Failed(format!("no group named {name:?}: {}", resp.status)))?;
        self.store.keep_key(name, &key);
        Ok(key)
    }

    fn manage(&mut self, op: &str, user: &str, app: Option<&str>, tokens: &[String]) -> Result<Value, ClientError> {
        let name = self.group_name(user, app);
        // A group it has the key of gets the tokens added, not made again.
        let op = if op == "create" && self.store.key(&name).is_some() { "add" } else { op };
        let mut ids: Vec<String> = tokens.iter().filter_map(|t| self.token(t)).collect();
        let mut body = json!({ "operation": op, "notification_key_name": name });
        if op == "create" {
            if self.has(AppFault::AddsUnobtainedTokens) {
                self.made_up += 1;
                ids.push(format!("never-obtained-{}", self.made_up));
            }
        } else {
            if self.has(AppFault::RecreatesGroups) {
                // It forgot the key: it asks to create the group to get one.
                let again = json!({ "operation": "create", "notification_key_name": name, "registration_ids": ids });
                self.post("/gcm/notification", &again)?;
                self.store.drop_key(&name);
            }
            body["notification_key"] = json!(self.key_of(&name)?);
        }
        body["registration_ids"] = json!(ids);
        let resp = self.post("/gcm/notification", &body)?;
        let answer = resp.body_json().unwrap_or(Value::Null);
        match answer["notification_key"].as_str() {
            Some(key) if resp.status == 200 => {
                self.store.keep_key(&name, key);
                Ok(json!({ "notification_key_name": name, "notification_key": key }))
            }
            _ if op == "create" && answer["error"].as_str().is_some_and(|e| e.contains("already exists")) => {
                let key = self.key_of(&name)?;
                Ok(json!({ "notification_key_name": name, "notification_key": key }))
            }
            _ => Err(ClientError::Failed(format!(
                "{op} {name:?}: {} {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            ))),
        }
    }

    fn send(&mut self, to: &To, m: &Outgoing, via: Via) -> Result<Value, ClientError> {
        let answer = self.send_once(to, m, via)?;
        // It misreads the answer as a failure, and sends the message once more.
        if self.has(AppFault::ResendsSuccesses) {
            return self.send_once(to, m, via);
        }
        Ok(answer)
    }

    fn send_once(&mut self, to: &To, m: &Outgoing, via: Via) -> Result<Value, ClientError> {
        let (devices, group): (Vec<String>, Option<String>) = match to {
            To::Token(t) => (self.token(t).into_iter().collect(), None),
            To::Tokens(ts) => (ts.iter().filter_map(|t| self.token(t)).collect(), None),
            To::Group { user, app } => {
                let name = self.group_name(user, app.as_deref());
                let to = if self.has(AppFault::SendsToGroupName) { name } else { self.key_of(&name)? };
                (Vec::new(), Some(to))
            }
            To::Key(key) => (Vec::new(), Some(key.clone())),
        };
        if devices.is_empty() && group.is_none() {
            return Err(ClientError::Failed("not sent: no stored token for it (deleted)".into()));
        }
        self.check(&devices, m)?;
        let fields = self.fields(m);
        if via == Via::Xmpp {
            return self.send_xmpp(devices, group, fields, m.receipt);
        }
        if let Some(key) = group {
            return self.send_group(&key, &fields);
        }
        let chunk = if self.has(AppFault::UnsplitIds) || via == Via::PlainText {
            devices.len().max(1)
        } else {
            self.numbers.max_registration_ids
        };
        let mut results = Vec::new();
        for ids in devices.chunks(chunk) {
            results.extend(self.send_ids(ids, &fields, via, matches!(to, To::Tokens(_)))?);
        }
        Ok(json!({ "results": results }))
    }

    /// Sends to registration ids, retrying the ids the service could not take.
    fn send_ids(
        &mut self,
        ids: &[String],
        fields: &Map<String, Value>,
        via: Via,
        list: bool,
    ) -> Result<Vec<Value>, ClientError> {
        let mut pending: Vec<String> = ids.to_vec();
        let mut done: HashMap<String, Value> = HashMap::new();
        let attempts = self.attempts();
        for attempt in 1..=attempts {
            let fields = &self.retry_fields(fields, attempt);
            let resp = self.post_ids(&pending, fields, via, list)?;
            let mut again = Vec::new();
            let mut retry_after = None;
            if resp.status >= 500 {
                retry_after = retry_after_of(&resp);
                again = pending.clone();
            } else if resp.status != 200 {
                return Err(ClientError::Failed(format!(
                    "refused: {} {}",
                    resp.status,
                    String::from_utf8_lossy(&resp.body)
                )));
            } else {
                for (id, r) in pending.iter().zip(results_of(&resp, via)) {
                    match r["error"].as_str() {
                        Some("Unavailable" | "InternalServerError") => again.push(id.clone()),
                        Some("NotRegistered") if !self.has(AppFault::KeepsNotRegistered) => self.forget(id, None),
                        _ => {
                            if let Some(c) =
                                r["registration_id"].as_str().filter(|_| !self.has(AppFault::IgnoresCanonical))
                            {
                                self.forget(id, Some(c.to_string()));
                            }
                        }
                    }
                    done.insert(id.clone(), r);
                }
            }
            if again.is_empty() || self.has(AppFault::NeverRetries) || attempt == attempts {
                break;
            }
            let wait = self.backoff(attempt, retry_after);
            self.pause(wait);
            pending = if self.has(AppFault::RetriesWholeList) { ids.to_vec() } else { again };
        }
        Ok(ids
            .iter()
            .map(|id| json!({ "token": id, "result": done.get(id).cloned().unwrap_or(json!({"error": "not taken"})) }))
            .collect())
    }

    fn post_ids(
        &mut self,
        ids: &[String],
        fields: &Map<String, Value>,
        via: Via,
        list: bool,
    ) -> Result<HttpResponse, ClientError> {
        if via == Via::PlainText {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("registration_id", &ids[0]);
            for (k, v) in fields {
                match (k.as_str(), v) {
                    ("data", Value::Object(d)) => {
                        for (dk, dv) in d {
                            form.append_pair(&format!("data.{dk}"), dv.as_str().unwrap_or(&dv.to_string()));
                        }
                    }
                    (k, v) => {
                        form.append_pair(k, v.as_str().map_or_else(|| v.to_string(), str::to_string).as_str());
                    }
                }
            }
            let mut req = HttpRequest::new("POST", "/gcm/send")
                .with_header("authorization", &format!("key={}", self.sender.key))
                .with_header("content-type", "application/x-www-form-urlencoded;charset=UTF-8");
            req.body = form.finish().into_bytes();
            return self.target.exchange(&req).map_err(|e| ClientError::Failed(e.to_string()));
        }
        let mut body = Value::Object(fields.clone());
        if list || ids.len() > 1 {
            body["registration_ids"] = json!(ids);
            if self.has(AppFault::BothTargetFields) {
                body["to"] = json!(ids[0]);
            }
        } else {
            body["to"] = json!(ids[0]);
            if self.has(AppFault::BothTargetFields) {
                body["registration_ids"] = json!(ids);
            }
        }
        self.post("/fcm/send", &body)
    }

    /// Sends to a group, retrying what failed: its failed members (or the key again), or the
    /// whole send after a 5xx.
    fn send_group(&mut self, key: &str, fields: &Map<String, Value>) -> Result<Value, ClientError> {
        let mut to = json!(key);
        let mut last = Value::Null;
        let attempts = self.attempts();
        for attempt in 1..=attempts {
            let mut body = Value::Object(self.retry_fields(fields, attempt));
            match &to {
                Value::Array(_) => body["registration_ids"] = to.clone(),
                _ => body["to"] = to.clone(),
            }
            if self.has(AppFault::BothTargetFields) {
                body["to"] = json!(key);
                body["registration_ids"] = json!([key]);
            }
            let resp = self.post("/fcm/send", &body)?;
            let answer = resp.body_json().unwrap_or(Value::Null);
            last = json!({ "status": resp.status, "answer": answer.clone() });
            let failed: Vec<String> = answer["failed_registration_ids"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            let retry_after = retry_after_of(&resp);
            let again = if resp.status >= 500 {
                Some(json!(key))
            } else if resp.status != 200 {
                return Err(ClientError::Failed(format!(
                    "refused: {} {}",
                    resp.status,
                    String::from_utf8_lossy(&resp.body)
                )));
            } else if to.is_array() {
                let retry: Vec<&Value> = answer["results"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .zip(to.as_array().into_iter().flatten())
                    .filter(|(r, _)| matches!(r["error"].as_str(), Some("Unavailable" | "InternalServerError")))
                    .map(|(_, id)| id)
                    .collect();
                (!retry.is_empty()).then(|| json!(retry))
            } else if !failed.is_empty() {
                Some(if self.variants.contains(&AppVariant::RetriesViaKey) { json!(key) } else { json!(failed) })
            } else {
                None
            };
            let Some(next) = again else { break };
            if self.has(AppFault::NeverRetriesGroups) || attempt == attempts {
                break;
            }
            let wait = self.backoff(attempt, retry_after);
            self.pause(wait);
            to = next;
        }
        Ok(last)
    }

    fn send_xmpp(
        &mut self,
        devices: Vec<String>,
        group: Option<String>,
        fields: Map<String, Value>,
        receipt: bool,
    ) -> Result<Value, ClientError> {
        let mut to = group.clone().or_else(|| devices.first().cloned()).unwrap_or_default();
        let mut results = Vec::new();
        // Members of the group that failed, still to be tried one by one.
        let mut members: Vec<String> = Vec::new();
        let attempts = self.attempts();
        for attempt in 1..=attempts {
            let mut message = Value::Object(self.retry_fields(&fields, attempt));
            message["to"] = json!(to);
            if receipt {
                message["delivery_receipt_requested"] = json!(true);
            }
            let answer = self.session()?.send(message).map_err(ClientError::Failed)?;
            results.push(answer.clone());
            let code = answer["error"].as_str().unwrap_or_default();
            let failed: Vec<String> = answer["failed_registration_ids"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            match answer["message_type"].as_str() {
                Some("ack") if !failed.is_empty() && group.as_deref() == Some(to.as_str()) => {
                    if self.has(AppFault::NeverRetriesGroups) || attempt == attempts {
                        break;
                    }
                    // Over XMPP a message goes to one `to`: the failed members one by one,
                    // or the key again.
                    if !self.variants.contains(&AppVariant::RetriesViaKey) {
                        members = failed;
                        to = members.remove(0);
                    }
                    let wait = self.backoff(attempt, None);
                    self.pause(wait);
                    continue;
                }
                Some("ack") => {
                    if let Some(c) =
                        answer["registration_id"].as_str().filter(|_| !self.has(AppFault::IgnoresCanonical))
                    {
                        self.forget(&to, Some(c.to_string()));
                    }
                    match members.is_empty() {
                        true => break,
                        false => {
                            to = members.remove(0);
                            continue;
                        }
                    }
                }
                _ if code == "DEVICE_UNREGISTERED" && !self.has(AppFault::KeepsNotRegistered) => {
                    self.forget(&to, None);
                    break;
                }
                _ => {}
            }
            let retryable = matches!(code, "SERVICE_UNAVAILABLE" | "INTERNAL_SERVER_ERROR" | "CONNECTION_DRAINING")
                || (group.is_some() && answer["message_type"] == "nack");
            let never = if group.is_some() { AppFault::NeverRetriesGroups } else { AppFault::NeverRetries };
            if !retryable || self.has(never) || attempt == attempts {
                break;
            }
            let wait = self.backoff(attempt, None);
            self.pause(wait);
        }
        Ok(json!({ "answers": results }))
    }

    fn session(&mut self) -> Result<&mut Session, ClientError> {
        if self.session.is_none() {
            let faults = SessionFaults {
                reuses_ids: self.has(AppFault::ReusesMessageIds),
                no_upstream_acks: self.has(AppFault::NeverAcksUpstream),
                no_receipt_acks: self.has(AppFault::NeverAcksReceipts),
                acks_on_newest: self.has(AppFault::AcksOnOtherConnection),
                ignores_draining: self.has(AppFault::IgnoresDraining),
                no_flow_control: self.has(AppFault::NoFlowControl),
                connection_per_burst: self.variants.contains(&AppVariant::ConnectionPerBurst),
            };
            let s =
                Session::new(self.target.clone(), self.sender.clone(), self.numbers.max_pending_per_connection, faults);
            self.session = Some(s);
        }
        Ok(self.session.as_mut().expect("just made"))
    }

    /// A token the service said is old (`Some(canonical)`) or gone (`None`).
    fn forget(&mut self, id: &str, replaced_by: Option<String>) {
        self.store.forget(id, replaced_by);
    }
}

fn retry_after_of(resp: &HttpResponse) -> Option<Duration> {
    let now = crate::reference::journal::wall_ms();
    resp.header("retry-after").and_then(|v| crate::verdicts::events::retry_after_ms(v, now)).map(Duration::from_millis)
}

/// Per-target results of a send to ids, JSON or plain text, as JSON results.
fn results_of(resp: &HttpResponse, via: Via) -> Vec<Value> {
    if via == Via::PlainText {
        let text = String::from_utf8_lossy(&resp.body);
        let mut lines = text.lines();
        let first = lines.next().unwrap_or_default();
        let r = match first.strip_prefix("Error=") {
            Some(e) => json!({ "error": e }),
            None => {
                let mut r = json!({ "message_id": first.trim_start_matches("id=") });
                if let Some(c) = lines.find_map(|l| l.strip_prefix("registration_id=")) {
                    r["registration_id"] = json!(c);
                }
                r
            }
        };
        return vec![r];
    }
    resp.body_json().and_then(|b| b["results"].as_array().cloned()).unwrap_or_default()
}

impl Client for ReferenceClient {
    fn describe(&self) -> String {
        let mut names: Vec<&str> = self.faults.iter().map(|f| f.name()).collect();
        names.extend(self.variants.iter().map(|v| v.name()));
        if names.is_empty() {
            "the reference client".into()
        } else {
            format!("the reference client ({})", names.join(", "))
        }
    }

    fn run(&mut self, command: &Command) -> Result<Value, ClientError> {
        match command {
            Command::Send { to, message, via } => self.send(to, message, *via),
            Command::CreateGroup { user, app, tokens } => self.manage("create", user, app.as_deref(), tokens),
            Command::AddToGroup { user, app, tokens } => self.manage("add", user, app.as_deref(), tokens),
            Command::RemoveFromGroup { user, app, tokens } => self.manage("remove", user, app.as_deref(), tokens),
            Command::XmppListen { seconds, connections } => {
                let d = Duration::from_secs_f64(seconds.clamp(0.0, 60.0));
                let n = connections.unwrap_or(1).clamp(1, 4);
                self.session()?.listen(d, n).map_err(ClientError::Failed)?;
                Ok(json!({}))
            }
            Command::XmppBurst { to, count, message } => {
                let to = match to {
                    To::Token(t) => self.token(t).unwrap_or_default(),
                    To::Group { user, app } => {
                        let name = self.group_name(user, app.as_deref());
                        self.key_of(&name)?
                    }
                    To::Key(key) => key.clone(),
                    To::Tokens(_) => return Err(ClientError::Unsupported("XMPP sends to one `to`".into())),
                };
                let fields = self.fields(message);
                let messages: Vec<Value> = (0..*count)
                    .map(|i| {
                        let mut m = Value::Object(fields.clone());
                        m["to"] = json!(to);
                        m["data"]["n"] = json!(i.to_string());
                        m
                    })
                    .collect();
                let answers = self.session()?.burst(messages).map_err(ClientError::Failed)?;
                Ok(json!({ "answers": answers }))
            }
            Command::XmppClose => {
                if let Some(s) = self.session.take() {
                    s.close();
                }
                Ok(json!({}))
            }
        }
    }
}
