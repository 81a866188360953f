//! Rules -> trials. One trial per (rule, check), run against one [`Target`].
//!
//! [`cases`] builds plain closures; [`trials`] wraps them for libtest-mimic (so `gcmspec run`
//! and `cargo test` take the usual test flags), and [`selftest`] runs them directly. Each
//! closure turns its check into a [`Plan`] and [`execute`]s it, which records what it saw;
//! replays and differential runs execute plans the same way.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use libtest_mimic::{Failed, Trial};
use serde_json::Value;

pub mod diff;
pub mod evidence;
pub mod expect;
pub mod html;
pub mod property;
pub mod replay;
pub mod report;
pub mod rules;
pub mod scenario;
pub mod snapshot;

use crate::catalog::{Catalog, CheckKind, Level, Step, template};
use crate::driver::{Capabilities, Control, InProcess, Target};
use crate::reference::{self, Fault, Faults, Reference, Variant, Variants};

/// How to run the suite.
#[derive(Debug, Clone)]
pub struct Options {
    pub profile: String,
    /// Seeds property generation.
    pub seed: u64,
    /// Overrides every property's `cases`.
    pub cases: Option<u32>,
    /// Compare normalized transcripts with the snapshots in this directory.
    pub snapshots: Option<PathBuf>,
    /// Distinguishes this run's names on a shared server.
    pub run_id: String,
    /// How long an XMPP step waits for the server.
    pub xmpp_timeout: std::time::Duration,
    /// Accept only documented outcomes where a step also accepts observed ones.
    pub strict: bool,
}

impl Options {
    pub fn new(profile: &str) -> Options {
        Options {
            profile: profile.to_string(),
            seed: 0,
            cases: None,
            snapshots: None,
            run_id: "run".into(),
            xmpp_timeout: crate::driver::xmpp::XmppClient::DEFAULT_TIMEOUT,
            strict: false,
        }
    }
}

pub type CaseFn = Arc<dyn Fn() -> CheckRun + Send + Sync>;

/// How a check ended, with what it saw.
#[derive(Debug, Clone)]
pub struct CheckRun {
    pub result: Result<(), String>,
    pub evidence: evidence::Evidence,
    /// On failure: how to run it again.
    pub replay: Option<Box<replay::Replay>>,
}

impl CheckRun {
    pub fn failed(why: String) -> CheckRun {
        CheckRun { result: Err(why), evidence: evidence::Evidence::default(), replay: None }
    }
}

/// The capabilities a check lacks on this target, if any, said for a person.
pub fn missing(caps: &Capabilities, needs: &[String]) -> Option<String> {
    let m = caps.missing(needs);
    (!m.is_empty()).then(|| format!("the target does not offer: {}", m.join(", ")))
}

/// One runnable check.
#[derive(Clone)]
pub struct Case {
    /// `rule-id::check-name`
    pub name: String,
    pub rule_id: String,
    pub level: Level,
    /// A property that generates from the seed (its verdict on a fault may depend on it).
    pub seeded: bool,
    pub run: Result<CaseFn, String>,
}

/// What one check does, as data: enough to run it again, here or from a replay file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    Scenario {
        steps: Vec<Step>,
    },
    Property {
        property: String,
        /// The check's parameters, rendered.
        params: serde_json::Map<String, Value>,
        /// One sequence to run (a replay), instead of a search.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sequence: Option<Value>,
    },
}

/// Where and how a plan runs.
pub struct Execution<'a> {
    pub target: &'a dyn Target,
    pub caps: &'a Capabilities,
    pub options: &'a Options,
    pub transport: &'a str,
    /// The profile's and rule's parameters.
    pub params: template::Vars,
    /// The group name scenarios use (`${name}`).
    pub name: String,
    /// Snapshot name and description, when the transcript is compared.
    pub snapshot: Option<(String, String)>,
    /// How a property uses its generator.
    pub mode: property::Mode,
}

