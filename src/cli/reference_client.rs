//! `gcmspec reference-client` (hidden): the project's own app server behind the driver
//! contract, so that `gcmspec client` can show its cases bite: correct, it passes every one;
//! with `--fault`, it breaks that one duty.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use gcmspec::appserver::contract::{self, Hello};
use gcmspec::appserver::reference_client::{ReferenceClient, Wait};
use gcmspec::appserver::speaks_contract::{self, Hides};
use gcmspec::appserver::{AppFault, AppVariant};
use gcmspec::driver::{Capabilities, Control, HttpTarget, Sender, Target};
use gcmspec::verdicts::Rulebook;

#[derive(Args)]
pub(crate) struct ReferenceClientArgs {
    /// Break this duty (repeatable): an app fault, named by its rule (`app.retry.after`).
    #[arg(long = "fault", value_name = "FAULT")]
    faults: Vec<String>,
    /// Keep the duties another way the documents allow (repeatable).
    #[arg(long = "variant", value_name = "VARIANT")]
    variants: Vec<String>,
}

pub(crate) fn reference_client(args: ReferenceClientArgs) -> anyhow::Result<ExitCode> {
    let var =
        |k: &str| std::env::var(k).with_context(|| format!("{k} is not set: this is a driver for `gcmspec client`"));
    let url = var("GCMSPEC_HTTP_URL")?;
    let sender = Sender { id: var("GCMSPEC_SENDER_ID")?, key: var("GCMSPEC_API_KEY")? };
    let mut target = HttpTarget::new(&url, Duration::from_secs(30))?;
    if let (Ok(host), Ok(port)) = (var("GCMSPEC_XMPP_HOST"), var("GCMSPEC_XMPP_PORT")) {
        let addr = format!("{host}:{port}").parse().with_context(|| format!("GCMSPEC_XMPP_HOST:PORT {host}:{port}"))?;
        target = target.with_xmpp(addr);
    }
    let target: Arc<dyn Target> = Arc::new(target);
    let profile = std::env::var("GCMSPEC_PROFILE").unwrap_or_else(|_| gcmspec::bundled::DEFAULT_PROFILE.into());
    let numbers = Rulebook::from_catalog(&gcmspec::bundled::catalog()?, &profile).map_err(anyhow::Error::msg)?.numbers;
    // On the virtual clock time passes when the sender's clock is moved, not by sleeping.
    let wait: Wait = match std::env::var("GCMSPEC_CLOCK").as_deref() {
        Ok("virtual") => {
            let caps = Capabilities::probe(&*target)?;
            let (target, id) = (target.clone(), sender.id.clone());
            Arc::new(move |d: Duration| {
                let control = Control { target: &*target, caps: &caps };
                let _ = control.advance_clock_ms(&id, d.as_millis() as u64);
            })
        }
        _ => Arc::new(std::thread::sleep),
    };
    let mut client = ReferenceClient::new(target, sender, numbers, wait);
    let mut hides = Hides::default();
    for name in &args.faults {
        let fault: AppFault = name.parse().map_err(anyhow::Error::msg)?;
        hides.canonical |= fault == AppFault::IgnoresCanonical;
        hides.not_registered |= fault == AppFault::KeepsNotRegistered;
        client = client.with_fault(fault);
    }
    for name in &args.variants {
        let Some(v) = AppVariant::ALL.iter().find(|v| v.name() == name) else {
            bail!(
                "unknown variant {name:?} (known: {})",
                AppVariant::ALL.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
            );
        };
        client = client.with_variant(*v);
    }
    let hello = Hello {
        contract: contract::CONTRACT.into(),
        library: "gcmspec-reference-client".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        supports: contract::ABILITIES.iter().map(|(a, _)| a.to_string()).collect(),
    };
    let stdin = std::io::stdin().lock();
    speaks_contract::serve(&mut client, &hello, hides, stdin, std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}
