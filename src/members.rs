//! The members of a pretty JSON object, each value as its text, found from the text's lines
//! instead of by parsing it: a stack template's `Resources` for `fleet plan`'s resource
//! changes, and the top-level members of the prebuilt inputs (`assets/prebuilt/`) for a start
//! that reads only the members it uses.
//!
//! pipeforge writes every stack as pretty JSON, two spaces per level, as `serde_json`'s pretty
//! printer does (`render::pretty`; debug builds compare the two), and the prebuilt inputs with
//! that printer. In that layout a JSON string holds no line end, so a line's indentation is its
//! depth: a member of an object whose members are indented by `n` starts on a line indented by
//! `n`, and a value that spans lines ends on the first line indented by `n` that closes it (`}`
//! or `]`); every line in between is indented by `n + 2` or more, and the object closes on a
//! line indented by `n - 2`. Only those lines are read (the line ends are found eight bytes at
//! a time by `memchr`) and each value is sliced out of the text, where a parser steps through
//! every byte (`perf record`: ~7 % of a plan in which one language changes; a one-manifest
//! start skips four of five languages and the policy's spans, nine tenths of its file).
//!
//! A text this reading does not recognise (another layout, another line end, spaces around a
//! value, not an object, or anything after the document) gives `None`.
//!
//! How much of a value spanning lines is read depends on where the text comes from. For a
//! stack template read at run time ([`resources`]) every line in between is checked for its
//! indentation. The prebuilt inputs ([`document`], [`object`]) are embedded at build time,
//! and a test reads them as a parser does (`the_prebuilt_inputs_read_as_parsed`), so their
//! values are skimmed: the reader jumps to the first line that closes the value at its
//! member's indentation (`memchr::memmem`, one pass over the bytes) instead of stepping
//! through the lines in between, which cost a one-manifest `validate` ~15 % of its
//! instructions (`valgrind --tool=callgrind`; the policy's spans and the languages a start
//! does not use are nine tenths of those files). A member given twice is the last one, as in
//! a parser's map.
//! The values are not parsed here: the caller parses those it uses, and for a stack a value
//! whose text is the same on both sides is unchanged. So on a text in this layout that is not
//! JSON, the lines can give members where a parser gives none: the texts read here are ones
//! pipeforge wrote (a deployed template its deploy record vouches for by its hash, a template
//! just rendered, a prebuilt input embedded at build time).

use std::borrow::Cow;
use std::collections::BTreeMap;

/// Members by key (unescaped), each with its value's text as a JSON parser's raw value gives it.
pub type Members<'a> = BTreeMap<Cow<'a, str>, &'a str>;

/// The members of `text`'s top-level `Resources` object; `None` for a text not in the layout
/// above.
pub fn resources(text: &str) -> Option<Members<'_>> {
    let mut lines = Lines::of(text);
    if lines.next()?.1 != "{" {
        return None;
    }
    let mut found = None;
    loop {
        let (_, line) = lines.next()?;
        if line == "}" {
            break;
        }
        // The end of a top-level value, or a line inside one.
        if line.starts_with("  }") || line.starts_with("  ]") || line.starts_with("   ") {
            continue;
        }
        let (key, rest) = key_at(line, 2)?;
        if key != "Resources" {
            continue;
        }
        if found.is_some() {
            return None;
        }
        found = Some(members(
            &mut lines,
            text,
            without_comma(rest.strip_prefix(": ")?),
            4,
            Inside::Checked,
        )?);
    }
    after_the_end(text, &lines).then_some(found?)
}

/// The top-level members of the document `text`; `None` for a text not in the layout above.
pub fn document(text: &str) -> Option<Members<'_>> {
    let mut lines = Lines::of(text);
    let open = lines.next()?.1;
    let found = members(&mut lines, text, open, 2, Inside::Skimmed)?;
    after_the_end(text, &lines).then_some(found)
}