/// The checks of every rule that applies to `options.profile`, bound to `target`.
pub fn cases(
    catalog: &Arc<Catalog>,
    target: Arc<dyn Target>,
    caps: Arc<Capabilities>,
    options: &Arc<Options>,
) -> Vec<Case> {
    let mut out = Vec::new();
    for (rule_index, rule) in catalog.rules.iter().enumerate() {
        if !rule.profiles.contains(&options.profile) {
            continue;
        }
        for (check_index, check) in rule.checks.iter().enumerate() {
            for transport in &check.transports {
                let needs = needs_of(check, transport);
                let run = match missing(&caps, &needs) {
                    Some(why) => Err(why),
                    None => {
                        let (catalog, target, caps, options) =
                            (catalog.clone(), target.clone(), caps.clone(), options.clone());
                        let transport = transport.clone();
                        let f: CaseFn = Arc::new(move || {
                            let rule = &catalog.rules[rule_index];
                            run_check(&catalog, rule, check_index, &transport, target.as_ref(), &caps, &options)
                        });
                        Ok(f)
                    }
                };
                let seeded = match &check.kind {
                    CheckKind::Property { property, .. } => property::find(property).is_some_and(|p| p.seeded),
                    CheckKind::Scenario(_) => false,
                };
                out.push(Case {
                    name: format!("{}::{}{}", rule.id, check.name, transport_suffix(transport)),
                    rule_id: rule.id.clone(),
                    level: rule.level,
                    seeded,
                    run,
                });
            }
        }
    }
    out
}

/// Runs one check of a rule as a trial: its plan, with a fresh group name and, when asked, its
/// snapshot; a failure comes back with its replay.
fn run_check(
    catalog: &Catalog,
    rule: &crate::catalog::Rule,
    check_index: usize,
    transport: &str,
    target: &dyn Target,
    caps: &Capabilities,
    options: &Options,
) -> CheckRun {
    let check = &rule.checks[check_index];
    let params = parameters(catalog, rule, &options.profile, caps);
    let plan = match plan_of(rule, check_index, &params) {
        Ok(plan) => plan,
        Err(e) => return CheckRun::failed(e),
    };
    let execution = Execution {
        target,
        caps,
        options,
        transport,
        params,
        name: format!("appUser-Chris-{}-{}", options.run_id, unique()),
        snapshot: options.snapshots.as_ref().map(|_| {
            (
                format!("{}__{}{}", rule.id, check.name, transport_suffix(transport)),
                format!("{} {} ({}): {}", rule.level, rule.id, check.name, rule.title),
            )
        }),
        mode: property::Mode::Search,
    };
    let mut run = execute(&plan, &execution);
    if let Err(failure) = &run.result {
        run.replay = Some(Box::new(replay::Replay::new(rule, check, &execution, &plan, failure, &run.evidence)));
    }
    run
}

/// What a check needs of a target over `transport`: its own needs, the transport (beyond
/// HTTP), and its property's.
pub fn needs_of(check: &crate::catalog::Check, transport: &str) -> Vec<String> {
    let mut needs = check.needs.clone();
    if transport != "http" {
        needs.push(transport.to_string());
    }
    if let CheckKind::Property { property, .. } = &check.kind {
        needs.extend(property::find(property).into_iter().flat_map(|p| p.needs.iter().map(|s| s.to_string())));
    }
    needs
}

/// Trials and snapshots of a check over a transport other than HTTP carry its name:
/// `rule::check@xmpp`.
pub(crate) fn transport_suffix(transport: &str) -> String {
    if transport == "http" { String::new() } else { format!("@{transport}") }
}

/// The parameters a rule's checks see against a target: the profile's and the rule's, with
/// the numbers the documents leave to the server (throttle buckets) as the target declares
/// them in its capabilities.
pub fn parameters(
    catalog: &Catalog,
    rule: &crate::catalog::Rule,
    profile: &str,
    caps: &Capabilities,
) -> template::Vars {
    let mut vars = catalog.parameters(rule, profile);
    for (k, v) in &caps.params {
        if catalog.server_chosen(k) && vars.contains_key(k) {
            vars.insert(k.clone(), v.clone());
        }
    }
    vars
}

