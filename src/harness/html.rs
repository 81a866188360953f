//! The HTML report: one self-contained file (no external styles, scripts or fonts) that a
//! person opens to see where a server departs from the documents.
//!
//! A verdict and counts on top; a matrix with a row per rule and a cell per check; below, per
//! rule, the quote and its source, and per check what happened: the message, the outcome
//! matched where several are accepted, and for a failure the reproduction (replay command,
//! curl, a property's shrunk sequence), the snapshot difference and the exchanges. Failed
//! rules open by default. A few lines of script add filters; without it everything shows.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::evidence::{Exchange, curl_script};
use super::report::{CaseResult, Outcome, Report};
use crate::catalog::Catalog;
use crate::xmpp::escape;

/// How the report's reproductions address the server.
pub struct Reproduce<'a> {
    /// Where curl commands send requests.
    pub base_url: &'a str,
    /// What `gcmspec replay FILE` needs to reach the same server (`--target URL`).
    pub replay_flags: &'a str,
}

/// Renders `report`, with rule texts from `catalog`.
pub fn render(report: &Report, catalog: &Catalog, reproduce: &Reproduce<'_>) -> String {
    let mut by_rule: BTreeMap<&str, Vec<&CaseResult>> = BTreeMap::new();
    for r in &report.results {
        by_rule.entry(r.rule.as_str()).or_default().push(r);
    }
    // The catalogue's order: rules as the spec files list them.
    let rules: Vec<(&crate::catalog::Rule, &Vec<&CaseResult>)> =
        catalog.rules.iter().filter_map(|rule| by_rule.get(rule.id.as_str()).map(|rs| (rule, rs))).collect();
    let s = &report.summary;
    let new_failures = s.graded_failures - s.known_failures;
    let (verdict_class, verdict) = if let Some(why) = &report.aborted {
        ("fail", format!("NO CHECK RAN: {why}"))
    } else if report.exit_code() == 1 {
        (
            "fail",
            format!(
                "FAIL: {new_failures} graded failure{}{}",
                if new_failures == 1 { "" } else { "s" },
                if s.known_failures > 0 { " not in the baseline" } else { "" }
            ),
        )
    } else if s.passed + s.failed == 0 {
        ("fail", "NO CHECK RAN".to_string())
    } else {
        ("pass", "PASS: every graded check passed".to_string())
    };

    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>gcmspec: {verdict} ({})</title>\n<style>{STYLE}</style>\n</head>\n<body data-filter=\"all\">\n",
        escape(&report.target)
    );
    let _ = write!(
        out,
        "<header>\n<h1>gcmspec conformance report</h1>\n<p class=\"meta\">Target <code>{}</code> · profile \
         <code>{}</code> · {} · report schema <code>{}</code></p>\n<p id=\"verdict\" class=\"verdict {verdict_class}\">{}</p>\n",
        escape(&report.target),
        escape(&report.profile),
        if report.strict { "strict: SHOULD rules are graded" } else { "MUST rules are graded; SHOULD rules are not" },
        escape(report.schema),
        escape(&verdict)
    );
    out.push_str("<ul class=\"tiles\" id=\"summary\">\n");
    for (class, n, label) in [
        ("passed", s.passed, "passed"),
        ("observed", s.observed, "passed on an observed answer"),
        ("failed", s.failed, "failed"),
        ("graded", s.graded_failures, "graded failures"),
        ("known", s.known_failures, "known (baseline)"),
        ("unsupported", s.unsupported, "unsupported"),
        ("skipped", s.skipped, "skipped"),
        ("not-exercised", s.not_exercised, "not exercised"),
    ] {
        // Counts that only sometimes apply are shown when they do.
        if n == 0 && matches!(class, "observed" | "known" | "not-exercised") {
            continue;
        }
        let _ = writeln!(out, "<li class=\"{class}\"><b>{n}</b> {label}</li>");
    }
    out.push_str("</ul>\n");
    if !s.fixed.is_empty() {
        let _ = writeln!(
            out,
            "<p class=\"fixed\">Listed in the baseline and passing now (remove them from it): {}</p>",
            s.fixed.iter().map(|f| format!("<code>{}</code>", escape(f))).collect::<Vec<_>>().join(", ")
        );
    }
    out.push_str(
        "<nav class=\"filters\" hidden>Show: <button data-show=\"all\" aria-pressed=\"true\">all rules</button>\
         <button data-show=\"failed\">failed</button><button data-show=\"unsupported\">unsupported</button></nav>\n</header>\n<main>\n",
    );

    // The matrix.
    out.push_str(
        "<table id=\"matrix\">\n<thead><tr><th>Rule</th><th>Level</th><th>Title</th><th>Checks</th><th>Outcome</th></tr></thead>\n<tbody>\n",
    );
    for (rule, results) in &rules {
        let outcome = rule_outcome(results);
        let _ = write!(
            out,
            "<tr class=\"rule {o}\" data-rule=\"{id}\"><td><a href=\"#rule-{id}\">{id}</a></td><td>{}</td><td>{}</td><td>",
            rule.level,
            escape(&rule.title),
            o = outcome.name(),
            id = escape(&rule.id),
        );
        for r in results.iter() {
            let check = r.name.strip_prefix(&format!("{}::", r.rule)).unwrap_or(&r.name);
            let observed = r.outcome == Outcome::Passed && r.evidence.observed;
            let tip = match r.message.as_deref().and_then(|m| m.lines().next()) {
                Some(m) => m,
                None if observed => "passed on an answer real servers gave, not the documented one",
                None => r.outcome.name(),
            };
            let _ = write!(
                out,
                "<span class=\"check {}{}{}\" title=\"{}\">{}</span> ",
                r.outcome.name(),
                if r.known { " known" } else { "" },
                if observed { " observed" } else { "" },
                escape(tip),
                escape(check)
            );
        }
        let _ = writeln!(out, "</td><td><span class=\"badge {o}\">{o}</span></td></tr>", o = outcome.name());
    }
    out.push_str("</tbody>\n</table>\n");

    // Per rule.
    for (rule, results) in &rules {
        let outcome = rule_outcome(results);
        let _ = write!(
            out,
            "<details class=\"rule {o}\" id=\"rule-{id}\"{open}>\n<summary><span class=\"badge {o}\">{o}</span> \
             <code>{id}</code> <span class=\"level\">{}</span> {}</summary>\n",
            rule.level,
            escape(&rule.title),
            o = outcome.name(),
            id = escape(&rule.id),
            open = if outcome == Outcome::Failed { " open" } else { "" },
        );
        for source in &rule.sources {
            let document =
                catalog.documents.get(&source.document).map(|d| d.title.as_str()).unwrap_or(&source.document);
            let _ = writeln!(
                out,
                "<blockquote class=\"quote\"><p>{}</p><footer>{}, {}</footer></blockquote>",
                escape(&source.quote),
                escape(document),
                escape(&source.section)
            );
        }
        if let Some(i) = &rule.interpretation {
            let _ = writeln!(out, "<p class=\"interpretation\"><b>Read as:</b> {}</p>", escape(i));
        }
        for r in results.iter() {
            check_section(&mut out, r, reproduce);
        }
        out.push_str("</details>\n");
    }
    out.push_str("</main>\n");
    out.push_str(SCRIPT);
    out.push_str("</body>\n</html>\n");
    out
}

