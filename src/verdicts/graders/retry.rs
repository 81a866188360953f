//! Retries: a failed message sent again (the same data, notification and collapse key, to
//! a target that failed), not sooner than a Retry-After, each wait twice the one before.

use serde::{Deserialize, Serialize};

use super::{at, secs};
use crate::verdicts::entry::Stamp;
use crate::verdicts::events::{Answer, Event, Sent};
use crate::verdicts::{Bounded, RuleLog};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Failure {
    fingerprint: u64,
    /// Sending the message to any of these is a retry.
    targets: Vec<String>,
    seq: u64,
    stamp: Stamp,
    /// A Retry-After extends the window by its own length.
    retry_after_ms: u64,
}

/// The targets to try again after a failed send, if it failed: for `group`, a send to a
/// notification key that failed for some member (again to the key or to that member) or all
/// of them; otherwise a server error or an Unavailable result of a send to ids.
fn failed(group: bool, sent: &Sent, answer: &Answer) -> Option<Vec<String>> {
    if sent.dry_run || group != sent.to_key() {
        return None;
    }
    let key = sent.to.clone().unwrap_or_default();
    if group {
        if answer.all_members_failed {
            return Some(vec![key]);
        }
        if answer.failed_members.is_empty() {
            return None;
        }
        let mut targets = answer.failed_members.clone();
        targets.push(key);
        return Some(targets);
    }
    let targets = answer.unavailable(sent);
    (!targets.is_empty()).then_some(targets)
}

fn retries(sent: &Sent, f: &Failure) -> bool {
    sent.fingerprint == f.fingerprint
        && sent.seq > f.seq
        && sent.targets().iter().any(|t| f.targets.iter().any(|x| x == t))
}

/// `retry`: every failure is followed by a retry within the window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Retries {
    open: Bounded<Failure>,
}

impl Retries {
    pub fn feed(&mut self, group: bool, event: &Event, log: &mut RuleLog) {
        match event {
            Event::Answered(sent, answer) => {
                if let Some(targets) = failed(group, sent, answer) {
                    let f = Failure {
                        fingerprint: sent.fingerprint,
                        targets,
                        seq: answer.seq,
                        stamp: answer.stamp,
                        retry_after_ms: answer.retry_after_ms.unwrap_or(0),
                    };
                    self.open.insert(format!("{}:{}", sent.fingerprint, answer.seq), f);
                }
            }
            Event::Sent(sent) => {
                let done = self.open.take_where(|f| retries(sent, f));
                log.exercised += done.len() as u64;
            }
            _ => {}
        }
    }

    pub fn settle(&mut self, within_ms: u64, now: Stamp, log: &mut RuleLog) {
        for f in self.open.take_where(|f| now.since(f.stamp) > within_ms + f.retry_after_ms) {
            log.exercised += 1;
            log.violate(now, vec![f.seq], || {
                format!(
                    "the send answered at {} (#{}) failed for {} and was not sent again within {}",
                    at(f.stamp),
                    f.seq,
                    f.targets.join(", "),
                    secs(within_ms + f.retry_after_ms)
                )
            });
        }
    }

