//! What `gcmspec rules` tells a reader: every rule with its sources (by document title), its
//! reading where the text is vague, the values its checks use under a profile, the limits it
//! probes, the matrix of the paths it covers (each cell run, by which trials; not applicable;
//! or not run, and why), and what each trial needs of a target. One stable serde type
//! (`gcmspec-rules/3`) serves the text and the JSON output alike.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::catalog::{AtLimit, Catalog, CheckKind, Level, Party, Path, Rule, Unit};

pub const SCHEMA: &str = "gcmspec-rules/3";

#[derive(Debug, Serialize)]
pub struct RulesView {
    pub schema: &'static str,
    pub profile: String,
    /// The matrix's columns: every path, with what it is.
    pub paths: Vec<PathView>,
    pub documents: Vec<DocumentView>,
    pub rules: Vec<RuleView>,
}

#[derive(Debug, Serialize)]
pub struct PathView {
    pub path: Path,
    pub axis: crate::catalog::Axis,
    pub description: &'static str,
}

#[derive(Debug, Serialize)]
pub struct DocumentView {
    pub id: String,
    pub title: String,
}

#[derive(Debug, Serialize)]
pub struct RuleView {
    pub id: String,
    pub title: String,
    pub level: Level,
    /// Who it binds: `server` (checked by `gcmspec run`) or `app-server` (graded from the
    /// reference's journal of what an app server sent).
    pub party: Party,
    /// An app-server rule's grader.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grader: Option<String>,
    /// The profiles it holds in; `applies` says whether the chosen one is among them.
    pub profiles: Vec<String>,
    pub applies: bool,
    pub sources: Vec<SourceView>,
    /// How the checks read the rule where the documents are vague.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reading: Option<String>,
    /// The parameters its checks use, with their values under the chosen profile (and where
    /// the target may declare its own, `server_chosen`).
    pub params: BTreeMap<String, ParamView>,
    /// Documented numbers its checks probe at n-1, n and n+1.
    pub limits: Vec<LimitView>,
    /// One cell per path (every path, in the order of `paths`).
    pub matrix: Vec<Cell>,
    pub checks: Vec<CheckView>,
}

#[derive(Debug, Serialize)]
pub struct LimitView {
    pub param: String,
    pub unit: Unit,
    pub at_limit: AtLimit,
}

