//! Serializing into a tree: what `serde_json::to_value` makes of a value, built as a
//! [`Node`] directly (`plan.json`: no `serde_json::Value` built, read into a tree and
//! dropped).
//!
//! Mappings and structs become sorted mappings, as in `serde_json`'s default map; unit
//! variants are their names, other variants a one-entry mapping, `None` and units `null`, a
//! non-finite float `null`. Map keys are strings, integers (written in decimal), booleans, or
//! unit variants (their names). Unlike `serde_json`, a key given twice (two flattened structs
//! with a field in common) is an error rather than the last one winning. Debug builds (the
//! tests) compare every tree made here with `serde_json::to_value`'s.

use std::borrow::Cow;
use std::fmt;

use serde::ser::{self, Serialize};
use serde_json::Number;

use super::{Node, Object};

/// A value `serde` cannot turn into a tree (a key that is not a string, a duplicate key, an
/// integer beyond 64 bits, or a `Serialize` implementation's own error).
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

/// `value` as a tree.
pub fn to_node<T: Serialize + ?Sized>(value: &T) -> Result<Node<'static>, Error> {
    let node = value.serialize(Serializer)?;
    #[cfg(debug_assertions)]
    if let Ok(json) = serde_json::to_value(value) {
        assert!(
            Node::from(&json) == node,
            "the tree serializer disagrees with serde_json::to_value"
        );
    }
    Ok(node)
}

/// The serializer of [`to_node`].
struct Serializer;

/// A sequence being serialized (also a tuple, a tuple struct, and a tuple variant's fields).
struct Seq {
    variant: Option<&'static str>,
    items: Vec<Node<'static>>,
}

/// A mapping being serialized (also a struct, and a struct variant's fields).
struct Map {
    variant: Option<&'static str>,
    entries: Vec<(Cow<'static, str>, Node<'static>)>,
    key: Option<Cow<'static, str>>,
}

/// `{variant: value}`.
fn variant(name: &'static str, value: Node<'static>) -> Node<'static> {
    Node::Object(Object {
        entries: vec![(Cow::Borrowed(name), value)],
    })
}

fn int<T: TryInto<i64> + TryInto<u64> + Copy + fmt::Display>(v: T) -> Result<Node<'static>, Error> {
    if let Ok(u) = TryInto::<u64>::try_into(v) {
        return Ok(Node::Number(u.into()));
    }
    match TryInto::<i64>::try_into(v) {
        Ok(i) => Ok(Node::Number(i.into())),
        Err(_) => Err(Error(format!("the integer {v} is beyond 64 bits"))),
    }
}

/// A serializer's integer methods: `int` makes each a number ([`int`]), `decimal` a map key
/// written in decimal.
macro_rules! integers {
    (int: $($method:ident $t:ty),*) => {$(
        fn $method(self, v: $t) -> Result<Node<'static>, Error> {
            int(v)
        }
    )*};
    (decimal: $($method:ident $t:ty),*) => {$(
        fn $method(self, v: $t) -> Key {
            Ok(Cow::Owned(v.to_string()))
        }
    )*};
}

impl ser::Serializer for Serializer {
    type Ok = Node<'static>;
    type Error = Error;
    type SerializeSeq = Seq;
    type SerializeTuple = Seq;
    type SerializeTupleStruct = Seq;
    type SerializeTupleVariant = Seq;
    type SerializeMap = Map;
    type SerializeStruct = Map;
    type SerializeStructVariant = Map;

