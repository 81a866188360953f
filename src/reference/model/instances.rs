//! The registered app instances, by registration id: one vector of (id, instance) and a
//! hash table of 4-byte indices into it. A `HashMap<Arc<str>, Box<Instance>>` cost each
//! registration a 24-byte entry (twice over, at the table's load) and a box; this costs the
//! slot and 5 bytes of table. With 1M registrations that is about 70 MiB less (the memory
//! run of `cargo bench --bench load`, docs/performance.md). Iteration follows the vector,
//! so it is the same from run to run.

use std::hash::BuildHasher;

// Registration ids are drawn by the reference, never chosen by a client: a fast hash seeded
// per process is enough (Cargo.toml says why this crate).
use foldhash::fast::RandomState;
use std::sync::Arc;

use hashbrown::HashTable;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::reference::lifetime::Instance;

#[derive(Default)]
pub(crate) struct Instances {
    /// Indices into `slots`, hashed by the id they hold.
    index: HashTable<u32>,
    slots: Vec<(Arc<str>, Instance)>,
    hasher: RandomState,
}

impl std::fmt::Debug for Instances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Instances {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    fn find(&self, id: &str) -> Option<usize> {
        let slots = &self.slots;
        self.index.find(self.hasher.hash_one(id), |&i| *slots[i as usize].0 == *id).map(|&i| i as usize)
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.find(id).is_some()
    }

    pub fn get(&self, id: &str) -> Option<&Instance> {
        self.find(id).map(|i| &self.slots[i].1)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Instance> {
        self.find(id).map(|i| &mut self.slots[i].1)
    }

    /// The id as filed (shared with the groups that list it), and its instance.
    pub fn get_key_value(&self, id: &str) -> Option<(&Arc<str>, &Instance)> {
        self.find(id).map(|i| (&self.slots[i].0, &self.slots[i].1))
    }

    /// Files `instance` under `id`, returning the one it replaces.
    pub fn insert(&mut self, id: Arc<str>, instance: Instance) -> Option<Instance> {
        if let Some(i) = self.find(&id) {
            return Some(std::mem::replace(&mut self.slots[i].1, instance));
        }
        // The store caps instances far below 2^32 (`StoreCaps::instances`).
        let at = u32::try_from(self.slots.len()).expect("fewer than 2^32 app instances");
        let Instances { index, slots, hasher } = self;
        index.insert_unique(hasher.hash_one(&*id), at, |&i| hasher.hash_one(&*slots[i as usize].0));
        slots.push((id, instance));
        None
    }

    /// Takes the instance filed under `id` out. The last slot moves into its place.
    pub fn remove(&mut self, id: &str) -> Option<Instance> {
        let Instances { index, slots, hasher } = self;
        let found = index.find_entry(hasher.hash_one(id), |&i| *slots[i as usize].0 == *id).ok()?;
        let (at, _) = found.remove();
        let last = slots.len() - 1;
        if at as usize != last {
            let moved = index
                .find_mut(hasher.hash_one(&*slots[last].0), |&i| i as usize == last)
                .expect("every slot is indexed");
            *moved = at;
        }
        Some(slots.swap_remove(at as usize).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Instance)> {
        self.slots.iter().map(|(id, inst)| (id, inst))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Arc<str>, &mut Instance)> {
        self.slots.iter_mut().map(|(id, inst)| (&*id, inst))
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Instance> {
        self.slots.iter_mut().map(|(_, inst)| inst)
    }
}

/// Like a map's: panics when `id` is not filed.
impl std::ops::Index<&str> for Instances {
    type Output = Instance;
    fn index(&self, id: &str) -> &Instance {
        self.get(id).expect("a registered id")
    }
}

/// A map from id to instance, as the state file has always held it.
impl Serialize for Instances {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (id, inst) in self.iter() {
            map.serialize_entry(&**id, inst)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Instances {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Each;
        impl<'de> Visitor<'de> for Each {
            type Value = Instances;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map from registration id to app instance")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Instances, A::Error> {
                let mut instances = Instances::default();
                while let Some((id, inst)) = map.next_entry::<String, Instance>()? {
                    if instances.insert(Arc::from(id.as_str()), inst).is_some() {
                        return Err(serde::de::Error::custom(format!("registration id {id:?} twice")));
                    }
                }
                Ok(instances)
            }
        }
        deserializer.deserialize_map(Each)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(sender: &str) -> Instance {
        Instance::new(vec![Arc::from(sender)].into(), None, None, Default::default())
    }

    /// Against a `HashMap` doing the same: every id stays found after removals move slots.
    #[test]
    fn behaves_as_a_map_through_inserts_and_removals() {
        let mut ours = Instances::default();
        let mut model = std::collections::HashMap::new();
        let mut state = 7u64;
        for step in 0..5_000u64 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let id = format!("id-{}", (state >> 33) % 700);
            if (state >> 20).is_multiple_of(3) {
                assert_eq!(ours.remove(&id).is_some(), model.remove(&id).is_some(), "step {step}: remove {id}");
            } else {
                let sender = format!("s{step}");
                let replaced = ours.insert(Arc::from(id.as_str()), instance(&sender));
                assert_eq!(replaced.is_some(), model.insert(id.clone(), sender.clone()).is_some(), "step {step}");
            }
            assert_eq!(ours.len(), model.len());
        }
        for (id, sender) in &model {
            let got = ours.get(id).map(|i| i.senders[0].to_string());
            assert_eq!(got.as_deref(), Some(sender.as_str()), "{id}");
        }
        let round: Instances = serde_json::from_slice(&serde_json::to_vec(&ours).unwrap()).unwrap();
        assert_eq!(round.len(), model.len());
        assert!(model.keys().all(|id| round.contains_key(id)));
    }
}