/// The members of `value`, an object's text as [`document`] gives a member's value, whose
/// members are indented by `indent` (4 for a member of the document); `None` for a value not
/// in the layout above.
pub fn object(value: &str, indent: usize) -> Option<Members<'_>> {
    let mut lines = Lines::of(value);
    let open = lines.next()?.1;
    let found = members(&mut lines, value, open, indent, Inside::Skimmed)?;
    (lines.at >= value.len()).then_some(found)
}

/// True when nothing but whitespace follows what `lines` read of `text`.
fn after_the_end(text: &str, lines: &Lines<'_>) -> bool {
    text.get(lines.at..).unwrap_or_default().trim().is_empty()
}

/// How the lines inside a member's value spanning lines are read (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Inside {
    /// Each is checked to be indented deeper than the member.
    Checked,
    /// Skipped: the value ends at the first line that closes it at the member's indentation.
    Skimmed,
}

/// The members, indented by `indent` (at least 2), of the object whose value starts with
/// `open` on its key's line.
fn members<'a>(
    lines: &mut Lines<'a>,
    text: &'a str,
    open: &str,
    indent: usize,
    inside_read: Inside,
) -> Option<Members<'a>> {
    const SPACES: &str = "                                ";
    let mut out = BTreeMap::new();
    match open {
        "{}" => return Some(out),
        "{" => {}
        _ => return None,
    }
    let end = SPACES.get(..indent.checked_sub(2)?)?;
    let inside = SPACES.get(..indent + 2)?;
    loop {
        let (start, line) = lines.next()?;
        // The object's end (a member's value, or the document: no comma at the top).
        if let Some(rest) = line.strip_prefix(end)
            && (rest == "}" || (rest == "}," && indent > 2))
        {
            return Some(out);
        }
        let (id, rest) = key_at(line, indent)?;
        let rest = rest.strip_prefix(": ")?;
        let from = start + line.len() - rest.len();
        let value = match without_comma(rest) {
            open @ ("{" | "[") if inside_read == Inside::Skimmed => {
                let close = if open == "{" { b'}' } else { b']' };
                let end = skim_to_close(lines, text, indent, close)?;
                text.get(from..end)?
            }
            open @ ("{" | "[") => {
                let close = if open == "{" { '}' } else { ']' };
                loop {
                    let (at, line) = lines.next()?;
                    let bare = without_comma(line);
                    if bare.len() == indent + 1
                        && bare.ends_with(close)
                        && bare.starts_with(&inside[..indent])
                    {
                        break text.get(from..at + bare.len())?;
                    }
                    if !line.starts_with(inside) {
                        return None;
                    }
                }
            }
            // A value the parser would give without the spaces around it: another layout.
            one_line if one_line.is_empty() || one_line.trim() != one_line => return None,
            one_line => text.get(from..from + one_line.len())?,
        };
        // A member given twice: the last one, as a parser's map keeps it.
        out.insert(id, value);
    }
}

/// `line` without one trailing comma.
fn without_comma(line: &str) -> &str {
    line.strip_suffix(',').unwrap_or(line)
}

/// The key of a member whose line is indented by exactly `indent` spaces (unescaped), and the
/// rest of the line after its closing quote.
fn key_at(line: &str, indent: usize) -> Option<(Cow<'_, str>, &str)> {
    let (spaces, quoted) = line.split_at_checked(indent)?;
    if spaces.bytes().any(|b| b != b' ') || !quoted.starts_with('"') {
        return None;
    }
    let bytes = quoted.as_bytes();
    let mut at = 1;
    let end = loop {
        at += memchr::memchr2(b'"', b'\\', bytes.get(at..)?)?;
        if bytes[at] == b'"' {
            break at;
        }
        // An escape: its next byte is never the closing quote.
        at += 2;
    };
    let raw = &quoted[1..end];
    let key = if raw.contains('\\') {
        Cow::Owned(serde_json::from_str::<String>(&quoted[..=end]).ok()?)
    } else {
        Cow::Borrowed(raw)
    };
    Some((key, &quoted[end + 1..]))
}