fn check_section(out: &mut String, r: &CaseResult, reproduce: &Reproduce<'_>) {
    let check = r.name.strip_prefix(&format!("{}::", r.rule)).unwrap_or(&r.name);
    let grade = match (r.outcome, r.graded, r.known) {
        (Outcome::Failed, true, true) => "graded, known: listed in the baseline",
        (Outcome::Failed, true, false) => "graded: fails the run",
        (Outcome::Failed, false, _) => "not graded (SHOULD; fails only with --strict)",
        _ => "",
    };
    let _ = write!(
        out,
        "<section class=\"check {o}\" data-check=\"{name}\">\n<h3><span class=\"badge {o}\">{o}</span> {check} \
         <small>{grade}{sep}{} ms</small></h3>\n",
        r.duration_ms,
        o = r.outcome.name(),
        name = escape(&r.name),
        check = escape(check),
        sep = if grade.is_empty() { "" } else { " · " },
    );
    if !r.evidence.matched.is_empty() {
        let _ = writeln!(
            out,
            "<p class=\"matched\"><b>Accepted outcome seen:</b> {}</p>",
            r.evidence.matched.iter().map(|m| escape(m)).collect::<Vec<_>>().join("; ")
        );
    }
    if let Some(m) = &r.message {
        let _ = writeln!(out, "<pre class=\"message\">{}</pre>", escape(m));
    }
    if r.outcome == Outcome::Failed {
        out.push_str("<h4>Minimal reproduction</h4>\n");
        if let Some(path) = &r.replay {
            let _ = writeln!(
                out,
                "<p class=\"replay\">Replay file <code>{p}</code>: <code>gcmspec replay {p}{}</code></p>",
                escape(reproduce.replay_flags),
                p = escape(path)
            );
        }
        if let Some(sequence) = &r.evidence.sequence {
            let steps: Vec<String> = sequence
                .as_array()
                .map(|a| a.iter().enumerate().map(|(i, s)| format!("{}. {s}", i + 1)).collect())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "<p>Shrunk failing sequence:</p>\n<pre class=\"sequence\">{}</pre>",
                escape(&steps.join("\n"))
            );
        }
        if r.evidence.exchanges.iter().any(|x| !x.is_xmpp()) {
            let omitted = if r.exchanges_omitted > 0 {
                format!(" ({} from the middle left out; the replay file has them all)", r.exchanges_omitted)
            } else {
                String::new()
            };
            let commands = r.evidence.exchanges.iter().filter(|x| !x.is_xmpp()).count();
            let _ = writeln!(
                out,
                "<details class=\"curl\"><summary>As curl: {commands} command{}{omitted}</summary>\n<pre class=\"curl\">{}</pre></details>",
                if commands == 1 { "" } else { "s" },
                escape(&curl_script(&r.evidence.exchanges, reproduce.base_url, Some(600)))
            );
        }
        if let Some(diff) = &r.evidence.snapshot_diff {
            out.push_str("<h4>Snapshot difference</h4>\n<pre class=\"diff\">");
            for line in diff.lines() {
                let class = match line.as_bytes().first() {
                    Some(b'+') if !line.starts_with("+++") => "add",
                    Some(b'-') if !line.starts_with("---") => "del",
                    Some(b'@') => "hunk",
                    _ => "ctx",
                };
                let _ = writeln!(out, "<span class=\"{class}\">{}</span>", escape(line));
            }
            out.push_str("</pre>\n");
        }
        if !r.evidence.exchanges.is_empty() {
            let _ = writeln!(
                out,
                "<details class=\"exchanges\"><summary>Requests and responses ({})</summary>\n<ol class=\"exchanges\">",
                r.evidence.exchanges.len()
            );
            for x in &r.evidence.exchanges {
                exchange_item(out, x);
            }
            out.push_str("</ol></details>\n");
        }
    }
    out.push_str("</section>\n");
}

