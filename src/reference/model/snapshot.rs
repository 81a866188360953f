//! The model's state as one value, for a state file's snapshot (`serve --state`): everything
//! it accepted, none of what it was configured with (limits, faults, variants, caps and the
//! clock come from the configuration again, which the file checks is the same).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::{Group, Held, IdToken, Model};
use crate::reference::ccs::Ccs;
use crate::reference::lifetime::Buckets;
use crate::reference::state::pairs;

/// Field for field, what [`Model`] holds of its own.
#[derive(Serialize, Deserialize)]
pub struct Snapshot {
    /// The generators go on from these: a generator's state is not written out, so each is
    /// seeded afresh at the snapshot (from itself, so nothing new is guessable).
    rng: [u8; 32],
    message_ids: [u8; 32],
    offsets: HashMap<String, u64>,
    senders: HashMap<Arc<str>, String>,
    senders_by_key: HashMap<String, String>,
    instances: super::instances::Instances,
    waiting: BTreeSet<String>,
    aliases: HashMap<String, String>,
    replaced_at: HashMap<String, Vec<(String, u64)>>,
    groups: HashMap<Arc<str>, Group>,
    #[serde(with = "pairs")]
    group_names: HashMap<(String, String), Arc<str>>,
    id_tokens: HashMap<String, IdToken>,
    minted_keys: u64,
    ccs: Ccs,
    shared_buckets: Buckets,
    held: HashMap<Arc<str>, Held>,
    first_sender: Option<Arc<str>>,
    #[serde(default)]
    scripts: HashMap<String, Vec<super::script::Script>>,
    #[serde(default)]
    next_script: u64,
    /// The journals and their grading (absent in files made before they existed).
    #[serde(default)]
    journals: serde_json::Value,
}

/// [`Snapshot`], borrowed: written without copying the model.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    rng: [u8; 32],
    message_ids: [u8; 32],
    offsets: &'a HashMap<String, u64>,
    senders: &'a HashMap<Arc<str>, String>,
    senders_by_key: &'a HashMap<String, String>,
    instances: &'a super::instances::Instances,
    waiting: &'a BTreeSet<String>,
    aliases: &'a HashMap<String, String>,
    replaced_at: &'a HashMap<String, Vec<(String, u64)>>,
    groups: &'a HashMap<Arc<str>, Group>,
    #[serde(with = "pairs")]
    group_names: &'a HashMap<(String, String), Arc<str>>,
    id_tokens: &'a HashMap<String, IdToken>,
    minted_keys: u64,
    ccs: &'a Ccs,
    shared_buckets: &'a Buckets,
    held: &'a HashMap<Arc<str>, Held>,
    first_sender: &'a Option<Arc<str>>,
    scripts: &'a HashMap<String, Vec<super::script::Script>>,
    next_script: u64,
    journals: serde_json::Value,
}

impl Model {
    /// Writes the model's state as JSON. Both generators are seeded afresh here, from
    /// themselves, and the seeds written: a model restored from the bytes draws what this one
    /// draws next.
    pub fn snapshot(&mut self) -> Result<Vec<u8>, serde_json::Error> {
        let mut rng = [0u8; 32];
        let mut message_ids = [0u8; 32];
        self.rng.fill_bytes(&mut rng);
        self.message_ids.fill_bytes(&mut message_ids);
        self.rng = StdRng::from_seed(rng);
        self.message_ids = StdRng::from_seed(message_ids);
        serde_json::to_vec(&SnapshotRef {
            rng,
            message_ids,
            offsets: &self.offsets,
            senders: &self.senders,
            senders_by_key: &self.senders_by_key,
            instances: &self.instances,
            waiting: self.waiting.ids(),
            aliases: &self.aliases,
            replaced_at: &self.replaced_at,
            groups: &self.groups,
            group_names: &self.group_names,
            id_tokens: &self.id_tokens,
            minted_keys: self.minted_keys,
            ccs: &self.ccs,
            shared_buckets: &self.shared_buckets,
            held: &self.held,
            first_sender: &self.first_sender,
            scripts: &self.scripts,
            next_script: self.next_script,
            journals: self.journals.snapshot(),
        })
    }

    /// Takes the state a [`Self::snapshot`] wrote (the configuration stays this model's).
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), serde_json::Error> {
        let s: Snapshot = serde_json::from_slice(bytes)?;
        self.rng = StdRng::from_seed(s.rng);
        self.message_ids = StdRng::from_seed(s.message_ids);
        self.offsets = s.offsets;
        self.senders = s.senders;
        self.senders_by_key = s.senders_by_key;
        self.instances = s.instances;
        // What each device keeps counts toward the model's total again.
        for inst in self.instances.values_mut() {
            self.kept.add(inst.inbox_held() as u64);
        }
        self.waiting = super::waiting::Waiting::restore(s.waiting, &mut self.instances);
        self.aliases = s.aliases;
        self.replaced_at = s.replaced_at;
        self.groups = s.groups;
        self.group_names = s.group_names;
        self.id_tokens = s.id_tokens;
        self.minted_keys = s.minted_keys;
        self.ccs = s.ccs;
        self.shared_buckets = s.shared_buckets;
        self.held = s.held;
        self.first_sender = s.first_sender;
        self.scripts = s.scripts;
        self.next_script = s.next_script;
        if !s.journals.is_null() {
            self.journals.restore_snapshot(s.journals).map_err(serde::de::Error::custom)?;
        }
        Ok(())
    }
}
