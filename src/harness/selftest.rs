//! `gcmspec selftest`: every rule bites, and every legal variant passes.
//!
//! Each fault (designed, or generated from the coverage model: a rule ignored on one path, a
//! limit one step off or counted in another unit, state shared the wrong way between
//! tenants) is switched on in a reference of its own, and its rule's checks run against it:
//! some check of that rule must fail, on the path the fault breaks where it breaks one, and
//! not only by the luck of a seed. Each legal variant runs the whole suite, which must pass.

use std::sync::Arc;

use super::{Case, Options, cases, run_cases};
use crate::catalog::{Catalog, Level, Path};
use crate::driver::{Capabilities, InProcess, Target};
use crate::reference::generated::{self, Generated, Unmade};
use crate::reference::{self, Fault, Faults, Reference, Variant, Variants};

/// A designed fault, or one the coverage model generated.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum AnyFault {
    Designed(Fault),
    Generated(Generated),
}

impl AnyFault {
    pub fn name(&self) -> String {
        match self {
            AnyFault::Designed(f) => f.name().to_string(),
            AnyFault::Generated(g) => g.name(),
        }
    }

    pub fn description(&self) -> String {
        match self {
            AnyFault::Designed(f) => f.description().to_string(),
            AnyFault::Generated(g) => g.description(),
        }
    }

    pub fn rule_id(&self) -> &str {
        match self {
            AnyFault::Designed(f) => f.rule_id(),
            AnyFault::Generated(g) => g.rule_id(),
        }
    }

    /// The path a catching check must run, for a fault that breaks one path only.
    pub fn path(&self) -> Option<Path> {
        match self {
            AnyFault::Designed(_) => None,
            AnyFault::Generated(g) => g.path(),
        }
    }

    fn faults(&self) -> Faults {
        match self {
            AnyFault::Designed(f) => Faults::new([*f]),
            AnyFault::Generated(g) => Faults::default().with_generated([g.clone()]),
        }
    }
}

/// Every fault the self-test runs for the catalogue: the designed ones, then the generated.
pub fn all_faults(catalog: &Catalog) -> (Vec<AnyFault>, Vec<Unmade>) {
    let (made, unmade) = generated::generated(catalog);
    let faults =
        Fault::ALL.iter().copied().map(AnyFault::Designed).chain(made.into_iter().map(AnyFault::Generated)).collect();
    (faults, unmade)
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
    /// What the coverage model could not generate a fault for, and why.
    pub unmade: Vec<Unmade>,
    /// For each legal variant: the checks that failed against it (there should be none).
    pub variants: Vec<VariantVerdict>,
}

#[derive(Debug)]
pub struct FaultVerdict {
    pub fault: AnyFault,
    /// The checks of its rule (on its path, where it breaks one) that failed.
    pub caught_by: Vec<String>,
    /// Caught only by properties that generate from the seed: another seed might miss it.
    pub only_by_chance: bool,
    /// For a fault of a SHOULD rule, the MUST checks of other rules it fails: what breaks only a
    /// SHOULD must fail no MUST (there should be none).
    pub fails_musts: Vec<String>,
}

impl FaultVerdict {
    pub fn caught(&self) -> bool {
        !self.caught_by.is_empty() && !self.only_by_chance && self.fails_musts.is_empty()
    }
}

#[derive(Debug)]
pub struct VariantVerdict {
    pub variant: Variant,
    pub failures: Vec<(String, String)>,
}

