//! Validating loader: TOML text in, [`Catalog`] or every error out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;

use serde_json::Value;

use super::template::{self, Expr};
use super::tree::{self, Node, NodeValue};
use super::*;

/// One problem in one spec file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SpecError {
    pub file: String,
    pub line: usize,
    /// Where in the document: `rule[group.member-cap].check[over-cap].step[2].expect.status`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}: {}", self.file, self.line, self.field, self.message)
    }
}

/// Every problem found, sorted by file and line.
#[derive(Debug, thiserror::Error)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.0 {
            writeln!(f, "{e}")?;
        }
        write!(f, "{} error(s) in the spec files", self.0.len())
    }
}

/// Loads spec files (name, text). `sources` maps a source document's file name to its text,
/// so that every quote can be checked against the document it claims to come from.
pub fn load(files: &[(String, String)], sources: &BTreeMap<String, String>) -> Result<Catalog, SpecErrors> {
    let mut errors = Vec::new();
    let mut parsed = Vec::new();
    for (name, text) in files {
        match tree::parse(text) {
            Ok(root) => parsed.push((name.as_str(), text.as_str(), root)),
            Err(es) => errors.extend(es.into_iter().map(|e| SpecError {
                file: name.clone(),
                line: e.offset.map_or(1, |o| tree::line_of(text, o)),
                field: "(syntax)".into(),
                message: e.message,
            })),
        }
    }

    let mut catalog = Catalog { documents: BTreeMap::new(), profiles: BTreeMap::new(), rules: Vec::new() };
    // Documents and profiles first: rules refer to them, whichever file they are in.
    let no_docs = Docs::new();
    for (name, text, root) in &parsed {
        let mut cx = Cx { file: name, text, errors: &mut errors, docs: &no_docs };
        for (key, span, node) in root.entries() {
            match key.as_str() {
                "document" => cx.documents(node, &mut catalog.documents),
                "profile" | "rule" | "params" => {}
                other => {
                    cx.err(span, other, "unknown top-level key (expected `document`, `params`, `profile` or `rule`)")
                }
            }
        }
    }
    let docs: Docs = catalog
        .documents
        .iter()
        .map(|(id, d)| (id.clone(), (d.clone(), sources.get(&d.file).map(|t| normalize_source(t, d.line_numbers)))))
        .collect();
    let mut shared = BTreeMap::new();
    for (name, text, root) in &parsed {
        let mut cx = Cx { file: name, text, errors: &mut errors, docs: &docs };
        if let Some(node) = root.get("profile") {
            cx.profiles(node, &catalog.documents, &mut catalog.profiles);
        }
        if let Some(node) = root.get("params") {
            shared.extend(cx.params(node, "params"));
        }
    }
    // `[params]` hold in every profile, unless a profile says otherwise.
    for profile in catalog.profiles.values_mut() {
        for (k, v) in &shared {
            profile.params.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let mut seen_ids: BTreeMap<String, Location> = BTreeMap::new();
    for (name, text, root) in &parsed {
        let mut cx = Cx { file: name, text, errors: &mut errors, docs: &docs };
        let Some(node) = root.get("rule") else { continue };
        let NodeValue::Array(items) = &node.value else {
            cx.err(&node.span, "rule", "expected an array of tables (`[[rule]]`)");
            continue;
        };
        for item in items {
            if let Some(rule) = cx.rule(item, &catalog) {
                if let Some(first) = seen_ids.get(&rule.id) {
                    cx.err(
                        &item.span,
                        &format!("rule[{}].id", rule.id),
                        &format!("duplicate rule id, first defined at {first}"),
                    );
                } else {
                    seen_ids.insert(rule.id.clone(), rule.location.clone());
                    catalog.rules.push(rule);
                }
            }
        }
    }

    if errors.is_empty() {
        Ok(catalog)
    } else {
        errors.sort();
        errors.dedup();
        Err(SpecErrors(errors))
    }
}

/// Text as a reader sees it: tags dropped, entities decoded, white space folded, and (for
/// numbered excerpts) line numbers removed. Quotes are compared in this form.
pub fn normalize_source(text: &str, line_numbers: bool) -> String {
    let mut s = String::with_capacity(text.len());
    for line in text.lines() {
        let line = if line_numbers {
            let t = line.trim_start();
            let digits = t.len() - t.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits > 0 { &t[digits..] } else { line }
        } else {
            line
        };
        s.push_str(line);
        s.push('\n');
    }
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    for (entity, ch) in [
        ("&quot;", "\""),
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&mdash;", "—"),
        ("&nbsp;", " "),
        ("&#39;", "'"),
        ("&amp;", "&"),
    ] {
        out = out.replace(entity, ch);
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

struct Cx<'a> {
    file: &'a str,
    text: &'a str,
    errors: &'a mut Vec<SpecError>,
    /// Declared documents with their normalized text (`None`: the file is missing).
    docs: &'a Docs,
}

type Docs = BTreeMap<String, (Document, Option<String>)>;

type Entries<'n> = &'n [(String, Range<usize>, Node)];

impl Cx<'_> {
    fn err(&mut self, span: &Range<usize>, field: &str, message: &str) {
        self.errors.push(SpecError {
            file: self.file.to_string(),
            line: tree::line_of(self.text, span.start),
            field: field.to_string(),
            message: message.to_string(),
        });
    }

    fn line(&self, span: &Range<usize>) -> usize {
        tree::line_of(self.text, span.start)
    }

    fn table<'n>(&mut self, node: &'n Node, field: &str) -> Option<Entries<'n>> {
        match &node.value {
            NodeValue::Table(e) => Some(e),
            _ => {
                self.err(&node.span, field, &format!("expected a table, found {}", node.kind()));
                None
            }
        }
    }

    /// Reports keys that are not in `allowed` (typos must not silently disable a check).
    fn only(&mut self, entries: Entries<'_>, allowed: &[&str], field: &str) {
        for (k, span, _) in entries {
            if !allowed.contains(&k.as_str()) {
                self.err(
                    span,
                    &format!("{field}.{k}"),
                    &format!("unknown field (expected one of: {})", allowed.join(", ")),
                );
            }
        }
    }

    fn string(&mut self, parent: &Node, key: &str, field: &str, required: bool) -> Option<String> {
        match parent.get(key) {
            Some(Node { value: NodeValue::String(s), span }) => {
                if s.trim().is_empty() {
                    self.err(span, &format!("{field}.{key}"), "must not be empty");
                }
                Some(s.clone())
            }
            Some(other) => {
                self.err(&other.span, &format!("{field}.{key}"), &format!("expected a string, found {}", other.kind()));
                None
            }
            None => {
                if required {
                    self.err(&parent.span, field, &format!("missing field `{key}`"));
                }
                None
            }
        }
    }

    fn strings(&mut self, parent: &Node, key: &str, field: &str) -> Option<Vec<(String, Range<usize>)>> {
        let node = parent.get(key)?;
        let NodeValue::Array(items) = &node.value else {
            self.err(
                &node.span,
                &format!("{field}.{key}"),
                &format!("expected an array of strings, found {}", node.kind()),
            );
            return None;
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(s) => out.push((s.to_string(), item.span.clone())),
                None => self.err(
                    &item.span,
                    &format!("{field}.{key}[{i}]"),
                    &format!("expected a string, found {}", item.kind()),
                ),
            }
        }
        Some(out)
    }

    fn source(&mut self, node: &Node, field: &str) -> Option<SourceRef> {
        let entries = self.table(node, field)?;
        self.only(entries, &["document", "section", "quote"], field);
        let document = self.string(node, "document", field, true);
        let section = self.string(node, "section", field, true);
        let quote = self.string(node, "quote", field, true);
        let source = SourceRef { document: document?, section: section?, quote: quote? };
        self.verify_source(&source, node, field);
        Some(source)
    }

    /// The document must be declared, and the quote and section must be in its text.
    fn verify_source(&mut self, source: &SourceRef, node: &Node, field: &str) {
        let span = |key: &str| node.get(key).map_or(node.span.clone(), |n| n.span.clone());
        let Some((doc, text)) = self.docs.get(&source.document) else {
            self.err(
                &span("document"),
                &format!("{field}.document"),
                &format!("unknown document `{}` (declare it under [document])", source.document),
            );
            return;
        };
        let Some(text) = text else {
            self.err(
                &span("document"),
                &format!("{field}.document"),
                &format!("source file `{}` of document `{}` is missing", doc.file, doc.id),
            );
            return;
        };
        for (what, value) in [("quote", &source.quote), ("section", &source.section)] {
            // A section in parentheses describes a place that has no heading ("(introduction)").
            let descriptive = what == "section" && value.starts_with('(') && value.ends_with(')');
            if !descriptive && !text.contains(&normalize_source(value, false)) {
                self.err(
                    &span(what),
                    &format!("{field}.{what}"),
                    &format!("not found verbatim in `{}`: {value:?}", doc.file),
                );
            }
        }
    }

    fn documents(&mut self, node: &Node, out: &mut BTreeMap<String, Document>) {
        let Some(entries) = self.table(node, "document") else { return };
        for (id, span, doc) in entries {
            let field = format!("document.{id}");
            let Some(fields) = self.table(doc, &field) else { continue };
            self.only(fields, &["title", "file", "line_numbers"], &field);
            let title = self.string(doc, "title", &field, true);
            let file = self.string(doc, "file", &field, false).unwrap_or_else(|| id.clone());
            let line_numbers = match doc.get("line_numbers") {
                None => false,
                Some(Node { value: NodeValue::Bool(b), .. }) => *b,
                Some(n) => {
                    self.err(&n.span, &format!("{field}.line_numbers"), "expected a boolean");
                    false
                }
            };
            if out.contains_key(id) {
                self.err(span, &field, "document declared twice");
            } else if let Some(title) = title {
                out.insert(id.clone(), Document { id: id.clone(), title, file, line_numbers });
            }
        }
    }

    fn profiles(&mut self, node: &Node, documents: &BTreeMap<String, Document>, out: &mut BTreeMap<String, Profile>) {
        let Some(entries) = self.table(node, "profile") else { return };
        for (name, span, p) in entries {
            let field = format!("profile.{name}");
            let Some(fields) = self.table(p, &field) else { continue };
            self.only(fields, &["title", "documents", "params"], &field);
            let title = self.string(p, "title", &field, true);
            let docs = self.strings(p, "documents", &field).unwrap_or_default();
            for (d, span) in &docs {
                if !documents.contains_key(d) {
                    self.err(span, &format!("{field}.documents"), &format!("unknown document `{d}`"));
                }
            }
            let params = match p.get("params") {
                Some(pnode) => self.params(pnode, &format!("{field}.params")),
                None => BTreeMap::new(),
            };
            if out.contains_key(name) {
                self.err(span, &field, "profile declared twice");
            } else if let Some(title) = title {
                out.insert(
                    name.clone(),
                    Profile { name: name.clone(), title, documents: docs.into_iter().map(|d| d.0).collect(), params },
                );
            }
        }
    }

    /// A table of parameters, each `{ value, document, section, quote }`.
    fn params(&mut self, node: &Node, field: &str) -> BTreeMap<String, Param> {
        let mut params = BTreeMap::new();
        let Some(entries) = self.table(node, field) else { return params };
        for (k, _, v) in entries {
            let pfield = format!("{field}.{k}");
            if self.table(v, &pfield).is_none() {
                continue;
            }
            let value = v.get("value").map(Node::to_json);
            if value.is_none() {
                self.err(&v.span, &pfield, "missing field `value`");
            }
            let server_chosen = match v.get("chosen_by").map(|n| (n.as_str(), n)) {
                None | Some((Some("documents"), _)) => false,
                Some((Some("server"), _)) => true,
                Some((_, n)) => {
                    self.err(&n.span, &format!("{pfield}.chosen_by"), "expected \"documents\" or \"server\"");
                    false
                }
            };
            // A parameter is a table of `value` (and `chosen_by`) plus its source.
            let source_part: Vec<_> =
                v.entries().iter().filter(|(k, _, _)| k != "value" && k != "chosen_by").cloned().collect();
            let source = self.source(&Node { span: v.span.clone(), value: NodeValue::Table(source_part) }, &pfield);
            if let (Some(value), Some(source)) = (value, source) {
                params.insert(k.clone(), Param { value, source, server_chosen });
            }
        }
        params
    }

    fn rule(&mut self, node: &Node, catalog: &Catalog) -> Option<Rule> {
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

    fn check(
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

    /// Validates the `${...}` expressions in a value and that their variables exist.
    fn templates(&mut self, value: &Value, field: &str, span: &Range<usize>, defined: &BTreeSet<String>) {
        match template::expressions(value) {
            Err(e) => self.err(span, field, &e.to_string()),
            Ok(exprs) => {
                let mut roots = Vec::new();
                exprs.iter().for_each(|e: &Expr| e.roots(&mut roots));
                for r in roots {
                    if !defined.contains(&r) {
                        self.err(
                            span,
                            field,
                            &format!(
                                "`{r}` is not defined by an earlier step, a parameter or a builtin ({})",
                                BUILTIN_VARS.join(", ")
                            ),
                        );
                    }
                }
            }
        }
    }

    fn step(
        &mut self,
        node: &Node,
        field: &str,
        defined: &mut BTreeSet<String>,
        needs: &mut BTreeSet<String>,
    ) -> Option<Step> {
        let entries = self.table(node, field)?;
        const ACTIONS: &[&str] = &[
            "new_sender",
            "register",
            "unregister",
            "id_token",
            "inbox",
            "request",
            "connectivity",
            "uninstall",
            "reregister",
            "upstream",
            "handled",
            "advance_clock",
            "send",
            "xmpp_connect",
            "xmpp_send",
            "xmpp_raw",
            "xmpp_post",
            "xmpp_receive",
            "xmpp_quiet",
            "xmpp_close",
            "drain",
        ];
        let actions: Vec<_> = entries.iter().filter(|(k, _, _)| ACTIONS.contains(&k.as_str())).collect();
        let [(action_key, _, action_node)] = actions.as_slice() else {
            self.err(&node.span, field, &format!("a step has exactly one action, one of: {}", ACTIONS.join(", ")));
            return None;
        };
        let mut allowed = vec![action_key.as_str(), "expect", "save", "note"];
        if action_key == "request" {
            allowed.extend(["sender", "auth", "headers", "omit_headers", "query", "body", "raw_body", "repeat"]);
        }
        if ["xmpp_post", "xmpp_receive", "upstream"].contains(&action_key.as_str()) {
            allowed.push("repeat");
        }
        let repeat = node.get("repeat").map(|r| {
            let v = r.to_json();
            self.templates(&v, &format!("{field}.repeat"), &r.span, defined);
            v
        });
        // The counter is visible inside a repeated step only.
        let mut inner = defined.clone();
        if repeat.is_some() {
            inner.insert(REPEAT_VAR.to_string());
        }
        let defined_here = &inner;
        self.only(entries, &allowed, field);
        let afield = format!("{field}.{action_key}");
        let span = &action_node.span;
        let mut defines = Vec::new();
        let action = match action_key.as_str() {
            "new_sender" => {
                needs.insert("senders".into());
                let (name, count) = match &action_node.value {
                    NodeValue::Table(_) => {
                        self.only(action_node.entries(), &["as", "count"], &afield);
                        let name =
                            self.var_name(action_node.get("as").unwrap_or(action_node), &format!("{afield}.as"))?;
                        let count = action_node.get("count").map(Node::to_json);
                        if let Some(c) = &count {
                            self.templates(c, &format!("{afield}.count"), span, defined);
                        }
                        (name, count)
                    }
                    _ => (self.var_name(action_node, &afield)?, None),
                };
                defines.push(name.clone());
                Action::NewSender { name, count }
            }
            "register" => {
                needs.insert("instances".into());
                self.table(action_node, &afield)?;
                self.only(
                    action_node.entries(),
                    &["as", "count", "senders", "account", "platform", "package"],
                    &afield,
                );
                let name = self.var_name(action_node.get("as").unwrap_or(action_node), &format!("{afield}.as"))?;
                let count = action_node.get("count").map_or(Value::from(1), Node::to_json);
                let senders: Vec<String> = self
                    .strings(action_node, "senders", &afield)
                    .map_or_else(|| vec!["sender".to_string()], |v| v.into_iter().map(|s| s.0).collect());
                let account = action_node.get("account").map(Node::to_json);
                let platform = action_node.get("platform").map(Node::to_json);
                let package = action_node.get("package").map(Node::to_json);
                for v in [Some(&count), account.as_ref(), platform.as_ref(), package.as_ref()].into_iter().flatten() {
                    self.templates(v, &afield, span, defined);
                }
                for s in &senders {
                    self.sender_expr(s, span, &format!("{afield}.senders"), defined);
                }
                defines.push(name.clone());
                Action::Register { name, count, senders, account, platform, package }
            }
            "unregister" => {
                needs.insert("unregister".into());
                let v = action_node.to_json();
                self.templates(&v, &afield, span, defined);
                Action::Unregister(v)
            }
            "inbox" => {
                needs.insert("inbox".into());
                let v = action_node.to_json();
                self.templates(&v, &afield, span, defined);
                Action::Inbox(v)
            }
            "id_token" => {
                needs.insert("id_tokens".into());
                self.table(action_node, &afield)?;
                self.only(action_node.entries(), &["as", "account", "sender"], &afield);
                let name = self.var_name(action_node.get("as").unwrap_or(action_node), &format!("{afield}.as"))?;
                let account = action_node.get("account").map(Node::to_json);
                let Some(account) = account else {
                    self.err(span, &afield, "missing field `account`");
                    return None;
                };
                self.templates(&account, &afield, span, defined);
                let sender = self.string(action_node, "sender", &afield, false).unwrap_or_else(|| "sender".into());
                self.sender_expr(&sender, span, &format!("{afield}.sender"), defined);
                defines.push(name.clone());
                Action::IdToken { name, account, sender }
            }
            "connectivity" => {
                needs.insert("connectivity".into());
                self.table(action_node, &afield)?;
                self.only(action_node.entries(), &["of", "state"], &afield);
                let of = self.required_template(action_node, "of", &afield, defined)?;
                let state = self.string(action_node, "state", &afield, true)?;
                if !["awake", "idle", "offline"].contains(&state.as_str()) {
                    self.err(span, &format!("{afield}.state"), "expected \"awake\", \"idle\" or \"offline\"");
                }
                Action::Connectivity { of, state }
            }
            "uninstall" => {
                needs.insert("uninstall".into());
                let v = action_node.to_json();
                self.templates(&v, &afield, span, defined);
                Action::Uninstall(v)
            }
            "reregister" => {
                needs.insert("reregister".into());
                self.table(action_node, &afield)?;
                self.only(action_node.entries(), &["of", "as"], &afield);
                let of = self.required_template(action_node, "of", &afield, defined)?;
                let name = self.var_name(action_node.get("as").unwrap_or(action_node), &format!("{afield}.as"))?;
                defines.push(name.clone());
                Action::Reregister { of, name }
            }
            "upstream" => {
                needs.insert("upstream".into());
                self.table(action_node, &afield)?;
                self.only(action_node.entries(), &["from", "to", "data"], &afield);
                let from = self.required_template(action_node, "from", &afield, defined)?;
                let to = self.required_template(action_node, "to", &afield, defined)?;
                let data = action_node.get("data").map(Node::to_json);
                if let Some(d) = &data {
                    self.templates(d, &format!("{afield}.data"), span, defined_here);
                }
                Action::Upstream { from, to, data }
            }
            "handled" => {
                needs.insert("dismiss".into());
                self.table(action_node, &afield)?;
                self.only(action_node.entries(), &["by", "message_id"], &afield);
                let by = self.required_template(action_node, "by", &afield, defined)?;
                let message_id = self.required_template(action_node, "message_id", &afield, defined)?;
                Action::Handled { by, message_id }
            }
            "advance_clock" => {
                needs.insert("clock".into());
                self.table(action_node, &afield)?;
                self.only(action_node.entries(), &["seconds", "sender"], &afield);
                let seconds = self.required_template(action_node, "seconds", &afield, defined)?;
                let sender = self.string(action_node, "sender", &afield, false).unwrap_or_else(|| "sender".into());
                self.sender_expr(&sender, span, &format!("{afield}.sender"), defined);
                Action::AdvanceClock { seconds, sender }
            }
            "send" => {
                self.table(action_node, &afield)?;
                let v = action_node.to_json();
                self.templates(&v, &afield, span, defined);
                Action::Send(v)
            }
            "xmpp_connect" => {
                needs.insert("xmpp".into());
                self.table(action_node, &afield)?;
                self.only(action_node.entries(), &["as", "sender", "password", "domain"], &afield);
                let name = self.var_name(action_node.get("as").unwrap_or(action_node), &format!("{afield}.as"))?;
                let sender = self.string(action_node, "sender", &afield, false).unwrap_or_else(|| "sender".into());
                self.sender_expr(&sender, span, &format!("{afield}.sender"), defined);
                let password = action_node.get("password").map(Node::to_json);
                if let Some(p) = &password {
                    self.templates(p, &format!("{afield}.password"), span, defined);
                }
                let domain = self.string(action_node, "domain", &afield, false);
                if let Some(d) = domain.as_deref().filter(|d| !crate::xmpp::DOMAINS.contains(d)) {
                    self.err(
                        span,
                        &format!("{afield}.domain"),
                        &format!("unknown domain {d:?} (expected one of {:?})", crate::xmpp::DOMAINS),
                    );
                }
                defines.push(name.clone());
                Action::XmppConnect { name, sender, password, domain }
            }
            "xmpp_send" | "xmpp_raw" => {
                needs.insert("xmpp".into());
                self.table(action_node, &afield)?;
                let payload = if action_key == "xmpp_send" { "message" } else { "stanza" };
                self.only(action_node.entries(), &["on", payload], &afield);
                let on = self.string(action_node, "on", &afield, true)?;
                if !defined.contains(&on) {
                    self.err(
                        span,
                        &format!("{afield}.on"),
                        &format!("`{on}` is not a connection made by an earlier xmpp_connect"),
                    );
                }
                let value = self.required_template(action_node, payload, &afield, defined)?;
                if action_key == "xmpp_send" {
                    Action::XmppSend { on, message: value }
                } else {
                    Action::XmppRaw { on, stanza: value }
                }
            }
            "xmpp_post" => {
                needs.insert("xmpp".into());
                self.table(action_node, &afield)?;
                self.only(action_node.entries(), &["on", "message"], &afield);
                let on = self.connection(action_node, &afield, defined)?;
                let message = self.required_template(action_node, "message", &afield, defined_here)?;
                Action::XmppPost { on, message }
            }
            "xmpp_receive" | "xmpp_quiet" => {
                needs.insert("xmpp".into());
                self.table(action_node, &afield)?;
                self.only(action_node.entries(), &["on"], &afield);
                let on = self.connection(action_node, &afield, defined)?;
                if action_key == "xmpp_receive" { Action::XmppReceive { on } } else { Action::XmppQuiet { on } }
            }
            "xmpp_close" => {
                needs.insert("xmpp".into());
                let Some(on) = action_node.as_str().map(str::to_string) else {
                    self.err(span, &afield, "expected the name of a connection");
                    return None;
                };
                if !defined.contains(&on) {
                    self.err(span, &afield, &format!("`{on}` is not a connection made by an earlier xmpp_connect"));
                }
                Action::XmppClose(on)
            }
            "drain" => {
                needs.insert("drain".into());
                self.table(action_node, &afield)?;
                self.only(action_node.entries(), &["sender"], &afield);
                let sender = self.string(action_node, "sender", &afield, false).unwrap_or_else(|| "sender".into());
                self.sender_expr(&sender, span, &format!("{afield}.sender"), defined);
                Action::Drain { sender }
            }
            _ => Action::Request(self.request(node, action_node, field, defined_here)?),
        };
        let expect = match node.get("expect").map(|e| (e, &e.value)) {
            None => Vec::new(),
            Some((e, NodeValue::Array(items))) => {
                if items.is_empty() {
                    self.err(&e.span, &format!("{field}.expect"), "an empty list of outcomes accepts nothing");
                }
                let mut out = Vec::new();
                for (k, item) in items.iter().enumerate() {
                    out.push(self.expect(item, &format!("{field}.expect[{k}]"), defined_here)?);
                }
                out
            }
            Some((e, _)) => vec![self.expect(e, &format!("{field}.expect"), defined_here)?],
        };
        if repeat.is_some() && !["request", "xmpp_post", "xmpp_receive", "upstream"].contains(&action_key.as_str()) {
            self.err(&node.span, &format!("{field}.repeat"), "only request steps repeat");
        }
        let mut save = Vec::new();
        if let Some(s) = node.get("save") {
            for (k, kspan, v) in self.table(s, &format!("{field}.save"))? {
                match v.as_str() {
                    Some(p) if p.is_empty() || p.starts_with('/') => save.push((k.clone(), p.to_string())),
                    _ => {
                        self.err(kspan, &format!("{field}.save.{k}"), "expected a JSON pointer (\"/notification_key\")")
                    }
                }
                defines.push(k.clone());
            }
        }
        defined.extend(defines);
        Some(Step { line: self.line(&node.span), action, expect, repeat, save })
    }

    /// The `on` of an XMPP step: a connection made earlier.
    fn connection(&mut self, node: &Node, field: &str, defined: &BTreeSet<String>) -> Option<String> {
        let on = self.string(node, "on", field, true)?;
        if !defined.contains(&on) {
            self.err(
                &node.span,
                &format!("{field}.on"),
                &format!("`{on}` is not a connection made by an earlier xmpp_connect"),
            );
        }
        Some(on)
    }

    /// A sender reference: an expression (`other`, `partners[3]`) over defined variables.
    fn sender_expr(&mut self, text: &str, span: &Range<usize>, field: &str, defined: &BTreeSet<String>) {
        match Expr::parse(text) {
            Err(e) => self.err(span, field, &e.to_string()),
            Ok(e) => {
                let mut roots = Vec::new();
                e.roots(&mut roots);
                for r in roots.iter().filter(|r| !defined.contains(*r)) {
                    self.err(span, field, &format!("`{r}` is not a sender defined earlier"));
                }
            }
        }
    }

    /// A required field whose value is a template, checked against the defined variables.
    fn required_template(&mut self, node: &Node, key: &str, field: &str, defined: &BTreeSet<String>) -> Option<Value> {
        let Some(n) = node.get(key) else {
            self.err(&node.span, field, &format!("missing field `{key}`"));
            return None;
        };
        let v = n.to_json();
        self.templates(&v, &format!("{field}.{key}"), &n.span, defined);
        Some(v)
    }

    fn var_name(&mut self, node: &Node, field: &str) -> Option<String> {
        match node.as_str() {
            Some(s)
                if !s.is_empty()
                    && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !s.starts_with(|c: char| c.is_ascii_digit()) =>
            {
                Some(s.to_string())
            }
            _ => {
                self.err(&node.span, field, "expected a variable name (letters, digits, `_`)");
                None
            }
        }
    }

    fn request(&mut self, step: &Node, action: &Node, field: &str, defined: &BTreeSet<String>) -> Option<Request> {
        let afield = format!("{field}.request");
        let Some(line) = action.as_str() else {
            self.err(&action.span, &afield, "expected \"METHOD /path\"");
            return None;
        };
        let (method, path) = line.split_once(' ').unwrap_or((line, ""));
        if !["GET", "POST", "PUT", "DELETE"].contains(&method) || !path.starts_with('/') {
            self.err(&action.span, &afield, "expected \"METHOD /path\" with GET, POST, PUT or DELETE");
        }
        self.templates(&Value::String(path.to_string()), &afield, &action.span, defined);
        let sender = self.string(step, "sender", field, false).unwrap_or_else(|| "sender".into());
        self.sender_expr(&sender, &step.span, &format!("{field}.sender"), defined);
        let auth = match step.get("auth").map(|n| (n.as_str(), n)) {
            None | Some((Some("server"), _)) => Auth::Server,
            Some((Some("key"), _)) => Auth::Key,
            Some((Some("project"), _)) => Auth::Project,
            Some((Some("none"), _)) => Auth::None,
            Some((_, n)) => {
                self.err(&n.span, &format!("{field}.auth"), "expected \"server\", \"key\", \"project\" or \"none\"");
                Auth::Server
            }
        };
        let mut pairs = |key: &str| -> Vec<(String, Value)> {
            let Some(n) = step.get(key) else { return Vec::new() };
            let Some(entries) = self.table(n, &format!("{field}.{key}")) else { return Vec::new() };
            let out: Vec<_> = entries.iter().map(|(k, _, v)| (k.clone(), v.to_json())).collect();
            for (k, v) in &out {
                if !v.is_string() {
                    self.err(&n.span, &format!("{field}.{key}.{k}"), "expected a string");
                }
                self.templates(v, &format!("{field}.{key}.{k}"), &n.span, defined);
            }
            out
        };
        let headers = pairs("headers");
        let query = pairs("query");
        let omit_headers = self
            .strings(step, "omit_headers", field)
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.0.to_ascii_lowercase())
            .collect();
        let body = match (step.get("body"), step.get("raw_body")) {
            (Some(_), Some(r)) => {
                self.err(&r.span, field, "`body` and `raw_body` exclude each other");
                Body::None
            }
            (Some(b), None) => {
                let v = b.to_json();
                self.templates(&v, &format!("{field}.body"), &b.span, defined);
                Body::Json(v)
            }
            (None, Some(r)) => match r.as_str() {
                Some(s) => {
                    self.templates(&Value::String(s.to_string()), &format!("{field}.raw_body"), &r.span, defined);
                    Body::Raw(s.to_string())
                }
                None => {
                    self.err(&r.span, &format!("{field}.raw_body"), "expected a string");
                    Body::None
                }
            },
            (None, None) => Body::None,
        };
        Some(Request {
            method: method.to_string(),
            path: path.to_string(),
            sender,
            auth,
            headers,
            omit_headers,
            query,
            body,
        })
    }

    fn expect(&mut self, node: &Node, field: &str, defined: &BTreeSet<String>) -> Option<Expect> {
        let entries = self.table(node, field)?;
        self.only(entries, &["name", "grade", "status", "body", "fields"], field);
        let name = self.string(node, "name", field, false);
        let grade = match node.get("grade").map(|n| (n.as_str(), n)) {
            None | Some((Some("documented"), _)) => Grade::Documented,
            Some((Some("observed"), _)) => Grade::Observed,
            Some((_, n)) => {
                self.err(&n.span, &format!("{field}.grade"), "expected \"documented\" or \"observed\"");
                Grade::Documented
            }
        };
        if grade == Grade::Observed && name.is_none() {
            self.err(&node.span, &format!("{field}.name"), "an observed outcome needs a name, for the reports");
        }
        // A status is a number, or a class (`"4xx"`) where the documents name none.
        let mut status = Vec::new();
        let mut status_class = Vec::new();
        let mut bad_status = false;
        if let Some(n) = node.get("status") {
            let items: Vec<&Node> = match &n.value {
                NodeValue::Array(items) => items.iter().collect(),
                _ => vec![n],
            };
            for item in &items {
                match (&item.value, item.as_str()) {
                    (NodeValue::Integer(i), _) if (100..600).contains(i) => status.push(*i as u16),
                    (_, Some(class)) if class.len() == 3 && class.ends_with("xx") => match class[..1].parse::<u16>() {
                        Ok(c) if (1..6).contains(&c) => status_class.push(c),
                        _ => bad_status = true,
                    },
                    _ => bad_status = true,
                }
            }
            if bad_status || items.is_empty() {
                self.err(
                    &n.span,
                    &format!("{field}.status"),
                    "expected an HTTP status (100-599), a class (\"4xx\"), or an array of them",
                );
            }
        }
        let body = match node.get("body").map(|n| (n.as_str(), n)) {
            None | Some((Some("any"), _)) => BodyShape::Any,
            Some((Some("json"), _)) => BodyShape::Json,
            Some((Some("empty"), _)) => BodyShape::Empty,
            Some((Some("not-json"), _)) => BodyShape::NotJson,
            Some((Some("text"), _)) => BodyShape::Text,
            Some((_, n)) => {
                self.err(
                    &n.span,
                    &format!("{field}.body"),
                    "expected \"any\", \"json\", \"empty\", \"not-json\" or \"text\"",
                );
                BodyShape::Any
            }
        };
        let mut fields = Vec::new();
        if let Some(fnode) = node.get("fields") {
            let NodeValue::Array(items) = &fnode.value else {
                self.err(
                    &fnode.span,
                    &format!("{field}.fields"),
                    "expected an array of { at = \"/pointer\", <op> = ... }",
                );
                return None;
            };
            for (i, item) in items.iter().enumerate() {
                let ff = format!("{field}.fields[{i}]");
                let Some(entries) = self.table(item, &ff) else { continue };
                // `at = ""` is the whole body (a text body's text): not an empty string's error.
                let at = match item.get("at").map(|n| (n.as_str(), n)) {
                    None => None,
                    Some((Some(a), _)) => Some(a.to_string()),
                    Some((None, n)) => {
                        self.err(&n.span, &format!("{ff}.at"), "expected a string (a JSON pointer)");
                        continue;
                    }
                };
                let value = item.get("value").map(|v| {
                    let json = v.to_json();
                    self.templates(&json, &format!("{ff}.value"), &v.span, defined);
                    json
                });
                let at = match (at, &value) {
                    (Some(at), None) => at,
                    (None, Some(_)) => String::new(),
                    (Some(_), Some(_)) => {
                        self.err(
                            &item.span,
                            &ff,
                            "a field check has `at` (the response) or `value` (a variable), not both",
                        );
                        continue;
                    }
                    (None, None) => {
                        self.err(&item.span, &ff, "missing field `at` (a JSON pointer) or `value` (a `${...}` value)");
                        continue;
                    }
                };
                if !(at.is_empty() || at.starts_with('/')) {
                    self.err(&item.span, &format!("{ff}.at"), "a JSON pointer starts with `/`");
                }
                let ops: Vec<_> = entries.iter().filter(|(k, _, _)| k != "at" && k != "value").collect();
                let [(op, ospan, v)] = ops.as_slice() else {
                    self.err(&item.span, &ff, "each field check has `at` (or `value`) and exactly one of: eq, ne, type, absent, len, min_len, max_len, set, contains, min_chars, some, none");
                    continue;
                };
                let json = v.to_json();
                self.templates(&json, &format!("{ff}.{op}"), ospan, defined);
                let op = match op.as_str() {
                    "eq" => FieldOp::Eq(json),
                    "ne" => FieldOp::Ne(json),
                    "len" => FieldOp::Len(json),
                    "min_len" => FieldOp::MinLen(json),
                    "max_len" => FieldOp::MaxLen(json),
                    "set" => FieldOp::Set(json),
                    "contains" => FieldOp::Contains(json),
                    "min_chars" => FieldOp::MinChars(json),
                    "some" => FieldOp::Some(json),
                    "none" => FieldOp::None(json),
                    "absent" => FieldOp::Absent,
                    "type" => match v.as_str() {
                        Some("string") => FieldOp::Type(JsonType::String),
                        Some("number") => FieldOp::Type(JsonType::Number),
                        Some("integer") => FieldOp::Type(JsonType::Integer),
                        Some("bool") => FieldOp::Type(JsonType::Bool),
                        Some("array") => FieldOp::Type(JsonType::Array),
                        Some("object") => FieldOp::Type(JsonType::Object),
                        Some("null") => FieldOp::Type(JsonType::Null),
                        _ => {
                            self.err(
                                ospan,
                                &format!("{ff}.type"),
                                "expected string, number, integer, bool, array, object or null",
                            );
                            continue;
                        }
                    },
                    other => {
                        self.err(
                            ospan,
                            &format!("{ff}.{other}"),
                            "unknown check (expected eq, ne, type, absent, len, min_len, max_len, set, contains, min_chars, some or none)",
                        );
                        continue;
                    }
                };
                fields.push(FieldCheck { at, value, op });
            }
        }
        Some(Expect { name, grade, status, status_class, body, fields })
    }
}

