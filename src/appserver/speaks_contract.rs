//! The driver side of the contract, for the project's own reference client (`gcmspec
//! reference-client`, what `gcmspec client --driver` runs to show the cases bite): it reads
//! requests, has a [`Client`] do them, and writes what the client returned in the contract's
//! shape.
//!
//! A fault that keeps what the service said from the app server (a canonical id, a
//! `NotRegistered`) is, behind the contract, a library that does not tell its caller: the
//! reply leaves it out, as such a library would.

use std::io::{BufRead, Read, Write};

use serde_json::{Value, json};

use super::contract::{self, Hello, Message, Op, Recipient, Reply, Request, Returned, TokenResult};
use super::{Client, ClientError, Command, Outgoing, To};

/// What the driver keeps from its caller.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hides {
    pub canonical: bool,
    pub not_registered: bool,
}

/// Serves the contract on `input`/`output` until `input` ends: the hello line first, then a
/// reply per request. A line that is not a request gets a reply with id 0 that says so.
pub fn serve(
    client: &mut dyn Client,
    hello: &Hello,
    hides: Hides,
    mut input: impl BufRead,
    mut output: impl Write,
) -> std::io::Result<()> {
    writeln!(output, "{}", serde_json::to_string(hello).expect("plain data"))?;
    output.flush()?;
    loop {
        let mut buf = Vec::new();
        if (&mut input).take(contract::MAX_LINE as u64 + 1).read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        if buf.len() > contract::MAX_LINE {
            return Err(std::io::Error::other("a request longer than the contract allows"));
        }
        let line = String::from_utf8_lossy(&buf);
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(Request { id, op }) => answer(client, id, op, hides),
            Err(e) => Reply { id: 0, returned: None, raised: Some(format!("not a request: {e}")), unsupported: None },
        };
        writeln!(output, "{}", serde_json::to_string(&reply).expect("plain data"))?;
        output.flush()?;
    }
}

fn answer(client: &mut dyn Client, id: u64, op: Op, hides: Hides) -> Reply {
    let reply = |r: Result<Value, ClientError>| match r {
        Ok(v) => Reply { id, returned: Some(v), raised: None, unsupported: None },
        Err(ClientError::Unsupported(why)) => Reply { id, returned: None, raised: None, unsupported: Some(why) },
        Err(ClientError::Failed(why) | ClientError::Broken(why)) => {
            Reply { id, returned: None, raised: Some(why), unsupported: None }
        }
    };
    let command = match op {
        Op::Send { to, via, message } => Command::Send { to: to_of(to), message: outgoing(message), via },
        Op::CreateGroup { notification_key_name, tokens } => {
            Command::CreateGroup { user: notification_key_name, app: None, tokens }
        }
        // The reference client keeps the keys of the groups it made.
        Op::AddToGroup { notification_key_name, tokens, .. } => {
            Command::AddToGroup { user: notification_key_name, app: None, tokens }
        }
        Op::RemoveFromGroup { notification_key_name, tokens, .. } => {
            Command::RemoveFromGroup { user: notification_key_name, app: None, tokens }
        }
        Op::XmppListen { seconds, connections } => Command::XmppListen { seconds, connections: Some(connections) },
        Op::XmppBurst { to, count, message } => Command::XmppBurst { to: to_of(to), count, message: outgoing(message) },
        Op::XmppClose => Command::XmppClose,
    };
    reply(client.run(&command).map(|v| normalized(&v, hides)))
}

fn to_of(r: Recipient) -> To {
    match r {
        Recipient::Token(t) => To::Token(t),
        Recipient::Tokens(t) => To::Tokens(t),
        Recipient::NotificationKey(k) => To::Key(k),
    }
}

fn outgoing(m: Message) -> Outgoing {
    Outgoing {
        data: m.data,
        collapse_key: m.collapse_key,
        time_to_live: m.time_to_live,
        receipt: m.delivery_receipt_requested,
    }
}

/// The reference client's return value in the contract's shape.
fn normalized(v: &Value, hides: Hides) -> Value {
    let mut out = Returned::default();
    let text = |v: &Value| v.as_str().map(str::to_string);
    // Sends to tokens: [{token, result: {message_id | error, registration_id}}].
    for r in v["results"].as_array().into_iter().flatten() {
        let res = &r["result"];
        out.results.push(TokenResult {
            token: text(&r["token"]).unwrap_or_default(),
            message_id: text(&res["message_id"]),
            canonical: text(&res["registration_id"]),
            error: text(&res["error"]),
        });
    }
    // XMPP: the acks and nacks it got, each from the token it was for.
    for a in v["answers"].as_array().into_iter().flatten() {
        if a["failed_registration_ids"].is_array() || a["from"].is_null() {
            continue;
        }
        out.results.push(TokenResult {
            token: text(&a["from"]).unwrap_or_default(),
            message_id: text(&a["message_id"]),
            canonical: text(&a["registration_id"]),
            error: text(&a["error"]),
        });
    }
    // A group send: the service's answer.
    let answer = &v["answer"];
    out.success = answer["success"].as_u64();
    out.failure = answer["failure"].as_u64();
    out.failed_tokens =
        answer["failed_registration_ids"].as_array().map(|a| a.iter().filter_map(text).collect()).unwrap_or_default();
    out.notification_key = text(&v["notification_key"]);
    for r in &mut out.results {
        if hides.canonical {
            r.canonical = None;
        }
        if hides.not_registered && r.gone() {
            r.error = None;
        }
    }
    serde_json::to_value(out).unwrap_or(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl Client for Echo {
        fn describe(&self) -> String {
            "echo".into()
        }
        fn run(&mut self, command: &Command) -> Result<Value, ClientError> {
            match command {
                Command::Send { to: To::Token(t), .. } => Ok(json!({ "results": [
                    { "token": t, "result": { "message_id": "m1", "registration_id": "new" } }
                ] })),
                Command::XmppClose => Err(ClientError::Unsupported("no XMPP".into())),
                _ => Err(ClientError::Failed("boom".into())),
            }
        }
    }

    fn exchange(hides: Hides, requests: &str) -> Vec<Value> {
        let hello = Hello {
            contract: contract::CONTRACT.into(),
            library: "echo".into(),
            version: "1".into(),
            supports: vec!["http".into()],
        };
        let mut out = Vec::new();
        serve(&mut Echo, &hello, hides, requests.as_bytes(), &mut out).unwrap();
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn it_says_hello_then_answers_each_request_by_its_id() {
        let lines = exchange(
            Hides::default(),
            "{\"id\":7,\"op\":\"send\",\"to\":{\"token\":\"a\"},\"via\":\"json\",\"message\":{}}\n\
             {\"id\":8,\"op\":\"xmpp-close\"}\n{\"id\":9,\"op\":\"create-group\",\"notification_key_name\":\"u\",\"tokens\":[]}\nnonsense\n",
        );
        assert_eq!(lines[0]["contract"], contract::CONTRACT);
        assert_eq!(lines[1]["id"], 7);
        assert_eq!(lines[1]["returned"]["results"][0]["canonical"], "new");
        assert_eq!(lines[2]["unsupported"], "no XMPP");
        assert_eq!(lines[3]["raised"], "boom");
        assert_eq!(lines[4]["id"], 0);
    }

    #[test]
    fn a_hidden_canonical_id_is_left_out() {
        let lines = exchange(
            Hides { canonical: true, not_registered: false },
            "{\"id\":1,\"op\":\"send\",\"to\":{\"token\":\"a\"},\"via\":\"json\",\"message\":{}}\n",
        );
        assert_eq!(lines[1]["returned"]["results"][0].get("canonical"), None);
    }
}
