//! Which paths each check runs: inferred from its steps, against what the rule covers.
//!
//! A check written once (its `send`s address an audience, an id or a key; its group
//! operations are `manage` steps) runs over every covered path its steps can take, one trial
//! each; a check of fixed requests runs the paths those requests take, once. A covered path no
//! check runs needs a reason (`not_run`), and a check cannot name a path its steps cannot
//! take: what the matrix of `gcmspec rules` shows is what runs.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use serde_json::Value;

use super::Cx;
use crate::catalog::template::{Expr, Piece, split};
use crate::catalog::*;

/// What a variable holds, as far as paths go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holds {
    /// Registration ids (one, or an array).
    Ids,
    /// A notification key.
    Key,
    /// An audience: devices made ready for whatever delivery path the trial takes.
    Audience,
    Other,
}

/// What a check's steps can do.
#[derive(Debug, Default)]
struct Abilities {
    /// The delivery paths every generic `send` of it can take (none: it has no `send`).
    delivery: Option<BTreeSet<Path>>,
    /// It has `manage` steps, which run on either group endpoint.
    manages: bool,
    /// The paths its fixed requests and XMPP messages take.
    fixed: BTreeSet<Path>,
    /// It registers or sends with a second sender of its own.
    second_sender: bool,
    /// It registers more than one device.
    several_devices: bool,
}

impl Cx<'_> {
    /// Works out every check's runs, and reports what the coverage model refuses.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn runs(
        &mut self,
        field: &str,
        span: &Range<usize>,
        covers: &[Path],
        not_run: &BTreeMap<Path, (String, Range<usize>)>,
        limits: &[Limit],
        checks: &mut [Check],
        declared: &[Option<super::rule::Declared>],
    ) {
        for (check, declared) in checks.iter_mut().zip(declared) {
            let cfield = format!("{field}.check[{}]", check.name);
            let abilities = match &check.kind {
                CheckKind::Scenario(steps) => abilities(steps),
                // What a property exercises is the harness's to say (`gcmspec lint` checks it).
                CheckKind::Property { .. } => Abilities {
                    fixed: declared.as_ref().map(|(p, _)| p.iter().copied().collect()).unwrap_or_default(),
                    ..Abilities::default()
                },
            };
            if let Some((paths, pspan)) = declared {
                for p in paths {
                    if !covers.contains(p) {
                        self.err(
                            pspan,
                            &format!("{cfield}.paths"),
                            &format!("`{p}` is not among the paths the rule covers ({})", names(covers)),
                        );
                    } else if let Err(why) = can_take(&abilities, *p) {
                        self.err(pspan, &format!("{cfield}.paths"), &format!("the check cannot run `{p}`: {why}"));
                    }
                }
            }
            let wanted: Vec<Path> = match declared {
                Some((paths, _)) => covers.iter().copied().filter(|p| paths.contains(p)).collect(),
                None => covers.to_vec(),
            };
            check.runs = runs_of(&abilities, &wanted, declared.is_some());
            if let Some(probe) = &check.probe
                && !limits.iter().any(|l| &l.param == probe)
            {
                self.err(
                    span,
                    &format!("{cfield}.probe"),
                    &format!("`{probe}` is not a limit of the rule (declare it in `[[rule.limit]]`)"),
                );
            }
            // Probed, a check's rounds differ only in the value the steps use: none, no bound.
            if let (Some(probe), crate::catalog::CheckKind::Scenario(steps)) = (&check.probe, &check.kind)
                && crate::catalog::coverage::probe_uses(steps).is_empty()
            {
                self.err(
                    span,
                    &format!("{cfield}.probe"),
                    &format!(
                        "no step uses `${{probe}}`, so its rounds at `{probe}` - 1, at it and + 1 would run alike"
                    ),
                );
            }
        }
        for &p in covers {
            let running: Vec<&str> = checks
                .iter()
                .filter(|c| c.runs.iter().any(|r| r.paths.contains(&p)))
                .map(|c| c.name.as_str())
                .collect();
            match (running.is_empty(), not_run.get(&p)) {
                (true, None) => self.err(
                    span,
                    &format!("{field}.covers"),
                    &format!(
                        "the rule covers `{p}` ({}) but no check runs it: write one, or say why in `not_run`",
                        p.description()
                    ),
                ),
                (false, Some((_, nspan))) => self.err(
                    nspan,
                    &format!("{field}.not_run.{p}"),
                    &format!("`{p}` runs (check {}): a reason for not running it is stale", running.join(", ")),
                ),
                _ => {}
            }
        }
        for (p, (_, nspan)) in not_run {
            if !covers.contains(p) {
                self.err(nspan, &format!("{field}.not_run.{p}"), &format!("the rule does not cover `{p}`"));
            }
        }
        for limit in limits {
            if !checks.iter().any(|c| c.probe.as_deref() == Some(limit.param.as_str())) {
                self.err(
                    span,
                    &format!("{field}.limit"),
                    &format!(
                        "no check probes `{}` (`probe = \"{}\"` runs it at n-1, n and n+1)",
                        limit.param, limit.param
                    ),
                );
            }
        }
    }
}

