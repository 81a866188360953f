//! What each sender's app server exchanged with the reference, kept for the control API
//! (`GET .../senders/{id}/journal`) and graded as it comes against the app-server rules
//! (`GET .../senders/{id}/verdicts`, `serve --report`).
//!
//! Bounded like everything a client can grow: a sender's journal keeps its newest
//! [`JournalCaps::entries`] entries within [`JournalCaps::bytes`] (older ones are dropped and
//! counted, as for inboxes: they were graded all the same), and the reference keeps the
//! journals of at most [`JournalCaps::senders`] senders, the least recently active going first.
//! Grading costs what an entry holds, never what the reference stores.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::grader::{Background, Cell, Journaling, Waiting};
use super::packed::{Packed, PackedEntry, Stored, request_message, request_message_cut, response_message};
use crate::verdicts::{Conn, Entry, Grading, JournalCount, Remains, Rulebook, Stamp, Verdicts, What};
use crate::wire::{HttpRequest, HttpResponse};

/// How much the journals keep (docs/robustness.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalCaps {
    /// Entries one sender's journal shows at most.
    pub entries: usize,
    /// Bytes (bodies and headers, roughly) one sender's journal keeps at most.
    pub bytes: usize,
    /// Senders whose journals are kept; past it, the least recently active one's goes.
    pub senders: usize,
}

impl Default for JournalCaps {
    fn default() -> Self {
        JournalCaps { entries: 1000, bytes: 512 * 1024, senders: 256 }
    }
}

/// What a settled read waits at least while any copy awaits its app server's ack, however old:
/// an ack written just before the read was sent, on the XMPP connection rather than the
/// read's, may not have been read yet (an outside pass saw a legal ack 1.2 s after its copy
/// judged missed, one read in five). Not a number of the documents: the adapter's allowance
/// for two connections of one client.
pub const SETTLE_QUIET_MS: u64 = 100;

/// One sender's journal and grading.
#[derive(Debug, Default)]
pub struct SenderJournal {
    next_seq: u64,
    /// The sequence number it began at: a sender whose earlier journal was evicted goes on
    /// from where that one ended, so that a reader's cursor never goes back.
    start: u64,
    /// Its entries and grading. Read through [`Journals::kept`], which takes in first what
    /// waits for the grader's thread; a snapshot catches every cell up before it is written.
    cell: Arc<Cell>,
    /// When it was last written to (a count of writes over all journals), for eviction.
    touched: u64,
}

/// What a sender's journal holds: its newest entries, within the caps, and their grading.
#[derive(Debug, Default)]
pub struct Kept {
    pub grading: Grading,
    entries: VecDeque<Stored>,
    /// Each entry's [`Entry::weight`], so that dropping the oldest does not walk it again.
    weights: VecDeque<usize>,
    bytes: usize,
    dropped: u64,
}

impl Kept {
    /// Grades `entry` (whole; `prepared`, the send the adapter parsed, spares parsing its
    /// bodies again), then keeps it cut, dropping the oldest past the caps.
    pub fn take(&mut self, how: &Journaling, mut entry: Entry, prepared: Option<crate::verdicts::events::Prepared>) {
        self.grading.feed(&how.book, &entry, prepared);
        entry.what.cut();
        self.keep(how, Stored::Made(Box::new(entry)));
    }

    /// Grades a send from what the adapter parsed and the facts, and keeps its entry packed.
    pub fn take_packed(
        &mut self,
        how: &Journaling,
        packed: PackedEntry,
        facts: std::sync::Arc<crate::verdicts::Facts>,
        prepared: crate::verdicts::events::Prepared,
    ) {
        // What grading reads of a parsed send's entry: where and when, and the facts.
        let bare = Entry {
            seq: packed.seq,
            stamp: packed.stamp,
            connection: packed.connection,
            connection_opened_us: packed.connection_opened_us,
            what: What::Http { request: Default::default(), response: Default::default(), scripted: None, facts },
        };
        self.grading.feed(&how.book, &bare, Some(prepared));
        self.keep(how, Stored::Packed(packed));
    }

