//! Faults made from the coverage model, beside the designed ones: for each rule and each path
//! it covers, the rule ignored on that path (its designed fault, there only); for each limit,
//! the number one step outside what the text allows, on either side, and counted in another
//! unit; for each tenancy a rule covers, its state shared the wrong way (kept per sender
//! rather than per device, or per sender on a device rather than for the device).
//!
//! [`generated`] lists them from a catalogue; the reference breaks what it is told through
//! [`super::Faults`] at the same places it keeps the rules. A fault it cannot make is not
//! listed, and the list says so (`gcmspec selftest --list`), so a path or a limit nobody can
//! break is seen, not silently skipped.

use std::fmt;

use super::faults::Fault;
use crate::catalog::{AtLimit, Axis, Catalog, Path, Unit};

/// A fault the coverage model generates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Generated {
    /// The rule's designed fault, on this path only: the rule ignored there.
    OnPath { fault: Fault, path: Path },
    /// A documented number taken one step outside what the text allows (`delta` from the
    /// reference's own reading of it).
    Limit { rule: String, param: String, off: Off, delta: i64 },
    /// A documented number counted in another unit.
    Unit { rule: String, param: String, unit: WrongUnit },
    /// State the text keeps for a device shared the wrong way: with `two-devices`, kept per
    /// sender across its devices; with `two-senders`, kept per sender on the device.
    Scope { rule: String, tenancy: Path },
}

/// Which side of the limit a [`Generated::Limit`] falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Off {
    Under,
    Over,
}

/// Another unit a limit is counted in, as real servers did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WrongUnit {
    /// Characters, not bytes: multibyte text is undercounted.
    Characters,
    /// The data object as serialized JSON, not its keys and values.
    SerializedJson,
    /// The ids a request lists (a duplicate, an id already a member), not the members.
    RequestEntries,
    /// time_to_live read as minutes.
    Minutes,
    /// Only the ids that are registrations, not every entry.
    ValidIds,
    /// A number of seconds read as milliseconds.
    Milliseconds,
}

impl WrongUnit {
    pub fn name(self) -> &'static str {
        match self {
            WrongUnit::Characters => "characters",
            WrongUnit::SerializedJson => "serialized-json",
            WrongUnit::RequestEntries => "request-entries",
            WrongUnit::Minutes => "minutes",
            WrongUnit::ValidIds => "valid-ids",
            WrongUnit::Milliseconds => "milliseconds",
        }
    }

    fn description(self) -> &'static str {
        match self {
            WrongUnit::Characters => "counts characters, not bytes",
            WrongUnit::SerializedJson => "counts the data object's JSON text, not its keys and values",
            WrongUnit::RequestEntries => "counts the ids a request lists, not the devices they make members",
            WrongUnit::Minutes => "reads time_to_live as minutes",
            WrongUnit::ValidIds => "counts only the entries that are registration ids",
            WrongUnit::Milliseconds => "reads the number of seconds as milliseconds",
        }
    }
}

/// Where the reference's own reading of a limit sits when the text leaves n open: the first
/// value past the limit is n (`Low`) or n+1 (`High`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Low,
    High,
}

/// The limits the reference can take off by one, and its reading of each.
fn reading(param: &str) -> Option<Reading> {
    Some(match param {
        // Discards on passing the limit (the 101st), not on reaching it.
        "max_stored_messages" => Reading::High,
        // A message is gone once its time to live has passed: at exactly n seconds.
        "default_ttl_seconds" | "ttl_seconds" => Reading::Low,
        "max_members"
        | "max_collapse_keys"
        | "max_ttl_seconds"
        | "max_payload_bytes"
        | "max_payload_bytes_ios"
        | "max_senders"
        | "max_registration_ids"
        | "max_pending_per_connection"
        | "throttle_initial_tokens"
        | "throttle_grant_tokens"
        | "throttle_grant_interval_seconds" => Reading::Low,
        _ => return None,
    })
}

/// The other units the reference can count a limit in.
fn wrong_units(param: &str, unit: Unit) -> &'static [WrongUnit] {
    match (param, unit) {
        ("max_payload_bytes" | "max_payload_bytes_ios", Unit::Bytes) => {
            &[WrongUnit::Characters, WrongUnit::SerializedJson]
        }
        ("max_members", Unit::Members) => &[WrongUnit::RequestEntries],
        ("ttl_seconds", Unit::Seconds) => &[WrongUnit::Minutes],
        ("throttle_grant_interval_seconds", Unit::Seconds) => &[WrongUnit::Milliseconds],
        ("max_registration_ids", Unit::Ids) => &[WrongUnit::ValidIds],
        _ => &[],
    }
}

/// The rules whose tenancy the reference can break, and how.
pub(super) fn scope_supported(rule: &str, tenancy: Path) -> bool {
    matches!(
        (rule, tenancy),
        (rules::STORED_LIMIT | rules::COLLAPSE_KEY_LIMIT, Path::TwoDevices | Path::TwoSenders)
            | (rules::THROTTLE_PER_APPLICATION | rules::COLLAPSE_REPLACES, Path::TwoDevices)
            | (rules::LOOKUP | rules::KEY_NOT_FOUND, Path::TwoSenders)
    )
}

