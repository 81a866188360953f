//! What one peer may hold of an XMPP listener: a share of its connection cap, of which at
//! most half goes to connections that have not logged in yet. When that half is full, a new
//! connection takes the place of the oldest one not logged in (which is told to go): peers
//! without credentials that open connection after connection cannot keep an app server from
//! logging in, since each waits its turn only behind the connections opened after it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

#[derive(Clone)]
pub(crate) struct Slots {
    all: Arc<Semaphore>,
    anonymous: Arc<Mutex<Anonymous>>,
}

struct Anonymous {
    max: usize,
    next: u64,
    /// Oldest first: each with what tells it to go.
    held: VecDeque<(u64, Arc<Notify>)>,
}

/// One connection's place under its listener's cap.
pub(crate) struct Slot {
    _all: OwnedSemaphorePermit,
    /// Until it logs in.
    pub anonymous: Option<AnonymousPlace>,
}

/// A place among the connections not logged in; given back when dropped (on login).
pub(crate) struct AnonymousPlace {
    id: u64,
    pub evicted: Arc<Notify>,
    registry: Arc<Mutex<Anonymous>>,
}

impl Drop for AnonymousPlace {
    fn drop(&mut self) {
        let mut a = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        a.held.retain(|(id, _)| *id != self.id);
    }
}

impl Slots {
    pub fn new(max: usize) -> Slots {
        let anonymous = Anonymous { max: max.div_ceil(2), next: 0, held: VecDeque::new() };
        Slots { all: Arc::new(Semaphore::new(max)), anonymous: Arc::new(Mutex::new(anonymous)) }
    }

    /// A place for a new connection: `None` when the listener holds its whole cap. Past the
    /// share of connections not logged in, the oldest of them is told to go.
    pub fn take(&self) -> Option<Slot> {
        let all = self.all.clone().try_acquire_owned().ok()?;
        let mut a = self.anonymous.lock().unwrap_or_else(|e| e.into_inner());
        if a.held.len() >= a.max
            && let Some((_, oldest)) = a.held.pop_front()
        {
            oldest.notify_one();
        }
        a.next += 1;
        let (id, evicted) = (a.next, Arc::new(Notify::new()));
        a.held.push_back((id, evicted.clone()));
        let place = AnonymousPlace { id, evicted, registry: self.anonymous.clone() };
        Some(Slot { _all: all, anonymous: Some(place) })
    }
}
