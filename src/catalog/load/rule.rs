//! A rule and its checks: ids, levels, sources, profiles, needs and parameters, what its
//! text covers (paths, limits), and each check's paths and probe.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{Cx, valid_id};
use crate::catalog::tree::{Node, NodeValue};
use crate::catalog::*;

/// The paths a check names, where it names them, and where (for the errors).
pub(super) type Declared = (Vec<Path>, std::ops::Range<usize>);

impl Cx<'_> {
    pub(super) fn rule(&mut self, node: &Node, catalog: &Catalog) -> Option<Rule> {
        let id = self.string(node, "id", "rule", true);
        let field = format!("rule[{}]", id.as_deref().unwrap_or("?"));
        let entries = self.table(node, &field)?;
        self.only(
            entries,
            &[
                "id",
                "title",
                "level",
                "party",
                "grader",
                "source",
                "interpretation",
                "profiles",
                "needs",
                "params",
                "covers",
                "not_run",
                "limit",
                "check",
            ],
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
        let party = match node.get("party").map(|n| (n.as_str(), n)) {
            None | Some((Some("server"), _)) => Party::Server,
            Some((Some("app-server"), _)) => Party::AppServer,
            Some((_, n)) => {
                self.err(&n.span, &format!("{field}.party"), "expected \"server\" (the default) or \"app-server\"");
                Party::Server
            }
        };
        let grader = self.string(node, "grader", &field, false);
        match (&grader, party) {
            (Some(g), Party::AppServer) if !GRADERS.contains(&g.as_str()) => self.err(
                &node.get("grader").map_or(node.span.clone(), |n| n.span.clone()),
                &format!("{field}.grader"),
                &format!("unknown grader `{g}` (known: {})", GRADERS.join(", ")),
            ),
            (None, Party::AppServer) => self.err(
                &node.span,
                &field,
                "missing field `grader`: an app-server rule is judged by a grader of the journal",
            ),
            (Some(_), Party::Server) => self.err(
                &node.get("grader").map_or(node.span.clone(), |n| n.span.clone()),
                &format!("{field}.grader"),
                "only an app-server rule (`party = \"app-server\"`) has a grader; a server rule has checks",
            ),
            _ => {}
        }
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

        let covers = self.covers(node, &field);
        let not_run = self.not_run(node, &field);
        let limits = self.limits(node, &field, &known);

        let explicit = needs.clone();

        let mut checks = Vec::new();
        let mut declared = Vec::new();
        match node.get("check").map(|n| &n.value) {
            // An app-server rule is graded from the journal, not checked by requests.
            Some(_) if party == Party::AppServer => self.err(
                &node.get("check")?.span,
                &format!("{field}.check"),
                "an app-server rule has a `grader`, not checks: the reference judges what the app server sends",
            ),
            None if party == Party::AppServer => {}
            Some(NodeValue::Array(items)) if !items.is_empty() => {
                let mut names = BTreeSet::new();
                for item in items {
                    if let Some((c, paths)) = self.check(item, &field, &known, &explicit, &mut needs) {
                        if !names.insert(c.name.clone()) {
                            self.err(
                                &item.span,
                                &format!("{field}.check[{}]", c.name),
                                "duplicate check name in this rule",
                            );
                        }
                        checks.push(c);
                        declared.push(paths);
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
        if party == Party::Server {
            self.runs(&field, &node.span, &covers, &not_run, &limits, &mut checks, &declared);
        } else if !not_run.is_empty() {
            let span = node.get("not_run").map_or(node.span.clone(), |n| n.span.clone());
            self.err(&span, &format!("{field}.not_run"), "an app-server rule's grader reads every path it covers");
        }
        Some(Rule {
            id: id?,
            title: title?,
            level: level?,
            party,
            grader,
            sources,
            interpretation,
            profiles,
            needs: needs.into_iter().collect(),
            params,
            covers,
            not_run: not_run.into_iter().map(|(p, (why, _))| (p, why)).collect(),
            limits,
            checks,
            location: Location { file: self.file.to_string(), line: self.line(&node.span) },
        })
    }

    /// `covers`: the paths the rule's text applies to, by name or alias, in order.
    fn covers(&mut self, node: &Node, field: &str) -> Vec<Path> {
        let Some(items) = self.strings(node, "covers", field) else {
            self.err(
                &node.span,
                field,
                "missing field `covers`: the paths the rule's text applies to (`[]` for none; `gcmspec rules` shows them)",
            );
            return Vec::new();
        };
        let mut out: Vec<Path> = Vec::new();
        for (name, span) in items {
            let paths = match (Path::expand_alias(&name), name.parse::<Path>()) {
                (Some(ps), _) => ps,
                (None, Ok(p)) => vec![p],
                (None, Err(_)) => {
                    let known: Vec<&str> =
                        Path::ALL.iter().map(|p| p.name()).chain(Path::ALIASES.iter().copied()).collect();
                    self.err(
                        &span,
                        &format!("{field}.covers"),
                        &format!("unknown path `{name}` (known: {})", known.join(", ")),
                    );
                    continue;
                }
            };
            for p in paths {
                if out.contains(&p) {
                    self.err(&span, &format!("{field}.covers"), &format!("`{p}` is named twice"));
                } else {
                    out.push(p);
                }
            }
        }
        out
    }

    /// `not_run`: covered paths no check runs, each with the reason.
    fn not_run(&mut self, node: &Node, field: &str) -> BTreeMap<Path, (String, std::ops::Range<usize>)> {
        let mut out = BTreeMap::new();
        let Some(n) = node.get("not_run") else { return out };
        let Some(entries) = self.table(n, &format!("{field}.not_run")) else { return out };
        for (k, span, v) in entries {
            let f = format!("{field}.not_run.{k}");
            match (k.parse::<Path>(), v.as_str()) {
                (Err(_), _) => self.err(span, &f, &format!("unknown path `{k}`")),
                (Ok(_), None) => self.err(span, &f, "expected the reason, as a string"),
                (Ok(_), Some(why)) if why.trim().is_empty() => self.err(span, &f, "the reason must say why"),
                (Ok(p), Some(why)) => {
                    out.insert(p, (why.to_string(), span.clone()));
                }
            }
        }
        out
    }

    /// `[[rule.limit]]`: documented numbers the checks probe, each a known parameter.
    fn limits(&mut self, node: &Node, field: &str, known: &BTreeSet<String>) -> Vec<Limit> {
        let Some(n) = node.get("limit") else { return Vec::new() };
        let NodeValue::Array(items) = &n.value else {
            self.err(&n.span, &format!("{field}.limit"), "expected an array of tables (`[[rule.limit]]`)");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let f = format!("{field}.limit[{i}]");
            let Some(entries) = self.table(item, &f) else { continue };
            self.only(entries, &["param", "unit", "at_limit"], &f);
            let param = self.string(item, "param", &f, true);
            if let Some(p) = &param
                && !known.contains(p)
            {
                self.err(
                    &item.span,
                    &format!("{f}.param"),
                    &format!("`{p}` is not a parameter of the rule or its profiles"),
                );
            }
            let unit = self.string(item, "unit", &f, true).and_then(|u| {
                let found = Unit::ALL.iter().copied().find(|x| x.name() == u);
                if found.is_none() {
                    let known: Vec<&str> = Unit::ALL.iter().map(|u| u.name()).collect();
                    self.err(
                        &item.span,
                        &format!("{f}.unit"),
                        &format!("unknown unit `{u}` (known: {})", known.join(", ")),
                    );
                }
                found
            });
            let at_limit = match item.get("at_limit").map(|n| (n.as_str(), n)) {
                None | Some((Some("within"), _)) => Some(AtLimit::Within),
                Some((Some("either"), _)) => Some(AtLimit::Either),
                Some((_, n)) => {
                    self.err(
                        &n.span,
                        &format!("{f}.at_limit"),
                        "expected \"within\" (n is within the limit) or \"either\" (the text leaves n open)",
                    );
                    None
                }
            };
            if let (Some(param), Some(unit), Some(at_limit)) = (param, unit, at_limit) {
                if out.iter().any(|l: &Limit| l.param == param) {
                    self.err(&item.span, &format!("{f}.param"), &format!("`{param}` is declared twice"));
                }
                out.push(Limit { param, unit, at_limit });
            }
        }
        out
    }

    pub(super) fn check(
        &mut self,
        node: &Node,
        rule_field: &str,
        known: &BTreeSet<String>,
        explicit: &BTreeSet<String>,
        rule_needs: &mut BTreeSet<String>,
    ) -> Option<(Check, Option<Declared>)> {
        // Starts from the rule's explicit needs; what the steps imply is added below.
        let mut own: BTreeSet<String> = explicit.clone();
        let needs = &mut own;
        let name = self.string(node, "name", &format!("{rule_field}.check"), true);
        let field = format!("{rule_field}.check[{}]", name.as_deref().unwrap_or("?"));
        let entries = self.table(node, &field)?;
        self.only(entries, &["name", "step", "property", "params", "paths", "probe"], &field);
        // The paths it is limited to, when it names them; checked against its steps later.
        let declared = self.strings(node, "paths", &field).map(|items| {
            let span = node.get("paths").map_or(node.span.clone(), |n| n.span.clone());
            let mut paths = Vec::new();
            for (p, pspan) in items {
                match (Path::expand_alias(&p), p.parse::<Path>()) {
                    (Some(ps), _) => paths.extend(ps),
                    (None, Ok(p)) => paths.push(p),
                    (None, Err(e)) => self.err(&pspan, &format!("{field}.paths"), &e.to_string()),
                }
            }
            (paths, span)
        });
        let probe = self.string(node, "probe", &field, false);
        let mut known = known.clone();
        if probe.is_some() {
            known.extend(PROBE_VARS.iter().map(|v| v.to_string()));
        }
        let known = &known;
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
        let check =
            Check { name: name?, kind: kind?, runs: Vec::new(), probe, needs: own.into_iter().collect(), location };
        Some((check, declared))
    }
}
