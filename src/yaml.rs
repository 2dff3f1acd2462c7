//! Spanned YAML: every node keeps where it came from, so every diagnostic can point at it.
//!
//! Built on `saphyr-parser` (a maintained, pure-Rust YAML 1.2 parser that reports a span for
//! every event). Scalars keep their source text and style; typing happens later, directed by
//! the schema of the document (see [`crate::schema`]), so `runtime: 3.10` stays `"3.10"` and
//! `account: 012345678901` keeps its leading zero when the schema asks for a string.
//!
//! Anchors and aliases are resolved (with budgets against "billion laughs": the expanded
//! document may have at most 200,000 nodes and 4 MiB of text, checked before an alias is
//! copied), `<<` merge keys are applied, duplicate keys are errors, and only one document is
//! allowed.

use std::collections::BTreeMap;

use saphyr_parser::{Event, Parser, ScalarStyle};

use crate::error::{Diagnostic, Pos, SourceFile, Span};

/// Largest number of nodes one document may expand to (aliases count again each time).
const NODE_BUDGET: usize = 200_000;

/// Largest amount of text (scalars and keys, in bytes) one document may expand to; aliases count
/// again each time. A 256 KiB manifest aliasing a large scalar a thousand times would otherwise
/// expand to hundreds of megabytes.
pub const TEXT_BUDGET: usize = 4 * 1024 * 1024;

/// A YAML node with its span and optional tag (`!Ref`, `!!str`).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Where the node is in the source.
    pub span: Span,
    /// The tag as written (`!Ref`, `!!str`), if any.
    pub tag: Option<String>,
    /// The content.
    pub value: Value,
}

/// The content of a node.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A scalar, untyped.
    Scalar(Scalar),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order, keys unique.
    Map(Vec<Entry>),
}

/// One key/value pair of a mapping.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The key's text.
    pub key: String,
    /// Where the key is.
    pub key_span: Span,
    /// The value.
    pub value: Node,
}

/// A scalar's source text and whether it was written plain (unquoted, not a block).
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    /// The text after YAML unescaping / folding.
    pub text: String,
    /// True when written without quotes or block indicators: only plain scalars are typed.
    pub plain: bool,
}

/// What a scalar means under the YAML 1.2 core schema.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolved {
    /// `~`, `null`, or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits in `i64`.
    Int(i64),
    /// A float (also integers too large for `i64`).
    Float(f64),
    /// Anything else.
    Str,
}

impl Scalar {
    /// Resolves a plain scalar under the YAML 1.2 core schema; quoted scalars are strings.
    pub fn resolve(&self) -> Resolved {
        if !self.plain {
            return Resolved::Str;
        }
        resolve_plain(&self.text)
    }
}

/// What a plain scalar's text means under the YAML 1.2 core schema.
pub fn resolve_plain(t: &str) -> Resolved {
    match t {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Resolved::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        _ => {}
    }
    if let Some(hex) = t.strip_prefix("0x")
        && !hex.is_empty()
        && hex.chars().all(|c| c.is_ascii_hexdigit())
    {
        return i64::from_str_radix(hex, 16).map_or(Resolved::Str, Resolved::Int);
    }
    if let Some(oct) = t.strip_prefix("0o")
        && !oct.is_empty()
        && oct.chars().all(|c| ('0'..='7').contains(&c))
    {
        return i64::from_str_radix(oct, 8).map_or(Resolved::Str, Resolved::Int);
    }
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
        return match t.parse::<i64>() {
            Ok(i) => Resolved::Int(i),
            Err(_) => t.parse::<f64>().map_or(Resolved::Str, Resolved::Float),
        };
    }
    if is_core_float(digits)
        && let Ok(f) = t.parse::<f64>()
    {
        return Resolved::Float(f);
    }
    Resolved::Str
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, sign already stripped.
fn is_core_float(s: &str) -> bool {
    // Both forms start with a digit or `.`: most plain scalars (names, types, paths) are
    // decided by their first byte, without searching them for an exponent.
    if !s
        .as_bytes()
        .first()
        .is_some_and(|c| c.is_ascii_digit() || *c == b'.')
    {
        return false;
    }
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            !(int.is_empty() && frac.is_empty())
                && int.chars().all(|c| c.is_ascii_digit())
                && frac.chars().all(|c| c.is_ascii_digit())
        }
        None => !mantissa.is_empty() && mantissa.chars().all(|c| c.is_ascii_digit()),
    };
    let exp_ok = match exp {
        None => true,
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
        }
    };
    mantissa_ok && exp_ok && (mantissa.contains('.') || exp.is_some())
}

