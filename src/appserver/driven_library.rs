//! A client library behind its driver (docs/client-drivers.md): a [`Client`] that asks a
//! driver process, over the contract of [`super::contract`], to make the library act, and
//! acts as the library's caller (it keeps the tokens and group keys, updated only from what
//! the library returned).
//!
//! Everything the driver does is bounded: a deadline on its hello and on every reply, a cap
//! on a line and on the stderr kept, and a driver that is late, exits or breaks the contract
//! is ended (its whole process group) and said, never waited on. Requests are written by a
//! thread of their own, so that a driver that stops reading its stdin blocks that thread
//! until the deadline ends the driver, never the run.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::contract::{self, Hello, Message, Op, Recipient, Reply, Request, Returned};
use super::store::Store;
use super::{Client, ClientError, Command, Outgoing, To, Via};
use crate::driver::{Sender, Target};
use crate::wire::HttpRequest;

/// Bytes of a driver's stderr kept for a report (its end).
const STDERR_KEPT: usize = 8 * 1024;
/// Lines of the conversation kept for a report, and bytes of each.
const TRANSCRIPT_LINES: usize = 200;
const TRANSCRIPT_LINE_BYTES: usize = 2048;

/// How to start a driver: a shell command, with the endpoints in its environment.
#[derive(Debug, Clone)]
pub struct DriverCommand {
    pub command: String,
    /// `GCMSPEC_HTTP_URL`, `GCMSPEC_XMPP_HOST`, ...: the same for every case.
    pub env: Vec<(String, String)>,
    /// How long its hello and each reply may take.
    pub timeout: Duration,
    /// Cases in which the driver broke down (late, exited, or left the contract): shared by
    /// every case of a run, for its exit code.
    pub breakdowns: Arc<AtomicUsize>,
}

impl DriverCommand {
    /// A driver started by `command` (a shell command line).
    pub fn new(command: impl Into<String>, env: Vec<(String, String)>, timeout: Duration) -> DriverCommand {
        DriverCommand { command: command.into(), env, timeout, breakdowns: Arc::default() }
    }

    /// In how many cases the driver broke down so far.
    pub fn breakdowns(&self) -> usize {
        self.breakdowns.load(Ordering::Relaxed)
    }

    /// Starts the driver once (for `sender`, as every start is) to read its hello line,
    /// and ends it.
    pub fn hello(&self, sender: &Sender) -> Result<Hello, String> {
        let env = [("GCMSPEC_SENDER_ID", sender.id.as_str()), ("GCMSPEC_API_KEY", sender.key.as_str())];
        let process = Running::start(self, &env)?;
        let hello = process.hello.clone();
        drop(process);
        Ok(hello)
    }

    /// A fresh driver process for one case, for `sender`.
    pub fn start(&self, target: Arc<dyn Target>, sender: &Sender, case: &str) -> Result<DrivenLibrary, String> {
        let env = [
            ("GCMSPEC_SENDER_ID", sender.id.as_str()),
            ("GCMSPEC_API_KEY", sender.key.as_str()),
            ("GCMSPEC_CASE", case),
        ];
        let process = Running::start(self, &env).inspect_err(|_| {
            self.breakdowns.fetch_add(1, Ordering::Relaxed);
        })?;
        Ok(DrivenLibrary {
            hello: process.hello.clone(),
            process: Some(process),
            target,
            sender: sender.clone(),
            store: Store::default(),
            next_id: 0,
            transcript: Arc::new(Mutex::new(Vec::new())),
            ended: None,
            breakdowns: self.breakdowns.clone(),
        })
    }
}

/// A driver process: its stdin, its stdout's lines (read by a thread, so a wait has a
/// deadline), the end of its stderr.
struct Running {
    child: Child,
    /// To the thread that writes its stdin; dropped to close it.
    stdin: Option<mpsc::Sender<String>>,
    lines: Receiver<Result<String, String>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    hello: Hello,
    timeout: Duration,
}

