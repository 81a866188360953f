//! The XMPP wire format of the connection server (CCS), shared by the reference's XMPP
//! adapter and the harness's XMPP client: an incremental stanza parser, escaping, and the
//! `<gcm xmlns="google:mobile:data">` envelope.
//!
//! Only what CCS uses: one stream root, elements with attributes, text (with the five
//! named entities and character references), no DTDs or processing instructions beyond the
//! XML declaration. Anything else is reported as malformed.

use std::fmt::Write as _;

pub const GCM_NS: &str = "google:mobile:data";
pub const SASL_NS: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const BIND_NS: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const SESSION_NS: &str = "urn:ietf:params:xml:ns:xmpp-session";
pub const STANZAS_NS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const STREAMS_NS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// The domain in `<sender id>@gcm.googleapis.com`.
pub const DOMAIN: &str = "gcm.googleapis.com";
/// Bytes a single stanza may take before the stream is refused.
pub const MAX_STANZA_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Child>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Child {
    Element(Element),
    Text(String),
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find_map(|c| match c {
            Child::Element(e) if e.name == name => Some(e),
            _ => None,
        })
    }

    /// All text directly inside this element.
    pub fn text(&self) -> String {
        self.children
            .iter()
            .filter_map(|c| match c {
                Child::Text(t) => Some(t.as_str()),
                Child::Element(_) => None,
            })
            .collect()
    }

    /// The JSON of a `<gcm xmlns="google:mobile:data">` child, as text.
    pub fn gcm_payload(&self) -> Option<String> {
        self.child("gcm").filter(|g| g.attr("xmlns") == Some(GCM_NS)).map(Element::text)
    }
}

/// What the stream yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `<stream:stream ...>`, with its attributes.
    StreamOpen(Vec<(String, String)>),
    StreamClose,
    Stanza(Element),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed XML: {0}")]
pub struct Malformed(pub String);

/// Splits a byte stream into events as the bytes arrive.
#[derive(Debug, Default)]
pub struct StreamParser {
    buf: String,
    pending: Vec<u8>,
}

enum Parse<T> {
    Done(T, usize),
    Incomplete,
}

impl StreamParser {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        // Keep an incomplete UTF-8 sequence for the next read.
        match std::str::from_utf8(&self.pending) {
            Ok(s) => {
                self.buf.push_str(s);
                self.pending.clear();
            }
            Err(e) => {
                let valid = e.valid_up_to();
                self.buf.push_str(std::str::from_utf8(&self.pending[..valid]).expect("checked"));
                self.pending.drain(..valid);
                if e.error_len().is_some() {
                    // Not UTF-8 at all: let the parser report it.
                    self.buf.push('\u{FFFD}');
                    self.pending.clear();
                }
            }
        }
    }

    /// The next complete event, `Ok(None)` if more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<Event>, Malformed> {
        loop {
            let trimmed = self.buf.trim_start();
            let skipped = self.buf.len() - trimmed.len();
            self.buf.drain(..skipped);
            if self.buf.is_empty() {
                return Ok(None);
            }
            if self.buf.len() > MAX_STANZA_BYTES {
                return Err(Malformed(format!("a stanza longer than {MAX_STANZA_BYTES} bytes")));
            }
            if self.buf.starts_with("<?") {
                let Some(end) = self.buf.find("?>") else { return Ok(None) };
                self.buf.drain(..end + 2);
                continue;
            }
            if self.buf.starts_with("</") {
                const CLOSE: &str = "</stream:stream";
                if CLOSE.starts_with(self.buf.as_str()) {
                    return Ok(None);
                }
                if !self.buf.starts_with(CLOSE) {
                    return Err(Malformed("a closing tag outside any stanza".into()));
                }
                let Some(end) = self.buf.find('>') else { return Ok(None) };
                self.buf.drain(..end + 1);
                return Ok(Some(Event::StreamClose));
            }
            if !self.buf.starts_with('<') {
                return Err(Malformed("text outside any stanza".into()));
            }
            match parse_start(&self.buf, 0)? {
                Parse::Incomplete => return Ok(None),
                Parse::Done((name, attrs, empty), end) if name == "stream:stream" && !empty => {
                    self.buf.drain(..end);
                    return Ok(Some(Event::StreamOpen(attrs)));
                }
                Parse::Done(..) => match parse_element(&self.buf, 0)? {
                    Parse::Incomplete => return Ok(None),
                    Parse::Done(element, end) => {
                        self.buf.drain(..end);
                        return Ok(Some(Event::Stanza(element)));
                    }
                },
            }
        }
    }
}

