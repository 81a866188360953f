//! Differential runs: the same checks against the reference and a target, compared by verdict
//! and by meaning.
//!
//! Where a conformance run asks "does the target keep each rule?", a differential run asks
//! "where does the target behave differently from the reference?". Both sides get the same
//! plan, group names and property seed; each side's run-specific values are named by a
//! redactor of its own, in meaning mode (wording, media-type spelling, clock readings, the
//! order of what a device received, an empty list against none: the same meaning).
//!
//! What counts:
//! - a check whose **verdict** differs (one side passes, the other fails);
//! - in a scenario both pass, a step **without expectations** that answered otherwise (what no
//!   rule pins down);
//! - a property both fail, with other **minimal sequences**.
//!
//! What does not: a step whose expectations passed on both sides (the rule says what matters
//! there, and accepted both answers), and a step that matched another of its named outcomes:
//! a **stated choice** of the documents' reading, listed apart.

use serde::Serialize;

use super::scenario::StepRecord;
use super::{Execution, Options, plan_of, property};
use crate::catalog::{Catalog, Run};
use crate::driver::{Capabilities, Target};

pub const SCHEMA: &str = "gcmspec-diff/2";

/// One side of the comparison.
pub struct Side<'a> {
    pub target: &'a dyn Target,
    pub caps: &'a Capabilities,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    pub schema: &'static str,
    pub reference: String,
    pub target: String,
    pub profile: String,
    pub seed: u64,
    /// Generated sequences per property, on each side.
    pub cases: u32,
    /// Checks run on both sides.
    pub compared: usize,
    /// Checks that behaved alike (stated choices aside).
    pub identical: usize,
    /// Checks the target lacks a capability for.
    pub unsupported: Vec<String>,
    /// The checks that differ: by verdict, an unjudged step, or a minimal sequence.
    pub differences: Vec<CheckDiff>,
    /// Steps where the two sides took other answers the documents allow.
    pub choices: Vec<Choice>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckDiff {
    pub name: String,
    /// `passed` or `failed` on each side.
    pub reference_outcome: &'static str,
    pub target_outcome: &'static str,
    /// The target's failure, where it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_failure: Option<String>,
    /// Steps without expectations that answered otherwise: their unified diffs, reference
    /// then target.
    pub steps: Vec<StepDiff>,
    /// For a property both sides fail: each side's minimal sequence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequences: Option<(serde_json::Value, serde_json::Value)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepDiff {
    /// `3`, or `3 twin` for the second device's lane.
    pub step: String,
    pub diff: String,
}

/// A step that matched another named outcome on each side.
#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    pub check: String,
    pub step: String,
    pub reference: String,
    pub target: String,
}

/// Generated sequences per property when `--cases` is not given: enough to exercise each
/// operation, few enough to run both sides quickly.
pub const DEFAULT_CASES: u32 = 8;

/// Runs every check of `options.profile` whose needs the target meets (and `select` keeps) on
/// both sides, `threads` at a time.
pub fn run(
    catalog: &Catalog,
    reference: &Side<'_>,
    target: &Side<'_>,
    options: &Options,
    select: &dyn Fn(&str) -> bool,
    threads: usize,
) -> DiffReport {
    struct Job<'c> {
        name: String,
        rule: &'c crate::catalog::Rule,
        check: usize,
        run: Run,
    }
    let mut jobs = Vec::new();
    let mut unsupported = Vec::new();
    for rule in catalog.rules.iter().filter(|r| r.profiles.contains(&options.profile)) {
        for (i, check) in rule.checks.iter().enumerate() {
            for run in &check.runs {
                let name = super::trial_name(&rule.id, &check.name, run);
                if !select(&name) {
                    continue;
                }
                let needs = super::needs_of(check, run);
                if super::missing(target.caps, &needs).is_some() || super::missing(reference.caps, &needs).is_some() {
                    unsupported.push(name);
                } else {
                    jobs.push(Job { name, rule, check: i, run: run.clone() });
                }
            }
        }
    }
    let compared: Vec<(Option<CheckDiff>, Vec<Choice>)> = super::parallel_map(&jobs, threads, |job| {
        compare_check(catalog, job.rule, job.check, &job.run, &job.name, reference, target, options)
    });
    let mut differences = Vec::new();
    let mut choices = Vec::new();
    for (d, c) in compared {
        differences.extend(d);
        choices.extend(c);
    }
    DiffReport {
        schema: SCHEMA,
        reference: reference.target.describe(),
        target: target.target.describe(),
        profile: options.profile.clone(),
        seed: options.seed,
        cases: options.cases.unwrap_or(DEFAULT_CASES),
        compared: jobs.len(),
        identical: jobs.len() - differences.len(),
        unsupported,
        differences,
        choices,
    }
}

