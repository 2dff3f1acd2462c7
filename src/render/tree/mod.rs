//! A rendered file parsed back, as a tree that borrows from the rendered text.
//!
//! Every stack is parsed back into a tree before it is checked and written out as canonical
//! JSON. With `serde_json::Value` every key became a `String` and every mapping a `BTreeMap`
//! (a node allocation per few entries, a string comparison per step of every insert and every
//! lookup), and the whole tree was freed node by node: a quarter of a pipeline's render. Here a
//! key and a plain or unescaped scalar borrow the rendered text, a mapping is one vector of
//! entries sorted once when it is complete, and lookups are binary searches. The accessors
//! follow `serde_json::Value`'s names (`get`, `as_str`, `as_object`, indexing with a missing
//! key giving `Null`), so the checks read as before.
//!
//! Keys are sorted byte-wise, as `serde_json`'s default map sorts them: the canonical JSON
//! written from a tree ([`super::pretty`]) is byte for byte what `serde_json` writes for the same
//! value. A mapping never holds a key twice ([`Object::from_entries`] refuses it).

mod ser;

use std::borrow::Cow;

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Number, Value as Json};

pub use ser::{Error as SerializeError, to_node};

/// A JSON value whose strings may borrow from the text it was parsed from.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Node<'a> {
    /// `null` (also what a missing key indexes to).
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as serde_json holds it (integer or finite float).
    Number(Number),
    /// A string: borrowed from the parsed text unless unescaping changed it.
    String(Cow<'a, str>),
    /// A sequence.
    Array(Vec<Node<'a>>),
    /// A mapping.
    Object(Object<'a>),
}

/// A mapping: its entries sorted by key, each key once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Object<'a> {
    entries: Vec<(Cow<'a, str>, Node<'a>)>,
}

/// What indexing with a missing key or index gives (as `serde_json::Value`'s `Index` does).
static NULL: Node<'static> = Node::Null;

impl<'a> Object<'a> {
    /// The mapping of `entries`, sorted by key; `None` when a key occurs twice.
    pub fn from_entries(entries: Vec<(Cow<'a, str>, Node<'a>)>) -> Option<Self> {
        Self::from_entries_or_twice(entries).ok()
    }

    /// [`Object::from_entries`], the error naming a key that occurs twice.
    fn from_entries_or_twice(
        mut entries: Vec<(Cow<'a, str>, Node<'a>)>,
    ) -> Result<Self, Cow<'a, str>> {
        entries.sort_unstable_by(|a, b| key_cmp(&a.0, &b.0));
        if let Some(i) = entries.windows(2).position(|w| w[0].0 == w[1].0) {
            return Err(entries.swap_remove(i).0);
        }
        Ok(Object { entries })
    }

    fn index_of(&self, key: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| key_cmp(k, key))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        self.index_of(key).ok().map(|i| &self.entries[i].1)
    }

    /// Sets `key` to `value` in its place in the order, returning the value it replaces.
    pub fn insert(&mut self, key: impl Into<Cow<'a, str>>, value: Node<'a>) -> Option<Node<'a>> {
        let key = key.into();
        match self.index_of(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    /// Whether the mapping holds `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        self.index_of(key).is_ok()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the mapping has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in key order.
    pub fn iter(&self) -> Iter<'_, 'a> {
        self.entries.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// The keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_ref())
    }

    /// The values in key order.
    pub fn values(&self) -> impl Iterator<Item = &Node<'a>> {
        self.entries.iter().map(|(_, v)| v)
    }

    /// The same keys, each with `f` of its value.
    pub fn map_values(&self, mut f: impl FnMut(&Node<'a>) -> Node<'a>) -> Object<'a> {
        Object {
            entries: self
                .entries
                .iter()
                .map(|(k, v)| (k.clone(), f(v)))
                .collect(),
        }
    }
}

/// The iterator of [`Object::iter`].
pub type Iter<'o, 'a> = std::iter::Map<
    std::slice::Iter<'o, (Cow<'a, str>, Node<'a>)>,
    fn(&'o (Cow<'a, str>, Node<'a>)) -> (&'o str, &'o Node<'a>),
