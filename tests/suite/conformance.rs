//! Every rule against every target: in-process, and over loopback HTTP and XMPP (TCP).

use std::path::PathBuf;
use std::sync::Arc;

use gcmspec::harness::{self, Options};
use gcmspec::reference::{Config, Reference};
use gcmspec::target::{Capabilities, HttpTarget, InProcess, Target};
use libtest_mimic::Trial;

fn snapshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("snapshots")
}

fn bind(target: Arc<dyn Target>, profile: &str, snapshots: Option<PathBuf>, prefix: &str) -> Vec<Trial> {
    let catalog = Arc::new(gcmspec::bundled::catalog().expect("bundled specs load"));
    let caps = Arc::new(Capabilities::probe(target.as_ref()).expect("probing the reference"));
    let options = Arc::new(Options { snapshots, run_id: prefix.to_string(), ..Options::new(profile) });
    harness::trials(harness::cases(&catalog, target, caps, &options), prefix)
}

pub fn trials(runtime: &tokio::runtime::Runtime) -> Vec<Trial> {
    let mut trials =
        bind(Arc::new(InProcess::new(Reference::new(Config::bundled()))), "fcm", Some(snapshots()), "inprocess");

    // The server lives as long as the runtime: leaked on purpose, the process ends with it.
    let server = runtime.block_on(Reference::start_with(Config::bundled())).expect("binding 127.0.0.1:0");
    let target = HttpTarget::new(&server.url(), HttpTarget::DEFAULT_TIMEOUT)
        .expect("a target URL")
        .with_xmpp(server.xmpp_address());
    // The XMPP rules again, with TLS from the first byte, trusting the server's certificate.
    let tls = gcmspec::tls::client_config(Some(server.certificate_pem())).expect("a TLS client configuration");
    let tls_target = HttpTarget::new(&server.url(), HttpTarget::DEFAULT_TIMEOUT)
        .expect("a target URL")
        .with_xmpp(server.xmpp_tls_address())
        .with_xmpp_tls(tls);
    std::mem::forget(server);
    trials.extend(bind(Arc::new(target), "fcm", Some(snapshots()), "http"));
    let catalog = Arc::new(gcmspec::bundled::catalog().expect("bundled specs load"));
    let tls_target: Arc<dyn Target> = Arc::new(tls_target);
    let caps = Arc::new(Capabilities::probe(tls_target.as_ref()).expect("probing the reference"));
    let options = Arc::new(Options { snapshots: Some(snapshots()), run_id: "tls".into(), ..Options::new("fcm") });
    let xmpp_only =
        harness::cases(&catalog, tls_target, caps, &options).into_iter().filter(|c| c.name.contains("xmpp")).collect();
    trials.extend(harness::trials(xmpp_only, "xmpp-tls"));

    // The 2013 page's cap of 10: same rules, other numbers (so no shared snapshots).
    let catalog = gcmspec::bundled::catalog().expect("bundled specs load");
    let config = Config::from_profile(&catalog.profiles["gcm-2013"]).expect("gcm-2013 profile");
    trials.extend(bind(Arc::new(InProcess::new(Reference::new(config))), "gcm-2013", None, "gcm-2013"));
    trials
}
