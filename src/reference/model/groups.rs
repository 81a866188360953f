//! Device groups (seeds 000, 001, 003): server-side create/add/remove and lookup,
//! client-side add/remove with an id_token, notification keys, the member cap.

use super::*;
use crate::reference::generated::rules;

impl Model {
    fn mint_key(&mut self, sender: &str, path: Path) -> String {
        self.minted_keys += 1;
        if self.faults.on(Fault::KeyUnique, path) {
            return format!("APA91b-{sender}-group");
        }
        if self.faults.on(Fault::KeyUnguessable, path) {
            return format!("APA91b{:043}", self.minted_keys);
        }
        if self.variant(Variant::UuidKeys) {
            let mut b = [0u8; 16];
            self.rng.fill_bytes(&mut b);
            b[6] = (b[6] & 0x0f) | 0x40;
            b[8] = (b[8] & 0x3f) | 0x80;
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            return format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]);
        }
        format!("APA91b{}", self.random_text(64))
    }

    fn name_owner(&self, sender: &str, name: &str, path: Path) -> Option<&Arc<str>> {
        if self.faults.on(Fault::NamePerSender, path) {
            return self.group_names.iter().find(|((_, n), _)| n == name).map(|(_, k)| k);
        }
        self.group_names.get(&(sender.to_string(), name.to_string()))
    }

    /// The registration ids of `ids` that may join a group of `sender`, deduplicated.
    /// A member is held by the id its instance is filed under where that is the id given, so
    /// that a million memberships cost a pointer each, not a copy of the id.
    fn valid_ids(&self, sender: &str, ids: &[String], path: Path) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = Vec::new();
        for id in ids {
            let ok = self.faults.on(Fault::InvalidIdsDropped, path)
                || self
                    .instances
                    .get(self.resolve(id))
                    .is_some_and(|i| i.registered && i.senders.iter().any(|s| **s == *sender));
            // One device, one member: an old id and its canonical one are the same device.
            if ok && !out.iter().any(|o| self.same_device(o, id)) {
                let filed = self.instances.get_key_value(id.as_str()).map(|(k, _)| k.clone());
                out.push(filed.unwrap_or_else(|| Arc::from(id.as_str())));
            }
        }
        out
    }

    /// Whether two registration ids name the same app instance (one may be an old id of it).
    fn same_device(&self, a: &str, b: &str) -> bool {
        self.resolve(a) == self.resolve(b)
    }

    /// The member cap as kept on this endpoint: one more under the cap's fault there.
    fn cap(&self, path: Path) -> usize {
        self.limits.max_members + usize::from(self.faults.on(Fault::MemberCap, path))
    }

    /// Members a group would have, as counted against the cap: the devices, or under the
    /// fault that counts a request's entries, every id listed (duplicates and members again).
    fn counted(&self, devices: usize, listed: usize) -> usize {
        if self.faults.unit("max_members") == Some(WrongUnit::RequestEntries) { listed } else { devices }
    }

    pub fn manage_group(&mut self, sender: &str, op: GroupOp) -> Result<String, GroupError> {
        let path = Path::Server;
        match op {
            GroupOp::Create { name, ids } => self.create_group(sender, name, &ids, None, path),
            GroupOp::Add { key, name, ids } => {
                let key = self.check_key(sender, &key, name.as_deref())?;
                if self.fault(Fault::AddMembers) {
                    return Ok(key);
                }
                self.add_members(sender, &key, &ids, path)?;
                if self.fault(Fault::AddMembersOtherKey) {
                    return Ok(self.mint_key(sender, path));
                }
                if self.fault(Fault::AddMembersNameAsKey) {
                    return Ok(self.groups[key.as_str()].name.clone());
                }
                if self.fault(Fault::AddMembersRekeyed) {
                    return Ok(self.rekey(&key, sender, path));
                }
                Ok(key)
            }
            GroupOp::Remove { key, name, ids } => {
                let key = self.check_key(sender, &key, name.as_deref())?;
                self.refuse_non_members(&key, &ids)?;
                if self.fault(Fault::RemoveMembersAll) {
                    let everyone: Vec<String> =
                        self.groups[key.as_str()].members.iter().map(|m| m.to_string()).collect();
                    self.remove_members(&key, &everyone, path);
                } else if !self.fault(Fault::RemoveMembers) {
                    self.remove_members(&key, &ids, path);
                }
                if self.fault(Fault::RemoveMembersOtherKey) {
                    return Ok(self.mint_key(sender, path));
                }
                Ok(key)
            }
        }
    }

    /// The fault that mints a new key on an add: the group moves to it, the old one dies.
    fn rekey(&mut self, key: &str, sender: &str, path: Path) -> String {
        let new = self.mint_key(sender, path);
        if let Some(group) = self.groups.remove(key) {
            self.file_group(&new, group);
        }
        new
    }

    /// Files `group` under `key` in both maps that find it; the key is held once, by both.
    fn file_group(&mut self, key: &str, group: Group) {
        let filed: Arc<str> = Arc::from(key);
        self.group_names.insert((group.sender.to_string(), group.name.clone()), filed.clone());
        self.groups.insert(filed, group);
    }

    /// A group is gone: its sender holds one fewer.
    fn forget_group(&mut self, group: &Group) {
        if let Some(h) = self.held.get_mut(&*group.sender) {
            h.groups = h.groups.saturating_sub(1);
        }
    }

    fn create_group(
        &mut self,
        sender: &str,
        name: String,
        ids: &[String],
        owner: Option<String>,
        path: Path,
    ) -> Result<String, GroupError> {
        if let Some(existing) = self.name_owner(sender, &name, path).cloned() {
            if !self.fault(Fault::NameUnique) {
                return Err(GroupError::AlreadyExists);
            }
            if let Some(old) = self.groups.remove(&*existing) {
                self.forget_group(&old);
            }
        }
        if self.variant(Variant::RefusesDuplicateIds) && has_duplicates(ids) {
            return Err(GroupError::DuplicateIds);
        }
        let mut members = self.valid_ids(sender, ids, path);
        if members.is_empty() {
            return Err(GroupError::NoValidRegistrationIds);
        }
        // Held as long as the group: no room for the members it does not have (20 members
        // grown one by one had room for 32).
        members.shrink_to_fit();
        if self.counted(members.len(), ids.len()) > self.cap(path) {
            return Err(GroupError::TooManyMembers { max: self.limits.max_members });
        }
        if self.groups.len() >= self.caps.groups {
            return Err(GroupError::StoreFull(StoreFull { what: "groups", max: self.caps.groups, flag: "groups" }));
        }
        let full = StoreFull { what: "groups per sender", max: self.caps.groups_per_sender, flag: "groups-per-sender" };
        self.take_share(sender, |h| &mut h.groups, full).map_err(GroupError::StoreFull)?;
        let key = self.mint_key(sender, path);
        if let Some(taken) = self.groups.remove(key.as_str()) {
            // Only under the fault that mints one key per sender: the new group takes it.
            self.forget_group(&taken);
            self.group_names.remove(&(taken.sender.to_string(), taken.name));
        }
        let group = Group { sender: self.shared_sender_id(sender), name, members, owner };
        self.file_group(&key, group);
        Ok(key)
    }

    /// The key must name a group of this sender, and a given name must be that group's. The
    /// key it stands for (another sender's, under the fault that takes it as this sender's).
    fn check_key(&self, sender: &str, key: &str, name: Option<&str>) -> Result<String, GroupError> {
        let foreign = self.faults.scoped(rules::KEY_NOT_FOUND, Path::TwoSenders);
        let group = self.groups.get(key).filter(|g| *g.sender == *sender || foreign);
        let Some(group) = group else {
            return if self.fault(Fault::KeyNotFound) { Ok(key.to_string()) } else { Err(GroupError::NotFound) };
        };
        match name {
            None if self.fault(Fault::NameOptional) => Err(GroupError::NameMismatch),
            Some(n) if n != group.name && !self.fault(Fault::NameMatchesKey) => Err(GroupError::NameMismatch),
            _ => Ok(key.to_string()),
        }
    }

    fn add_members(&mut self, sender: &str, key: &str, ids: &[String], path: Path) -> Result<(), GroupError> {
        if self.variant(Variant::RefusesDuplicateIds) && has_duplicates(ids) {
            return Err(GroupError::DuplicateIds);
        }
        let new = self.valid_ids(sender, ids, path);
        if new.is_empty() {
            return Err(GroupError::NoValidRegistrationIds);
        }
        let cap = self.cap(path);
        let half_applied = self.fault(Fault::MemberCapHalfApplied);
        let max = self.limits.max_members;
        let Some(mut members) = self.groups.get(key).map(|g| g.members.clone()) else { return Ok(()) };
        if self.variant(Variant::RefusesReadds) && new.iter().any(|id| members.iter().any(|m| self.same_device(m, id)))
        {
            return Err(GroupError::AlreadyMember);
        }
        let listed = members.len() + ids.len();
        for id in new {
            // Adding another id of a member's device adds nothing.
            if !members.iter().any(|m| self.same_device(m, &id)) {
                members.push(id);
            }
        }
        let over = self.counted(members.len(), listed) > cap;
        let group = self.groups.get_mut(key).expect("looked up above");
        if over {
            if half_applied {
                members.truncate(cap);
                group.members = members;
            }
            return Err(GroupError::TooManyMembers { max });
        }
        members.shrink_to_fit();
        group.members = members;
        Ok(())
    }

    /// The variant that refuses a remove naming a device that is not a member.
    fn refuse_non_members(&self, key: &str, ids: &[String]) -> Result<(), GroupError> {
        let Some(group) = self.groups.get(key).filter(|_| self.variant(Variant::RefusesReadds)) else { return Ok(()) };
        match ids.iter().all(|id| group.members.iter().any(|m| self.same_device(m, id))) {
            true => Ok(()),
            false => Err(GroupError::NotAMember),
        }
    }

    pub(super) fn remove_members(&mut self, key: &str, ids: &[String], path: Path) {
        let devices: Vec<String> = ids.iter().map(|id| self.resolve(id).to_string()).collect();
        let resolved: Vec<String> = self
            .groups
            .get(key)
            .map(|g| g.members.iter().map(|m| self.resolve(m).to_string()).collect())
            .unwrap_or_default();
        let Some(group) = self.groups.get_mut(key) else { return };
        // Removing any id of a device removes the device, whichever id it joined by.
        let mut at = 0;
        group.members.retain(|_| {
            at += 1;
            !devices.contains(&resolved[at - 1])
        });
        if group.members.is_empty() && !self.faults.on(Fault::RemoveLastDeletes, path) {
            let g = self.groups.remove(key).expect("present above");
            self.forget_group(&g);
            self.group_names.remove(&(g.sender.to_string(), g.name));
        }
    }

    pub fn lookup(&self, sender: &str, name: &str) -> Result<String, GroupError> {
        if self.fault(Fault::Lookup) {
            return Err(GroupError::NotFound);
        }
        if self.faults.scoped(rules::LOOKUP, Path::TwoSenders) {
            // Names looked up in one namespace for every sender: the oldest group of the name.
            let mut found: Vec<(&(String, String), &Arc<str>)> =
                self.group_names.iter().filter(|((_, n), _)| n == name).collect();
            found.sort();
            return found.first().map(|(_, k)| k.to_string()).ok_or(GroupError::NotFound);
        }
        self.group_names.get(&(sender.to_string(), name.to_string())).map(|k| k.to_string()).ok_or(GroupError::NotFound)
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
        let path = Path::Client;
        let existing = self.name_owner(project_id, &name, path).map(|k| k.to_string());
        if let Some(key) = &existing {
            let owner = self.groups[key.as_str()].owner.as_deref();
            if owner != Some(account.as_str())
                && !self.fault(Fault::ClientAccountScope)
                && !self.fault(Fault::ClientIdToken)
            {
                return Err(GroupError::NotOwner);
            }
        }
        match (op, existing) {
            (ClientOp::Add, None) if self.fault(Fault::ClientAddCreates) => Err(GroupError::NotFound),
            (ClientOp::Add, None) => self.create_group(project_id, name, &[id], Some(account), path),
            (ClientOp::Add, Some(key)) => self.add_members(project_id, &key, &[id], path).map(|()| key),
            (ClientOp::Remove, None) => Err(GroupError::NotFound),
            (ClientOp::Remove, Some(key)) => {
                self.refuse_non_members(&key, std::slice::from_ref(&id))?;
                if !self.fault(Fault::ClientRemove) {
                    self.remove_members(&key, &[id], path);
                }
                Ok(key)
            }
        }
    }
}

/// Whether a request lists some id twice.
fn has_duplicates(ids: &[String]) -> bool {
    ids.iter().enumerate().any(|(i, id)| ids[..i].contains(id))
}
