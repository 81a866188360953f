//! `gcmspec serve`: the reference as a standalone server; ports and signals are chosen here.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use gcmspec::reference::journal::JournalCaps;
use gcmspec::reference::{self, ClockKind, ConnectionPolicy, Reference, StoreCaps};

use super::{SpecArgs, load, reference_config};

use super::output::say;

#[derive(Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Address for HTTP.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4000")]
    http: String,
    /// Address for the XMPP connection server (plain TCP); none if not given.
    #[arg(long, value_name = "ADDR")]
    xmpp: Option<String>,
    /// Address for the XMPP connection server with TLS from the first byte.
    #[arg(long, value_name = "ADDR")]
    xmpp_tls: Option<String>,
    /// Certificate (PEM) for --xmpp-tls; without it one is generated and written out.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "xmpp_tls"])]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) that goes with --tls-cert.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "xmpp_tls"])]
    tls_key: Option<PathBuf>,
    /// The revision of the documents to serve (`fcm`: 20 members per group; `gcm-2013`: 10).
    #[arg(long)]
    profile: Option<String>,
    /// Seed for keys and tokens (default: random, so keys cannot be guessed).
    #[arg(long)]
    seed: Option<u64>,
    /// Keep what the server accepts in FILE (created if missing) and take it back up from
    /// there when started again: senders, devices, groups, messages, acks. Without it, state
    /// is kept in memory only.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Journal bytes the state file keeps before it folds them into a snapshot of the whole
    /// state (once the snapshot is larger, its size instead).
    #[arg(long, value_name = "BYTES", default_value_t = reference::Config::DEFAULT_STATE_JOURNAL_BYTES, requires = "state")]
    state_journal_bytes: u64,
    /// Break this rule (repeatable), to see a client or the suite catch it: a rule id, or
    /// rule-id:what (`gcmspec selftest --list`).
    #[arg(long = "fault", value_name = "FAULT")]
    faults: Vec<String>,
    /// Behave in this legal variant (repeatable): what the documents allow, differently from
    /// the reference's defaults (`gcmspec selftest --list`).
    #[arg(long = "variant", value_name = "VARIANT")]
    variants: Vec<String>,
    /// Offer only the public protocol, as a third-party server would.
    #[arg(long)]
    without_control_api: bool,
    /// Require `Authorization: Bearer TOKEN` on every control-API request (for a reference
    /// others can reach; `gcmspec run --control-token` sends it).
    #[arg(long, value_name = "TOKEN", env = "GCMSPEC_CONTROL_TOKEN", hide_env_values = true)]
    control_token: Option<String>,
    /// Listen on addresses other machines can reach. Without it only loopback addresses
    /// are accepted: the control API lets anyone who reaches it act as any sender.
    #[arg(long)]
    allow_remote: bool,
    /// Answer every HTTP request this many milliseconds late, to rehearse a slow server.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    latency_ms: u64,
    /// Answer one HTTP request at a time (latency included), like a single-threaded server.
    #[arg(long)]
    one_at_a_time: bool,
    /// Open connections each listener holds at most; more are closed when accepted.
    #[arg(long, value_name = "N", default_value_t = ConnectionPolicy::default().max_connections, value_parser = at_least_one)]
    max_connections: usize,
    /// Logged-in XMPP connections each sender holds at most; a login past it is refused.
    #[arg(long, value_name = "N", default_value_t = ConnectionPolicy::default().max_connections_per_sender, value_parser = at_least_one)]
    max_connections_per_sender: usize,
    /// Threads that serve requests (default: one per core). The model takes one request at a
    /// time whatever this is; more threads only help while others wait on sockets. Under a
    /// load generator on the same few cores, 1 is often faster (docs/performance.md).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    threads: Option<usize>,
    /// Seconds an HTTP request's headers may take, and an idle keep-alive connection may stay.
    #[arg(long, value_name = "SECONDS", default_value_t = ConnectionPolicy::default().header_timeout.as_secs_f64())]
    header_timeout: f64,
    /// Seconds an HTTP request's body may take (408 past it).
    #[arg(long, value_name = "SECONDS", default_value_t = ConnectionPolicy::default().body_timeout.as_secs_f64())]
    body_timeout: f64,
    /// Seconds from connecting to a successful XMPP login (TLS handshake included).
    #[arg(long, value_name = "SECONDS", default_value_t = ConnectionPolicy::default().login_timeout.as_secs_f64())]
    login_timeout: f64,
    /// Received messages kept per device for the control API (older ones are dropped).
    #[arg(long, value_name = "N", default_value_t = reference::Config::DEFAULT_INBOX_LIMIT)]
    inbox_limit: usize,
    /// Received messages kept over every device: past it, a device that receives keeps only
    /// its newest one.
    #[arg(long, value_name = "N", default_value_t = StoreCaps::default().received)]
    max_received: u64,
    /// Messages stored for devices that cannot take them yet, over every device: past it, a
    /// message that would wait is refused `Unavailable`.
    #[arg(long, value_name = "N", default_value_t = StoreCaps::default().stored)]
    max_stored: u64,
    /// Messages one sender has stored for its devices at most.
    #[arg(long, value_name = "N", default_value_t = StoreCaps::default().stored_per_sender)]
    max_stored_per_sender: u64,
    /// Senders the reference stores at most (507 past it).
    #[arg(long, value_name = "N", default_value_t = StoreCaps::default().senders)]
    max_senders: usize,
    /// App instances (registration ids, old ones included) it stores at most.
    #[arg(long, value_name = "N", default_value_t = StoreCaps::default().instances)]
    max_devices: usize,
    /// App instances registered for one sender at most.
    #[arg(long, value_name = "N", default_value_t = StoreCaps::default().instances_per_sender)]
    max_devices_per_sender: usize,
    /// Device groups it stores at most.
    #[arg(long, value_name = "N", default_value_t = StoreCaps::default().groups)]
    max_groups: usize,
    /// Device groups of one sender at most.
    #[arg(long, value_name = "N", default_value_t = StoreCaps::default().groups_per_sender)]
    max_groups_per_sender: usize,
    /// id_tokens minted for one sender at most.
    #[arg(long, value_name = "N", default_value_t = StoreCaps::default().id_tokens_per_sender)]
    max_id_tokens_per_sender: usize,
    /// Seconds a logged-in XMPP connection may send nothing (or take nothing written to it).
    #[arg(long, value_name = "SECONDS", default_value_t = ConnectionPolicy::default().idle_timeout.as_secs_f64())]
    idle_timeout: f64,
    /// Which time drives throttling, time to live and the timing of retries: `virtual` moves
    /// only when a sender's clock is advanced (control API); `wall` is the machine's.
    #[arg(long, value_enum, default_value = "virtual")]
    clock: Clock,
    /// At shutdown, write each journaled sender's app-server verdicts to DIR as
    /// SENDER.json, SENDER.xml (JUnit) and SENDER.html, in the formats `gcmspec run` writes.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Senders whose exchanges are journaled and graded at once; past it, the least recently
    /// active one's journal goes. 0: journal and grade nothing (no verdicts).
    #[arg(long, value_name = "N", default_value_t = JournalCaps::default().senders)]
    max_journals: usize,
    /// Entries one sender's journal shows (older ones are dropped, and were graded). 0: it
    /// shows none, and every exchange is still graded.
    #[arg(long, value_name = "N", default_value_t = JournalCaps::default().entries)]
    journal_entries: usize,
}

