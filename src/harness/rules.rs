//! What `gcmspec rules` tells a reader: every rule with its sources (by document title), its
//! reading where the text is vague, the values its checks use under a profile, and what each
//! check needs of a target over each transport. One stable serde type (`gcmspec-rules/1`)
//! serves the text and the JSON output alike.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::catalog::{Catalog, CheckKind, Level, Rule};

pub const SCHEMA: &str = "gcmspec-rules/1";

#[derive(Debug, Serialize)]
pub struct RulesView {
    pub schema: &'static str,
    pub profile: String,
    pub documents: Vec<DocumentView>,
    pub rules: Vec<RuleView>,
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
    pub checks: Vec<CheckView>,
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
    pub transport: String,
    pub needs: Vec<String>,
}

/// The catalogue as a reader sees it under `profile`.
pub fn view(catalog: &Catalog, profile: &str) -> RulesView {
    let documents =
        catalog.documents.values().map(|d| DocumentView { id: d.id.clone(), title: d.title.clone() }).collect();
    let rules = catalog.rules.iter().map(|r| rule_view(catalog, r, profile)).collect();
    RulesView { schema: SCHEMA, profile: profile.to_string(), documents, rules }
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
                .transports
                .iter()
                .map(|t| {
                    let mut needs = super::needs_of(c, t);
                    needs.sort();
                    needs.dedup();
                    TrialView {
                        name: format!("{}::{}{}", rule.id, c.name, super::transport_suffix(t)),
                        transport: t.clone(),
                        needs,
                    }
                })
                .collect();
            CheckView { name: c.name.clone(), kind, property, seeded, trials }
        })
        .collect();
    RuleView {
        id: rule.id.clone(),
        title: rule.title.clone(),
        level: rule.level,
        profiles: rule.profiles.clone(),
        applies: rule.profiles.iter().any(|p| p == profile),
        sources,
        reading: rule.interpretation.clone(),
        params,
        checks,
    }
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
        out.push_str(&format!("{} [{}] {}{not_here}\n", r.id, r.level, r.title));
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
        out.push_str(&format!("    profiles: {}\n", r.profiles.join(", ")));
        for c in &r.checks {
            let kind = match &c.property {
                Some(p) if c.seeded => format!("property {p}, random from the seed"),
                Some(p) => format!("property {p}"),
                None => "scenario".into(),
            };
            for t in &c.trials {
                let needs = if t.needs.is_empty() { "a sender".to_string() } else { t.needs.join(", ") };
                out.push_str(&format!("    check {} ({kind}; needs {needs})\n", t.name));
            }
        }
        out.push('\n');
    }
    out.push_str("Documents:\n");
    for d in &view.documents {
        out.push_str(&format!("    {}: {}\n", d.id, d.title));
    }
    out
}
