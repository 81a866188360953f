//! Differential runs: the same checks, and the same generated property sequences, against the
//! reference and a target, compared exchange by exchange after normalization.
//!
//! Where a conformance run asks "does the target keep each rule?", a differential run asks
//! "where does the target answer differently from the reference?", which also catches what no
//! rule pins down (an extra field, another error text). Both sides get the same plan, the same
//! group names and the same property seed (properties run a fixed sample of sequences rather
//! than a search, so both see the same ones); each side's run-specific values (keys, ids) are
//! named by a [`Redactor`] of its own, so only real differences remain.

use serde::Serialize;

use super::evidence::Exchange;
use super::snapshot::Redactor;
use super::{Execution, Options, plan_of, property, transport_suffix};
use crate::catalog::Catalog;
use crate::driver::{Capabilities, Target};

pub const SCHEMA: &str = "gcmspec-diff/1";

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
    pub identical: usize,
    /// Checks the target lacks a capability for.
    pub unsupported: Vec<String>,
    /// The checks whose normalized exchanges differ.
    pub differences: Vec<CheckDiff>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckDiff {
    pub name: String,
    /// `passed` or `failed` on each side; `sampled` for a property whose sampled sequences
    /// ran (they are compared, not judged).
    pub reference_outcome: &'static str,
    pub target_outcome: &'static str,
    pub reference_exchanges: usize,
    pub target_exchanges: usize,
    /// The exchanges that differ, aligned (an extra or missing exchange does not shift the
    /// rest): positions from 1 on each side, absent where that side has no counterpart.
    pub differing: Vec<Differing>,
    /// A unified diff of the first differing exchange: reference, then target.
    pub first: String,
    /// A unified diff of every differing exchange, in the order of `differing`.
    pub diffs: Vec<String>,
}

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
        transport: String,
    }
    let mut jobs = Vec::new();
    let mut unsupported = Vec::new();
    for rule in catalog.rules.iter().filter(|r| r.profiles.contains(&options.profile)) {
        for (i, check) in rule.checks.iter().enumerate() {
            for transport in &check.transports {
                let name = format!("{}::{}{}", rule.id, check.name, transport_suffix(transport));
                if !select(&name) {
                    continue;
                }
                let needs = super::needs_of(check, transport);
                if super::missing(target.caps, &needs).is_some() || super::missing(reference.caps, &needs).is_some() {
                    unsupported.push(name);
                } else {
                    jobs.push(Job { name, rule, check: i, transport: transport.clone() });
                }
            }
        }
    }
    let differences: Vec<CheckDiff> = super::parallel_map(&jobs, threads, |job| {
        compare_check(catalog, job.rule, job.check, &job.transport, &job.name, reference, target, options)
    })
    .into_iter()
    .flatten()
    .collect();
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
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Differing {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<usize>,
}

/// Aligns two sequences of normalized exchanges (a shortest edit script) and lists what
/// does not match: changed pairs, and exchanges only one side made.
fn align(ours: &[String], theirs: &[String]) -> Vec<Differing> {
    use similar::DiffOp;
    let mut out = Vec::new();
    let one = |r: Option<usize>, t: Option<usize>| Differing { reference: r.map(|i| i + 1), target: t.map(|i| i + 1) };
    for op in similar::capture_diff_slices(similar::Algorithm::Myers, ours, theirs) {
        match op {
            DiffOp::Equal { .. } => {}
            DiffOp::Delete { old_index, old_len, .. } => {
                out.extend((old_index..old_index + old_len).map(|i| one(Some(i), None)))
            }
            DiffOp::Insert { new_index, new_len, .. } => {
                out.extend((new_index..new_index + new_len).map(|j| one(None, Some(j))))
            }
            DiffOp::Replace { old_index, old_len, new_index, new_len } => {
                for k in 0..old_len.max(new_len) {
                    out.push(one((k < old_len).then_some(old_index + k), (k < new_len).then_some(new_index + k)));
                }
            }
        }
    }
    out
}

/// Generated sequences per property when `--cases` is not given: enough to exercise each
/// operation, few enough to run both sides quickly.
pub const DEFAULT_CASES: u32 = 8;

