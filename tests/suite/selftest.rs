//! Every rule bites: the reference with that rule's fault fails it.

use std::sync::Arc;

use gcmspec::harness::{self, Options};
use gcmspec::reference::Config;
use libtest_mimic::Trial;

use crate::trial;

fn selftest(profile: &'static str) -> Result<(), String> {
    let catalog = Arc::new(gcmspec::bundled::catalog().map_err(|e| e.to_string())?);
    let config = Config::from_profile(&catalog.profiles[profile]).map_err(|e| e.to_string())?;
    let report = harness::selftest(&catalog, &config, &Options::new(profile), 2, |_| {});
    if report.passed() {
        // README quotes the default profile's line: it must be this run's.
        let readme = include_str!("../../README.md");
        if profile == "fcm" && !readme.contains(&report.summary()) {
            return Err(format!("README.md does not show this selftest's line: {}", report.summary()));
        }
        return Ok(());
    }
    let missed: Vec<String> = report.faults.iter().filter(|f| !f.caught()).map(|f| f.fault.name()).collect();
    let failed_variants: Vec<String> = report
        .variants
        .iter()
        .filter(|v| !v.failures.is_empty())
        .map(|v| format!("{}: {:?}", v.variant, v.failures))
        .collect();
    Err(format!(
        "clean reference failures: {:?}\nrules without a fault: {:?}\nfaults not caught: {missed:?}\nlegal variants failed: {failed_variants:#?}\n{}",
        report.clean_failures,
        report.rules_without_fault,
        report.summary()
    ))
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("selftest::fcm::every-fault-is-caught", || selftest("fcm")),
        trial("selftest::gcm-2013::every-fault-is-caught", || selftest("gcm-2013")),
        trial("selftest::every-fault-names-a-rule", || {
            let catalog = gcmspec::bundled::catalog().map_err(|e| e.to_string())?;
            let orphans: Vec<&str> = gcmspec::reference::Fault::ALL
                .iter()
                .map(|f| f.rule_id())
                .filter(|id| catalog.rule(id).is_none())
                .collect();
            if orphans.is_empty() { Ok(()) } else { Err(format!("faults for rules that do not exist: {orphans:?}")) }
        }),
    ]
}