>;

impl<'o, 'a> IntoIterator for &'o Object<'a> {
    type Item = (&'o str, &'o Node<'a>);
    type IntoIter = Iter<'o, 'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a> Node<'a> {
    /// The value of `key` in a mapping; `None` for a missing key or another kind of value.
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        self.as_object()?.get(key)
    }

    /// The value of `key` in a mapping, to change it.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node<'a>> {
        match self {
            Node::Object(m) => m.index_of(key).ok().map(|i| &mut m.entries[i].1),
            _ => None,
        }
    }

    /// The sequence, if this is one, to change it.
    pub fn as_array_mut(&mut self) -> Option<&mut Vec<Node<'a>>> {
        match self {
            Node::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The mapping, if this is one, to change it.
    pub fn as_object_mut(&mut self) -> Option<&mut Object<'a>> {
        match self {
            Node::Object(m) => Some(m),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::String(s) => Some(s),
            _ => None,
        }
    }

    /// The sequence, if this is one.
    pub fn as_array(&self) -> Option<&Vec<Node<'a>>> {
        match self {
            Node::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The mapping, if this is one.
    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Node::Object(m) => Some(m),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Node::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The number as a `u64`, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Node::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    /// The number as an `i64`, if it is an integer in range.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Node::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    /// The number as an `f64`, if this is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Node::Number(n) => n.as_f64(),
            _ => None,
        }
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Node::Null)
    }

    /// Whether this is a string.
    pub fn is_string(&self) -> bool {
        matches!(self, Node::String(_))
    }

    /// Whether this is a sequence.
    pub fn is_array(&self) -> bool {
        matches!(self, Node::Array(_))
    }

    /// Whether this is a mapping.
    pub fn is_object(&self) -> bool {
        matches!(self, Node::Object(_))
    }

    /// The value at a JSON Pointer (RFC 6901), as `serde_json::Value::pointer` finds it.
    pub fn pointer(&self, pointer: &str) -> Option<&Node<'a>> {
        if pointer.is_empty() {
            return Some(self);
        }
        let rest = pointer.strip_prefix('/')?;
        rest.split('/').try_fold(self, |at, token| {
            let token = token.replace("~1", "/").replace("~0", "~");
            match at {
                Node::Object(m) => m.get(&token),
                Node::Array(a) => {
                    if token.starts_with('+') || (token.len() > 1 && token.starts_with('0')) {
                        return None;
                    }
                    a.get(token.parse::<usize>().ok()?)
                }
                _ => None,
            }
        })
    }

    /// The same value as a `serde_json::Value`.
    pub fn to_json(&self) -> Json {
        match self {
            Node::Null => Json::Null,
            Node::Bool(b) => Json::Bool(*b),
            Node::Number(n) => Json::Number(n.clone()),
            Node::String(s) => Json::String(s.as_ref().to_owned()),
            Node::Array(a) => Json::Array(a.iter().map(Node::to_json).collect()),
            Node::Object(m) => {
                Json::Object(m.iter().map(|(k, v)| (k.to_owned(), v.to_json())).collect())
            }
        }
    }

    /// A `serde_json::Value` as a tree that owns its strings.
    pub fn from_json(v: Json) -> Node<'static> {
        match v {
            Json::Null => Node::Null,
            Json::Bool(b) => Node::Bool(b),
            Json::Number(n) => Node::Number(n),
            Json::String(s) => Node::String(Cow::Owned(s)),
            Json::Array(a) => Node::Array(a.into_iter().map(Node::from_json).collect()),
            // serde_json's map holds each key once, in order (`ensure_sorted` when not).
            Json::Object(m) => Node::Object(Object {
                entries: sorted_entries(
                    m.into_iter()
                        .map(|(k, v)| (Cow::Owned(k), Node::from_json(v)))
                        .collect(),
                ),
            }),
        }
    }
}

/// Entries with unique keys (from a map), sorted by key (serde_json's map keeps them sorted
/// unless its `preserve_order` feature is on; sorting a sorted vector is one pass).
fn sorted_entries<'a>(mut entries: Vec<(Cow<'a, str>, Node<'a>)>) -> Vec<(Cow<'a, str>, Node<'a>)> {
    entries.sort_unstable_by(|a, b| key_cmp(&a.0, &b.0));
    entries
}