fn valid_id(id: &str) -> bool {
    let parts: Vec<_> = id.split('.').collect();
    parts.len() >= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCS: &str = r#"
[document.doc]
title = "A document"
file = "doc.txt"
"#;

    fn sources() -> BTreeMap<String, String> {
        BTreeMap::from([(
            "doc.txt".to_string(),
            "<h2>Limits</h2>\n<p>The maximum number of members\nis 20.</p>".to_string(),
        )])
    }

    fn run(rules: &str) -> Result<Catalog, SpecErrors> {
        let files =
            vec![("documents.toml".to_string(), DOCS.to_string()), ("rules.toml".to_string(), rules.to_string())];
        load(&files, &sources())
    }

    #[test]
    fn a_good_rule_loads() {
        let c = run(r#"
[[rule]]
id = "group.cap"
title = "cap"
level = "must"
source = { document = "doc", section = "Limits", quote = "The maximum number of members is 20." }
[[rule.check]]
name = "over"
[[rule.check.step]]
register = { as = "phones", count = 2 }
[[rule.check.step]]
request = "POST /gcm/notification"
body = { registration_ids = "${phones}" }
expect = { status = [200, 400], fields = [ { at = "/notification_key", type = "string" } ] }
save = { key = "/notification_key" }
[[rule.check.step]]
inbox = "${phones[0]}"
"#)
        .unwrap();
        assert_eq!(c.rules[0].needs, vec!["inbox", "instances"]);
    }

    #[test]
    fn every_error_is_reported_with_line_and_field() {
        let errs = run(r#"
[[rule]]
id = "Bad Id"
title = "t"
level = "often"
source = { document = "doc", section = "Limits", quote = "The maximum is 30." }
[[rule.check]]
name = "x"
[[rule.check.step]]
request = "POST /x"
body = { a = "${undefined_var}" }
expect = { status = 999, fields = [ { at = "/a", frobnicate = 1 } ] }
"#)
        .unwrap_err();
        let text = errs.to_string();
        for needle in [
            "rules.toml:5: rule[Bad Id].level",
            "rule[Bad Id].id: ids are lowercase",
            "rules.toml:11: rule[Bad Id].check[x].step[1].body: `undefined_var` is not defined",
            "rule[Bad Id].check[x].step[1].expect.status",
            "expect.fields[0].frobnicate: unknown check",
            "rules.toml:6: rule[Bad Id].source.quote: not found verbatim",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn outcomes_are_graded_documented_unless_observed() {
        let rule = |outcomes: &str| {
            format!(
                r#"
[[rule]]
id = "send.x"
title = "t"
level = "must"
source = {{ document = "doc", section = "Limits", quote = "The maximum number of members is 20." }}
[[rule.check]]
name = "x"
[[rule.check.step]]
request = "POST /fcm/send"
expect = [
{outcomes}
]
"#
            )
        };
        let c = run(&rule("{ name = \"documented\", status = 200 },\n{ name = \"observed 400\", grade = \"observed\", status = 400 },")).unwrap();
        let CheckKind::Scenario(steps) = &c.rules[0].checks[0].kind else { panic!("a scenario") };
        let grades: Vec<Grade> = steps[0].expect.iter().map(|e| e.grade).collect();
        assert_eq!(grades, vec![Grade::Documented, Grade::Observed]);
        let text = run(&rule(
            "{ status = 200 },\n{ grade = \"observed\", status = 400 },\n{ name = \"x\", grade = \"maybe\" },",
        ))
        .unwrap_err()
        .to_string();
        for needle in [
            "rules.toml:13: rule[send.x].check[x].step[1].expect[1].name: an observed outcome needs a name",
            "rules.toml:14: rule[send.x].check[x].step[1].expect[2].grade: expected \"documented\" or \"observed\"",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let errs = run("[[rule]]\nid = \"a.b\"\ntitle = \n").unwrap_err();
        assert_eq!(errs.0[0].file, "rules.toml");
        assert_eq!(errs.0[0].line, 3);
    }

    #[test]
    fn quotes_are_compared_as_a_reader_sees_them() {
        assert_eq!(normalize_source("a <code>b</code>\n  c &quot;d&quot;", false), "a b c \"d\"");
        assert_eq!(normalize_source("12 first\n13 second", true), "first second");
    }
}
