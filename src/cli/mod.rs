//! The commands, one module each, over what they share: which spec files to read and how to
//! reach a target. Terminal policy (output, exit codes, ports) stays on this side of the
//! library.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use gcmspec::catalog::Catalog;
use gcmspec::driver::{Capabilities, HttpTarget, InProcess, Sender, Target, Watched};
use gcmspec::harness;
use gcmspec::reference::{self, Fault, Faults, Reference, Variant, Variants};

pub(crate) mod client;
pub(crate) mod diff;
pub(crate) mod output;
pub(crate) mod progress;
pub(crate) mod reference_client;
pub(crate) mod replay;
pub(crate) mod rules;
pub(crate) mod run;
pub(crate) mod selection;
pub(crate) mod serve;

#[derive(Args)]
pub(crate) struct SpecArgs {
    /// Read spec files from this directory instead of the bundled ones.
    #[arg(long, value_name = "DIR")]
    specs: Option<PathBuf>,
}

/// Which server to reach, and how.
#[derive(Args)]
pub(crate) struct TargetArgs {
    /// The server to test, e.g. http://127.0.0.1:4000 (default: the in-process reference).
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    /// Server key to use when the target has no control API.
    #[arg(long, requires = "sender_id")]
    api_key: Option<String>,
    /// Sender id (project number) that goes with --api-key.
    #[arg(long, requires = "api_key")]
    sender_id: Option<String>,
    /// Break this rule in the in-process reference (repeatable): a rule id, or rule-id:what.
    #[arg(long = "fault", value_name = "FAULT", conflicts_with = "target")]
    faults: Vec<String>,
    /// Run the in-process reference in this legal variant (repeatable; `selftest --list`).
    #[arg(long = "variant", value_name = "VARIANT", conflicts_with = "target")]
    variants: Vec<String>,
    /// The target's XMPP connection server, HOST:PORT, for the XMPP rules.
    #[arg(long, value_name = "HOST:PORT", requires = "target")]
    xmpp: Option<String>,
    /// The --xmpp endpoint takes TLS from the first byte.
    #[arg(long, requires = "xmpp")]
    xmpp_tls: bool,
    /// Trust this CA certificate (PEM) for --xmpp-tls; without it any certificate is accepted.
    #[arg(long, value_name = "FILE", requires = "xmpp_tls")]
    xmpp_ca: Option<PathBuf>,
    /// The token of a target started with `gcmspec serve --control-token` (or set
    /// GCMSPEC_CONTROL_TOKEN), sent with its control-API requests.
    #[arg(long, value_name = "TOKEN", env = "GCMSPEC_CONTROL_TOKEN", hide_env_values = true, requires = "target")]
    control_token: Option<String>,
    /// Per-request timeout in seconds, for --target.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// Seconds an XMPP step waits for the server's answer.
    #[arg(long, default_value_t = 3.0, value_parser = positive_seconds)]
    xmpp_timeout: f64,
}

/// A number of seconds above zero.
pub(crate) fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds above 0")),
    }
}

impl TargetArgs {
    /// The flags that reach the same server again (for the replay commands a run prints).
    fn flags(&self) -> String {
        let mut out = String::new();
        match &self.target {
            None => {
                self.faults.iter().for_each(|f| out.push_str(&format!(" --fault {f}")));
                self.variants.iter().for_each(|v| out.push_str(&format!(" --variant {v}")));
            }
            Some(url) => out.push_str(&format!(" --target {url}")),
        }
        if let (Some(key), Some(id)) = (&self.api_key, &self.sender_id) {
            out.push_str(&format!(" --api-key {key} --sender-id {id}"));
        }
        if let Some(x) = &self.xmpp {
            out.push_str(&format!(" --xmpp {x}"));
        }
        if self.xmpp_tls {
            out.push_str(" --xmpp-tls");
        }
        if let Some(ca) = &self.xmpp_ca {
            out.push_str(&format!(" --xmpp-ca {}", ca.display()));
        }
        // The token itself is a secret a report must not carry: the command reads it from
        // the environment, where `--control-token` also looks.
        if self.control_token.is_some() {
            out.push_str(" --control-token \"$GCMSPEC_CONTROL_TOKEN\"");
        }
        out
    }
}

pub(crate) fn load(args: &SpecArgs) -> anyhow::Result<Catalog> {
    let catalog = match &args.specs {
        Some(dir) => gcmspec::bundled::catalog_from_dir(dir)?,
        None => gcmspec::bundled::catalog()?,
    };
    let problems = harness::lint(&catalog);
    if !problems.is_empty() {
        bail!("{}\n{} error(s) in the spec files", problems.join("\n"), problems.len());
    }
    Ok(catalog)
}