type Start = (String, Vec<(String, String)>, bool);

/// `<name a="b" ...>` or `<name .../>` at `at`.
fn parse_start(s: &str, at: usize) -> Result<Parse<Start>, Malformed> {
    let b = s.as_bytes();
    let mut i = at + 1;
    let name_start = i;
    while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' && b[i] != b'/' {
        i += 1;
    }
    if i >= b.len() {
        return Ok(Parse::Incomplete);
    }
    let name = &s[name_start..i];
    if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || ":_-.".contains(c)) {
        return Err(Malformed(format!("bad element name {name:?}")));
    }
    let mut attrs = Vec::new();
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        match b.get(i) {
            None => return Ok(Parse::Incomplete),
            Some(b'>') => return Ok(Parse::Done((name.to_string(), attrs, false), i + 1)),
            Some(b'/') => {
                return match b.get(i + 1) {
                    None => Ok(Parse::Incomplete),
                    Some(b'>') => Ok(Parse::Done((name.to_string(), attrs, true), i + 2)),
                    Some(_) => Err(Malformed(format!("`/` inside <{name}>"))),
                };
            }
            Some(_) => {
                let key_start = i;
                while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                    i += 1;
                }
                let key = &s[key_start..i];
                while i < b.len() && b[i].is_ascii_whitespace() {
                    i += 1;
                }
                match b.get(i) {
                    None => return Ok(Parse::Incomplete),
                    Some(b'=') => i += 1,
                    Some(_) => return Err(Malformed(format!("attribute {key:?} of <{name}> has no value"))),
                }
                while i < b.len() && b[i].is_ascii_whitespace() {
                    i += 1;
                }
                let quote = match b.get(i) {
                    None => return Ok(Parse::Incomplete),
                    Some(q @ (b'"' | b'\'')) => *q,
                    Some(_) => return Err(Malformed(format!("attribute {key:?} of <{name}> is not quoted"))),
                };
                let value_start = i + 1;
                let Some(len) = b[value_start..].iter().position(|c| *c == quote) else { return Ok(Parse::Incomplete) };
                attrs.push((key.to_string(), unescape(&s[value_start..value_start + len])?));
                i = value_start + len + 1;
            }
        }
    }
}

/// A whole element at `at`, children included.
fn parse_element(s: &str, at: usize) -> Result<Parse<Element>, Malformed> {
    let (name, attrs, empty, mut i) = match parse_start(s, at)? {
        Parse::Incomplete => return Ok(Parse::Incomplete),
        Parse::Done((n, a, e), end) => (n, a, e, end),
    };
    let mut element = Element { name, attrs, children: Vec::new() };
    if empty {
        return Ok(Parse::Done(element, i));
    }
    loop {
        let rest = &s[i..];
        if rest.is_empty() {
            return Ok(Parse::Incomplete);
        }
        if let Some(after) = rest.strip_prefix("</") {
            let Some(end) = after.find('>') else { return Ok(Parse::Incomplete) };
            let closing = after[..end].trim();
            if closing != element.name {
                return Err(Malformed(format!("</{closing}> closes <{}>", element.name)));
            }
            return Ok(Parse::Done(element, i + 2 + end + 1));
        }
        if rest.starts_with("<![CDATA[") {
            let Some(end) = rest.find("]]>") else { return Ok(Parse::Incomplete) };
            element.children.push(Child::Text(rest[9..end].to_string()));
            i += end + 3;
        } else if rest.starts_with("<!--") {
            let Some(end) = rest.find("-->") else { return Ok(Parse::Incomplete) };
            i += end + 3;
        } else if rest.starts_with('<') {
            match parse_element(s, i)? {
                Parse::Incomplete => return Ok(Parse::Incomplete),
                Parse::Done(child, end) => {
                    element.children.push(Child::Element(child));
                    i = end;
                }
            }
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            if end == rest.len() {
                return Ok(Parse::Incomplete);
            }
            element.children.push(Child::Text(unescape(&rest[..end])?));
            i += end;
        }
    }
}

