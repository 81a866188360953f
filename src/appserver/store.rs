//! What an app server keeps between sends: the token it stores for each device and the key of
//! each group it made. The reference client keeps one; so does `gcmspec client` on behalf of
//! the library it drives, updated only from what the library returned to it.

use std::collections::HashMap;

#[derive(Debug, Default, Clone)]
pub struct Store {
    /// By the token a device first gave: the token stored now, `None` once deleted.
    tokens: HashMap<String, Option<String>>,
    /// notification_key_name -> the key the service gave for it.
    groups: HashMap<String, String>,
}

impl Store {
    /// The token stored for a device (a canonical id replaces it); `None` once deleted.
    pub fn token(&self, given: &str) -> Option<String> {
        match self.tokens.get(given) {
            Some(stored) => stored.clone(),
            None => Some(given.to_string()),
        }
    }

    /// A token the service said is old (`Some(canonical)`) or gone (`None`): every device
    /// stored under it follows.
    pub fn forget(&mut self, id: &str, replaced_by: Option<String>) {
        for stored in self.tokens.values_mut() {
            if stored.as_deref() == Some(id) {
                *stored = replaced_by.clone();
            }
        }
        self.tokens.entry(id.to_string()).or_insert(replaced_by);
    }

    pub fn key(&self, name: &str) -> Option<&String> {
        self.groups.get(name)
    }

    pub fn keep_key(&mut self, name: &str, key: &str) {
        self.groups.insert(name.to_string(), key.to_string());
    }

    pub fn drop_key(&mut self, name: &str) {
        self.groups.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canonical_id_replaces_and_a_deletion_follows_it() {
        let mut s = Store::default();
        assert_eq!(s.token("a").as_deref(), Some("a"));
        s.forget("a", Some("b".into()));
        assert_eq!(s.token("a").as_deref(), Some("b"));
        s.forget("b", None);
        assert_eq!(s.token("a"), None);
        assert_eq!(s.token("b"), None);
    }
}