    fn serialize_bool(self, v: bool) -> Result<Node<'static>, Error> {
        Ok(Node::Bool(v))
    }
    integers!(int:
        serialize_i8 i8, serialize_i16 i16, serialize_i32 i32, serialize_i64 i64,
        serialize_i128 i128, serialize_u8 u8, serialize_u16 u16, serialize_u32 u32,
        serialize_u64 u64, serialize_u128 u128);
    /// (Widened to `f64`; no type pipeforge writes holds an `f32`.)
    fn serialize_f32(self, v: f32) -> Result<Node<'static>, Error> {
        self.serialize_f64(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<Node<'static>, Error> {
        Ok(Number::from_f64(v).map_or(Node::Null, Node::Number))
    }
    fn serialize_char(self, v: char) -> Result<Node<'static>, Error> {
        Ok(Node::from(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Node<'static>, Error> {
        Ok(Node::from(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Node<'static>, Error> {
        Ok(Node::Array(
            v.iter().map(|b| Node::Number((*b).into())).collect(),
        ))
    }
    fn serialize_none(self) -> Result<Node<'static>, Error> {
        Ok(Node::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<Node<'static>, Error> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<Node<'static>, Error> {
        Ok(Node::Null)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<Node<'static>, Error> {
        Ok(Node::Null)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        name: &'static str,
    ) -> Result<Node<'static>, Error> {
        Ok(Node::from(name))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<Node<'static>, Error> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        name: &'static str,
        v: &T,
    ) -> Result<Node<'static>, Error> {
        Ok(variant(name, v.serialize(self)?))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Seq, Error> {
        Ok(Seq {
            variant: None,
            items: Vec::with_capacity(len.unwrap_or(0)),
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Seq, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        name: &'static str,
        len: usize,
    ) -> Result<Seq, Error> {
        Ok(Seq {
            variant: Some(name),
            items: Vec::with_capacity(len),
        })
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Map, Error> {
        Ok(Map {
            variant: None,
            entries: Vec::with_capacity(len.unwrap_or(0)),
            key: None,
        })
    }
    fn serialize_struct(self, _: &'static str, len: usize) -> Result<Map, Error> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        name: &'static str,
        len: usize,
    ) -> Result<Map, Error> {
        Ok(Map {
            variant: Some(name),
            entries: Vec::with_capacity(len),
            key: None,
        })
    }
}

impl Seq {
    fn push<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.items.push(v.serialize(Serializer)?);
        Ok(())
    }

    fn done(self) -> Node<'static> {
        let items = Node::Array(self.items);
        match self.variant {
            Some(name) => variant(name, items),
            None => items,
        }
    }
}

/// The four kinds of sequence serde has, each through [`Seq::push`] and [`Seq::done`].
macro_rules! sequence {
    ($($kind:ident :: $add:ident),*) => {$(
        impl ser::$kind for Seq {
            type Ok = Node<'static>;
            type Error = Error;
            fn $add<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
                self.push(v)
            }
            fn end(self) -> Result<Node<'static>, Error> {
                Ok(self.done())
            }
        }
    )*};
}

sequence!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl Map {
    fn field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> Result<(), Error> {
        self.entries
            .push((Cow::Borrowed(key), v.serialize(Serializer)?));
        Ok(())
    }

    fn done(self) -> Result<Node<'static>, Error> {
        let map = Object::from_entries_or_twice(self.entries)
            .map_err(|key| Error(format!("the key `{key}` is given twice")))?;
        let map = Node::Object(map);
        Ok(match self.variant {
            Some(name) => variant(name, map),
            None => map,
        })
    }
}

impl ser::SerializeMap for Map {
    type Ok = Node<'static>;
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), Error> {
        self.key = Some(k.serialize(KeySerializer)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        let key = self
            .key
            .take()
            .ok_or_else(|| Error("a map value came without its key".to_owned()))?;
        self.entries.push((key, v.serialize(Serializer)?));
        Ok(())
    }
    fn end(self) -> Result<Node<'static>, Error> {
        self.done()
    }
}

/// Structs and struct variants, each through [`Map::field`] and [`Map::done`].
macro_rules! structure {
    ($($kind:ident),*) => {$(
        impl ser::$kind for Map {
            type Ok = Node<'static>;
            type Error = Error;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                v: &T,
            ) -> Result<(), Error> {
                self.field(key, v)
            }
            fn end(self) -> Result<Node<'static>, Error> {
                self.done()
            }
        }
    )*};
}

structure!(SerializeStruct, SerializeStructVariant);

/// A map key: a string, or what `serde_json` writes as one.
struct KeySerializer;

type Key = Result<Cow<'static, str>, Error>;

fn not_a_key() -> Error {
    Error("a map key must be a string".to_owned())
}

impl ser::Serializer for KeySerializer {
    type Ok = Cow<'static, str>;
    type Error = Error;
    type SerializeSeq = ser::Impossible<Cow<'static, str>, Error>;
    type SerializeTuple = ser::Impossible<Cow<'static, str>, Error>;
    type SerializeTupleStruct = ser::Impossible<Cow<'static, str>, Error>;
    type SerializeTupleVariant = ser::Impossible<Cow<'static, str>, Error>;
    type SerializeMap = ser::Impossible<Cow<'static, str>, Error>;
    type SerializeStruct = ser::Impossible<Cow<'static, str>, Error>;
    type SerializeStructVariant = ser::Impossible<Cow<'static, str>, Error>;

