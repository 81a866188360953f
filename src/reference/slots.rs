//! What one peer may hold of an XMPP listener: a share of its connection cap, of which at
//! most half goes to connections that have not logged in yet. When that half is full, a new
//! connection takes the place of one not logged in (which is told to go): of those that have
//! said least (nothing yet, then only a stream header), the oldest. Peers without credentials
//! that open connection after connection cannot keep an app server from logging in: a silent
//! peer always goes before one that has begun to log in, however fast the silent ones come
//! (a churn of silent peers evicted an app server still in its SASL exchange).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
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
    /// Oldest first: each with what tells it to go, and how far it got.
    held: VecDeque<(u64, Arc<Notify>, Arc<AtomicU8>)>,
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
    progress: Arc<AtomicU8>,
    registry: Arc<Mutex<Anonymous>>,
}

/// How far a connection not logged in has got: what decides which one makes room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Progress {
    Silent = 0,
    StreamOpened = 1,
}

impl AnonymousPlace {
    /// It got this far (never back).
    pub fn reached(&self, p: Progress) {
        self.progress.fetch_max(p as u8, Ordering::Relaxed);
    }
}

impl Drop for AnonymousPlace {
    fn drop(&mut self) {
        let mut a = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        a.held.retain(|(id, _, _)| *id != self.id);
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
        if a.held.len() >= a.max {
            // The oldest of those that got least far (`min_by_key` keeps the first of equals).
            let least =
                a.held.iter().enumerate().min_by_key(|(_, (_, _, p))| p.load(Ordering::Relaxed)).map(|(i, _)| i);
            if let Some((_, goes, _)) = least.and_then(|i| a.held.remove(i)) {
                goes.notify_one();
            }
        }
        a.next += 1;
        let (id, evicted, progress) =
            (a.next, Arc::new(Notify::new()), Arc::new(AtomicU8::new(Progress::Silent as u8)));
        a.held.push_back((id, evicted.clone(), progress.clone()));
        let place = AnonymousPlace { id, evicted, progress, registry: self.anonymous.clone() };
        Some(Slot { _all: all, anonymous: Some(place) })
    }
}
