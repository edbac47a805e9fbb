//! Lenient JSON leaf types for reading webhook payloads.
//!
//! Meta's payloads (and the SDK fixtures they are documented by) disagree on
//! types: ids and timestamps arrive as strings or numbers, fields are `null`,
//! nested objects may be missing. The typed views in `views.rs` are built only
//! from these types, so a field of an unexpected type reads as "absent"
//! instead of failing the whole item.
//!
//! Invariants:
//! - Every visitor here accepts every JSON value; a wrong type yields the
//!   empty value, never an error. The only errors left are those serde itself
//!   raises (duplicate keys in a derived struct, nesting deeper than
//!   serde_json's recursion limit), which the caller turns into an invalid
//!   item rather than a rejected delivery.
//! - Values that are not used are drained (serde_json requires it), never
//!   buffered: work stays linear in the input.
//! - Strings borrow from the body when they contain no escapes.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

pub(crate) fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

pub(crate) fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Implements the listed visitor methods so that they yield `$empty`
/// (draining containers): the "wrong type reads as absent" rule.
macro_rules! absent_for {
    ($empty:expr; $($kind:ident),*) => { $(absent_for!(@gen $empty; $kind);)* };
    (@gen $empty:expr; bool) => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> { Ok($empty) }
    };
    (@gen $empty:expr; i64) => {
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> { Ok($empty) }
    };
    (@gen $empty:expr; u64) => {
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> { Ok($empty) }
    };
    (@gen $empty:expr; f64) => {
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> { Ok($empty) }
    };
    (@gen $empty:expr; str) => {
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> { Ok($empty) }
    };
    (@gen $empty:expr; unit) => {
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> { Ok($empty) }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> { Ok($empty) }
    };
    (@gen $empty:expr; seq) => {
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            $crate::whatsapp::lenient::drain_seq(seq)?;
            Ok($empty)
        }
    };
    (@gen $empty:expr; map) => {
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            $crate::whatsapp::lenient::drain_map(map)?;
            Ok($empty)
        }
    };
}

/// A string-ish leaf: a JSON string (borrowed when unescaped) or a number
/// (rendered as text, so numeric ids read like string ids). Anything else,
/// including `null`, is absent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Str<'a>(pub Option<Cow<'a, str>>);

impl<'a> Str<'a> {
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// The value, with the empty string counted as absent.
    pub fn non_empty(&self) -> Option<&str> {
        self.get().filter(|s| !s.is_empty())
    }

    pub fn owned(&self) -> Option<String> {
        self.get().map(str::to_owned)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Some(Cow::Owned(v))))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Str(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Str(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Str(Some(Cow::Owned(v.to_string()))))
            }
            absent_for!(Str(None); bool, unit, seq, map);
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// An integer leaf (timestamps, error codes): a JSON integer, an integral
/// float, or a string of ASCII digits. Anything else is absent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Int(pub Option<i64>);