    fn serialize_str(self, v: &str) -> Key {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn serialize_char(self, v: char) -> Key {
        Ok(Cow::Owned(v.to_string()))
    }
    fn serialize_bool(self, v: bool) -> Key {
        Ok(Cow::Borrowed(if v { "true" } else { "false" }))
    }
    integers!(decimal:
        serialize_i8 i8, serialize_i16 i16, serialize_i32 i32, serialize_i64 i64,
        serialize_u8 u8, serialize_u16 u16, serialize_u32 u32, serialize_u64 u64);
    fn serialize_f32(self, _: f32) -> Key {
        Err(not_a_key())
    }
    fn serialize_f64(self, _: f64) -> Key {
        Err(not_a_key())
    }
    fn serialize_bytes(self, _: &[u8]) -> Key {
        Err(not_a_key())
    }
    fn serialize_none(self) -> Key {
        Err(not_a_key())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Key {
        Err(not_a_key())
    }
    fn serialize_unit(self) -> Key {
        Err(not_a_key())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Key {
        Err(not_a_key())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, name: &'static str) -> Key {
        Ok(Cow::Borrowed(name))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> Key {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Key {
        Err(not_a_key())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(not_a_key())
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Err(not_a_key())
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(not_a_key())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(not_a_key())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(not_a_key())
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
        Err(not_a_key())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(not_a_key())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Serialize;

    use super::*;

    #[derive(Serialize, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    #[serde(rename_all = "kebab-case")]
    enum Kind {
        OneThing,
        Other,
    }

    #[derive(Serialize)]
    #[serde(tag = "store", rename_all = "kebab-case")]
    enum Tagged {
        Plain { path: String },
        Empty {},
    }

    #[derive(Serialize)]
    enum Variants {
        Unit,
        Newtype(u8),
        Tuple(i8, bool),
        Struct { b: Option<u16>, a: char },
    }

    #[derive(Serialize)]
    struct Inner {
        z: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<u8>,
        a: Vec<Kind>,
    }

    #[derive(Serialize)]
    struct Newtype(i64);

    #[derive(Serialize)]
    struct UnitStruct;

    #[derive(Serialize)]
    struct Everything {
        #[serde(rename = "//")]
        header: &'static str,
        #[serde(flatten)]
        inner: Inner,
        by_kind: BTreeMap<Kind, usize>,
        by_number: BTreeMap<u32, bool>,
        by_newtype: BTreeMap<String, Newtype>,
        tagged: Vec<Tagged>,
        variants: Vec<Variants>,
        tuple: (u64, i32, f64, f64),
        #[serde(with = "serde_bytes_as_bytes")]
        bytes: Vec<u8>,
        unit: (),
        unit_struct: UnitStruct,
        big: i128,
        text: String,
    }

    /// `bytes` through `serialize_bytes` (serde serializes a `Vec<u8>` as a sequence).
    mod serde_bytes_as_bytes {
        pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }
    }

    fn everything() -> Everything {
        Everything {
            header: "generated",
            inner: Inner {
                z: "last",
                skipped: None,
                a: vec![Kind::OneThing, Kind::Other],
            },
            by_kind: [(Kind::Other, 2), (Kind::OneThing, 1)].into(),
            by_number: [(10, true), (9, false)].into(),
            by_newtype: [("n".to_owned(), Newtype(-7))].into(),
            tagged: vec![
                Tagged::Plain {
                    path: "/p".to_owned(),
                },
                Tagged::Empty {},
            ],
            variants: vec![
                Variants::Unit,
                Variants::Newtype(3),
                Variants::Tuple(-1, true),
                Variants::Struct { b: None, a: 'é' },
                Variants::Struct { b: Some(9), a: '"' },
            ],
            tuple: (u64::MAX, i32::MIN, 0.1, f64::NAN),
            bytes: vec![0, 255],
            unit: (),
            unit_struct: UnitStruct,
            big: -(1 << 40),
            text: "line\nbreak \u{1} é".to_owned(),
        }
    }

    #[test]
    fn every_kind_of_value_is_what_serde_json_makes_of_it() {
        let v = everything();
        let node = to_node(&v).expect("serializable");
        let json = serde_json::to_value(&v).expect("serializable");
        assert_eq!(node, Node::from(&json));
        assert_eq!(
            serde_json::to_string_pretty(&node).expect("json"),
            serde_json::to_string_pretty(&json).expect("json")
        );
        // The flattened struct's fields sit beside the others, sorted.
        let keys: Vec<&str> = node.as_object().expect("map").keys().collect();
        assert_eq!(keys.first(), Some(&"//"));
        assert!(keys.is_sorted(), "{keys:?}");
        assert_eq!(node["by_kind"]["one-thing"].as_u64(), Some(1));
        assert_eq!(node["by_number"]["10"], Node::Bool(true));
        assert!(node["tuple"][3].is_null());
    }

    #[test]
    fn what_has_no_tree_is_an_error() {
        #[derive(Serialize)]
        struct Twice {
            a: u8,
            #[serde(flatten)]
            again: BTreeMap<&'static str, u8>,
        }
        let e = to_node(&Twice {
            a: 1,
            again: [("a", 2)].into(),
        })
        .expect_err("duplicate");
        assert_eq!(e.to_string(), "the key `a` is given twice");
        assert!(to_node(&u128::MAX).is_err());
        assert!(to_node(&i128::MIN).is_err());
        assert_eq!(
            to_node(&(u128::from(u64::MAX))).ok(),
            Some(Node::Number(u64::MAX.into()))
        );
        let bools = to_node(&BTreeMap::from([(true, 1), (false, 0)])).expect("bool keys");
        assert_eq!(
            bools.as_object().expect("map").keys().collect::<Vec<_>>(),
            ["false", "true"]
        );
        let bad_keys: [Result<Node<'static>, Error>; 3] = [
            to_node(&BTreeMap::from([((1, 2), 3)])),
            to_node(&BTreeMap::from([(Some("k"), 3)])),
            to_node(&BTreeMap::from([(vec![1u8], 3)])),
        ];
        for r in bad_keys {
            let e = r.expect_err("not a key");
            assert!(e.to_string().contains("must be a string"), "{e}");
        }
    }
}
