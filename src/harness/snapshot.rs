//! Normalized transcripts and their insta snapshots.
//!
//! Keys, ids and tokens differ on every run and every server, so a transcript names them by
//! where they came from (`<phones[2]>`, `<sender.key>`, `<notification_key#1>`) before it is
//! compared. What is left is the response shape, which a reviewer can read.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::wire::{HttpRequest, HttpResponse};

/// Response fields whose values are opaque and change from run to run.
const OPAQUE_FIELDS: &[&str] = &[
    "notification_key",
    "registration_id",
    "registration_ids",
    "failed_registration_ids",
    "message_id",
    "multicast_id",
    "id_token",
    "sender_id",
    "server_key",
];

/// Replaces run-specific values with stable labels.
#[derive(Debug, Default, Clone)]
pub struct Redactor {
    /// Known value -> label, from scenario variables.
    known: BTreeMap<String, String>,
    /// Labels handed out to opaque values first seen in responses.
    seen: BTreeMap<String, String>,
    counters: BTreeMap<String, usize>,
    /// Compare what the protocol means, not how it is worded: differential runs set this.
    meaning: bool,
    /// `known` and `seen` by length, longest first, made when first needed after a change:
    /// a transcript of a 1000-entry multicast redacts thousands of strings against a
    /// thousand ids, and sorting them for each string cost a check most of its time.
    by_length: std::cell::RefCell<Option<Vec<(String, String)>>>,
}

/// Fields whose values are clock readings: they differ with the moment a run was made.
const CLOCK_FIELDS: &[&str] = &["now_ms", "message_sent_timestamp"];

/// Fields whose values are prose for a person, whose wording no document fixes.
const PROSE_FIELDS: &[&str] = &["error_description"];

/// What an answer means, beyond its wording: what a device received in any order (the order
/// of delivery is not guaranteed) and without the inbox's optional cursor fields; an empty
/// `failed_registration_ids` the same as none.
fn meaning_of(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        if let Some(Value::Array(messages)) = o.get_mut("messages") {
            messages.sort_by_key(|m| m.to_string());
            o.remove("next");
            o.remove("dropped");
        }
        if o.get("failed_registration_ids").and_then(Value::as_array).is_some_and(Vec::is_empty) {
            o.remove("failed_registration_ids");
        }
    }
    v
}