/// What one side did with a check.
struct SideRun {
    passed: bool,
    failure: Option<String>,
    steps: Vec<StepRecord>,
    sequence: Option<serde_json::Value>,
}

#[allow(clippy::too_many_arguments)]
fn compare_check(
    catalog: &Catalog,
    rule: &crate::catalog::Rule,
    check: usize,
    run: &Run,
    name: &str,
    reference: &Side<'_>,
    target: &Side<'_>,
    options: &Options,
) -> (Option<CheckDiff>, Vec<Choice>) {
    let mut options = options.clone();
    options.cases = Some(options.cases.unwrap_or(DEFAULT_CASES));
    options.snapshots = None;
    // Each side's plan takes the numbers it declares where the documents leave them to the
    // server (throttle buckets): a legal choice of numbers is no difference.
    let run_on = |side: &Side<'_>| {
        let params = super::parameters(catalog, rule, &options.profile, side.caps);
        let plan = match plan_of(rule, check, &params) {
            Ok(plan) => plan,
            Err(e) => return SideRun { passed: false, failure: Some(e), steps: Vec::new(), sequence: None },
        };
        let execution = Execution {
            target: side.target,
            caps: side.caps,
            options: &options,
            run,
            params: params.clone(),
            // The same names on both sides: they appear in requests and some answers.
            name: format!("appUser-Chris-diff-{}", name.replace("::", "-")),
            snapshot: None,
            // A property searches on each side: its verdict and minimal sequence are compared.
            mode: property::Mode::Search,
            meaning: true,
        };
        let done = super::execute(&plan, &execution);
        SideRun {
            passed: done.result.is_ok(),
            failure: done.result.err(),
            steps: done.evidence.steps,
            sequence: done.evidence.sequence,
        }
    };
    let (ours, theirs) = (run_on(reference), run_on(target));
    let verdict = |s: &SideRun| if s.passed { "passed" } else { "failed" };
    let mut choices = Vec::new();
    let mut steps = Vec::new();
    for (a, b) in ours.steps.iter().zip(&theirs.steps).filter(|(a, b)| a.key == b.key) {
        match (&a.outcome, &b.outcome) {
            (Some(x), Some(y)) if x != y => choices.push(Choice {
                check: name.into(),
                step: a.key.clone(),
                reference: x.clone(),
                target: y.clone(),
            }),
            // Judged by its expectations, on both sides: the rule says what matters.
            _ if a.expected => {}
            _ if a.text != b.text => steps.push(StepDiff {
                step: a.key.clone(),
                diff: similar::TextDiff::from_lines(&a.text, &b.text)
                    .unified_diff()
                    .context_radius(4)
                    .header("reference", "target")
                    .to_string(),
            }),
            _ => {}
        }
    }
    let sequences = match (&ours.sequence, &theirs.sequence) {
        (Some(x), Some(y)) if !ours.passed && !theirs.passed && x != y => Some((x.clone(), y.clone())),
        _ => None,
    };
    let same_verdict = ours.passed == theirs.passed;
    // A scenario both fail is the verdict's to tell: its later steps are not compared.
    let steps = if ours.passed && theirs.passed { steps } else { Vec::new() };
    if same_verdict && steps.is_empty() && sequences.is_none() {
        return (None, choices);
    }
    let diff = CheckDiff {
        name: name.to_string(),
        reference_outcome: verdict(&ours),
        target_outcome: verdict(&theirs),
        target_failure: theirs.failure,
        steps,
        sequences,
    };
    (Some(diff), choices)
}

/// The capabilities the reference side uses: those the target offers, so both sides make the
/// same calls (a target reached with fixed credentials means a fixed sender here too), with
/// the numbers the reference itself declares.
pub fn mirror(target: &Capabilities, reference: &crate::Reference) -> Capabilities {
    let params = reference.with_model(|m| m.declared_limits().server_chosen());
    let static_sender = target.static_sender.as_ref().map(|_| {
        let s = reference.with_model(|m| m.create_sender());
        crate::driver::Sender { id: s.sender_id, key: s.server_key }
    });
    Capabilities {
        control: target.control.clone(),
        profile: target.profile.clone(),
        static_sender,
        params: params.into_iter().collect(),
        note: None,
    }
}
