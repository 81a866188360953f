//! What a run found, as data: graded outcomes per check, written as JSON (a versioned,
//! documented schema: docs/report.md) or JUnit XML, and the exit code they imply.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use super::CheckRun;
use super::evidence::{Evidence, trimmed};
use super::replay::Replay;
use crate::catalog::Level;
use crate::xmpp::escape;

/// The `schema` field of every JSON report; bumped on any incompatible change.
pub const SCHEMA: &str = "gcmspec-report/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    Failed,
    /// The target lacks a capability the check needs.
    Unsupported,
    /// Filtered out of this run.
    Skipped,
    /// Not tried: the run had stopped (the target stopped answering, or the deadline passed).
    #[serde(rename = "not-tried")]
    NotTried,
    /// An app-server rule whose situation the journal never showed (verdict reports).
    #[serde(rename = "not-exercised")]
    NotExercised,
}

impl Outcome {
    /// Its name in every report format (as serialized).
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::Unsupported => "unsupported",
            Outcome::Skipped => "skipped",
            Outcome::NotTried => "not-tried",
            Outcome::NotExercised => "not-exercised",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// `rule::check` (`rule::check@xmpp` over XMPP).
    pub name: String,
    pub rule: String,
    pub level: Level,
    pub outcome: Outcome,
    /// Does this result fail the run (a MUST failure, or a SHOULD one under --strict)?
    pub graded: bool,
    /// Listed in the baseline as a known failure.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub known: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub duration_ms: u64,
    /// What the check saw: the outcome each multi-outcome step matched; for a failure, the
    /// exchanges (a long log keeps its start and end), the snapshot diff, a property's
    /// shrunk sequence.
    #[serde(flatten)]
    pub evidence: Evidence,
    /// Exchanges left out of `exchanges` from the middle of a long log.
    #[serde(skip_serializing_if = "is_zero")]
    pub exchanges_omitted: usize,
    /// The replay file written for this failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Exchanges a report keeps per failed check.
const REPORTED_EXCHANGES: usize = 60;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub unsupported: usize,
    pub skipped: usize,
    /// Not tried because the run had stopped (see `Outcome::NotTried`).
    #[serde(skip_serializing_if = "is_zero")]
    pub not_tried: usize,
    /// App-server rules the journal gave no occasion to judge (verdict reports).
    #[serde(skip_serializing_if = "is_zero")]
    pub not_exercised: usize,
    /// Failures that fail the run.
    pub graded_failures: usize,
    /// Graded failures the baseline lists (they do not fail the run).
    pub known_failures: usize,
    /// Checks the baseline lists that passed: remove them from it.
    pub fixed: Vec<String>,
    /// Passed checks that passed only on an observed, not documented, outcome (`--strict`
    /// fails them).
    pub observed: usize,
    /// Causes more than one failure names (a value of the wrong type at one place), the most
    /// shared first: one mistake that may explain many failures.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shared_causes: Vec<super::causes::Shared>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub target: String,
    pub profile: String,
    pub strict: bool,
    pub summary: Summary,
    /// Why no check could start (the target's first answer never came, say): the run
    /// exits 2, and the report says so rather than being left unwritten.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aborted: Option<String>,
    /// The client library judged (`gcmspec client`), as its driver named it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub library: Option<Library>,
    pub results: Vec<CaseResult>,
}

/// A client library behind its driver.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Library {
    pub library: String,
    pub version: String,
    /// The command that started its driver.
    pub driver: String,
    /// What the driver offers (docs/client-drivers.md).
    pub supports: Vec<String>,
    /// `wall` or `virtual`: the reference's clock.
    pub clock: String,
}