#[allow(clippy::too_many_arguments)]
fn compare_check(
    catalog: &Catalog,
    rule: &crate::catalog::Rule,
    check: usize,
    transport: &str,
    name: &str,
    reference: &Side<'_>,
    target: &Side<'_>,
    options: &Options,
) -> Option<CheckDiff> {
    let mut options = options.clone();
    options.cases = Some(options.cases.unwrap_or(DEFAULT_CASES));
    options.snapshots = None;
    // The target's plan: the target's declared numbers (the reference side mirrors them).
    let params = super::parameters(catalog, rule, &options.profile, target.caps);
    let plan = match plan_of(rule, check, &params) {
        Ok(plan) => plan,
        Err(_) => return None,
    };
    let run_on = |side: &Side<'_>| {
        let execution = Execution {
            target: side.target,
            caps: side.caps,
            options: &options,
            transport,
            params: params.clone(),
            // The same names on both sides: they appear in requests and some answers.
            name: format!("appUser-Chris-diff-{}", name.replace("::", "-")),
            snapshot: None,
            mode: property::Mode::Sample,
        };
        let run = super::execute(&plan, &execution);
        let texts = normalize(&run.evidence.exchanges, side.caps);
        // A sampled property is not judged, only compared.
        let outcome = match (&plan, &run.result) {
            (super::Plan::Property { .. }, Ok(())) => "sampled",
            (_, Ok(())) => "passed",
            (_, Err(_)) => "failed",
        };
        (outcome, texts)
    };
    let (reference_outcome, ours) = run_on(reference);
    let (target_outcome, theirs) = run_on(target);
    let differing = align(&ours, &theirs);
    if differing.is_empty() && reference_outcome == target_outcome {
        return None;
    }
    let nothing = "(no such exchange)\n".to_string();
    let pick = |side: &[String], at: Option<usize>| at.and_then(|n| side.get(n - 1)).unwrap_or(&nothing).clone();
    let label = |side: &str, at: Option<usize>| at.map_or(format!("{side} (none)"), |n| format!("{side} #{n}"));
    let diffs: Vec<String> = differing
        .iter()
        .map(|d| {
            let (a, b) = (pick(&ours, d.reference), pick(&theirs, d.target));
            similar::TextDiff::from_lines(&a, &b)
                .unified_diff()
                .context_radius(4)
                .header(&label("reference", d.reference), &label("target", d.target))
                .to_string()
        })
        .collect();
    let first = diffs.first().cloned().unwrap_or_default();
    Some(CheckDiff {
        name: name.to_string(),
        reference_outcome,
        target_outcome,
        reference_exchanges: ours.len(),
        target_exchanges: theirs.len(),
        differing,
        first,
        diffs,
    })
}

/// Each exchange as normalized text, run-specific values named by where they first appeared,
/// and what servers may word or time differently named too ([`Redactor::for_meaning`]).
pub fn normalize(exchanges: &[Exchange], caps: &Capabilities) -> Vec<String> {
    let mut redactor = Redactor::for_meaning();
    if let Some(sender) = &caps.static_sender {
        redactor.learn("sender", &sender.to_json());
    }
    exchanges
        .iter()
        // Unnumbered, so that one extra exchange does not make every later one differ.
        .map(|x| redactor.exchange("exchange", &x.request, &x.response))
        .collect()
}

/// The capabilities the reference side uses: those the target offers, so both sides make the
/// same calls; a target reached with fixed credentials means a fixed sender here too.
pub fn mirror(target: &Capabilities, reference: &crate::Reference) -> Capabilities {
    let static_sender = target.static_sender.as_ref().map(|_| {
        let s = reference.with_model(|m| m.create_sender());
        crate::driver::Sender { id: s.sender_id, key: s.server_key }
    });
    Capabilities {
        control: target.control.clone(),
        profile: target.profile.clone(),
        static_sender,
        params: target.params.clone(),
        note: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_extra_exchange_does_not_shift_the_rest() {
        let ours = texts(&["a", "b", "c", "d"]);
        let theirs = texts(&["a", "x", "b", "c", "e"]);
        assert_eq!(
            align(&ours, &theirs),
            vec![Differing { reference: None, target: Some(2) }, Differing { reference: Some(4), target: Some(5) },]
        );
        assert!(align(&ours, &ours).is_empty());
        // A target that stopped early: what it never sent is listed on the reference side.
        assert_eq!(
            align(&ours, &texts(&["a", "b"])),
            vec![Differing { reference: Some(3), target: None }, Differing { reference: Some(4), target: None }]
        );
    }
}
