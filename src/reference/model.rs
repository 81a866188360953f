//! The reference server's state machine: senders, app instances, device groups, deliveries.
//!
//! Synchronous and deterministic: time comes from an injected [`Clock`], randomness from a
//! seeded generator. Transports call these methods and translate the results; nothing here
//! knows about HTTP or XMPP.

use std::collections::{BTreeMap, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::clock::Clock;
use super::faults::{Fault, Faults};
use crate::spec::Profile;

/// The documented numbers the model enforces, taken from a spec profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_members: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("profile `{profile}` has no usable parameter `{param}`: {why}")]
pub struct LimitsError {
    pub profile: String,
    pub param: String,
    pub why: String,
}

impl Limits {
    pub fn from_profile(profile: &Profile) -> Result<Limits, LimitsError> {
        let count = |param: &str| -> Result<usize, LimitsError> {
            let err = |why: &str| LimitsError { profile: profile.name.clone(), param: param.into(), why: why.into() };
            let v = profile.params.get(param).ok_or_else(|| err("missing"))?;
            v.value
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| err("expected a positive integer"))
        };
        Ok(Limits { max_members: count("max_members")? })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    #[default]
    Android,
    Ios,
}

/// Server credentials of one sender (a project).
#[derive(Debug, Clone, Serialize)]
pub struct SenderCredentials {
    pub sender_id: String,
    pub server_key: String,
}

/// A message as the device received it.
#[derive(Debug, Clone, Serialize)]
pub struct Delivered {
    pub from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collapse_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification: Option<Value>,
}

#[derive(Debug)]
struct Instance {
    senders: Vec<String>,
    account: Option<String>,
    registered: bool,
    inbox: Vec<Delivered>,
}

#[derive(Debug)]
struct Group {
    sender: String,
    name: String,
    /// In insertion order, so responses list members the way they were added.
    members: Vec<String>,
    /// The account of a group made through the client-side endpoint.
    owner: Option<String>,
}

#[derive(Debug)]
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

/// A downstream message, validated by the transport.
#[derive(Debug, Clone, Default)]
pub struct Message {
    pub collapse_key: Option<String>,
    pub data: Option<Value>,
    pub notification: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    To(String),
    RegistrationIds(Vec<String>),
}

/// What a send did, for the transport to render.
#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    /// A send to a notification key that reached at least one member.
    Group { success: usize, failed: Vec<String> },
    /// A send to a notification key whose every member failed.
    GroupFailed,
    /// Per-registration results, in request order.
    Multicast { multicast_id: u64, results: Vec<SendResult> },
}