/// A check that was run but not judged says so at the start of its failure text: the
/// situation its rule is about never arose (`not exercised: `), or the client could not be
/// asked what the check needs (`unsupported: `). Client-library cases end this way.
pub fn not_judged(failure: &str) -> Option<(Outcome, &str)> {
    failure
        .strip_prefix("not exercised: ")
        .map(|m| (Outcome::NotExercised, m))
        .or_else(|| failure.strip_prefix("unsupported: ").map(|m| (Outcome::Unsupported, m)))
}

/// How one check ended, and how long it took in milliseconds.
type Ended = (CheckRun, u64);

/// Collects results as trials finish (they run on several threads).
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    ran: Arc<Mutex<BTreeMap<String, Ended>>>,
    /// What the run's filter left out.
    filtered: Arc<Mutex<std::collections::BTreeSet<String>>>,
}

impl Recorder {
    /// Runs `f` and records how it ended.
    pub fn record(&self, name: &str, f: impl FnOnce() -> CheckRun) -> CheckRun {
        let start = Instant::now();
        let run = f();
        let ms = start.elapsed().as_millis() as u64;
        self.ran.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), (run.clone(), ms));
        run
    }

    /// Notes checks the run's filter left out: a check the target cannot run is skipped, not
    /// unsupported, when it was not asked for.
    pub fn filtered_out(&self, names: impl IntoIterator<Item = String>) {
        self.filtered.lock().unwrap_or_else(|e| e.into_inner()).extend(names);
    }

    /// Whether the check named `name` has run.
    pub fn ran(&self, name: &str) -> bool {
        self.ran.lock().unwrap_or_else(|e| e.into_inner()).contains_key(name)
    }

    /// The replays of the failed checks, by name.
    pub fn replays(&self) -> Vec<Replay> {
        let ran = self.ran.lock().unwrap_or_else(|e| e.into_inner());
        // A check that was not tried has nothing to replay.
        ran.values()
            .filter(|(run, _)| !run.result.as_ref().is_err_and(|e| crate::driver::TargetError::means_not_tried(e)))
            .filter_map(|(run, _)| run.replay.as_deref().cloned())
            .collect()
    }

    /// The report for `cases`: what ran is passed or failed; what did not, unsupported (the
    /// target lacks something) or skipped (filtered out).
    pub fn report(&self, cases: &[super::Case], target: &str, profile: &str, strict: bool) -> Report {
        let ran = self.ran.lock().unwrap_or_else(|e| e.into_inner());
        let filtered = self.filtered.lock().unwrap_or_else(|e| e.into_inner());
        let mut summary = Summary::default();
        let results: Vec<CaseResult> = cases
            .iter()
            .map(|c| {
                let (outcome, message, duration_ms) = match (ran.get(&c.name), &c.run) {
                    (Some((CheckRun { result: Ok(()), .. }, ms)), _) => (Outcome::Passed, None, *ms),
                    (Some((CheckRun { result: Err(e), .. }, ms)), _)
                        if crate::driver::TargetError::means_not_tried(e) =>
                    {
                        (Outcome::NotTried, Some(e.clone()), *ms)
                    }
                    (Some((CheckRun { result: Err(e), .. }, ms)), _) if not_judged(e).is_some() => {
                        let (outcome, why) = not_judged(e).expect("just matched");
                        (outcome, Some(why.to_string()), *ms)
                    }
                    (Some((CheckRun { result: Err(e), .. }, ms)), _) => (Outcome::Failed, Some(e.clone()), *ms),
                    (None, Err(why)) if !filtered.contains(&c.name) => (Outcome::Unsupported, Some(why.clone()), 0),
                    (None, _) => (Outcome::Skipped, None, 0),
                };
                let mut evidence = ran.get(&c.name).map(|(run, _)| run.evidence.clone()).unwrap_or_default();
                let mut exchanges_omitted = 0;
                if outcome == Outcome::Failed {
                    (evidence.exchanges, exchanges_omitted) = trimmed(&evidence.exchanges, REPORTED_EXCHANGES);
                } else {
                    evidence.exchanges.clear();
                }
                let graded = outcome == Outcome::Failed && (c.level == Level::Must || strict);
                match outcome {
                    Outcome::Passed => summary.passed += 1,
                    Outcome::Failed => summary.failed += 1,
                    Outcome::Unsupported => summary.unsupported += 1,
                    Outcome::Skipped => summary.skipped += 1,
                    Outcome::NotTried => summary.not_tried += 1,
                    Outcome::NotExercised => summary.not_exercised += 1,
                }
                summary.graded_failures += usize::from(graded);
                summary.observed += usize::from(outcome == Outcome::Passed && evidence.observed);
                CaseResult {
                    name: c.name.clone(),
                    rule: c.rule_id.clone(),
                    level: c.level,
                    outcome,
                    graded,
                    known: false,
                    message,
                    duration_ms,
                    evidence,
                    exchanges_omitted,
                    replay: None,
                }
            })
            .collect();
        summary.shared_causes = super::causes::shared(
            results
                .iter()
                .filter(|r| r.outcome == Outcome::Failed)
                .filter_map(|r| Some((r.rule.as_str(), r.message.as_deref()?))),
        );
        Report {
            schema: SCHEMA,
            target: target.to_string(),
            profile: profile.to_string(),
            strict,
            summary,
            aborted: None,
            library: None,
            results,
        }
    }
}

