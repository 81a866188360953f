//! Device groups as the app server manages them: keys kept, one app per group, and a group
//! made (from tokens devices were given) before it is sent to.

use serde::{Deserialize, Serialize};

use super::{Config, at};
use crate::catalog::Path;
use crate::verdicts::entry::Stamp;
use crate::verdicts::events::{Event, GroupVerb};
use crate::verdicts::{Bounded, RuleLog};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Group {
    /// Every key the service gave for the name (a lookup may give another encoding).
    keys: Vec<String>,
    given_seq: u64,
    given_at: Stamp,
    /// The app (package name) its members belong to, once one is known.
    package: Option<(String, u64)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Groups {
    /// By notification_key_name, the server-side groups the app server named.
    names: Bounded<Group>,
}

/// Keys one name keeps: a lookup may answer a new encoding each time.
const KEYS_PER_NAME: usize = 8;

impl Groups {
    pub fn feed(&mut self, config: &Config, event: &Event, log: &mut RuleLog) {
        match (config, event) {
            (_, Event::Lookup { name, key: Some(key), seq, stamp }) => self.given(name, key, *seq, *stamp),
            (Config::GroupKeySaved, Event::Group(g)) if g.endpoint == Path::Server => {
                let Some(name) = &g.name else { return };
                match (g.verb, &g.answer) {
                    (Some(GroupVerb::Create), Err(why)) if why.contains("already exists") => {
                        if let Some(known) = self.names.get(name) {
                            log.exercised += 1;
                            log.violate(
                                g.stamp,
                                &[known.given_seq, g.seq],
                                || format!(
                                    "the key for {name:?} was given at {} (#{}), and #{} at {} asked to create {name:?} again",
                                    at(known.given_at),
                                    known.given_seq,
                                    g.seq,
                                    at(g.stamp)
                                ),
                            );
                        }
                    }
                    (Some(GroupVerb::Add | GroupVerb::Remove), _) => {
                        let Some(known) = self.names.get(name) else { return };
                        log.exercised += 1;
                        // No key (absent, null, not a string) is no key the service gave.
                        if g.key.as_ref().is_none_or(|key| !known.keys.contains(key)) {
                            let carried = match &g.key {
                                Some(key) => format!("with key {key:?}"),
                                None => "with no notification_key".into(),
                            };
                            log.violate(
                                g.stamp,
                                &[known.given_seq, g.seq],
                                || format!(
                                    "#{} at {} named {name:?} {carried}, which the service never gave for it (it gave {} at #{})",
                                    g.seq,
                                    at(g.stamp),
                                    known.keys.join(", "),
                                    known.given_seq
                                ),
                            );
                        }
                    }
                    _ => {}
                }
                if let (Some(GroupVerb::Create), Ok(key)) = (g.verb, &g.answer) {
                    log.exercised += 1;
                    self.given(name, key, g.seq, g.stamp);
                }
            }
            (Config::GroupOneApp, Event::Group(g)) if g.endpoint == Path::Server => {
                let (Some(name), Ok(key), Some(GroupVerb::Create | GroupVerb::Add)) = (&g.name, &g.answer, g.verb)
                else {
                    return;
                };
                let packages: Vec<&str> =
                    g.ids.iter().filter_map(|id| g.facts.device(id)?.package.as_deref()).collect();
                if packages.is_empty() {
                    return;
                }
                log.exercised += 1;
                let group =
                    self.names.entry_or(name, || Group { given_seq: g.seq, given_at: g.stamp, ..Group::default() });
                if !group.keys.contains(key) {
                    group.keys.push(key.clone());
                }
                let (first, first_seq) = group.package.clone().unwrap_or((packages[0].to_string(), g.seq));
                if let Some(other) = packages.iter().find(|p| **p != first) {
                    log.violate(
                        g.stamp,
                        &[first_seq, g.seq],
                        || format!(
                            "#{} at {} put a device of app {other:?} in {name:?}, a group of app {first:?} (since #{first_seq})",
                            g.seq,
                            at(g.stamp)
                        ),
                    );
                }
                group.package.get_or_insert((first, first_seq));
            }
            (Config::GroupBeforeSend, Event::Group(g)) => {
                if let Some(name) = &g.name {
                    self.names.entry_or(name, || Group { given_seq: g.seq, given_at: g.stamp, ..Group::default() });
                }
                if !matches!(g.verb, Some(GroupVerb::Create | GroupVerb::Add)) {
                    return;
                }
                log.exercised += 1;
                let unknown: Vec<&str> = g
                    .ids
                    .iter()
                    .filter(|id| g.facts.device(id).is_some_and(|d| !d.known))
                    .map(String::as_str)
                    .collect();
                if !unknown.is_empty() {
                    log.violate(g.stamp, &[g.seq], || {
                        format!(
                            "#{} at {} listed {} in a group: no device was ever given that token",
                            g.seq,
                            at(g.stamp),
                            unknown.join(", ")
                        )
                    });
                }
            }
            (Config::GroupBeforeSend, Event::Sent(s)) => {
                if s.to_key() {
                    log.exercised += 1;
                    return;
                }
                // Addressed by a group's name, in `to` or among `registration_ids`, on any path.
                if self.names.len() == 0 {
                    return;
                }
                let Some((to, named)) = s.each_target().find_map(|t| self.names.get(t).map(|n| (t, n))) else {
                    return;
                };
                log.exercised += 1;
                log.violate(s.stamp, &[named.given_seq, s.seq], || {
                    format!(
                        "#{} at {} was sent to {to:?}, the name of a group (named at #{}), not to its notification_key",
                        s.seq,
                        at(s.stamp),
                        named.given_seq
                    )
                });
            }
            _ => {}
        }
    }

    fn given(&mut self, name: &str, key: &str, seq: u64, stamp: Stamp) {
        let group = self.names.entry_or(name, Group::default);
        if group.keys.is_empty() {
            (group.given_seq, group.given_at) = (seq, stamp);
        }
        if !group.keys.iter().any(|k| k == key) {
            group.keys.push(key.to_string());
            if group.keys.len() > KEYS_PER_NAME {
                group.keys.remove(0);
            }
        }
    }

    pub fn note(&self) -> Option<String> {
        self.names.forgot_note("group names")
    }
}
