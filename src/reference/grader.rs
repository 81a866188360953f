//! Grading off the request path: a served reference hands the sends it already parsed to a
//! thread of their own, so that a request holds the model's lock only to answer and journal.
//!
//! Nothing is read before it is graded: every sender's grading sits in a [`Cell`] with the
//! entries still waiting for it, and whoever reads the grading (a verdict read, a settled
//! read's wait, an eviction, the state file's snapshot, or an entry that cannot wait) first
//! feeds it what waits, in journal order, under the cell's lock. The thread only does the same
//! sooner. Verdicts are therefore the same, entry for entry, as when everything is graded
//! inline (the in-process [`crate::Reference`] does so: it starts no thread).
//!
//! Bounded: a cell holds at most [`PER_SENDER`] waiting entries, and all cells together at most
//! [`TOTAL_BYTES`] of the bodies they came with; past either, the request grades inline what
//! waits and its own entry (it pays for the backlog, as it would have without the thread).
//! The thread wakes a sleeping thread only when it has to, and otherwise gathers a batch for
//! [`GATHER`] between passes, so that a request does not pay for a wake-up.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::verdicts::entry::Facts;
use crate::verdicts::events::Prepared;
use crate::verdicts::{Conn, Entry, Grading, Rulebook, Stamp, What};

/// Entries one sender's grading may have waiting.
pub const PER_SENDER: usize = 4096;
/// Bytes of request bodies the waiting entries of all senders may hold (their parsed sends).
pub const TOTAL_BYTES: usize = 32 << 20;
/// How long the thread lets entries gather between passes while they keep coming.
pub const GATHER: Duration = Duration::from_micros(500);

/// One sender's grading and the entries waiting for it.
#[derive(Debug, Default)]
pub struct Cell {
    grading: Mutex<Grading>,
    waiting: Mutex<VecDeque<Waiting>>,
    /// On the thread's list (so that it is listed once, however many entries wait).
    listed: AtomicBool,
}

/// An HTTP send waiting: what of its entry grading reads (the rest is the journal's), and
/// the send as the adapter parsed it.
#[derive(Debug)]
pub struct Waiting {
    pub seq: u64,
    pub stamp: Stamp,
    pub connection: Option<Conn>,
    pub connection_opened_ms: Option<u64>,
    pub facts: Arc<Facts>,
    pub prepared: Prepared,
    /// The request body's length: what the parsed send roughly holds.
    pub bytes: usize,
}

impl Waiting {
    pub fn feed(self, book: &Rulebook, grading: &mut Grading) {
        let entry = Entry {
            seq: self.seq,
            stamp: self.stamp,
            connection: self.connection,
            connection_opened_ms: self.connection_opened_ms,
            what: What::Http {
                request: Default::default(),
                response: Default::default(),
                scripted: None,
                facts: self.facts,
            },
        };
        grading.feed(book, &entry, Some(self.prepared));
    }
}

/// A poisoned lock (a grader that panicked) still holds a usable grading: go on with it
/// rather than fail every later request of the sender.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cell {
    pub fn new(grading: Grading) -> Cell {
        Cell { grading: Mutex::new(grading), ..Cell::default() }
    }

    /// The grading, fed first whatever waits for it.
    pub fn caught_up(&self, book: &Rulebook, total: Option<&AtomicUsize>) -> MutexGuard<'_, Grading> {
        self.caught_up_with(book, total, &mut VecDeque::new())
    }

    /// The same, swapping what waits with `spare` (empty), whose room the next entries
    /// reuse: the thread keeps one, so that no pass grows a queue from nothing.
    fn caught_up_with(
        &self,
        book: &Rulebook,
        total: Option<&AtomicUsize>,
        spare: &mut VecDeque<Waiting>,
    ) -> MutexGuard<'_, Grading> {
        let mut grading = lock(&self.grading);
        // Taken under the grading's lock: nobody else can feed it between the two.
        std::mem::swap(&mut *lock(&self.waiting), spare);
        let freed: usize = spare.iter().map(|w| w.bytes).sum();
        if let Some(total) = total.filter(|_| freed > 0) {
            total.fetch_sub(freed, Ordering::SeqCst);
        }
        while let Some(w) = spare.pop_front() {
            w.feed(book, &mut grading);
        }
        grading
    }

    /// The grading as it is, without what waits (for a snapshot that caught it up first).
    pub fn as_is(&self) -> MutexGuard<'_, Grading> {
        lock(&self.grading)
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
    book: Arc<Rulebook>,
    listed: Mutex<Vec<Arc<Cell>>>,
    /// Bytes the waiting entries hold, all cells together.
    bytes: AtomicUsize,
    sleeping: AtomicBool,
    stop: AtomicBool,
}

impl Shared {
    fn new(book: Arc<Rulebook>) -> Arc<Shared> {
        Arc::new(Shared {
            book,
            listed: Mutex::default(),
            bytes: AtomicUsize::new(0),
            sleeping: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        })
    }
}

impl Background {
    /// Starts the thread. It ends when this handle is dropped.
    pub fn start(book: Arc<Rulebook>) -> std::io::Result<Background> {
        let shared = Shared::new(book);
        let on_thread = shared.clone();
        let handle = std::thread::Builder::new().name("gcmspec-grader".into()).spawn(move || run(&on_thread))?;
        Ok(Background { shared, thread: handle.thread().clone() })
    }

    /// A handle whose thread never grades (the caller's own, never unparked to any end).
    #[cfg(test)]
    pub fn paused(book: Arc<Rulebook>) -> Background {
        let shared = Shared::new(book);
        Background { shared, thread: std::thread::current() }
    }

    /// Leaves a send for the thread; handed back when it cannot wait (over a bound), for the
    /// caller to grade now (after what waits: [`Cell::caught_up`]).
    pub fn defer(&self, cell: &Arc<Cell>, w: Waiting) -> Option<Waiting> {
        let shared = &*self.shared;
        {
            let mut waiting = lock(&cell.waiting);
            if waiting.len() >= PER_SENDER || shared.bytes.load(Ordering::SeqCst) + w.bytes > TOTAL_BYTES {
                return Some(w);
            }
            shared.bytes.fetch_add(w.bytes, Ordering::SeqCst);
            waiting.push_back(w);
        }
        if !cell.listed.swap(true, Ordering::SeqCst) {
            lock(&shared.listed).push(cell.clone());
            if shared.sleeping.load(Ordering::SeqCst) {
                self.thread.unpark();
            }
        }
        None
    }

    /// What the waiting entries hold, for a cell caught up outside the thread.
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
    let mut spare = VecDeque::new();
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
                drop(cell.caught_up_with(&shared.book, Some(&shared.bytes), &mut spare));
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
        serde_json::to_value(reference.verdicts(&sender.sender_id).expect("verdicts")).expect("json")
    }

    #[test]
    fn verdicts_read_the_same_whichever_way_sends_are_graded() {
        let inline = verdicts_after(Way::Inline, 300);
        let violated = inline["summary"]["violated"].as_u64().unwrap_or(0);
        assert!(violated >= 3, "the scenario should break several rules: {}", inline["summary"]);
        assert_eq!(verdicts_after(Way::Thread, 300), inline);
        // Left waiting, and past the bound on what may wait: graded when read, in order.
        assert_eq!(verdicts_after(Way::Paused, 300), inline);
        assert_eq!(
            verdicts_after(Way::Paused, super::PER_SENDER + 100),
            verdicts_after(Way::Inline, super::PER_SENDER + 100)
        );
    }
}