    pub fn note(&self) -> Option<String> {
        let open = self.open.len();
        let waiting = (open > 0).then(|| format!("{open} failure(s) still within their retry window"));
        [waiting, self.open.forgot_note("failures")].into_iter().flatten().reduce(|a, b| format!("{a}; {b}"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Told {
    failure: Failure,
}

/// `retry-after`: no retry sooner than the Retry-After said.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct RetryAfter {
    told: Bounded<Told>,
}

impl RetryAfter {
    pub fn feed(&mut self, slack_ms: u64, event: &Event, log: &mut RuleLog) {
        match event {
            Event::Answered(sent, answer) => {
                let Some(wait) = answer.retry_after_ms else { return };
                if sent.dry_run || !(answer.server_error || answer.all_members_failed) {
                    return;
                }
                let failure = Failure {
                    fingerprint: sent.fingerprint,
                    targets: sent.targets().into_iter().map(str::to_string).collect(),
                    seq: answer.seq,
                    stamp: answer.stamp,
                    retry_after_ms: wait,
                };
                self.told.insert(sent.fingerprint.to_string(), Told { failure });
            }
            Event::Sent(sent) => {
                let Some(told) = self.told.get(&sent.fingerprint.to_string()) else { return };
                let f = &told.failure;
                if !retries(sent, f) {
                    return;
                }
                log.exercised += 1;
                let waited = sent.stamp.since(f.stamp);
                if waited + slack_ms < f.retry_after_ms {
                    log.violate(sent.stamp, vec![f.seq, sent.seq], || {
                        format!(
                            "the answer at {} (#{}) said Retry-After {}, and #{} sent the message again {} later",
                            at(f.stamp),
                            f.seq,
                            secs(f.retry_after_ms),
                            sent.seq,
                            secs(waited)
                        )
                    });
                }
                self.told.remove(&sent.fingerprint.to_string());
            }
            _ => {}
        }
    }

    pub fn note(&self) -> Option<String> {
        self.told.forgot_note("Retry-After answers")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Chain {
    failure: Failure,
    /// The wait before the retry that failed last (none before the first retry).
    last_wait_ms: Option<u64>,
}

/// `backoff`: the waits between a message's failures and its retries double.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Backoff {
    chains: Bounded<Chain>,
}

impl Backoff {
    pub fn feed(&mut self, first_wait_ms: u64, tolerance: f64, event: &Event, log: &mut RuleLog) {
        match event {
            Event::Answered(sent, answer) => {
                let key = sent.fingerprint.to_string();
                let Some(targets) = failed(true, sent, answer).or_else(|| failed(false, sent, answer)) else {
                    self.chains.remove(&key);
                    return;
                };
                let last_wait_ms = self.chains.get(&key).and_then(|c| c.last_wait_ms);
                let failure = Failure {
                    fingerprint: sent.fingerprint,
                    targets,
                    seq: answer.seq,
                    stamp: answer.stamp,
                    retry_after_ms: answer.retry_after_ms.unwrap_or(0),
                };
                self.chains.insert(key, Chain { failure, last_wait_ms });
            }
            Event::Sent(sent) => {
                let Some(chain) = self.chains.get_mut(&sent.fingerprint.to_string()) else { return };
                let f = &chain.failure;
                if !retries(sent, f) {
                    return;
                }
                let waited = sent.stamp.since(f.stamp);
                let previous = chain.last_wait_ms;
                chain.last_wait_ms = Some(waited);
                // A wait a Retry-After set is that rule's; the next doubles from it.
                if f.retry_after_ms > 0 {
                    return;
                }
                log.exercised += 1;
                let least = match previous {
                    None => first_wait_ms,
                    Some(p) => ((2 * p) as f64 * (1.0 - tolerance)) as u64,
                };
                if waited < least {
                    let why = match previous {
                        None => format!("a first retry waits at least {}", secs(first_wait_ms)),
                        Some(p) => format!("the wait before was {}: this one should have been twice that", secs(p)),
                    };
                    log.violate(sent.stamp, vec![f.seq, sent.seq], || {
                        format!(
                            "#{} sent the message again {} after it failed at {} (#{}); {why}",
                            sent.seq,
                            secs(waited),
                            at(f.stamp),
                            f.seq
                        )
                    });
                }
            }
            _ => {}
        }
    }

    pub fn note(&self) -> Option<String> {
        self.chains.forgot_note("failed messages")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Taken {
    targets: Vec<String>,
    seq: u64,
    stamp: Stamp,
}

/// `resent-success`: a message every target took is not sent to them again.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ResentSuccess {
    taken: Bounded<Taken>,
}

impl ResentSuccess {
    pub fn feed(&mut self, within_ms: u64, event: &Event, log: &mut RuleLog) {
        match event {
            Event::Answered(sent, answer) => {
                if sent.collapse_key.is_some() || sent.dry_run {
                    return;
                }
                if took_all(sent, answer) {
                    log.exercised += 1;
                    let targets = sent.targets().into_iter().map(str::to_string).collect();
                    self.taken
                        .insert(sent.fingerprint.to_string(), Taken { targets, seq: answer.seq, stamp: answer.stamp });
                }
            }
            Event::Sent(sent) if sent.collapse_key.is_none() && !sent.dry_run => {
                let Some(t) = self.taken.get(&sent.fingerprint.to_string()) else { return };
                let again = sent.targets().iter().any(|x| t.targets.iter().any(|y| y == x));
                if !again || sent.seq <= t.seq {
                    return;
                }
                let (seq, stamp) = (t.seq, t.stamp);
                self.taken.remove(&sent.fingerprint.to_string());
                let waited = sent.stamp.since(stamp);
                if waited > within_ms {
                    return;
                }
                log.violate(
                    sent.stamp,
                    vec![seq, sent.seq],
                    || format!(
                        "the send answered at {} (#{seq}) was taken by every target, and #{} sent it to them again {} later",
                        at(stamp),
                        sent.seq,
                        secs(waited)
                    ),
                );
            }
            _ => {}
        }
    }

    pub fn note(&self) -> Option<String> {
        self.taken.forgot_note("sends")
    }
}

/// Whether every target took the message (nothing to retry).
fn took_all(sent: &Sent, answer: &Answer) -> bool {
    if answer.server_error || answer.refused || answer.all_members_failed || !answer.failed_members.is_empty() {
        return false;
    }
    if sent.xmpp() {
        return answer.acked;
    }
    if sent.to_key() {
        return true;
    }
    !answer.results.is_empty() && answer.results.iter().all(|(_, r)| r.is_ok())
}