    fn keep(&mut self, how: &Journaling, stored: Stored) {
        let weight = stored.weight();
        self.bytes += weight;
        self.entries.push_back(stored);
        self.weights.push_back(weight);
        let caps = how.caps;
        while self.entries.len() > caps.entries || (self.bytes > caps.bytes && self.entries.len() > 1) {
            if self.entries.pop_front().is_some() {
                self.bytes = self.bytes.saturating_sub(self.weights.pop_front().unwrap_or_default());
                self.dropped += 1;
            }
        }
    }
}

/// A sender's journal as a state file has it (the form it had before the entries moved into
/// the cell, so that state files read either way).
#[derive(Serialize)]
struct SenderJournalOut<'a> {
    entries: &'a VecDeque<Stored>,
    bytes: usize,
    next_seq: u64,
    start: u64,
    dropped: u64,
    grading: &'a Grading,
    touched: u64,
}

#[derive(Deserialize)]
struct SenderJournalIn {
    entries: VecDeque<Entry>,
    bytes: usize,
    next_seq: u64,
    #[serde(default)]
    start: u64,
    dropped: u64,
    grading: Grading,
    touched: u64,
}

impl Serialize for SenderJournal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let kept = self.cell.as_is();
        SenderJournalOut {
            entries: &kept.entries,
            bytes: kept.bytes,
            next_seq: self.next_seq,
            start: self.start,
            dropped: kept.dropped,
            grading: &kept.grading,
            touched: self.touched,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for SenderJournal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let file = SenderJournalIn::deserialize(d)?;
        let weights = file.entries.iter().map(Entry::weight).collect();
        let entries = file.entries.into_iter().map(|e| Stored::Made(Box::new(e))).collect();
        let kept = Kept { grading: file.grading, entries, weights, bytes: file.bytes, dropped: file.dropped };
        let (next_seq, start, touched) = (file.next_seq, file.start, file.touched);
        Ok(SenderJournal { next_seq, start, cell: Arc::new(Cell::new(kept)), touched })
    }
}

/// Every sender's journal.
#[derive(Debug, Default)]
pub struct Journals {
    /// The rules and caps; `None` when nothing is journaled.
    how: Option<Journaling>,
    /// The grader's thread, when one was started ([`Journals::grade_in_background`]).
    background: Option<Background>,
    caps: JournalCaps,
    senders: HashMap<String, SenderJournal>,
    writes: u64,
    /// Journals evicted to make room, in total.
    pub evicted: u64,
    /// What evicted journals had found, and where their sequence numbers ended, by sender
    /// (the newest of them, bounded).
    gone: crate::verdicts::Bounded<Remains>,
}

/// An HTTP exchange to journal: the request as received (owned, when the caller can give it
/// up, so that a request left for the grader's thread is not copied on the request's path)
/// and its answer.
pub struct Exchange<'a> {
    pub request: std::borrow::Cow<'a, HttpRequest>,
    pub response: &'a HttpResponse,
    pub scripted: Option<String>,
    pub facts: crate::verdicts::entry::FactsFound,
}

/// A journal read from a cursor (`GET .../journal?after=N`).
pub struct JournalView {
    pub entries: Vec<Value>,
    /// The cursor for what comes later.
    pub next: u64,
    /// Entries the caps dropped before they could be read from here.
    pub dropped: u64,
}

impl Journals {
    /// Journals graded against `book`; without one, or with room for no sender's journal,
    /// nothing is journaled.
    pub fn new(book: Option<Arc<Rulebook>>, caps: JournalCaps) -> Journals {
        let how = book.filter(|_| caps.senders > 0).map(|book| Journaling { book, caps });
        Journals { how, caps, ..Journals::default() }
    }

    pub fn enabled(&self) -> bool {
        self.how.is_some()
    }

    /// Journals and grades the sends the adapter parsed on a thread of their own
    /// (src/reference/grader.rs), off the request path; journals and verdicts read the same.
    /// Once; nothing when nothing is journaled.
    pub fn grade_in_background(&mut self) -> std::io::Result<()> {
        if let (Some(how), None) = (&self.how, &self.background) {
            self.background = Some(Background::start(how.clone())?);
        }
        Ok(())
    }