/// Whether a rule's text covers a path, and what runs it.
#[derive(Debug, Serialize)]
pub struct Cell {
    pub path: Path,
    /// `run`, `not-applicable` (the text does not cover it) or `not-run` (it does; `reason`);
    /// for an app-server rule, `graded` (its grader reads what an app server does there).
    pub state: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trials: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SourceView {
    pub document: String,
    pub title: String,
    pub section: String,
    pub quote: String,
}

#[derive(Debug, Serialize)]
pub struct ParamView {
    pub value: Value,
    /// The documents give no number: a target may declare its own in its capabilities.
    pub server_chosen: bool,
}

#[derive(Debug, Serialize)]
pub struct CheckView {
    pub name: String,
    /// `scenario`, or `property` with its name.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// A property that generates from the seed.
    pub seeded: bool,
    /// Trial names and what each needs of a target beyond HTTP and a sender.
    pub trials: Vec<TrialView>,
}

#[derive(Debug, Serialize)]
pub struct TrialView {
    pub name: String,
    /// The covered paths it exercises.
    pub paths: Vec<Path>,
    /// How its generic steps go: the delivery path of its sends, the endpoint of its group
    /// operations, its tenancy.
    pub delivery: Path,
    pub endpoint: Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenancy: Option<Path>,
    pub needs: Vec<String>,
}

/// The catalogue as a reader sees it under `profile`.
pub fn view(catalog: &Catalog, profile: &str) -> RulesView {
    let documents =
        catalog.documents.values().map(|d| DocumentView { id: d.id.clone(), title: d.title.clone() }).collect();
    let rules = catalog.rules.iter().map(|r| rule_view(catalog, r, profile)).collect();
    let paths = Path::ALL.iter().map(|&p| PathView { path: p, axis: p.axis(), description: p.description() }).collect();
    RulesView { schema: SCHEMA, profile: profile.to_string(), paths, documents, rules }
}

fn rule_view(catalog: &Catalog, rule: &Rule, profile: &str) -> RuleView {
    let title_of = |id: &str| catalog.documents.get(id).map_or_else(|| id.to_string(), |d| d.title.clone());
    let sources = rule
        .sources
        .iter()
        .map(|s| SourceView {
            document: s.document.clone(),
            title: title_of(&s.document),
            section: s.section.clone(),
            quote: s.quote.clone(),
        })
        .collect();
    let vars = catalog.parameters(rule, profile);
    let used = used_names(rule);
    let params = vars
        .into_iter()
        .filter(|(k, _)| used.iter().any(|u| u == k))
        .map(|(k, value)| {
            let server_chosen = catalog.server_chosen(&k);
            (k, ParamView { value, server_chosen })
        })
        .collect();
    let checks = rule
        .checks
        .iter()
        .map(|c| {
            let (kind, property) = match &c.kind {
                CheckKind::Scenario(_) => ("scenario", None),
                CheckKind::Property { property, .. } => ("property", Some(property.clone())),
            };
            let seeded = property.as_deref().and_then(super::property::find).is_some_and(|p| p.seeded);
            let trials = c
                .runs
                .iter()
                .map(|run| TrialView {
                    name: super::trial_name(&rule.id, &c.name, run),
                    paths: run.paths.clone(),
                    delivery: run.delivery,
                    endpoint: run.endpoint,
                    tenancy: run.tenancy,
                    needs: super::needs_of(c, run),
                })
                .collect();
            CheckView { name: c.name.clone(), kind, property, seeded, trials }
        })
        .collect();
    RuleView {
        id: rule.id.clone(),
        title: rule.title.clone(),
        level: rule.level,
        party: rule.party,
        grader: rule.grader.clone(),
        profiles: rule.profiles.clone(),
        applies: rule.profiles.iter().any(|p| p == profile),
        sources,
        reading: rule.interpretation.clone(),
        params,
        limits: rule
            .limits
            .iter()
            .map(|l| LimitView { param: l.param.clone(), unit: l.unit, at_limit: l.at_limit })
            .collect(),
        matrix: matrix(rule),
        checks,
    }
}

/// A rule's row of the matrix.
pub fn matrix(rule: &Rule) -> Vec<Cell> {
    Path::ALL
        .iter()
        .map(|&path| {
            let trials: Vec<String> = rule
                .runs_on(path)
                .into_iter()
                .map(|(c, r)| super::trial_name(&rule.id, &rule.checks[c].name, &rule.checks[c].runs[r]))
                .collect();
            let (state, reason) = match (rule.covers.contains(&path), trials.is_empty()) {
                (false, _) => ("not-applicable", None),
                (true, _) if rule.party == Party::AppServer => ("graded", None),
                (true, false) => ("run", None),
                (true, true) => ("not-run", rule.not_run.get(&path).cloned()),
            };
            Cell { path, state, trials, reason }
        })
        .collect()
}

/// The matrix as a table: a row per rule, a column per path; `run` cells show how many
/// trials run them, `-` is not applicable, `!` not run (the reasons follow the table).
pub fn render_matrix(view: &RulesView) -> String {
    let short = |p: Path| match p {
        Path::Token => "tok",
        Path::Multicast => "mul",
        Path::Key => "key",
        Path::PlainText => "txt",
        Path::Xmpp => "xmp",
        Path::XmppKey => "x-k",
        Path::Server => "srv",
        Path::Client => "cli",
        Path::Lookup => "lkp",
        Path::TwoDevices => "2dv",
        Path::TwoSenders => "2sn",
    };
    let width = view.rules.iter().map(|r| r.id.len()).max().unwrap_or(10).max(10);
    let mut out =
        format!("{:<width$} ", "rule (trials per path; g graded from the journal; - not applicable; ! not run)");
    out = format!("{:<width$}", out.trim_end());
    out.push('\n');
    out.push_str(&format!("{:<width$}", ""));
    for p in &view.paths {
        out.push_str(&format!(" {:>3}", short(p.path)));
    }
    out.push('\n');
    let mut reasons = Vec::new();
    for r in view.rules.iter().filter(|r| r.applies) {
        out.push_str(&format!("{:<width$}", r.id));
        for cell in &r.matrix {
            let mark = match cell.state {
                "run" => cell.trials.len().to_string(),
                "graded" => "g".into(),
                "not-run" => {
                    reasons.push(format!("  {} on {}: {}", r.id, cell.path, cell.reason.as_deref().unwrap_or("")));
                    "!".into()
                }
                _ => "-".into(),
            };
            out.push_str(&format!(" {mark:>3}"));
        }
        out.push('\n');
    }
    out.push_str("\npaths:\n");
    for p in &view.paths {
        out.push_str(&format!("  {} = {} ({}): {}\n", short(p.path), p.path, p.axis, p.description));
    }
    if !reasons.is_empty() {
        out.push_str("\nnot run, and why:\n");
        out.push_str(&reasons.join("\n"));
        out.push('\n');
    }
    out
}

/// Names a rule's checks refer to: in `${...}` expressions of their steps and parameters,
/// in its title (`max_members`), and the parameters its properties read.
fn used_names(rule: &Rule) -> Vec<String> {
    let mut text = rule.title.clone();
    for check in &rule.checks {
        match &check.kind {
            CheckKind::Scenario(steps) => text.push_str(&serde_json::to_string(steps).unwrap_or_default()),
            CheckKind::Property { property, params } => {
                text.push_str(&serde_json::to_string(params).unwrap_or_default());
                if let Some(p) = super::property::find(property) {
                    text.push_str(&p.params.join(" "));
                }
            }
        }
    }
    let mut names: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.contains('_') || rule.params.contains_key(*w))
        .map(str::to_string)
        .collect();
    names.extend(rule.params.keys().cloned());
    names.sort();
    names.dedup();
    names
}