impl Running {
    fn start(driver: &DriverCommand, extra: &[(&str, &str)]) -> Result<Running, String> {
        let mut process = Process::new("sh");
        process
            .arg("-c")
            .arg(&driver.command)
            .env("GCMSPEC_CONTRACT", contract::CONTRACT)
            .envs(driver.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group, so that ending it ends what it started (node under a shell).
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut process, 0);
        let mut child = process.spawn().map_err(|e| format!("starting the driver `{}`: {e}", driver.command))?;
        let stdin = child.stdin.take().map(|pipe| {
            let (tx, rx) = mpsc::channel::<String>();
            std::thread::spawn(move || write_lines(pipe, rx));
            tx
        });
        let stdout = child.stdout.take().expect("piped");
        let stderr_pipe = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || read_lines(stdout, tx));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let kept = stderr.clone();
        std::thread::spawn(move || keep_tail(stderr_pipe, kept));
        let mut running = Running {
            child,
            stdin,
            lines,
            stderr,
            hello: Hello { contract: String::new(), library: String::new(), version: String::new(), supports: vec![] },
            timeout: driver.timeout,
        };
        let first = running.next_line(Instant::now() + driver.timeout, "hello line")?;
        let hello: Hello = serde_json::from_str(&first)
            .map_err(|e| running.broke(&format!("its first JSON line is not a hello ({e}): {}", clip(&first))))?;
        if let Some(problem) = hello.problem() {
            return Err(running.broke(&problem));
        }
        running.hello = hello;
        Ok(running)
    }

    /// The next line that is a JSON object (anything else a library printed is skipped),
    /// before `deadline`.
    fn next_line(&mut self, deadline: Instant, waiting_for: &str) -> Result<String, String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(Ok(line)) if serde_json::from_str::<serde_json::Map<String, Value>>(&line).is_ok() => {
                    return Ok(line);
                }
                Ok(Ok(_)) => continue,
                Ok(Err(why)) => return Err(self.broke(&why)),
                Err(RecvTimeoutError::Timeout) => {
                    let why = format!("it gave no {waiting_for} within {:.0} s", self.timeout.as_secs_f64());
                    return Err(self.broke(&why));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.end();
                    let status = self.child.try_wait().ok().flatten().map(|s| s.to_string()).unwrap_or_default();
                    return Err(self.said(&format!("it exited ({status}) before {waiting_for}")));
                }
            }
        }
    }

    /// Ends the driver and says why, with the end of its stderr.
    fn broke(&mut self, why: &str) -> String {
        self.end();
        self.said(why)
    }

    fn said(&self, why: &str) -> String {
        let stderr = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        let tail = String::from_utf8_lossy(&stderr);
        let tail = tail.trim();
        if tail.is_empty() {
            format!("the driver: {why}")
        } else {
            format!("the driver: {why}; its stderr ends:\n{tail}")
        }
    }

    /// Hands a line to the writing thread: it never blocks here; a driver that does not read
    /// is found by the reply's deadline.
    fn send(&mut self, line: &str) -> Result<(), String> {
        let Some(stdin) = self.stdin.as_ref() else { return Err("the driver has ended".into()) };
        stdin.send(format!("{line}\n")).map_err(|_| self.said("it closed its stdin"))
    }

    /// Closes its stdin (a driver exits at its end), gives it a moment, then ends its group.
    fn end(&mut self) {
        self.stdin = None;
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        kill_group(&mut self.child);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.end();
    }
}

fn kill_group(child: &mut Child) {
    #[cfg(unix)]
    // SAFETY: kill(2) with a negative pid signals the process group we made at spawn; it
    // touches no memory of ours.
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Writes each line to the driver's stdin until it closes it or the lines end.
fn write_lines(mut stdin: std::process::ChildStdin, lines: Receiver<String>) {
    for line in lines {
        if stdin.write_all(line.as_bytes()).and_then(|_| stdin.flush()).is_err() {
            return;
        }
    }
}

/// Reads stdout a line at a time, each at most [`contract::MAX_LINE`] bytes.
fn read_lines(stdout: impl Read, tx: mpsc::Sender<Result<String, String>>) {
    let mut reader = BufReader::new(stdout);
    loop {
        let mut buf = Vec::new();
        match (&mut reader).take(contract::MAX_LINE as u64 + 1).read_until(b'\n', &mut buf) {
            Ok(0) => return,
            Ok(_) if buf.len() > contract::MAX_LINE => {
                let _ = tx.send(Err(format!("it wrote a line longer than {} bytes", contract::MAX_LINE)));
                return;
            }
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                if tx.send(Ok(line)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(format!("reading its output: {e}")));
                return;
            }
        }
    }
}

fn keep_tail(mut stderr: impl Read, kept: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf) {
        if n == 0 {
            return;
        }
        let mut k = kept.lock().unwrap_or_else(|e| e.into_inner());
        k.extend_from_slice(&buf[..n]);
        if k.len() > STDERR_KEPT {
            let cut = k.len() - STDERR_KEPT;
            k.drain(..cut);
        }
    }
}