    /// As [`Self::grade_in_background`], with a thread that never grades: whatever is left
    /// to it waits until read (for tests of the bounds and of reading what waits).
    #[cfg(test)]
    pub(crate) fn grade_paused(&mut self) {
        self.background = self.how.clone().map(Background::paused);
    }

    /// `j`'s entries and grading, with whatever waits for the grader's thread taken in first.
    fn kept<'a>(&self, how: &Journaling, j: &'a SenderJournal) -> std::sync::MutexGuard<'a, Kept> {
        j.cell.caught_up(how, self.background.as_ref().map(Background::bytes))
    }

    /// Journals and grades one exchange of `sender`'s; with `keep` (a state file), returns
    /// the entry as it was graded, for the file to keep.
    pub fn record(
        &mut self,
        sender: &str,
        stamp: Stamp,
        connection: Option<(Conn, u64)>,
        what: What,
        keep: bool,
        prepared: Option<crate::verdicts::events::Prepared>,
    ) -> Option<Entry> {
        let seq = self.open(sender)?;
        let (connection, connection_opened_us) = (connection.map(|c| c.0), connection.map(|c| c.1));
        let entry = Entry { seq, stamp, connection, connection_opened_us, what };
        let kept = keep.then(|| entry.clone());
        self.take(sender, entry, prepared);
        kept
    }

    /// Journals and grades an HTTP exchange. A send the adapter parsed, when no state file
    /// wants its entry, is left as received for the grader's thread (if there is one): its
    /// entry is made there. Otherwise as [`Self::record`].
    pub fn record_http(
        &mut self,
        sender: &str,
        stamp: Stamp,
        connection: Option<(Conn, u64)>,
        exchange: Exchange<'_>,
        keep: bool,
        prepared: Option<crate::verdicts::events::Prepared>,
    ) -> Option<Entry> {
        let Exchange { request, response, scripted, facts } = exchange;
        let prepared = match prepared {
            Some(prepared) if !keep && self.background.is_some() => {
                let seq = self.open(sender)?;
                // Borrowed apart, so that the sender is looked up once more, not thrice.
                let Journals { how: Some(how), background: Some(background), senders, .. } = self else { return None };
                let j = senders.get_mut(sender)?;
                j.next_seq = seq + 1;
                let w = Waiting {
                    seq,
                    stamp,
                    connection: connection.map(|c| c.0),
                    connection_opened_us: connection.map(|c| c.1),
                    exchange: Packed::of(&request, response),
                    // Taken from a request the caller gave up (copied once more into the queue).
                    body: match request {
                        std::borrow::Cow::Owned(r) => r.body,
                        std::borrow::Cow::Borrowed(r) => r.body.clone(),
                    },
                    answer: prepared.answer,
                    scripted,
                    facts,
                };
                if let Some(w) = background.defer(&j.cell, w) {
                    // Over a bound: taken in now, after what waits.
                    w.journal(how, &mut j.cell.caught_up(how, Some(background.bytes())));
                }
                return None;
            }
            prepared => prepared,
        };
        let what = What::Http {
            request: match prepared.is_some() && !keep {
                true => request_message_cut(&request),
                false => request_message(&request),
            },
            response: response_message(response),
            scripted,
            facts: Arc::new(facts.facts()),
        };
        self.record(sender, stamp, connection, what, keep, prepared)
    }

    /// Takes an entry made before (a state file's), grading it as it was then.
    pub fn restore(&mut self, sender: &str, entry: Entry) {
        if self.open(sender).is_some() {
            self.take(sender, entry, None);
        }
    }

    /// Makes room for `sender`'s journal if it has none, counts a write to it, and hands out
    /// its next sequence number; `None` when nothing is journaled.
    fn open(&mut self, sender: &str) -> Option<u64> {
        self.how.as_ref()?;
        if !self.senders.contains_key(sender) {
            if self.senders.len() >= self.caps.senders {
                self.evict_one();
            }
            // Where an evicted journal of the sender ended, if one did.
            let start = self.gone.get(sender).map_or(0, |r| r.entries);
            // The sender's name is copied only for its first entry.
            self.senders.insert(sender.to_string(), SenderJournal { next_seq: start, start, ..Default::default() });
        }
        self.writes += 1;
        let j = self.senders.get_mut(sender).expect("inserted above");
        j.touched = self.writes;
        Some(j.next_seq)
    }

    fn take(&mut self, sender: &str, entry: Entry, prepared: Option<crate::verdicts::events::Prepared>) {
        let Journals { how: Some(how), background, senders, .. } = self else { return };
        let Some(j) = senders.get_mut(sender) else { return };
        j.next_seq = j.next_seq.max(entry.seq + 1);
        j.cell.caught_up(how, background.as_ref().map(Background::bytes)).take(how, entry, prepared);
    }

    fn evict_one(&mut self) {
        let Some(oldest) = self.senders.iter().min_by_key(|(_, j)| j.touched).map(|(s, _)| s.clone()) else {
            return;
        };
        // Judged as of its last entry: what it had found is kept, merged with what an
        // earlier eviction of the same sender had.
        // Kept clean or not: where its sequence numbers ended is where a return goes on.
        if let Some(before) = self.verdicts_at_last(&oldest) {
            self.gone.insert(oldest.clone(), before);
        }
        self.senders.remove(&oldest);
        self.evicted += 1;
    }

    fn verdicts_at_last(&self, sender: &str) -> Option<Remains> {
        let how = self.how.as_ref()?;
        let j = self.senders.get(sender)?;
        let kept = &mut *self.kept(how, j);
        let last = kept.entries.back().map(Stored::stamp).unwrap_or_default();
        let count = JournalCount { entries: j.next_seq - j.start, dropped: kept.dropped, evicted_entries: 0 };
        let mut v = kept.grading.verdicts(&how.book, sender, last, count);
        if let Some(earlier) = self.gone.get(sender) {
            v.carry(earlier);
        }
        Some(Remains::of(&v))
    }

    /// `sender`'s journal from the cursor `after` (or from its oldest kept entry).
    pub fn view(&self, sender: &str, after: Option<u64>) -> Option<JournalView> {
        let how = self.how.as_ref()?;
        let Some(j) = self.senders.get(sender) else {
            // Evicted and not back: nothing kept, and the cursor stays where its journal ended.
            let reached = self.gone.get(sender)?.entries;
            let dropped = reached.saturating_sub(after.unwrap_or(0));
            return Some(JournalView { entries: Vec::new(), next: reached, dropped });
        };
        let kept = self.kept(how, j);
        let first = kept.entries.front().map_or(j.next_seq, Stored::seq);
        let from = after.unwrap_or(0).max(first);
        let entries = kept.entries.iter().filter(|e| e.seq() >= from).map(|e| e.entry().to_json()).collect();
        // What an evicted journal of the sender held is gone too.
        let gone = kept.dropped + j.start;
        let dropped = match after {
            None => gone,
            Some(a) => first.saturating_sub(a).min(gone),
        };
        Some(JournalView { entries, next: j.next_seq, dropped })
    }

    /// Every app-server rule's verdict for `sender` as of `now` (a sender that has sent
    /// nothing has exercised no rule).
    pub fn verdicts(&mut self, sender: &str, now: Stamp) -> Option<Verdicts> {
        self.verdicts_at(sender, now, false)
    }

    /// `sender`'s verdicts as if every window had closed (an open retry or ack is judged as
    /// missed), from a copy of its grading: the journal goes on as it was.
    pub fn settled_verdicts(&self, sender: &str) -> Option<Verdicts> {
        self.verdicts_at(sender, Stamp::SETTLED, true)
    }

    /// Verdicts as of `now`, from the grading itself or, `on_copy`, from a copy of it.
    fn verdicts_at(&self, sender: &str, now: Stamp, on_copy: bool) -> Option<Verdicts> {
        let how = self.how.as_ref()?;
        let book = &how.book;
        let mut v = match self.senders.get(sender) {
            Some(j) => {
                let mut kept = self.kept(how, j);
                let count = JournalCount { entries: j.next_seq - j.start, dropped: kept.dropped, evicted_entries: 0 };
                match on_copy {
                    true => kept.grading.clone().verdicts(book, sender, now, count),
                    false => kept.grading.verdicts(book, sender, now, count),
                }
            }
            None => Grading::default().verdicts(book, sender, now, JournalCount::default()),
        };
        if let Some(before) = self.gone.get(sender) {
            v.carry(before);
        }
        Some(v)
    }

    /// How long a settled reading of `sender`'s verdicts should wait, from `now_wall_ms`, so
    /// that no copy it judges unacked is one whose ack, or whose connection's close, is
    /// still on its way: the youngest awaited copy's age up to its rule's `in_flight_ms`,
    /// and while any copy awaits its ack, at least [`SETTLE_QUIET_MS`].
    pub fn settle_wait_ms(&self, sender: &str, now_wall_ms: u64) -> Option<u64> {
        let how = self.how.as_ref()?;
        let until = self.kept(how, self.senders.get(sender)?).grading.in_flight_until(&how.book)?;
        Some(until.saturating_sub(now_wall_ms).max(SETTLE_QUIET_MS))
    }

    /// The entries `sender`'s journal still holds.
    pub fn entries(&self, sender: &str) -> Vec<Entry> {
        let (Some(how), Some(j)) = (&self.how, self.senders.get(sender)) else { return Vec::new() };
        self.kept(how, j).entries.iter().map(|e| e.entry().into_owned()).collect()
    }

    /// The senders with a journal, or whose evicted journal had found violations, in no
    /// order.
    pub fn senders(&self) -> Vec<String> {
        let mut out: Vec<String> = self.senders.keys().cloned().collect();
        let found = |s: &&String| self.gone.get(*s).is_some_and(|r| !r.violated.is_empty());
        out.extend(self.gone.keys().filter(|s| !self.senders.contains_key(*s)).filter(found).cloned());
        out
    }

    pub fn rulebook(&self) -> Option<&Rulebook> {
        self.how.as_ref().map(|h| &*h.book)
    }

    /// What a state file's snapshot keeps of them.
    pub fn snapshot(&self) -> Value {
        // Every journal caught up: what waits for the grader's thread is in the snapshot.
        if let Some(how) = &self.how {
            for j in self.senders.values() {
                drop(self.kept(how, j));
            }
        }
        json!({ "senders": &self.senders, "writes": self.writes, "evicted": self.evicted, "gone": &self.gone })
    }

    pub fn restore_snapshot(&mut self, v: Value) -> Result<(), String> {
        #[derive(Deserialize)]
        struct File {
            senders: HashMap<String, SenderJournal>,
            writes: u64,
            evicted: u64,
            #[serde(default)]
            gone: crate::verdicts::Bounded<Remains>,
        }
        let file: File = serde_json::from_value(v).map_err(|e| e.to_string())?;
        (self.senders, self.writes, self.evicted, self.gone) = (file.senders, file.writes, file.evicted, file.gone);
        Ok(())
    }
}

