//! `${...}` expressions in scenario values.
//!
//! A string that is exactly `"${expr}"` becomes the expression's value with its JSON type
//! (an array of registration ids, a number); `${expr}` inside longer text is interpolated.
//! The grammar is deliberately small:
//!
//! ```text
//! expr  := term (("+" | "-") term)*
//! term  := INTEGER | call | path
//! call  := ("text" | "utf8" | "ids") "(" expr ")" | ("min" | "max") "(" expr "," expr ")"
//! path  := IDENT ("." IDENT)* ("[" expr "]" | "[" expr? ".." expr? "]")*
//! ```
//!
//! `+` adds integers and concatenates arrays. `text(n)` is a string of `n` ASCII characters;
//! `utf8(n)` a string of exactly `n` bytes, most of them in two-byte characters (so that a
//! limit counted in characters, not bytes, shows); `ids(n)` is `n` distinct strings that are
//! not registration ids; `min` and `max` of two integers.

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Int(i64),
    Call(Func, Vec<Expr>),
    Path { root: String, access: Vec<Access> },
    Add(Box<Expr>, Box<Expr>),
    Sub(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Func {
    Text,
    Utf8,
    Ids,
    Min,
    Max,
}

impl Func {
    fn arity(self) -> usize {
        match self {
            Func::Min | Func::Max => 2,
            _ => 1,
        }
    }
}

/// Generated values are bounded, so a typo cannot ask for gigabytes.
const MAX_GENERATED: i64 = 1 << 20;

#[derive(Debug, Clone, PartialEq)]
pub enum Access {
    Field(String),
    Index(Expr),
    Slice(Option<Expr>, Option<Expr>),
}

/// Variables visible to a scenario step.
pub type Vars = BTreeMap<String, Value>;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TemplateError {
    #[error("bad expression `{expr}`: {why}")]
    Syntax { expr: String, why: String },
    #[error("unknown variable `{0}`")]
    Unknown(String),
    #[error("`{expr}`: {why}")]
    Eval { expr: String, why: String },
}

impl Expr {
    pub fn parse(text: &str) -> Result<Expr, TemplateError> {
        let mut p = Parser { s: text.as_bytes(), i: 0, text };
        let e = p.expr()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(p.err("unexpected characters at the end"));
        }
        Ok(e)
    }

    /// Root variable names the expression reads, for the loader's "defined before use" check.
    pub fn roots(&self, out: &mut Vec<String>) {
        match self {
            Expr::Int(_) => {}
            Expr::Call(_, args) => args.iter().for_each(|e| e.roots(out)),
            Expr::Path { root, access } => {
                out.push(root.clone());
                for a in access {
                    match a {
                        Access::Field(_) => {}
                        Access::Index(e) => e.roots(out),
                        Access::Slice(a, b) => {
                            a.iter().chain(b.iter()).for_each(|e| e.roots(out));
                        }
                    }
                }
            }
            Expr::Add(a, b) | Expr::Sub(a, b) => {
                a.roots(out);
                b.roots(out);
            }
        }
    }

    pub fn eval(&self, vars: &Vars) -> Result<Value, TemplateError> {
        match self {
            Expr::Int(i) => Ok(Value::from(*i)),
            Expr::Call(f @ (Func::Min | Func::Max), args) => {
                let (a, b) = (int(&args[0], vars)?, int(&args[1], vars)?);
                Ok(Value::from(if *f == Func::Min { a.min(b) } else { a.max(b) }))
            }
            Expr::Call(f, args) => {
                let n = int(&args[0], vars)?;
                if !(0..=MAX_GENERATED).contains(&n) {
                    return Err(eval_err(self, &format!("{n} is outside 0..={MAX_GENERATED}")));
                }
                Ok(match f {
                    Func::Text => Value::String("x".repeat(n as usize)),
                    // "é" is two bytes in UTF-8: n bytes, about n / 2 characters.
                    Func::Utf8 => {
                        Value::String(format!("{}{}", "é".repeat(n as usize / 2), "x".repeat(n as usize % 2)))
                    }
                    _ => Value::Array((0..n).map(|k| Value::String(format!("not-a-registration-id-{k}"))).collect()),
                })
            }
            Expr::Add(a, b) if matches!((a.eval(vars), b.eval(vars)), (Ok(Value::Array(_)), Ok(Value::Array(_)))) => {
                let (Value::Array(mut x), Value::Array(y)) = (a.eval(vars)?, b.eval(vars)?) else {
                    unreachable!("checked by the guard")
                };
                x.extend(y);
                Ok(Value::Array(x))
            }
            Expr::Add(a, b) | Expr::Sub(a, b) => {
                let (x, y) = (int(a, vars)?, int(b, vars)?);
                let r = if matches!(self, Expr::Add(..)) { x.checked_add(y) } else { x.checked_sub(y) };
                r.map(Value::from).ok_or_else(|| eval_err(self, "integer overflow"))
            }
            Expr::Path { root, access } => {
                let mut v = vars.get(root).ok_or_else(|| TemplateError::Unknown(root.clone()))?.clone();
                for a in access {
                    v = match a {
                        Access::Field(f) => {
                            v.get(f).cloned().ok_or_else(|| eval_err(self, &format!("no field `{f}`")))?
                        }
                        Access::Index(i) => {
                            let i = index(int(i, vars)?, &v, self)?;
                            v.as_array()
                                .and_then(|a| a.get(i))
                                .cloned()
                                .ok_or_else(|| eval_err(self, &format!("index {i} is outside the array")))?
                        }
                        Access::Slice(a, b) => {
                            let arr = v.as_array().ok_or_else(|| eval_err(self, "slicing a non-array"))?;
                            let lo = a.as_ref().map(|e| int(e, vars)).transpose()?.unwrap_or(0);
                            let hi = b.as_ref().map(|e| int(e, vars)).transpose()?.unwrap_or(arr.len() as i64);
                            if lo < 0 || hi < lo || hi as usize > arr.len() {
                                return Err(eval_err(self, &format!("slice {lo}..{hi} of an array of {}", arr.len())));
                            }
                            Value::Array(arr[lo as usize..hi as usize].to_vec())
                        }
                    };
                }
                Ok(v)
            }
        }
    }
}

