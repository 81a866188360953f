//! Every rule against every target: in-process, and over loopback HTTP and XMPP (TCP).

use std::path::PathBuf;
use std::sync::Arc;

use gcmspec::driver::{Capabilities, HttpTarget, InProcess, Target};
use gcmspec::harness::{self, Options};
use gcmspec::reference::{Config, Reference};
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

    // The 2013 page's cap of 10: same rules, other numbers (snapshots in snapshots/gcm-2013/).
    let catalog = gcmspec::bundled::catalog().expect("bundled specs load");
    let config = Config::from_profile(&catalog.profiles["gcm-2013"]).expect("gcm-2013 profile");
    trials.extend(bind(Arc::new(InProcess::new(Reference::new(config))), "gcm-2013", Some(snapshots()), "gcm-2013"));
    trials.push(crate::trial("snapshots::one-per-scenario-check-and-profile", every_snapshot_has_a_check));
    trials
}

/// Every committed snapshot belongs to a scenario check of its profile (a renamed or removed
/// check leaves none behind), and every scenario check of every profile has one.
fn every_snapshot_has_a_check() -> Result<(), String> {
    let catalog = Arc::new(gcmspec::bundled::catalog().map_err(|e| e.to_string())?);
    let mut problems = Vec::new();
    for profile in catalog.profiles.keys() {
        let mut expected = std::collections::BTreeSet::new();
        for rule in catalog.rules.iter().filter(|r| r.profiles.contains(profile)) {
            for check in rule.checks.iter().filter(|c| matches!(c.kind, gcmspec::catalog::CheckKind::Scenario(_))) {
                for run in &check.runs {
                    expected.insert(format!("{}__{}{}", rule.id, check.name, run.suffix));
                }
            }
        }
        let dir = gcmspec::harness::snapshot::profile_dir(&snapshots(), profile);
        let found: std::collections::BTreeSet<String> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".snap")).map(str::to_string))
            .collect();
        for orphan in found.difference(&expected) {
            problems.push(format!("{}/{orphan}.snap belongs to no check of profile {profile}", dir.display()));
        }
        for missing in expected.difference(&found) {
            problems.push(format!("no snapshot {}/{missing}.snap for profile {profile}", dir.display()));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
}

/// The reference, answering as real servers were seen to (`../shared/protocol-notes.md`): a
/// 400 with a text where the documents give 200 and an error code in the result.
struct RealServerQuirks(InProcess);

impl Target for RealServerQuirks {
    fn describe(&self) -> String {
        "the reference, answering 400 as real servers did".into()
    }
    fn deadline(&self) -> Option<(std::time::Instant, std::time::Duration)> {
        self.0.deadline()
    }
    fn exchange(
        &self,
        req: &gcmspec::wire::HttpRequest,
    ) -> Result<gcmspec::wire::HttpResponse, gcmspec::driver::TargetError> {
        let resp = self.0.exchange(req)?;
        let documented_error = resp.body_json().and_then(|b| b["results"][0]["error"].as_str().map(str::to_string));
        Ok(match documented_error.as_deref() {
            Some(e @ ("MissingRegistration" | "InvalidTtl" | "InvalidDataKey")) if req.path == "/fcm/send" => {
                gcmspec::wire::HttpResponse {
                    status: 400,
                    headers: vec![("content-type".into(), "text/plain".into())],
                    body: format!("Error={e}").into_bytes(),
                }
            }
            _ => resp,
        })
    }
}

/// Observed answers pass and are named in the report; `--strict` accepts only documented ones.
fn observed_answers_are_graded() -> Result<(), String> {
    let catalog = Arc::new(gcmspec::bundled::catalog().map_err(|e| e.to_string())?);
    let rules = [
        "send.target.exclusive::neither",
        "lifetime.ttl.range::negative",
        "send.data.reserved-keys::each-reserved-key",
    ];
    for strict in [false, true] {
        let target: Arc<dyn Target> = Arc::new(RealServerQuirks(InProcess::new(Reference::new(Config::bundled()))));
        let caps = Arc::new(Capabilities::probe(target.as_ref()).map_err(|e| e.to_string())?);
        let options = Arc::new(Options { strict, ..Options::new("fcm") });
        let cases: Vec<_> = harness::cases(&catalog, target, caps, &options)
            .into_iter()
            .filter(|c| rules.contains(&c.name.as_str()))
            .collect();
        if cases.len() != rules.len() {
            return Err(format!("expected {} checks, found {}", rules.len(), cases.len()));
        }
        let recorder = harness::report::Recorder::default();
        for case in &cases {
            let f = case.run.as_ref().map_err(Clone::clone)?;
            recorder.record(&case.name, || f());
        }
        let report = recorder.report(&cases, "quirks", "fcm", strict);
        for r in &report.results {
            let observed_note =
                r.evidence.matched.iter().any(|m| m.contains("observed 400 (observed, not documented)"));
            let ok = if strict {
                r.outcome == harness::report::Outcome::Failed
                    && r.message.as_deref().is_some_and(|m| m.contains("--strict accepts only the documented"))
            } else {
                r.outcome == harness::report::Outcome::Passed && r.evidence.observed && observed_note
            };
            if !ok {
                return Err(format!(
                    "strict {strict}: {} {:?}: {:?} {:?}",
                    r.name, r.outcome, r.evidence.matched, r.message
                ));
            }
        }
        let want = if strict { 0 } else { rules.len() };
        if report.summary.observed != want {
            return Err(format!("strict {strict}: summary.observed {}, expected {want}", report.summary.observed));
        }
    }
    Ok(())
}