/// The wall clock, as journal stamps take it.
pub fn wall_ms() -> u64 {
    crate::verdicts::entry::wall_us() / 1000
}

impl super::Reference {
    /// Every app-server rule's verdict for what `sender_id`'s app server exchanged with this
    /// reference so far (`None` for an unknown sender, or with no app-server rules).
    ///
    /// ```
    /// use gcmspec::reference::{Config, Reference};
    /// use gcmspec::wire::HttpRequest;
    ///
    /// let reference = Reference::new(Config::bundled());
    /// let sender = reference.create_sender().unwrap();
    /// let send = HttpRequest::new("POST", "/fcm/send")
    ///     .with_header("authorization", &format!("key={}", sender.server_key))
    ///     .with_json(&serde_json::json!({"to": "some-token", "time_to_live": -1}));
    /// reference.handle(&send);
    /// let verdicts = reference.verdicts(&sender.sender_id).unwrap();
    /// assert_eq!(verdicts.violated(), ["app.send.ttl-range"]);
    /// assert!(verdicts.must_violations()[0].contains("time_to_live -1"));
    /// ```
    pub fn verdicts(&self, sender_id: &str) -> Option<Verdicts> {
        self.with_model(|m| {
            if !m.has_sender(sender_id) {
                return None;
            }
            let now = Stamp::now(m.now_ms(sender_id));
            m.journals.verdicts(sender_id, now)
        })
    }