impl Report {
    /// When the target stopped answering: a check that failed only because its exchange got
    /// no answer (it was in flight when the target stopped) was not tried, not failed.
    pub fn unanswered_not_tried(&mut self) {
        let s = &mut self.summary;
        for r in &mut self.results {
            let unanswered = r.message.as_deref().is_some_and(|m| m.contains("cannot reach "));
            if r.outcome == Outcome::Failed && unanswered {
                r.outcome = Outcome::NotTried;
                s.failed -= 1;
                s.not_tried += 1;
                s.graded_failures -= usize::from(r.graded);
                r.graded = false;
                r.evidence.exchanges.clear();
            }
        }
    }

    /// The report of a run that could not start: no results, and why.
    pub fn aborted(target: &str, profile: &str, strict: bool, why: String) -> Report {
        Report {
            schema: SCHEMA,
            target: target.to_string(),
            profile: profile.to_string(),
            strict,
            summary: Summary::default(),
            aborted: Some(why),
            library: None,
            results: Vec::new(),
        }
    }

    /// 0: every graded check passed (or failed as the baseline expects); 1: one failed;
    /// 2: nothing ran.
    pub fn exit_code(&self) -> u8 {
        let s = &self.summary;
        if s.graded_failures > s.known_failures {
            1
        } else if s.passed + s.failed == 0 {
            2
        } else {
            0
        }
    }

    /// Marks the failures the baseline expects, and notes listed checks that now pass.
    pub fn apply_baseline(&mut self, baseline: &Baseline) {
        for r in &mut self.results {
            if baseline.0.contains(&r.name) {
                r.known = r.graded;
                if r.outcome == Outcome::Passed {
                    self.summary.fixed.push(r.name.clone());
                }
            }
        }
        self.summary.known_failures = self.results.iter().filter(|r| r.known).count();
    }

    /// The graded failures as a baseline file.
    pub fn baseline(&self) -> String {
        let mut out = format!(
            "# gcmspec baseline: checks known to fail against {} (profile {}).\n# A run with --baseline fails only on failures not listed here.\n",
            self.target, self.profile
        );
        for r in self.results.iter().filter(|r| r.graded) {
            out.push_str(&r.name);
            out.push('\n');
        }
        out
    }

