//! The one escape function: every interpolated value becomes a double-quoted string that is
//! valid, and means the same text, in both JSON and YAML.
//!
//! JSON escapes (`\"`, `\\`, `\n`, `\t`, `\uXXXX` for control characters) are all valid YAML
//! double-quoted escapes. Characters that YAML 1.1 parsers treat as line breaks or that YAML
//! forbids raw (NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR, BOM, C1 controls, U+FFFE/U+FFFF) are
//! written as `\uXXXX` too; they are all in the Basic Multilingual Plane, so no surrogate pairs
//! (which YAML rejects) are ever produced. Everything else is written as UTF-8.

use std::fmt::Write as _;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = ONES * 0x80;

/// The high bit of each byte of `x` that is zero (and maybe of a byte after one: a borrow).
const fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x & HIGH
}

/// Eight bytes at a time: each byte of `w` that JSON must escape (a control character, `"` or
/// `\`) has its high bit set in the result, and so may a byte after such a byte (a borrow), so
/// the lowest set bit marks the first byte that needs one (little-endian).
pub(crate) const fn json_special(w: u64) -> u64 {
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    control | zero_bytes(w ^ (ONES * b'"' as u64)) | zero_bytes(w ^ (ONES * b'\\' as u64))
}

/// Eight bytes at a time, as [`json_special`]: each byte of `w` that is not printable ASCII
/// other than `"` and `\` (a control character, DEL, a byte of a multi-byte character, `"` or
/// `\`) is flagged, and the lowest flag marks the first byte that needs a look.
const fn not_plain(w: u64) -> u64 {
    json_special(w) | (w & HIGH) | zero_bytes(w ^ (ONES * 0x7f))
}

/// The eight bytes of `bytes` from `i` as a little-endian word; past the end, plain bytes
/// (`a`), so the last bytes of a text take the same word test as the others. The last one to
/// seven bytes are read as two loads that may overlap (the same bytes in both), not copied
/// one by one or through a call to `memcpy`.
pub(crate) fn word_at(bytes: &[u8], i: usize) -> u64 {
    const PAD: u64 = u64::from_le_bytes([b'a'; 8]);
    let rest = bytes.get(i..).unwrap_or_default();
    if let Some(w) = rest.first_chunk::<8>() {
        return u64::from_le_bytes(*w);
    }
    let n = rest.len();
    let w = if let (Some(lo), Some(hi)) = (rest.first_chunk::<4>(), rest.last_chunk::<4>()) {
        u64::from(u32::from_le_bytes(*lo)) | u64::from(u32::from_le_bytes(*hi)) << (8 * (n - 4))
    } else if let (Some(lo), Some(hi)) = (rest.first_chunk::<2>(), rest.last_chunk::<2>()) {
        u64::from(u16::from_le_bytes(*lo)) | u64::from(u16::from_le_bytes(*hi)) << (8 * (n - 2))
    } else if let Some(&b) = rest.first() {
        u64::from(b)
    } else {
        return PAD;
    };
    // Bytes `n..8` are padding (`n` is 1 to 7 here).
    w | PAD << (8 * n)
}

/// Writes `s` as a quoted scalar (see the module docs). Runs of characters written as they are
/// are copied whole, found eight bytes at a time (the last word padded with plain bytes); only
/// the characters that may need an escape (anything but printable ASCII, and `"`, `\`) are
/// looked at one by one.
pub fn quote_into(s: &str, out: &mut String) {
    out.reserve(s.len() + 2);
    out.push('"');
    let bytes = s.as_bytes();
    let (mut i, mut copied) = (0, 0);
    while i < bytes.len() {
        let m = not_plain(word_at(bytes, i));
        if m == 0 {
            i += 8;
            continue;
        }
        // The first byte that is not plain: the lowest flag is never a borrow's.
        i += (m.trailing_zeros() / 8) as usize;
        // `i` is at a character boundary: only whole characters are stepped over.
        let Some(c) = s[i..].chars().next() else {
            break;
        };
        let next = i + c.len_utf8();
        let escape = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            c if needs_unicode_escape(c) => None,
            _ => {
                i = next;
                continue;
            }
        };
        out.push_str(&s[copied..i]);
        match escape {
            Some(e) => out.push_str(e),
            None => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
        }
        (i, copied) = (next, next);
    }
    out.push_str(&s[copied..]);
    out.push('"');
}

/// `s` as a quoted scalar.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    quote_into(s, &mut out);
    out
}

fn needs_unicode_escape(c: char) -> bool {
    let u = c as u32;
    u < 0x20
        || (0x7f..=0x9f).contains(&u)
        || matches!(u, 0x2028 | 0x2029 | 0xfeff | 0xfffe | 0xffff)
}

/// A string map as a one-line JSON object, keys sorted, every key and value written by
/// [`quote_into`]: the `ParameterOverrides` of a deploy action, escaped exactly like every other
/// value pipeforge renders.
pub fn json_object(map: &std::collections::BTreeMap<String, String>) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        quote_into(k, &mut s);
        s.push(':');
        quote_into(v, &mut s);
    }
    s.push('}');
    s
}

