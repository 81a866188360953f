//! [`Bounded`]: the map every grader keeps what it tracks in, its newest [`TRACKED`] entries.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::TRACKED;

/// A map that keeps its newest [`TRACKED`] entries, and says whether it forgot any.
///
/// Insertion order is kept in a queue of (insertion number, key): a key removed and inserted
/// again has a new number, and the queue's older mention of it is stale (skipped, and
/// compacted away once stale mentions are most of the queue), so every operation costs O(1)
/// amortized however often a key comes and goes.
///
/// Keyed by text (ids, names) or by number (a send's `seq`, a message's fingerprint): a state
/// file has both as text, as it had when every key was text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "K: Key, V: Serialize", deserialize = "K: Key, V: Deserialize<'de>"))]
pub(crate) struct Bounded<V, K = String> {
    map: HashMap<K, (u64, V)>,
    #[serde(with = "keys_as_text")]
    order: VecDeque<(u64, K)>,
    next: u64,
    pub forgot: u64,
}

/// What a [`Bounded`] may be keyed by.
pub(crate) trait Key:
    std::hash::Hash + Eq + Clone + std::fmt::Display + std::str::FromStr + Serialize + serde::de::DeserializeOwned
{
}

impl Key for String {}
impl Key for u64 {}

/// A [`Bounded`]'s order with its keys as text, whatever their type.
mod keys_as_text {
    use std::collections::VecDeque;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, K: super::Key>(order: &VecDeque<(u64, K)>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(order.iter().map(|(n, k)| (n, k.to_string())))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, K: super::Key>(d: D) -> Result<VecDeque<(u64, K)>, D::Error> {
        let text = Vec::<(u64, String)>::deserialize(d)?;
        let key = |k: &str| k.parse().map_err(|_| serde::de::Error::custom(format!("not a key of this map: {k:?}")));
        text.into_iter().map(|(n, k)| Ok((n, key(&k)?))).collect()
    }
}

impl<V, K: Key> Default for Bounded<V, K> {
    fn default() -> Self {
        Bounded { map: HashMap::new(), order: VecDeque::new(), next: 0, forgot: 0 }
    }
}

impl<V, K: Key> Bounded<V, K> {
    pub fn get<Q: std::hash::Hash + Eq + ?Sized>(&self, k: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
    {
        self.map.get(k).map(|(_, v)| v)
    }

    pub fn get_mut<Q: std::hash::Hash + Eq + ?Sized>(&mut self, k: &Q) -> Option<&mut V>
    where
        K: std::borrow::Borrow<Q>,
    {
        self.map.get_mut(k).map(|(_, v)| v)
    }

    fn live(&self, (n, k): &(u64, K)) -> bool {
        self.map.get(k).is_some_and(|(m, _)| m == n)
    }

    /// Inserts `v` under `k`; past the bound, the oldest entry is forgotten (and returned,
    /// for a caller that indexes what it holds).
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        match self.map.get_mut(&k) {
            // Already there: the value changes, its place in the order does not.
            Some(slot) => slot.1 = v,
            None => {
                self.next += 1;
                self.map.insert(k.clone(), (self.next, v));
                self.order.push_back((self.next, k));
            }
        }
        let mut forgotten = None;
        while self.map.len() > TRACKED {
            match self.order.pop_front() {
                Some(e) if self.live(&e) => {
                    forgotten = self.map.remove(&e.1).map(|(_, v)| v);
                    self.forgot += 1;
                }
                Some(_) => {}
                None => break,
            }
        }
        self.compact();
        forgotten
    }