/// Parse a string of 1..=18 ASCII digits (so it cannot overflow i64).
pub(crate) fn parse_digits(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 18 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(Some(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                Ok(Int(i64::try_from(v).ok()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Int, E> {
                // `as` saturates; the range check keeps only exact values.
                let ok = v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e18;
                Ok(Int(ok.then_some(v as i64)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Int, E> {
                Ok(Int(parse_digits(v)))
            }
            absent_for!(Int(None); bool, unit, seq, map);
        }
        d.deserialize_any(V)
    }
}

/// A boolean leaf: `true`/`false`, or those words as strings.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flag(pub Option<bool>);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Flag, E> {
                Ok(Flag(Some(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Flag, E> {
                Ok(Flag(match v {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => None,
                }))
            }
            absent_for!(Flag(None); i64, u64, f64, unit, seq, map);
        }
        d.deserialize_any(V)
    }
}

/// A nested object read as `T`; any non-object is absent. Only a JSON object
/// reaches `T` (a derived struct would otherwise also accept an array,
/// positionally).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Obj<T>(pub Option<T>);

impl<T> Default for Obj<T> {
    fn default() -> Self {
        Obj(None)
    }
}

impl<T> Obj<T> {
    pub fn get(&self) -> Option<&T> {
        self.0.as_ref()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(|t| Obj(Some(t)))
            }
            absent_for!(Obj(None); bool, i64, u64, f64, str, unit, seq);
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A list of `T`; a non-array is empty. Elements are read as `T`, so use a
/// lenient `T` (e.g. `Obj<_>`) to tolerate odd elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct List<T>(pub Vec<T>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<T>()? {
                    out.push(item);
                }
                Ok(List(out))
            }
            absent_for!(List(Vec::new()); bool, i64, u64, f64, str, unit, map);
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// An array of `T`, telling "absent or null" apart from "not an array".
#[derive(Debug, Clone, Default)]
pub(crate) enum Arr<T> {
    /// Key absent or `null`.
    #[default]
    Absent,
    /// Present but not an array.
    NotArray,
    Items(Vec<T>),
}

/// An array whose elements are kept as raw JSON (exact body slices).
pub(crate) type Seq<'a> = Arr<&'a RawValue>;

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Arr<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Arr<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Arr<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<T>()? {
                    out.push(item);
                }
                Ok(Arr::Items(out))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Arr<T>, E> {
                Ok(Arr::Absent)
            }
            fn visit_none<E: de::Error>(self) -> Result<Arr<T>, E> {
                Ok(Arr::Absent)
            }
            absent_for!(Arr::NotArray; bool, i64, u64, f64, str, map);
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// An object key, borrowed when it has no escapes.
pub(crate) struct Key<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// The top-level keys of one JSON object with their values as raw JSON, in
/// body order, duplicates kept. `None` when the value is not an object.
#[derive(Debug, Default, Clone)]
pub(crate) struct Keys<'a>(pub Option<Vec<(Cow<'a, str>, &'a RawValue)>>);

impl<'a> Keys<'a> {
    /// Read the keys of `raw` (which is known to be valid JSON).
    pub fn of(raw: &'a RawValue) -> Keys<'a> {
        // Only nesting beyond serde_json's limits can fail here: treat as opaque.
        serde_json::from_str(raw.get()).unwrap_or_default()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &'a RawValue)> {
        self.0.iter().flatten().map(|(k, v)| (k.as_ref(), *v))
    }

    /// The first value under `key`.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Keys<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Keys<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys<'a>, A::Error> {
                let mut out = Vec::new();
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    let v: &'de RawValue = map.next_value()?;
                    out.push((k, v));
                }
                Ok(Keys(Some(out)))
            }
            absent_for!(Keys(None); bool, i64, u64, f64, str, unit, seq);
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// Whether raw JSON is an object (raw values never start with whitespace).
pub(crate) fn is_object(raw: &RawValue) -> bool {
    raw.get().starts_with('{')
}

/// Read an object-shaped view from raw JSON. `Ok(None)` when it is not an
/// object; `Err` only for what serde refuses (duplicate keys, deep nesting).
pub(crate) fn view<'a, T: Deserialize<'a>>(
    raw: &'a RawValue,
) -> Result<Option<T>, serde_json::Error> {
    if !is_object(raw) {
        return Ok(None);
    }
    serde_json::from_str(raw.get()).map(Some)
}

/// Follow `path` through nested objects from `raw`; an array on the way is
/// replaced by its first element. Returns the raw value at the end.
pub(crate) fn path<'a>(raw: &'a RawValue, path: &[&str]) -> Option<&'a RawValue> {
    let mut cur = first_if_array(raw)?;
    for key in path {
        cur = first_if_array(Keys::of(cur).get(key)?)?;
    }
    Some(cur)
}

fn first_if_array(raw: &RawValue) -> Option<&RawValue> {
    if raw.get().starts_with('[') {
        match serde_json::from_str::<Seq>(raw.get()) {
            Ok(Arr::Items(items)) => items.into_iter().next(),
            _ => None,
        }
    } else {
        Some(raw)
    }
}

/// The string-ish leaf at `raw`, if it is one.
pub(crate) fn leaf_str(raw: &RawValue) -> Option<String> {
    serde_json::from_str::<Str>(raw.get())
        .ok()?
        .0
        .map(Cow::into_owned)
}

/// The integer leaf at `raw`, if it is one.
pub(crate) fn leaf_int(raw: &RawValue) -> Option<i64> {
    serde_json::from_str::<Int>(raw.get()).ok()?.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Default, Debug)]
    #[serde(default)]
    struct Probe<'a> {
        #[serde(borrow)]
        s: Str<'a>,
        n: Int,
        b: Flag,
        #[serde(borrow)]
        o: Obj<Inner<'a>>,
        l: List<Int>,
        #[serde(borrow)]
        q: Seq<'a>,
    }

    #[derive(Deserialize, Default, Debug)]
    #[serde(default)]
    struct Inner<'a> {
        #[serde(borrow)]
        x: Str<'a>,
    }

    fn probe(json: &str) -> Probe<'_> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn strings_borrow_when_unescaped_and_decode_escapes() {
        let p = probe(r#"{"s":"plain"}"#);
        assert!(matches!(p.s.0, Some(Cow::Borrowed("plain"))));
        let p = probe(r#"{"s":"\uc548\ub155 \ud83d\ude2e \/"}"#);
        assert_eq!(p.s.get(), Some("안녕 😮 /"));
        assert!(matches!(p.s.0, Some(Cow::Owned(_))));
    }

    #[test]
    fn wrong_types_read_as_absent() {
        let p =
            probe(r#"{"s":{"a":[1,2]},"n":"soon","b":3,"o":[{"x":"1"}],"l":{"k":1},"q":"str"}"#);
        assert_eq!(p.s.get(), None);
        assert_eq!(p.n.0, None);
        assert_eq!(p.b.0, None);
        assert!(p.o.get().is_none());
        assert!(p.l.0.is_empty());
        assert!(matches!(p.q, Arr::NotArray));
        let p = probe(r#"{"s":null,"n":null,"b":null,"o":null,"l":null,"q":null}"#);
        assert_eq!(p.s.get(), None);
        assert!(matches!(p.q, Arr::Absent));
    }

    #[test]
    fn numbers_and_numeric_strings() {
        let p = probe(r#"{"s":800000000000001,"n":"1768467600","l":[1,"2",3.0,3.5,"x",-4]}"#);
        assert_eq!(p.s.get(), Some("800000000000001"));
        assert_eq!(p.n.0, Some(1_768_467_600));
        let l: Vec<Option<i64>> = p.l.0.iter().map(|i| i.0).collect();
        assert_eq!(l, vec![Some(1), Some(2), Some(3), None, None, Some(-4)]);
        assert_eq!(probe(r#"{"n":18446744073709551615}"#).n.0, None);
        assert_eq!(probe(r#"{"n":"-5"}"#).n.0, None);
        assert_eq!(probe(r#"{"n":"99999999999999999999"}"#).n.0, None);
        assert_eq!(probe(r#"{"n":1e300}"#).n.0, None);
        assert_eq!(probe(r#"{"b":"true"}"#).b.0, Some(true));
    }

    #[test]
    fn seq_keeps_exact_element_bytes() {
        let p = probe(r#"{"q":[ {"a" : "\u0041"} ,1,"x"]}"#);
        let Arr::Items(items) = p.q else { panic!() };
        let got: Vec<&str> = items.iter().map(|r| r.get()).collect();
        assert_eq!(got, vec![r#"{"a" : "\u0041"}"#, "1", r#""x""#]);
    }

    #[test]
    fn keys_keep_order_and_duplicates() {
        let raw: &RawValue =
            serde_json::from_str(r#"{"b":1,"a":[2],"b":{"c":"d"},"e\u0073c":0}"#).unwrap();
        let k = Keys::of(raw);
        let names: Vec<&str> = k.iter().map(|(k, _)| k).collect();
        assert_eq!(names, vec!["b", "a", "b", "esc"]);
        assert_eq!(k.get("b").unwrap().get(), "1");
        let raw: &RawValue = serde_json::from_str("[1]").unwrap();
        assert!(Keys::of(raw).0.is_none());
    }

    #[test]
    fn path_follows_objects_and_first_elements() {
        let raw: &RawValue = serde_json::from_str(
            r#"{"calls":[{"event":"connect","timestamp":"17"}],"a":{"b":{"c":5}}}"#,
        )
        .unwrap();
        assert_eq!(
            path(raw, &["calls", "event"]).and_then(leaf_str).as_deref(),
            Some("connect")
        );
        assert_eq!(
            path(raw, &["calls", "timestamp"]).and_then(leaf_int),
            Some(17)
        );
        assert_eq!(
            path(raw, &["a", "b", "c"]).and_then(leaf_str).as_deref(),
            Some("5")
        );
        assert!(path(raw, &["a", "x"]).is_none());
        assert!(path(raw, &["calls", "event", "deeper"]).is_none());
    }

    #[test]
    fn view_refuses_non_objects() {
        let raw: &RawValue = serde_json::from_str(r#"["x"]"#).unwrap();
        assert!(view::<Inner>(raw).unwrap().is_none());
        let raw: &RawValue = serde_json::from_str(r#"{"x":"1","x":"2"}"#).unwrap();
        assert!(
            view::<Inner>(raw).is_err(),
            "duplicate keys are serde's error"
        );
    }
}