/// The plan of a rule's check with these parameters: its steps, or its property with the
/// check's parameters rendered.
pub fn plan_of(rule: &crate::catalog::Rule, check_index: usize, vars: &template::Vars) -> Result<Plan, String> {
    match &rule.checks[check_index].kind {
        CheckKind::Scenario(steps) => Ok(Plan::Scenario { steps: steps.clone() }),
        CheckKind::Property { property, params } => {
            let mut rendered = serde_json::Map::new();
            for (k, v) in params {
                rendered.insert(k.clone(), template::render(v, vars).map_err(|e| format!("parameter `{k}`: {e}"))?);
            }
            Ok(Plan::Property { property: property.clone(), params: rendered, sequence: None })
        }
    }
}

/// Runs a plan, recording every exchange it makes.
pub fn execute(plan: &Plan, x: &Execution<'_>) -> CheckRun {
    let log = evidence::ExchangeLog::default();
    let target = evidence::Recording { inner: x.target, log: &log };
    let mut evidence = evidence::Evidence::default();
    let result = match plan {
        Plan::Scenario { steps } => {
            let control = Control { target: &target, caps: x.caps };
            let mut transcript = scenario::Transcript::default();
            let result = control.new_sender().map_err(|e| format!("setting up a sender: {e}")).and_then(|sender| {
                let mut vars = x.params.clone();
                for (k, v) in [
                    ("sender", sender.to_json()),
                    ("name", Value::String(x.name.clone())),
                    ("run", Value::String(x.options.run_id.clone())),
                ] {
                    transcript.redactor.learn(k, &v);
                    vars.insert(k.to_string(), v);
                }
                scenario::run(&control, steps, vars, x.transport, x.options, &log, &mut transcript)
            });
            evidence.matched = std::mem::take(&mut transcript.matched);
            evidence.observed = transcript.observed;
            result.and_then(|()| match (&x.options.snapshots, &x.snapshot) {
                (Some(root), Some((name, description))) => {
                    let dir = snapshot::profile_dir(root, &x.options.profile);
                    snapshot::compare(&dir, name, description, &transcript.text)
                }
                .map_err(|(message, diff)| {
                    evidence.snapshot_diff = diff;
                    message
                }),
                _ => Ok(()),
            })
        }
        Plan::Property { property, params, sequence } => match property::find(property) {
            None => Err(format!("unknown property `{property}`")),
            Some(def) => {
                let mut cx = property::PropertyCx::new(&target, x.caps, &log);
                cx.params = x.params.clone();
                cx.params.extend(params.iter().map(|(k, v)| (k.clone(), v.clone())));
                cx.seed = x.options.seed;
                cx.cases = x.options.cases;
                // Unique per trial, and the same on both sides of a differential run.
                cx.run_id = x.name.clone();
                cx.mode = match sequence {
                    Some(s) => property::Mode::Replay(s.clone()),
                    None => x.mode.clone(),
                };
                let result = (def.run)(&cx);
                evidence.sequence = cx.found.into_inner().unwrap_or_else(|e| e.into_inner()).or(sequence.clone());
                result
            }
        },
    };
    evidence.exchanges = log.take();
    CheckRun { result, evidence, replay: None }
}

/// A process-wide counter: names stay unique across trials sharing a sender.
fn unique() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The cases as libtest-mimic trials that also record their outcomes for a report.
pub fn recorded_trials(cases: &[Case], recorder: &report::Recorder) -> Vec<Trial> {
    let recorded = cases
        .iter()
        .cloned()
        .map(|mut case| {
            if let Ok(f) = case.run {
                let (recorder, name) = (recorder.clone(), case.name.clone());
                let g: CaseFn = Arc::new(move || recorder.record(&name, || f()));
                case.run = Ok(g);
            }
            case
        })
        .collect();
    trials(recorded, "")
}