impl Node {
    /// The scalar, if this node is one.
    pub fn as_scalar(&self) -> Option<&Scalar> {
        match &self.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// True for `~`, `null` and empty plain scalars.
    pub fn is_null(&self) -> bool {
        matches!(self.as_scalar().map(Scalar::resolve), Some(Resolved::Null))
    }

    /// A short description of the node's kind, for messages ("a mapping", "string `x`").
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Seq(_) => "a list".to_owned(),
            Value::Map(_) => "a mapping".to_owned(),
            Value::Scalar(s) => match s.resolve() {
                Resolved::Null => "nothing (null)".to_owned(),
                Resolved::Bool(b) => format!("boolean `{b}`"),
                Resolved::Int(_) | Resolved::Float(_) => format!("number `{}`", s.text),
                Resolved::Str => format!("string {}", quote_short(&s.text)),
            },
        }
    }
}

/// A string JSON-quoted and shortened to at most 60 characters, for messages.
pub fn quote_short(s: &str) -> String {
    let mut q = serde_json::to_string(s).unwrap_or_default();
    if q.chars().count() > 60 {
        q = q.chars().take(57).collect::<String>() + "...";
    }
    q
}

/// Options for [`parse`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ParseOptions {
    /// Keep local tags such as `!Ref` on nodes; when false, any tag other than `!!str` is an error.
    pub allow_tags: bool,
}

fn pos(m: &saphyr_parser::Marker) -> Pos {
    Pos {
        line: m.line(),
        col: m.col() + 1,
    }
}

fn span(s: &saphyr_parser::Span) -> Span {
    Span {
        start: pos(&s.start),
        end: pos(&s.end),
    }
}

enum Frame {
    Seq {
        start: Span,
        tag: Option<String>,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        start: Span,
        tag: Option<String>,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
    },
}

struct Builder<'a> {
    file: &'a SourceFile,
    opts: ParseOptions,
    /// Anchored nodes, with their weight (nodes, text bytes).
    anchors: BTreeMap<usize, (Node, Weight)>,
    stack: Vec<Frame>,
    root: Option<Node>,
    nodes: usize,
    text: usize,
    /// Documents started so far (one is allowed).
    documents: usize,
}

/// What a node adds to the expanded document: nodes and bytes of text.
#[derive(Clone, Copy, Debug, Default)]
struct Weight {
    nodes: usize,
    text: usize,
}

fn weigh(n: &Node) -> Weight {
    match &n.value {
        Value::Scalar(s) => Weight {
            nodes: 1,
            text: s.text.len(),
        },
        Value::Seq(items) => items
            .iter()
            .map(weigh)
            .fold(Weight { nodes: 1, text: 0 }, |a, w| Weight {
                nodes: a.nodes + w.nodes,
                text: a.text + w.text,
            }),
        Value::Map(entries) => entries.iter().fold(Weight { nodes: 1, text: 0 }, |a, e| {
            let w = weigh(&e.value);
            Weight {
                nodes: a.nodes + 1 + w.nodes,
                text: a.text + e.key.len() + w.text,
            }
        }),
    }
}

