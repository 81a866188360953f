//! What one peer may hold of an XMPP listener: a share of its connection cap, of which at
//! most half goes to connections that have not logged in yet. When that half is full, a new
//! connection takes the place of one not logged in (which is told to go): of those that have
//! said least (nothing yet; a header not read yet; a stream header; a stream header and more
//! not read yet), the oldest. Peers without credentials that open connection after
//! connection do not keep an app server from logging in: a silent peer always goes before one
//! that has begun to log in (a churn of silent peers evicted an app server still in its SASL
//! exchange). What no rule can tell apart is a peer that opened its stream and stalls from an
//! app server waiting for the server's features: among those, the oldest goes, so an app
//! server is safe only while fewer newcomers than half the cap arrive within one round trip
//! of its login (docs/robustness.md has the figures).
//!
//! "Said" counts what reached the socket, not what the connection's task has read: on a
//! loaded machine an app server's stream header could wait unread while newer silent peers
//! arrived, and it was evicted as the oldest silent one. So each connection not logged in
//! is registered with a duplicate of its socket's descriptor, and a candidate is peeked
//! (without reading) before it is chosen. Candidates are scanned oldest first and the first
//! truly silent one goes, so a newcomer costs one peek when the share is held by silent
//! peers, and at most the share's length otherwise.
//!
//! The place under the cap passes to the newcomer when the evicted connection is told to go,
//! not when its task gets round to closing: on a loaded machine the evicted connections'
//! tasks ran late, still held the cap, and an app server was turned away at accept. While
//! they close, evicted connections hold a place in a separate allowance as large as the cap,
//! so the sockets a listener holds stay bounded (at most twice its cap); when that allowance
//! is spent, a newcomer is turned away instead. (Half the cap was spent by eight peers
//! reconnecting without end on a listener of 8, and an app server was turned away.)
//!
//! A connection evicted while silent is told so only after [`SILENT_LINGER`], while at least
//! half the closing allowance is free (past that, at once): peers that reconnect as soon as
//! they are put out otherwise churned through the share in microseconds, and an app server
//! whose client was not scheduled between its connect and its first write (a loaded 2-core
//! machine, one run in fifteen) was evicted as the oldest silent peer on two tries running.
//! Held back, each such peer comes back at most once per linger, so an app server has about
//! that long to speak. The linger costs a flood's peer time, never an app server's: one that
//! spoke is told at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// How long a connection evicted while silent waits before it is told and closed.
const SILENT_LINGER: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub(crate) struct Slots {
    /// Places under the listener's cap.
    all: Arc<Semaphore>,
    /// Places for evicted connections while they close.
    closing: Arc<Semaphore>,
    /// The closing allowance's size.
    closing_max: usize,
    anonymous: Arc<Mutex<Anonymous>>,
}

struct Anonymous {
    max: usize,
    next: u64,
    /// Oldest first: each connection not logged in, with its place under the cap.
    held: VecDeque<Held>,
}

struct Held {
    id: u64,
    state: Arc<PlaceState>,
    permit: OwnedSemaphorePermit,
    /// To peek at what it sent (none when the process had no descriptor to spare, or off
    /// Unix: it then counts as silent until read).
    socket: Option<Probe>,
}