fn names(paths: &[Path]) -> String {
    if paths.is_empty() { "none".into() } else { paths.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ") }
}

/// Whether a check's steps can take `path`, or why not.
fn can_take(a: &Abilities, path: Path) -> Result<(), String> {
    let ok = match path.axis() {
        Axis::Delivery => a.delivery.as_ref().is_some_and(|d| d.contains(&path)) || a.fixed.contains(&path),
        Axis::Group => (a.manages && matches!(path, Path::Server | Path::Client)) || a.fixed.contains(&path),
        Axis::Tenancy => {
            a.delivery.is_some() || a.fixed.contains(&path) || (path == Path::TwoDevices && a.several_devices)
        }
    };
    if ok {
        return Ok(());
    }
    Err(match path.axis() {
        Axis::Delivery => match &a.delivery {
            Some(d) => format!("its sends can take only {}", names(&d.iter().copied().collect::<Vec<_>>())),
            None => "it has no `send` step and no request on that path".into(),
        },
        Axis::Group => "it has no `manage` step and no request to that endpoint".into(),
        Axis::Tenancy if path == Path::TwoSenders => "it sends nothing and uses no second sender".into(),
        Axis::Tenancy => "it sends nothing and registers one device".into(),
    })
}

/// The trials of a check over the `wanted` paths (the rule's covered ones, or those the check
/// names): one per path of an axis its steps are written once for, the fixed paths in the first.
fn runs_of(a: &Abilities, wanted: &[Path], declared: bool) -> Vec<Run> {
    let generic = |p: Path| match p.axis() {
        Axis::Delivery => a.delivery.as_ref().is_some_and(|d| d.contains(&p)),
        Axis::Group => a.manages && matches!(p, Path::Server | Path::Client),
        Axis::Tenancy => a.delivery.is_some() && !a.fixed.contains(&p),
    };
    let default_delivery = a
        .delivery
        .as_ref()
        .and_then(|d| wanted.iter().copied().find(|p| d.contains(p)).or_else(|| d.iter().next().copied()))
        .unwrap_or(Path::Token);
    let default_endpoint =
        wanted.iter().copied().find(|p| generic(*p) && p.axis() == Axis::Group).unwrap_or(Path::Server);
    let fixed: Vec<Path> = wanted
        .iter()
        .copied()
        .filter(|p| !generic(*p) && (a.fixed.contains(p) || (declared && *p == Path::TwoDevices && a.several_devices)))
        .collect();
    let mut runs: Vec<Run> = Vec::new();
    for &p in wanted.iter().filter(|p| generic(**p)) {
        let mut run = Run {
            paths: vec![p],
            delivery: default_delivery,
            endpoint: default_endpoint,
            tenancy: None,
            suffix: String::new(),
        };
        match p.axis() {
            Axis::Delivery => run.delivery = p,
            Axis::Group => run.endpoint = p,
            Axis::Tenancy => run.tenancy = Some(p),
        }
        // The first run also stands for the defaults of the other axes it takes.
        if runs.is_empty() {
            for q in wanted.iter().copied().filter(|q| generic(*q) && *q != p) {
                let default = match q.axis() {
                    Axis::Delivery => q == run.delivery,
                    Axis::Group => q == run.endpoint,
                    Axis::Tenancy => false,
                };
                if default {
                    run.paths.push(q);
                }
            }
        } else {
            run.suffix = format!("@{p}");
        }
        if runs.iter().any(|r| r.paths.contains(&p)) {
            continue;
        }
        runs.push(run);
    }
    if runs.is_empty() {
        runs.push(Run {
            paths: Vec::new(),
            delivery: default_delivery,
            endpoint: default_endpoint,
            tenancy: None,
            suffix: String::new(),
        });
    }
    // A fixed tenancy path is the check's own setup: it runs in the first trial.
    runs[0].paths.extend(fixed);
    runs[0].paths.sort();
    runs[0].paths.dedup();
    runs
}

fn abilities(steps: &[Step]) -> Abilities {
    let mut holds: BTreeMap<String, Holds> = BTreeMap::new();
    let mut a = Abilities::default();
    let mut devices = 0u64;
    for step in steps {
        match &step.action {
            Action::Register { name, count, senders: by, .. } => {
                holds.insert(name.clone(), Holds::Ids);
                devices += count.as_u64().unwrap_or(2);
                if by.iter().any(|s| !s.starts_with("sender")) {
                    a.second_sender = true;
                }
            }
            Action::Reregister { name, .. } => {
                holds.insert(name.clone(), Holds::Ids);
            }
            Action::Audience { name, .. } => {
                holds.insert(name.clone(), Holds::Audience);
            }
            // A check that makes a sender of its own exercises two of them.
            Action::NewSender { .. } => a.second_sender = true,
            Action::Send(message) => {
                if step.sender.is_some() {
                    a.second_sender = true;
                }
                let can: BTreeSet<Path> = match holds_of(&message["to"], &holds) {
                    Holds::Audience => Path::ALL.iter().copied().filter(|p| p.axis() == Axis::Delivery).collect(),
                    Holds::Key => Path::TO_KEYS.iter().copied().collect(),
                    Holds::Ids | Holds::Other => Path::TO_TOKENS.iter().copied().collect(),
                };
                a.delivery = Some(match a.delivery.take() {
                    None => can,
                    Some(before) => before.intersection(&can).copied().collect(),
                });
            }
            Action::Manage { .. } => a.manages = true,
            Action::Request(r) => {
                if r.sender != "sender" {
                    a.second_sender = true;
                }
                a.fixed.extend(request_path(r, &holds));
            }
            // An ack is not a delivery.
            Action::XmppSend { message, .. } | Action::XmppPost { message, .. }
                if message.get("message_type").is_none() =>
            {
                a.fixed.insert(match holds_of(&message["to"], &holds) {
                    Holds::Key => Path::XmppKey,
                    _ => Path::Xmpp,
                });
            }
            _ => {}
        }
        for (var, pointer) in &step.save {
            let kind = if pointer.ends_with("notification_key") { Holds::Key } else { Holds::Other };
            holds.insert(var.clone(), kind);
        }
    }
    a.several_devices = devices > 1;
    // A check that sets up a second sender itself is a fixed two-sender check.
    if a.second_sender {
        a.fixed.insert(Path::TwoSenders);
    }
    a
}

/// The path a fixed request takes, if it takes one.
fn request_path(r: &Request, holds: &BTreeMap<String, Holds>) -> Option<Path> {
    let form = r.headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("content-type")
            && v.as_str().is_some_and(|t| t.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"))
    });
    match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/fcm/send" | "/gcm/send") => Some(match &r.body {
            Body::Json(b) if b.get("registration_ids").is_some() => Path::Multicast,
            Body::Json(b) if holds_of(&b["to"], holds) == Holds::Key => Path::Key,
            Body::Raw(_) if form => Path::PlainText,
            _ => Path::Token,
        }),
        ("POST", "/gcm/notification" | "/fcm/notification") => Some(Path::Server),
        ("GET", "/gcm/notification" | "/fcm/notification") => Some(Path::Lookup),
        ("POST", "/gcm/googlenotification") => Some(Path::Client),
        _ => None,
    }
}

/// What a `to` holds: a whole `${expr}` takes its root variable's kind; a literal is an id.
fn holds_of(v: &Value, holds: &BTreeMap<String, Holds>) -> Holds {
    let Value::String(s) = v else { return Holds::Other };
    match split(s).as_deref() {
        Ok([Piece::Expr(e)]) => match e {
            Expr::Path { root, .. } => holds.get(root).copied().unwrap_or(Holds::Other),
            _ => Holds::Ids,
        },
        Ok(_) => Holds::Ids,
        Err(_) => Holds::Other,
    }
}