/// The order of keys: `str`'s (byte-wise). Keys that differ in their first byte, as most keys
/// of one mapping do, are ordered by it without a call to `memcmp`, which sorting the parse-back's
/// mappings and looking keys up in them made hundreds of thousands of times per render.
#[inline]
fn key_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.as_bytes().first(), b.as_bytes().first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

/// A `serde_json::Value` as a tree borrowing its strings.
impl<'a> From<&'a Json> for Node<'a> {
    fn from(v: &'a Json) -> Self {
        match v {
            Json::Null => Node::Null,
            Json::Bool(b) => Node::Bool(*b),
            Json::Number(n) => Node::Number(n.clone()),
            Json::String(s) => Node::String(Cow::Borrowed(s)),
            Json::Array(a) => Node::Array(a.iter().map(Node::from).collect()),
            Json::Object(m) => Node::Object(Object {
                entries: sorted_entries(
                    m.iter()
                        .map(|(k, v)| (Cow::Borrowed(k.as_str()), Node::from(v)))
                        .collect(),
                ),
            }),
        }
    }
}

impl<'a> From<&'a str> for Node<'a> {
    fn from(s: &'a str) -> Self {
        Node::String(Cow::Borrowed(s))
    }
}

impl From<String> for Node<'_> {
    fn from(s: String) -> Self {
        Node::String(Cow::Owned(s))
    }
}

impl<'a> std::ops::Index<&str> for Node<'a> {
    type Output = Node<'a>;
    fn index(&self, key: &str) -> &Node<'a> {
        self.get(key).unwrap_or(&NULL)
    }
}

impl<'a> std::ops::Index<usize> for Node<'a> {
    type Output = Node<'a>;
    fn index(&self, i: usize) -> &Node<'a> {
        self.as_array().and_then(|a| a.get(i)).unwrap_or(&NULL)
    }
}

impl PartialEq<str> for Node<'_> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == Some(other)
    }
}

impl PartialEq<&str> for Node<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}

/// Compact JSON, as `serde_json::Value` displays.
impl std::fmt::Display for Node<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| std::fmt::Error)?)
    }
}