    /// Drops stale mentions once they are most of the order, so that a walk of the order
    /// costs what the map holds, not what it once held.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.map.len().max(64) {
            let map = &self.map;
            self.order.retain(|(n, k)| map.get(k).is_some_and(|(m, _)| m == n));
        }
    }

    /// Iterates the live entries, oldest first.
    pub fn iter_ordered(&self) -> impl Iterator<Item = (&K, &V)> {
        self.order.iter().filter_map(|(n, k)| match self.map.get(k) {
            Some((m, v)) if m == n => Some((k, v)),
            _ => None,
        })
    }

    /// Removes and returns the oldest entries while `pick` takes them: the first live entry
    /// it does not take ends the walk (for entries whose order is the order they fall due).
    pub fn take_front_while(&mut self, mut pick: impl FnMut(&V) -> bool) -> Vec<V> {
        let mut out = Vec::new();
        while let Some((n, k)) = self.order.front() {
            match self.map.get(k) {
                Some((m, v)) if m == n => {
                    if !pick(v) {
                        break;
                    }
                    let (_, k) = self.order.pop_front().expect("a front");
                    out.extend(self.map.remove(&k).map(|(_, v)| v));
                }
                _ => {
                    self.order.pop_front();
                }
            }
        }
        out
    }

    pub fn entry_or<Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized>(
        &mut self,
        k: &Q,
        make: impl FnOnce() -> V,
    ) -> &mut V
    where
        K: std::borrow::Borrow<Q>,
    {
        if !self.map.contains_key(k) {
            self.insert(k.to_owned(), make());
        }
        self.get_mut(k).expect("just inserted")
    }

    pub fn remove<Q: std::hash::Hash + Eq + ?Sized>(&mut self, k: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
    {
        let v = self.map.remove(k).map(|(_, v)| v);
        self.compact();
        v
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.map.keys()
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values().map(|(_, v)| v)
    }

    /// Removes and returns the entries `pick` chooses, oldest first.
    pub fn take_where(&mut self, mut pick: impl FnMut(&V) -> bool) -> Vec<V> {
        let keys: Vec<K> = self
            .order
            .iter()
            .filter(|e| self.live(e) && self.map.get(&e.1).is_some_and(|(_, v)| pick(v)))
            .map(|(_, k)| k.clone())
            .collect();
        let out = keys.iter().filter_map(|k| self.map.remove(k).map(|(_, v)| v)).collect();
        self.compact();
        out
    }

    /// A note when the bound made it forget something.
    pub fn forgot_note(&self, what: &str) -> Option<String> {
        (self.forgot > 0).then(|| format!("{} {what} forgotten past the bound of {TRACKED}", self.forgot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A map keyed by number is written as one keyed by the same numbers as text (as every
    /// such map was before numbers were keys), and reads from either.
    #[test]
    fn numbered_keys_are_kept_as_text() {
        let (mut by_number, mut by_text): (Bounded<u32, u64>, Bounded<u32>) = Default::default();
        for (k, v) in [(7u64, 1), (u64::MAX, 2), (0, 3)] {
            by_number.insert(k, v);
            by_text.insert(k.to_string(), v);
        }
        by_number.remove(&7);
        by_text.remove("7");
        let written = serde_json::to_value(&by_number).unwrap();
        assert_eq!(written, serde_json::to_value(&by_text).unwrap());
        let read: Bounded<u32, u64> = serde_json::from_value(written).unwrap();
        assert_eq!(read.iter_ordered().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(), vec![(u64::MAX, 2), (0, 3)]);
        let mut not_numbers = serde_json::to_value(&by_text).unwrap();
        not_numbers["order"][0][1] = "x".into();
        assert!(serde_json::from_value::<Bounded<u32, u64>>(not_numbers).is_err());
    }

    #[test]
    fn a_key_that_comes_and_goes_costs_nothing_more() {
        let mut b: Bounded<u32> = Bounded::default();
        for i in 0..100_000 {
            b.insert("k".into(), i);
            b.remove("k");
        }
        // The order holds stale mentions only up to a small multiple of what is live.
        assert!(b.order.len() <= 2 * 64 + 1, "{}", b.order.len());
        b.insert("a".into(), 1);
        b.insert("b".into(), 2);
        assert_eq!(b.take_where(|v| *v == 1), vec![1]);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn the_front_is_taken_while_it_is_due_and_no_further() {
        let mut b: Bounded<u32> = Bounded::default();
        for (k, v) in [("a", 1), ("b", 2), ("c", 9), ("d", 3)] {
            b.insert(k.into(), v);
        }
        b.remove("b");
        // "b" is gone (a stale mention, skipped); "c" is not due, so "d" waits behind it.
        assert_eq!(b.take_front_while(|v| *v < 5), vec![1]);
        assert_eq!(b.iter_ordered().map(|(k, _)| k).collect::<Vec<_>>(), ["c", "d"]);
        // Past the bound, the one forgotten is handed back.
        let mut b: Bounded<usize> = Bounded::default();
        let forgotten: Vec<usize> = (0..TRACKED + 2).filter_map(|i| b.insert(i.to_string(), i)).collect();
        assert_eq!(forgotten, [0, 1]);
    }

    #[test]
    fn past_the_bound_the_oldest_go() {
        let mut b: Bounded<usize> = Bounded::default();
        for i in 0..TRACKED + 5 {
            b.insert(i.to_string(), i);
        }
        assert_eq!((b.len(), b.forgot), (TRACKED, 5));
        assert!(b.get("0").is_none() && b.get(&TRACKED.to_string()).is_some());
    }
}
