//! Device groups (seeds 000, 001, 003): server-side create/add/remove and lookup,
//! client-side add/remove with an id_token, notification keys, the member cap.

use super::*;

impl Model {
    fn mint_key(&mut self, sender: &str) -> String {
        self.minted_keys += 1;
        if self.fault(Fault::KeyUnique) {
            return format!("APA91b-{sender}-group");
        }
        if self.fault(Fault::KeyUnguessable) {
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

    fn name_owner(&self, sender: &str, name: &str) -> Option<&String> {
        if self.fault(Fault::NamePerSender) {
            return self.group_names.iter().find(|((_, n), _)| n == name).map(|(_, k)| k);
        }
        self.group_names.get(&(sender.to_string(), name.to_string()))
    }

    /// The registration ids of `ids` that may join a group of `sender`, deduplicated.
    /// A member is held by the id its instance is filed under where that is the id given, so
    /// that a million memberships cost a pointer each, not a copy of the id.
    fn valid_ids(&self, sender: &str, ids: &[String]) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = Vec::new();
        for id in ids {
            let ok = self.fault(Fault::InvalidIdsDropped)
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
                self.add_members(sender, &key, &ids, false)?;
                if self.fault(Fault::AddMembersOtherKey) {
                    return Ok(self.mint_key(sender));
                }
                if self.fault(Fault::AddMembersNameAsKey) {
                    return Ok(self.groups[&key].name.clone());
                }
                Ok(key)
            }
            GroupOp::Remove { key, name, ids } => {
                self.check_key(sender, &key, name.as_deref())?;
                if self.fault(Fault::RemoveMembersAll) {
                    let everyone: Vec<String> = self.groups[&key].members.iter().map(|m| m.to_string()).collect();
                    self.remove_members(&key, &everyone);
                } else if !self.fault(Fault::RemoveMembers) {
                    self.remove_members(&key, &ids);
                }
                if self.fault(Fault::RemoveMembersOtherKey) {
                    return Ok(self.mint_key(sender));
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
        let key = self.mint_key(sender);
        if let Some(taken) = self.groups.remove(&key) {
            // Only under the fault that mints one key per sender: the new group takes it.
            self.group_names.remove(&(taken.sender, taken.name));
        }
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

    fn add_members(&mut self, sender: &str, key: &str, ids: &[String], client: bool) -> Result<(), GroupError> {
        let new = self.valid_ids(sender, ids);
        if new.is_empty() {
            return Err(GroupError::NoValidRegistrationIds);
        }
        let cap = if client && self.fault(Fault::MemberCapClientAdd) { usize::MAX } else { self.cap() };
        let half_applied = self.fault(Fault::MemberCapHalfApplied);
        let max = self.limits.max_members;
        let Some(mut members) = self.groups.get(key).map(|g| g.members.clone()) else { return Ok(()) };
        for id in new {
            // Adding another id of a member's device adds nothing.
            if !members.iter().any(|m| self.same_device(m, &id)) {
                members.push(id);
            }
        }
        let group = self.groups.get_mut(key).expect("looked up above");
        if members.len() > cap {
            if half_applied {
                members.truncate(cap);
                group.members = members;
            }
            return Err(GroupError::TooManyMembers { max });
        }
        group.members = members;
        Ok(())
    }

    fn remove_members(&mut self, key: &str, ids: &[String]) {
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
            (ClientOp::Add, Some(key)) => self.add_members(project_id, &key, &[id], true).map(|()| key),
            (ClientOp::Remove, None) => Err(GroupError::NotFound),
            (ClientOp::Remove, Some(key)) => {
                if !self.fault(Fault::ClientRemove) {
                    self.remove_members(&key, &[id]);
                }
                Ok(key)
            }
        }
    }
}
