//! Expectations: whether an answer matches a step's accepted outcomes, and failure messages
//! that say what differs (counts and short summaries, not whole arrays).

use serde_json::Value;

use crate::catalog::template::{self, Vars, text_of};
use crate::catalog::{BodyShape, Expect, FieldOp, Grade};
use crate::wire::{HttpRequest, HttpResponse};

fn render(v: &Value, vars: &Vars) -> Result<Value, String> {
    template::render(v, vars).map_err(|e| e.to_string())
}

/// The exchange, shortened, for failure messages.
pub fn describe(req: &HttpRequest, resp: &HttpResponse) -> String {
    let cut = |b: &[u8]| {
        let s = String::from_utf8_lossy(b);
        if s.chars().count() > 1500 {
            format!("{}… ({} bytes)", s.chars().take(1500).collect::<String>(), b.len())
        } else {
            s.into_owned()
        }
    };
    if req.method == "XMPP" {
        // An XMPP exchange: a stanza sent and what came back, with no HTTP status.
        return format!("  sent over XMPP ({}): {}\n  received: {}", req.path, cut(&req.body), cut(&resp.body));
    }
    format!(
        "  request:  {} {} {}\n  response: {} {}",
        req.method,
        req.path_and_query(),
        cut(&req.body),
        resp.status,
        cut(&resp.body)
    )
}

/// Passes if the response matches any of the outcomes (or there are none to match). Where
/// there are several, says which one matched (by name, or `outcome N`), marking an observed
/// one. With `strict`, observed outcomes are not accepted: only what the documents give.
pub fn expect_any(
    outcomes: &[Expect],
    resp: &HttpResponse,
    vars: &Vars,
    strict: bool,
) -> Result<Option<Matched>, String> {
    let name = |k: usize, e: &Expect| e.name.clone().unwrap_or_else(|| format!("outcome {}", k + 1));
    let mut why = Vec::new();
    let mut observed_match = None;
    for (k, e) in outcomes.iter().enumerate() {
        match check(e, resp, vars) {
            Ok(()) if e.grade == Grade::Observed && strict => observed_match = Some(name(k, e)),
            Ok(()) if outcomes.len() == 1 => return Ok(None),
            Ok(()) => return Ok(Some(Matched { name: name(k, e), grade: e.grade })),
            Err(w) if outcomes.len() == 1 => return Err(w),
            Err(w) => why.push(format!("outcome {} ({}): {w}", k + 1, e.name.as_deref().unwrap_or("unnamed"))),
        }
    }
    if let Some(observed) = observed_match {
        let documented: Vec<String> = outcomes
            .iter()
            .enumerate()
            .filter(|(_, e)| e.grade == Grade::Documented)
            .map(|(k, e)| name(k, e))
            .collect();
        return Err(format!(
            "matches only `{observed}`, an answer real servers gave but the documents do not; --strict accepts only the documented {}:\n    {}",
            documented.join(", "),
            why.join("\n    ")
        ));
    }
    if why.is_empty() {
        Ok(None)
    } else {
        Err(format!("matches none of the accepted outcomes:\n    {}", why.join("\n    ")))
    }
}

/// Which of a step's several accepted outcomes a response matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// Its name, or `outcome N`.
    pub name: String,
    pub grade: Grade,
}