fn clip(s: &str) -> String {
    match s.char_indices().nth(TRANSCRIPT_LINE_BYTES / 4) {
        Some((i, _)) if s.len() > TRANSCRIPT_LINE_BYTES => format!("{}...", &s[..i]),
        _ => s.to_string(),
    }
}

/// The conversation with a driver, shared with whoever reports on it.
pub type Transcript = Arc<Mutex<Vec<String>>>;

/// A library behind its driver, as one case's app server.
pub struct DrivenLibrary {
    hello: Hello,
    process: Option<Running>,
    target: Arc<dyn Target>,
    sender: Sender,
    store: Store,
    next_id: u64,
    transcript: Transcript,
    /// Why the driver can be asked nothing more.
    ended: Option<String>,
    breakdowns: Arc<AtomicUsize>,
}

impl DrivenLibrary {
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    fn supports(&self, ability: &str) -> bool {
        self.hello.supports.iter().any(|s| s == ability)
    }

    /// The conversation so far: `> request` and `< reply` lines (clipped, the newest kept).
    pub fn transcript(&self) -> Transcript {
        self.transcript.clone()
    }

    fn note(&self, line: String) {
        let mut t = self.transcript.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() == TRANSCRIPT_LINES {
            t.remove(0);
        }
        t.push(clip(&line));
    }

    /// Asks the driver, and waits for its reply.
    fn ask(&mut self, op: Op) -> Result<Value, ClientError> {
        if let Some(why) = &self.ended {
            return Err(ClientError::Broken(why.clone()));
        }
        self.next_id += 1;
        let id = self.next_id;
        let line = serde_json::to_string(&Request { id, op }).expect("a request is plain data");
        self.note(format!("> {line}"));
        let process = self.process.as_mut().expect("present until ended");
        let deadline = Instant::now() + process.timeout;
        let answer = process.send(&line).and_then(|_| {
            loop {
                let line = process.next_line(deadline, &format!("reply to request {id}"))?;
                let reply: Reply = match serde_json::from_str(&line) {
                    Ok(r) => r,
                    Err(e) => {
                        break Err(
                            process.broke(&format!("its reply is not one of the contract ({e}): {}", clip(&line)))
                        );
                    }
                };
                if reply.id == id {
                    break Ok((line, reply));
                }
                if reply.id > id || reply.id == 0 {
                    break Err(process.broke(&format!("it replied to request {}, which was not asked", reply.id)));
                }
                // A reply to an earlier request, late: the driver went on after its deadline.
            }
        });
        let (line, reply) = match answer {
            Ok(a) => a,
            Err(why) => {
                self.note(format!("! {why}"));
                self.ended = Some(why.clone());
                self.process = None;
                self.breakdowns.fetch_add(1, Ordering::Relaxed);
                return Err(ClientError::Broken(why));
            }
        };
        self.note(format!("< {line}"));
        match reply {
            Reply { unsupported: Some(why), .. } => Err(ClientError::Unsupported(why)),
            Reply { raised: Some(what), .. } => Err(ClientError::Failed(format!("the library raised: {what}"))),
            Reply { returned, .. } => Ok(returned.unwrap_or(Value::Null)),
        }
    }

    /// The store follows what a send returned: canonical ids replace tokens, NotRegistered
    /// deletes them, a group's key is kept.
    fn learn(&mut self, returned: &Value, group: Option<&str>) {
        let Ok(r) = serde_json::from_value::<Returned>(returned.clone()) else { return };
        for t in &r.results {
            if t.gone() {
                self.store.forget(&t.token, None);
            } else if let Some(c) = t.canonical.as_deref().filter(|c| *c != t.token) {
                self.store.forget(&t.token, Some(c.to_string()));
            }
        }
        if let (Some(name), Some(key)) = (group, r.notification_key.as_deref()) {
            self.store.keep_key(name, key);
        }
    }

    fn recipient(&self, to: &To) -> Result<Recipient, ClientError> {
        Ok(match to {
            To::Token(t) => Recipient::Token(
                self.store
                    .token(t)
                    .ok_or_else(|| ClientError::Failed("not sent: the caller deleted the token".into()))?,
            ),
            To::Tokens(ts) => Recipient::Tokens(ts.iter().filter_map(|t| self.store.token(t)).collect()),
            To::Key(k) => Recipient::NotificationKey(k.clone()),
            To::Group { user, app } => {
                let name = group_name(user, app.as_deref());
                let key = self.store.key(&name).ok_or_else(|| {
                    ClientError::Failed(format!("not sent: the library returned no notification_key for {name:?}"))
                })?;
                Recipient::NotificationKey(key.clone())
            }
        })
    }

