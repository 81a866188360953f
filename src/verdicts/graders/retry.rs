//! Retries: a failed message sent again (the same data, notification and collapse key, to
//! a target that failed), not sooner than a Retry-After, each wait twice the one before.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{at, by_when, secs, secs_against};
use crate::verdicts::entry::Stamp;
use crate::verdicts::events::{Answer, Event, Sent};
use crate::verdicts::{Bounded, Numbers, PER_TARGET, RuleLog};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Failure {
    /// The failed message, part by part ([`Sent::parts`]).
    #[serde(default)]
    parts: Vec<u64>,
    /// A send to a notification key: the key (a retry to it is one too).
    #[serde(default)]
    key: Option<String>,
    /// Sending the message to any of these is a retry.
    targets: HashSet<String>,
    seq: u64,
    stamp: Stamp,
    /// A Retry-After extends the window by its own length.
    retry_after_ms: u64,
    /// The failure of a retry: it need not be retried (the documents ask for a retry, not
    /// for retrying for ever), but a later send of it is a retry still, and its failure too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    excused: bool,
}

/// The targets to try again after a failed send, if it failed: for `group`, a send to a
/// notification key that failed for some member (again to the key or to that member) or all
/// of them; otherwise a server error or an Unavailable result of a send to ids. A member that
/// cannot take the message whenever it is sent (no device has its id, the device is no longer
/// registered, an iOS device and a payload past its limit) is no failure to retry.
fn failed(group: bool, sent: &Sent, answer: &Answer, n: &Numbers) -> Option<Vec<String>> {
    if sent.dry_run || group != sent.to_key() {
        return None;
    }
    if group {
        let key = sent.to.clone().unwrap_or_default();
        if answer.all_members_failed {
            return Some(vec![key]);
        }
        let lasting = |id: &str| {
            sent.facts.device(id).is_some_and(|d| {
                !d.known || d.unregistered || (d.ios && n.max_payload_bytes_ios.is_some_and(|l| sent.payload_bytes > l))
            })
        };
        let mut targets: Vec<String> = answer.failed_members.iter().filter(|m| !lasting(m)).cloned().collect();
        if targets.is_empty() {
            return None;
        }
        targets.push(key);
        return Some(targets);
    }
    let targets = answer.unavailable(sent);
    (!targets.is_empty()).then_some(targets)
}

/// Whether `sent` tries a failure again: a later send of the message to a target that failed
/// (or, after a canonical id, to the id that replaced it).
fn retries(sent: &Sent, f: &Failure, strict: bool) -> bool {
    let same = if strict { sent.again(&f.parts) } else { sent.like(&f.parts) };
    same && sent.seq > f.seq && sent.each_target().any(|t| f.targets.contains(t))
}

/// `retry`: every failure is followed by a retry within the window. A retry that fails too
/// need not be tried again: the documents ask for a retry, not for retrying for ever.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Retries {
    /// By the `seq` of the answer that failed.
    open: Bounded<Failure, u64>,
    /// Sends that were retries, until answered, by `seq`.
    #[serde(default)]
    retrying: Bounded<(), u64>,
    /// A canonical id answered for an id: a retry to either is one.
    #[serde(default)]
    renamed: Bounded<String>,
    /// The keys in `open` by target, so that a send is checked against the failures it may
    /// retry alone, not against every one open. Not kept in a state file: rebuilt from `open`.
    #[serde(skip)]
    by_target: Option<HashMap<String, HashSet<u64>>>,
    /// The soonest an open failure can fall due on each clock, its window aside: until then a
    /// settle has nothing to judge and walks nothing. `None`: not known, found by the next walk.
    #[serde(skip)]
    soonest: Option<(u64, u64)>,
}

/// When a failure's window starts on each clock: its answer, pushed back by its Retry-After.
fn starts(f: &Failure) -> (u64, u64) {
    (f.stamp.at_ms.saturating_add(f.retry_after_ms), f.stamp.wall_ms.saturating_add(f.retry_after_ms))
}

impl Retries {
    /// Failures by target, as the `seq` each is filed under in `open` (a set, so that
    /// taking one out costs the same however many are open at its target).
    fn index(&mut self) -> &mut HashMap<String, HashSet<u64>> {
        let open = &self.open;
        self.by_target.get_or_insert_with(|| {
            let mut index: HashMap<String, HashSet<u64>> = HashMap::new();
            for (_, f) in open.iter_ordered() {
                for t in &f.targets {
                    index.entry(t.clone()).or_default().insert(f.seq);
                }
            }
            index
        })
    }

