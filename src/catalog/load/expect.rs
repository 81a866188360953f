//! What a step accepts: outcomes (graded), statuses and classes, body shapes, field checks.

use std::collections::BTreeSet;

use super::Cx;
use crate::catalog::tree::{Node, NodeValue};
use crate::catalog::*;

impl Cx<'_> {
    pub(super) fn expect(&mut self, node: &Node, field: &str, defined: &BTreeSet<String>) -> Option<Expect> {
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
                let filter = item.get("where").map(|w| {
                    let json = w.to_json();
                    self.templates(&json, &format!("{ff}.where"), &w.span, defined);
                    json
                });
                let ops: Vec<_> =
                    entries.iter().filter(|(k, _, _)| k != "at" && k != "value" && k != "where").collect();
                let [(op, ospan, v)] = ops.as_slice() else {
                    self.err(&item.span, &ff, "each field check has `at` (or `value`) and exactly one of: eq, ne, type, absent, len, min_len, max_len, set, contains, one_of, min_chars, some, none");
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
                    // The values allowed, or a parameter that lists them (`"${xmpp_nack_codes}"`).
                    "one_of"
                        if json.as_array().is_some_and(|a| !a.is_empty())
                            || json.as_str().is_some_and(|t| t.starts_with("${") && t.ends_with('}')) =>
                    {
                        FieldOp::OneOf(json)
                    }
                    "one_of" => {
                        self.err(
                            ospan,
                            &format!("{ff}.one_of"),
                            "expected a non-empty array of the values allowed, or a `${...}` parameter listing them",
                        );
                        continue;
                    }
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
                            "unknown check (expected eq, ne, type, absent, len, min_len, max_len, set, contains, one_of, min_chars, some or none)",
                        );
                        continue;
                    }
                };
                fields.push(FieldCheck { at, value, filter, op });
            }
        }
        Some(Expect { name, grade, status, status_class, body, fields })
    }
}
