//! What a check saw, kept for reports and reproductions: every exchange with the server (the
//! control-API setup included), which of several accepted outcomes each step matched, and
//! the snapshot difference.
//!
//! The exchanges are caught by [`Recording`], a [`Target`] that wraps the real one for the
//! length of one check, so scenarios and properties record without knowing it.

use std::net::SocketAddr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::driver::{Target, TargetError};
use crate::wire::{HttpRequest, HttpResponse};

/// One request and its answer. XMPP steps take the same shape: method `XMPP`, the path says
/// what was done (`send on c1`), the body is what was sent and the response body the JSON
/// that came back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exchange {
    pub request: HttpRequest,
    pub response: HttpResponse,
}

impl Exchange {
    pub fn is_xmpp(&self) -> bool {
        self.request.method == "XMPP"
    }
}

/// The exchanges of one check, in order. Shared by the check's threads of control (a check
/// is one thread, but the log outlives the borrow of the target).
#[derive(Debug, Default)]
pub struct ExchangeLog(Mutex<Vec<Exchange>>);

impl ExchangeLog {
    pub fn push(&self, request: &HttpRequest, response: &HttpResponse) {
        self.lock().push(Exchange { request: request.clone(), response: response.clone() });
    }

    /// Forgets what was logged (a property starts each generated case afresh).
    pub fn clear(&self) {
        self.lock().clear();
    }

    pub fn take(&self) -> Vec<Exchange> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Exchange>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a log shows where the server gave no answer: status 0 and why.
pub fn no_answer(why: &str) -> HttpResponse {
    HttpResponse { status: 0, headers: Vec::new(), body: format!("(no answer: {why})").into_bytes() }
}

/// A target that logs every HTTP exchange it carries.
pub struct Recording<'a> {
    pub inner: &'a dyn Target,
    pub log: &'a ExchangeLog,
}

impl Target for Recording<'_> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn exchange(&self, req: &HttpRequest) -> Result<HttpResponse, TargetError> {
        let result = self.inner.exchange(req);
        match &result {
            Ok(resp) => self.log.push(req, resp),
            // What a person reproducing it would see: no answer.
            Err(e) => self.log.push(req, &no_answer(&e.to_string())),
        }
        result
    }
    fn time_is_virtual(&self) -> bool {
        self.inner.time_is_virtual()
    }
    fn xmpp_address(&self) -> Option<SocketAddr> {
        self.inner.xmpp_address()
    }
    fn xmpp_tls(&self) -> Option<std::sync::Arc<rustls::ClientConfig>> {
        self.inner.xmpp_tls()
    }
    fn deadline(&self) -> Option<(std::time::Instant, std::time::Duration)> {
        self.inner.deadline()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Evidence {
    /// For steps that accept several outcomes: `step 3: observed-400` names the one seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matched: Vec<String>,
    /// Some step passed only on an outcome real servers gave but the documents do not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub observed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exchanges: Vec<Exchange>,
    /// A unified diff, committed snapshot against this run's normalized responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_diff: Option<String>,
    /// For a property: the shrunk failing sequence, as the property's own JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<serde_json::Value>,
    /// A scenario's steps as they went (a differential run compares them; not reported).
    #[serde(skip)]
    pub steps: Vec<super::scenario::StepRecord>,
}

/// A shell word: single-quoted unless it needs no quoting.
fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The exchanges as a shell script of curl commands against `base` (the target's URL).
/// XMPP steps, which curl cannot make, appear as comments with what was sent and received.
/// With `max_body`, longer request bodies are cut (for a terminal; the replay file keeps
/// them whole).
pub fn curl_script(exchanges: &[Exchange], base: &str, max_body: Option<usize>) -> String {
    let cut = |body: &[u8]| {
        let text = String::from_utf8_lossy(body);
        match max_body {
            Some(max) if text.chars().count() > max => {
                format!("{}…[{} bytes in all]", text.chars().take(max).collect::<String>(), body.len())
            }
            _ => text.into_owned(),
        }
    };
    let mut out = String::new();
    for x in exchanges {
        let req = &x.request;
        if x.is_xmpp() {
            out.push_str(&format!("# XMPP {}: {}\n", req.path, cut(&req.body)));
        } else {
            let mut cmd =
                format!("curl -sS -X {} {}", req.method, shell_quote(&format!("{base}{}", req.path_and_query())));
            for (k, v) in &req.headers {
                cmd.push_str(&format!(" -H {}", shell_quote(&format!("{k}: {v}"))));
            }
            if !req.body.is_empty() {
                cmd.push_str(&format!(" --data-raw {}", shell_quote(&cut(&req.body))));
            }
            out.push_str(&cmd);
            out.push('\n');
        }
        let body = String::from_utf8_lossy(&x.response.body);
        let body = if body.chars().count() > 300 {
            format!("{}… ({} bytes)", body.chars().take(300).collect::<String>(), x.response.body.len())
        } else {
            body.into_owned()
        };
        if x.is_xmpp() {
            out.push_str(&format!("#   -> {body}\n"));
        } else {
            out.push_str(&format!("#   -> {} {body}\n", x.response.status));
        }
    }
    out
}

/// Long logs keep their beginning (the setup) and their end (the failure).
pub fn trimmed(exchanges: &[Exchange], keep: usize) -> (Vec<Exchange>, usize) {
    if exchanges.len() <= keep {
        return (exchanges.to_vec(), 0);
    }
    let head = keep / 3;
    let tail = keep - head;
    let mut out = exchanges[..head].to_vec();
    out.extend_from_slice(&exchanges[exchanges.len() - tail..]);
    (out, exchanges.len() - keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curl_quotes_what_the_shell_would_split() {
        let req = HttpRequest::new("POST", "/fcm/send")
            .with_header("authorization", "key=AIza")
            .with_json(&serde_json::json!({"to": "it's"}));
        let resp = HttpResponse { status: 200, headers: Vec::new(), body: b"{}".to_vec() };
        let script = curl_script(&[Exchange { request: req, response: resp }], "http://127.0.0.1:4000", None);
        assert_eq!(
            script,
            "curl -sS -X POST http://127.0.0.1:4000/fcm/send -H 'authorization: key=AIza' -H 'content-type: application/json' --data-raw '{\"to\":\"it'\\''s\"}'\n#   -> 200 {}\n"
        );
    }
}