/// Moves `lines` past the line that closes, with `close`, a value whose member is indented by
/// `indent`: the first line after the member's that is `indent` spaces, `close` and at most a
/// comma. Returns where the value ends (after `close`).
fn skim_to_close(lines: &mut Lines<'_>, text: &str, indent: usize, close: u8) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut needle = Vec::with_capacity(indent + 2);
    needle.push(b'\n');
    needle.resize(indent + 1, b' ');
    needle.push(close);
    // From the line end before the next line, so that the next line can be the close.
    let mut from = lines.at.checked_sub(1)?;
    loop {
        let start = from + memchr::memmem::find(bytes.get(from..)?, &needle)? + 1;
        let line_end = memchr::memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |n| start + n);
        let after = &bytes[start + indent + 1..line_end];
        if after.is_empty() || after == b"," {
            lines.skip_to(line_end + 1);
            return Some(start + indent + 1);
        }
        from = line_end;
    }
}

/// The lines of a text (ends at `\n`), each with the offset it starts at.
struct Lines<'a> {
    text: &'a str,
    /// Where the next line starts.
    at: usize,
    /// Where `ends` started (its offsets are from there).
    base: usize,
    ends: memchr::Memchr<'a>,
}

impl<'a> Lines<'a> {
    fn of(text: &'a str) -> Lines<'a> {
        Lines {
            text,
            at: 0,
            base: 0,
            ends: memchr::memchr_iter(b'\n', text.as_bytes()),
        }
    }

    /// Continues with the line that starts at `at` (after a line end).
    fn skip_to(&mut self, at: usize) {
        self.at = at;
        self.base = at.min(self.text.len());
        self.ends = memchr::memchr_iter(b'\n', &self.text.as_bytes()[self.base..]);
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = (usize, &'a str);

    fn next(&mut self) -> Option<(usize, &'a str)> {
        if self.at >= self.text.len() {
            return None;
        }
        let start = self.at;
        let end = self.ends.next().map_or(self.text.len(), |e| self.base + e);
        self.at = end + 1;
        Some((start, self.text.get(start..end)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a JSON parser gives: the `Resources` members as raw values, or nothing.
    fn parsed(text: &str) -> Option<BTreeMap<String, String>> {
        #[derive(serde::Deserialize)]
        struct Raw<'a> {
            #[serde(rename = "Resources", borrow)]
            resources: BTreeMap<String, &'a serde_json::value::RawValue>,
        }
        serde_json::from_str::<Raw<'_>>(text).ok().map(|r| {
            r.resources
                .into_iter()
                .map(|(k, v)| (k, v.get().to_owned()))
                .collect()
        })
    }

    fn read(text: &str) -> Option<BTreeMap<String, String>> {
        resources(text).map(|m| {
            m.into_iter()
                .map(|(k, v)| (k.into_owned(), v.to_owned()))
                .collect()
        })
    }

    /// Pretty JSON, as pipeforge and `serde_json` write it.
    fn pretty(v: &serde_json::Value) -> String {
        serde_json::to_string_pretty(v).unwrap_or_default()
    }

    #[test]
    fn a_rendered_stack_reads_as_parsed() {
        let text = include_str!("../examples/pipeline.yml");
        let file = crate::error::SourceFile::new("pipeline.yml", text);
        let inputs = crate::Inputs::load(None, None, None).expect("inputs");
        let bundle = crate::generate_files(
            &file,
            &inputs.org,
            &inputs.catalog,
            &inputs.templates,
            &crate::date::Evaluation::default(),
        )
        .expect("render");
        let mut stacks = 0;
        for (path, bytes) in bundle.files.outputs.iter() {
            if !path.starts_with("stacks/") {
                continue;
            }
            let text = std::str::from_utf8(bytes).expect("utf-8");
            let read = read(text).expect("a rendered stack is in the layout");
            assert!(!read.is_empty(), "{path}: {} resources", read.len());
            assert_eq!(Some(read), parsed(text), "{path}");
            stacks += 1;
        }
        assert!(stacks >= 2, "{stacks} stacks");
    }

    #[test]
    fn other_layouts_and_other_documents_are_left_to_the_parser() {
        for text in [
            "",
            "{}",
            "[1]",
            "{\"Resources\": {\"A\": 1}}",
            "{\r\n  \"Resources\": {\r\n    \"A\": 1\r\n  }\r\n}",
            "{\n  \"Resources\": 3\n}",
            "{\n  \"Resources\": [\n    1\n  ]\n}",
            "{\n  \"Resources\": {\n    \"A\": 1\n  },\n  \"Resources\": {}\n}",
            "{\n  \"Resources\": {\n    \"A\": 1\n  }\n}\nx",
            "{\n  \"Resources\": {\n    \"A\": {\n     \"B\": 1\n    }\n  }\n}",
            "{\n  \"Resources\": {\n    \"A\": {\n      \"B\": 1\n    }x\n  }\n}",
            "{\n  \"Resources\": {\n    \"A\": {\n      \"B\": 1\n",
            "{\n    \"Resources\": {\n        \"A\": 1\n    }\n}",
            "{\n  \"Resources\": {\n    \"A\\u\": 1\n  }\n}",
            "{\n  \"Resources\": {\n    \"A\": 1 \n  }\n}",
            "{\n  \"Resources\": {\n    \"A\": 1\r\n  }\n}",
            "{\n  \"Resources\": {\n    \"A\":  1\n  }\n}",
            "{\n  \"Resources\": {\n    \"A\": \n  }\n}",
        ] {
            assert_eq!(read(text), None, "{text:?}");
        }
        // In the layout, but no `Resources`: nothing, as the parser finds none.
        assert_eq!(read("{\n  \"Outputs\": {}\n}"), None);
        assert_eq!(parsed("{\n  \"Outputs\": {}\n}"), None);
    }

    #[test]
    fn escaped_keys_and_one_line_values_read_as_parsed() {
        let text = "{\n  \"Resource\\u0073\": {\n    \"A\\\"B\": \"x,\",\n    \"C\": [],\n    \"D\": {},\n    \"E\": 1.5e3,\n    \"F\": [\n      {\n        \"G\": \"  }\"\n      }\n    ],\n    \"A\\\"B\": null\n  },\n  \"Outputs\": {}\n}\n";
        let read = read(text).expect("in the layout");
        assert_eq!(Some(read.clone()), parsed(text));
        assert_eq!(read.get("A\"B").map(String::as_str), Some("null"));
        assert_eq!(read.len(), 5);
    }

    /// A JSON value of a few levels: every kind, strings with escapes, quotes, `: ` and
    /// brackets in them, and keys that repeat.
    fn value(depth: u32) -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-c\"\\\\:,{}\\[\\] \n\t\u{e9}]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(depth, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec(("[A-C\"\\\\ ]{1,3}", inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn pretty_documents_read_as_parsed(
            resources in proptest::collection::vec(("[A-Z\"\\\\]{1,3}", value(3)), 0..6),
            before in proptest::option::of(value(2)),
            after in proptest::option::of(value(2)),
        ) {
            let mut doc = serde_json::Map::new();
            if let Some(b) = before {
                doc.insert("Metadata".to_owned(), b);
            }
            doc.insert(
                "Resources".to_owned(),
                serde_json::Value::Object(resources.into_iter().collect()),
            );
            if let Some(a) = after {
                doc.insert("Outputs".to_owned(), a);
            }
            let text = pretty(&serde_json::Value::Object(doc));
            proptest::prop_assert_eq!(read(&text), parsed(&text));
            let with_end = format!("{text}\n");
            proptest::prop_assert_eq!(read(&with_end), parsed(&with_end));
        }
    }

    /// What a JSON parser gives for an object's text: its members as raw values.
    fn parsed_object(text: &str) -> Option<BTreeMap<String, String>> {
        serde_json::from_str::<BTreeMap<String, &serde_json::value::RawValue>>(text)
            .ok()
            .map(|m| {
                m.into_iter()
                    .map(|(k, v)| (k, v.get().to_owned()))
                    .collect()
            })
    }

    fn owned(m: Members<'_>) -> BTreeMap<String, String> {
        m.into_iter()
            .map(|(k, v)| (k.into_owned(), v.to_owned()))
            .collect()
    }

    proptest::proptest! {
        /// A whole document's members, and those of each member that is an object, are the
        /// parser's.
        #[test]
        fn documents_and_their_objects_read_as_parsed(
            members in proptest::collection::vec(("[a-z\"\\\\]{1,3}", value(3)), 0..6),
        ) {
            let doc: serde_json::Map<String, serde_json::Value> = members.into_iter().collect();
            let text = pretty(&serde_json::Value::Object(doc));
            let read = document(&text);
            proptest::prop_assert_eq!(read.clone().map(owned), parsed_object(&text));
            for (key, value) in read.into_iter().flatten() {
                if value.starts_with('{') {
                    proptest::prop_assert_eq!(
                        object(value, 4).map(owned),
                        parsed_object(value),
                        "{}", key
                    );
                }
            }
        }
    }

    /// The prebuilt inputs are in the layout, and read as a parser reads them.
    #[test]
    fn the_prebuilt_inputs_read_as_parsed() {
        // Each file with the member a start keeps as text: the spans, the languages.
        for (text, kept, at_least) in [
            (crate::assets::PREBUILT_ORG, "spans", 2),
            (crate::assets::PREBUILT_CATALOG, "languages", 5),
        ] {
            let text = text.expect("committed");
            let top = document(text).expect("in the layout");
            assert_eq!(Some(owned(top.clone())), parsed_object(text));
            assert_eq!(top.len(), 3);
            let value = top.get(kept).copied().expect(kept);
            let members = object(value, 4).map(owned).expect(kept);
            assert!(members.len() >= at_least, "{kept}: {}", members.len());
            assert_eq!(Some(members), parsed_object(value));
        }
    }

    /// Texts that are not documents in the layout, or objects at the indentation given.
    #[test]
    fn other_layouts_are_not_read() {
        for text in [
            "",
            "[]",
            "{\"a\": 1}",
            "{\n  \"a\": 1\n},",
            "{\n  \"a\": 1\n}\nx",
            "{\n  \"a\":  1\n}",
            "{\n   \"a\": 1\n}",
            "{\r\n  \"a\": 1\r\n}",
            // A closing bracket at the right column but not after the indentation.
            "{\n  \"a\": {\n x}\n}",
        ] {
            assert!(document(text).is_none(), "{text:?}");
        }
        assert_eq!(document("{}").map(owned), Some(BTreeMap::new()));
        // A value's inner lines are skimmed, not checked: this one, indented no deeper than
        // its member, reads as a parser reads it (`resources` refuses it; see above).
        let loose = "{\n  \"a\": {\n  \"b\": 1\n  },\n  \"c\": [\n  2\n  ]\n}";
        assert_eq!(document(loose).map(owned), parsed_object(loose));
        assert_eq!(document(loose).map(|m| m.len()), Some(2));
        let empty = "{\n  \"a\": {\n  }\n}";
        assert_eq!(document(empty).map(owned), parsed_object(empty));
        assert!(document(empty).is_some());
        // A line that starts like the close but goes on is not the close (nor JSON: what the
        // skim trusts is the layout of a text pipeforge wrote).
        let near = "{\n  \"a\": {\n  }x\n  },\n  \"b\": 1\n}";
        assert_eq!(
            document(near).map(owned),
            Some(BTreeMap::from([
                ("a".to_owned(), "{\n  }x\n  }".to_owned()),
                ("b".to_owned(), "1".to_owned()),
            ]))
        );
        let doc = "{\n  \"a\": {\n    \"b\": [\n      1\n    ],\n    \"c\": {}\n  }\n}";
        let a = document(doc).expect("read")["a"];
        assert_eq!(
            object(a, 4).map(owned),
            Some(BTreeMap::from([
                ("b".to_owned(), "[\n      1\n    ]".to_owned()),
                ("c".to_owned(), "{}".to_owned()),
            ]))
        );
        assert!(object(a, 2).is_none());
        assert!(object(a, 6).is_none());
        assert!(object(&format!("{a}\nx"), 4).is_none());
    }
}