    /// JUnit XML: a test suite per rule, a test case per check.
    /// `replay_flags` reach the same target again (`--target URL ...`), for the replay hint.
    pub fn junit(&self, replay_flags: &str) -> String {
        if let Some(why) = &self.aborted {
            // One failing case, so that a CI job that reads the file sees why nothing ran.
            return format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"gcmspec\" tests=\"1\" failures=\"1\">\n  \
                 <testsuite name=\"gcmspec\" tests=\"1\" failures=\"1\">\n    <testcase name=\"the run could start\" classname=\"gcmspec\">\
                 <failure message=\"{0}\" type=\"aborted\">{0}</failure></testcase>\n  </testsuite>\n</testsuites>\n",
                escape(why)
            );
        }
        let mut by_rule: BTreeMap<&str, Vec<&CaseResult>> = BTreeMap::new();
        for r in &self.results {
            by_rule.entry(r.rule.as_str()).or_default().push(r);
        }
        let count = |rs: &[&CaseResult], o: Outcome| rs.iter().filter(|r| r.outcome == o).count();
        let all: Vec<&CaseResult> = self.results.iter().collect();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str(&format!(
            "<testsuites name=\"gcmspec\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">\n",
            all.len(),
            count(&all, Outcome::Failed),
            count(&all, Outcome::Unsupported)
                + count(&all, Outcome::Skipped)
                + count(&all, Outcome::NotTried)
                + count(&all, Outcome::NotExercised)
        ));
        for (rule, rs) in by_rule {
            out.push_str(&format!(
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">\n",
                escape(rule),
                rs.len(),
                count(&rs, Outcome::Failed),
                count(&rs, Outcome::Unsupported)
                    + count(&rs, Outcome::Skipped)
                    + count(&rs, Outcome::NotTried)
                    + count(&rs, Outcome::NotExercised)
            ));
            for r in rs {
                let check = r.name.strip_prefix(&format!("{rule}::")).unwrap_or(&r.name);
                let open = format!(
                    "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\">",
                    escape(check),
                    escape(rule),
                    r.duration_ms as f64 / 1000.0
                );
                let message = r.message.as_deref().unwrap_or("");
                let first = escape(message.lines().next().unwrap_or(""));
                let body = match r.outcome {
                    Outcome::Passed => String::new(),
                    Outcome::Failed => format!(
                        "<failure message=\"{first}\" type=\"{}\">{}</failure>",
                        if r.graded { r.level.to_string() } else { format!("{} (not graded)", r.level) },
                        escape(message)
                    ),
                    Outcome::Unsupported => {
                        format!("<skipped message=\"{}\"/>", escape(&format!("unsupported: {message}")))
                    }
                    Outcome::Skipped => "<skipped message=\"filtered out\"/>".to_string(),
                    Outcome::NotTried => format!("<skipped message=\"{}\"/>", escape(&format!("not tried: {message}"))),
                    Outcome::NotExercised if message.is_empty() => {
                        "<skipped message=\"not exercised: the situation the rule is about never came up\"/>".into()
                    }
                    Outcome::NotExercised => {
                        format!("<skipped message=\"{}\"/>", escape(&format!("not exercised: {message}")))
                    }
                };
                let mut notes = Vec::new();
                if !r.evidence.matched.is_empty() {
                    notes.push(format!("accepted outcomes seen: {}", r.evidence.matched.join("; ")));
                }
                if let Some(replay) = &r.replay {
                    notes.push(format!("replay: gcmspec replay {replay}{replay_flags}"));
                }
                let out_text = if notes.is_empty() {
                    String::new()
                } else {
                    format!("<system-out>{}</system-out>", escape(&notes.join("\n")))
                };
                out.push_str(&format!("{open}{body}{out_text}</testcase>\n"));
            }
            out.push_str("  </testsuite>\n");
        }
        out.push_str("</testsuites>\n");
        out
    }
}

/// Checks known to fail: one `rule::check` a line; `#` starts a comment.
#[derive(Debug, Clone, Default)]
pub struct Baseline(pub std::collections::BTreeSet<String>);