pub fn check(expect: &Expect, resp: &HttpResponse, vars: &Vars) -> Result<(), String> {
    let status_ok = expect.status.contains(&resp.status) || expect.status_class.contains(&(resp.status / 100));
    let any_status = expect.status.is_empty() && expect.status_class.is_empty();
    if !any_status && !status_ok {
        let want: Vec<String> = expect
            .status
            .iter()
            .map(u16::to_string)
            .chain(expect.status_class.iter().map(|c| format!("{c}xx")))
            .collect();
        return Err(format!("expected status {}, got {}", want.join(" or "), resp.status));
    }
    let json = resp.body_json();
    let blank = resp.body.iter().all(u8::is_ascii_whitespace);
    match expect.body {
        BodyShape::Any => {}
        BodyShape::Json if json.is_none() => return Err("expected a JSON body".into()),
        BodyShape::Empty if !blank => return Err(format!("expected no body, got {} bytes", resp.body.len())),
        BodyShape::NotJson if json.is_some() && !blank => return Err("expected no JSON body, got JSON".into()),
        BodyShape::Text if blank => return Err("expected a body that says what is wrong, got none".into()),
        _ => {}
    }
    // A body that is not JSON is its text, for the checks at "" (`contains`, `eq`, `ne`),
    // read by line: `\r\n` as `\n`, a final newline dropped.
    let body = json
        .unwrap_or_else(|| if blank { Value::Null } else { Value::String(super::scenario::text_lines(&resp.body)) });
    for f in &expect.fields {
        let variable = f.value.as_ref().map(|v| render(v, vars)).transpose()?;
        let actual = match &variable {
            Some(v) => Some(v),
            None => body.pointer(&f.at),
        };
        // `where` narrows an array to the elements that match partially.
        let narrowed = match (&f.filter, actual) {
            (Some(w), Some(Value::Array(items))) => {
                let w = render(w, vars)?;
                Some(Value::Array(items.iter().filter(|i| partial_match(&w, i)).cloned().collect()))
            }
            _ => None,
        };
        let actual = narrowed.as_ref().or(actual);
        // A check's own variable, by its name (`${over}` is the check's template, not a value).
        let variable_name = f.value.as_ref().and_then(|v| {
            let t = v.as_str()?;
            t.strip_prefix("${").and_then(|n| n.strip_suffix('}')).filter(|n| !n.contains(['$', '{', '}']))
        });
        // The side of the bound an outcome on `over` is meant for: `over = false` or
        // `over != true` is within it, the others past it.
        let meant_past = match &f.op {
            FieldOp::Eq(Value::Bool(b)) => Some(*b),
            FieldOp::Ne(Value::Bool(b)) => Some(!*b),
            _ => None,
        };
        if let (Some(crate::catalog::OVER_VAR), Some(past), Some(Value::Bool(over))) =
            (variable_name, meant_past, actual)
            && past != *over
        {
            // A probe's round past its bound (`over`), read on an outcome meant for the other side.
            return Err(if *over {
                "this outcome is one for a value within the bound, and this round's value is one past it".to_string()
            } else {
                "this outcome is one for a value past the bound, and this round's value is within it".to_string()
            });
        }
        let place = match (&f.value, variable_name) {
            (Some(_), Some(name)) => format!("the check's variable `{name}`"),
            (Some(v), None) => format!("value {}", text_of(v)),
            (None, _) => format!("`{}`", f.at),
        };
        let fail = |what: String| Err(format!("at {place}: {what}, found {}", summary(actual)));
        match &f.op {
            FieldOp::Absent => {
                if actual.is_some() {
                    return fail("expected nothing".into());
                }
            }
            FieldOp::Type(t) => {
                if !actual.is_some_and(|a| t.matches(a)) {
                    let wanted = format!("{t:?}").to_lowercase();
                    let article = if wanted.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
                    // Of another JSON type: said in the form a run's summary counts.
                    let cause = actual
                        .filter(|_| f.value.is_none())
                        .and_then(|a| super::causes::wrong_kind(&f.at, a, t.kind()))
                        .map(|c| format!(" ({c})"))
                        .unwrap_or_default();
                    return Err(format!("at {place}: expected {article} {wanted}, found {}{cause}", summary(actual)));
                }
            }
            FieldOp::Eq(v) => {
                let want = render(v, vars)?;
                if !actual.is_some_and(|a| same_json(a, &want)) {
                    // A value of the wrong type says so in the form a run's summary counts.
                    let cause = actual
                        .filter(|_| f.value.is_none())
                        .and_then(|a| super::causes::wrong_type(&f.at, a, &want))
                        .map(|c| format!(" ({c})"))
                        .unwrap_or_default();
                    return Err(format!(
                        "at {place}: expected {}, found {}{cause}",
                        summary(Some(&want)),
                        summary(actual)
                    ));
                }
            }
            FieldOp::Ne(v) => {
                let want = render(v, vars)?;
                if actual.is_some_and(|a| same_json(a, &want)) {
                    return fail(format!("expected anything but {}", summary(Some(&want))));
                }
            }
            FieldOp::Len(v) | FieldOp::MinLen(v) | FieldOp::MaxLen(v) => {
                let want = render(v, vars)?;
                let len = actual.and_then(length).map(|l| l as u64);
                let (ok, what) = match (&f.op, want.as_u64(), len) {
                    (_, None, _) => (false, "a length"),
                    (_, _, None) => (false, "an array"),
                    (FieldOp::Len(_), Some(w), Some(l)) => (l == w, "length"),
                    (FieldOp::MinLen(_), Some(w), Some(l)) => (l >= w, "length at least"),
                    (_, Some(w), Some(l)) => (l <= w, "length at most"),
                };
                if !ok {
                    return Err(format!(
                        "at {place}: expected {what} {want}, found {}",
                        len.map_or_else(|| summary(actual), |l| format!("length {l}: {}", summary(actual)))
                    ));
                }
            }
            FieldOp::OneOf(v) => {
                let want = render(v, vars)?;
                let Some(allowed) = want.as_array() else {
                    return Err(format!(
                        "at {place}: `one_of` needs an array of the values allowed, got {}",
                        summary(Some(&want))
                    ));
                };
                if !actual.is_some_and(|a| allowed.iter().any(|w| same_json(a, w))) {
                    return fail(format!("expected one of {}", summary(Some(&want))));
                }
            }
            FieldOp::MinChars(v) => {
                let want = render(v, vars)?.as_u64().unwrap_or(u64::MAX);
                if actual.and_then(Value::as_str).is_none_or(|s| (s.chars().count() as u64) < want) {
                    return fail(format!("expected a string of at least {want} characters"));
                }
            }
            FieldOp::Set(v) => {
                let want = render(v, vars)?;
                let sorted = |v: &Value| {
                    v.as_array().map(|a| {
                        let mut s: Vec<String> = a.iter().map(Value::to_string).collect();
                        s.sort();
                        s
                    })
                };
                let (got, wanted) = (actual.and_then(sorted), sorted(&want));
                if got.is_none() || got != wanted {
                    let (got, wanted) = (got.unwrap_or_default(), wanted.unwrap_or_default());
                    let missing: Vec<&String> = wanted.iter().filter(|w| !got.contains(w)).collect();
                    let extra: Vec<&String> = got.iter().filter(|g| !wanted.contains(g)).collect();
                    return fail(format!(
                        "expected the set {} (in any order): {} missing {missing:?}, {} unexpected {extra:?}",
                        summary(Some(&want)),
                        missing.len(),
                        extra.len()
                    ));
                }
            }
            FieldOp::Some(v) | FieldOp::None(v) => {
                let want = render(v, vars)?;
                let Some(Value::Array(items)) = actual else { return fail("expected an array".into()) };
                let found = items.iter().any(|item| partial_match(&want, item));
                match (&f.op, found) {
                    (FieldOp::Some(_), false) => return fail(format!("expected an element matching {want}")),
                    (FieldOp::None(_), true) => return fail(format!("expected no element matching {want}")),
                    _ => {}
                }
            }
            FieldOp::Contains(v) => {
                let want = render(v, vars)?;
                let ok = match (actual, &want) {
                    (Some(Value::Array(a)), Value::Array(w)) => w.iter().all(|x| a.contains(x)),
                    (Some(Value::Array(a)), w) => a.contains(w),
                    (Some(Value::String(a)), Value::String(w)) => a.contains(w.as_str()),
                    _ => false,
                };
                if !ok {
                    return fail(format!("expected it to contain {want}"));
                }
            }
        }
    }
    Ok(())
}