fn unescape(s: &str) -> Result<String, Malformed> {
    if !s.contains('&') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let end = after.find(';').ok_or_else(|| Malformed(format!("unterminated entity in {s:?}")))?;
        let entity = &after[..end];
        let ch = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else {
                    entity.strip_prefix('#').and_then(|d| d.parse().ok())
                };
                code.and_then(char::from_u32).ok_or_else(|| Malformed(format!("unknown entity &{entity};")))?
            }
        };
        out.push(ch);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Escapes text or an attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes element text: quotes may stay, so JSON reads as JSON on the wire.
pub fn escape_text(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// `<message id=".."><gcm xmlns="google:mobile:data">JSON</gcm></message>`.
pub fn gcm_message(id: &str, json: &str) -> String {
    let mut s = String::new();
    let _ = write!(s, "<message id=\"{}\"><gcm xmlns=\"{GCM_NS}\">{}</gcm></message>", escape(id), escape_text(json));
    s
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard, padded base64 (SASL).
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = B64.iter().position(|b| *b == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(input: &str, chunk: usize) -> Vec<Event> {
        let mut p = StreamParser::default();
        let mut out = Vec::new();
        for piece in input.as_bytes().chunks(chunk) {
            p.feed(piece);
            while let Some(e) = p.next_event().unwrap() {
                out.push(e);
            }
        }
        out
    }

    #[test]
    fn a_stream_in_pieces_of_any_size() {
        let input = "<?xml version='1.0'?><stream:stream to=\"gcm.googleapis.com\" version=\"1.0\">\
                     <auth mechanism=\"PLAIN\" xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\">AGEAYg==</auth> \
                     <message id=\"m1\"><gcm xmlns=\"google:mobile:data\">{&quot;to&quot;:&quot;x&amp;y&quot;, \"n\": \"é\"}</gcm></message>\
                     </stream:stream>";
        for chunk in [1, 2, 7, input.len()] {
            let ev = events(input, chunk);
            assert_eq!(ev.len(), 4, "chunk {chunk}: {ev:?}");
            assert!(matches!(&ev[0], Event::StreamOpen(a) if a[0] == ("to".into(), "gcm.googleapis.com".into())));
            let Event::Stanza(m) = &ev[2] else { panic!("{ev:?}") };
            assert_eq!(m.gcm_payload().unwrap(), "{\"to\":\"x&y\", \"n\": \"é\"}");
            assert_eq!(ev[3], Event::StreamClose);
        }
    }

    #[test]
    fn malformed_input_is_reported() {
        let mut p = StreamParser::default();
        p.feed(b"<message><gcm></message>");
        assert!(p.next_event().is_err());
        let mut p = StreamParser::default();
        p.feed(b"hello");
        assert!(p.next_event().is_err());
    }

    #[test]
    fn escaping_round_trips() {
        let json = r#"{"a":"<b> & 'c'"}"#;
        let mut p = StreamParser::default();
        p.feed(gcm_message("i\"d", json).as_bytes());
        let Some(Event::Stanza(m)) = p.next_event().unwrap() else { panic!() };
        assert_eq!(m.attr("id"), Some("i\"d"));
        assert_eq!(m.gcm_payload().as_deref(), Some(json));
    }

    #[test]
    fn base64_round_trips() {
        for s in ["", "a", "ab", "abc", "\x00123@gcm.googleapis.com\x00AIzaKEY"] {
            assert_eq!(base64_decode(&base64_encode(s.as_bytes())).unwrap(), s.as_bytes());
        }
        assert_eq!(base64_encode(b"\0a\0b"), "AGEAYg==");
    }
}
