//! One HTTP exchange as plain data.
//!
//! The reference's HTTP adapter answers these synchronously, and the harness's targets send
//! them: in-process by calling the adapter, or over a socket. So both run the same code path
//! from request bytes to response bytes.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// Header names are lowercase.
    pub headers: Vec<(String, String)>,
    #[serde(serialize_with = "as_text", deserialize_with = "from_text")]
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names are lowercase.
    pub headers: Vec<(String, String)>,
    #[serde(serialize_with = "as_text", deserialize_with = "from_text")]
    pub body: Vec<u8>,
}

fn as_text<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

fn from_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    String::deserialize(d).map(String::into_bytes)
}

impl HttpRequest {
    pub fn new(method: &str, path: &str) -> Self {
        HttpRequest {
            method: method.into(),
            path: path.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    pub fn with_json(mut self, body: &serde_json::Value) -> Self {
        self.body = body.to_string().into_bytes();
        self.with_header("content-type", "application/json")
    }

    pub fn with_query(mut self, name: &str, value: &str) -> Self {
        self.query.push((name.to_string(), value.to_string()));
        self
    }

    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// `path?query`, percent-encoded, for a URL.
    pub fn path_and_query(&self) -> String {
        if self.query.is_empty() {
            return self.path.clone();
        }
        let q: Vec<String> = self.query.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
        format!("{}?{}", self.path, q.join("&"))
    }
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Self::json_bytes(status, body.to_string().into_bytes())
    }

    /// A JSON answer already written.
    pub fn json_bytes(status: u16, body: Vec<u8>) -> Self {
        HttpResponse { status, headers: vec![("content-type".into(), "application/json; charset=UTF-8".into())], body }
    }

    pub fn empty(status: u16) -> Self {
        HttpResponse { status, headers: Vec::new(), body: Vec::new() }
    }

    /// An error with a body that says what is wrong: `{"error": "..."}`.
    pub fn error(status: u16, message: impl std::fmt::Display) -> Self {
        Self::json(status, &serde_json::json!({ "error": message.to_string() }))
    }

    /// The body as JSON, if it is JSON.
    pub fn body_json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `a=b&c=d` (percent-encoding and `+`), keeping order.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Whether a `data` key is reserved for the service (protocol-notes.md: `from`, anything
/// starting with `google` or `gcm`, `message_type`): the server refuses it, an app server
/// must not send it.
pub fn is_reserved_data_key(key: &str) -> bool {
    key == "from" || key == "message_type" || key.starts_with("google") || key.starts_with("gcm")
}

/// A message's payload as the limit counts it: the bytes of its `data` keys and values
/// (a string value's text, any other value's JSON).
pub fn data_payload_bytes(data: &serde_json::Map<String, serde_json::Value>) -> usize {
    data.iter().map(|(k, v)| data_entry_bytes(k, v.as_str(), || v.to_string().len())).sum()
}

/// One `data` entry's part of [`data_payload_bytes`]: its key, and its value's text if it is a
/// string, else its JSON's length (`json_len`, asked only then).
pub fn data_entry_bytes(key: &str, text: Option<&str>, json_len: impl FnOnce() -> usize) -> usize {
    key.len() + text.map_or_else(json_len, str::len)
}

/// A send's field as given: a field given as `null` is absent, as for every field of a send
/// (the reference and the graders read it alike).
pub fn given<'a>(body: &'a serde_json::Map<String, serde_json::Value>, field: &str) -> Option<&'a serde_json::Value> {
    body.get(field).filter(|v| !v.is_null())
}

/// A JSON number's value as a whole number, if it is one: `60`, and `60.0`, `6e1` or `-0`
/// alike (JSON has one number type; the value is what counts). `None` for a fraction, a
/// number past what an i64 holds exactly, or anything but a number.
pub fn whole_number(v: &serde_json::Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64))
}

/// A plain-text form's value as a whole number: digits, after a minus sign or not (`+60`,
/// ` 60` or `60.0` are not numbers there).
pub fn plain_whole_number(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A JSON value's type, in words ("a string", "an object"): for an answer that says what a
/// client sent, and for a failure that says what a server answered.
pub fn json_kind(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_as_json_and_plain_text_read_them() {
        for (json, whole) in [("60", Some(60)), ("60.0", Some(60)), ("6e1", Some(60)), ("-0", Some(0)), ("0.5", None)] {
            assert_eq!(whole_number(&serde_json::from_str(json).unwrap()), whole, "{json}");
        }
        assert_eq!(whole_number(&serde_json::json!("60")), None);
        for (text, whole) in [("60", Some(60)), ("-1", Some(-1)), ("-0", Some(0)), ("+60", None), (" 60", None)] {
            assert_eq!(plain_whole_number(text), whole, "{text:?}");
        }
        for text in ["", "-", "60.0", "6e1", "0x3c", "٦٠"] {
            assert_eq!(plain_whole_number(text), None, "{text:?}");
        }
    }

    #[test]
    fn query_round_trip() {
        let mut r = HttpRequest::new("GET", "/gcm/notification");
        r.query.push(("notification_key_name".into(), "appUser Chris&co/ü".into()));
        let pq = r.path_and_query();
        let (_, q) = pq.split_once('?').unwrap();
        assert_eq!(parse_query(q), r.query);
        assert_eq!(parse_query("a=%zz&b=%4"), vec![("a".into(), "%zz".into()), ("b".into(), "%4".into())]);
    }
}
