//! A scenario step: exactly one action, its `${...}` values defined before use, and what
//! each action needs of a target.

use std::collections::BTreeSet;
use std::ops::Range;

use serde_json::Value;

use super::Cx;
use crate::catalog::template::Expr;
use crate::catalog::tree::{Node, NodeValue};
use crate::catalog::*;

impl Cx<'_> {
    pub(super) fn step(
        &mut self,
        node: &Node,
        field: &str,
        defined: &mut BTreeSet<String>,
        needs: &mut BTreeSet<String>,
    ) -> Option<Step> {
        let entries = self.table(node, field)?;
        const ACTIONS: &[&str] = &[
            "new_sender",
            "register",
            "unregister",
            "id_token",
            "inbox",
            "request",
            "connectivity",
            "uninstall",
            "reregister",
            "upstream",
            "handled",
            "advance_clock",
            "send",
            "audience",
            "manage",
            "xmpp_connect",
            "xmpp_send",
            "xmpp_raw",
            "xmpp_post",
            "xmpp_receive",
            "xmpp_quiet",
            "xmpp_close",
            "drain",
            "assert",
        ];
        let actions: Vec<_> = entries.iter().filter(|(k, _, _)| ACTIONS.contains(&k.as_str())).collect();
        let [(action_key, _, action_node)] = actions.as_slice() else {
            self.err(&node.span, field, &format!("a step has exactly one action, one of: {}", ACTIONS.join(", ")));
            return None;
        };
        let mut allowed = vec![action_key.as_str(), "expect", "save", "note"];
        if action_key == "request" {
            allowed.extend(["sender", "auth", "headers", "omit_headers", "query", "body", "raw_body", "repeat"]);
        }
        if ["xmpp_post", "xmpp_receive", "upstream", "send", "manage"].contains(&action_key.as_str()) {
            allowed.push("repeat");
        }
        if action_key == "send" {
            allowed.push("sender");
        }
        let repeat = node.get("repeat").map(|r| {
            let v = r.to_json();
            self.templates(&v, &format!("{field}.repeat"), &r.span, defined);
            v
        });
        // The counter is visible inside a repeated step only.
        let mut inner = defined.clone();
        if repeat.is_some() {
            inner.insert(REPEAT_VAR.to_string());
        }
        let defined_here = &inner;
        self.only(entries, &allowed, field);
        let afield = format!("{field}.{action_key}");
        let span = &action_node.span;
        let mut defines = Vec::new();
        let action = match action_key.as_str() {
            "new_sender" => {
                needs.insert("senders".into());
                let (name, count) = match &action_node.value {
                    NodeValue::Table(_) => {
                        self.only(action_node.entries(), &["as", "count"], &afield);
                        let name =
                            self.var_name(action_node.get("as").unwrap_or(action_node), &format!("{afield}.as"))?;
                        let count = action_node.get("count").map(Node::to_json);
                        if let Some(c) = &count {
                            self.templates(c, &format!("{afield}.count"), span, defined);
                        }
                        (name, count)
                    }
                    _ => (self.var_name(action_node, &afield)?, None),
                };
                defines.push(name.clone());
                Action::NewSender { name, count }
            }
            "register" => {
                needs.insert("instances".into());
                self.table(action_node, &afield)?;
                self.only(
                    action_node.entries(),
                    &["as", "count", "senders", "account", "platform", "package"],
                    &afield,
                );
                let name = self.var_name(action_node.get("as").unwrap_or(action_node), &format!("{afield}.as"))?;
                let count = action_node.get("count").map_or(Value::from(1), Node::to_json);
                let senders: Vec<String> = self
                    .strings(action_node, "senders", &afield)
                    .map_or_else(|| vec!["sender".to_string()], |v| v.into_iter().map(|s| s.0).collect());
                let account = action_node.get("account").map(Node::to_json);
                let platform = action_node.get("platform").map(Node::to_json);
                let package = action_node.get("package").map(Node::to_json);
                for v in [Some(&count), account.as_ref(), platform.as_ref(), package.as_ref()].into_iter().flatten() {
                    self.templates(v, &afield, span, defined);
                }
                for s in &senders {
                    self.sender_expr(s, span, &format!("{afield}.senders"), defined);
                }
                defines.push(name.clone());
                Action::Register { name, count, senders, account, platform, package }
            }
            "unregister" => {
                needs.insert("unregister".into());
                let v = action_node.to_json();
                self.templates(&v, &afield, span, defined);
                Action::Unregister(v)
            }
            "inbox" => {
                needs.insert("inbox".into());
                let v = action_node.to_json();
                self.templates(&v, &afield, span, defined);
                Action::Inbox(v)
            }
            "id_token" => {
                needs.insert("id_tokens".into());
                self.table(action_node, &afield)?;
                self.only(action_node.entries(), &["as", "account", "sender"], &afield);
                let name = self.var_name(action_node.get("as").unwrap_or(action_node), &format!("{afield}.as"))?;
                let account = action_node.get("account").map(Node::to_json);
                let Some(account) = account else {
                    self.err(span, &afield, "missing field `account`");
                    return None;
                };
                self.templates(&account, &afield, span, defined);
                let sender = self.string(action_node, "sender", &afield, false).unwrap_or_else(|| "sender".into());
                self.sender_expr(&sender, span, &format!("{afield}.sender"), defined);
                defines.push(name.clone());
                Action::IdToken { name, account, sender }
            }
            "connectivity" => {
                needs.insert("connectivity".into());
                self.table(action_node, &afield)?;
                self.only(action_node.entries(), &["of", "state"], &afield);
                let of = self.required_template(action_node, "of", &afield, defined)?;
                let state = self.string(action_node, "state", &afield, true)?;
                if !["awake", "idle", "offline"].contains(&state.as_str()) {
                    self.err(span, &format!("{afield}.state"), "expected \"awake\", \"idle\" or \"offline\"");
                }
                Action::Connectivity { of, state }
            }
            "uninstall" => {
                needs.insert("uninstall".into());
                let v = action_node.to_json();
                self.templates(&v, &afield, span, defined);
                Action::Uninstall(v)
            }
            "reregister" => {
                needs.insert("reregister".into());
                self.table(action_node, &afield)?;
                self.only(action_node.entries(), &["of", "as"], &afield);
                let of = self.required_template(action_node, "of", &afield, defined)?;
                let name = self.var_name(action_node.get("as").unwrap_or(action_node), &format!("{afield}.as"))?;
                defines.push(name.clone());
                Action::Reregister { of, name }
            }
            "upstream" => {
                needs.insert("upstream".into());
                self.table(action_node, &afield)?;
                self.only(action_node.entries(), &["from", "to", "data"], &afield);
                let from = self.required_template(action_node, "from", &afield, defined)?;
                let to = self.required_template(action_node, "to", &afield, defined)?;
                let data = action_node.get("data").map(Node::to_json);
                if let Some(d) = &data {
                    self.templates(d, &format!("{afield}.data"), span, defined_here);
                }
                Action::Upstream { from, to, data }
            }
            "handled" => {
                needs.insert("dismiss".into());
                self.table(action_node, &afield)?;
                self.only(action_node.entries(), &["by", "message_id"], &afield);
                let by = self.required_template(action_node, "by", &afield, defined)?;
                let message_id = self.required_template(action_node, "message_id", &afield, defined)?;
                Action::Handled { by, message_id }
            }
            "advance_clock" => {
                needs.insert("clock".into());
                self.table(action_node, &afield)?;
                self.only(action_node.entries(), &["seconds", "sender"], &afield);
                let seconds = self.required_template(action_node, "seconds", &afield, defined)?;
                let sender = self.string(action_node, "sender", &afield, false).unwrap_or_else(|| "sender".into());
                self.sender_expr(&sender, span, &format!("{afield}.sender"), defined);
                Action::AdvanceClock { seconds, sender }
            }
            "send" => {
                self.table(action_node, &afield)?;
                let v = action_node.to_json();
                self.templates(&v, &afield, span, defined_here);
                if v.get("to").is_none() {
                    self.err(
                        span,
                        &afield,
                        "a send names its recipients in `to`: an audience, a registration id or a notification key",
                    );
                }
                if v.get("registration_ids").is_some() {
                    self.err(
                        span,
                        &format!("{afield}.registration_ids"),
                        "a send addresses `to` (an `audience` of several devices for several); the trial's path decides how: the multicast path sends `registration_ids`",
                    );
                }
                Action::Send(v)
            }
            "audience" => {
                self.table(action_node, &afield)?;
                self.only(action_node.entries(), &["as", "devices"], &afield);
                let name = self.var_name(action_node.get("as").unwrap_or(action_node), &format!("{afield}.as"))?;
                let devices = self.required_template(action_node, "devices", &afield, defined)?;
                defines.push(name.clone());
                Action::Audience { name, devices }
            }
            "manage" => {
                self.table(action_node, &afield)?;
                self.only(action_node.entries(), &["op", "ids", "group"], &afield);
                let op = self.string(action_node, "op", &afield, true)?;
                if !["create", "add", "remove"].contains(&op.as_str()) {
                    self.err(span, &format!("{afield}.op"), "expected \"create\", \"add\" or \"remove\"");
                }
                let ids = self.required_template(action_node, "ids", &afield, defined_here)?;
                let group = action_node.get("group").map(Node::to_json);
                if let Some(g) = &group {
                    self.templates(g, &format!("{afield}.group"), span, defined_here);
                }
                Action::Manage { op, ids, group }
            }
            "xmpp_connect" => {
                needs.insert("xmpp".into());
                self.table(action_node, &afield)?;
                self.only(action_node.entries(), &["as", "sender", "password", "domain"], &afield);
                let name = self.var_name(action_node.get("as").unwrap_or(action_node), &format!("{afield}.as"))?;
                let sender = self.string(action_node, "sender", &afield, false).unwrap_or_else(|| "sender".into());
                self.sender_expr(&sender, span, &format!("{afield}.sender"), defined);
                let password = action_node.get("password").map(Node::to_json);
                if let Some(p) = &password {
                    self.templates(p, &format!("{afield}.password"), span, defined);
                }
                let domain = self.string(action_node, "domain", &afield, false);
                if let Some(d) = domain.as_deref().filter(|d| !crate::xmpp::DOMAINS.contains(d)) {
                    self.err(
                        span,
                        &format!("{afield}.domain"),
                        &format!("unknown domain {d:?} (expected one of {:?})", crate::xmpp::DOMAINS),
                    );
                }
                defines.push(name.clone());
                Action::XmppConnect { name, sender, password, domain }
            }
            "xmpp_send" | "xmpp_raw" => {
                needs.insert("xmpp".into());
                self.table(action_node, &afield)?;
                let payload = if action_key == "xmpp_send" { "message" } else { "stanza" };
                self.only(action_node.entries(), &["on", payload], &afield);
                let on = self.string(action_node, "on", &afield, true)?;
                if !defined.contains(&on) {
                    self.err(
                        span,
                        &format!("{afield}.on"),
                        &format!("`{on}` is not a connection made by an earlier xmpp_connect"),
                    );
                }
                let value = self.required_template(action_node, payload, &afield, defined)?;
                if action_key == "xmpp_send" {
                    Action::XmppSend { on, message: value }
                } else {
                    Action::XmppRaw { on, stanza: value }
                }
            }
            "xmpp_post" => {
                needs.insert("xmpp".into());
                self.table(action_node, &afield)?;
                self.only(action_node.entries(), &["on", "message"], &afield);
                let on = self.connection(action_node, &afield, defined)?;
                let message = self.required_template(action_node, "message", &afield, defined_here)?;
                Action::XmppPost { on, message }
            }
            "xmpp_receive" | "xmpp_quiet" => {
                needs.insert("xmpp".into());
                self.table(action_node, &afield)?;
                self.only(action_node.entries(), &["on"], &afield);
                let on = self.connection(action_node, &afield, defined)?;
                if action_key == "xmpp_receive" { Action::XmppReceive { on } } else { Action::XmppQuiet { on } }
            }
            "xmpp_close" => {
                needs.insert("xmpp".into());
                let Some(on) = action_node.as_str().map(str::to_string) else {
                    self.err(span, &afield, "expected the name of a connection");
                    return None;
                };
                if !defined.contains(&on) {
                    self.err(span, &afield, &format!("`{on}` is not a connection made by an earlier xmpp_connect"));
                }
                Action::XmppClose(on)
            }
            "drain" => {
                needs.insert("drain".into());
                self.table(action_node, &afield)?;
                self.only(action_node.entries(), &["sender"], &afield);
                let sender = self.string(action_node, "sender", &afield, false).unwrap_or_else(|| "sender".into());
                self.sender_expr(&sender, span, &format!("{afield}.sender"), defined);
                Action::Drain { sender }
            }
            "assert" => {
                let Some(what) = action_node.as_str().map(str::to_string) else {
                    self.err(span, &afield, "expected what the step asserts, as text");
                    return None;
                };
                if node.get("expect").is_none() {
                    self.err(span, &afield, "an assert step needs `expect` (checks of `value = ...`)");
                }
                Action::Assert(what)
            }
            _ => Action::Request(self.request(node, action_node, field, defined_here)?),
        };
        let expect = match node.get("expect").map(|e| (e, &e.value)) {
            None => Vec::new(),
            Some((e, NodeValue::Array(items))) => {
                if items.is_empty() {
                    self.err(&e.span, &format!("{field}.expect"), "an empty list of outcomes accepts nothing");
                }
                let mut out = Vec::new();
                for (k, item) in items.iter().enumerate() {
                    out.push(self.expect(item, &format!("{field}.expect[{k}]"), defined_here)?);
                }
                out
            }
            Some((e, _)) => vec![self.expect(e, &format!("{field}.expect"), defined_here)?],
        };
        if repeat.is_some()
            && !["request", "xmpp_post", "xmpp_receive", "upstream", "send", "manage"].contains(&action_key.as_str())
        {
            self.err(&node.span, &format!("{field}.repeat"), "only request steps repeat");
        }
        let mut save = Vec::new();
        if let Some(s) = node.get("save") {
            for (k, kspan, v) in self.table(s, &format!("{field}.save"))? {
                match v.as_str() {
                    // A pointer ending in `?` may find nothing: the variable is then null.
                    Some(p) if p.is_empty() || p.starts_with('/') || SAVE_SPECIALS.contains(&p) => {
                        save.push((k.clone(), p.to_string()))
                    }
                    _ => self.err(
                        kspan,
                        &format!("{field}.save.{k}"),
                        &format!(
                            "expected a JSON pointer (\"/notification_key\") or one of {}",
                            SAVE_SPECIALS.join(", ")
                        ),
                    ),
                }
                defines.push(k.clone());
            }
        }
        let sender = if action_key == "send" { self.string(node, "sender", field, false) } else { None };
        if let Some(s) = &sender {
            self.sender_expr(s, &node.span, &format!("{field}.sender"), defined_here);
        }
        defined.extend(defines);
        Some(Step { line: self.line(&node.span), action, expect, repeat, save, sender })
    }

    /// The `on` of an XMPP step: a connection made earlier.
    pub(super) fn connection(&mut self, node: &Node, field: &str, defined: &BTreeSet<String>) -> Option<String> {
        let on = self.string(node, "on", field, true)?;
        if !defined.contains(&on) {
            self.err(
                &node.span,
                &format!("{field}.on"),
                &format!("`{on}` is not a connection made by an earlier xmpp_connect"),
            );
        }
        Some(on)
    }

    /// A sender reference: an expression (`other`, `partners[3]`) over defined variables.
    pub(super) fn sender_expr(&mut self, text: &str, span: &Range<usize>, field: &str, defined: &BTreeSet<String>) {
        match Expr::parse(text) {
            Err(e) => self.err(span, field, &e.to_string()),
            Ok(e) => {
                let mut roots = Vec::new();
                e.roots(&mut roots);
                for r in roots.iter().filter(|r| !defined.contains(*r)) {
                    self.err(span, field, &format!("`{r}` is not a sender defined earlier"));
                }
            }
        }
    }

    pub(super) fn request(
        &mut self,
        step: &Node,
        action: &Node,
        field: &str,
        defined: &BTreeSet<String>,
    ) -> Option<Request> {
        let afield = format!("{field}.request");
        let Some(line) = action.as_str() else {
            self.err(&action.span, &afield, "expected \"METHOD /path\"");
            return None;
        };
        let (method, path) = line.split_once(' ').unwrap_or((line, ""));
        if !["GET", "POST", "PUT", "DELETE"].contains(&method) || !path.starts_with('/') {
            self.err(&action.span, &afield, "expected \"METHOD /path\" with GET, POST, PUT or DELETE");
        }
        self.templates(&Value::String(path.to_string()), &afield, &action.span, defined);
        let sender = self.string(step, "sender", field, false).unwrap_or_else(|| "sender".into());
        self.sender_expr(&sender, &step.span, &format!("{field}.sender"), defined);
        let auth = match step.get("auth").map(|n| (n.as_str(), n)) {
            None | Some((Some("server"), _)) => Auth::Server,
            Some((Some("key"), _)) => Auth::Key,
            Some((Some("project"), _)) => Auth::Project,
            Some((Some("none"), _)) => Auth::None,
            Some((_, n)) => {
                self.err(&n.span, &format!("{field}.auth"), "expected \"server\", \"key\", \"project\" or \"none\"");
                Auth::Server
            }
        };
        let mut pairs = |key: &str| -> Vec<(String, Value)> {
            let Some(n) = step.get(key) else { return Vec::new() };
            let Some(entries) = self.table(n, &format!("{field}.{key}")) else { return Vec::new() };
            let out: Vec<_> = entries.iter().map(|(k, _, v)| (k.clone(), v.to_json())).collect();
            for (k, v) in &out {
                if !v.is_string() {
                    self.err(&n.span, &format!("{field}.{key}.{k}"), "expected a string");
                }
                self.templates(v, &format!("{field}.{key}.{k}"), &n.span, defined);
            }
            out
        };
        let headers = pairs("headers");
        let query = pairs("query");
        let omit_headers = self
            .strings(step, "omit_headers", field)
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.0.to_ascii_lowercase())
            .collect();
        let body = match (step.get("body"), step.get("raw_body")) {
            (Some(_), Some(r)) => {
                self.err(&r.span, field, "`body` and `raw_body` exclude each other");
                Body::None
            }
            (Some(b), None) => {
                let v = b.to_json();
                self.templates(&v, &format!("{field}.body"), &b.span, defined);
                Body::Json(v)
            }
            (None, Some(r)) => match r.as_str() {
                Some(s) => {
                    self.templates(&Value::String(s.to_string()), &format!("{field}.raw_body"), &r.span, defined);
                    Body::Raw(s.to_string())
                }
                None => {
                    self.err(&r.span, &format!("{field}.raw_body"), "expected a string");
                    Body::None
                }
            },
            (None, None) => Body::None,
        };
        Some(Request {
            method: method.to_string(),
            path: path.to_string(),
            sender,
            auth,
            headers,
            omit_headers,
            query,
            body,
        })
    }
}