/// A duplicate of a connection's socket descriptor, to peek at what reached it.
pub(crate) struct Probe(#[cfg(unix)] std::os::fd::OwnedFd);

impl Probe {
    #[cfg(unix)]
    pub fn of(socket: &impl std::os::fd::AsFd) -> Option<Probe> {
        socket.as_fd().try_clone_to_owned().ok().map(Probe)
    }

    #[cfg(not(unix))]
    pub fn of<T>(_socket: &T) -> Option<Probe> {
        None
    }

    /// Whether bytes wait on the socket (a peek that neither blocks nor consumes them).
    #[cfg(unix)]
    fn has_unread_bytes(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut byte = 0u8;
        // SAFETY: the descriptor is owned (open for as long as `self` lives) and the buffer
        // is one valid byte; MSG_PEEK leaves the data for its reader, MSG_DONTWAIT never
        // blocks.
        let n =
            unsafe { libc::recv(self.0.as_raw_fd(), (&raw mut byte).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        n > 0
    }

    #[cfg(not(unix))]
    fn has_unread_bytes(&self) -> bool {
        false
    }
}

impl Held {
    /// How far it got, counting bytes that arrived and are not read yet: a step past what
    /// its task has seen (a header waiting, or after the header the login going on).
    fn progress(&self) -> u8 {
        let recorded = self.state.progress.load(Ordering::Relaxed);
        let unread = self.socket.as_ref().is_some_and(Probe::has_unread_bytes);
        match recorded {
            r if r == Progress::Silent as u8 && unread => Progress::Spoke as u8,
            r if r == Progress::StreamOpened as u8 && unread => Progress::Continuing as u8,
            r => r,
        }
    }
}

/// What a connection not logged in shares with the registry.
struct PlaceState {
    /// Told to go.
    goes: Notify,
    /// How far it got ([`Progress`]).
    progress: AtomicU8,
    /// Once evicted: its place among the closing connections.
    closing: Mutex<Option<OwnedSemaphorePermit>>,
    /// Evicted while silent, with room among the closing connections to linger.
    lingers: std::sync::atomic::AtomicBool,
}

/// One connection's place under its listener's cap.
pub(crate) struct Slot {
    /// Once logged in, its place under the cap (before, the registry holds it).
    permit: Option<OwnedSemaphorePermit>,
    /// Until it logs in.
    anonymous: Option<AnonymousPlace>,
    all: Arc<Semaphore>,
}

/// A place among the connections not logged in; given back when dropped.
pub(crate) struct AnonymousPlace {
    id: u64,
    state: Arc<PlaceState>,
    registry: Arc<Mutex<Anonymous>>,
}

/// How far a connection not logged in has got: what decides which one makes room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Progress {
    Silent = 0,
    /// Bytes arrived that its task has not read yet (seen only by the registry's peek).
    Spoke = 1,
    StreamOpened = 2,
    /// Past its stream header, more bytes arrived (its SASL exchange, say) that its task
    /// has not read yet (seen only by the registry's peek).
    Continuing = 3,
}

impl Drop for AnonymousPlace {
    fn drop(&mut self) {
        let mut a = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        a.held.retain(|h| h.id != self.id);
    }
}

impl Slot {
    /// It got this far (never back); nothing once logged in.
    pub fn reached(&self, p: Progress) {
        if let Some(place) = &self.anonymous {
            place.state.progress.fetch_max(p as u8, Ordering::Relaxed);
        }
    }

    /// Evicted while silent: it waits [`SILENT_LINGER`] before it is told and closed.
    pub fn lingers(&self) -> bool {
        self.anonymous.as_ref().is_some_and(|p| p.state.lingers.load(Ordering::Relaxed))
    }

    /// Once evicted: waits out the linger if it was evicted while silent, before it is told.
    pub async fn linger(&self) {
        if self.lingers() {
            tokio::time::sleep(SILENT_LINGER).await;
        }
    }

    /// Told to go to make room, while not logged in; pending for ever once logged in.
    pub async fn evicted(&self) {
        match &self.anonymous {
            Some(place) => place.state.goes.notified().await,
            None => std::future::pending().await,
        }
    }

    /// Logged in: no longer one of the connections not logged in, it keeps its place under
    /// the cap. `false` when that place went to a newer connection meanwhile and the cap
    /// has no other: the connection must end, and holds its place among the closing ones
    /// until it has.
    pub fn logged_in(&mut self) -> bool {
        let Some(place) = self.anonymous.take() else { return self.permit.is_some() };
        let mine = {
            let mut a = place.registry.lock().unwrap_or_else(|e| e.into_inner());
            let at = a.held.iter().position(|h| h.id == place.id);
            at.and_then(|i| a.held.remove(i)).map(|h| h.permit)
        };
        self.permit = mine.or_else(|| self.all.clone().try_acquire_owned().ok());
        if self.permit.is_none() {
            self.anonymous = Some(place);
        }
        self.permit.is_some()
    }
}

impl Slots {
    pub fn new(max: usize) -> Slots {
        let share = max.div_ceil(2);
        let anonymous = Anonymous { max: share, next: 0, held: VecDeque::new() };
        Slots {
            all: Arc::new(Semaphore::new(max)),
            closing: Arc::new(Semaphore::new(max)),
            closing_max: max,
            anonymous: Arc::new(Mutex::new(anonymous)),
        }
    }

    /// A place for a new connection: `None` when the listener holds its whole cap (or its
    /// anonymous share is full and too many evicted connections are still closing). Past the
    /// share of connections not logged in, the oldest of those that said least is told to
    /// go, and its place passes to the newcomer at once.
    /// `socket` peeks at the connection's socket while it is not logged in.
    pub fn take(&self, socket: Option<Probe>) -> Option<Slot> {
        let mut a = self.anonymous.lock().unwrap_or_else(|e| e.into_inner());
        let permit = if a.held.len() >= a.max {
            // The allowance first: a newcomer turned away costs no peeks.
            let closing = self.closing.clone().try_acquire_owned().ok()?;
            let (at, progress) = least_far(&a.held)?;
            let gone = a.held.remove(at)?;
            let room = 2 * self.closing.available_permits() >= self.closing_max;
            gone.state.lingers.store(progress == Progress::Silent as u8 && room, Ordering::Relaxed);
            *gone.state.closing.lock().unwrap_or_else(|e| e.into_inner()) = Some(closing);
            gone.state.goes.notify_one();
            gone.permit
        } else {
            self.all.clone().try_acquire_owned().ok()?
        };
        a.next += 1;
        let id = a.next;
        let state = Arc::new(PlaceState {
            goes: Notify::new(),
            progress: AtomicU8::new(Progress::Silent as u8),
            closing: Mutex::new(None),
            lingers: std::sync::atomic::AtomicBool::new(false),
        });
        a.held.push_back(Held { id, state: state.clone(), permit, socket });
        let place = AnonymousPlace { id, state, registry: self.anonymous.clone() };
        Some(Slot { permit: None, anonymous: Some(place), all: self.all.clone() })
    }
}

/// Of the connections not logged in, the oldest of those that got least far (the first
/// silent one, or failing that the first of the least progress), with how far it got.
fn least_far(held: &VecDeque<Held>) -> Option<(usize, u8)> {
    let mut least: Option<(usize, u8)> = None;
    for (i, h) in held.iter().enumerate() {
        let p = h.progress();
        if p == Progress::Silent as u8 {
            return Some((i, p));
        }
        if least.is_none_or(|(_, l)| p < l) {
            least = Some((i, p));
        }
    }
    least
}

#[cfg(all(test, unix))]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use super::*;

    /// A connection as the listener sees it, and its peer's end.
    fn peer() -> (UnixStream, UnixStream) {
        UnixStream::pair().expect("a socket pair")
    }

    #[test]
    fn an_evicted_connection_gives_its_place_at_once_and_closing_ones_are_bounded() {
        let slots = Slots::new(4); // two may be anonymous, four may be closing
        let sockets: Vec<_> = (0..10).map(|_| peer()).collect();
        let mut app = slots.take(Probe::of(&sockets[0].0)).expect("first");
        assert!(app.logged_in());
        let mut app2 = slots.take(Probe::of(&sockets[1].0)).expect("second");
        assert!(app2.logged_in());
        // Two logged in, two silent peers: the cap is full.
        let a = slots.take(Probe::of(&sockets[2].0)).expect("third");
        let b = slots.take(Probe::of(&sockets[3].0)).expect("fourth");
        a.reached(Progress::StreamOpened);
        // Newcomers evict the oldest silent peer, whose task has not yet run to close it.
        let mut closing = vec![b];
        let mut newest = None;
        for (n, (socket, _)) in sockets[4..8].iter().enumerate() {
            let slot =
                slots.take(Probe::of(socket)).unwrap_or_else(|| panic!("newcomer {n} takes a silent peer's place"));
            closing.extend(newest.replace(slot));
        }
        // b and the first three newcomers were evicted (a had begun to log in) and still close.
        assert_eq!(closing.len(), 4);
        assert!(slots.take(Probe::of(&sockets[8].0)).is_none(), "more closing connections than the allowance");
        drop(closing);
        let e = slots.take(Probe::of(&sockets[8].0)).expect("closed connections gave their allowance back");
        // The last newcomer was evicted by e: logging in now finds no place (the cap is full).
        let mut evicted = newest.expect("a newcomer");
        assert!(!evicted.logged_in());
        drop((a, e, app2));
        let mut f = slots.take(Probe::of(&sockets[9].0)).expect("a place");
        assert!(f.logged_in());
        assert!(app.logged_in());
    }

    /// Two connections not logged in fill the share; `app`'s peer then sends `bytes`, which
    /// its task has not read; a newcomer arrives. Whether each of the two was evicted.
    fn newcomer_evicts(read_before: Option<Progress>, bytes: &[u8]) -> (bool, bool) {
        let slots = Slots::new(4); // two may be anonymous
        let (app, mut app_peer) = peer();
        let (other, _other_peer) = peer();
        let app_slot = slots.take(Probe::of(&app)).expect("a place");
        let other_slot = slots.take(Probe::of(&other)).expect("a place");
        if let Some(p) = read_before {
            app_slot.reached(p);
            other_slot.reached(p);
        }
        app_peer.write_all(bytes).expect("written");
        let (newcomer, _newcomer_peer) = peer();
        let _newcomer = slots.take(Probe::of(&newcomer)).expect("a place");
        let gone = |s: &Slot| {
            let place = s.anonymous.as_ref().expect("not logged in");
            let a = place.registry.lock().expect("registry");
            !a.held.iter().any(|h| h.id == place.id)
        };
        (gone(&app_slot), gone(&other_slot))
    }

    #[test]
    fn bytes_not_yet_read_count_as_having_spoken() {
        // The app server's header arrived, unread; the younger peer said nothing: it goes.
        assert_eq!(newcomer_evicts(None, b"<stream:stream>"), (false, true));
    }

    #[test]
    fn a_login_going_on_outranks_a_stream_header_alone() {
        // Both headers were read; then the app server's SASL auth arrived, unread: the
        // younger peer, stalled after its header, goes.
        assert_eq!(newcomer_evicts(Some(Progress::StreamOpened), b"<auth mechanism='PLAIN'>"), (false, true));
    }

    #[test]
    fn only_a_silent_peer_lingers_and_only_while_half_the_allowance_is_free() {
        let slots = Slots::new(4); // two may be anonymous, four may be closing
        let sockets: Vec<_> = (0..6).map(|_| peer()).collect();
        let take = |n: usize| slots.take(Probe::of(&sockets[n].0)).expect("a place");
        let (a, b) = (take(0), take(1));
        b.reached(Progress::StreamOpened);
        let c = take(2); // evicts a, silent: three closing places free
        let d = take(3); // evicts c, silent: two free
        d.reached(Progress::StreamOpened);
        let e = take(4); // evicts b (d and b opened their streams; b is older): one free
        let _f = take(5); // evicts e, silent: none free
        assert_eq!([a.lingers(), c.lingers()], [true, true], "silent peers evicted while half the allowance is free");
        assert!(!b.lingers(), "a peer that opened its stream is told at once");
        assert!(!e.lingers(), "with more than half the allowance spent, a silent peer goes at once");
        assert!(!d.lingers(), "not evicted");
    }
}
