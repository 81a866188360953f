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

pub mod causes;
pub mod diff;
pub mod evidence;
pub mod expect;
pub mod html;
pub mod property;
pub mod replay;
pub mod report;
pub mod rules;
pub mod scenario;
pub mod selftest;
pub mod snapshot;

pub use selftest::{SelftestReport, selftest};

use crate::catalog::{Action, Catalog, CheckKind, Level, Path, Run, Step, template};
use crate::driver::{Capabilities, Control, Target};

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
    // XMPP is there when the run is told where: the one a user can add with a flag.
    let hint = if m.iter().any(|n| n == "xmpp") {
        " (for xmpp, give the server's XMPP address: --xmpp HOST:PORT)"
    } else {
        ""
    };
    (!m.is_empty()).then(|| format!("the target does not offer: {}{hint}", m.join(", ")))
}

/// One runnable check.
#[derive(Clone)]
pub struct Case {
    /// `rule-id::check-name`, with `@path` for a check's runs after its first.
    pub name: String,
    pub rule_id: String,
    /// The covered paths it exercises.
    pub paths: Vec<Path>,
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
        /// Run at n-1, n and n+1 of a limit, one round each.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        probe: Option<Probe>,
        /// The spec file its steps are in, for a failure to name with the step's line (a
        /// replay file from before it was kept has none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<String>,
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

/// A limit a scenario probes: its parameter, n, and what the text says of n.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Probe {
    pub param: String,
    pub n: i64,
    pub at_limit: crate::catalog::AtLimit,
}

