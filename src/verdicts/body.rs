//! A send's body as the graders read it ([`SendFields`]): its targets, time to live, collapse
//! key, payload size, reserved keys, and the fingerprint that tells one message from another.
//!
//! Read two ways that agree field for field (the tests below hold them to it over generated
//! bodies): from a parsed JSON object ([`SendFields::of`]: an entry read again, an XMPP
//! stanza, a plain-text form put in JSON's shape), and straight from a JSON body's bytes
//! ([`SendFields::read`]), as the grader's thread reads each send. Building the whole
//! `serde_json::Value` of a send only to read a dozen fields of it, and dropping it again, was
//! a fifth of that thread's time; read from the bytes, a flat `data` object's strings are
//! borrowed, and only values that are not strings are parsed into values.
//!
//! (Past 600 lines with its tests: the property that holds the two readings equal needs a
//! generator of bodies and their spellings, kept beside what it checks.)

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::events::Ttl;
use crate::wire::{data_entry_bytes, given, is_reserved_data_key};

/// Parts of a message [`super::events::Sent::parts`] keeps: enough to tell messages apart, few
/// enough that every failure a grader holds stays small.
pub const PARTS: usize = 16;

/// Everything a [`super::events::Sent`] takes from the send's body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SendFields {
    pub to: Option<String>,
    /// Whether `to` was given (not null), a string or not.
    #[serde(default)]
    pub to_given: bool,
    /// `registration_ids` (its strings), when given.
    pub ids: Option<Vec<String>>,
    /// How many entries `registration_ids` had, strings or not, when it was an array.
    pub ids_len: Option<usize>,
    /// Whether `registration_ids` was given (not null), an array or not.
    #[serde(default)]
    pub ids_given: bool,
    pub ttl: Option<Ttl>,
    pub collapse_key: Option<String>,
    pub payload_bytes: usize,
    /// `data` keys the service reserves.
    pub reserved: Vec<String>,
    /// What makes two sends the same message: data, notification and collapse key.
    pub fingerprint: u64,
    /// The same, part by part (each data key with its value, the notification, the collapse
    /// key; at most [`PARTS`]): what tells a retry that adds or changes a field (an attempt
    /// counter, a timestamp) from another message. See [`super::events::Sent::like`].
    #[serde(default)]
    pub parts: Vec<u64>,
    pub dry_run: bool,
    /// XMPP: the app server's id for it.
    pub message_id: Option<String>,
}

impl SendFields {
    /// Read from a parsed body.
    pub fn of(body: &Map<String, Value>) -> SendFields {
        let collapse_key = body.get("collapse_key").and_then(Value::as_str).map(str::to_string);
        let data = body.get("data").and_then(Value::as_object).map(|d| {
            let entries = d.iter().map(|(k, v)| {
                (
                    k.as_str(),
                    match v {
                        Value::String(s) => Datum::Text(s),
                        v => Datum::Value(v),
                    },
                )
            });
            (d.len(), entries)
        });
        let content = Content::of(data, body.get("notification"), collapse_key.as_deref());
        let registration_ids = body.get("registration_ids");
        SendFields {
            to: body.get("to").and_then(Value::as_str).map(str::to_string),
            to_given: given(body, "to").is_some(),
            ids: registration_ids
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()),
            ids_len: registration_ids.and_then(Value::as_array).map(Vec::len),
            ids_given: given(body, "registration_ids").is_some(),
            ttl: given(body, "time_to_live").map(ttl_of),
            payload_bytes: content.payload_bytes,
            reserved: content.reserved,
            fingerprint: content.fingerprint,
            parts: content.parts,
            collapse_key,
            dry_run: body.get("dry_run") == Some(&Value::Bool(true)),
            message_id: body.get("message_id").and_then(Value::as_str).map(str::to_string),
        }
    }

    /// Read from a JSON body's bytes, for a body the adapter parsed as an object (each field
    /// read as serde_json's own value reading reads it: strings borrowed, other values made as
    /// values); `None` for a body that is no JSON object. A field it reads past is checked
    /// less strictly than a parse checks it (a lone surrogate escape passes), which is why it
    /// reads only what a parse took.
    pub fn read(json: &[u8]) -> Option<SendFields> {
        let top: Top<'_> = serde_json::from_slice(json).ok()?;
        let collapse_key = top.collapse_key.and_then(Read::text);
        let data = match &top.data {
            Some(Read::Entries(d)) => Some((d.len(), d.iter().map(|(k, v)| (k.0.as_ref(), Datum::from(v))))),
            _ => None,
        };
        let content = Content::of(data, top.notification.as_ref(), collapse_key.as_deref());
        let ids_given = Read::given(&top.registration_ids);
        let ids = match top.registration_ids {
            Some(Read::Strings { strings, len }) => Some((strings, len)),
            _ => None,
        };
        Some(SendFields {
            to_given: Read::given(&top.to),
            to: top.to.and_then(Read::text),
            ids_len: ids.as_ref().map(|(_, len)| *len),
            ids: ids.map(|(strings, _)| strings),
            ids_given,
            ttl: top.time_to_live.filter(|v| !v.is_null()).as_ref().map(ttl_of),
            collapse_key,
            payload_bytes: content.payload_bytes,
            reserved: content.reserved,
            fingerprint: content.fingerprint,
            parts: content.parts,
            dry_run: top.dry_run == Some(Value::Bool(true)),
            message_id: top.message_id.and_then(Read::text),
        })
    }

    /// A send to `registration_ids` and not `to` (a field given as null is absent, as the
    /// reference takes it).
    pub fn multicast(&self) -> bool {
        self.ids_given && !self.to_given
    }
}

