//! `serve --state FILE`: what the reference accepted, kept across a crash or a restart.
//!
//! The model is a deterministic state machine: from the same seed, the same inputs in the
//! same order give the same state, keys, ids and inboxes. So the file keeps the seed and a
//! journal of the inputs that can change the model, each written and synced before its
//! answer leaves; a restart replays them. "Accepted" therefore means "stored": a send that
//! was answered 200 (or acked over XMPP) is in the journal, and after any crash it is there.
//!
//! The store is [redb](https://docs.rs/redb): an embedded key-value store in pure Rust
//! (no C toolchain in CI), ACID with copy-on-write pages and checksummed commits, so a torn
//! write at a crash leaves the last committed transaction intact. sled was the other pure-Rust
//! candidate; it has had no stable release in years. SQLite (rusqlite) is the best-kept of
//! all, but builds C and adds a query language where a journal needs two tables.
//!
//! The journal does not grow without end: once it holds more bytes than the last snapshot
//! (and at least `--state-journal-bytes`), the model's whole state is written as a snapshot
//! in the same transaction that empties the journal. A snapshot costs the state held, and
//! comes only after at least as many journal bytes: the cost per input stays bounded, the file
//! stays within about twice the state plus the journal's allowance, and a restart reads one
//! snapshot and replays at most that allowance.
//!
//! Commits are grouped: an input is numbered and queued under the model's lock (so the
//! journal's order is the model's), and whichever caller then reaches the file first commits
//! everything queued so far with one fsync; the others find theirs already committed.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::http::Site;
use super::model::{Message, Model, Target};
use super::{Config, Reference};
use crate::wire::HttpRequest;

/// Seed, format version and the configuration the journal was made under.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Input number -> the input, as JSON.
const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");
/// Chunk number -> a piece of the last snapshot (the model's state as JSON).
const SNAPSHOT: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshot");
/// redb takes values of any size; pieces this big keep each one well within memory.
const CHUNK: usize = 16 << 20;
/// The store's page cache: what the server's memory grows by, at most, for the file.
const CACHE_BYTES: usize = 32 << 20;
/// Bumped when an older journal could not be replayed the same way.
const FORMAT: &[u8] = b"gcmspec-state/1";

/// One thing from outside that can change the model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Input {
    /// An HTTP request (the protocol's or the control API's), body in base64.
    Http {
        method: String,
        path: String,
        query: Vec<(String, String)>,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// The sender `serve` makes at start for its banner.
    CreateSender,
    CcsConnect {
        sender: String,
    },
    CcsDisconnect {
        conn: u64,
    },
    CcsAck {
        conn: u64,
        message_id: String,
    },
    CcsTake {
        conn: u64,
    },
    XmppSend {
        sender: String,
        target: Target,
        message: Message,
    },
    /// The process started again: every XMPP connection it had is gone.
    Restarted,
    /// An exchange journaled for an app server's verdicts (the request that made it, if any,
    /// is an input of its own: this one changes only the journal).
    Observed {
        sender: String,
        entry: crate::verdicts::Entry,
    },
    /// With the machine's clock: what waits on time was looked at.
    Tick,
    /// With the machine's clock: the time the inputs after it were taken at.
    Clock {
        at_ms: u64,
    },
    /// An XMPP downstream message took a scripted nack (`hold` false) or a held ack.
    XmppScripted {
        sender: String,
        hold: bool,
    },
}

impl Input {
    pub fn http(req: &HttpRequest) -> Input {
        Input::Http {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            headers: req.headers.clone(),
            body: crate::xmpp::base64_encode(&req.body),
        }
    }

    pub fn to_request(&self) -> Option<HttpRequest> {
        match self {
            Input::Http { method, path, query, headers, body } => Some(HttpRequest {
                method: method.clone(),
                path: path.clone(),
                query: query.clone(),
                headers: headers.clone(),
                body: crate::xmpp::base64_decode(body).unwrap_or_default(),
            }),
            _ => None,
        }
    }
}

