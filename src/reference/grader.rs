//! Grading off the request path: a served reference hands the sends it already parsed to a
//! thread of their own, so that a request holds the model's lock only to answer and to leave
//! the exchange, copied into bytes ([`super::handoff`]), for that thread. The thread makes the
//! journal's entry of it (the copy a journal keeps, cut), grades it, and drops the oldest
//! entries past the journal's caps: none of that is on the request's path.
//!
//! Nothing is read before it is journaled and graded: every sender's journal and grading sit
//! in a [`Cell`] with the exchanges still waiting for them, and whoever reads them (a verdict
//! or journal read, a settled read's wait, an eviction, the state file's snapshot, or an entry
//! that cannot wait) first takes in what waits, in journal order, under the cell's lock. The
//! thread only does the same sooner. Journals and verdicts are therefore the same, entry for
//! entry, as when everything is done inline (the in-process [`crate::Reference`] does so: it
//! starts no thread).
//!
//! Bounded: a cell holds at most [`PER_SENDER`] waiting exchanges, and all cells together at
//! most [`TOTAL_BYTES`] of the bodies they came with; past either, the request takes in what
//! waits and its own exchange itself (it pays for the backlog, as it would have without the
//! thread). The thread wakes a sleeping thread only when it has to, and otherwise gathers a
//! batch for [`GATHER`] between passes, so that a request does not pay for a wake-up.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::handoff::Queue;
use super::journal::{JournalCaps, Kept};
use super::packed::{Packed, PackedEntry};
use crate::verdicts::body::SendFields;
use crate::verdicts::entry::FactsFound;
use crate::verdicts::events::{Prepared, PreparedAnswer, PreparedBody};
use crate::verdicts::{Conn, Entry, Rulebook, Stamp, What};

/// Exchanges one sender's journal may have waiting.
pub const PER_SENDER: usize = 4096;
/// Bytes of bodies the waiting exchanges of all senders may hold.
pub const TOTAL_BYTES: usize = 32 << 20;
/// How long the thread lets exchanges gather between passes while they keep coming.
pub const GATHER: Duration = Duration::from_micros(500);

/// What journaling needs besides the entries: the rules to grade by and the caps to keep to.
#[derive(Debug, Clone)]
pub struct Journaling {
    pub book: Arc<Rulebook>,
    pub caps: JournalCaps,
}

/// One sender's journal and grading, and the exchanges waiting for them.
#[derive(Debug, Default)]
pub struct Cell {
    kept: Mutex<Kept>,
    /// Copied in, not moved ([`super::handoff`] says why).
    waiting: Mutex<Queue>,
    /// On the thread's list (so that it is listed once, however many exchanges wait).
    listed: AtomicBool,
}

/// An HTTP send waiting: what its entry keeps of the exchange, packed, the request's body
/// whole, and what the model answered, with the facts its grading reads. The thread parses
/// the body again rather than being handed the adapter's parse, so that what crosses threads
/// is a few byte strings, not one allocation per JSON field; they cross as a copy in the
/// cell's queue ([`super::handoff`]), and the thread makes this again from it.
#[derive(Debug)]
pub struct Waiting {
    pub seq: u64,
    pub stamp: Stamp,
    pub connection: Option<Conn>,
    pub connection_opened_us: Option<u64>,
    pub exchange: Packed,
    pub body: Vec<u8>,
    pub answer: PreparedAnswer,
    pub scripted: Option<String>,
    pub facts: FactsFound,
}

impl Waiting {
    /// What it takes, roughly, for the bound on what may wait (checked before it is copied).
    pub fn bytes(&self) -> usize {
        self.exchange.len() + self.body.len() + self.facts.len()
    }

    /// Graded from the parsed send, then kept packed (or, when it cannot be, made and cut as
    /// a journal keeps it).
    pub fn journal(self, how: &Journaling, kept: &mut Kept) {
        // The body the adapter parsed into an object: its fields read from its bytes (or, in
        // what that reading leaves, from its parse, which reads the same).
        let body =
            SendFields::read(&self.body).map(PreparedBody::Read).or_else(|| match serde_json::from_slice(&self.body) {
                Ok(serde_json::Value::Object(body)) => Some(PreparedBody::Parsed(body)),
                _ => None,
            });
        // Made for grading and dropped after it (the entry keeps the facts as found).
        let facts = Arc::new(self.facts.facts());
        let (seq, stamp, connection, opened) = (self.seq, self.stamp, self.connection, self.connection_opened_us);
        match body {
            Some(body) if self.exchange.fits() => {
                let packed = PackedEntry::new(
                    seq,
                    stamp,
                    connection,
                    opened,
                    self.exchange,
                    self.body,
                    self.scripted,
                    self.facts,
                );
                kept.take_packed(how, packed, facts, Prepared { body, answer: self.answer });
            }
            parsed => {
                let (request, response) = self.exchange.messages(&self.body);
                let what = What::Http { request, response, scripted: self.scripted, facts };
                let entry = Entry { seq, stamp, connection, connection_opened_us: opened, what };
                kept.take(how, entry, parsed.map(|body| Prepared { body, answer: self.answer }));
            }
        }
    }
}