/// 60.0 is a whole number of seconds too, as the reference takes it.
fn ttl_of(v: &Value) -> Ttl {
    match crate::wire::whole_number(v) {
        Some(n) => Ttl::Whole(n),
        None => Ttl::Other(v.to_string()),
    }
}

/// A `data` value as both readings hold it: a string's text, or any other value.
#[derive(Clone, Copy)]
enum Datum<'v> {
    Text(&'v str),
    Value(&'v Value),
}

impl<'v> From<&'v DataValue<'_>> for Datum<'v> {
    fn from(v: &'v DataValue<'_>) -> Datum<'v> {
        match v {
            DataValue::Text(s) => Datum::Text(s),
            DataValue::Value(v) => Datum::Value(v),
        }
    }
}

impl Datum<'_> {
    /// Hashed as [`hash_value`] hashes the value (a string without making a value of it).
    fn hash(self, h: &mut impl Hasher) {
        match self {
            Datum::Text(s) => (4u8, s).hash(h),
            Datum::Value(v) => hash_value(v, h),
        }
    }

    /// Its entry's part of the payload, as the reference counts it.
    fn bytes(self, key: &str) -> usize {
        match self {
            Datum::Text(s) => data_entry_bytes(key, Some(s), || s.len()),
            Datum::Value(v) => data_entry_bytes(key, v.as_str(), || v.to_string().len()),
        }
    }
}

/// What a message's content makes of a send: its fingerprint and parts, its payload's bytes
/// and the reserved keys of its `data`. One walk for both readings, over `data`'s entries in
/// key order (with their number), the notification and the collapse key.
struct Content {
    fingerprint: u64,
    parts: Vec<u64>,
    payload_bytes: usize,
    reserved: Vec<String>,
}

impl Content {
    fn of<'v, I>(data: Option<(usize, I)>, notification: Option<&Value>, collapse_key: Option<&str>) -> Content
    where
        I: Iterator<Item = (&'v str, Datum<'v>)> + Clone,
    {
        let mut fingerprint = std::hash::DefaultHasher::new();
        let mut parts = Parts::new(notification, collapse_key);
        let (mut payload_bytes, mut reserved) = (0, Vec::new());
        match data {
            // As `hash_value` hashes an object: its length, its keys, then its values.
            Some((len, entries)) => {
                (6u8, len).hash(&mut fingerprint);
                entries.clone().for_each(|(k, _)| k.hash(&mut fingerprint));
                for (k, v) in entries {
                    v.hash(&mut fingerprint);
                    parts.push(k, |h| v.hash(h));
                    payload_bytes += v.bytes(k);
                    if is_reserved_data_key(k) {
                        reserved.push(k.to_string());
                    }
                }
            }
            None => 0u8.hash(&mut fingerprint),
        }
        match notification {
            Some(v) => hash_value(v, &mut fingerprint),
            None => 0u8.hash(&mut fingerprint),
        }
        collapse_key.hash(&mut fingerprint);
        Content { fingerprint: fingerprint.finish(), parts: parts.out, payload_bytes, reserved }
    }
}

/// A message's parts, each hashed on its own: the notification, the collapse key, then each
/// `data` key with its value, at most [`PARTS`].
struct Parts {
    out: Vec<u64>,
}

