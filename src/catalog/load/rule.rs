//! A rule and its checks: ids, levels, sources, profiles, needs and parameters.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{Cx, valid_id};
use crate::catalog::tree::{Node, NodeValue};
use crate::catalog::*;

impl Cx<'_> {
    pub(super) fn rule(&mut self, node: &Node, catalog: &Catalog) -> Option<Rule> {
        let id = self.string(node, "id", "rule", true);
        let field = format!("rule[{}]", id.as_deref().unwrap_or("?"));
        let entries = self.table(node, &field)?;
        self.only(
            entries,
            &["id", "title", "level", "source", "interpretation", "profiles", "needs", "params", "check"],
            &field,
        );
        if let Some(id) = &id
            && !valid_id(id)
        {
            self.err(
                &node.span,
                &format!("{field}.id"),
                "ids are lowercase dotted words (`group.member-cap`), with at least one dot",
            );
        }
        let title = self.string(node, "title", &field, true);
        let level = match node.get("level").map(|n| (n.as_str(), n)) {
            Some((Some("must"), _)) => Some(Level::Must),
            Some((Some("should"), _)) => Some(Level::Should),
            Some((Some("may"), _)) => Some(Level::May),
            Some((_, n)) => {
                self.err(&n.span, &format!("{field}.level"), "expected \"must\", \"should\" or \"may\"");
                None
            }
            None => {
                self.err(&node.span, &field, "missing field `level`");
                None
            }
        };
        let mut sources = Vec::new();
        match node.get("source").map(|n| &n.value) {
            Some(NodeValue::Array(items)) => {
                for (i, s) in items.iter().enumerate() {
                    sources.extend(self.source(s, &format!("{field}.source[{i}]")));
                }
            }
            Some(NodeValue::Table(_)) => sources.extend(self.source(node.get("source")?, &format!("{field}.source"))),
            Some(_) => self.err(
                &node.get("source")?.span,
                &format!("{field}.source"),
                "expected a table or an array of tables",
            ),
            None => self.err(&node.span, &field, "missing field `source`: every rule quotes where it comes from"),
        }
        let interpretation = self.string(node, "interpretation", &field, false);
        let profiles = match self.strings(node, "profiles", &field) {
            Some(ps) => {
                for (p, span) in &ps {
                    if !catalog.profiles.contains_key(p) {
                        self.err(span, &format!("{field}.profiles"), &format!("unknown profile `{p}`"));
                    }
                }
                ps.into_iter().map(|p| p.0).collect()
            }
            None => catalog.profiles.keys().cloned().collect::<Vec<_>>(),
        };
        let mut needs: BTreeSet<String> = BTreeSet::new();
        for (n, span) in self.strings(node, "needs", &field).unwrap_or_default() {
            if !CAPABILITIES.contains(&n.as_str()) && !TRANSPORTS.contains(&n.as_str()) {
                self.err(
                    &span,
                    &format!("{field}.needs"),
                    &format!("unknown capability `{n}` (known: {})", CAPABILITIES.join(", ")),
                );
            }
            needs.insert(n);
        }
        let params: BTreeMap<String, Value> = match node.get("params") {
            Some(p) => match self.table(p, &format!("{field}.params")) {
                Some(e) => e.iter().map(|(k, _, v)| (k.clone(), v.to_json())).collect(),
                None => BTreeMap::new(),
            },
            None => BTreeMap::new(),
        };

        // Names a scenario may read before defining any: builtins, rule parameters and the
        // parameters that every profile the rule applies to defines.
        let mut known: BTreeSet<String> = BUILTIN_VARS.iter().map(|s| s.to_string()).collect();
        known.extend(params.keys().cloned());
        let mut profile_params: Option<BTreeSet<String>> = None;
        for p in profiles.iter().filter_map(|p| catalog.profiles.get(p)) {
            let keys: BTreeSet<String> = p.params.keys().cloned().collect();
            profile_params = Some(match profile_params {
                None => keys,
                Some(prev) => prev.intersection(&keys).cloned().collect(),
            });
        }
        known.extend(profile_params.unwrap_or_default());

        let explicit = needs.clone();

        let mut checks = Vec::new();
        match node.get("check").map(|n| &n.value) {
            Some(NodeValue::Array(items)) if !items.is_empty() => {
                let mut names = BTreeSet::new();
                for item in items {
                    if let Some(c) = self.check(item, &field, &known, &explicit, &mut needs) {
                        if !names.insert(c.name.clone()) {
                            self.err(
                                &item.span,
                                &format!("{field}.check[{}]", c.name),
                                "duplicate check name in this rule",
                            );
                        }
                        checks.push(c);
                    }
                }
            }
            Some(_) => self.err(
                &node.get("check")?.span,
                &format!("{field}.check"),
                "expected a non-empty array of tables (`[[rule.check]]`)",
            ),
            None => self.err(&node.span, &field, "missing `[[rule.check]]`: a rule without a check tests nothing"),
        }
        Some(Rule {
            id: id?,
            title: title?,
            level: level?,
            sources,
            interpretation,
            profiles,
            needs: needs.into_iter().collect(),
            params,
            checks,
            location: Location { file: self.file.to_string(), line: self.line(&node.span) },
        })
    }

    pub(super) fn check(
        &mut self,
        node: &Node,
        rule_field: &str,
        known: &BTreeSet<String>,
        explicit: &BTreeSet<String>,
        rule_needs: &mut BTreeSet<String>,
    ) -> Option<Check> {
        // Starts from the rule's explicit needs; what the steps imply is added below.
        let mut own: BTreeSet<String> = explicit.clone();
        let needs = &mut own;
        let name = self.string(node, "name", &format!("{rule_field}.check"), true);
        let field = format!("{rule_field}.check[{}]", name.as_deref().unwrap_or("?"));
        let entries = self.table(node, &field)?;
        self.only(entries, &["name", "step", "property", "params", "transports"], &field);
        let transports: Vec<String> = match self.strings(node, "transports", &field) {
            None => vec!["http".to_string()],
            Some(ts) => {
                for (t, span) in &ts {
                    if t != "http" && !TRANSPORTS.contains(&t.as_str()) {
                        self.err(
                            span,
                            &format!("{field}.transports"),
                            &format!("unknown transport `{t}` (http, {})", TRANSPORTS.join(", ")),
                        );
                    }
                }
                ts.into_iter().map(|t| t.0).collect()
            }
        };
        if let Some(n) = &name
            && !n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            self.err(&node.span, &format!("{field}.name"), "check names are lowercase words joined by `-`");
        }
        let location = Location { file: self.file.to_string(), line: self.line(&node.span) };
        let kind = match (node.get("step"), node.get("property")) {
            (Some(_), Some(p)) => {
                self.err(&p.span, &field, "a check is either `step`s or a `property`, not both");
                None
            }
            (Some(steps), None) => {
                let NodeValue::Array(items) = &steps.value else {
                    self.err(
                        &steps.span,
                        &format!("{field}.step"),
                        "expected an array of tables (`[[rule.check.step]]`)",
                    );
                    return None;
                };
                let mut defined = known.clone();
                let parsed: Vec<_> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| self.step(s, &format!("{field}.step[{}]", i + 1), &mut defined, needs))
                    .collect();
                (parsed.len() == items.len()).then_some(CheckKind::Scenario(parsed))
            }
            (None, Some(p)) => {
                let property = self.string(node, "property", &field, true)?;
                let _ = p;
                let params: BTreeMap<String, Value> = match node.get("params") {
                    Some(pn) => self
                        .table(pn, &format!("{field}.params"))?
                        .iter()
                        .map(|(k, _, v)| (k.clone(), v.to_json()))
                        .collect(),
                    None => BTreeMap::new(),
                };
                for (k, v) in &params {
                    self.templates(v, &format!("{field}.params.{k}"), &node.span, known);
                }
                Some(CheckKind::Property { property, params })
            }
            (None, None) => {
                self.err(&node.span, &field, "a check needs `[[rule.check.step]]`s or a `property`");
                None
            }
        };
        rule_needs.extend(own.iter().cloned());
        Some(Check { name: name?, kind: kind?, transports, needs: own.into_iter().collect(), location })
    }
}
