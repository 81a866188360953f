//! One mistake that fails many checks, named once: a server that sends its counts as strings
//! fails some eighty checks across forty rules, each failure right and each saying
//! `expected 1, found "1"`. Where a failure found a value of the wrong JSON type, or an XMPP
//! login refused, its message says so in one fixed form (`` `/success` is a string, not a
//! number ``, `the server refused the XMPP login (SASL <failure> not-authorized)`), and the
//! run's summary counts the failures that share each such cause: the one to fix first.
//!
//! The form is written here and read here only, so that the two cannot drift apart.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// A JSON value's type, in words.
pub use crate::wire::json_kind as kind;

const KINDS: [&str; 6] = ["null", "a boolean", "a number", "a string", "an array", "an object"];

/// `` `/success` is a string, not a number `` when `found` and `wanted` are of different types.
pub fn wrong_type(pointer: &str, found: &Value, wanted: &Value) -> Option<String> {
    wrong_kind(pointer, found, kind(wanted))
}

/// The same, against a type named in [`kind`]'s words (a check's `type = "integer"`: a number).
pub fn wrong_kind(pointer: &str, found: &Value, wanted: &str) -> Option<String> {
    let f = kind(found);
    (f != wanted).then(|| format!("`{pointer}` is {f}, not {wanted}"))
}

/// The server refused an XMPP login: every check that logs in fails with it, so it is a cause
/// in its own right (outside pass 20: a server that refused every login failed 98 checks,
/// half of them saying so as a debug dump).
pub fn login_refused(condition: &str) -> String {
    format!("{LOGIN_REFUSED}{condition})")
}

const LOGIN_REFUSED: &str = "the server refused the XMPP login (SASL <failure> ";

/// The causes a failure's message names, each once.
pub fn named_in(message: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in message.match_indices(LOGIN_REFUSED) {
        let rest = &message[at..];
        if let Some(end) = rest.find(')') {
            let cause = rest[..=end].to_string();
            if !found.contains(&cause) {
                found.push(cause);
            }
        }
    }
    let mut rest = message;
    while let Some(at) = rest.find("` is ") {
        let (before, after) = rest.split_at(at);
        rest = &after[1..];
        let Some(open) = before.rfind('`') else { continue };
        let pointer = &before[open + 1..];
        let tail = &after["` is ".len()..];
        let Some(f) = KINDS.iter().find(|k| tail.starts_with(**k)) else { continue };
        let Some(w) = tail[f.len()..].strip_prefix(", not ").and_then(|t| KINDS.iter().find(|k| t.starts_with(**k)))
        else {
            continue;
        };
        let cause = format!("`{pointer}` is {f}, not {w}");
        if !pointer.contains(char::is_whitespace) && !found.contains(&cause) {
            found.push(cause);
        }
    }
    found
}

/// A cause that more than one failure shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shared {
    pub cause: String,
    pub failures: usize,
    /// The rules those failures belong to.
    pub rules: usize,
}

/// The causes shared by at least two failures, the most shared first. `failures` are each
/// failure's rule and message.
pub fn shared<'a>(failures: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<Shared> {
    let mut by_cause: BTreeMap<String, (usize, std::collections::BTreeSet<&str>)> = BTreeMap::new();
    for (rule, message) in failures {
        for cause in named_in(message) {
            let entry = by_cause.entry(cause).or_default();
            entry.0 += 1;
            entry.1.insert(rule);
        }
    }
    let mut out: Vec<Shared> = by_cause
        .into_iter()
        .filter(|(_, (n, _))| *n >= 2)
        .map(|(cause, (failures, rules))| Shared { cause, failures, rules: rules.len() })
        .collect();
    out.sort_by(|a, b| b.failures.cmp(&a.failures).then_with(|| a.cause.cmp(&b.cause)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_form_written_is_the_form_read() {
        let cause = wrong_type("/success", &json!("1"), &json!(1)).expect("different types");
        assert_eq!(cause, "`/success` is a string, not a number");
        let message = format!("step 4 (x.toml line 9): at `/success`: expected 1, found \"1\" ({cause})");
        assert_eq!(named_in(&message), std::slice::from_ref(&cause));
        // In a normalized answer's JSON, and twice in one message: named once.
        let normalized =
            format!("normalized: {{\"error\":\"group counts that are not numbers ({cause})\"}}\n{message}");
        assert_eq!(named_in(&normalized), [cause]);
        assert_eq!(wrong_type("/success", &json!(2), &json!(1)), None);
    }

    #[test]
    fn a_refused_login_is_a_cause() {
        let m = format!("step 4 (x.toml line 9): logging in over XMPP as 12: {}", login_refused("not-authorized"));
        assert_eq!(named_in(&m), ["the server refused the XMPP login (SASL <failure> not-authorized)"]);
    }

    #[test]
    fn prose_that_looks_alike_is_not_a_cause() {
        assert!(named_in("the `x` is a string of text, or `y` is an apple, not a pear").is_empty());
        assert!(named_in("`a b` is a string, not a number").is_empty());
    }

    #[test]
    fn causes_are_counted_across_failures_and_rules() {
        let c = "at `/success`: expected 1, found \"1\" (`/success` is a string, not a number)";
        let d = "at `/failure`: expected 0, found \"0\" (`/failure` is a string, not a number)";
        let got = shared([("r1", c), ("r2", c), ("r2", d), ("r3", "something else")]);
        assert_eq!(got, [Shared { cause: "`/success` is a string, not a number".into(), failures: 2, rules: 2 }]);
    }
}