fn exchange_item(out: &mut String, x: &Exchange) {
    let req = &x.request;
    let mut request = format!("{} {}\n", req.method, req.path_and_query());
    for (k, v) in &req.headers {
        let _ = writeln!(request, "{k}: {v}");
    }
    if !req.body.is_empty() {
        let _ = write!(request, "\n{}", pretty(&req.body));
    }
    let resp = &x.response;
    let response = if x.is_xmpp() {
        format!("<- {}", pretty(&resp.body))
    } else {
        let content_type = resp.header("content-type").unwrap_or("-");
        format!("-> {} {content_type}\n{}", resp.status, pretty(&resp.body))
    };
    let _ = writeln!(
        out,
        "<li><pre class=\"request\">{}</pre><pre class=\"response\">{}</pre></li>",
        escape(&request),
        escape(&response)
    );
}

fn pretty(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    if text.chars().count() > 2000 {
        format!("{}… ({} bytes)", text.chars().take(2000).collect::<String>(), body.len())
    } else {
        text
    }
}

/// A rule failed if any check failed; passed if any passed; otherwise what its checks were.
fn rule_outcome(results: &[&CaseResult]) -> Outcome {
    let any = |o: Outcome| results.iter().any(|r| r.outcome == o);
    if any(Outcome::Failed) {
        Outcome::Failed
    } else if any(Outcome::Passed) {
        Outcome::Passed
    } else if any(Outcome::Unsupported) {
        Outcome::Unsupported
    } else if any(Outcome::NotExercised) {
        Outcome::NotExercised
    } else {
        Outcome::Skipped
    }
}