impl Builder<'_> {
    fn err(&self, sp: Span, message: impl Into<String>, help: impl Into<String>) -> Diagnostic {
        self.file.diag(sp, None, message, help)
    }

    fn tag_string(
        &self,
        tag: Option<&saphyr_parser::Tag>,
        sp: Span,
    ) -> Result<Option<String>, Diagnostic> {
        let Some(tag) = tag else { return Ok(None) };
        let written = if tag.handle == "tag:yaml.org,2002:" {
            format!("!!{}", tag.suffix)
        } else {
            format!("{}{}", tag.handle, tag.suffix)
        };
        if written == "!!str" || self.opts.allow_tags {
            Ok(Some(written))
        } else {
            Err(self.err(
                sp,
                format!("YAML tag `{written}` is not supported here"),
                "remove the tag; values are typed by the schema of this file",
            ))
        }
    }

    /// Counts `weight` against the document's budgets: an error at `sp` once they are spent.
    fn spend(&mut self, sp: Span, weight: Weight) -> Result<(), Diagnostic> {
        self.nodes = self.nodes.saturating_add(weight.nodes);
        self.text = self.text.saturating_add(weight.text);
        if self.nodes > NODE_BUDGET {
            return Err(self.err(
                sp,
                format!("document expands to more than {NODE_BUDGET} nodes"),
                "aliases are expanded where they are used; reduce the number of aliases",
            ));
        }
        if self.text > TEXT_BUDGET {
            return Err(self.err(
                sp,
                format!(
                    "document expands to more than {} MiB of text",
                    TEXT_BUDGET / (1024 * 1024)
                ),
                "aliases are expanded where they are used; alias less, or smaller values",
            ));
        }
        Ok(())
    }

    /// Adds a finished node to its parent. `weight` is what it adds to the document: one node
    /// and its own text for a scalar or a closed collection (children were counted as they
    /// came, keys with them), the whole subtree for an alias (counted before it is copied).
    fn push_node(&mut self, node: Node, weight: Weight) -> Result<(), Diagnostic> {
        self.spend(node.span, weight)?;
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Frame::Map {
                entries,
                pending_key,
                ..
            }) => {
                match pending_key.take() {
                    None => *pending_key = Some(node),
                    Some(key) => entries.push((key, node)),
                }
                Ok(())
            }
        }
    }

    fn finish_map(
        &self,
        start: Span,
        end: Span,
        tag: Option<String>,
        raw: Vec<(Node, Node)>,
    ) -> Result<Node, Diagnostic> {
        let mut entries: Vec<Entry> = Vec::with_capacity(raw.len());
        let mut merges: Vec<Node> = Vec::new();
        for (k, v) in raw {
            let key = match &k.value {
                Value::Scalar(s) => s.text.clone(),
                _ => {
                    return Err(self.err(
                        k.span,
                        "mapping keys must be plain text".to_owned(),
                        "use a simple word as the key",
                    ));
                }
            };
            let is_merge = key == "<<" && k.as_scalar().is_some_and(|s| s.plain);
            if is_merge {
                merges.push(v);
                continue;
            }
            if let Some(prev) = entries.iter().find(|e| e.key == key) {
                return Err(self.err(
                    k.span,
                    format!("duplicate key `{key}`"),
                    format!(
                        "`{key}` is already set on line {}; keep only one of them",
                        prev.key_span.start.line
                    ),
                ));
            }
            entries.push(Entry {
                key,
                key_span: k.span,
                value: v,
            });
        }
        for m in merges {
            let sources: Vec<Node> = match m.value {
                Value::Map(_) => vec![m],
                Value::Seq(items) => items,
                Value::Scalar(_) => {
                    return Err(self.err(
                        m.span,
                        "a `<<` merge key needs a mapping or a list of mappings".to_owned(),
                        "write `<<: *anchor` where the anchor names a mapping",
                    ));
                }
            };
            for src in sources {
                let Value::Map(src_entries) = src.value else {
                    return Err(self.err(
                        src.span,
                        "a `<<` merge key needs a mapping or a list of mappings".to_owned(),
                        "write `<<: *anchor` where the anchor names a mapping",
                    ));
                };
                for e in src_entries {
                    if !entries.iter().any(|x| x.key == e.key) {
                        entries.push(e);
                    }
                }
            }
        }
        Ok(Node {
            span: Span {
                start: start.start,
                end: end.end,
            },
            tag,
            value: Value::Map(entries),
        })
    }
}

/// Parses one YAML document into a spanned [`Node`] tree.
///
/// An empty document gives a null scalar. Syntax errors, duplicate keys, unsupported tags and
/// more than one document are reported as a [`Diagnostic`] pointing into `file`.
pub fn parse(file: &SourceFile, opts: ParseOptions) -> Result<Node, Diagnostic> {
    let mut b = Builder {
        file,
        opts,
        anchors: BTreeMap::new(),
        stack: Vec::new(),
        root: None,
        nodes: 0,
        text: 0,
        documents: 0,
    };
    let mut last_span = Span::default();
    for ev in Parser::new_from_str(&file.text) {
        let (event, sp) = match ev {
            Ok(x) => x,
            Err(e) => {
                let m = e.marker();
                let p = pos(m);
                return Err(file.diag(
                    Span { start: p, end: p },
                    None,
                    format!("invalid YAML: {}", e.info()),
                    "check the indentation and quoting around this position",
                ));
            }
        };
        let sp = span(&sp);
        last_span = sp;
        b.event(event, sp)?;
    }
    Ok(b.root.unwrap_or(Node {
        span: last_span,
        tag: None,
        value: Value::Scalar(Scalar {
            text: String::new(),
            plain: true,
        }),
    }))
}

/// The tag of an event.
type EventTag<'t> = Option<std::borrow::Cow<'t, saphyr_parser::Tag>>;