impl SelftestReport {
    /// Faults caught by a check that does not depend on the seed.
    pub fn caught(&self) -> usize {
        self.faults.iter().filter(|f| f.caught()).count()
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
    /// The closing line: `faults caught: X/Y (designed A/B, generated C/D), legal variants passed: E/F`.
    pub fn summary(&self) -> String {
        let count = |generated: bool| {
            let of: Vec<&FaultVerdict> =
                self.faults.iter().filter(|f| matches!(f.fault, AnyFault::Generated(_)) == generated).collect();
            (of.iter().filter(|f| f.caught()).count(), of.len())
        };
        let ((dc, dn), (gc, gn)) = (count(false), count(true));
        format!(
            "faults caught: {}/{} (designed {dc}/{dn}, generated {gc}/{gn}), legal variants passed: {}/{}",
            self.caught(),
            self.faults.len(),
            self.variants_passed(),
            self.variants.len()
        )
    }
}

/// Runs the suite against the clean reference; each fault's rule against the reference with
/// that fault (some check of it must fail); and the whole suite against the reference in each
/// legal variant (every check must pass). Snapshots are off: a fault must be caught by a check,
/// and a variant may answer in another shape.
pub fn selftest(
    catalog: &Arc<Catalog>,
    config: &reference::Config,
    options: &Options,
    threads: usize,
    mut progress: impl FnMut(&str),
) -> SelftestReport {
    let mut options = options.clone();
    options.snapshots = None;
    // Where every check must pass (the clean reference, a legal variant, a SHOULD fault's
    // look at other rules' MUSTs), an answer gets the whole wait: on a loaded machine one
    // late by 500 ms failed the clean run. Where a fault's own rule must fail, a fault that
    // withholds an answer should not cost a network-sized wait on each of its checks.
    let patient = Arc::new(options.clone());
    options.xmpp_timeout = options.xmpp_timeout.min(std::time::Duration::from_millis(500));
    let options = Arc::new(options);
    let bind_with = |faults: Faults, variants: Variants, options: &Arc<Options>| -> Vec<Case> {
        let mut config = config.clone();
        config.faults = faults;
        config.variants = variants;
        let target: Arc<dyn Target> = Arc::new(InProcess::new(Reference::new(config)));
        let caps = Arc::new(Capabilities::probe(target.as_ref()).unwrap_or_default());
        cases(catalog, target, caps, options)
    };
    let bind = |faults: Faults, variants: Variants| bind_with(faults, variants, &patient);
    let failures = |cases: &[Case]| -> Vec<(String, String)> {
        run_cases(cases, threads).into_iter().filter_map(|(name, r)| r.err().map(|e| (name, e))).collect()
    };
    let mut report = SelftestReport::default();
    for (name, e) in failures(&bind(Faults::default(), Variants::default())) {
        progress(&format!("clean reference FAILED {name}: {e}"));
        report.clean_failures.push((name, e));
    }
    let in_profile = |id: &str| catalog.rule(id).is_some_and(|r| r.profiles.contains(&options.profile));
    for rule in catalog.server_rules().filter(|r| in_profile(&r.id)) {
        if !Fault::ALL.iter().any(|f| f.rule_id() == rule.id) {
            progress(&format!("rule  {:<40} NO FAULT: nothing shows that this rule bites", rule.id));
            report.rules_without_fault.push(rule.id.clone());
        }
    }
    let (faults, unmade) = all_faults(catalog);
    for u in unmade.iter().filter(|u| in_profile(&u.rule)) {
        progress(&format!("rule  {:<40} no generated fault for {}", u.rule, u.what));
    }
    report.unmade = unmade.into_iter().filter(|u| in_profile(&u.rule)).collect();
    for fault in faults.into_iter().filter(|f| in_profile(f.rule_id())) {
        let all = bind_with(fault.faults(), Variants::default(), &options);
        let should = catalog.rule(fault.rule_id()).is_some_and(|r| r.level == Level::Should);
        // A SHOULD broken must fail no MUST of another rule: that would ask more than the text.
        let fails_musts: Vec<String> = if should {
            let musts: Vec<Case> = bind(fault.faults(), Variants::default())
                .into_iter()
                .filter(|c| c.level == Level::Must && c.rule_id != fault.rule_id())
                .collect();
            failures(&musts).into_iter().map(|(name, _)| name).collect()
        } else {
            Vec::new()
        };
        // Only its rule's checks, and where it breaks one path, only those that run it.
        let cases: Vec<Case> = all
            .into_iter()
            .filter(|c| c.rule_id == fault.rule_id())
            .filter(|c| fault.path().is_none_or(|p| c.paths.contains(&p)))
            .collect();
        let caught_by: Vec<String> = failures(&cases).into_iter().map(|(name, _)| name).collect();
        let seeded = |name: &String| cases.iter().find(|c| &c.name == name).is_some_and(|c| c.seeded);
        let only_by_chance = !caught_by.is_empty() && caught_by.iter().all(seeded);
        let verdict = match (caught_by.is_empty(), only_by_chance, cases.is_empty()) {
            _ if !fails_musts.is_empty() => {
                format!("a SHOULD broken, yet MUST checks of other rules FAIL: {}", fails_musts.join(", "))
            }
            (_, _, true) => "NOT CAUGHT: no check of the rule runs that path".to_string(),
            (true, _, _) => "NOT CAUGHT".to_string(),
            (false, true, _) => format!("caught only by chance (a seeded property): {}", caught_by.join(", ")),
            (false, false, _) => format!("caught by {}", caught_by.join(", ")),
        };
        progress(&format!("fault {:<56} ({}): {verdict}", fault.name(), fault.description()));
        report.faults.push(FaultVerdict { fault, caught_by, only_by_chance, fails_musts });
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