/// Equal as JSON values: JSON has one number type, so `1.0` is `1` (outside pass 21: a
/// server writing `"success": 1.0` failed eleven checks). Walked with a stack: the answer
/// is the server's.
pub fn same_json(a: &Value, b: &Value) -> bool {
    let mut pending = vec![(a, b)];
    while let Some((a, b)) = pending.pop() {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                let same = match (x.as_i128(), y.as_i128()) {
                    (Some(i), Some(j)) => i == j,
                    _ => x.as_f64() == y.as_f64(),
                };
                if !same {
                    return false;
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => pending.extend(x.iter().zip(y)),
            (Value::Object(x), Value::Object(y)) if x.len() == y.len() => {
                for (k, v) in x {
                    match y.get(k) {
                        Some(w) => pending.push((v, w)),
                        None => return false,
                    }
                }
            }
            (Value::Array(_) | Value::Object(_), _) => return false,
            (a, b) if a != b => return false,
            _ => {}
        }
    }
    true
}

fn length(v: &Value) -> Option<usize> {
    match v {
        Value::Array(x) => Some(x.len()),
        Value::Object(x) => Some(x.len()),
        Value::String(s) => Some(s.chars().count()),
        _ => None,
    }
}

/// A value for a failure message: short ones whole, long arrays and strings summarized, so
/// that a message says what differs instead of quoting a whole inbox.
pub fn summary(v: Option<&Value>) -> String {
    const MAX: usize = 300;
    let Some(v) = v else { return "nothing".into() };
    let text = v.to_string();
    if text.chars().count() <= MAX {
        return text;
    }
    match v {
        Value::Array(items) => {
            let first: String = items.first().map(Value::to_string).unwrap_or_default().chars().take(120).collect();
            format!("[{} elements; the first: {first}…]", items.len())
        }
        Value::String(s) => format!("a string of {} characters", s.chars().count()),
        _ => format!("{}… ({} characters)", text.chars().take(MAX).collect::<String>(), text.chars().count()),
    }
}

/// `want` matches `actual` if every field it names matches (recursively); other values must
/// be equal.
fn partial_match(want: &Value, actual: &Value) -> bool {
    match (want, actual) {
        (Value::Object(w), Value::Object(a)) => w.iter().all(|(k, v)| a.get(k).is_some_and(|x| partial_match(v, x))),
        _ => want == actual,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::same_json;
    use crate::catalog::JsonType;

    #[test]
    fn json_has_one_number_type() {
        assert!(same_json(&json!(1.0), &json!(1)));
        assert!(same_json(&json!({"a": [1.0, {"b": 2}]}), &json!({"a": [1, {"b": 2.0}]})));
        assert!(!same_json(&json!("1"), &json!(1)));
        assert!(!same_json(&json!(1.5), &json!(1)));
        assert!(!same_json(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(JsonType::Integer.matches(&json!(3.0)) && !JsonType::Integer.matches(&json!(3.5)));
    }
}