/// Where and how a plan runs.
pub struct Execution<'a> {
    pub target: &'a dyn Target,
    pub caps: &'a Capabilities,
    pub options: &'a Options,
    /// The trial: which paths its generic steps take.
    pub run: &'a Run,
    /// The profile's and rule's parameters.
    pub params: template::Vars,
    /// The group name scenarios use (`${name}`).
    pub name: String,
    /// Snapshot name and description, when the transcript is compared.
    pub snapshot: Option<(String, String)>,
    /// How a property uses its generator.
    pub mode: property::Mode,
    /// Normalize to what the protocol means (a differential run), not for a snapshot.
    pub meaning: bool,
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
            for (run_index, trial) in check.runs.iter().enumerate() {
                let needs = needs_of(check, trial);
                let run = match missing(&caps, &needs) {
                    Some(why) => Err(why),
                    None => {
                        let (catalog, target, caps, options) =
                            (catalog.clone(), target.clone(), caps.clone(), options.clone());
                        let f: CaseFn = Arc::new(move || {
                            let rule = &catalog.rules[rule_index];
                            run_check(&catalog, rule, check_index, run_index, target.as_ref(), &caps, &options)
                        });
                        Ok(f)
                    }
                };
                let seeded = match &check.kind {
                    CheckKind::Property { property, .. } => property::find(property).is_some_and(|p| p.seeded),
                    CheckKind::Scenario(_) => false,
                };
                out.push(Case {
                    name: trial_name(&rule.id, &check.name, trial),
                    rule_id: rule.id.clone(),
                    paths: trial.paths.clone(),
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
    run_index: usize,
    target: &dyn Target,
    caps: &Capabilities,
    options: &Options,
) -> CheckRun {
    let check = &rule.checks[check_index];
    let trial = &check.runs[run_index];
    let params = parameters(catalog, rule, &options.profile, caps);
    let plan = match plan_of(rule, check_index, &params) {
        Ok(plan) => plan,
        Err(e) => return CheckRun::failed(e),
    };
    let execution = Execution {
        target,
        caps,
        options,
        run: trial,
        params,
        name: format!("appUser-Chris-{}-{}", options.run_id, unique()),
        snapshot: options.snapshots.as_ref().map(|_| {
            (
                format!("{}__{}{}", rule.id, check.name, trial.suffix),
                format!("{} {} ({}): {}", rule.level, rule.id, check.name, rule.title),
            )
        }),
        mode: property::Mode::Search,
        meaning: false,
    };
    let mut run = execute(&plan, &execution);
    if let Err(failure) = &run.result {
        run.replay = Some(Box::new(replay::Replay::new(rule, check, &execution, &plan, failure, &run.evidence)));
    }
    run
}

/// What one trial of a check needs of a target: the check's own needs, what its generic
/// steps take on the trial's paths (XMPP sends, client-side id_tokens, a second sender), and
/// its property's.
pub fn needs_of(check: &crate::catalog::Check, run: &Run) -> Vec<String> {
    let mut needs = check.needs.clone();
    let steps: &[Step] = match &check.kind {
        CheckKind::Scenario(steps) => steps,
        CheckKind::Property { .. } => &[],
    };
    let has = |f: fn(&Action) -> bool| steps.iter().any(|s| f(&s.action));
    if has(|a| matches!(a, Action::Send(_))) && run.delivery.is_xmpp() {
        needs.push("xmpp".into());
    }
    if has(|a| matches!(a, Action::Manage { .. })) && run.endpoint == Path::Client {
        needs.push("id_tokens".into());
    }
    if run.tenancy == Some(Path::TwoSenders) {
        needs.push("senders".into());
    }
    if let CheckKind::Property { property, .. } = &check.kind {
        needs.extend(property::find(property).into_iter().flat_map(|p| p.needs.iter().map(|s| s.to_string())));
    }
    needs.sort();
    needs.dedup();
    needs
}

/// A trial's name: `rule::check`, with `@path` for a check's runs after its first.
pub fn trial_name(rule: &str, check: &str, run: &Run) -> String {
    format!("{rule}::{check}{}", run.suffix)
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
    let check = &rule.checks[check_index];
    match &check.kind {
        CheckKind::Scenario(steps) => {
            let probe = match &check.probe {
                None => None,
                Some(param) => {
                    let limit = rule.limit(param).ok_or_else(|| format!("`{param}` is not a limit of the rule"))?;
                    let n = vars
                        .get(param)
                        .and_then(Value::as_i64)
                        .ok_or_else(|| format!("the probed limit `{param}` has no whole-number value"))?;
                    Some(Probe { param: param.clone(), n, at_limit: limit.at_limit })
                }
            };
            Ok(Plan::Scenario { steps: steps.clone(), probe, file: Some(check.location.file.clone()) })
        }
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
        Plan::Scenario { steps, probe, file } => {
            let control = Control { target: &target, caps: x.caps };
            let mut transcript = scenario::Transcript::default();
            if x.meaning {
                transcript.redactor = snapshot::Redactor::for_meaning();
            }
            transcript.skip_text = !x.meaning && (x.options.snapshots.is_none() || x.snapshot.is_none());
            let setup = scenario::Setup {
                control: &control,
                run: x.run,
                settings: x.options,
                log: &log,
                file: file.as_deref(),
            };
            let result = control.new_sender().map_err(|e| format!("setting up a sender: {e}")).and_then(|sender| {
                // Where the round's value goes, for a failure to say.
                let probed_in = probe.as_ref().map(|_| crate::catalog::coverage::probe_uses(steps)).unwrap_or_default();
                let rounds: Vec<Option<(i64, Value)>> = match probe {
                    None => vec![None],
                    Some(p) => crate::catalog::coverage::probe_rounds(p.n, p.at_limit).into_iter().map(Some).collect(),
                };
                for (k, round) in rounds.iter().enumerate() {
                    // Each round is the scenario afresh (its own names), for the same sender.
                    let suffix = if round.is_some() { format!("-r{}", k + 1) } else { String::new() };
                    let name = format!("{}{suffix}", x.name);
                    let account = format!("{}@example.com", name.to_ascii_lowercase());
                    let mut vars = x.params.clone();
                    let mut builtins = vec![
                        ("sender", sender.to_json()),
                        ("name", Value::String(name)),
                        ("account", Value::String(account)),
                        ("run", Value::String(x.options.run_id.clone())),
                        ("path", Value::String(x.run.delivery.name().to_string())),
                        ("endpoint", Value::String(x.run.endpoint.name().to_string())),
                    ];
                    if let (Some((value, over)), Some(p)) = (round, probe) {
                        builtins.push((crate::catalog::PROBE_VAR, Value::from(*value)));
                        builtins.push((crate::catalog::OVER_VAR, over.clone()));
                        transcript.text.push_str(&format!(
                            "== round {}: {} = {value} (n = {}, over: {over})\n",
                            k + 1,
                            p.param,
                            p.n
                        ));
                    }
                    for (k, v) in builtins {
                        if !matches!(k, "probe" | "over" | "path" | "endpoint") {
                            transcript.redactor.learn(k, &v);
                        }
                        vars.insert(k.to_string(), v);
                    }
                    let why = |e: String| match (round, probe) {
                        // Which side of the bound failed, in words: a check named for the bound
                        // also probes one below it and one past it.
                        (Some((value, _)), Some(p)) => format!(
                            "round {} of {} ({} is {}: this round probes {value}, {}{}): {e}",
                            k + 1,
                            rounds.len(),
                            p.param,
                            p.n,
                            match value.cmp(&p.n) {
                                std::cmp::Ordering::Less => "one below it",
                                std::cmp::Ordering::Equal => "at it",
                                std::cmp::Ordering::Greater => "one past it",
                            },
                            match probed_in.is_empty() {
                                true => String::new(),
                                false => format!(", in {}", probed_in.join(" and ")),
                            }
                        ),
                        _ => e,
                    };
                    scenario::run(&setup, steps, vars, &mut transcript).map_err(why)?;
                }
                Ok(())
            });
            evidence.matched = std::mem::take(&mut transcript.matched);
            evidence.observed = transcript.observed;
            evidence.steps = std::mem::take(&mut transcript.steps);
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
                // A check the stopped run never got to is shown ignored, not failed.
                Ok(f) => Trial::ignorable_test(name, move || match f().result {
                    Ok(()) => Ok(libtest_mimic::Completion::Completed),
                    Err(e) if crate::driver::TargetError::means_not_tried(&e) || report::not_judged(&e).is_some() => {
                        Ok(libtest_mimic::Completion::ignored_with(e))
                    }
                    Err(e) => Err(Failed::from(e)),
                })
                .with_kind(kind),
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