#[derive(Debug, Clone, PartialEq)]
pub enum SendResult {
    Sent { message_id: String },
    Error(&'static str),
}

/// The whole state of a reference server.
pub struct Model {
    limits: Limits,
    clock: Box<dyn Clock>,
    rng: StdRng,
    faults: Faults,
    senders: HashMap<String, String>,
    senders_by_key: HashMap<String, String>,
    instances: HashMap<String, Instance>,
    groups: HashMap<String, Group>,
    group_names: HashMap<(String, String), String>,
    id_tokens: HashMap<String, IdToken>,
    minted_keys: u64,
}

impl Model {
    pub fn new(limits: Limits, clock: Box<dyn Clock>, seed: u64, faults: Faults) -> Self {
        Model {
            limits,
            clock,
            rng: StdRng::seed_from_u64(seed),
            faults,
            senders: HashMap::new(),
            senders_by_key: HashMap::new(),
            instances: HashMap::new(),
            groups: HashMap::new(),
            group_names: HashMap::new(),
            id_tokens: HashMap::new(),
            minted_keys: 0,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
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

    // ---- control: what the harness sets up -------------------------------------------

    pub fn create_sender(&mut self) -> SenderCredentials {
        let sender_id = loop {
            let id = self.rng.random_range(100_000_000_000u64..1_000_000_000_000).to_string();
            if !self.senders.contains_key(&id) {
                break id;
            }
        };
        let server_key = format!("AIza{}", self.random_text(27));
        self.senders.insert(sender_id.clone(), server_key.clone());
        self.senders_by_key.insert(server_key.clone(), sender_id.clone());
        SenderCredentials { sender_id, server_key }
    }

    pub fn has_sender(&self, sender_id: &str) -> bool {
        self.senders.contains_key(sender_id)
    }

    /// Registers an app instance for these senders and returns its registration id.
    pub fn register_instance(&mut self, senders: Vec<String>, account: Option<String>) -> String {
        let id = format!("{}:APA91b{}", self.random_text(8), self.random_text(48));
        self.instances.insert(id.clone(), Instance { senders, account, registered: true, inbox: Vec::new() });
        id
    }

    /// Invalidates a registration: later deliveries to it fail with `NotRegistered`.
    pub fn unregister(&mut self, registration_id: &str) -> bool {
        self.instances.get_mut(registration_id).map(|i| i.registered = false).is_some()
    }

    pub fn inbox(&self, registration_id: &str) -> Option<&[Delivered]> {
        self.instances.get(registration_id).map(|i| i.inbox.as_slice())
    }

    pub fn account_of(&self, registration_id: &str) -> Option<&str> {
        self.instances.get(registration_id)?.account.as_deref()
    }

    pub fn mint_id_token(&mut self, sender_id: &str, account: &str) -> Option<String> {
        if !self.senders.contains_key(sender_id) {
            return None;
        }
        let token = format!("idt.{}", self.random_text(36));
        self.id_tokens.insert(token.clone(), IdToken { sender: sender_id.into(), account: account.into() });
        Some(token)
    }

    // ---- authentication --------------------------------------------------------------

    /// The sender a server key belongs to.
    pub fn sender_for_key(&self, server_key: &str) -> Option<&str> {
        self.senders_by_key.get(server_key).map(String::as_str)
    }

    /// Under the server-key fault, any known sender id is taken at its word.
    pub fn sender_for_group_request(&self, server_key: Option<&str>, project_id: Option<&str>) -> Option<String> {
        if let Some(s) = server_key.and_then(|k| self.sender_for_key(k)) {
            return Some(s.to_string());
        }
        if self.fault(Fault::ServerKeyAuth) {
            return project_id.filter(|p| self.senders.contains_key(*p)).map(str::to_string);
        }
        None
    }

    pub fn ignores_project_id(&self) -> bool {
        self.fault(Fault::ProjectIdHeader)
    }

    /// Under the send-auth fault, an unauthenticated send acts for the target's sender.
    pub fn sender_for_send(&self, server_key: Option<&str>, target: &Target) -> Option<String> {
        if let Some(s) = server_key.and_then(|k| self.sender_for_key(k)) {
            return Some(s.to_string());
        }
        if !self.fault(Fault::SendAuth) {
            return None;
        }
        let first = match target {
            Target::To(t) => t.as_str(),
            Target::RegistrationIds(ids) => ids.first()?.as_str(),
        };
        self.groups
            .get(first)
            .map(|g| g.sender.clone())
            .or_else(|| self.instances.get(first).and_then(|i| i.senders.first().cloned()))
    }

    // ---- device groups ---------------------------------------------------------------

    fn mint_key(&mut self) -> String {
        self.minted_keys += 1;
        if self.fault(Fault::KeyUnguessable) {
            return format!("APA91b{:043}", self.minted_keys);
        }
        format!("APA91b{}", self.random_text(64))
    }

    fn name_owner(&self, sender: &str, name: &str) -> Option<&String> {
        if self.fault(Fault::NamePerSender) {
            return self.group_names.iter().find(|((_, n), _)| n == name).map(|(_, k)| k);
        }
        self.group_names.get(&(sender.to_string(), name.to_string()))
    }

    /// The registration ids of `ids` that may join a group of `sender`, deduplicated.
    fn valid_ids(&self, sender: &str, ids: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for id in ids {
            let ok = self.fault(Fault::InvalidIdsDropped)
                || self.instances.get(id).is_some_and(|i| i.registered && i.senders.iter().any(|s| s == sender));
            if ok && !out.contains(id) {
                out.push(id.clone());
            }
        }
        out
    }

    fn cap(&self) -> usize {
        self.limits.max_members + usize::from(self.fault(Fault::MemberCap))
    }

    pub fn manage_group(&mut self, sender: &str, op: GroupOp) -> Result<String, GroupError> {
        match op {
            GroupOp::Create { name, ids } => self.create_group(sender, name, &ids, None),
            GroupOp::Add { key, name, ids } => {
                self.check_key(sender, &key, name.as_deref())?;
                if self.fault(Fault::AddMembers) {
                    return Ok(key);
                }
                self.add_members(sender, &key, &ids)?;
                Ok(key)
            }
            GroupOp::Remove { key, name, ids } => {
                self.check_key(sender, &key, name.as_deref())?;
                if !self.fault(Fault::RemoveMembers) {
                    self.remove_members(&key, &ids);
                }
                Ok(key)
            }
        }
    }

    fn create_group(
        &mut self,
        sender: &str,
        name: String,
        ids: &[String],
        owner: Option<String>,
    ) -> Result<String, GroupError> {
        if let Some(existing) = self.name_owner(sender, &name).cloned() {
            if !self.fault(Fault::NameUnique) {
                return Err(GroupError::AlreadyExists);
            }
            self.groups.remove(&existing);
        }
        let members = self.valid_ids(sender, ids);
        if members.is_empty() {
            return Err(GroupError::NoValidRegistrationIds);
        }
        if members.len() > self.cap() {
            return Err(GroupError::TooManyMembers { max: self.limits.max_members });
        }
        let key = self.mint_key();
        self.group_names.insert((sender.to_string(), name.clone()), key.clone());
        self.groups.insert(key.clone(), Group { sender: sender.to_string(), name, members, owner });
        Ok(key)
    }

    /// The key must name a group of this sender, and a given name must be that group's.
    fn check_key(&self, sender: &str, key: &str, name: Option<&str>) -> Result<(), GroupError> {
        let group = self.groups.get(key).filter(|g| g.sender == sender);
        let Some(group) = group else {
            return if self.fault(Fault::KeyNotFound) { Ok(()) } else { Err(GroupError::NotFound) };
        };
        match name {
            None if self.fault(Fault::NameOptional) => Err(GroupError::NameMismatch),
            Some(n) if n != group.name && !self.fault(Fault::NameMatchesKey) => Err(GroupError::NameMismatch),
            _ => Ok(()),
        }
    }

    fn add_members(&mut self, sender: &str, key: &str, ids: &[String]) -> Result<(), GroupError> {
        let new = self.valid_ids(sender, ids);
        if new.is_empty() {
            return Err(GroupError::NoValidRegistrationIds);
        }
        let cap = self.cap();
        let max = self.limits.max_members;
        let Some(group) = self.groups.get_mut(key) else { return Ok(()) };
        let mut members = group.members.clone();
        for id in new {
            if !members.contains(&id) {
                members.push(id);
            }
        }
        if members.len() > cap {
            return Err(GroupError::TooManyMembers { max });
        }
        group.members = members;
        Ok(())
    }

    fn remove_members(&mut self, key: &str, ids: &[String]) {
        let Some(group) = self.groups.get_mut(key) else { return };
        group.members.retain(|m| !ids.contains(m));
        if group.members.is_empty() && !self.fault(Fault::RemoveLastDeletes) {
            let g = self.groups.remove(key).expect("present above");
            self.group_names.remove(&(g.sender, g.name));
        }
    }

    pub fn lookup(&self, sender: &str, name: &str) -> Result<String, GroupError> {
        if self.fault(Fault::Lookup) {
            return Err(GroupError::NotFound);
        }
        self.group_names.get(&(sender.to_string(), name.to_string())).cloned().ok_or(GroupError::NotFound)
    }

    /// `/gcm/googlenotification`: the caller is the account behind `id_token`.
    pub fn manage_group_as_client(
        &mut self,
        project_id: &str,
        id_token: Option<&str>,
        op: ClientOp,
        name: String,
        id: String,
    ) -> Result<String, GroupError> {
        let account = match id_token.and_then(|t| self.id_tokens.get(t)) {
            Some(t) if t.sender == project_id => t.account.clone(),
            _ if self.fault(Fault::ClientIdToken) && self.senders.contains_key(project_id) => String::new(),
            _ => return Err(GroupError::BadIdToken),
        };
        let existing = self.group_names.get(&(project_id.to_string(), name.clone())).cloned();
        if let Some(key) = &existing {
            let owner = self.groups[key].owner.as_deref();
            if owner != Some(account.as_str())
                && !self.fault(Fault::ClientAccountScope)
                && !self.fault(Fault::ClientIdToken)
            {
                return Err(GroupError::NotOwner);
            }
        }
        match (op, existing) {
            (ClientOp::Add, None) if self.fault(Fault::ClientAddCreates) => Err(GroupError::NotFound),
            (ClientOp::Add, None) => self.create_group(project_id, name, &[id], Some(account)),
            (ClientOp::Add, Some(key)) => self.add_members(project_id, &key, &[id]).map(|()| key),
            (ClientOp::Remove, None) => Err(GroupError::NotFound),
            (ClientOp::Remove, Some(key)) => {
                if !self.fault(Fault::ClientRemove) {
                    self.remove_members(&key, &[id]);
                }
                Ok(key)
            }
        }
    }

    // ---- sending ---------------------------------------------------------------------

    fn message_id(&mut self) -> String {
        format!("0:{}%{:016x}", self.clock.now_ms(), self.rng.random::<u64>())
    }

    /// Delivers to one registration, or says why it cannot.
    fn deliver(&mut self, sender: &str, registration_id: &str, message: &Message) -> Result<(), &'static str> {
        let Some(instance) = self.instances.get_mut(registration_id) else { return Err("InvalidRegistration") };
        if !instance.senders.iter().any(|s| s == sender) {
            return Err("MismatchSenderId");
        }
        if !instance.registered {
            return Err("NotRegistered");
        }
        instance.inbox.push(Delivered {
            from: sender.to_string(),
            collapse_key: message.collapse_key.clone(),
            data: message.data.clone(),
            notification: message.notification.clone(),
        });
        Ok(())
    }

    pub fn send(&mut self, sender: &str, target: Target, message: Message) -> SendOutcome {
        if let Target::To(to) = &target
            && let Some(group) = self.groups.get(to).filter(|g| g.sender == sender)
        {
            let members = group.members.clone();
            let mut success = 0;
            let mut failed = Vec::new();
            for (i, member) in members.iter().enumerate() {
                let delivered = if self.fault(Fault::SendFanOut) && i > 0 {
                    self.instances.get(member).is_some_and(|m| m.registered)
                } else {
                    self.deliver(sender, member, &message).is_ok()
                };
                if delivered {
                    success += 1;
                } else {
                    failed.push(member.clone());
                }
            }
            if success == 0 && !self.fault(Fault::SendAllFailed) {
                return SendOutcome::GroupFailed;
            }
            return SendOutcome::Group { success, failed };
        }
        let ids = match target {
            Target::To(to) => vec![to],
            Target::RegistrationIds(ids) => ids,
        };
        let multicast_id = self.rng.random_range(1u64..i64::MAX as u64);
        let results = ids
            .iter()
            .map(|id| match self.deliver(sender, id, &message) {
                Ok(()) => SendResult::Sent { message_id: self.message_id() },
                Err(e) => SendResult::Error(e),
            })
            .collect();
        SendOutcome::Multicast { multicast_id, results }
    }

    /// A read-only view of the groups of one sender, for tests and debugging.
    pub fn groups_of(&self, sender: &str) -> BTreeMap<String, Value> {
        self.groups
            .iter()
            .filter(|(_, g)| g.sender == sender)
            .map(|(k, g)| (g.name.clone(), json!({"notification_key": k, "members": g.members})))
            .collect()
    }
}

/// Renders a send outcome as the legacy HTTP API does: `(status, body)`.
pub fn send_outcome_json(outcome: &SendOutcome, faults: &Faults) -> (u16, Option<Value>) {
    match outcome {
        SendOutcome::GroupFailed => (503, None),
        SendOutcome::Group { success, failed } => {
            let mut body = Map::new();
            body.insert("success".into(), json!(success));
            if !(failed.is_empty() && faults.has(Fault::SendSuccess)) {
                body.insert("failure".into(), json!(failed.len()));
            }
            if !failed.is_empty() && !faults.has(Fault::SendPartial) && *success > 0 {
                body.insert("failed_registration_ids".into(), json!(failed));
            }
            (200, Some(Value::Object(body)))
        }
        SendOutcome::Multicast { multicast_id, results } => {
            let success = results.iter().filter(|r| matches!(r, SendResult::Sent { .. })).count();
            let rendered: Vec<Value> = results
                .iter()
                .map(|r| match r {
                    SendResult::Sent { message_id } => json!({ "message_id": message_id }),
                    SendResult::Error(e) => json!({ "error": e }),
                })
                .collect();
            (
                200,
                Some(json!({
                    "multicast_id": multicast_id,
                    "success": success,
                    "failure": results.len() - success,
                    "canonical_ids": 0,
                    "results": rendered,
                })),
            )
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::clock::VirtualClock;

    fn model(faults: &[Fault]) -> Model {
        Model::new(Limits { max_members: 3 }, Box::new(VirtualClock::new()), 7, Faults::new(faults.iter().copied()))
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