/// A poisoned lock (a grader that panicked) still holds a usable grading: go on with it
/// rather than fail every later request of the sender.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cell {
    pub fn new(kept: Kept) -> Cell {
        Cell { kept: Mutex::new(kept), ..Cell::default() }
    }

    /// The journal and grading, with whatever waits taken in first.
    pub fn caught_up(&self, how: &Journaling, total: Option<&AtomicUsize>) -> MutexGuard<'_, Kept> {
        self.caught_up_with(how, total, &mut Queue::default())
    }

    /// The same, swapping what waits with `spare` (empty), whose room the next exchanges
    /// reuse: the thread keeps one, so that no pass grows a queue from nothing.
    fn caught_up_with(&self, how: &Journaling, total: Option<&AtomicUsize>, spare: &mut Queue) -> MutexGuard<'_, Kept> {
        let mut kept = lock(&self.kept);
        // Taken under the journal's lock: nobody else can take anything in between the two.
        std::mem::swap(&mut *lock(&self.waiting), spare);
        let freed = spare.bytes();
        if let Some(total) = total.filter(|_| freed > 0) {
            total.fetch_sub(freed, Ordering::SeqCst);
        }
        for w in spare.drain() {
            w.journal(how, &mut kept);
        }
        spare.clear();
        kept
    }

    /// The journal and grading as they are, without what waits (for a snapshot that caught
    /// them up first).
    pub fn as_is(&self) -> MutexGuard<'_, Kept> {
        lock(&self.kept)
    }
}

/// The thread that grades what waits, and what the request side shares with it.
#[derive(Debug)]
pub struct Background {
    shared: Arc<Shared>,
    thread: std::thread::Thread,
}

#[derive(Debug)]
struct Shared {
    how: Journaling,
    listed: Mutex<Vec<Arc<Cell>>>,
    /// Bytes the waiting entries hold, all cells together.
    bytes: AtomicUsize,
    sleeping: AtomicBool,
    stop: AtomicBool,
}

impl Shared {
    fn new(how: Journaling) -> Arc<Shared> {
        Arc::new(Shared {
            how,
            listed: Mutex::default(),
            bytes: AtomicUsize::new(0),
            sleeping: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        })
    }
}

impl Background {
    /// Starts the thread. It ends when this handle is dropped.
    pub fn start(how: Journaling) -> std::io::Result<Background> {
        let shared = Shared::new(how);
        let on_thread = shared.clone();
        let handle = std::thread::Builder::new().name("gcmspec-grader".into()).spawn(move || run(&on_thread))?;
        Ok(Background { shared, thread: handle.thread().clone() })
    }

    /// A handle whose thread never grades (the caller's own, never unparked to any end).
    #[cfg(test)]
    pub fn paused(how: Journaling) -> Background {
        let shared = Shared::new(how);
        Background { shared, thread: std::thread::current() }
    }

    /// Leaves a send for the thread; handed back when it cannot wait (over a bound), for the
    /// caller to take in now (after what waits: [`Cell::caught_up`]).
    pub fn defer(&self, cell: &Arc<Cell>, w: Waiting) -> Option<Waiting> {
        let shared = &*self.shared;
        {
            let mut waiting = lock(&cell.waiting);
            if waiting.len() >= PER_SENDER || shared.bytes.load(Ordering::SeqCst) + w.bytes() > TOTAL_BYTES {
                return Some(w);
            }
            let bytes = waiting.push(&w);
            shared.bytes.fetch_add(bytes, Ordering::SeqCst);
        }
        // Dropped here, on the thread that allocated it.
        drop(w);
        if !cell.listed.swap(true, Ordering::SeqCst) {
            lock(&shared.listed).push(cell.clone());
            if shared.sleeping.load(Ordering::SeqCst) {
                self.thread.unpark();
            }
        }
        None
    }

    /// What the waiting exchanges hold, for a cell caught up outside the thread.
    pub fn bytes(&self) -> &AtomicUsize {
        &self.shared.bytes
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }
}