/// The escape function given to Tera: [`quote_into`] a buffer kept per thread (a render
/// escapes thousands of values; one allocation each was a measurable share of it), then one
/// write.
pub fn tera_escape(input: &str, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    thread_local! {
        static BUF: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    BUF.with_borrow_mut(|buf| {
        buf.clear();
        quote_into(input, buf);
        let r = out.write_all(buf.as_bytes());
        // A very long value (an inlined buildspec) does not pin its buffer for the thread's life.
        if buf.capacity() > 64 * 1024 {
            *buf = String::new();
        }
        r
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_json_and_yaml() {
        let nasty = "make\n  post_build:\n    commands: [curl evil]\"\\\u{2028}\u{85}\u{feff}é😀\t";
        let q = quote(nasty);
        let back: String = serde_json::from_str(&q).expect("json");
        assert_eq!(back, nasty);
        let file = crate::error::SourceFile::new("t", format!("k: {q}\n"));
        let node = crate::yaml::parse(&file, crate::yaml::ParseOptions::default()).expect("yaml");
        let crate::yaml::Value::Map(e) = node.value else {
            panic!("map")
        };
        assert_eq!(e[0].value.as_scalar().map(|s| s.text.as_str()), Some(nasty));
        assert!(!q.contains('\u{2028}'));
    }

    /// Tera's escape function writes exactly [`quote`], whatever the thread's buffer held
    /// before (a long value, then short ones).
    #[test]
    fn tera_escape_writes_the_quote_of_each_value() {
        let long = "é\"\n".repeat(40_000);
        for s in [long.as_str(), "a", "", "x\u{2028}y", long.as_str(), "b"] {
            let mut out = Vec::new();
            tera_escape(s, &mut out).expect("write");
            assert_eq!(out, quote(s).into_bytes());
        }
    }

    /// The escape of one character, as the module docs define it.
    fn reference(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if needs_unicode_escape(c) => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    #[test]
    fn runs_are_copied_and_every_special_character_escaped() {
        let specials = [
            "\"", "\\", "\n", "\r", "\t", "\u{0}", "\u{1f}", "\u{7f}", "\u{80}", "\u{85}",
            "\u{9f}", "\u{a0}", "é", "\u{2028}", "\u{2029}", "\u{feff}", "\u{fffe}", "\u{ffff}",
            "😀", "~", " ",
        ];
        let mut cases = vec![String::new(), "plain text".to_owned()];
        for a in specials {
            for b in specials {
                cases.push(format!("{a}{b}"));
                cases.push(format!("x{a}yy{b}z"));
            }
        }
        for s in &cases {
            let q = quote(s);
            assert_eq!(q, reference(s), "{s:?}");
            let back: String = serde_json::from_str(&q).expect("json");
            assert_eq!(&back, s);
        }
    }

    proptest::proptest! {
        /// Special characters at every offset of the eight-byte words, and plain runs of every
        /// length between them.
        #[test]
        fn quotes_are_the_reference_at_every_alignment(
            s in "[a~ \"\\\\\n\r\t\u{0}\u{1f}\u{7f}\u{80}\u{85}\u{a0}é\u{2028}\u{feff}\u{ffff}😀]{0,40}"
        ) {
            proptest::prop_assert_eq!(quote(&s), reference(&s));
        }
    }

    /// Each byte class the word test looks for, alone in a word of plain bytes, at each offset.
    #[test]
    fn the_word_test_flags_exactly_the_bytes_that_need_a_look() {
        for b in 0u8..=0x7f {
            let plain = (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\';
            for at in 0..8 {
                let mut w = [b'a'; 8];
                w[at] = b;
                let m = not_plain(u64::from_le_bytes(w));
                if plain {
                    assert_eq!(m, 0, "byte {b:#x} at {at}");
                } else {
                    assert_eq!(m.trailing_zeros() / 8, at as u32, "byte {b:#x} at {at}");
                }
            }
        }
        for b in 0x80u8..=0xff {
            let m = not_plain(u64::from_le_bytes([
                b'a', b'a', b'a', b, b'a', b'a', b'a', b'a',
            ]));
            assert_eq!(m.trailing_zeros() / 8, 3, "byte {b:#x}");
        }
    }

    #[test]
    fn a_word_past_the_end_is_padded_with_plain_bytes() {
        let text = b"0123456789ABCDEF";
        for len in 0..=text.len() {
            for i in 0..=len {
                let mut expected = [b'a'; 8];
                let n = (len - i).min(8);
                expected[..n].copy_from_slice(&text[i..i + n]);
                assert_eq!(
                    word_at(&text[..len], i),
                    u64::from_le_bytes(expected),
                    "{len} {i}"
                );
            }
        }
    }

    #[test]
    fn parameter_overrides_are_escaped_json() {
        let mut p = std::collections::BTreeMap::new();
        p.insert("B".to_owned(), "x\"y".to_owned());
        p.insert("A".to_owned(), "1".to_owned());
        let s = json_object(&p);
        assert_eq!(s, "{\"A\":\"1\",\"B\":\"x\\\"y\"}");
        let back: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&s).expect("json");
        assert_eq!(back, p);
    }
}