/// A count of at least 1 (a listener that takes no connection serves nobody).
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number of at least 1")),
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Clock {
    Virtual,
    Wall,
}

/// Connections cost descriptors: an HTTP listener holds up to its cap, an XMPP listener up
/// to twice its cap (evicted connections closing) plus a duplicate for each connection not
/// logged in (half its cap). The soft limit is often 1024 where the hard one is far higher:
/// raise it to the hard one, as servers do, and say so when even that is short.
#[cfg(unix)]
fn descriptors_for(max_connections: usize, listeners: usize) {
    let xmpp = listeners.saturating_sub(1) as libc::rlim_t;
    let cap = max_connections as libc::rlim_t;
    let needed = cap + xmpp * (2 * cap + cap.div_ceil(2)) + 64;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid rlimit for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: a valid rlimit, read above; a refusal leaves the old limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    if limit.rlim_cur < needed {
        eprintln!(
            "gcmspec: warning: {} file descriptors may be too few for --max-connections {max_connections} on {listeners} listeners (up to {needed}); past them, connections are refused",
            limit.rlim_cur
        );
    }
}

#[cfg(not(unix))]
fn descriptors_for(_max_connections: usize, _listeners: usize) {}

pub(crate) fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // redb asserts on some damage to a state file; the library catches that and says the file
    // is damaged, so the assertion's own message is only noise here.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.location().is_some_and(|l| l.file().contains("redb")) {
            default_hook(info);
        }
    }));
    let catalog = load(&args.spec)?;
    let profile = args.profile.clone().unwrap_or_else(|| gcmspec::bundled::DEFAULT_PROFILE.into());
    let mut config = reference_config(&catalog, &profile, &args.faults, &args.variants)?;
    config.seed = args.seed;
    config.control_api = !args.without_control_api;
    config.control_token = args.control_token.clone().filter(|t| !t.is_empty());
    let mut remote = false;
    for addr in [Some(&args.http), args.xmpp.as_ref(), args.xmpp_tls.as_ref()].into_iter().flatten() {
        remote |= reachable_from_elsewhere(addr, args.allow_remote)?;
    }
    if remote && config.control_api && config.control_token.is_none() {
        eprintln!(
            "gcmspec: warning: the control API has no --control-token: anyone who reaches it can act as any sender"
        );
    }
    config.latency = std::time::Duration::from_millis(args.latency_ms);
    config.one_at_a_time = args.one_at_a_time;
    config.inbox_limit = args.inbox_limit.max(1);
    config.state_journal_bytes = args.state_journal_bytes;
    config.store = StoreCaps {
        senders: args.max_senders.max(1),
        received: args.max_received,
        stored: args.max_stored,
        stored_per_sender: args.max_stored_per_sender,
        instances: args.max_devices,
        instances_per_sender: args.max_devices_per_sender,
        groups: args.max_groups,
        groups_per_sender: args.max_groups_per_sender,
        id_tokens_per_sender: args.max_id_tokens_per_sender,
    };
    config.clock = match args.clock {
        Clock::Virtual => ClockKind::Virtual,
        Clock::Wall => ClockKind::Wall,
    };
    config.journal_caps =
        JournalCaps { senders: args.max_journals, entries: args.journal_entries, ..JournalCaps::default() };
    if let Some(dir) = &args.report {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let seconds = |s: f64| std::time::Duration::from_secs_f64(s.clamp(0.001, 86_400.0));
    config.connections = ConnectionPolicy {
        max_connections: args.max_connections.max(1),
        max_connections_per_sender: args.max_connections_per_sender.max(1),
        header_timeout: seconds(args.header_timeout),
        body_timeout: seconds(args.body_timeout),
        login_timeout: seconds(args.login_timeout),
        idle_timeout: seconds(args.idle_timeout),
    };
    let listeners = 1 + usize::from(args.xmpp.is_some()) + usize::from(args.xmpp_tls.is_some());
    descriptors_for(config.connections.max_connections, listeners);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        runtime.worker_threads(n.min(512));
    }
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(async {
        let stopping = stop_signal();
        let listener =
            tokio::net::TcpListener::bind(&args.http).await.with_context(|| format!("binding {}", args.http))?;
        let addr = listener.local_addr()?;
        let faults: Vec<String> = config.faults.names();
        let mut notes = String::new();
        if !config.control_api {
            notes.push_str(" without the control API");
        }
        let variants: Vec<String> = config.variants.iter().map(|v| v.to_string()).collect();
        if !variants.is_empty() {
            notes.push_str(&format!(" in variants: {}", variants.join(", ")));
        }
        if !faults.is_empty() {
            notes.push_str(&format!(" with faults: {}", faults.join(", ")));
        }
        // Everything that can fail is done before the banner: a tool that reads the banner
        // takes it to mean the server is up.
        let xmpp = match &args.xmpp {
            Some(x) => Some(tokio::net::TcpListener::bind(x).await.with_context(|| format!("binding {x}"))?),
            None => None,
        };
        let mut cert_file: Option<PrivateFile> = None;
        let xmpp_tls = match &args.xmpp_tls {
            Some(x) => {
                let l = tokio::net::TcpListener::bind(x).await.with_context(|| format!("binding {x}"))?;
                let port = l.local_addr()?.port();
                let (identity, where_) = match (&args.tls_cert, &args.tls_key) {
                    (Some(cert), Some(key)) => {
                        let read =
                            |f: &PathBuf| std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()));
                        (gcmspec::tls::Identity { cert_pem: read(cert)?, key_pem: read(key)? }, cert.clone())
                    }
                    _ => {
                        let identity = gcmspec::tls::generate()?;
                        let written = PrivateFile::create(&format!("xmpp-{port}.pem"), &identity.cert_pem)?;
                        let path = written.path.clone();
                        cert_file = Some(written);
                        (identity, path)
                    }
                };
                let tls = gcmspec::tls::server_config(&identity).with_context(|| match &args.tls_cert {
                    Some(cert) => format!("--tls-cert {} with its --tls-key", cert.display()),
                    None => "the generated certificate".into(),
                })?;
                Some((l, tls, where_))
            }
            None => None,
        };
        let reference = match &args.state {
            None => Reference::new(config),
            Some(path) => Reference::with_state(config, path)?,
        };
        // A sender ready to use, for clients that cannot call the control API (a restarted
        // server shows the one it made first).
        let sender = match reference.first_sender() {
            Some(sender) => sender,
            None => reference.create_sender()?,
        };
        say!("gcmspec reference ({profile}) listening on http://{addr}{notes}");
        say!("sender id {}, server key {}", sender.sender_id, sender.server_key);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let on_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        if let Some(l) = xmpp {
            say!("XMPP connection server on {} (plain TCP)", l.local_addr()?);
            tokio::spawn(reference::xmpp::serve(l, reference.clone(), on_stop(stopped.clone())));
        }
        if let Some((l, tls, where_)) = xmpp_tls {
            say!("XMPP connection server on {} (direct TLS), certificate {}", l.local_addr()?, where_.display());
            tokio::spawn(reference::xmpp::serve_tls(l, reference.clone(), tls, on_stop(stopped.clone())));
        }
        // After the listeners: tools read the first lines for the addresses.
        match (args.without_control_api, &args.control_token) {
            (true, _) => {}
            (false, Some(_)) => say!(
                "control API at http://{addr}{} (docs/control-api.md), requests need the --control-token",
                reference::control::PREFIX
            ),
            (false, None) => say!(
                "control API at http://{addr}{} (docs/control-api.md): no authentication, requests from this machine only",
                reference::control::PREFIX
            ),
        }
        let clock = match reference.clock() {
            ClockKind::Virtual => "virtual (it moves when a sender's clock is advanced)",
            ClockKind::Wall => "the machine's",
        };
        if args.max_journals == 0 {
            say!("app servers are not journaled or graded (--max-journals 0): no verdicts; clock: {clock}");
            if args.report.is_some() {
                eprintln!("gcmspec: note: --report writes no verdicts with --max-journals 0");
            }
        } else {
            say!(
                "app servers are journaled and graded: GET {}senders/SENDER/verdicts (docs/app-servers.md); clock: {clock}",
                reference::control::PREFIX
            );
        }
        match reference.state_file() {
            None => say!("state is kept in memory only: it is gone when this process ends"),
            Some((path, 0)) => say!("state is kept in {} (a new file)", path.display()),
            Some((path, n)) => {
                say!("state is kept in {}: resumed from its {n} inputs", path.display());
                if args.seed.is_some() {
                    eprintln!(
                        "gcmspec: note: {} goes on from the seed it was made with; --seed applies to a new file",
                        path.display()
                    );
                }
            }
        }
        let ticking = reference.clone();
        let clock = tokio::spawn({
            let stopped = on_stop(stopped.clone());
            async move { ticking.run_clock(stopped).await }
        });
        let http = tokio::spawn(reference::serve(listener, reference.clone(), on_stop(stopped)));
        stopping.await;
        let _ = stop.send(true);
        http.await??;
        let _ = clock.await;
        drop(cert_file);
        if let Some(dir) = &args.report {
            let written = write_reports(&reference, &catalog, &profile, &addr.to_string(), dir)?;
            say!("wrote the verdicts of {written} app server(s) to {}", dir.display());
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Each journaled sender's verdicts as JSON, JUnit and HTML in `dir`; how many senders.
fn write_reports(
    reference: &Reference,
    catalog: &gcmspec::catalog::Catalog,
    profile: &str,
    addr: &str,
    dir: &std::path::Path,
) -> anyhow::Result<usize> {
    use gcmspec::harness::{html, report::Report};
    let mut senders = reference.journaled_senders();
    senders.sort();
    for sender in &senders {
        let Some(verdicts) = reference.verdicts(sender) else { continue };
        let target = format!("the app server of sender {sender}, as the reference at http://{addr} saw it");
        let report = Report::of_verdicts(&verdicts, &reference.journal_entries(sender), &target, profile);
        let write = |ext: &str, text: String| {
            let path = dir.join(format!("{sender}.{ext}"));
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
        };
        write("json", serde_json::to_string_pretty(&report)? + "\n")?;
        write("xml", report.junit(""))?;
        let base = format!("http://{addr}");
        write("html", html::render(&report, catalog, &html::Reproduce { base_url: &base, replay_flags: "" }))?;
    }
    Ok(senders.len())
}

/// Refuses an address other machines can reach unless `--allow-remote` says so, and warns
/// when it does.
fn reachable_from_elsewhere(addr: &str, allowed: bool) -> anyhow::Result<bool> {
    let ips: Vec<std::net::IpAddr> = std::net::ToSocketAddrs::to_socket_addrs(addr)
        .with_context(|| format!("resolving {addr}"))?
        .map(|a| a.ip())
        .collect();
    if ips.iter().all(std::net::IpAddr::is_loopback) {
        return Ok(false);
    }
    if !allowed {
        anyhow::bail!(
            "refusing to listen on {addr}: other machines could reach it, and through the control API act as any \
             sender. Use a loopback address (127.0.0.1), or pass --allow-remote (with --control-token)"
        );
    }
    eprintln!("gcmspec: warning: {addr} can be reached from other machines (--allow-remote)");
    Ok(true)
}

/// A file in a directory of its own, made fresh (never one already there, nor through a
/// symlink someone planted) and readable by this user only; both go when it is dropped.
struct PrivateFile {
    dir: PathBuf,
    path: PathBuf,
}

impl PrivateFile {
    fn create(name: &str, contents: &str) -> anyhow::Result<PrivateFile> {
        use std::io::Write;
        let base = std::env::temp_dir();
        let mut attempt = 0u32;
        let dir = loop {
            let nonce: u64 = rand::RngExt::random(&mut rand::make_rng::<rand::rngs::StdRng>());
            let dir = base.join(format!("gcmspec-{nonce:016x}"));
            let mut builder = std::fs::DirBuilder::new();
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            match builder.create(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 => attempt += 1,
                Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
            }
        };
        let path = dir.join(name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options.open(&path).and_then(|mut f| f.write_all(contents.as_bytes()));
        let file = PrivateFile { dir, path };
        written.with_context(|| format!("writing {}", file.path.display()))?;
        Ok(file)
    }
}

impl Drop for PrivateFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Ctrl-C, or (on Unix) SIGTERM as `kill` and service managers send, or SIGHUP: each stops
/// serving cleanly (the generated certificate is removed). The handlers are installed when
/// this is called, not when it is first awaited: called before the banner, a signal sent as
/// soon as the banner is read is not lost to the default action (which would leave the
/// certificate behind).
fn stop_signal() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // SIGHUP too: closing the terminal it runs in stops it as cleanly.
        if let (Ok(mut int), Ok(mut term), Ok(mut hup)) =
            (signal(SignalKind::interrupt()), signal(SignalKind::terminate()), signal(SignalKind::hangup()))
        {
            return Box::pin(async move {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
            });
        }
    }
    Box::pin(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