/// The cases as libtest-mimic trials, names prefixed with `prefix` (a target label) if any.
pub fn trials(cases: Vec<Case>, prefix: &str) -> Vec<Trial> {
    cases
        .into_iter()
        .map(|case| {
            let name = if prefix.is_empty() { case.name } else { format!("{prefix}::{}", case.name) };
            let kind = match case.level {
                Level::Must => "must",
                Level::Should => "should",
                Level::May => "may",
            };
            match case.run {
                Ok(f) => Trial::test(name, move || f().result.map_err(Failed::from)).with_kind(kind),
                Err(why) => Trial::test(name, move || Err(Failed::from(format!("unsupported: {why}"))))
                    .with_kind("unsupported")
                    .with_ignored_flag(true),
            }
        })
        .collect()
}

/// Applies `f` to every item on `threads` threads (each takes the next item when done, so
/// slow checks do not hold up a fixed share), returning the results in input order.
pub fn parallel_map<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<R>>> = items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                }
            });
        }
    });
    results.into_iter().filter_map(|r| r.into_inner().unwrap_or_else(|e| e.into_inner())).collect()
}

/// Runs cases on `threads` threads and returns (name, result) in input order.
pub fn run_cases(cases: &[Case], threads: usize) -> Vec<(String, Result<(), String>)> {
    parallel_map(cases, threads, |case| {
        let r = match &case.run {
            Ok(f) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f().result))
                .unwrap_or_else(|_| Err("the check panicked".into())),
            Err(why) => Err(format!("unsupported: {why}")),
        };
        (case.name.clone(), r)
    })
}

/// What `gcmspec selftest` found.
#[derive(Debug, Default)]
pub struct SelftestReport {
    /// Checks that failed against the clean reference (there should be none).
    pub clean_failures: Vec<(String, String)>,
    /// For each fault of a rule in the profile: the checks that caught it (none: missed).
    pub faults: Vec<FaultVerdict>,
    /// Rules of the profile that no fault breaks (there should be none).
    pub rules_without_fault: Vec<String>,
    /// For each legal variant: the checks that failed against it (there should be none).
    pub variants: Vec<VariantVerdict>,
}

#[derive(Debug)]
pub struct FaultVerdict {
    pub fault: Fault,
    pub caught_by: Vec<String>,
    /// Caught only by properties that generate from the seed: another seed might miss it.
    pub only_by_chance: bool,
}

#[derive(Debug)]
pub struct VariantVerdict {
    pub variant: Variant,
    pub failures: Vec<(String, String)>,
}

impl SelftestReport {
    /// Faults caught by a check that does not depend on the seed.
    pub fn caught(&self) -> usize {
        self.faults.iter().filter(|f| !f.caught_by.is_empty() && !f.only_by_chance).count()
    }
    pub fn variants_passed(&self) -> usize {
        self.variants.iter().filter(|v| v.failures.is_empty()).count()
    }
    pub fn passed(&self) -> bool {
        self.clean_failures.is_empty()
            && self.caught() == self.faults.len()
            && self.rules_without_fault.is_empty()
            && self.variants_passed() == self.variants.len()
    }
    /// The closing line: `faults caught: X/Y, legal variants passed: A/B`.
    pub fn summary(&self) -> String {
        format!(
            "faults caught: {}/{}, legal variants passed: {}/{}",
            self.caught(),
            self.faults.len(),
            self.variants_passed(),
            self.variants.len()
        )
    }
}

