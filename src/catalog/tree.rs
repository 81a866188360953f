//! A TOML document as a tree of nodes that remember where they came from.
//!
//! serde stops at the first error; the spec loader wants every error at once, each with a
//! line. So it parses into this tree and validates it by hand.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// One TOML value with the byte range it was written at.
#[derive(Debug, Clone)]
pub struct Node {
    pub span: Range<usize>,
    pub value: NodeValue,
}

#[derive(Debug, Clone)]
pub enum NodeValue {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Node>),
    /// Keys in the order TOML's parser gives them, each with its own span.
    Table(Vec<(String, Range<usize>, Node)>),
}

impl Node {
    pub fn kind(&self) -> &'static str {
        match &self.value {
            NodeValue::String(_) => "a string",
            NodeValue::Integer(_) => "an integer",
            NodeValue::Float(_) => "a float",
            NodeValue::Bool(_) => "a boolean",
            NodeValue::Datetime(_) => "a datetime",
            NodeValue::Array(_) => "an array",
            NodeValue::Table(_) => "a table",
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            NodeValue::Table(entries) => entries.iter().find(|(k, _, _)| k == key).map(|e| &e.2),
            _ => None,
        }
    }

    pub fn entries(&self) -> &[(String, Range<usize>, Node)] {
        match &self.value {
            NodeValue::Table(entries) => entries,
            _ => &[],
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as JSON, which is what scenario bodies and parameters are.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.value {
            NodeValue::String(s) | NodeValue::Datetime(s) => Value::String(s.clone()),
            NodeValue::Integer(i) => Value::from(*i),
            NodeValue::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            NodeValue::Bool(b) => Value::Bool(*b),
            NodeValue::Array(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeValue::Table(entries) => {
                Value::Object(entries.iter().map(|(k, _, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }
}

/// A TOML syntax error, with the byte offset it was found at when known.
#[derive(Debug)]
pub struct SyntaxError {
    pub message: String,
    pub offset: Option<usize>,
}

/// Parses a whole document. Syntax errors are all reported, not only the first.
pub fn parse(text: &str) -> Result<Node, Vec<SyntaxError>> {
    let (table, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        return Err(errors
            .into_iter()
            .map(|e| SyntaxError { message: e.message().trim().to_string(), offset: e.span().map(|s| s.start) })
            .collect());
    }
    let span = table.span();
    Ok(Node { span, value: table_value(table.get_ref()) })
}

fn table_value(table: &DeTable<'_>) -> NodeValue {
    let mut entries: Vec<_> =
        table.iter().map(|(k, v)| (k.get_ref().to_string(), k.span(), convert(v.get_ref(), v.span()))).collect();
    // Source order reads best in error lists and in generated trial lists.
    entries.sort_by_key(|(_, span, _)| span.start);
    NodeValue::Table(entries)
}

fn convert(value: &DeValue<'_>, span: Range<usize>) -> Node {
    let value = match value {
        DeValue::String(s) => NodeValue::String(s.to_string()),
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => NodeValue::Integer(n),
            Err(_) => NodeValue::Float(f64::NAN),
        },
        DeValue::Float(f) => NodeValue::Float(f.as_str().parse().unwrap_or(f64::NAN)),
        DeValue::Boolean(b) => NodeValue::Bool(*b),
        DeValue::Datetime(d) => NodeValue::Datetime(d.to_string()),
        DeValue::Array(items) => NodeValue::Array(items.iter().map(|v| convert(v.get_ref(), v.span())).collect()),
        DeValue::Table(t) => table_value(t),
    };
    Node { span, value }
}

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}