fn run(shared: &Shared) {
    let mut spare = Queue::default();
    while !shared.stop.load(Ordering::SeqCst) {
        let cells = std::mem::take(&mut *lock(&shared.listed));
        if cells.is_empty() {
            shared.sleeping.store(true, Ordering::SeqCst);
            // Looked at again once marked asleep: a cell listed in between is not missed.
            if lock(&shared.listed).is_empty() && !shared.stop.load(Ordering::SeqCst) {
                std::thread::park();
            }
            shared.sleeping.store(false, Ordering::SeqCst);
            continue;
        }
        for cell in cells {
            // Unlisted first: an entry left after this pass's take lists the cell again.
            cell.listed.store(false, Ordering::SeqCst);
            let graded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                drop(cell.caught_up_with(&shared.how, Some(&shared.bytes), &mut spare));
            }));
            // A grader's bug loses the rest of this pass's entries of the cell (as inline, a
            // request's), not the thread.
            if graded.is_err() {
                spare.clear();
            }
        }
        std::thread::sleep(GATHER);
    }
}

#[cfg(test)]
mod tests {
    use crate::reference::{Config, Reference};
    use crate::wire::HttpRequest;
    use serde_json::json;

    /// How the three ways of grading are set up: inline, on the thread, left waiting.
    #[derive(Clone, Copy)]
    enum Way {
        Inline,
        Thread,
        Paused,
    }

    /// A seeded reference graded `way`, and the verdicts of one sender after `sends` rounds of
    /// sends that exercise several graders: the same message again (resent after it was
    /// taken), a scripted 503 and its retry, a stale id used again, a time to live out of range.
    fn verdicts_after(way: Way, sends: usize) -> serde_json::Value {
        let mut config = Config::bundled();
        config.seed = Some(7);
        let reference = Reference::new(config);
        match way {
            Way::Inline => {}
            Way::Thread => reference.with_model(|m| m.journals.grade_in_background()).expect("a thread"),
            Way::Paused => reference.with_model(|m| m.journals.grade_paused()),
        }
        let sender = reference.create_sender().expect("a sender");
        let token = reference.with_model(|m| m.register_instance(vec![sender.sender_id.clone()], None));
        let send = |body: serde_json::Value| {
            let req = HttpRequest::new("POST", "/fcm/send")
                .with_header("authorization", &format!("key={}", sender.server_key))
                .with_json(&body);
            reference.handle(&req).status
        };
        let script = |body: serde_json::Value| {
            let path = format!("/_gcmspec/v1/senders/{}/script", sender.sender_id);
            let req = HttpRequest::new("POST", &path)
                .with_header("authorization", &format!("key={}", sender.server_key))
                .with_json(&body);
            assert_eq!(reference.handle(&req).status, 201);
        };
        for n in 0..sends {
            let data = json!({"n": (n / 3).to_string()});
            send(json!({"to": token, "data": data}));
            if n % 50 == 0 {
                script(json!({"kind": "status", "status": 503, "retry_after": 10, "times": 1}));
                send(json!({"to": token, "data": {"late": n.to_string()}}));
                send(json!({"to": token, "data": {"late": n.to_string()}}));
                send(json!({"to": "no-such-token", "data": data}));
                send(json!({"to": "no-such-token", "data": data}));
                send(json!({"to": token, "time_to_live": -1}));
            }
        }
        let verdicts = serde_json::to_value(reference.verdicts(&sender.sender_id).expect("verdicts")).expect("json");
        // The journal as read (its entries without their wall-clock stamps, which differ
        // from run to run), and how many its caps dropped.
        let view = reference.journal(&sender.sender_id, None).expect("a journal");
        let entries: Vec<serde_json::Value> = view
            .entries
            .into_iter()
            .map(|mut e| {
                e.as_object_mut().map(|o| (o.remove("wall_ms"), o.remove("wall_us")));
                e
            })
            .collect();
        json!({"verdicts": verdicts, "journal": entries, "next": view.next, "dropped": view.dropped})
    }

    #[test]
    fn journals_and_verdicts_read_the_same_whichever_way_sends_are_graded() {
        let inline = verdicts_after(Way::Inline, 300);
        let violated = inline["verdicts"]["summary"]["violated"].as_u64().unwrap_or(0);
        assert!(violated >= 3, "the scenario should break several rules: {}", inline["verdicts"]["summary"]);
        assert_eq!(verdicts_after(Way::Thread, 300), inline);
        // Left waiting, and past the bound on what may wait: graded when read, in order.
        assert_eq!(verdicts_after(Way::Paused, 300), inline);
        let long = verdicts_after(Way::Inline, super::PER_SENDER + 100);
        // Long enough that the journal's caps dropped its oldest entries.
        assert!(long["dropped"].as_u64().unwrap_or(0) > 0, "{}", long["dropped"]);
        assert_eq!(verdicts_after(Way::Paused, super::PER_SENDER + 100), long);
    }
}