impl Builder<'_> {
    /// Takes one parser event (at `sp`) into the tree.
    fn event(&mut self, event: Event<'_>, sp: Span) -> Result<(), Diagnostic> {
        match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing | Event::DocumentEnd => Ok(()),
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(self.err(
                        sp,
                        "more than one YAML document in this file".to_owned(),
                        "remove the second `---` and everything after it, or split the file",
                    ));
                }
                Ok(())
            }
            Event::Alias(id) => self.alias(id, sp),
            Event::Scalar(text, style, anchor, tag) => {
                self.scalar(text.into_owned(), style, anchor, tag, sp)
            }
            Event::SequenceStart(anchor, tag) => {
                let tag = self.tag_string(tag.as_deref(), sp)?;
                self.stack.push(Frame::Seq {
                    start: sp,
                    tag,
                    anchor,
                    items: Vec::new(),
                });
                Ok(())
            }
            Event::SequenceEnd => self.sequence_end(sp),
            Event::MappingStart(anchor, tag) => {
                let tag = self.tag_string(tag.as_deref(), sp)?;
                self.stack.push(Frame::Map {
                    start: sp,
                    tag,
                    anchor,
                    entries: Vec::new(),
                    pending_key: None,
                });
                Ok(())
            }
            Event::MappingEnd => self.mapping_end(sp),
        }
    }

    /// Remembers `node` under `anchor` (0: none), with its weight.
    fn anchor(&mut self, anchor: usize, node: &Node) {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), weigh(node)));
        }
    }

    /// A copy of the anchored node `id`, once its weight fits the budget.
    fn alias(&mut self, id: usize, sp: Span) -> Result<(), Diagnostic> {
        let Some(weight) = self.anchors.get(&id).map(|(_, w)| *w) else {
            return Err(self.err(
                sp,
                "alias to an unknown anchor".to_owned(),
                "define the anchor (`&name`) before using it",
            ));
        };
        // The budget first: an alias of a large node is refused before it is copied.
        self.spend(sp, weight)?;
        if let Some(mut node) = self.anchors.get(&id).map(|(n, _)| n.clone()) {
            node.span = sp;
            self.push_node(node, Weight::default())?;
        }
        Ok(())
    }

    fn scalar(
        &mut self,
        text: String,
        style: ScalarStyle,
        anchor: usize,
        tag: EventTag<'_>,
        sp: Span,
    ) -> Result<(), Diagnostic> {
        let tag = self.tag_string(tag.as_deref(), sp)?;
        let plain = matches!(style, ScalarStyle::Plain) && tag.as_deref() != Some("!!str");
        let node = Node {
            span: sp,
            tag: tag.filter(|t| t != "!!str"),
            value: Value::Scalar(Scalar { text, plain }),
        };
        self.anchor(anchor, &node);
        let text = Weight {
            nodes: 1,
            text: node.as_scalar().map_or(0, |s| s.text.len()),
        };
        self.push_node(node, text)
    }

    fn sequence_end(&mut self, sp: Span) -> Result<(), Diagnostic> {
        let Some(Frame::Seq {
            start,
            tag,
            anchor,
            items,
        }) = self.stack.pop()
        else {
            return Err(self.err(
                sp,
                "unbalanced sequence".to_owned(),
                "check the indentation",
            ));
        };
        let node = Node {
            span: Span {
                start: start.start,
                end: sp.end,
            },
            tag,
            value: Value::Seq(items),
        };
        self.anchor(anchor, &node);
        self.push_node(node, Weight { nodes: 1, text: 0 })
    }

    fn mapping_end(&mut self, sp: Span) -> Result<(), Diagnostic> {
        let Some(Frame::Map {
            start,
            tag,
            anchor,
            entries,
            ..
        }) = self.stack.pop()
        else {
            return Err(self.err(sp, "unbalanced mapping".to_owned(), "check the indentation"));
        };
        let end = entries.last().map_or(sp, |(_, v)| v.span);
        let node = self.finish_map(start, end, tag, entries)?;
        self.anchor(anchor, &node);
        self.push_node(node, Weight { nodes: 1, text: 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(src: &str) -> Result<Node, Diagnostic> {
        parse(&SourceFile::new("t.yml", src), ParseOptions::default())
    }

    proptest::proptest! {
        /// `is_core_float` is the pattern its comment gives (sign already stripped).
        #[test]
        fn core_float_is_its_pattern(s in "[0-9.eE+a-]{0,8}") {
            let re = regex_lite::Regex::new(r"^(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
                .expect("pattern");
            let float_form = re.is_match(&s) && (s.contains('.') || s.contains(['e', 'E']));
            proptest::prop_assert_eq!(is_core_float(&s), float_form, "{:?}", s);
        }
    }

    #[test]
    fn resolves_core_schema_scalars() {
        let s = |t: &str| {
            Scalar {
                text: t.into(),
                plain: true,
            }
            .resolve()
        };
        assert_eq!(s("~"), Resolved::Null);
        assert_eq!(s(""), Resolved::Null);
        assert_eq!(s("true"), Resolved::Bool(true));
        assert_eq!(s("yes"), Resolved::Str);
        assert_eq!(s("012"), Resolved::Int(12));
        assert_eq!(s("0x1F"), Resolved::Int(31));
        assert_eq!(s("3.10"), Resolved::Float(3.1));
        assert_eq!(s("1e3"), Resolved::Float(1000.0));
        assert_eq!(s("1.2.3"), Resolved::Str);
        assert_eq!(s("."), Resolved::Str);
        assert_eq!(s("-"), Resolved::Str);
        let q = Scalar {
            text: "12".into(),
            plain: false,
        };
        assert_eq!(q.resolve(), Resolved::Str);
    }

    #[test]
    fn keeps_spans_and_source_text() {
        let n = p("a: 1\nb:\n  - \"x\"\n  - 3.10\n").expect("parses");
        let Value::Map(entries) = &n.value else {
            panic!("map")
        };
        assert_eq!(entries[0].key, "a");
        assert_eq!(entries[0].key_span.start, Pos { line: 1, col: 1 });
        let Value::Seq(items) = &entries[1].value.value else {
            panic!("seq")
        };
        assert_eq!(items[1].as_scalar().map(|s| s.text.as_str()), Some("3.10"));
        assert_eq!(items[1].span.start, Pos { line: 4, col: 5 });
    }

    #[test]
    fn rejects_duplicate_keys_with_both_lines() {
        let e = p("a: 1\nb: 2\na: 3\n").expect_err("duplicate");
        assert_eq!(e.message, "duplicate key `a`");
        assert_eq!(e.span.map(|s| s.start.line), Some(3));
        assert!(e.help.as_deref().unwrap_or("").contains("line 1"));
    }

    #[test]
    fn applies_merge_keys_and_aliases() {
        let n = p("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\n").expect("parses");
        let Value::Map(top) = &n.value else {
            panic!("map")
        };
        let Value::Map(c) = &top[1].value.value else {
            panic!("map")
        };
        let keys: Vec<_> = c
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_scalar().map(|s| s.text.clone())))
            .collect();
        assert_eq!(keys, vec![("y", Some("3".into())), ("x", Some("1".into()))]);
    }

    #[test]
    fn rejects_tags_unless_allowed_and_multiple_documents() {
        assert!(p("a: !Ref b\n").is_err());
        let n = parse(
            &SourceFile::new("t", "a: !Ref b\n"),
            ParseOptions { allow_tags: true },
        )
        .expect("tags");
        let Value::Map(e) = &n.value else {
            panic!("map")
        };
        assert_eq!(e[0].value.tag.as_deref(), Some("!Ref"));
        let e = p("a: 1\n---\nb: 2\n").expect_err("two docs");
        assert!(e.message.contains("more than one"));
    }

    #[test]
    fn limits_alias_expansion() {
        let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            src.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n", p = i - 1));
        }
        let e = p(&src).expect_err("budget");
        assert!(e.message.contains("more than"));
    }

    #[test]
    fn limits_the_text_an_alias_expands_to() {
        // 200 KiB aliased 1,000 times: 200 MB expanded, refused at 4 MiB.
        let big = "x".repeat(200 * 1024);
        let mut src = format!("a: &a {big}\nb: [");
        src.push_str(&vec!["*a"; 1000].join(", "));
        src.push_str("]\n");
        let e = p(&src).expect_err("budget");
        assert!(
            e.message.contains("more than 4 MiB of text"),
            "{}",
            e.message
        );
        assert_eq!(e.span.map(|s| s.start.line), Some(2));
        // Aliasing within the budget is fine.
        let ok = format!("a: &a {}\nb: [*a, *a, *a]\n", "y".repeat(100_000));
        assert!(p(&ok).is_ok());
    }

    #[test]
    fn reports_syntax_errors_with_location() {
        let e = p("a: [1, 2\nb: 3\n").expect_err("syntax");
        assert!(e.message.starts_with("invalid YAML"));
        assert!(e.span.is_some());
    }
}