impl Parts {
    fn new(notification: Option<&Value>, collapse_key: Option<&str>) -> Parts {
        let mut parts = Parts { out: Vec::new() };
        if let Some(n) = notification {
            parts.push("\0notification", |h| hash_value(n, h));
        }
        if let Some(k) = collapse_key {
            let mut h = std::hash::DefaultHasher::new();
            "\0collapse_key".hash(&mut h);
            Some(k).hash(&mut h);
            parts.out.push(h.finish());
        }
        parts
    }

    fn push(&mut self, name: &str, value: impl FnOnce(&mut std::hash::DefaultHasher)) {
        if self.out.len() < PARTS {
            let mut h = std::hash::DefaultHasher::new();
            name.hash(&mut h);
            value(&mut h);
            None::<&str>.hash(&mut h);
            self.out.push(h.finish());
        }
    }
}

/// Hashes a JSON value by what it is, without printing it (serde_json keeps an object's keys
/// sorted, so equal values hash alike). Nesting is walked with a stack: no recursion on what a
/// client sent.
pub(crate) fn hash_value(v: &Value, h: &mut impl Hasher) {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Null => 1u8.hash(h),
            Value::Bool(b) => (2u8, b).hash(h),
            Value::Number(n) => (3u8, n.as_f64().map(f64::to_bits), n.as_i64()).hash(h),
            Value::String(s) => (4u8, s).hash(h),
            Value::Array(a) => {
                (5u8, a.len()).hash(h);
                stack.extend(a.iter().rev());
            }
            Value::Object(o) => {
                (6u8, o.len()).hash(h);
                for (k, _) in o {
                    k.hash(h);
                }
                stack.extend(o.values().rev());
            }
        }
    }
}

/// An object's key, borrowed from the body unless it has escapes (ordered as a `String`, as
/// serde_json's map orders its keys).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(Text)
    }
}

/// The fields of a send's body the graders read; any other field is read past. A field
/// given twice is read as given last, as serde_json's map keeps it.
#[derive(Default)]
struct Top<'a> {
    to: Option<Read<'a>>,
    registration_ids: Option<Read<'a>>,
    data: Option<Read<'a>>,
    /// As given, `null` too (the fingerprint tells a null notification from none).
    notification: Option<Value>,
    collapse_key: Option<Read<'a>>,
    time_to_live: Option<Value>,
    dry_run: Option<Value>,
    message_id: Option<Read<'a>>,
}

impl<'de> Deserialize<'de> for Top<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Top<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'de>, A::Error> {
                let mut top = Top::default();
                let read = |want| Reading(want);
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    match key.0.as_ref() {
                        "to" => top.to = Some(map.next_value_seed(read(Want::Text))?),
                        "registration_ids" => top.registration_ids = Some(map.next_value_seed(read(Want::Strings))?),
                        "data" => top.data = Some(map.next_value_seed(read(Want::Entries))?),
                        "notification" => top.notification = Some(map.next_value()?),
                        "collapse_key" => top.collapse_key = Some(map.next_value_seed(read(Want::Text))?),
                        "time_to_live" => top.time_to_live = Some(map.next_value()?),
                        "dry_run" => top.dry_run = Some(map.next_value()?),
                        "message_id" => top.message_id = Some(map.next_value_seed(read(Want::Text))?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(top)
            }
        }
        d.deserialize_map(Fields)
    }
}

/// What the graders read of a field's value: its text if it is a string, its strings if it
/// is an array, its entries if it is an object. Anything else is read past (and checked).
#[derive(Clone, Copy, PartialEq)]
enum Want {
    Text,
    Strings,
    Entries,
}

/// A field's value as read for what was wanted of it.
enum Read<'a> {
    Null,
    /// A string (borrowed unless it has escapes).
    Text(Cow<'a, str>),
    /// An array: its strings, and how many entries it had.
    Strings {
        strings: Vec<String>,
        len: usize,
    },
    /// An object's entries by key, sorted as serde_json's map keeps them.
    Entries(BTreeMap<Key<'a>, DataValue<'a>>),
    /// Not null, and not what was wanted.
    Other,
}

impl Read<'_> {
    fn given(read: &Option<Read>) -> bool {
        read.as_ref().is_some_and(|r| !matches!(r, Read::Null))
    }

    fn text(self) -> Option<String> {
        match self {
            Read::Text(t) => Some(t.into_owned()),
            _ => None,
        }
    }
}

/// Reads one value for what is wanted of it.
struct Reading(Want);