fn index(i: i64, v: &Value, e: &Expr) -> Result<usize, TemplateError> {
    usize::try_from(i).map_err(|_| eval_err(e, &format!("negative index {i} into {v}")))
}

fn int(e: &Expr, vars: &Vars) -> Result<i64, TemplateError> {
    let v = e.eval(vars)?;
    v.as_i64().ok_or_else(|| eval_err(e, &format!("expected an integer, found {v}")))
}

fn eval_err(e: &Expr, why: &str) -> TemplateError {
    TemplateError::Eval { expr: e.to_string(), why: why.to_string() }
}

/// An expression as it is written in a spec file (`${...}` without the braces).
impl std::fmt::Display for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expr::Int(n) => write!(f, "{n}"),
            Expr::Call(func, args) => {
                let name = match func {
                    Func::Text => "text",
                    Func::Utf8 => "utf8",
                    Func::Ids => "ids",
                    Func::Min => "min",
                    Func::Max => "max",
                };
                let args: Vec<String> = args.iter().map(Expr::to_string).collect();
                write!(f, "{name}({})", args.join(", "))
            }
            Expr::Path { root, access } => {
                write!(f, "{root}")?;
                for a in access {
                    match a {
                        Access::Field(k) => write!(f, ".{k}")?,
                        Access::Index(i) => write!(f, "[{i}]")?,
                        Access::Slice(lo, hi) => {
                            let side = |e: &Option<Expr>| e.as_ref().map(Expr::to_string).unwrap_or_default();
                            write!(f, "[{}..{}]", side(lo), side(hi))?
                        }
                    }
                }
                Ok(())
            }
            Expr::Add(a, b) => write!(f, "{a} + {b}"),
            Expr::Sub(a, b) => write!(f, "{a} - {b}"),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn err(&self, why: &str) -> TemplateError {
        TemplateError::Syntax { expr: self.text.to_string(), why: format!("{why} (at {})", self.i) }
    }
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, tok: &str) -> bool {
        self.ws();
        if self.s[self.i..].starts_with(tok.as_bytes()) {
            self.i += tok.len();
            true
        } else {
            false
        }
    }
    fn expr(&mut self) -> Result<Expr, TemplateError> {
        let mut left = self.term()?;
        loop {
            if self.eat("+") {
                left = Expr::Add(Box::new(left), Box::new(self.term()?));
            } else if self.peek_minus() {
                self.i += 1;
                left = Expr::Sub(Box::new(left), Box::new(self.term()?));
            } else {
                return Ok(left);
            }
        }
    }
    fn peek_minus(&mut self) -> bool {
        self.ws();
        self.s.get(self.i) == Some(&b'-')
    }
    fn term(&mut self) -> Result<Expr, TemplateError> {
        self.ws();
        match self.s.get(self.i) {
            Some(c) if c.is_ascii_digit() => {
                let start = self.i;
                while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                    self.i += 1;
                }
                self.text[start..self.i].parse().map(Expr::Int).map_err(|_| self.err("integer too large"))
            }
            Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {
                let start = self.i;
                let name = self.ident()?;
                let func = match name.as_str() {
                    "text" => Some(Func::Text),
                    "utf8" => Some(Func::Utf8),
                    "ids" => Some(Func::Ids),
                    "min" => Some(Func::Min),
                    "max" => Some(Func::Max),
                    _ => None,
                };
                match func {
                    Some(f) if self.eat("(") => {
                        let mut args = vec![self.expr()?];
                        while self.eat(",") {
                            args.push(self.expr()?);
                        }
                        if !self.eat(")") {
                            return Err(self.err("expected `)`"));
                        }
                        if args.len() != f.arity() {
                            return Err(self.err(&format!("`{name}` takes {} argument(s)", f.arity())));
                        }
                        Ok(Expr::Call(f, args))
                    }
                    _ => {
                        self.i = start;
                        self.path()
                    }
                }
            }
            _ => Err(self.err("expected a number or a variable")),
        }
    }
    fn ident(&mut self) -> Result<String, TemplateError> {
        self.ws();
        let start = self.i;
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') {
            self.i += 1;
        }
        if start == self.i {
            return Err(self.err("expected a name"));
        }
        Ok(self.text[start..self.i].to_string())
    }
    fn path(&mut self) -> Result<Expr, TemplateError> {
        let root = self.ident()?;
        let mut access = Vec::new();
        loop {
            if self.eat(".") {
                if self.s.get(self.i) == Some(&b'.') {
                    return Err(self.err("`..` outside brackets"));
                }
                access.push(Access::Field(self.ident()?));
            } else if self.eat("[") {
                let lo = if self.eat("..") { None } else { Some(self.expr()?) };
                let acc = match lo {
                    Some(lo) if !self.eat("..") => Access::Index(lo),
                    lo => {
                        self.ws();
                        let hi = if self.s.get(self.i) == Some(&b']') { None } else { Some(self.expr()?) };
                        Access::Slice(lo, hi)
                    }
                };
                if !self.eat("]") {
                    return Err(self.err("expected `]`"));
                }
                access.push(acc);
            } else {
                return Ok(Expr::Path { root, access });
            }
        }
    }
}