/// The ids of the rules whose state the reference keeps per tenant, where it breaks them.
pub mod rules {
    pub const STORED_LIMIT: &str = "lifetime.stored-limit";
    pub const COLLAPSE_KEY_LIMIT: &str = "lifetime.collapse-key.limit";
    pub const COLLAPSE_REPLACES: &str = "lifetime.collapse-key.replaces";
    pub const THROTTLE_PER_APPLICATION: &str = "lifetime.throttle.per-application";
    pub const LOOKUP: &str = "group.lookup";
    pub const KEY_NOT_FOUND: &str = "group.key.not-found";
}

/// What [`generated`] could not make, and why: a coverage the self-test cannot show biting.
#[derive(Debug, Clone)]
pub struct Unmade {
    pub rule: String,
    pub what: String,
}

/// Every fault the coverage model generates for the catalogue's rules, and what it could not.
pub fn generated(catalog: &Catalog) -> (Vec<Generated>, Vec<Unmade>) {
    let mut out = Vec::new();
    let mut unmade = Vec::new();
    for rule in catalog.server_rules() {
        let designed = Fault::ALL.iter().copied().find(|f| f.name() == rule.id);
        for axis in [Axis::Delivery, Axis::Group] {
            let run: Vec<Path> =
                rule.covers.iter().copied().filter(|p| p.axis() == axis && !rule.runs_on(*p).is_empty()).collect();
            // On a rule's only path of an axis, the designed fault is that path's already.
            if run.len() < 2 {
                continue;
            }
            match designed {
                Some(fault) => out.extend(run.into_iter().map(|path| Generated::OnPath { fault, path })),
                None => unmade.push(Unmade {
                    rule: rule.id.clone(),
                    what: format!("its {axis} paths: no designed fault to restrict"),
                }),
            }
        }
        for limit in &rule.limits {
            let Some(reading) = reading(&limit.param) else {
                unmade.push(Unmade {
                    rule: rule.id.clone(),
                    what: format!("limit `{}`: the reference cannot take it off by one", limit.param),
                });
                continue;
            };
            for off in [Off::Under, Off::Over] {
                let delta = match (limit.at_limit, reading, off) {
                    (AtLimit::Within, _, Off::Under) | (AtLimit::Either, Reading::Low, Off::Under) => -1,
                    (AtLimit::Either, Reading::High, Off::Under) => -2,
                    (AtLimit::Within, _, Off::Over) | (AtLimit::Either, Reading::High, Off::Over) => 1,
                    (AtLimit::Either, Reading::Low, Off::Over) => 2,
                };
                out.push(Generated::Limit { rule: rule.id.clone(), param: limit.param.clone(), off, delta });
            }
            for &unit in wrong_units(&limit.param, limit.unit) {
                out.push(Generated::Unit { rule: rule.id.clone(), param: limit.param.clone(), unit });
            }
        }
        for &tenancy in rule.covers.iter().filter(|p| p.axis() == Axis::Tenancy) {
            if rule.runs_on(tenancy).is_empty() {
                continue;
            }
            if scope_supported(&rule.id, tenancy) {
                out.push(Generated::Scope { rule: rule.id.clone(), tenancy });
            } else {
                unmade.push(Unmade {
                    rule: rule.id.clone(),
                    what: format!("{tenancy}: the rule's own checks set it up, and its designed fault breaks it"),
                });
            }
        }
    }
    (out, unmade)
}

impl Generated {
    /// The id of the rule it breaks.
    pub fn rule_id(&self) -> &str {
        match self {
            Generated::OnPath { fault, .. } => fault.rule_id(),
            Generated::Limit { rule, .. } | Generated::Unit { rule, .. } | Generated::Scope { rule, .. } => rule,
        }
    }

    /// The path a check must run to catch it, where it breaks one path only.
    pub fn path(&self) -> Option<Path> {
        match self {
            Generated::OnPath { path, .. } => Some(*path),
            Generated::Scope { tenancy, .. } => Some(*tenancy),
            _ => None,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Generated::OnPath { fault, path } => format!("{}@{path}", fault.name()),
            Generated::Limit { rule, param, off: Off::Under, .. } => format!("{rule}:{param}:one-under"),
            Generated::Limit { rule, param, off: Off::Over, .. } => format!("{rule}:{param}:one-over"),
            Generated::Unit { rule, param, unit } => format!("{rule}:{param}:in-{}", unit.name()),
            Generated::Scope { rule, tenancy: Path::TwoSenders } => format!("{rule}:per-sender-on-device"),
            Generated::Scope { rule, .. } => format!("{rule}:per-sender"),
        }
    }

    pub fn description(&self) -> String {
        match self {
            Generated::OnPath { fault, path } => format!("on the {path} path only: {}", fault.description()),
            Generated::Limit { param, off, delta, .. } => {
                let side = if *off == Off::Under { "under" } else { "over" };
                format!("takes {param} one step {side} what the text allows (the reference's reading {delta:+})")
            }
            Generated::Unit { param, unit, .. } => format!("{param}: {}", unit.description()),
            Generated::Scope { tenancy: Path::TwoSenders, .. } => {
                "keeps what the text keeps for a device for each sender on it".into()
            }
            Generated::Scope { .. } => {
                "keeps what the text keeps for each device for each sender, across its devices".into()
            }
        }
    }
}

impl fmt::Display for Generated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}