impl<'de> DeserializeSeed<'de> for Reading {
    type Value = Read<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Read<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Reading {
    type Value = Read<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Read<'de>, E> {
        Ok(Read::Null)
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Read<'de>, E> {
        Ok(if self.0 == Want::Text { Read::Text(Cow::Borrowed(s)) } else { Read::Other })
    }
    fn visit_str<E>(self, s: &str) -> Result<Read<'de>, E> {
        Ok(if self.0 == Want::Text { Read::Text(Cow::Owned(s.to_string())) } else { Read::Other })
    }
    fn visit_bool<E>(self, _: bool) -> Result<Read<'de>, E> {
        Ok(Read::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Read<'de>, E> {
        Ok(Read::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Read<'de>, E> {
        Ok(Read::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Read<'de>, E> {
        Ok(Read::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Read<'de>, A::Error> {
        if self.0 != Want::Strings {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Read::Other);
        }
        let (mut strings, mut len) = (Vec::new(), 0);
        while let Some(entry) = seq.next_element_seed(Reading(Want::Text))? {
            len += 1;
            strings.extend(entry.text());
        }
        Ok(Read::Strings { strings, len })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Read<'de>, A::Error> {
        if self.0 != Want::Entries {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(Read::Other);
        }
        let mut entries = BTreeMap::new();
        while let Some((k, v)) = map.next_entry::<Key<'de>, DataValue<'de>>()? {
            entries.insert(k, v);
        }
        Ok(Read::Entries(entries))
    }
}

/// A `data` value: a string, or any other value, made as serde_json makes it.
enum DataValue<'a> {
    Text(Cow<'a, str>),
    Value(Value),
}

impl<'de> Deserialize<'de> for DataValue<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DataValue<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<DataValue<'de>, E> {
                Ok(DataValue::Text(Cow::Borrowed(s)))
            }
            fn visit_string<E>(self, s: String) -> Result<DataValue<'de>, E> {
                Ok(DataValue::Text(Cow::Owned(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<DataValue<'de>, E> {
                Ok(DataValue::Text(Cow::Owned(s.to_string())))
            }
            fn visit_unit<E>(self) -> Result<DataValue<'de>, E> {
                Ok(DataValue::Value(Value::Null))
            }
            fn visit_bool<E>(self, b: bool) -> Result<DataValue<'de>, E> {
                Ok(DataValue::Value(Value::Bool(b)))
            }
            fn visit_i64<E>(self, n: i64) -> Result<DataValue<'de>, E> {
                Ok(DataValue::Value(Value::from(n)))
            }
            fn visit_u64<E>(self, n: u64) -> Result<DataValue<'de>, E> {
                Ok(DataValue::Value(Value::from(n)))
            }
            fn visit_f64<E>(self, n: f64) -> Result<DataValue<'de>, E> {
                Ok(DataValue::Value(Value::from(n)))
            }
            // Containers, as serde_json's own value reading makes them.
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<DataValue<'de>, A::Error> {
                Value::deserialize(SeqAccessDeserializer::new(seq)).map(DataValue::Value)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<DataValue<'de>, A::Error> {
                Value::deserialize(MapAccessDeserializer::new(map)).map(DataValue::Value)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::SendFields;

    /// Both readings of one body's text; `None` when it is not a JSON object.
    fn both(text: &str) -> Option<(SendFields, Option<SendFields>)> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(body)) => Some((SendFields::of(&body), SendFields::read(text.as_bytes()))),
            _ => None,
        }
    }

    #[test]
    fn tricky_bodies_read_alike_both_ways() {
        for text in [
            r#"{"to":"a","data":{"score":"5x1","time":"15:10"}}"#,
            r#" { "to" : "a" , "data" : { "b" : 1 , "a" : [1, {"z": null, "y": 2.5}] } } "#,
            r#"{"t\u006f":"\u0061b","data":{"k\u00e9y":"v\"\\\n","google.x":"1","from":2}}"#,
            r#"{"to":"a","to":null,"registration_ids":["x",1,null,"y"],"data":{"a":"1","a":"2"}}"#,
            r#"{"to":null,"registration_ids":null,"data":null,"notification":null,"collapse_key":null}"#,
            r#"{"registration_ids":"x","data":"text","notification":{"title":"t"},"collapse_key":7}"#,
            r#"{"time_to_live":60.0,"dry_run":true,"message_id":"m"}"#,
            r#"{"time_to_live":"60","dry_run":1,"message_id":5}"#,
            r#"{"time_to_live":1e20,"collapse_key":"c","data":{}}"#,
            r#"{"time_to_live":-0,"other":{"deep":[[[[1]]]]},"data":{"n":-1.5e-3,"t":true}}"#,
            r#"{}"#,
        ] {
            let (of, read) = both(text).expect("an object");
            assert_eq!(read.as_ref(), Some(&of), "{text}");
        }
        assert!(SendFields::read(b"[1]").is_none());
        assert!(SendFields::read(b"{\"to\":\"a\"} x").is_none());
    }

    /// A JSON text for `v`, with its keys' letters sometimes written as `\u` escapes and
    /// whitespace sometimes around its tokens.
    fn render(v: &Value, escape: &mut impl Iterator<Item = bool>, out: &mut String) {
        let mut stack = vec![Ok(v)];
        while let Some(item) = stack.pop() {
            let v = match item {
                Err(text) => {
                    out.push_str(text);
                    continue;
                }
                Ok(v) => v,
            };
            let space = if escape.next().unwrap_or(false) { " " } else { "" };
            match v {
                Value::Object(o) => {
                    out.push('{');
                    stack.push(Err("}"));
                    let pairs: Vec<_> = o.iter().collect();
                    for (i, (k, v)) in pairs.into_iter().enumerate().rev() {
                        stack.push(Ok(v));
                        let mut key = String::from(if i > 0 { "," } else { "" });
                        key.push_str(space);
                        key.push('"');
                        for c in k.chars() {
                            match c {
                                c if c.is_ascii_alphanumeric() && escape.next().unwrap_or(false) => {
                                    key.push_str(&format!("\\u{:04x}", c as u32))
                                }
                                c => key.push_str(serde_json::to_string(&c.to_string()).unwrap().trim_matches('"')),
                            }
                        }
                        key.push_str("\":");
                        key.push_str(space);
                        stack.push(Err(Box::leak(key.into_boxed_str())));
                    }
                }
                Value::Array(a) => {
                    out.push('[');
                    stack.push(Err("]"));
                    for (i, v) in a.iter().enumerate().rev() {
                        stack.push(Ok(v));
                        if i > 0 {
                            stack.push(Err(","));
                        }
                    }
                }
                v => out.push_str(&serde_json::to_string(v).unwrap()),
            }
        }
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            proptest::sample::select(vec![60.0, 60.5, -0.0, 1e20, 2419200.0, 9.5e15]).prop_map(Value::from),
            "[a-z\"\\\\\u{e9}\u{1F600}\n ]{0,8}".prop_map(Value::from),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{1,3}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    const FIELDS: &[&str] = &[
        "to",
        "registration_ids",
        "data",
        "notification",
        "collapse_key",
        "time_to_live",
        "dry_run",
        "message_id",
        "priority",
    ];

    fn body() -> impl Strategy<Value = Value> {
        let data_key = prop_oneof![
            "[a-z]{1,6}",
            proptest::sample::select(vec!["from", "message_type", "google.c", "gcm.n", "googlex"])
                .prop_map(String::from),
        ];
        let data = proptest::collection::btree_map(
            data_key,
            prop_oneof![3 => "[a-z0-9]{0,6}".prop_map(Value::from), 1 => value()],
            0..20,
        )
        .prop_map(|m| Value::Object(m.into_iter().collect()));
        let ids = proptest::collection::vec(prop_oneof![4 => "[a-z]{1,4}".prop_map(Value::from), 1 => leaf()], 0..5)
            .prop_map(Value::Array);
        let field = (
            proptest::sample::select(FIELDS),
            prop_oneof![2 => value(), 2 => data, 1 => ids, 1 => "[a-z]{1,4}".prop_map(Value::from)],
        );
        proptest::collection::vec(field, 0..8)
            .prop_map(|fields| Value::Object(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
    }

    proptest! {
        // Seeded: the same bodies every run (a failure found is found again).
        #![proptest_config(ProptestConfig {
            cases: 1000,
            failure_persistence: None,
            rng_seed: proptest::test_runner::RngSeed::Fixed(19),
            ..Default::default()
        })]

        /// Whatever a body holds and however its text spells it, its fields read from the
        /// bytes are the fields read from its parse.
        #[test]
        fn a_body_read_from_its_bytes_reads_as_its_parse(body in body(), escapes in proptest::collection::vec(any::<bool>(), 0..64), twice in any::<bool>()) {
            let mut text = String::new();
            render(&body, &mut escapes.iter().copied().cycle(), &mut text);
            if twice {
                // Every field given twice: the second one counts, both ways.
                let inner = text[1..text.len() - 1].to_string();
                if !inner.is_empty() {
                    text = format!("{{{inner},{inner}}}");
                }
            }
            let (of, read) = both(&text).expect("an object");
            prop_assert_eq!(read, Some(of), "{}", text);
        }
    }
}