/// A string split into literal text and `${expr}` parts.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    Expr(Expr),
}

pub fn split(s: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            pieces.push(Piece::Text(rest[..start].to_string()));
        }
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| TemplateError::Syntax { expr: s.to_string(), why: "`${` without a closing `}`".into() })?;
        pieces.push(Piece::Expr(Expr::parse(&rest[start + 2..start + end])?));
        rest = &rest[start + end + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    Ok(pieces)
}

/// Every expression in a JSON template, for validation.
pub fn expressions(template: &Value) -> Result<Vec<Expr>, TemplateError> {
    let mut out = Vec::new();
    visit(template, &mut |s| {
        for p in split(s)? {
            if let Piece::Expr(e) = p {
                out.push(e);
            }
        }
        Ok(())
    })?;
    Ok(out)
}

fn visit(v: &Value, f: &mut impl FnMut(&str) -> Result<(), TemplateError>) -> Result<(), TemplateError> {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().try_for_each(|x| visit(x, f)),
        Value::Object(o) => {
            for (k, x) in o {
                f(k)?;
                visit(x, f)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Substitutes every `${...}` in a JSON template.
pub fn render(template: &Value, vars: &Vars) -> Result<Value, TemplateError> {
    Ok(match template {
        Value::String(s) => render_str(s, vars)?,
        Value::Array(a) => Value::Array(a.iter().map(|x| render(x, vars)).collect::<Result<_, _>>()?),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| Ok((text_of(&render_str(k, vars)?), render(x, vars)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        other => other.clone(),
    })
}

fn render_str(s: &str, vars: &Vars) -> Result<Value, TemplateError> {
    let pieces = split(s)?;
    if let [Piece::Expr(e)] = pieces.as_slice() {
        return e.eval(vars);
    }
    let mut out = String::new();
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(&t),
            Piece::Expr(e) => out.push_str(&text_of(&e.eval(vars)?)),
        }
    }
    Ok(Value::String(out))
}

/// How a value reads inside text: strings without quotes, the rest as JSON.
pub fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars() -> Vars {
        let mut v = Vars::new();
        v.insert("phones".into(), json!(["a", "b", "c"]));
        v.insert("cap".into(), json!(2));
        v.insert("sender".into(), json!({"id": "42", "key": "k"}));
        v
    }

    #[test]
    fn whole_string_keeps_json_type() {
        assert_eq!(render(&json!("${phones[0..cap]}"), &vars()).unwrap(), json!(["a", "b"]));
        assert_eq!(render(&json!("${cap + 1}"), &vars()).unwrap(), json!(3));
        assert_eq!(render(&json!("${phones[cap - 1]}"), &vars()).unwrap(), json!("b"));
        assert_eq!(render(&json!("${phones[1..]}"), &vars()).unwrap(), json!(["b", "c"]));
    }

    #[test]
    fn interpolation_and_fields() {
        assert_eq!(render(&json!("key=${sender.key}"), &vars()).unwrap(), json!("key=k"));
        assert_eq!(render(&json!({"n": "${cap}x"}), &vars()).unwrap(), json!({"n": "2x"}));
    }

    #[test]
    fn functions_and_concatenation() {
        assert_eq!(render(&json!("${text(3)}"), &vars()).unwrap(), json!("xxx"));
        assert_eq!(
            render(&json!("${phones[0..1] + ids(cap)}"), &vars()).unwrap(),
            json!(["a", "not-a-registration-id-0", "not-a-registration-id-1"])
        );
        assert!(render(&json!("${text(9999999999)}"), &vars()).is_err());
        let multibyte = render(&json!("${utf8(5)}"), &vars()).unwrap();
        assert_eq!(
            (multibyte.as_str().map(str::len), multibyte.as_str().map(|s| s.chars().count())),
            (Some(5), Some(3))
        );
        assert_eq!(render(&json!("${min(cap, 7)}"), &vars()).unwrap(), json!(2));
        assert_eq!(render(&json!("${max(cap + 3, 1)}"), &vars()).unwrap(), json!(5));
        assert!(Expr::parse("min(1)").is_err());
        // `text` without parentheses is an ordinary variable name.
        assert_eq!(Expr::parse("text").unwrap(), Expr::Path { root: "text".into(), access: vec![] });
    }

    #[test]
    fn errors_are_explained() {
        assert_eq!(render(&json!("${nope}"), &vars()), Err(TemplateError::Unknown("nope".into())));
        assert!(matches!(render(&json!("${phones[9]}"), &vars()), Err(TemplateError::Eval { .. })));
        assert!(matches!(Expr::parse("a +"), Err(TemplateError::Syntax { .. })));
        assert!(split("${unclosed").is_err());
    }

    #[test]
    fn an_expression_prints_as_it_is_written() {
        for text in ["phones[0]", "a.b[1..]", "xs[..n - 1]", "min(max_members, 3) + 2", "utf8(max_payload_bytes)"] {
            let e = Expr::parse(text).unwrap();
            assert_eq!(Expr::parse(&e.to_string()).unwrap(), e, "{text} printed as {e}");
        }
        assert_eq!(Expr::parse("throttle_initial_tokens").unwrap().to_string(), "throttle_initial_tokens");
    }
}