/// The view as text, a rule a paragraph.
pub fn render_text(view: &RulesView) -> String {
    let mut out = String::new();
    out.push_str(&format!("Rules under profile {} (documents below).\n\n", view.profile));
    for r in &view.rules {
        let not_here = if r.applies { String::new() } else { format!(" (not in profile {})", view.profile) };
        out.push_str(&format!("{} [{}, {}] {}{not_here}\n", r.id, r.level, r.party, r.title));
        for s in &r.sources {
            out.push_str(&format!("    from {} ({}), {}:\n      \"{}\"\n", s.title, s.document, s.section, s.quote));
        }
        if let Some(reading) = &r.reading {
            out.push_str(&format!("    reading: {reading}\n"));
        }
        if !r.params.is_empty() {
            let params: Vec<String> = r
                .params
                .iter()
                .map(|(k, p)| {
                    let chosen = if p.server_chosen { " (the server's to declare)" } else { "" };
                    format!("{k} = {}{chosen}", p.value)
                })
                .collect();
            out.push_str(&format!("    values: {}\n", params.join(", ")));
        }
        for l in &r.limits {
            let at = match l.at_limit {
                AtLimit::Within => "n is within",
                AtLimit::Either => "the text leaves n open",
            };
            out.push_str(&format!("    limit: {} in {} (probed at n-1, n, n+1; {at})\n", l.param, l.unit.name()));
        }
        let covered: Vec<String> = r
            .matrix
            .iter()
            .filter(|c| c.state != "not-applicable")
            .map(|c| match (&c.reason, c.state) {
                (Some(why), _) => format!("{} (not run: {why})", c.path),
                _ => c.path.to_string(),
            })
            .collect();
        if !covered.is_empty() {
            out.push_str(&format!("    covers: {}\n", covered.join(", ")));
        }
        out.push_str(&format!("    profiles: {}\n", r.profiles.join(", ")));
        if let Some(grader) = &r.grader {
            out.push_str(&format!(
                "    graded by {grader}, from the journal of what an app server sends the reference\n"
            ));
        }
        for c in &r.checks {
            let kind = match &c.property {
                Some(p) if c.seeded => format!("property {p}, random from the seed"),
                Some(p) => format!("property {p}"),
                None => "scenario".into(),
            };
            for t in &c.trials {
                let needs = if t.needs.is_empty() { "a sender".to_string() } else { t.needs.join(", ") };
                let paths = if t.paths.is_empty() {
                    String::new()
                } else {
                    format!("on {}; ", t.paths.iter().map(|p| p.name()).collect::<Vec<_>>().join(", "))
                };
                out.push_str(&format!("    check {} ({kind}; {paths}needs {needs})\n", t.name));
            }
        }
        out.push('\n');
    }
    out.push_str("Documents:\n");
    for d in &view.documents {
        out.push_str(&format!("    {}: {}\n", d.id, d.title));
    }
    out.push_str("\nThe paths each rule covers:\n\n");
    out.push_str(&render_matrix(view));
    out
}