pub fn grading_trials() -> Vec<Trial> {
    vec![
        crate::trial("grading::observed-answers-pass-but-not-under-strict", observed_answers_are_graded),
        crate::trial("diff::wording-charset-and-clocks-are-not-differences", one_bug_one_difference),
        crate::trial("diff::legal-variants-show-no-difference", legal_variants_show_no_difference),
    ]
}

/// The reference with one bug, answering in its own words: another media-type spelling,
/// reworded errors, another clock. Only the bug may show in a differential run.
struct OwnWords(InProcess);

impl Target for OwnWords {
    fn describe(&self) -> String {
        "the reference in its own words, with one bug".into()
    }
    fn deadline(&self) -> Option<(std::time::Instant, std::time::Duration)> {
        self.0.deadline()
    }
    fn exchange(
        &self,
        req: &gcmspec::wire::HttpRequest,
    ) -> Result<gcmspec::wire::HttpResponse, gcmspec::driver::TargetError> {
        let mut resp = self.0.exchange(req)?;
        for (k, v) in resp.headers.iter_mut() {
            if k == "content-type" {
                *v = v.split(';').next().unwrap_or_default().to_ascii_uppercase();
            }
        }
        if let Some(mut body) = resp.body_json() {
            if let Some(e) = body.get("error").and_then(|e| e.as_str()).filter(|e| e.contains(' ')) {
                body["error"] = serde_json::json!(format!("Sorry: {}", e.to_uppercase()));
            }
            if let Some(now) = body.get("now_ms").and_then(|n| n.as_u64()) {
                body["now_ms"] = serde_json::json!(now + 123_456);
            }
            resp.body = body.to_string().into_bytes();
        }
        Ok(resp)
    }
}

fn one_bug_one_difference() -> Result<(), String> {
    let catalog = gcmspec::bundled::catalog().map_err(|e| e.to_string())?;
    let mut config = Config::bundled();
    config.faults = gcmspec::reference::Faults::new(["lifetime.collapse-key.replaces:across-registrations"
        .parse::<gcmspec::reference::Fault>()
        .map_err(|e| e.to_string())?]);
    let target = OwnWords(InProcess::new(Reference::new(config)));
    let caps = Capabilities::probe(&target).map_err(|e| e.to_string())?;
    let reference = InProcess::new(Reference::new(Config::bundled()));
    let reference_caps = Capabilities::probe(&reference).map_err(|e| e.to_string())?;
    let options = Options { cases: Some(2), ..Options::new("fcm") };
    // Every HTTP check, and the properties' sampled sequences.
    let select = |name: &str| !name.contains("@xmpp") && !name.starts_with("xmpp.");
    let report = harness::diff::run(
        &catalog,
        &harness::diff::Side { target: &reference, caps: &reference_caps },
        &harness::diff::Side { target: &target, caps: &caps },
        &options,
        &select,
        2,
    );
    let names: Vec<&str> = report.differences.iter().map(|d| d.name.as_str()).collect();
    // The bug collapses one device's message by another's of the same key: it shows in the
    // two-device trials that send collapse keys (its rule's, and the collapse-key limit's),
    // as failures of the target, and nowhere else.
    let theirs =
        ["lifetime.collapse-key.replaces::", "lifetime.collapse-key.limit::", "lifetime.stored-limit::send-to-sync"];
    let own = names.iter().filter(|n| n.starts_with("lifetime.collapse-key.replaces::")).count();
    let stray = names.iter().any(|n| !n.ends_with("@two-devices") || !theirs.iter().any(|t| n.starts_with(t)));
    let verdicts = report.differences.iter().all(|d| d.reference_outcome == "passed" && d.target_outcome == "failed");
    if own != 2 || stray || !verdicts {
        let shown: Vec<String> =
            report.differences.iter().map(|d| format!("{}: {:?}", d.name, d.target_failure)).collect();
        return Err(format!("{} of {} checks differ: {names:?}\n{}", names.len(), report.compared, shown.join("\n")));
    }
    Ok(())
}

/// Every legal variant of the reference shows in a differential run as what it is: no
/// difference, only the stated choices it makes.
fn legal_variants_show_no_difference() -> Result<(), String> {
    let catalog = gcmspec::bundled::catalog().map_err(|e| e.to_string())?;
    let reference = InProcess::new(Reference::new(Config::bundled()));
    let reference_caps = Capabilities::probe(&reference).map_err(|e| e.to_string())?;
    let options = Options { cases: Some(2), ..Options::new("fcm") };
    let mut problems = Vec::new();
    for &variant in gcmspec::reference::Variant::ALL {
        let config = Config { variants: gcmspec::reference::Variants::new([variant]), ..Config::bundled() };
        let target = InProcess::new(Reference::new(config));
        let caps = Capabilities::probe(&target).map_err(|e| e.to_string())?;
        let report = harness::diff::run(
            &catalog,
            &harness::diff::Side { target: &reference, caps: &reference_caps },
            &harness::diff::Side { target: &target, caps: &caps },
            &options,
            &|_| true,
            2,
        );
        for d in &report.differences {
            problems.push(format!("{variant}: {} differs ({} / {})", d.name, d.reference_outcome, d.target_outcome));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
}