    /// Group management: through the library when it offers it, else by the caller's own
    /// request (correct, so that the case judges only the library's sends).
    fn manage(&mut self, op: &str, user: &str, app: Option<&str>, tokens: &[String]) -> Result<Value, ClientError> {
        let name = group_name(user, app);
        let tokens: Vec<String> = tokens.iter().filter_map(|t| self.store.token(t)).collect();
        let key = self.store.key(&name).cloned();
        if !self.supports("group-management") {
            return self.manage_directly(op, &name, key, tokens);
        }
        let (notification_key_name, notification_key) = (name.clone(), key);
        let request = match op {
            "create" => Op::CreateGroup { notification_key_name, tokens },
            "add" => Op::AddToGroup { notification_key_name, notification_key, tokens },
            _ => Op::RemoveFromGroup { notification_key_name, notification_key, tokens },
        };
        let returned = self.ask(request)?;
        self.learn(&returned, Some(&name));
        Ok(returned)
    }

    fn manage_directly(
        &mut self,
        op: &str,
        name: &str,
        key: Option<String>,
        tokens: Vec<String>,
    ) -> Result<Value, ClientError> {
        let mut body = json!({ "operation": op, "notification_key_name": name, "registration_ids": tokens });
        if let Some(k) = key.filter(|_| op != "create") {
            body["notification_key"] = json!(k);
        }
        let req = HttpRequest::new("POST", "/gcm/notification")
            .with_header("authorization", &format!("key={}", self.sender.key))
            .with_header("project_id", &self.sender.id)
            .with_json(&body);
        let resp = self.target.exchange(&req).map_err(|e| ClientError::Failed(e.to_string()))?;
        let answer = resp.body_json().unwrap_or(Value::Null);
        match answer["notification_key"].as_str() {
            Some(k) if resp.status == 200 => {
                self.store.keep_key(name, k);
                Ok(json!({ "notification_key": k }))
            }
            _ => Err(ClientError::Failed(format!("{op} {name:?} (by the caller): {} {answer}", resp.status))),
        }
    }
}

/// A group's name: the user's, and the app's when the app server keeps several apart (the
/// reference client's naming, so that both make the same groups).
pub fn group_name(user: &str, app: Option<&str>) -> String {
    match app {
        Some(app) => format!("{user}-{app}"),
        None => user.to_string(),
    }
}

fn message(m: &Outgoing) -> Message {
    Message {
        data: m.data.clone(),
        collapse_key: m.collapse_key.clone(),
        time_to_live: m.time_to_live,
        delivery_receipt_requested: m.receipt,
    }
}

impl Client for DrivenLibrary {
    fn describe(&self) -> String {
        format!("{} {}", self.hello.library, self.hello.version)
    }

    fn run(&mut self, command: &Command) -> Result<Value, ClientError> {
        match command {
            Command::Send { to, message: m, via } => {
                let to = self.recipient(to)?;
                let returned = self.ask(Op::Send { to, via: *via, message: message(m) })?;
                self.learn(&returned, None);
                Ok(returned)
            }
            Command::CreateGroup { user, app, tokens } => self.manage("create", user, app.as_deref(), tokens),
            Command::AddToGroup { user, app, tokens } => self.manage("add", user, app.as_deref(), tokens),
            Command::RemoveFromGroup { user, app, tokens } => self.manage("remove", user, app.as_deref(), tokens),
            Command::XmppListen { seconds, connections } => {
                self.ask(Op::XmppListen { seconds: *seconds, connections: connections.unwrap_or(1) })
            }
            Command::XmppBurst { to, count, message: m } => {
                let to = self.recipient(to)?;
                let returned = self.ask(Op::XmppBurst { to, count: *count, message: message(m) })?;
                self.learn(&returned, None);
                Ok(returned)
            }
            // Every case ends with a close: a library without XMPP has nothing to close.
            Command::XmppClose if !self.supports("xmpp") || self.ended.is_some() => Ok(Value::Null),
            Command::XmppClose => self.ask(Op::XmppClose),
        }
    }
}

impl Via {
    /// The driver ability a send this way needs.
    pub fn ability(self) -> &'static str {
        match self {
            Via::Json => "http",
            Via::PlainText => "plain-text",
            Via::Xmpp => "xmpp",
        }
    }
}
