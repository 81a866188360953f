//! The devices with messages waiting (on time, connectivity or a token), in id order and by
//! sender, and how many messages wait, in total and per sender (what the stored-message caps
//! are held to).
//!
//! Advancing one sender's clock can change only what that sender sent: it pumps that sender's
//! waiting devices, not every tenant's. A reference shared by many test suites (or the
//! harness's hundreds of checks) then pays for an advance what the advancing sender holds,
//! not what everyone left waiting.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::reference::lifetime::Instance;

#[derive(Debug, Default)]
pub(super) struct Waiting {
    /// Every waiting device (what a state file keeps, and what the machine's clock pumps).
    all: BTreeSet<String>,
    /// The same devices under each of their senders.
    by_sender: HashMap<Arc<str>, BTreeSet<String>>,
    /// Messages stored for devices, in all and per sender.
    stored: u64,
    stored_by_sender: HashMap<Arc<str>, u64>,
}

impl Waiting {
    /// Keeps the lists true of a device after its queue changed (`None`: it is gone). The
    /// device knows whether it is listed: most calls change nothing and search nothing.
    pub fn note(&mut self, id: &str, mut instance: Option<&mut Instance>) {
        if let Some(inst) = instance.as_deref_mut() {
            self.count(inst);
        }
        match instance {
            Some(inst) if inst.settled() == inst.listed_waiting => {
                inst.listed_waiting = !inst.settled();
                if inst.listed_waiting {
                    self.add(id, &inst.senders);
                } else {
                    self.take_out(id, Some(&inst.senders));
                }
            }
            Some(_) => {}
            None => self.take_out(id, None),
        }
    }

    /// Moves the stored-message counts by what changed on this device since it was counted.
    fn count(&mut self, inst: &mut Instance) {
        let Waiting { stored, stored_by_sender, .. } = self;
        inst.recount_stored(|sender, delta| {
            *stored = stored.saturating_add_signed(delta);
            let n = stored_by_sender.entry(sender.clone()).or_default();
            *n = n.saturating_add_signed(delta);
            if *n == 0 {
                stored_by_sender.remove(sender);
            }
        });
    }

    /// Whether a message `sender` would store must be refused: the total or its share is held.
    pub fn stored_full(&self, sender: &str, total: u64, per_sender: u64) -> bool {
        self.stored >= total || self.stored_by_sender.get(sender).is_some_and(|n| *n >= per_sender)
    }

    /// Messages stored for devices now, in all.
    pub fn stored(&self) -> u64 {
        self.stored
    }

    fn add(&mut self, id: &str, senders: &[Arc<str>]) {
        self.all.insert(id.to_string());
        for s in senders {
            self.by_sender.entry(s.clone()).or_default().insert(id.to_string());
        }
    }

    /// Out of every list; without the senders (a device gone), each sender's is searched.
    fn take_out(&mut self, id: &str, senders: Option<&[Arc<str>]>) {
        if !self.all.remove(id) {
            return;
        }
        let searched: Vec<Arc<str>> = match senders {
            Some(senders) => senders.to_vec(),
            None => self.by_sender.iter().filter(|(_, ids)| ids.contains(id)).map(|(s, _)| s.clone()).collect(),
        };
        for s in searched {
            if let Some(ids) = self.by_sender.get_mut(&s) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_sender.remove(&s);
                }
            }
        }
    }

    /// A device listed under `old` is now `new` (it registered again).
    pub fn rename(&mut self, old: &str, new: &str, senders: &[Arc<str>]) {
        if self.all.contains(old) {
            self.take_out(old, Some(senders));
            self.add(new, senders);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Every waiting device, in id order.
    pub fn all(&self) -> Vec<String> {
        self.all.iter().cloned().collect()
    }

    /// The waiting devices `sender` has sent to (it may have messages on them), in id order.
    pub fn of_sender(&self, sender: &str) -> Vec<String> {
        self.by_sender.get(sender).map(|ids| ids.iter().cloned().collect()).unwrap_or_default()
    }

    /// What a state file keeps.
    pub fn ids(&self) -> &BTreeSet<String> {
        &self.all
    }

    /// From a state file's list: each listed device is marked, and listed under its senders.
    pub fn restore(ids: BTreeSet<String>, instances: &mut super::instances::Instances) -> Waiting {
        let mut waiting = Waiting::default();
        for inst in instances.values_mut() {
            waiting.count(inst);
        }
        for id in ids {
            match instances.get_mut(id.as_str()) {
                Some(inst) => {
                    inst.listed_waiting = true;
                    waiting.add(&id, &inst.senders);
                }
                // A state file names only devices it has; one it does not stays listed for the
                // machine's clock, which finds nothing to do.
                None => {
                    waiting.all.insert(id);
                }
            }
        }
        waiting
    }
}