/// A body of `key=value` lines: the plain-text send format's answer.
fn is_key_values(body: &[u8]) -> bool {
    std::str::from_utf8(body).is_ok_and(|t| {
        !t.trim().is_empty()
            && t.lines().all(|l| {
                l.split_once('=')
                    .is_some_and(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            })
    })
}

/// An error code (`InvalidRegistration`, `BAD_ACK`) rather than a sentence.
fn is_code(s: &str) -> bool {
    !s.is_empty() && s.len() <= 40 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Redactor {
    /// A redactor for differential runs: on top of naming run-specific values, it names what
    /// servers may legitimately word or time differently (an error's text, clock readings,
    /// the parameters of a media type) so that only differences of meaning remain.
    pub fn for_meaning() -> Redactor {
        Redactor { meaning: true, ..Redactor::default() }
    }

    /// Remembers every string in a variable's value under a label derived from its name.
    pub fn learn(&mut self, label: &str, value: &Value) {
        match value {
            Value::String(s) if !s.is_empty() && !self.known.contains_key(s) => {
                self.known.insert(s.clone(), label.to_string());
                self.by_length.replace(None);
            }
            Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| self.learn(&format!("{label}[{i}]"), v)),
            Value::Object(o) => o.iter().for_each(|(k, v)| self.learn(&format!("{label}.{k}"), v)),
            _ => {}
        }
    }

    fn label_opaque(&mut self, field: &str, raw: &str) -> String {
        if let Some(l) = self.known.get(raw).or_else(|| self.seen.get(raw)) {
            return format!("<{l}>");
        }
        // For meaning, a value first seen in an answer is named by its field alone: its place
        // in the run (which may order things otherwise) is no part of what it means.
        if self.meaning {
            return format!("<{field}>");
        }
        let n = self.counters.entry(field.to_string()).or_default();
        *n += 1;
        let label = format!("{field}#{n}");
        self.seen.insert(raw.to_string(), label.clone());
        self.by_length.replace(None);
        format!("<{label}>")
    }

    /// Redacts known values anywhere in a text (error messages quote ids).
    pub fn text(&self, s: &str) -> String {
        // The whole text a known value: the common case (an id in a list), and what the
        // replacements below would give.
        if s.len() >= 4
            && let Some(label) = self.known.get(s).or_else(|| self.seen.get(s))
        {
            return format!("<{label}>");
        }
        let mut cached = self.by_length.borrow_mut();
        let by_length = cached.get_or_insert_with(|| {
            let mut all: Vec<(String, String)> = self
                .known
                .iter()
                .chain(self.seen.iter())
                .filter(|(v, _)| v.len() >= 4)
                .map(|(v, l)| (v.clone(), l.clone()))
                .collect();
            all.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
            all
        });
        let mut out = s.to_string();
        // Values longer than the text cannot be in it.
        let from = by_length.partition_point(|(v, _)| v.len() > s.len());
        for (v, label) in &by_length[from..] {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), &format!("<{label}>"));
            }
        }
        out
    }

    pub fn value(&mut self, v: &Value, field: Option<&str>) -> Value {
        let opaque = field.filter(|f| OPAQUE_FIELDS.contains(f));
        if self.meaning && field.is_some_and(|f| CLOCK_FIELDS.contains(&f)) {
            return Value::String("<clock>".into());
        }
        if self.meaning
            && let Value::String(s) = v
            && (field.is_some_and(|f| PROSE_FIELDS.contains(&f)) || (field == Some("error") && !is_code(s)))
        {
            return Value::String("<text that says why>".into());
        }
        match v {
            Value::String(s) => match opaque {
                Some(f) => Value::String(self.label_opaque(f, s)),
                None => Value::String(self.text(s)),
            },
            Value::Number(n) => match opaque {
                Some(f) => Value::String(self.label_opaque(f, &n.to_string())),
                None => v.clone(),
            },
            Value::Array(items) => Value::Array(items.iter().map(|x| self.value(x, field)).collect()),
            Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), self.value(x, Some(k)))).collect()),
            other => other.clone(),
        }
    }

    fn body(&mut self, body: &[u8]) -> String {
        if body.is_empty() {
            return "(no body)".into();
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(v) if self.meaning => {
                let v = self.value(&v, None);
                serde_json::to_string_pretty(&meaning_of(v)).unwrap_or_default()
            }
            Ok(v) => serde_json::to_string_pretty(&self.value(&v, None)).unwrap_or_default(),
            Err(_) if self.meaning && !is_key_values(body) => "(not JSON) <text>".into(),
            Err(_) if is_key_values(body) => format!("(text) {}", self.key_values(&String::from_utf8_lossy(body))),
            Err(_) => format!("(not JSON) {}", self.text(&String::from_utf8_lossy(body))),
        }
    }

    /// A plain-text answer of `key=value` lines (`id=...`, `registration_id=...`,
    /// `Error=...`): opaque values named as in JSON (`id` is a message id).
    fn key_values(&mut self, text: &str) -> String {
        let mut pair = |pair: &str| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let field = if key == "id" { "message_id" } else { key };
            let value = match self.value(&Value::String(value.to_string()), Some(field)) {
                Value::String(v) => v,
                other => other.to_string(),
            };
            format!("{key}={value}")
        };
        // Lines of an answer; `&`-joined pairs of a form.
        text.lines()
            .map(|line| line.split('&').map(&mut pair).collect::<Vec<_>>().join("&"))
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// One exchange as snapshot text.
    pub fn exchange(&mut self, title: &str, req: &HttpRequest, resp: &HttpResponse) -> String {
        let mut out = format!("## {title}\n{} {}\n", req.method, self.text(&req.path_and_query()));
        let mut headers = req.headers.clone();
        if self.meaning {
            headers.iter_mut().for_each(|(k, _)| *k = k.to_ascii_lowercase());
        }
        headers.sort();
        for (k, v) in headers {
            out.push_str(&format!("{k}: {}\n", self.text(&v)));
        }
        if !req.body.is_empty() {
            out.push('\n');
            out.push_str(&self.body(&req.body));
            out.push('\n');
        }
        if req.method == "XMPP" {
            out.push_str(&format!("\n<- {}\n", self.body(&resp.body)));
            return out;
        }
        let content_type = resp.header("content-type").unwrap_or("-");
        // `application/json; charset=UTF-8` and `Application/JSON` mean `application/json`.
        let media_type = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        let content_type = if self.meaning { media_type.as_str() } else { content_type };
        // A refusal's body says why, in JSON or text as the rule allows: the same meaning.
        let body = if self.meaning && (400..500).contains(&resp.status) && !resp.body.is_empty() {
            "<a body that says why>".to_string()
        } else {
            self.body(&resp.body)
        };
        let content_type = if self.meaning && (400..500).contains(&resp.status) { "-" } else { content_type };
        out.push_str(&format!("\n-> {} {content_type}\n{body}\n", resp.status));
        out
    }
}