const STYLE: &str = r#"
:root { --pass: #1a7f37; --fail: #cf222e; --unsup: #9a6700; --skip: #6e7781; --line: #d0d7de; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px; padding: 1rem 1.5rem; color: #1f2328; }
h1 { font-size: 1.5rem; margin: .2rem 0; }
code, pre { font: 12.5px/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
.meta { color: #57606a; margin: .2rem 0 .6rem; }
.verdict { font-size: 1.2rem; font-weight: 600; padding: .5rem .8rem; border-radius: 6px; color: #fff; display: inline-block; margin: .2rem 0; }
.verdict.pass { background: var(--pass); } .verdict.fail { background: var(--fail); }
.tiles { list-style: none; padding: 0; display: flex; gap: .6rem; flex-wrap: wrap; margin: .8rem 0; }
.tiles li { border: 1px solid var(--line); border-radius: 6px; padding: .3rem .7rem; }
.tiles b { font-size: 1.2rem; margin-right: .2rem; }
.tiles .passed b { color: var(--pass); } .tiles .failed b, .tiles .graded b { color: var(--fail); }
.tiles .unsupported b { color: var(--unsup); } .tiles .skipped b, .tiles .known b, .tiles .not-exercised b { color: var(--skip); }
.filters button { margin-left: .3rem; border: 1px solid var(--line); background: #f6f8fa; border-radius: 5px; padding: .15rem .6rem; cursor: pointer; }
.filters button[aria-pressed=true] { background: #0969da; color: #fff; border-color: #0969da; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0 2rem; }
th, td { text-align: left; vertical-align: top; border-bottom: 1px solid var(--line); padding: .3rem .4rem; }
th { background: #f6f8fa; position: sticky; top: 0; }
tr.rule.failed td:first-child { border-left: 4px solid var(--fail); }
.check { display: inline-block; border-radius: 4px; padding: 0 .35rem; margin: 1px 0; font-size: 12px; border: 1px solid; }
span.check.passed { color: var(--pass); border-color: #8ddb8c; background: #dafbe1; }
span.check.failed { color: #fff; border-color: var(--fail); background: var(--fail); }
span.check.failed.known { background: #ffebe9; color: var(--fail); }
span.check.passed.observed { border-style: dashed; background: #fff8c5; }
.tiles .observed b { color: var(--unsup); }
span.check.unsupported { color: var(--unsup); border-color: #d4a72c; background: #fff8c5; }
span.check.skipped, span.check.not-exercised { color: var(--skip); border-color: var(--line); }
.badge { display: inline-block; border-radius: 2em; padding: 0 .55rem; font-size: 12px; font-weight: 600; color: #fff; }
.badge.passed { background: var(--pass); } .badge.failed { background: var(--fail); }
.badge.unsupported { background: var(--unsup); } .badge.skipped, .badge.not-exercised { background: var(--skip); }
details.rule { border: 1px solid var(--line); border-radius: 6px; margin: .5rem 0; padding: .3rem .8rem; }
details.rule.failed { border-color: var(--fail); }
details.rule > summary { cursor: pointer; font-weight: 600; padding: .2rem 0; }
details.curl > summary, details.exchanges > summary { cursor: pointer; color: #0969da; margin: .3rem 0; }
.level { color: #57606a; font-weight: 400; }
blockquote.quote { margin: .5rem 0; padding: .3rem .8rem; border-left: 4px solid #0969da; background: #f6f8fa; }
blockquote.quote p { margin: 0; } blockquote.quote footer { color: #57606a; font-size: 12px; margin-top: .2rem; }
section.check { display: block; border: 0; border-top: 1px dashed var(--line); padding: .3rem 0; font-size: 14px; background: none; color: inherit; }
section.check h3 { font-size: 14px; margin: .3rem 0; } section.check small { color: #57606a; font-weight: 400; }
h4 { margin: .6rem 0 .2rem; font-size: 13px; }
pre { background: #f6f8fa; border: 1px solid var(--line); border-radius: 6px; padding: .5rem; overflow-x: auto; white-space: pre-wrap; word-break: break-all; margin: .3rem 0; }
pre.message { border-left: 4px solid var(--fail); }
section.check.passed pre.message, section.check.unsupported pre.message { border-left-color: var(--unsup); }
pre.diff .add { color: #116329; background: #dafbe1; display: block; } pre.diff .del { color: #82071e; background: #ffebe9; display: block; }
pre.diff .hunk { color: #8250df; display: block; } pre.diff .ctx { display: block; }
ol.exchanges li { margin-bottom: .4rem; } ol.exchanges pre { margin: .15rem 0; }
pre.response { background: #fff; }
body[data-filter=failed] tr.rule:not(.failed), body[data-filter=failed] details.rule:not(.failed) { display: none; }
body[data-filter=unsupported] tr.rule:not(.unsupported), body[data-filter=unsupported] details.rule:not(.unsupported) { display: none; }
"#;

const SCRIPT: &str = r#"<script>
(function () {
  var nav = document.querySelector('nav.filters');
  nav.hidden = false;
  nav.addEventListener('click', function (e) {
    var show = e.target.getAttribute('data-show');
    if (!show) return;
    document.body.setAttribute('data-filter', show);
    nav.querySelectorAll('button').forEach(function (b) { b.setAttribute('aria-pressed', String(b === e.target)); });
  });
  // A matrix link opens the rule it points to.
  document.getElementById('matrix').addEventListener('click', function (e) {
    var href = e.target.getAttribute && e.target.getAttribute('href');
    if (href && href.charAt(0) === '#') { var d = document.getElementById(href.slice(1)); if (d) d.open = true; }
  });
})();
</script>
"#;