    fn unindex(&mut self, f: &Failure) {
        let Some(index) = self.by_target.as_mut() else { return };
        for t in &f.targets {
            if let Some(seqs) = index.get_mut(t) {
                seqs.remove(&f.seq);
                if seqs.is_empty() {
                    index.remove(t);
                }
            }
        }
    }

    /// The targets of the open failure `key` that `sent` reaches: those it names, and an id
    /// whose canonical id it names (or the canonical id of an id it names). Linear in both.
    fn reached(&self, sent: &Sent, key: u64) -> Vec<String> {
        let Some(f) = self.open.get(&key) else { return Vec::new() };
        let renamed = |t: &str| self.renamed.get(t).map(String::as_str);
        let mut reach: HashSet<&str> = sent.each_target().collect();
        reach.extend(sent.each_target().filter_map(renamed));
        f.targets
            .iter()
            .filter(|t| reach.contains(t.as_str()) || renamed(t).is_some_and(|c| reach.contains(c)))
            .cloned()
            .collect()
    }

    /// A canonical id answered for `id`: the failures open at `id` may be retried at it too.
    fn rename_open(&mut self, id: &str, canonical: &str) {
        let seqs: Vec<u64> = self.index().get(id).map(|s| s.iter().copied().collect()).unwrap_or_default();
        for seq in seqs {
            if let Some(f) = self.open.get_mut(&seq)
                && f.targets.insert(canonical.to_string())
            {
                self.index().entry(canonical.to_string()).or_default().insert(seq);
            }
        }
    }

    fn open_failure(&mut self, f: Failure) {
        let key = f.seq;
        let index = self.index();
        for t in &f.targets {
            index.entry(t.clone()).or_default().insert(f.seq);
        }
        let (at, wall) = starts(&f);
        self.soonest = self.soonest.map(|(a, w)| (a.min(at), w.min(wall)));
        if let Some(forgotten) = self.open.insert(key, f) {
            self.unindex(&forgotten);
        }
    }

    pub fn feed(&mut self, group: bool, n: &Numbers, event: &Event, log: &mut RuleLog) {
        match event {
            Event::Answered(sent, answer) => {
                for (id, r) in &answer.results {
                    if let Ok(Some(canonical)) = r {
                        self.renamed.insert(id.clone(), canonical.clone());
                        self.rename_open(id, canonical);
                    }
                }
                let excused = self.retrying.remove(&sent.seq).is_some();
                if let Some(mut targets) = failed(group, sent, answer, n) {
                    let canonical: Vec<String> = targets.iter().filter_map(|t| self.renamed.get(t).cloned()).collect();
                    targets.extend(canonical);
                    self.open_failure(Failure {
                        parts: sent.parts.clone(),
                        key: sent.to_key().then(|| sent.to.clone()).flatten(),
                        targets: targets.into_iter().collect(),
                        seq: answer.seq,
                        stamp: answer.stamp,
                        retry_after_ms: answer.retry_after_ms.unwrap_or(0),
                        excused,
                    });
                }
            }
            Event::Sent(sent) => {
                if self.open.len() == 0 {
                    return;
                }
                // Only failures at one of its targets can be retried by it.
                let index = self.index();
                let mut candidates: Vec<u64> =
                    sent.each_target().filter_map(|t| index.get(t)).flatten().copied().collect();
                candidates.sort_unstable();
                candidates.dedup();
                let (mut done, mut again) = (0, false);
                for seq in candidates {
                    let key = seq;
                    if !self.open.get(&key).is_some_and(|f| retries(sent, f, false)) {
                        continue;
                    }
                    again = true;
                    // Each target that failed is owed the retry: one sent to some of them
                    // leaves the failure open for the rest (a send to the group's key reaches
                    // every member). An id and the canonical id that replaced it are one.
                    let reached = self.reached(sent, key);
                    if !reached.is_empty() {
                        if let Some(index) = self.by_target.as_mut() {
                            for t in &reached {
                                if let Some(seqs) = index.get_mut(t) {
                                    seqs.remove(&seq);
                                    if seqs.is_empty() {
                                        index.remove(t);
                                    }
                                }
                            }
                        }
                        if let Some(f) = self.open.get_mut(&key) {
                            f.targets.retain(|t| !reached.contains(t));
                        }
                    }
                    // Done when every member is reached (the key alone is left), or the key is.
                    let done_with = |f: &Failure| {
                        f.targets.iter().all(|t| Some(t) == f.key.as_ref()) || (sent.to_key() && f.key == sent.to)
                    };
                    if self.open.get(&key).is_some_and(done_with)
                        && let Some(f) = self.open.remove(&key)
                    {
                        self.unindex(&f);
                        // A retry of a failed retry was owed nothing: it counts once, as the
                        // retry it continues did.
                        done += u64::from(!f.excused);
                    }
                }
                if again {
                    self.retrying.insert(sent.seq, ());
                }
                log.exercised += done;
            }
            _ => {}
        }
    }

