//! Pretty JSON of a parsed-back tree ([`super::tree::Node`]), byte for byte what `serde_json::to_writer_pretty`
//! writes (two-space indent, `": "` between key and value, `[]`/`{}` when empty, the same string
//! escapes and number forms), written straight into one `String`.
//!
//! Every stack and `plan.json` go through here: serde_json's pretty writer goes through
//! `io::Write` one small write at a time and writes each indent level as its own write, which
//! made it one of the larger costs of a render. Debug builds (the tests) compare every output
//! with serde_json's; the unit tests below do too, for values built to reach every branch.

use super::tree::Node;

/// Spaces for indentation, sliced to the depth needed (deeper levels take several slices).
const SPACES: &str = "                                                                ";

/// Appends the pretty JSON of `v` to `out` (no trailing newline).
pub fn write_pretty(v: &Node<'_>, out: &mut String) {
    value(v, 0, out);
    #[cfg(debug_assertions)]
    debug_compare(v, out);
}

/// Debug builds: the text just written ends with what serde_json writes for `v`.
#[cfg(debug_assertions)]
fn debug_compare(v: &Node<'_>, out: &str) {
    let expected = serde_json::to_string_pretty(v).unwrap_or_default();
    assert!(
        out.ends_with(&expected),
        "the pretty JSON writer disagrees with serde_json"
    );
}

fn indent(depth: usize, out: &mut String) {
    let mut n = depth * 2;
    while n > 0 {
        let k = n.min(SPACES.len());
        out.push_str(&SPACES[..k]);
        n -= k;
    }
}

fn value(v: &Node<'_>, depth: usize, out: &mut String) {
    match v {
        Node::Null => out.push_str("null"),
        Node::Bool(true) => out.push_str("true"),
        Node::Bool(false) => out.push_str("false"),
        Node::Number(n) => number(n, out),
        Node::String(s) => string(s, out),
        Node::Array(a) if a.is_empty() => out.push_str("[]"),
        Node::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                indent(depth + 1, out);
                value(x, depth + 1, out);
            }
            out.push('\n');
            indent(depth, out);
            out.push(']');
        }
        Node::Object(m) if m.is_empty() => out.push_str("{}"),
        Node::Object(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                indent(depth + 1, out);
                string(k, out);
                out.push_str(": ");
                value(x, depth + 1, out);
            }
            out.push('\n');
            indent(depth, out);
            out.push('}');
        }
    }
}

/// A number as serde_json writes it (its `Display` is its serialization: integers in decimal,
/// floats in their shortest round-trip form).
fn number(n: &serde_json::Number, out: &mut String) {
    use std::fmt::Write as _;
    let _ = write!(out, "{n}");
}

/// The escape serde_json writes for byte `b`, if it needs one (`b'u'`: `\u00XX`).
const fn escape_of(b: u8) -> u8 {
    match b {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x0c => b'f',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        0..0x20 => b'u',
        _ => 0,
    }
}

/// [`escape_of`] for every byte.
const ESCAPES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = escape_of(i as u8);
        i += 1;
    }
    t
};

/// A quoted JSON string: runs of bytes that need no escape are copied whole (every escaped
/// byte is ASCII, so a run always ends on a character boundary), found eight bytes at a time
/// (the last word of a string padded with plain bytes).
fn string(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let bytes = s.as_bytes();
    let (mut i, mut start) = (0, 0);
    while i < bytes.len() {
        let m = super::escape::json_special(super::escape::word_at(bytes, i));
        if m == 0 {
            i += 8;
            continue;
        }
        i += (m.trailing_zeros() / 8) as usize;
        let b = bytes[i];
        let e = ESCAPES[usize::from(b)];
        i += 1;
        if e == 0 {
            continue;
        }
        out.push_str(&s[start..i - 1]);
        start = i;
        match e {
            b'u' => {
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
            _ => {
                out.push('\\');
                out.push(char::from(e));
            }
        }
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value as Json, json};

    fn same_as_serde(v: &Json) {
        let mut out = String::new();
        value(&Node::from(v), 0, &mut out);
        assert_eq!(out, serde_json::to_string_pretty(v).expect("serde"), "{v}");
    }

    #[test]
    fn every_kind_of_value_matches_serde_json() {
        same_as_serde(&json!(null));
        same_as_serde(&json!([]));
        same_as_serde(&json!({}));
        same_as_serde(&json!({
            "a": [1, -2, 3.5, 1e300, 0.1, -0.0, u64::MAX, i64::MIN, true, false, null],
            "b": {"c": {}, "d": [], "e": [[], {}, [[1]]]},
            "": "",
            "quote\"back\\slash": "\u{8}\u{c}\n\r\t\u{0}\u{1f}\u{7f} é — 😀 \u{2028}",
        }));
    }

    #[test]
    fn every_byte_is_escaped_as_serde_json_escapes_it() {
        let all: String = (0u32..0x800).filter_map(char::from_u32).collect();
        same_as_serde(&json!({ all.clone(): all }));
    }

    proptest::proptest! {
        /// Escapes at every offset of the eight-byte words, and runs of every length.
        #[test]
        fn strings_match_serde_json_at_every_alignment(s in "[a\"\\\\\n\u{1}\u{1f} ~é\u{7f}]{0,40}") {
            let mut out = String::new();
            string(&s, &mut out);
            proptest::prop_assert_eq!(out, serde_json::to_string(&s).expect("serde"));
        }
    }

    #[test]
    fn deep_nesting_indents_beyond_the_spaces_constant() {
        let mut v = json!("leaf");
        for i in 0..80 {
            v = if i % 2 == 0 {
                json!([v])
            } else {
                json!({ "k": v })
            };
        }
        same_as_serde(&v);
    }

    #[test]
    fn golden_stack_and_plan_are_written_back_byte_for_byte() {
        for text in [
            include_str!("../../golden/java-full/expected/stacks/pipeline.json"),
            include_str!("../../golden/java-full/expected/plan.json"),
        ] {
            let v: Json = serde_json::from_str(text).expect("golden JSON");
            let mut out = String::new();
            write_pretty(&Node::from(&v), &mut out);
            out.push('\n');
            assert_eq!(out, text);
        }
    }
}
