//! Where the reference and the app-server graders must agree: a send the reference refuses
//! for a rule's reason is one the rule's grader blames, and a send it takes is one the grader
//! passes. Checked over generated values on the paths each rule covers, so that neither side
//! can widen or narrow its reading alone.

use gcmspec::reference::lifetime::Platform;
use gcmspec::reference::model::NewInstance;
use gcmspec::reference::{Config, Reference};
use gcmspec::wire::HttpRequest;
use libtest_mimic::Trial;

use crate::trial;

/// A reference with one sender and its devices, and how many violations each rule had.
struct Judge {
    reference: Reference,
    sender: String,
    key: String,
    android: String,
    ios: String,
}

impl Judge {
    fn new() -> Result<Judge, String> {
        let reference = Reference::new(Config::bundled());
        let s = reference.create_sender().map_err(|e| e.to_string())?;
        let (android, ios) = reference.with_model(|m| {
            let new = |platform| NewInstance { senders: vec![s.sender_id.clone()], platform, ..NewInstance::default() };
            (m.register(new(Platform::Android)), m.register(new(Platform::Ios)))
        });
        let (android, ios) = (android.map_err(|e| e.to_string())?, ios.map_err(|e| e.to_string())?);
        Ok(Judge { reference, key: format!("key={}", s.server_key), sender: s.sender_id, android, ios })
    }

    fn violations(&self, rule: &str) -> u64 {
        let v = self.reference.verdicts(&self.sender);
        v.and_then(|v| v.rule(rule).map(|r| r.violations_total)).unwrap_or(0)
    }

    /// Sends `body` as `content_type`; whether the answer names `error`, and the answer.
    fn send(&self, path: &str, content_type: &str, body: String, error: &str) -> (bool, String) {
        let mut req = HttpRequest::new("POST", path).with_header("authorization", &self.key);
        req.headers.push(("content-type".into(), content_type.into()));
        req.body = body.into_bytes();
        let resp = self.reference.handle(&req);
        let text = String::from_utf8_lossy(&resp.body).to_string();
        let refused = resp.status == 400
            || text.contains(&format!("\"error\":\"{error}\""))
            || text.contains(&format!("Error={error}"));
        (refused, format!("{} {text}", resp.status))
    }

    /// Each body in turn: refused with `error` exactly when `rule` gains a violation.
    fn agree(
        &self,
        rule: &str,
        error: &str,
        sends: impl IntoIterator<Item = (&'static str, String)>,
    ) -> Result<(), String> {
        let mut disagreements = Vec::new();
        let mut blamed = self.violations(rule);
        let mut tried = 0;
        for (path, body) in sends {
            let content_type = if path == "/gcm/send" {
                "application/x-www-form-urlencoded;charset=UTF-8"
            } else {
                "application/json"
            };
            if content_type == "application/json" && serde_json::from_str::<serde_json::Value>(&body).is_err() {
                continue;
            }
            tried += 1;
            let (refused, answer) = self.send(path, content_type, body.clone(), error);
            let now = self.violations(rule);
            let graded = now > blamed;
            blamed = now;
            if refused != graded {
                let said = if graded { "blamed it" } else { "passed it" };
                let shown: String = body.chars().take(160).collect();
                disagreements.push(format!("{shown}: the reference answered {answer:.160}, {rule} {said}"));
            }
        }
        if tried < 10 {
            return Err(format!("only {tried} sends tried"));
        }
        if disagreements.is_empty() { Ok(()) } else { Err(disagreements.join("\n")) }
    }
}

/// `time_to_live` texts: whole numbers in and out of range, written as integers, floats and
/// exponents, fractions, signed zeros, numbers past an i64, and values that are no number.
fn ttl_texts() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let max = 2_419_200i64;
    for n in [0, 1, 59, 60, 86_400, max - 1, max, max + 1, -1, -60, i64::MAX, i64::MIN] {
        out.push(n.to_string());
        out.push(format!("{n}.0"));
        out.push(format!("{n}e0"));
    }
    for text in [
        "-0",
        "-0.0",
        "0.0",
        "1e2",
        "1E2",
        "6e1",
        "2.4192e6",
        "2.4192001e6",
        "1e+20",
        "-1e20",
        "1e400",
        "0.5",
        "59.5",
        "1.000001",
        "1e-3",
        "18446744073709551615",
        "18446744073709551616",
        "9007199254740993",
        "\"60\"",
        "true",
        "[60]",
        "{\"s\":60}",
    ] {
        out.push(text.to_string());
    }
    out
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut f = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        f.append_pair(k, v);
    }
    f.finish()
}

/// JSON (one parse serves HTTP and XMPP) and the plain-text form, where only what parses as
/// a whole number is one.
fn ttl_range() -> Result<(), String> {
    let j = Judge::new()?;
    let phone = j.android.clone();
    // Written as text, so that `60.0` reaches both sides as `60.0`, not as 60.
    let json = ttl_texts()
        .into_iter()
        .map(|t| ("/fcm/send", format!("{{\"to\": \"{phone}\", \"time_to_live\": {t}, \"data\": {{\"m\": \"1\"}}}}")));
    let plain = ttl_texts()
        .into_iter()
        .chain(["+60", " 60", "60 ", "", "0x10", "٦٠", "-0", "--1", "-", "00060", "+-1", "1_000"].map(String::from))
        .map(|t| ("/gcm/send", form(&[("registration_id", &phone), ("time_to_live", &t), ("data.m", "1")])));
    j.agree("app.send.ttl-range", "InvalidTtl", json.chain(plain).collect::<Vec<_>>())
}