impl Serialize for Node<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(*b),
            Node::Number(n) => n.serialize(s),
            Node::String(t) => s.serialize_str(t),
            Node::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for x in a {
                    seq.serialize_element(x)?;
                }
                seq.end()
            }
            Node::Object(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    proptest::proptest! {
        /// The key order is `str`'s, whether the first bytes differ or not.
        #[test]
        fn keys_are_ordered_as_str_orders_them(a in "[ab\u{e9}]{0,4}", b in "[ab\u{e9}]{0,4}") {
            proptest::prop_assert_eq!(key_cmp(&a, &b), a.cmp(&b));
        }
    }

    fn sample() -> Json {
        json!({
            "b": [1, 2.5, "x", null, true],
            "a": {"z/y": {"~k": "v"}, "Type": "AWS::S3::Bucket"},
            "": false,
            "é": -3
        })
    }

    #[test]
    fn a_tree_converts_both_ways_and_serializes_like_serde_json() {
        let j = sample();
        let borrowed = Node::from(&j);
        assert_eq!(borrowed.to_json(), j);
        assert_eq!(Node::from_json(j.clone()), borrowed);
        assert_eq!(
            serde_json::to_string_pretty(&borrowed).expect("json"),
            serde_json::to_string_pretty(&j).expect("json")
        );
    }

    #[test]
    fn lookups_follow_serde_json() {
        let j = sample();
        let n = Node::from(&j);
        for p in [
            "",
            "/a/z~1y/~0k",
            "/b/2",
            "/b/02",
            "/b/+1",
            "/b/9",
            "/c",
            "/a/Type/x",
            "x",
        ] {
            assert_eq!(
                n.pointer(p).map(Node::to_json).as_ref(),
                j.pointer(p),
                "{p}"
            );
        }
        assert_eq!(n["a"]["Type"], "AWS::S3::Bucket");
        assert!(n["a"]["Type"] == *"AWS::S3::Bucket" && n["a"]["Type"] != *"AWS::S3");
        assert!(n["a"] != *"AWS::S3::Bucket" && n["a"] != "");
        assert!(n["missing"]["deeper"].is_null());
        assert!(n["b"][7].is_null());
        assert_eq!(n["b"][1].as_f64(), Some(2.5));
        assert_eq!(n["é"].as_i64(), Some(-3));
        assert_eq!(n["é"].as_u64(), None);
        assert_eq!(n[""].as_bool(), Some(false));
        assert_eq!(n["b"][4].as_bool(), Some(true));
        assert_eq!(n["b"][2].as_bool(), None);
        let kinds = |v: &Node<'_>| (v.is_null(), v.is_string(), v.is_array(), v.is_object());
        assert_eq!(kinds(&n["b"][3]), (true, false, false, false));
        assert_eq!(kinds(&n["b"][2]), (false, true, false, false));
        assert_eq!(kinds(&n["b"]), (false, false, true, false));
        assert_eq!(kinds(&n["a"]), (false, false, false, true));
        assert_eq!(n["b"][2].as_array(), None);
        assert_eq!(n["b"].as_object(), None);
        assert_eq!(n["b"].as_str(), None);
        assert_eq!(n["b"][2].as_f64(), None);
        assert_eq!(n["b"][2].as_i64(), None);
        assert_eq!(n["b"][2].as_u64(), None);
        assert_eq!(n["b"][0].as_u64(), Some(1));
        assert_eq!(n["b"][2].get("x"), None);
        assert_eq!(n.to_string(), j.to_string());
        let keys: Vec<&str> = n.as_object().expect("map").keys().collect();
        assert_eq!(keys, ["", "a", "b", "é"]);
    }

    #[test]
    fn a_mapping_keeps_its_keys_sorted_and_unique() {
        let e = |k: &'static str| (Cow::Borrowed(k), Node::from(k));
        assert!(Object::from_entries(vec![e("b"), e("a"), e("b")]).is_none());
        assert!(Object::from_entries(vec![e("a"), e("a")]).is_none());
        let m = Object::from_entries(vec![e("c"), e("a"), e("é"), e("B")]).expect("unique");
        assert_eq!(m.keys().collect::<Vec<_>>(), ["B", "a", "c", "é"]);
        for k in ["B", "a", "c", "é"] {
            assert_eq!(m.get(k), Some(&Node::from(k)), "{k}");
            assert!(m.contains_key(k));
        }
        assert!(m.get("b").is_none() && !m.contains_key("") && m.len() == 4 && !m.is_empty());
        assert!(Object::default().is_empty());
        let mut changed = m.clone();
        assert_eq!(changed.insert("b", Node::Bool(true)), None);
        assert_eq!(changed.insert("a", Node::Null), Some(Node::from("a")));
        assert_eq!(
            changed.keys().collect::<Vec<_>>(),
            ["B", "a", "b", "c", "é"]
        );
        assert_eq!(changed.get("a"), Some(&Node::Null));
        let mut n = Node::Object(changed);
        *n.get_mut("c").expect("c") = Node::Array(vec![]);
        n.get_mut("c")
            .and_then(Node::as_array_mut)
            .expect("array")
            .push(Node::Null);
        assert_eq!(n["c"], Node::Array(vec![Node::Null]));
        assert!(n.get_mut("d").is_none() && n["c"][0].clone().get_mut("x").is_none());
        n.as_object_mut().expect("map").insert("d", Node::from("x"));
        assert_eq!(n["d"], "x");
        assert!(
            n["d"].clone().as_object_mut().is_none() && n["d"].clone().as_array_mut().is_none()
        );
        let doubled = m.map_values(|v| Node::from(format!("{}{}", v.as_str().unwrap_or(""), "!")));
        assert_eq!(doubled.get("é"), Some(&Node::from("é!".to_owned())));
        assert_eq!(doubled.keys().collect::<Vec<_>>(), ["B", "a", "c", "é"]);
    }
}