    /// `sender_id`'s journal, from the cursor `after` (as the control API shows it).
    pub fn journal(&self, sender_id: &str, after: Option<u64>) -> Option<JournalView> {
        self.with_model(|m| m.journals.view(sender_id, after))
    }

    /// The entries `sender_id`'s journal still holds (what a report cites).
    pub fn journal_entries(&self, sender_id: &str) -> Vec<Entry> {
        self.with_model(|m| m.journals.entries(sender_id))
    }

    /// The senders whose exchanges are journaled.
    pub fn journaled_senders(&self) -> Vec<String> {
        self.with_model(|m| m.journals.senders())
    }
}

#[cfg(test)]
mod eviction_tests {
    use crate::reference::{Config, Reference};
    use crate::wire::HttpRequest;
    use serde_json::json;

    #[test]
    fn a_sender_evicted_and_back_goes_on_from_its_last_sequence_number() {
        let mut config = Config::bundled();
        config.journal_caps.senders = 1;
        let reference = Reference::new(config);
        let (a, b) = (reference.create_sender().expect("a"), reference.create_sender().expect("b"));
        // `a` breaks a rule (a time to live out of range); `b` breaks none.
        let send = |key: &str, n: usize| {
            let ttl = if key == a.server_key { -1 } else { 60 };
            for _ in 0..n {
                let req = HttpRequest::new("POST", "/fcm/send")
                    .with_header("authorization", &format!("key={key}"))
                    .with_json(&json!({"to": "some-token", "time_to_live": ttl}));
                reference.handle(&req);
            }
        };
        send(&a.server_key, 5);
        send(&b.server_key, 1); // evicts a's journal
        // Evicted, its cursor stays where its journal ended (it does not go back to 0).
        for (after, next, dropped) in [(None, 5, 5), (Some(2), 5, 3), (Some(5), 5, 0), (Some(99), 5, 0)] {
            let view = reference.journal(&a.sender_id, after).expect("an evicted journal");
            assert_eq!((view.entries.len(), view.next, view.dropped), (0, next, dropped), "after {after:?}");
        }
        send(&a.server_key, 3); // and a's evicts b's
        let view = reference.journal(&a.sender_id, Some(5)).expect("a journal");
        let seqs: Vec<u64> = view.entries.iter().filter_map(|e| e["seq"].as_u64()).collect();
        assert_eq!((seqs, view.next, view.dropped), (vec![5, 6, 7], 8, 0));
        // Read from the start, the evicted five are counted as gone.
        let view = reference.journal(&a.sender_id, None).expect("a journal");
        assert_eq!((view.entries.len(), view.dropped), (3, 5));
        let v = reference.verdicts(&a.sender_id).expect("verdicts");
        assert_eq!((v.journal.entries, v.journal.evicted_entries), (3, 5));
        // A sender that broke nothing, evicted and back, goes on too.
        assert!(v.rule("app.send.ttl-range").is_some_and(|r| r.violations_total == 5 + 3));
        send(&b.server_key, 1);
        let view = reference.journal(&b.sender_id, Some(0)).expect("b's journal");
        assert_eq!((view.next, view.dropped), (2, 1));
        // Evicted twice, `a`'s violations are carried once more, their first told as it was.
        let v = reference.verdicts(&a.sender_id).expect("verdicts");
        let r = v.rule("app.send.ttl-range").expect("the rule");
        assert_eq!(r.violations_total, 8);
        let told = &r.violations[0].message;
        assert_eq!(told.matches("journal was evicted").count(), 1, "{told}");
        assert!(told.contains("8 violation(s); the first: #0 asked for time_to_live -1"), "{told}");
    }
}