    pub fn settle(&mut self, within_ms: u64, now: Stamp, log: &mut RuleLog) {
        if let Some((at, wall)) = self.soonest
            && now.at_ms.saturating_sub(at) <= within_ms
            && now.wall_ms.saturating_sub(wall) <= within_ms
        {
            return;
        }
        let due = self.open.take_where(|f| now.since(f.stamp) > within_ms + f.retry_after_ms);
        self.soonest =
            Some(self.open.values().map(starts).fold((u64::MAX, u64::MAX), |(a, w), (fa, fw)| (a.min(fa), w.min(fw))));
        for f in due {
            self.unindex(&f);
            if f.excused {
                continue;
            }
            log.exercised += 1;
            // A settled read has no moment of its own: the failure's answer stands for it.
            let when = if now.is_settled() { f.stamp } else { now };
            log.violate(when, &[f.seq], || {
                let mut members: Vec<&str> =
                    f.targets.iter().map(String::as_str).filter(|t| Some(*t) != f.key.as_deref()).collect();
                members.sort_unstable();
                let whom = match (&f.key, members.is_empty()) {
                    (Some(key), true) => format!("every member of the group {key}"),
                    _ => members.join(", "),
                };
                format!(
                    "the send answered at {} (#{}) failed for {whom} and was not sent again {}",
                    at(f.stamp),
                    f.seq,
                    by_when(now, within_ms + f.retry_after_ms)
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

/// A failure at one target: what a retry to it is judged against.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AtTarget {
    parts: Vec<u64>,
    seq: u64,
    stamp: Stamp,
    retry_after_ms: u64,
    /// The wait before the retry that failed last (none before the first retry).
    last_wait_ms: Option<u64>,
}

/// The failures at one target, oldest first: each message's newest only.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
struct AtTargets(Vec<AtTarget>);

impl<'de> Deserialize<'de> for AtTargets {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // State files made when a target kept one failure hold it alone.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Kept {
            Many(Vec<AtTarget>),
            One(AtTarget),
        }
        Ok(match Kept::deserialize(d)? {
            Kept::Many(v) => AtTargets(v),
            Kept::One(f) => AtTargets(vec![f]),
        })
    }
}

/// Records `sent`'s failure at each of `targets`, so that a retry is found by where it goes:
/// the same message failing again replaces its record there (its retry failed too), another
/// message's is kept beside it. Returns how many older failures were forgotten past
/// [`PER_TARGET`].
fn by_target(
    map: &mut Bounded<AtTargets>,
    n: &Numbers,
    sent: &Sent,
    targets: &[String],
    make: impl Fn() -> AtTarget,
) -> u64 {
    let mut forgot = 0;
    for t in targets.iter().take(n.max_registration_ids) {
        match map.get_mut(t) {
            Some(list) => {
                list.0.retain(|f| !sent.again(&f.parts));
                list.0.push(make());
                if list.0.len() > PER_TARGET {
                    list.0.remove(0);
                    forgot += 1;
                }
            }
            None => {
                map.insert(t.clone(), AtTargets(vec![make()]));
            }
        }
    }
    forgot
}

/// The failure `sent` surely retries (the same message, to a target that failed), if any:
/// at each target of `sent`, the newest failure it repeats is taken out; the first found is
/// the one judged.
fn retried(map: &mut Bounded<AtTargets>, sent: &Sent) -> Option<AtTarget> {
    if map.len() == 0 {
        return None;
    }
    let mut found: Option<AtTarget> = None;
    for t in sent.each_target() {
        let Some(list) = map.get_mut(t) else { continue };
        let Some(i) = list.0.iter().rposition(|f| f.seq < sent.seq && sent.again(&f.parts)) else { continue };
        let f = list.0.remove(i);
        if list.0.is_empty() {
            map.remove(t);
        }
        found = found.or(Some(f));
    }
    found
}

/// The note of a rule that keeps failures by target: what it forgot, of targets and of
/// messages at one target.
fn forgot_note(map: &Bounded<AtTargets>, crowded: u64, what: &str) -> Option<String> {
    let crowded = (crowded > 0)
        .then(|| format!("{crowded} {what} forgotten: more than {PER_TARGET} different messages failed at one target"));
    [map.forgot_note(what), crowded].into_iter().flatten().reduce(|a, b| format!("{a}; {b}"))
}

/// `retry-after`: no retry sooner than the Retry-After said.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct RetryAfter {
    #[serde(default)]
    told: Bounded<AtTargets>,
    /// Failures forgotten past [`PER_TARGET`] at one target.
    #[serde(default)]
    crowded: u64,
}

impl RetryAfter {
    pub fn feed(&mut self, slack_ms: u64, n: &Numbers, event: &Event, log: &mut RuleLog) {
        match event {
            Event::Answered(sent, answer) => {
                let Some(wait) = answer.retry_after_ms else { return };
                if sent.dry_run || !(answer.server_error || answer.all_members_failed) {
                    return;
                }
                let targets: Vec<String> = sent.targets().into_iter().map(str::to_string).collect();
                self.crowded += by_target(&mut self.told, n, sent, &targets, || AtTarget {
                    parts: sent.parts.clone(),
                    seq: answer.seq,
                    stamp: answer.stamp,
                    retry_after_ms: wait,
                    last_wait_ms: None,
                });
            }
            Event::Sent(sent) => {
                let Some(f) = retried(&mut self.told, sent) else { return };
                log.exercised += 1;
                let waited = sent.stamp.since(f.stamp);
                if waited + slack_ms < f.retry_after_ms {
                    log.violate(sent.stamp, &[f.seq, sent.seq], || {
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
            }
            _ => {}
        }
    }

    pub fn note(&self) -> Option<String> {
        forgot_note(&self.told, self.crowded, "Retry-After answers")
    }
}

/// `backoff`: the waits between a message's failures and its retries double.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Backoff {
    #[serde(default)]
    failures: Bounded<AtTargets>,
    /// Failures forgotten past [`PER_TARGET`] at one target.
    #[serde(default)]
    crowded: u64,
    /// The wait before each retry in flight, by the retry's send.
    #[serde(default)]
    waits: Bounded<u64, u64>,
}

impl Backoff {
    pub fn feed(&mut self, first_wait_ms: u64, tolerance: f64, n: &Numbers, event: &Event, log: &mut RuleLog) {
        match event {
            Event::Answered(sent, answer) => {
                let last_wait_ms = self.waits.remove(&sent.seq);
                // A draining connection's nack asks for the message on a new connection, not
                // for a wait: its retry is app.retry.server-error's and app.xmpp.draining's.
                if answer.draining {
                    return;
                }
                let targets = failed(true, sent, answer, n).or_else(|| failed(false, sent, answer, n));
                let Some(targets) = targets else { return };
                self.crowded += by_target(&mut self.failures, n, sent, &targets, || AtTarget {
                    parts: sent.parts.clone(),
                    seq: answer.seq,
                    stamp: answer.stamp,
                    retry_after_ms: answer.retry_after_ms.unwrap_or(0),
                    last_wait_ms,
                });
            }
            Event::Sent(sent) => {
                let Some(f) = retried(&mut self.failures, sent) else { return };
                let waited = sent.stamp.since(f.stamp);
                self.waits.insert(sent.seq, waited);
                // A wait a Retry-After set is that rule's; the next doubles from it.
                if f.retry_after_ms > 0 {
                    return;
                }
                log.exercised += 1;
                // Twice the wait before, and never under the first's floor: after retries that
                // waited on nothing, twice nothing is still nothing (outside pass 20 saw the
                // second and third of three immediate retries pass).
                let doubled = f.last_wait_ms.map(|p| ((2 * p) as f64 * (1.0 - tolerance)) as u64);
                let least = doubled.unwrap_or(0).max(first_wait_ms);
                if waited < least {
                    let why = match f.last_wait_ms {
                        Some(p) if doubled.unwrap_or(0) >= first_wait_ms => format!(
                            "the wait before was {}: this one should have been twice that, at least {} with {}% off for jitter",
                            secs(p),
                            secs(least),
                            (tolerance * 100.0).round()
                        ),
                        Some(p) => format!(
                            "the wait before was {}, and no retry waits less than {}",
                            secs(p),
                            secs(first_wait_ms)
                        ),
                        None => format!("a first retry waits at least {}", secs(first_wait_ms)),
                    };
                    log.violate(sent.stamp, &[f.seq, sent.seq], || {
                        format!(
                            "#{} sent the message again {} after it failed at {} (#{}); {why}",
                            sent.seq,
                            secs_against(waited, least),
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
        forgot_note(&self.failures, self.crowded, "failed messages")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Taken {
    targets: HashSet<String>,
    seq: u64,
    stamp: Stamp,
}

/// `resent-success`: a message is not sent again to a target that took it: after a send every
/// target took, or, after a multicast some ids failed, to the ids that did not.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ResentSuccess {
    /// By the message's fingerprint.
    taken: Bounded<Taken, u64>,
}

impl ResentSuccess {
    pub fn feed(&mut self, within_ms: u64, event: &Event, log: &mut RuleLog) {
        match event {
            Event::Answered(sent, answer) => {
                if sent.collapse_key.is_some() || sent.dry_run {
                    return;
                }
                let targets: Vec<&str> = if took_all(sent, answer) {
                    sent.each_target().collect()
                } else if !sent.to_key() && !answer.server_error && !answer.refused {
                    answer.results.iter().filter(|(_, r)| r.is_ok()).map(|(id, _)| id.as_str()).collect()
                } else {
                    Vec::new()
                };
                if targets.is_empty() {
                    return;
                }
                log.exercised += 1;
                let key = sent.fingerprint;
                // A retry of the ids that failed, taken in turn, adds to what was taken.
                match self.taken.get_mut(&key) {
                    Some(t) => {
                        // Most are there already (the same message again): copied only if new.
                        for target in targets {
                            if !t.targets.contains(target) {
                                t.targets.insert(target.to_string());
                            }
                        }
                        (t.seq, t.stamp) = (answer.seq, answer.stamp);
                    }
                    None => {
                        let targets = targets.into_iter().map(str::to_string).collect();
                        self.taken.insert(key, Taken { targets, seq: answer.seq, stamp: answer.stamp });
                    }
                }
            }
            Event::Sent(sent) if sent.collapse_key.is_none() && !sent.dry_run => {
                let key = sent.fingerprint;
                let Some(t) = self.taken.get(&key) else { return };
                if sent.seq <= t.seq || !sent.each_target().any(|x| t.targets.contains(x)) {
                    return;
                }
                let (seq, stamp) = (t.seq, t.stamp);
                let waited = sent.stamp.since(stamp);
                if waited <= within_ms {
                    log.violate(sent.stamp, &[seq, sent.seq], || {
                        // Worded only when shown: an app server that resends at load pays no text.
                        let again: Vec<&str> = sent.each_target().filter(|x| t.targets.contains(*x)).collect();
                        let shown = again.iter().take(3).copied().collect::<Vec<_>>().join(", ");
                        let more =
                            if again.len() > 3 { format!(" and {} more", again.len() - 3) } else { String::new() };
                        format!(
                            "the send answered at {} (#{seq}) was taken by {shown}{more}, and #{} sent it to them again {} later",
                            at(stamp),
                            sent.seq,
                            secs(waited)
                        )
                    });
                    return;
                }
                self.taken.remove(&key);
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

#[cfg(test)]
mod tests {
    /// A state file made when a target kept one failure still reads: as a list of one.
    #[test]
    fn failures_at_a_target_read_from_one_or_many() {
        let one = serde_json::json!({"parts": [1, 2], "seq": 3, "stamp": {"at_ms": 4, "wall_ms": 5}, "retry_after_ms": 6, "last_wait_ms": null});
        let read = |v: serde_json::Value| serde_json::from_value::<super::AtTargets>(v).map(|t| t.0.len());
        assert_eq!(read(one.clone()).ok(), Some(1));
        assert_eq!(read(serde_json::json!([one.clone(), one])).ok(), Some(2));
        assert!(read(serde_json::json!({"parts": "no"})).is_err());
    }
}