/// Runs the suite against the clean reference; each fault's rule against the reference with
/// that fault (some check must fail); and the whole suite against the reference in each legal
/// variant (every check must pass). Snapshots are off: a fault must be caught by a check, and
/// a variant may answer in another shape.
pub fn selftest(
    catalog: &Arc<Catalog>,
    config: &reference::Config,
    options: &Options,
    threads: usize,
    mut progress: impl FnMut(&str),
) -> SelftestReport {
    let mut options = options.clone();
    options.snapshots = None;
    // The in-process reference answers at once; a fault that withholds an answer should not
    // cost a network-sized wait.
    options.xmpp_timeout = options.xmpp_timeout.min(std::time::Duration::from_millis(500));
    let options = Arc::new(options);
    let bind = |faults: Faults, variants: Variants| -> Vec<Case> {
        let mut config = config.clone();
        config.faults = faults;
        config.variants = variants;
        let target: Arc<dyn Target> = Arc::new(InProcess::new(Reference::new(config)));
        let caps = Arc::new(Capabilities::probe(target.as_ref()).unwrap_or_default());
        cases(catalog, target, caps, &options)
    };
    let failures = |cases: &[Case]| -> Vec<(String, String)> {
        run_cases(cases, threads).into_iter().filter_map(|(name, r)| r.err().map(|e| (name, e))).collect()
    };
    let mut report = SelftestReport::default();
    for (name, e) in failures(&bind(Faults::default(), Variants::default())) {
        progress(&format!("clean reference FAILED {name}: {e}"));
        report.clean_failures.push((name, e));
    }
    let in_profile = |id: &str| catalog.rule(id).is_some_and(|r| r.profiles.contains(&options.profile));
    for rule in catalog.rules.iter().filter(|r| in_profile(&r.id)) {
        if !Fault::ALL.iter().any(|f| f.rule_id() == rule.id) {
            progress(&format!("rule  {:<40} NO FAULT: nothing shows that this rule bites", rule.id));
            report.rules_without_fault.push(rule.id.clone());
        }
    }
    for &fault in Fault::ALL.iter().filter(|f| in_profile(f.rule_id())) {
        let cases: Vec<Case> = bind(Faults::new([fault]), Variants::default())
            .into_iter()
            .filter(|c| c.rule_id == fault.rule_id())
            .collect();
        let caught_by: Vec<String> = failures(&cases).into_iter().map(|(name, _)| name).collect();
        let seeded = |name: &String| cases.iter().find(|c| &c.name == name).is_some_and(|c| c.seeded);
        let only_by_chance = !caught_by.is_empty() && caught_by.iter().all(seeded);
        let verdict = match (caught_by.is_empty(), only_by_chance) {
            (true, _) => "NOT CAUGHT".to_string(),
            (false, true) => format!("caught only by chance (a seeded property): {}", caught_by.join(", ")),
            (false, false) => format!("caught by {}", caught_by.join(", ")),
        };
        progress(&format!("fault {:<48} ({}): {verdict}", fault.name(), fault.description()));
        report.faults.push(FaultVerdict { fault, caught_by, only_by_chance });
    }
    for &variant in Variant::ALL {
        let failures = failures(&bind(Faults::default(), Variants::new([variant])));
        let verdict = if failures.is_empty() {
            "passed".to_string()
        } else {
            format!(
                "FAILED {}",
                failures.iter().map(|(n, e)| format!("\n    {n}: {}", e.replace('\n', "\n      "))).collect::<String>()
            )
        };
        progress(&format!("variant {:<30} ({}): {verdict}", variant.name(), variant.description()));
        report.variants.push(VariantVerdict { variant, failures });
    }
    report
}

/// Checks what the pure loader cannot: that named properties exist and get their parameters.
pub fn lint(catalog: &Catalog) -> Vec<String> {
    let mut problems = Vec::new();
    for rule in &catalog.rules {
        for check in &rule.checks {
            let CheckKind::Property { property, params } = &check.kind else { continue };
            let Some(def) = property::find(property) else {
                let known: Vec<&str> = property::PROPERTIES.iter().map(|p| p.name).collect();
                problems.push(format!(
                    "{}: rule[{}].check[{}].property: unknown property `{property}` (known: {})",
                    check.location,
                    rule.id,
                    check.name,
                    known.join(", ")
                ));
                continue;
            };
            for profile in &rule.profiles {
                let vars = catalog.parameters(rule, profile);
                for p in def.params {
                    if !params.contains_key(*p) && !vars.contains_key(*p) {
                        problems.push(format!("{}: rule[{}].check[{}].params: property `{property}` needs parameter `{p}` (profile {profile})", check.location, rule.id, check.name));
                    }
                }
            }
        }
    }
    problems
}