pub(crate) fn reference_config(
    catalog: &Catalog,
    profile: &str,
    faults: &[String],
    variants: &[String],
) -> anyhow::Result<reference::Config> {
    let p = catalog.profiles.get(profile).with_context(|| {
        format!(
            "unknown profile `{profile}` (known: {})",
            catalog.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })?;
    let _ = p;
    let mut config = reference::Config::from_catalog(catalog, profile).map_err(anyhow::Error::msg)?;
    config.faults = parse_faults(catalog, faults)?;
    config.variants = Variants::new(variants.iter().map(|v| v.parse::<Variant>()).collect::<Result<Vec<_>, _>>()?);
    Ok(config)
}

/// Faults by name: designed ones (`rule-id`, `rule-id:what`), or those the coverage model
/// generates from the catalogue (`rule@path`, `rule:param:one-over`, ...: `selftest --list`).
pub(crate) fn parse_faults(catalog: &Catalog, names: &[String]) -> anyhow::Result<Faults> {
    let (generated, _) = reference::generated::generated(catalog);
    let mut designed = Vec::new();
    let mut made = Vec::new();
    for name in names {
        match name.parse::<Fault>() {
            Ok(f) => designed.push(f),
            Err(e) => match generated.iter().find(|g| &g.name() == name) {
                Some(g) => made.push(g.clone()),
                None => return Err(e.into()),
            },
        }
    }
    Ok(Faults::new(designed).with_generated(made))
}

/// A reached target: the in-process reference (with `--fault`s) or a server at `--target`.
pub(crate) struct Connected {
    /// The target under the run's deadline (none for commands without one).
    target: Arc<Watched>,
    caps: Capabilities,
    /// What curl commands address: the target, or where `gcmspec serve` listens by default.
    base_url: String,
}

/// Reaches the target and asks what it offers. `deadline` covers the run from here, the
/// first request included: a target that never answers it ends the run at the deadline.
pub(crate) fn connect(
    args: &TargetArgs,
    catalog: &Catalog,
    profile: Option<&str>,
    deadline: Option<Duration>,
) -> anyhow::Result<Connected> {
    let watch = |target: Arc<dyn Target>| Arc::new(Watched::new(target, deadline));
    let (target, mut caps, base_url): (Arc<Watched>, Capabilities, String) = match &args.target {
        None => {
            let profile = profile.unwrap_or(gcmspec::bundled::DEFAULT_PROFILE);
            // Nobody is judged as an app server here: the harness is the only client.
            let config = reference_config(catalog, profile, &args.faults, &args.variants)?.without_journal();
            let target = InProcess::new(Reference::new(config));
            let target = watch(Arc::new(target));
            let caps = Capabilities::probe(target.as_ref())?;
            (target, caps, "http://127.0.0.1:4000".into())
        }
        Some(url) => {
            let mut target = HttpTarget::new(url, Duration::from_secs(args.timeout))?;
            if let Some(token) = &args.control_token {
                target = target.with_control_token(token.clone());
            }
            if let Some(x) = &args.xmpp {
                let addr = std::net::ToSocketAddrs::to_socket_addrs(x.as_str())
                    .with_context(|| format!("--xmpp {x}"))?
                    .next()
                    .with_context(|| format!("--xmpp {x}: no address"))?;
                target = target.with_xmpp(addr);
                if args.xmpp_tls {
                    let ca = match &args.xmpp_ca {
                        Some(f) => {
                            Some(std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?)
                        }
                        None => None,
                    };
                    target = target.with_xmpp_tls(gcmspec::tls::client_config(ca.as_deref())?);
                }
            }
            let target = watch(Arc::new(target));
            let caps = Capabilities::probe(target.as_ref()).with_context(|| format!("probing {url}"))?;
            // Numbers the target declares for itself are checked once, not by every check.
            catalog
                .check_declared(&caps.params)
                .map_err(|why| anyhow::anyhow!("{url} declares numbers the checks cannot use: {why}"))?;
            // An XMPP endpoint that does not speak XMPP is one error, not a failure per check.
            if target.xmpp_address().is_some() {
                let wait = Duration::from_secs_f64(args.xmpp_timeout);
                gcmspec::driver::xmpp::XmppClient::probe(target.as_ref(), wait).map_err(anyhow::Error::msg)?;
            }
            (target, caps, url.trim_end_matches('/').to_string())
        }
    };
    // A control API that says it makes senders must make one: one that answers without a
    // sender (`200 {}` to everything) would fail every check in its set-up.
    if caps.has("senders") && args.target.is_some() {
        let made = gcmspec::driver::Control { target: target.as_ref(), caps: &caps }.new_sender();
        match made {
            Ok(_) => {}
            // No answer at all is the target's silence, said as such.
            Err(gcmspec::driver::ControlError::Target(e)) => {
                anyhow::bail!("the target stopped answering: making a sender (POST senders): {e}")
            }
            Err(e) => {
                caps.control.retain(|c| c == "xmpp");
                caps.params.clear();
                caps.note = Some(format!("it offers `senders` but making one failed ({e})"));
            }
        }
    }
    if let (Some(key), Some(id)) = (&args.api_key, &args.sender_id) {
        caps.static_sender = Some(Sender { id: id.clone(), key: key.clone() });
    }
    if let Some(note) = &caps.note {
        eprintln!("gcmspec: the target has no usable control API: {note}; going on without it");
    }
    Ok(Connected { target, caps, base_url })
}

pub(crate) fn run_id() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
    )
}
