//! Documents, profiles and parameters, and the quotes every rule and parameter carries:
//! each checked against the document it names, as a reader sees it.

use std::collections::BTreeMap;

use super::{Cx, normalize_source};
use crate::catalog::tree::{Node, NodeValue};
use crate::catalog::{Document, Param, Profile, SourceRef};

impl Cx<'_> {
    pub(super) fn source(&mut self, node: &Node, field: &str) -> Option<SourceRef> {
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
    pub(super) fn verify_source(&mut self, source: &SourceRef, node: &Node, field: &str) {
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

    pub(super) fn documents(&mut self, node: &Node, out: &mut BTreeMap<String, Document>) {
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

    pub(super) fn profiles(
        &mut self,
        node: &Node,
        documents: &BTreeMap<String, Document>,
        out: &mut BTreeMap<String, Profile>,
    ) {
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
    pub(super) fn params(&mut self, node: &Node, field: &str) -> BTreeMap<String, Param> {
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
            // What a target may declare for a number of its own choosing: a range the checks
            // can work with (a bucket of a billion tokens would have them send a billion).
            let declared = match v.get("declared") {
                None => None,
                Some(n) => match n
                    .to_json()
                    .as_array()
                    .map(|a| a.iter().map(serde_json::Value::as_u64).collect::<Vec<_>>())
                {
                    Some(r) if matches!(r.as_slice(), [Some(lo), Some(hi)] if lo <= hi) => {
                        Some((r[0].unwrap_or(0), r[1].unwrap_or(0)))
                    }
                    _ => {
                        self.err(&n.span, &format!("{pfield}.declared"), "expected [lowest, highest], whole numbers");
                        None
                    }
                },
            };
            if server_chosen && declared.is_none() {
                self.err(
                    &v.span,
                    &pfield,
                    "a number chosen by the server needs `declared`: the range a target may declare",
                );
            }
            // A parameter is a table of `value` (and `chosen_by`, `declared`) plus its source.
            let source_part: Vec<_> = v
                .entries()
                .iter()
                .filter(|(k, _, _)| k != "value" && k != "chosen_by" && k != "declared")
                .cloned()
                .collect();
            let source = self.source(&Node { span: v.span.clone(), value: NodeValue::Table(source_part) }, &pfield);
            if let (Some(value), Some(source)) = (value, source) {
                params.insert(k.clone(), Param { value, source, server_chosen, declared });
            }
        }
        params
    }
}