impl Reference {
    /// A reference whose accepted state is kept in `path` (docs/robustness.md): a new file
    /// starts empty; an existing one gives back everything the server it was made by had
    /// accepted, its keys and ids included.
    ///
    /// ```
    /// use gcmspec::reference::{Config, Reference};
    ///
    /// let dir = std::env::temp_dir().join(format!("gcmspec-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let file = dir.join("reference.state");
    /// let first = Reference::with_state(Config::bundled(), &file).unwrap();
    /// let sender = first.create_sender().unwrap();
    /// drop(first);
    /// // Started again on the file: the same sender, and its key still works.
    /// let again = Reference::with_state(Config::bundled(), &file).unwrap();
    /// assert_eq!(again.first_sender().unwrap().server_key, sender.server_key);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn with_state(config: Config, path: &std::path::Path) -> Result<Reference, StateError> {
        let seed = match config.seed {
            Some(s) => Seed::Fixed(s),
            None => {
                let mut bytes = [0u8; 32];
                rand::Rng::fill_bytes(&mut rand::make_rng::<rand::rngs::StdRng>(), &mut bytes);
                Seed::Drawn(bytes)
            }
        };
        let opened = StateFile::open(path, seed, &fingerprint(&config), config.state_journal_bytes)?;
        let (inputs, snapshot) = (opened.inputs, opened.snapshot);
        let reference = Reference::build(config, Some(opened.seed), Some(opened.file));
        reference.with_model(|m| {
            if let Some(bytes) = &snapshot {
                m.restore(bytes).map_err(|e| StateError::Corrupt {
                    path: path.display().to_string(),
                    at: 0,
                    why: format!("the snapshot: {e}"),
                })?;
            }
            for input in &inputs {
                if let (Input::Clock { at_ms }, Some(wall)) = (input, &reference.shared.wall) {
                    wall.pin(Some(*at_ms));
                }
                apply(m, &reference.shared.site, input);
            }
            if let Some(wall) = &reference.shared.wall {
                wall.pin(None);
            }
            Ok::<(), StateError>(())
        })?;
        // Connections open at the crash are gone: what they had not acknowledged waits again,
        // and each sender's journal says so (its graders owe nothing on a lost connection).
        reference.with_model(|m| {
            let lost = m.ccs_senders();
            reference.record(|| Input::Restarted);
            apply_restart(m);
            for (conn, sender) in lost {
                // When it opened is not kept across a restart.
                reference.journal_xmpp(m, &sender, conn, 0, crate::verdicts::What::XmppLost);
            }
        });
        Ok(reference)
    }

    /// Journals `what` on `sender`'s XMPP connection `conn` (opened at `opened_us`, wall), now
    /// on the sender's clock, and keeps the entry for the state file when there is one.
    pub(crate) fn journal_xmpp(
        &self,
        m: &mut Model,
        sender: &str,
        conn: u64,
        opened_us: u64,
        what: crate::verdicts::What,
    ) {
        let stamp = crate::verdicts::Stamp::now(m.now_ms(sender));
        let connection = Some((crate::verdicts::Conn::Xmpp(conn), opened_us));
        if let Some(entry) = m.journals.record(sender, stamp, connection, what, self.keeps_state(), None) {
            self.record(|| Input::Observed { sender: sender.to_string(), entry });
        }
    }

    /// The state file (`--state`), with how many inputs it held when opened.
    pub fn state_file(&self) -> Option<(&std::path::Path, u64)> {
        self.shared.state.as_ref().map(|s| (s.path(), s.replayed()))
    }

    /// Keeps `input` for the journal, when there is one. Call it inside [`Self::with_model`],
    /// where the journal's order is the model's.
    pub(crate) fn record(&self, input: impl FnOnce() -> Input) {
        if self.shared.state.is_some() {
            let mut tape = self.shared.tape.lock().unwrap_or_else(|e| e.into_inner());
            // With the machine's clock, the time each input was taken at goes first (once per
            // millisecond it moved), so that a replay sees the time it saw.
            if self.shared.wall.is_some() {
                let now = super::clock::WallClock::live_ms();
                if self.shared.noted_ms.swap(now, std::sync::atomic::Ordering::SeqCst) != now {
                    tape.push(Input::Clock { at_ms: now });
                }
            }
            tape.push(input());
        }
    }

    /// Applies one input through the journal.
    fn record_and<R>(&self, input: Input, f: impl FnOnce(&mut Model) -> R) -> R {
        self.with_model(|m| {
            self.record(|| input);
            f(m)
        })
    }

    /// A new sender, as `serve` makes one for its banner (kept in the journal).
    pub fn create_sender(&self) -> Result<super::model::SenderCredentials, super::model::StoreFull> {
        self.record_and(Input::CreateSender, |m| m.try_create_sender())
    }

    /// The first sender the reference knows, if any (a restarted `serve` shows it again).
    pub fn first_sender(&self) -> Option<super::model::SenderCredentials> {
        self.with_model(|m| m.first_sender())
    }

    /// Why the reference stopped taking requests, if it did (its journal could not be written).
    pub fn broken(&self) -> Option<String> {
        self.shared.broken.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What every key, token and id is drawn from: `--seed`, or 32 bytes from the OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seed {
    Fixed(u64),
    Drawn([u8; 32]),
}

impl Seed {
    pub fn rng(self) -> rand::rngs::StdRng {
        use rand::SeedableRng;
        match self {
            Seed::Fixed(s) => rand::rngs::StdRng::seed_from_u64(s),
            Seed::Drawn(bytes) => rand::rngs::StdRng::from_seed(bytes),
        }
    }

    fn to_bytes(self) -> Vec<u8> {
        match self {
            Seed::Fixed(s) => s.to_le_bytes().to_vec(),
            Seed::Drawn(bytes) => bytes.to_vec(),
        }
    }

    fn from_bytes(b: &[u8]) -> Option<Seed> {
        match b.len() {
            8 => Some(Seed::Fixed(u64::from_le_bytes(b.try_into().ok()?))),
            32 => Some(Seed::Drawn(b.try_into().ok()?)),
            _ => None,
        }
    }
}

/// What a journal's replay depends on besides its inputs: a file made under another profile,
/// other faults or other limits would not replay to the same state.
pub fn fingerprint(config: &Config) -> String {
    // The machine's clock is named (inputs then carry their times); the virtual one is not,
    // so that files made before there was a choice still open.
    let clock = if config.clock == super::ClockKind::Wall { ", clock wall" } else { "" };
    format!(
        "profile {}, limits {:?}, faults {:?}, variants {:?}, inbox limit {}, store {:?}{clock}",
        config.profile, config.limits, config.faults, config.variants, config.inbox_limit, config.store
    )
}

/// The settings two fingerprints differ in, as the flags that set them.
fn differences(was: &str, now: &str) -> String {
    const PARTS: [(&str, &str); 7] = [
        ("profile ", "--profile"),
        (", limits ", "the profile's numbers"),
        (", faults ", "--fault"),
        (", variants ", "--variant"),
        (", inbox limit ", "--inbox-limit"),
        (", store ", "the --max-* caps"),
        (", clock ", "--clock"),
    ];
    let part = |text: &str, i: usize| -> String {
        let Some(start) = text.find(PARTS[i].0) else { return String::new() };
        let rest = &text[start + PARTS[i].0.len()..];
        let end = PARTS[i + 1..].iter().filter_map(|(label, _)| rest.find(label)).min().unwrap_or(rest.len());
        rest[..end].to_string()
    };
    let differ: Vec<&str> = (0..PARTS.len()).filter(|&i| part(was, i) != part(now, i)).map(|i| PARTS[i].1).collect();
    if differ.is_empty() { "another version of gcmspec".into() } else { differ.join(", ") }
}

/// Applies one journalled input, as it was applied when it came.
pub(crate) fn apply(model: &mut Model, site: &Site, input: &Input) {
    match input {
        Input::Http { .. } => {
            if let Some(req) = input.to_request() {
                super::http::handle(model, site, &req);
            }
        }
        Input::CreateSender => {
            let _ = model.try_create_sender();
        }
        Input::CcsConnect { sender } => {
            model.ccs_connect(sender);
        }
        Input::CcsDisconnect { conn } => model.ccs_disconnect(*conn),
        Input::CcsAck { conn, message_id } => {
            let _ = model.ccs_ack(*conn, message_id);
        }
        Input::CcsTake { conn } => {
            model.ccs_take(*conn);
        }
        Input::XmppSend { sender, target, message } => {
            model.send(sender, target.clone(), message.clone());
        }
        Input::Restarted => apply_restart(model),
        Input::Observed { sender, entry } => model.journals.restore(sender, entry.clone()),
        Input::Tick => model.tick(),
        // Read by the replay, which pins the clock to it.
        Input::Clock { .. } => {}
        Input::XmppScripted { sender, hold: false } => {
            model.scripted_nack(sender);
        }
        Input::XmppScripted { sender, hold: true } => {
            model.scripted_hold(sender);
        }
    }
}

/// Every XMPP connection is gone after a restart: what each had not acknowledged is sent
/// again on the sender's next connection.
pub fn apply_restart(model: &mut Model) {
    for conn in model.ccs_connections() {
        model.ccs_disconnect(conn);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {why}")]
    Store { path: String, why: String },
    #[error(
        "state file {path} was written by a server started with other settings: {differs}; start it \
         with the settings it was made with, or give a new file"
    )]
    OtherConfig { path: String, differs: String },
    #[error("state file {path}, input {at}: {why}")]
    Corrupt { path: String, at: u64, why: String },
}