/// Compares `text` with the committed snapshot `name` in `dir`, through insta, so the usual
/// `cargo insta review` workflow applies. Returns the mismatch as an error message and, when
/// there was a committed snapshot, a unified diff (committed, then this run).
/// Where a profile's snapshots are: the default profile's in the root, another's in a
/// folder of its own (its numbers differ: `snapshots/gcm-2013/`).
pub fn profile_dir(root: &Path, profile: &str) -> std::path::PathBuf {
    if profile == crate::bundled::DEFAULT_PROFILE { root.to_path_buf() } else { root.join(profile) }
}

pub fn compare(dir: &Path, name: &str, description: &str, text: &str) -> Result<(), (String, Option<String>)> {
    // insta resolves a relative snapshot path against this source file's folder, not the
    // working directory the user named it from.
    let absolute = std::path::absolute(dir);
    let dir = absolute.as_deref().unwrap_or(dir);
    let diff = committed(dir, name).filter(|old| old.trim_end() != text.trim_end()).map(|old| {
        similar::TextDiff::from_lines(old.trim_end(), text.trim_end())
            .unified_diff()
            .context_radius(3)
            .header(&format!("snapshots/{name}.snap"), "this run")
            .to_string()
    });
    let mut settings = insta::Settings::new();
    settings.set_snapshot_path(dir);
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.set_description(description);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        settings.bind(|| insta::assert_snapshot!(name, text));
    }));
    result.map_err(|_| {
        let message = format!(
            "the normalized responses differ from snapshot {}/{name}.snap (review with `cargo insta review`)",
            dir.display()
        );
        (message, diff)
    })
}

/// The committed snapshot's content: what follows its `---` header.
fn committed(dir: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(format!("{name}.snap"))).ok()?;
    let rest = text.strip_prefix("---\n")?;
    let end = rest.find("\n---\n")?;
    Some(rest[end + 5..].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_named_by_origin() {
        let mut r = Redactor::default();
        r.learn("phones", &json!(["reg-aaaa", "reg-bbbb"]));
        r.learn("sender", &json!({"id": "123456", "key": "AIzaKEY"}));
        let body = json!({
            "notification_key": "APA91bXYZ",
            "failed_registration_ids": ["reg-bbbb"],
            "error": "unknown sender id \"123456\"",
            "multicast_id": 42,
        });
        let out = r.value(&body, None);
        assert_eq!(out["notification_key"], "<notification_key#1>");
        assert_eq!(out["failed_registration_ids"], json!(["<phones[1]>"]));
        assert_eq!(out["error"], "unknown sender id \"<sender.id>\"");
        assert_eq!(out["multicast_id"], "<multicast_id#1>");
        // The same opaque value keeps its label.
        assert_eq!(
            r.value(&json!({"notification_key": "APA91bXYZ"}), None)["notification_key"],
            "<notification_key#1>"
        );
    }

    #[test]
    fn a_changed_transcript_fails_with_a_unified_diff() {
        // `INSTA_UPDATE=always cargo test` (README) asks insta to accept every change.
        if matches!(std::env::var("INSTA_UPDATE").as_deref(), Ok("always" | "force")) {
            return;
        }
        let dir = std::env::temp_dir().join(format!("gcmspec-snapdiff-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("r__c.snap"),
            "---\nsource: src/harness/snapshot.rs\ndescription: d\n---\n## step 1\n-> 400\n{\"error\": \"x\"}\n",
        )
        .unwrap();
        assert!(compare(&dir, "r__c", "d", "## step 1\n-> 400\n{\"error\": \"x\"}\n").is_ok());
        let (message, diff) = compare(&dir, "r__c", "d", "## step 1\n-> 200\n{}\n").unwrap_err();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(message.contains("r__c.snap"), "{message}");
        let diff = diff.expect("a diff against the committed snapshot");
        assert!(diff.contains("--- snapshots/r__c.snap\n+++ this run"), "{diff}");
        assert!(diff.contains("\n--> 400\n") && diff.contains("\n+-> 200\n"), "{diff}");
    }
}
