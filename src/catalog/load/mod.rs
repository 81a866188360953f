//! Validating loader: TOML text in, [`Catalog`] or every error out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;

use serde_json::Value;

use super::template::{self, Expr};
use super::tree::{self, Node, NodeValue};
use super::*;

mod expect;
mod rule;
mod runs;
mod sources;
mod step;

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

    // Server rules first, then the app server's: each in the files' order.
    catalog.rules.sort_by_key(|r| r.party);

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

    /// Every needle is in the loader's report.
    fn assert_mentions(text: &str, needles: &[&str]) {
        for needle in needles {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
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
covers = ["server"]
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
        assert_eq!(c.rules[0].checks[0].runs[0].paths, vec![Path::Server]);
    }

    /// A rule in the coverage model's terms: its covers, and its checks' steps.
    fn covered(covers: &str, extra: &str, checks: &str) -> String {
        format!(
            r#"
[[rule]]
id = "send.x"
title = "t"
level = "must"
covers = {covers}
{extra}
source = {{ document = "doc", section = "Limits", quote = "The maximum number of members is 20." }}
{checks}
"#
        )
    }

    const GENERIC: &str = r#"
[[rule.check]]
name = "generic"
[[rule.check.step]]
register = { as = "phones", count = 1 }
[[rule.check.step]]
audience = { as = "dest", devices = "${phones}" }
[[rule.check.step]]
send = { to = "${dest}", data = { n = "1" } }
"#;

    #[test]
    fn a_check_written_once_runs_on_every_covered_path() {
        let c = run(&covered(r#"["sends", "two-devices"]"#, "", GENERIC)).unwrap();
        let runs = &c.rules[0].checks[0].runs;
        let suffixes: Vec<&str> = runs.iter().map(|r| r.suffix.as_str()).collect();
        assert_eq!(
            suffixes,
            ["", "@multicast", "@key", "@plain-text", "@xmpp", "@xmpp-key", "@two-devices"],
            "{runs:?}"
        );
        assert_eq!(
            (runs[2].delivery, runs[6].delivery, runs[6].tenancy),
            (Path::Key, Path::Token, Some(Path::TwoDevices))
        );
    }

    #[test]
    fn a_covered_path_no_check_runs_needs_a_reason() {
        let fixed = r#"
[[rule.check]]
name = "fixed"
[[rule.check.step]]
request = "POST /fcm/send"
body = { to = "x" }
"#;
        let text = run(&covered(r#"["token", "xmpp"]"#, "", fixed)).unwrap_err().to_string();
        assert!(text.contains("rule[send.x].covers: the rule covers `xmpp`"), "{text}");
        // With the reason said, it loads; a reason for a path that runs is stale.
        run(&covered(r#"["token", "xmpp"]"#, r#"not_run = { xmpp = "no XMPP form" }"#, fixed)).unwrap();
        let text = run(&covered(r#"["token"]"#, r#"not_run = { token = "why not" }"#, fixed)).unwrap_err().to_string();
        assert!(text.contains("not_run.token: `token` runs (check fixed)"), "{text}");
    }

    #[test]
    fn a_check_cannot_name_a_path_its_steps_cannot_take() {
        let to_key = r#"
[[rule.check]]
name = "to-a-key"
paths = ["token", "two-senders"]
[[rule.check.step]]
request = "POST /gcm/notification"
body = { operation = "create" }
save = { key = "/notification_key" }
[[rule.check.step]]
send = { to = "${key}", data = { n = "1" } }
"#;
        let text = run(&covered(r#"["token", "key"]"#, "", to_key)).unwrap_err().to_string();
        assert_mentions(
            &text,
            &[
                "check[to-a-key].paths: the check cannot run `token`: its sends can take only key, xmpp-key",
                "check[to-a-key].paths: `two-senders` is not among the paths the rule covers (token, key)",
            ],
        );
    }

    #[test]
    fn every_limit_is_probed_and_every_probe_a_limit() {
        let limit = "[[rule.limit]]\nparam = \"max_members\"\nunit = \"members\"";
        let text = run(&covered("[]", "", &format!("{GENERIC}{limit}"))).unwrap_err().to_string();
        assert_mentions(&text, &["limit[0].param: `max_members` is not a parameter", "no check probes `max_members`"]);
        let probe = GENERIC.replace("name = \"generic\"", "name = \"generic\"\nprobe = \"cap\"");
        let text = run(&covered(r#"["token"]"#, "", &probe)).unwrap_err().to_string();
        assert!(text.contains("probe: `cap` is not a limit of the rule"), "{text}");
        // A limit probed by a check none of whose steps uses the value: its rounds run alike.
        let limit = "[[rule.limit]]\nparam = \"cap\"\nunit = \"members\"";
        let checks = format!("{probe}{limit}");
        let text = run(&covered(r#"["token"]"#, "params = { cap = 3 }", &checks)).unwrap_err().to_string();
        assert!(text.contains("check[generic].probe: no step uses `${probe}`"), "{text}");
        let used = checks.replace("count = 1 }", "count = \"${probe}\" }");
        run(&covered(r#"["token"]"#, "params = { cap = 3 }", &used)).expect("a probe a step uses");
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
        assert_mentions(
            &text,
            &[
                "rules.toml:5: rule[Bad Id].level",
                "rule[Bad Id].id: ids are lowercase",
                "rules.toml:11: rule[Bad Id].check[x].step[1].body: `undefined_var` is not defined",
                "rule[Bad Id].check[x].step[1].expect.status",
                "expect.fields[0].frobnicate: unknown check",
                "rules.toml:6: rule[Bad Id].source.quote: not found verbatim",
            ],
        );
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
covers = []
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
        assert_mentions(
            &text,
            &[
                "rules.toml:14: rule[send.x].check[x].step[1].expect[1].name: an observed outcome needs a name",
                "rules.toml:15: rule[send.x].check[x].step[1].expect[2].grade: expected \"documented\" or \"observed\"",
            ],
        );
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