/// Data around each platform's limit: ASCII and multibyte text, values that are not strings,
/// long keys, and the iOS limit on the iOS device alone.
fn payload_limit() -> Result<(), String> {
    let j = Judge::new()?;
    let mut sends = Vec::new();
    for (to, limit) in [(&j.android, 4096usize), (&j.ios, 2048)] {
        for delta in [-2i64, -1, 0, 1, 2, 100] {
            let size = (limit as i64 + delta) as usize;
            // "k" plus its value: size bytes in all.
            for value in [
                serde_json::Value::String("a".repeat(size - 1)),
                serde_json::Value::String("é".repeat((size - 1) / 2) + &"a".repeat((size - 1) % 2)),
                serde_json::Value::String("€".repeat((size - 1) / 3) + &"a".repeat((size - 1) % 3)),
                // `[1,1,...]`, counted as its JSON text.
                serde_json::Value::from(vec![1; (size - 2) / 2]),
            ] {
                let body = serde_json::json!({ "to": to, "data": { "k": value } });
                sends.push(("/fcm/send", body.to_string()));
            }
            let key = "k".repeat(size - 1);
            sends.push(("/fcm/send", serde_json::json!({ "to": to, "data": { key: "v" } }).to_string()));
            let nested = serde_json::json!({ "to": to, "data": { "k": { "n": "x".repeat(size.saturating_sub(9)) } } });
            sends.push(("/fcm/send", nested.to_string()));
            let value = "a".repeat(size - 1);
            sends.push(("/gcm/send", form(&[("registration_id", to), ("data.k", &value)])));
        }
        let both = serde_json::json!({ "registration_ids": [&j.android, &j.ios], "data": { "k": "a".repeat(3000) } });
        sends.push(("/fcm/send", both.to_string()));
    }
    j.agree("app.send.payload-limit", "MessageTooBig", sends)
}

/// Keys near the reserved ones: case, prefixes inside a word, the empty key.
fn reserved_keys() -> Result<(), String> {
    let j = Judge::new()?;
    let keys = [
        "from",
        "From",
        "FROM",
        "fromage",
        "from ",
        "message_type",
        "Message_Type",
        "message_typ",
        "google",
        "google.x",
        "googlex",
        "Google",
        "xgoogle",
        "gcm",
        "gcm.notification",
        "gcmx",
        "GCM",
        "xgcm",
        "",
        "data",
        "to",
        "notification",
        "collapse_key",
        "goog",
        "gc",
    ];
    let mut sends = Vec::new();
    for key in keys {
        sends.push(("/fcm/send", serde_json::json!({ "to": j.android, "data": { key: "v" } }).to_string()));
        sends.push(("/gcm/send", form(&[("registration_id", &j.android), (&format!("data.{key}"), "v")])));
    }
    j.agree("app.send.reserved-keys", "InvalidDataKey", sends)
}

/// `registration_ids` around its bounds, and lists that are not lists of ids.
fn registration_ids_count() -> Result<(), String> {
    let j = Judge::new()?;
    let mut sends = Vec::new();
    for n in [0usize, 1, 2, 999, 1000, 1001, 1500] {
        // Known and unknown ids alike: the count is of entries, not of valid ids.
        let ids: Vec<String> =
            (0..n).map(|i| if i % 2 == 0 { j.android.clone() } else { format!("unknown-{i}") }).collect();
        sends.push(("/fcm/send", serde_json::json!({ "registration_ids": ids, "data": { "m": "1" } }).to_string()));
    }
    for odd in ["[]", "null", "\"one\"", "[1, 2]", "{}"] {
        sends.push(("/fcm/send", format!("{{\"registration_ids\": {odd}, \"data\": {{\"m\": \"1\"}}}}")));
    }
    let error = "the reference's 400";
    j.agree("app.send.registration-ids-count", error, sends)
}

/// `to` and `registration_ids` together, apart, empty and null.
fn one_target_field() -> Result<(), String> {
    let j = Judge::new()?;
    let a = &j.android;
    let mut sends = Vec::new();
    for targets in [
        format!("\"to\": \"{a}\""),
        format!("\"registration_ids\": [\"{a}\"]"),
        format!("\"to\": \"{a}\", \"registration_ids\": [\"{a}\"]"),
        format!("\"to\": \"{a}\", \"registration_ids\": []"),
        format!("\"to\": \"{a}\", \"registration_ids\": null"),
        format!("\"to\": null, \"registration_ids\": [\"{a}\"]"),
        format!("\"to\": \"\", \"registration_ids\": [\"{a}\"]"),
        format!("\"to\": \"/topics/news\", \"registration_ids\": [\"{a}\"]"),
        format!("\"registration_ids\": [\"{a}\", \"{a}\"]"),
        "\"to\": \"unknown\"".to_string(),
        "\"to\": \"unknown\", \"registration_ids\": [\"unknown\"]".to_string(),
    ] {
        sends.push(("/fcm/send", format!("{{{targets}, \"data\": {{\"m\": \"1\"}}}}")));
    }
    j.agree("app.send.one-target-field", "the reference's 400", sends)
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("agreement::app.send.ttl-range", ttl_range),
        trial("agreement::app.send.payload-limit", payload_limit),
        trial("agreement::app.send.reserved-keys", reserved_keys),
        trial("agreement::app.send.registration-ids-count", registration_ids_count),
        trial("agreement::app.send.one-target-field", one_target_field),
    ]
}