/// What the file holds when it is opened: the seed and the inputs to replay.
pub struct Opened {
    pub file: StateFile,
    pub seed: Seed,
    /// The model's state at the last compaction, if there was one.
    pub snapshot: Option<Vec<u8>>,
    pub inputs: Vec<Input>,
}

pub struct StateFile {
    path: PathBuf,
    db: Mutex<Database>,
    queue: Mutex<Vec<(u64, Vec<u8>)>>,
    /// The number the next input gets.
    next: AtomicU64,
    /// Every input below this is on disk.
    committed: AtomicU64,
    /// Inputs the file held when it was opened.
    replayed: u64,
    /// Journal bytes since the last snapshot, and that snapshot's size.
    journal_bytes: AtomicU64,
    snapshot_bytes: AtomicU64,
    /// Journal bytes that never call for a snapshot, however small the state.
    journal_allowance: u64,
}

impl StateFile {
    /// Opens (or creates) the file. A new file takes `seed` and `config`; an existing one
    /// must have been made under the same `config`, and gives back its own seed.
    pub fn open(path: &Path, seed: Seed, config: &str, journal_allowance: u64) -> Result<Opened, StateError> {
        // redb asserts (panics) on some damage, a truncated file among them: that is a
        // damaged file, said as such, not a crash.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Self::open_unguarded(path, seed, config, journal_allowance)
        }));
        opened.unwrap_or_else(|_| {
            Err(StateError::Store {
                path: path.display().to_string(),
                why: "the file is damaged: the store gave up reading it (truncated, or overwritten?)".into(),
            })
        })
    }

    fn open_unguarded(path: &Path, seed: Seed, config: &str, journal_allowance: u64) -> Result<Opened, StateError> {
        let shown = path.display().to_string();
        let store = |e: &dyn std::fmt::Display| StateError::Store { path: shown.clone(), why: e.to_string() };
        // It holds every sender's server key: readable by its owner only.
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(path).map_err(|e| store(&e))?;
        // redb's page cache is 1 GiB unless told; the journal is written far more than read.
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(path).map_err(|e| store(&e))?;
        let (mut snapshot, mut journal_bytes, mut first) = (None, 0u64, 0u64);
        let (seed, inputs) = {
            let read = db.begin_read().map_err(|e| store(&e))?;
            match read.open_table(META) {
                Ok(meta) => {
                    let get = |k: &str| meta.get(k).ok().flatten().map(|v| v.value().to_vec());
                    if get("format").as_deref() != Some(FORMAT) {
                        return Err(store(&"not a gcmspec state file (or one of another version)"));
                    }
                    let was = String::from_utf8_lossy(&get("config").unwrap_or_default()).into_owned();
                    if was != config {
                        return Err(StateError::OtherConfig { path: shown, differs: differences(&was, config) });
                    }
                    let seed = get("seed")
                        .and_then(|s| Seed::from_bytes(&s))
                        .ok_or_else(|| store(&"the seed is missing or damaged"))?;
                    first = get("snapshot_at").and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes);
                    if let Ok(pieces) = read.open_table(SNAPSHOT) {
                        let mut whole = Vec::new();
                        for piece in pieces.iter().map_err(|e| store(&e))? {
                            whole.extend_from_slice(piece.map_err(|e| store(&e))?.1.value());
                        }
                        snapshot = (!whole.is_empty()).then_some(whole);
                    }
                    let mut inputs = Vec::new();
                    if let Ok(journal) = read.open_table(JOURNAL) {
                        for entry in journal.iter().map_err(|e| store(&e))? {
                            let (at, bytes) = entry.map_err(|e| store(&e))?;
                            journal_bytes += bytes.value().len() as u64;
                            let input = serde_json::from_slice(bytes.value()).map_err(|e| StateError::Corrupt {
                                path: shown.clone(),
                                at: at.value(),
                                why: e.to_string(),
                            })?;
                            inputs.push(input);
                        }
                    }
                    (seed, inputs)
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {
                    drop(read);
                    let write = db.begin_write().map_err(|e| store(&e))?;
                    {
                        let mut meta = write.open_table(META).map_err(|e| store(&e))?;
                        meta.insert("format", FORMAT).map_err(|e| store(&e))?;
                        meta.insert("config", config.as_bytes()).map_err(|e| store(&e))?;
                        meta.insert("seed", seed.to_bytes().as_slice()).map_err(|e| store(&e))?;
                        write.open_table(JOURNAL).map_err(|e| store(&e))?;
                    }
                    write.commit().map_err(|e| store(&e))?;
                    (seed, Vec::new())
                }
                Err(e) => return Err(store(&e)),
            }
        };
        let n = first + inputs.len() as u64;
        let file = StateFile {
            path: path.to_path_buf(),
            db: Mutex::new(db),
            queue: Mutex::new(Vec::new()),
            next: AtomicU64::new(n),
            committed: AtomicU64::new(n),
            replayed: n,
            journal_bytes: AtomicU64::new(journal_bytes),
            snapshot_bytes: AtomicU64::new(snapshot.as_ref().map_or(0, |s| s.len() as u64)),
            journal_allowance,
        };
        Ok(Opened { file, seed, snapshot, inputs })
    }

    /// Queues inputs in the model's order (call it under the model's lock); returns the
    /// number to wait for with [`Self::sync`].
    pub fn queue(&self, inputs: &[Input]) -> u64 {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        for input in inputs {
            let at = self.next.fetch_add(1, Ordering::SeqCst);
            let bytes = serde_json::to_vec(input).unwrap_or_default();
            self.journal_bytes.fetch_add(bytes.len() as u64, Ordering::SeqCst);
            queue.push((at, bytes));
        }
        self.next.load(Ordering::SeqCst)
    }

    /// Returns once every input numbered below `upto` is on disk.
    pub fn sync(&self, upto: u64) -> Result<(), StateError> {
        if self.committed.load(Ordering::SeqCst) >= upto {
            return Ok(());
        }
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        // Another caller may have committed ours while we waited for the file.
        if self.committed.load(Ordering::SeqCst) >= upto {
            return Ok(());
        }
        let batch = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()));
        let Some(last) = batch.last().map(|(at, _)| *at) else { return Ok(()) };
        let store =
            |e: &dyn std::fmt::Display| StateError::Store { path: self.path.display().to_string(), why: e.to_string() };
        let write = db.begin_write().map_err(|e| store(&e))?;
        {
            let mut journal = write.open_table(JOURNAL).map_err(|e| store(&e))?;
            for (at, bytes) in &batch {
                journal.insert(*at, bytes.as_slice()).map_err(|e| store(&e))?;
            }
        }
        write.commit().map_err(|e| store(&e))?;
        self.committed.store(last + 1, Ordering::SeqCst);
        Ok(())
    }

    /// Whether the journal has grown enough to be folded into a snapshot.
    pub fn compaction_due(&self) -> bool {
        let allowance = self.journal_allowance.max(self.snapshot_bytes.load(Ordering::SeqCst));
        self.journal_bytes.load(Ordering::SeqCst) >= allowance
    }

    /// Replaces the journal with `snapshot`, the model's state after every input numbered so
    /// far (call it under the model's lock, so that none comes meanwhile). Inputs still queued
    /// are in the snapshot: they are dropped, and count as committed with it.
    pub fn compact(&self, snapshot: &[u8]) -> Result<(), StateError> {
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        let upto = self.next.load(Ordering::SeqCst);
        let store =
            |e: &dyn std::fmt::Display| StateError::Store { path: self.path.display().to_string(), why: e.to_string() };
        let write = db.begin_write().map_err(|e| store(&e))?;
        write.delete_table(JOURNAL).map_err(|e| store(&e))?;
        write.delete_table(SNAPSHOT).map_err(|e| store(&e))?;
        {
            write.open_table(JOURNAL).map_err(|e| store(&e))?;
            let mut pieces = write.open_table(SNAPSHOT).map_err(|e| store(&e))?;
            for (i, piece) in snapshot.chunks(CHUNK).enumerate() {
                pieces.insert(i as u64, piece).map_err(|e| store(&e))?;
            }
            let mut meta = write.open_table(META).map_err(|e| store(&e))?;
            meta.insert("snapshot_at", upto.to_le_bytes().as_slice()).map_err(|e| store(&e))?;
        }
        write.commit().map_err(|e| store(&e))?;
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.committed.store(upto, Ordering::SeqCst);
        self.journal_bytes.store(0, Ordering::SeqCst);
        self.snapshot_bytes.store(snapshot.len() as u64, Ordering::SeqCst);
        Ok(())
    }

    /// Journal bytes since the last snapshot, and that snapshot's size.
    pub fn sizes(&self) -> (u64, u64) {
        (self.journal_bytes.load(Ordering::SeqCst), self.snapshot_bytes.load(Ordering::SeqCst))
    }

    /// Inputs in the file (replayed and since).
    pub fn len(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Inputs the file held when it was opened (0 for a new file).
    pub fn replayed(&self) -> u64 {
        self.replayed
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A map with keys JSON cannot take (tuples), as a list of pairs.
pub(crate) mod pairs {
    use std::collections::HashMap;
    use std::hash::Hash;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(map: &HashMap<K, V>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<HashMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Eq + Hash,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Vec::<(K, V)>::deserialize(d).map(|pairs| pairs.into_iter().collect())
    }
}