impl Baseline {
    pub fn parse(text: &str) -> Baseline {
        Baseline(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }
}

impl Report {
    /// An app server's verdicts as a report, in the formats `gcmspec run` writes: one result
    /// per app-server rule (`rule::journal`), a violated MUST graded; the journal entries a
    /// violation cites, where the journal still holds them, as its exchanges.
    pub fn of_verdicts(
        verdicts: &crate::verdicts::Verdicts,
        entries: &[crate::verdicts::Entry],
        target: &str,
        profile: &str,
    ) -> Report {
        use crate::verdicts::Outcome as Verdict;
        let mut summary = Summary::default();
        let results = verdicts
            .rules
            .iter()
            .map(|r| {
                let outcome = match r.outcome {
                    Verdict::Passed => Outcome::Passed,
                    Verdict::Violated => Outcome::Failed,
                    Verdict::NotExercised => Outcome::NotExercised,
                };
                let graded = outcome == Outcome::Failed && r.level == Level::Must;
                match outcome {
                    Outcome::Passed => summary.passed += 1,
                    Outcome::Failed => summary.failed += 1,
                    _ => summary.not_exercised += 1,
                }
                summary.graded_failures += usize::from(graded);
                let mut lines: Vec<String> = r.violations.iter().map(|v| v.message.clone()).collect();
                if r.violations_total > r.violations.len() as u64 {
                    lines.push(format!("... {} violations in all", r.violations_total));
                }
                lines.extend(r.note.clone());
                let cited: Vec<u64> = r.violations.iter().flat_map(|v| v.entries.iter().copied()).collect();
                let exchanges = entries.iter().filter(|e| cited.contains(&e.seq)).map(exchange_of).collect();
                CaseResult {
                    name: format!("{}::journal", r.id),
                    rule: r.id.clone(),
                    level: r.level,
                    outcome,
                    graded,
                    known: false,
                    message: (!lines.is_empty()).then(|| lines.join("\n")),
                    duration_ms: 0,
                    evidence: Evidence { exchanges, ..Evidence::default() },
                    exchanges_omitted: 0,
                    replay: None,
                }
            })
            .collect();
        Report {
            schema: SCHEMA,
            target: target.to_string(),
            profile: profile.to_string(),
            strict: false,
            summary,
            aborted: None,
            library: None,
            results,
        }
    }
}

/// A journal entry in the shape a report shows exchanges: HTTP as it was, XMPP as a request
/// of method `XMPP` (what happened) with the stanza as its body.
pub fn exchange_of(entry: &crate::verdicts::Entry) -> super::evidence::Exchange {
    use crate::verdicts::What;
    use crate::wire::{HttpRequest, HttpResponse};
    let xmpp = |what: &str, body: String| super::evidence::Exchange {
        request: HttpRequest {
            method: "XMPP".into(),
            path: format!("#{} {what}", entry.seq),
            body: body.into_bytes(),
            ..HttpRequest::default()
        },
        response: HttpResponse { status: 200, headers: vec![("content-type".into(), "xmpp".into())], body: Vec::new() },
    };
    match &entry.what {
        What::Http { request, response, .. } => super::evidence::Exchange {
            request: HttpRequest {
                method: request.method.clone().unwrap_or_default(),
                path: request.path.clone().unwrap_or_default(),
                query: Vec::new(),
                headers: request.headers.clone(),
                body: request.body.clone().into_bytes(),
            },
            response: HttpResponse {
                status: response.status.unwrap_or(0),
                headers: response.headers.clone(),
                body: response.body.clone().into_bytes(),
            },
        },
        What::XmppReceived { stanza, .. } => xmpp("received from the app server", stanza.to_string()),
        What::XmppSent { stanza, .. } => xmpp("sent to the app server", stanza.to_string()),
        What::XmppOpened => xmpp("connection opened", String::new()),
        What::XmppClosed => xmpp("connection closed", String::new()),
        What::XmppLost => xmpp("connection lost when the server stopped", String::new()),
    }
}
