//! `gcmspec serve`: the reference as a standalone server; ports and signals are chosen here.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use gcmspec::reference::{self, ConnectionPolicy, Reference};

use super::{SpecArgs, load, reference_config};

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
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) that goes with --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[arg(long)]
    profile: Option<String>,
    /// Seed for keys and tokens (default: random, so keys cannot be guessed).
    #[arg(long)]
    seed: Option<u64>,
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
    /// Answer every HTTP request this many milliseconds late, to rehearse a slow server.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    latency_ms: u64,
    /// Answer one HTTP request at a time (latency included), like a single-threaded server.
    #[arg(long)]
    one_at_a_time: bool,
    /// Open connections each listener holds at most; more are closed when accepted.
    #[arg(long, value_name = "N", default_value_t = ConnectionPolicy::default().max_connections)]
    max_connections: usize,
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
    /// Seconds a logged-in XMPP connection may send nothing (or take nothing written to it).
    #[arg(long, value_name = "SECONDS", default_value_t = ConnectionPolicy::default().idle_timeout.as_secs_f64())]
    idle_timeout: f64,
}

pub(crate) fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let catalog = load(&args.spec)?;
    let profile = args.profile.clone().unwrap_or_else(|| gcmspec::bundled::DEFAULT_PROFILE.into());
    let mut config = reference_config(&catalog, &profile, &args.faults, &args.variants)?;
    config.seed = args.seed.unwrap_or_else(random_seed);
    config.control_api = !args.without_control_api;
    config.latency = std::time::Duration::from_millis(args.latency_ms);
    config.one_at_a_time = args.one_at_a_time;
    config.inbox_limit = args.inbox_limit.max(1);
    let seconds = |s: f64| std::time::Duration::from_secs_f64(s.clamp(0.001, 86_400.0));
    config.connections = ConnectionPolicy {
        max_connections: args.max_connections.max(1),
        header_timeout: seconds(args.header_timeout),
        body_timeout: seconds(args.body_timeout),
        login_timeout: seconds(args.login_timeout),
        idle_timeout: seconds(args.idle_timeout),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
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
        let reference = Reference::new(config);
        // A sender ready to use, for clients that cannot call the control API.
        let sender = reference.with_model(|m| m.create_sender());
        println!("gcmspec reference ({profile}) listening on http://{addr}{notes}");
        println!("sender id {}, server key {}", sender.sender_id, sender.server_key);
        let xmpp = match &args.xmpp {
            Some(x) => {
                let l = tokio::net::TcpListener::bind(x).await.with_context(|| format!("binding {x}"))?;
                println!("XMPP connection server on {} (plain TCP)", l.local_addr()?);
                Some(l)
            }
            None => None,
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let on_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        if let Some(l) = xmpp {
            tokio::spawn(reference::xmpp::serve(l, reference.clone(), on_stop(stopped.clone())));
        }
        if let Some(x) = &args.xmpp_tls {
            let l = tokio::net::TcpListener::bind(x).await.with_context(|| format!("binding {x}"))?;
            let addr = l.local_addr()?;
            let (identity, where_) = match (&args.tls_cert, &args.tls_key) {
                (Some(cert), Some(key)) => {
                    let read =
                        |f: &PathBuf| std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()));
                    (gcmspec::tls::Identity { cert_pem: read(cert)?, key_pem: read(key)? }, cert.clone())
                }
                _ => {
                    let identity = gcmspec::tls::generate()?;
                    let path = std::env::temp_dir().join(format!("gcmspec-xmpp-{}.pem", addr.port()));
                    std::fs::write(&path, &identity.cert_pem).with_context(|| format!("writing {}", path.display()))?;
                    (identity, path)
                }
            };
            let config = gcmspec::tls::server_config(&identity)?;
            println!("XMPP connection server on {addr} (direct TLS), certificate {}", where_.display());
            tokio::spawn(reference::xmpp::serve_tls(l, reference.clone(), config, on_stop(stopped.clone())));
        }
        let http = tokio::spawn(reference::serve(listener, reference, on_stop(stopped)));
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
        http.await??;
        Ok(ExitCode::SUCCESS)
    })
}

/// Unpredictable without a dependency: std's hasher keys come from the OS.
pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish()
}
