//! A fast path for reading rendered stack templates: a parser for the block-and-flow YAML subset
//! that stack templates are written in, straight to CloudFormation JSON.
//!
//! Rendering a pipeline stack produces about 50 KB of YAML; the general parser
//! ([`crate::yaml::parse`], spanned, with anchors and merge keys) reads it in about a millisecond,
//! which alone would use half of the per-pipeline time budget. This parser handles what the
//! templates use — block mappings and sequences, single-line flow collections, plain, single- and
//! double-quoted single-line scalars, comments, and the CloudFormation short-form tags — and
//! gives up (`None`) on anything else: anchors and aliases, block scalars, multi-line scalars,
//! merge keys, complex keys, directives, documents, tabs in indentation, duplicate keys, unknown
//! tags, and any syntax error. The caller then takes the general path, which accepts the rest of
//! YAML and reports errors with their location. Both paths type scalars with the same YAML 1.2
//! core schema ([`crate::yaml::Scalar::resolve`]) and convert tags the same way
//! ([`super::cfn`]); tests check that they agree.

use std::borrow::Cow;

use serde_json::Number;

use super::tree::{Node, Object};

use crate::yaml::{Resolved, resolve_plain};

/// Parses `text` when it stays within the supported subset; `None` otherwise.
pub fn parse(text: &str) -> Option<Node<'_>> {
    parse_with(text, true)
}

/// Like [`parse`], but any tag (`!Ref`, `!!str`, ...) makes it give up: for files such as
/// buildspecs, where tags have no meaning and the general parser rejects them with a location.
pub fn parse_untagged(text: &str) -> Option<Node<'_>> {
    parse_with(text, false)
}

fn parse_with(text: &str, tags: bool) -> Option<Node<'_>> {
    // `memchr`, not `str::contains`: the standard library's byte search reads eight bytes a step,
    // this one a vector register's worth, and it reads every rendered stack whole.
    if memchr::memchr(b'\r', text.as_bytes()).is_some() {
        return None;
    }
    let mut lines = Vec::with_capacity(text.len() / 32);
    for (raw, has_hash) in split_lines(text) {
        let body = trim_start_spaces(raw);
        let indent = raw.len() - body.len();
        if body.starts_with('\t') {
            return None;
        }
        // Without `#` there is no comment (an unclosed quote fails later, in `quoted`).
        let content = if has_hash {
            strip_comment(body)?
        } else {
            trim_end_spaces(body)
        };
        if content.is_empty() {
            continue;
        }
        if indent == 0 && (content.starts_with("---") || content.starts_with("...")) {
            return None;
        }
        if content.starts_with('%') {
            return None;
        }
        lines.push(Line { indent, content });
    }
    let mut p = Parser {
        lines,
        pos: 0,
        tags,
    };
    if p.lines.is_empty() {
        return Some(Node::Null);
    }
    let first = p.lines[0].indent;
    let v = p.block(first)?;
    (p.pos == p.lines.len()).then_some(v)
}

/// The lines of `text` (what `text.split('\n')` gives), each with whether it holds a `#`: one
/// scan finds both bytes, where splitting and then searching each line for `#` went over every
/// line twice.
fn split_lines(text: &str) -> impl Iterator<Item = (&str, bool)> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let s = rest?;
        let b = s.as_bytes();
        let (end, hash) = match memchr::memchr2(b'\n', b'#', b) {
            // A `#`: the rest of the line only needs its end.
            Some(j) if b[j] == b'#' => (memchr::memchr(b'\n', &b[j..]).map(|k| j + k), true),
            found => (found, false),
        };
        match end {
            Some(i) => {
                rest = Some(&s[i + 1..]);
                Some((&s[..i], hash))
            }
            None => {
                rest = None;
                Some((s, hash))
            }
        }
    })
}

/// `s` without its leading spaces: `trim_start_matches(' ')`, byte by byte (the `char` pattern
/// decodes every character it passes, and this runs on every line of every rendered file).
fn trim_start_spaces(s: &str) -> &str {
    let n = s.bytes().take_while(|&b| b == b' ').count();
    &s[n..]
}

/// `s` without its trailing spaces: `trim_end_matches(' ')`, byte by byte.
fn trim_end_spaces(s: &str) -> &str {
    let n = s.bytes().rev().take_while(|&b| b == b' ').count();
    &s[..s.len() - n]
}

#[derive(Clone, Copy)]
struct Line<'a> {
    indent: usize,
    content: &'a str,
}

/// The line without its comment and trailing spaces; `None` when a quote is not closed on the
/// line (multi-line scalars are not supported).
fn strip_comment(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    let mut i = 0;
    // A comment starts at `#` after white space; a quote opens a scalar at the start of a
    // token (after white space or a flow indicator or `:`).
    let (mut after_space, mut token_start) = (true, true);
    while i < b.len() {
        match b[i] {
            b'#' if after_space => return Some(trim_end_spaces(&s[..i])),
            // A quoted scalar is skipped to its closing quote by `memchr`: the buildspecs a
            // pipeline stack holds are long double-quoted strings with `#` in them.
            b'"' | b'\'' if token_start => {
                i = closing_quote(b, i)?;
                (after_space, token_start) = (false, false);
            }
            b' ' | b'\t' => (after_space, token_start) = (true, true),
            b'[' | b'{' | b',' | b':' => (after_space, token_start) = (false, true),
            _ => (after_space, token_start) = (false, false),
        }
        i += 1;
    }
    Some(trim_end_spaces(s))
}

/// Where the quoted scalar opened by the quote at `b[open]` closes (the index of its closing
/// quote), `None` when the line ends first: a double-quoted scalar skips the byte after each
/// backslash, a single-quoted one each doubled quote. It only finds the end; whether the
/// escapes are valid is [`Cursor::quoted`]'s to say, and where `quoted` reads a scalar, its
/// end is this one (`\u` digits hold no quote or backslash).
fn closing_quote(b: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    if b[open] == b'"' {
        loop {
            i += memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
            if b[i] == b'"' {
                return Some(i);
            }
            i += 2;
        }
    }
    loop {
        i += memchr::memchr(b'\'', b.get(i..)?)?;
        if b.get(i + 1) != Some(&b'\'') {
            return Some(i);
        }
        i += 2;
    }
}

struct Parser<'a> {
    lines: Vec<Line<'a>>,
    pos: usize,
    /// Whether tags are accepted (converted to intrinsics) or make the parse give up.
    tags: bool,
}

fn is_seq_item(content: &str) -> bool {
    content == "-" || content.starts_with("- ")
}

impl<'a> Parser<'a> {
    /// The block node starting at the current line, whose lines are indented by `indent`.
    fn block(&mut self, indent: usize) -> Option<Node<'a>> {
        let line = *self.lines.get(self.pos)?;
        if line.indent != indent {
            return None;
        }
        if is_seq_item(line.content) {
            self.seq(indent)
        } else {
            self.map(indent)
        }
    }

    /// The value of a key or item whose inline part is empty (or only a tag): the block on the
    /// next lines, or null.
    fn value_below(&mut self, parent_indent: usize, in_map: bool) -> Option<Node<'a>> {
        match self.lines.get(self.pos) {
            Some(next) if next.indent > parent_indent => self.block(next.indent),
            // `key:` followed by `- item` at the key's own indentation.
            Some(next) if in_map && next.indent == parent_indent && is_seq_item(next.content) => {
                self.seq(parent_indent)
            }
            _ => Some(Node::Null),
        }
    }

    fn map(&mut self, indent: usize) -> Option<Node<'a>> {
        let mut m = Vec::new();
        while let Some(line) = self.lines.get(self.pos).copied() {
            if line.indent < indent {
                break;
            }
            if line.indent > indent || is_seq_item(line.content) {
                return None;
            }
            let (key, rest) = split_key(line.content)?;
            if key == "<<" {
                return None;
            }
            self.pos += 1;
            let value = self.value(rest, indent, true)?;
            m.push((key, value));
        }
        Object::from_entries(m).map(Node::Object)
    }

    fn seq(&mut self, indent: usize) -> Option<Node<'a>> {
        let mut items = Vec::new();
        while let Some(line) = self.lines.get(self.pos).copied() {
            if line.indent < indent || !is_seq_item(line.content) {
                // A sequence at its key's indentation ends at the next key.
                break;
            }
            if line.indent > indent {
                return None;
            }
            let item = trim_start_spaces(&line.content[1..]);
            if item.starts_with("- ") || item == "-" {
                return None;
            }
            if !item.is_empty() && split_key(item).is_some() {
                // `- key: value` starts a mapping indented at the key's column.
                let column = indent + (line.content.len() - item.len());
                self.lines[self.pos] = Line {
                    indent: column,
                    content: item,
                };
                items.push(self.map(column)?);
            } else {
                self.pos += 1;
                items.push(self.value(item, indent, false)?);
            }
        }
        Some(Node::Array(items))
    }

    /// The value after `key:` or `- ` on a line (`rest`), with whatever block follows it.
    fn value(&mut self, rest: &'a str, indent: usize, in_map: bool) -> Option<Node<'a>> {
        if rest.is_empty() {
            return self.value_below(indent, in_map);
        }
        // A lone tag: the tagged value is the block below (`Value: !Join` then a list).
        if rest.starts_with('!') && !rest.contains(' ') {
            if !self.tags {
                return None;
            }
            let below = self.value_below(indent, in_map)?;
            if below.is_null() {
                return None;
            }
            return tagged(rest, below);
        }
        let mut cur = Cursor {
            s: rest,
            i: 0,
            tags: self.tags,
        };
        let v = cur.node(false)?;
        cur.skip_spaces();
        if cur.i != rest.len() {
            return None;
        }
        // An inline value cannot continue on more indented lines.
        if self.lines.get(self.pos).is_some_and(|n| n.indent > indent) {
            return None;
        }
        Some(v)
    }
}

/// Splits `key: rest` (or `key:` at the end of the line); `None` when the line is not a
/// mapping entry. A plain key is borrowed from the line (only a quoted one is unescaped into a
/// new string), so asking whether a line is an entry allocates nothing.
fn split_key(content: &str) -> Option<(Cow<'_, str>, &str)> {
    let b = content.as_bytes();
    match b.first()? {
        b'"' | b'\'' => {
            // Most quoted lines are sequence items (a buildspec's commands), not keys: find
            // the closing quote and the `:` after it before unescaping anything.
            let close = closing_quote(b, 0)?;
            let rest = trim_start_spaces(&content[close + 1..]).strip_prefix(':')?;
            if !(rest.is_empty() || rest.starts_with(' ')) {
                return None;
            }
            let key = Cursor {
                s: content,
                i: 0,
                tags: false,
            }
            .quoted()?;
            Some((key, trim_start_spaces(rest)))
        }
        b'[' | b'{' | b'!' | b'&' | b'*' | b'?' | b'|' | b'>' | b'%' | b'@' | b'`' | b'#'
        | b',' | b']' | b'}' => None,
        _ => {
            let (key, rest) = match find_colon_space(content) {
                Some(i) => (&content[..i], trim_start_spaces(&content[i + 2..])),
                None => (content.strip_suffix(':')?, ""),
            };
            if key.is_empty()
                || key.ends_with(' ')
                || key
                    .bytes()
                    .any(|c| matches!(c, b'[' | b']' | b'{' | b'}' | b','))
            {
                return None;
            }
            if key == "-" || key.starts_with("- ") {
                return None;
            }
            Some((Cow::Borrowed(key), rest))
        }
    }
}

/// Where `": "` first occurs in `s` (what `s.find(": ")` gives, without setting up a substring
/// search for each key).
fn find_colon_space(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut from = 0;
    while let Some(j) = b.get(from..)?.iter().position(|&c| c == b':') {
        let i = from + j;
        if b.get(i + 1) == Some(&b' ') {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

/// Applies a tag to a value the way [`super::cfn::to_json`] does.
fn tagged<'a>(tag: &str, v: Node<'a>) -> Option<Node<'a>> {
    if tag == "!!str" {
        return match v {
            Node::String(_) => Some(v),
            _ => None,
        };
    }
    let key = super::cfn::intrinsic(tag)?;
    let arg = match (key, v) {
        ("Fn::GetAtt", Node::String(s)) => {
            let (res, attr) = split_at_dot(s)?;
            Node::Array(vec![Node::String(res), Node::String(attr)])
        }
        ("Ref" | "Condition", v @ Node::String(_)) => v,
        ("Ref" | "Condition", _) => return None,
        (_, v) => v,
    };
    Object::from_entries(vec![(Cow::Borrowed(key), arg)]).map(Node::Object)
}

/// `Resource.Attribute` split at its first dot, both parts non-empty (borrowed when `s` is).
fn split_at_dot(s: Cow<'_, str>) -> Option<(Cow<'_, str>, Cow<'_, str>)> {
    let i = s.find('.')?;
    if i == 0 || i + 1 == s.len() {
        return None;
    }
    Some(match s {
        Cow::Borrowed(b) => (Cow::Borrowed(&b[..i]), Cow::Borrowed(&b[i + 1..])),
        Cow::Owned(o) => (
            Cow::Owned(o[..i].to_owned()),
            Cow::Owned(o[i + 1..].to_owned()),
        ),
    })
}

struct Cursor<'a> {
    s: &'a str,
    i: usize,
    tags: bool,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }

    /// One node: optional tag, then a flow collection, a quoted or a plain scalar.
    fn node(&mut self, in_flow: bool) -> Option<Node<'a>> {
        self.skip_spaces();
        if self.peek() == Some(b'!') {
            if !self.tags {
                return None;
            }
            let start = self.i;
            while self
                .peek()
                .is_some_and(|c| c != b' ' && !(in_flow && b",[]{}".contains(&c)))
            {
                self.i += 1;
            }
            let tag = &self.s[start..self.i];
            self.skip_spaces();
            // A tagged scalar is text, whatever it looks like.
            let v = match self.peek() {
                Some(b'[' | b'{' | b'"' | b'\'') => self.untagged(in_flow)?,
                None | Some(b',' | b']' | b'}') => return None,
                _ => Node::String(Cow::Borrowed(self.plain(in_flow)?)),
            };
            return tagged(tag, v);
        }
        self.untagged(in_flow)
    }

    fn untagged(&mut self, in_flow: bool) -> Option<Node<'a>> {
        match self.peek()? {
            b'[' => self.flow_seq(),
            b'{' => self.flow_map(),
            b'"' | b'\'' => self.quoted().map(Node::String),
            _ => {
                let text = self.plain(in_flow)?;
                typed(text)
            }
        }
    }

    fn flow_seq(&mut self) -> Option<Node<'a>> {
        self.i += 1;
        let mut items = Vec::new();
        self.skip_spaces();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Some(Node::Array(items));
        }
        loop {
            items.push(self.node(true)?);
            self.skip_spaces();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.skip_spaces();
                    if self.peek() == Some(b']') {
                        return None;
                    }
                }
                b']' => {
                    self.i += 1;
                    return Some(Node::Array(items));
                }
                _ => return None,
            }
        }
    }

    fn flow_map(&mut self) -> Option<Node<'a>> {
        self.i += 1;
        let mut m = Vec::new();
        self.skip_spaces();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Some(Node::Object(Object::default()));
        }
        loop {
            self.skip_spaces();
            let key = match self.peek()? {
                b'"' | b'\'' => {
                    let k = self.quoted()?;
                    self.skip_spaces();
                    if self.peek() != Some(b':') {
                        return None;
                    }
                    self.i += 1;
                    k
                }
                b'!' | b'[' | b'{' | b'&' | b'*' | b'?' | b',' | b'}' | b']' => return None,
                _ => {
                    let start = self.i;
                    loop {
                        match self.peek()? {
                            b':' if matches!(self.s.as_bytes().get(self.i + 1), Some(b' ')) => {
                                break;
                            }
                            b',' | b'[' | b']' | b'{' | b'}' | b'#' => return None,
                            _ => self.i += 1,
                        }
                    }
                    let k = Cow::Borrowed(trim_end_spaces(&self.s[start..self.i]));
                    self.i += 1;
                    k
                }
            };
            if key.is_empty() || key == "<<" {
                return None;
            }
            self.skip_spaces();
            if matches!(self.peek(), Some(b',' | b'}')) {
                return None;
            }
            let v = self.node(true)?;
            m.push((key, v));
            self.skip_spaces();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.skip_spaces();
                    if self.peek() == Some(b'}') {
                        return None;
                    }
                }
                b'}' => {
                    self.i += 1;
                    return Object::from_entries(m).map(Node::Object);
                }
                _ => return None,
            }
        }
    }

    /// A plain scalar; in block context it runs to the end of the line.
    fn plain(&mut self, in_flow: bool) -> Option<&'a str> {
        let first = self.peek()?;
        if b"&*|>%@`?#,[]{}'\"".contains(&first) {
            return None;
        }
        if (first == b'-' || first == b':')
            && matches!(self.s.as_bytes().get(self.i + 1), None | Some(b' '))
        {
            return None;
        }
        let start = self.i;
        if in_flow {
            while let Some(c) = self.peek() {
                if b",[]{}".contains(&c) {
                    break;
                }
                if c == b':'
                    && matches!(
                        self.s.as_bytes().get(self.i + 1),
                        None | Some(b' ' | b',' | b'[' | b']' | b'{' | b'}')
                    )
                {
                    return None;
                }
                self.i += 1;
            }
        } else {
            let rest = &self.s[start..];
            if find_colon_space(rest).is_some() || rest.ends_with(':') {
                return None;
            }
            self.i = self.s.len();
        }
        let text = trim_end_spaces(&self.s[start..self.i]);
        if text.is_empty() {
            return None;
        }
        Some(text)
    }

    /// A single- or double-quoted scalar on one line, borrowed from the line when it holds no
    /// escape.
    fn quoted(&mut self) -> Option<Cow<'a, str>> {
        let q = self.peek()?;
        self.i += 1;
        let s = self.s;
        let b = s.as_bytes();
        // The unescaped text, once an escape makes it differ from the line.
        let mut out: Option<String> = None;
        let mut run = self.i;
        loop {
            // Jump to the next byte that ends or escapes (nothing else changes the text; a
            // line holds no line break, and a quote never opens inside a multi-byte UTF-8
            // character, so the byte offsets are character boundaries).
            let rest = b.get(self.i..)?;
            let skip = if q == b'\'' {
                memchr::memchr(b'\'', rest)?
            } else {
                memchr::memchr2(b'"', b'\\', rest)?
            };
            self.i += skip;
            let c = b[self.i];
            let piece = &s[run..self.i];
            let doubled = q == b'\'' && b.get(self.i + 1) == Some(&b'\'');
            if c == q && !doubled {
                self.i += 1;
                return Some(match out {
                    None => Cow::Borrowed(piece),
                    Some(mut o) => {
                        o.push_str(piece);
                        Cow::Owned(o)
                    }
                });
            }
            let out = out.get_or_insert_with(String::new);
            out.push_str(piece);
            if doubled {
                out.push('\'');
                self.i += 2;
                run = self.i;
                continue;
            }
            // Otherwise `c` is the backslash `memchr2` stopped at.
            let e = *b.get(self.i + 1)?;
            self.i += 2;
            match e {
                b'"' => out.push('"'),
                b'\\' => out.push('\\'),
                b'/' => out.push('/'),
                b'n' => out.push('\n'),
                b't' => out.push('\t'),
                b'r' => out.push('\r'),
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'0' => out.push('\0'),
                b'u' => {
                    let hex = s.get(self.i..self.i + 4)?;
                    let cp = u32::from_str_radix(hex, 16).ok()?;
                    // Surrogates are not characters; leave them to the general parser.
                    out.push(char::from_u32(cp)?);
                    self.i += 4;
                }
                _ => return None,
            }
            run = self.i;
        }
    }
}

/// A plain scalar typed by the YAML 1.2 core schema.
fn typed(text: &str) -> Option<Node<'_>> {
    Some(match resolve_plain(text) {
        Resolved::Null => Node::Null,
        Resolved::Bool(b) => Node::Bool(b),
        Resolved::Int(i) => Node::Number(i.into()),
        Resolved::Float(f) => Node::Number(Number::from_f64(f)?),
        Resolved::Str => Node::String(Cow::Borrowed(text)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SourceFile;
    use crate::yaml::{ParseOptions, parse as slow_parse};
    use proptest::prelude::*;
    use serde_json::Value as Json;

    proptest! {
        #[test]
        fn colon_space_is_found_where_str_find_finds_it(s in "[a: é:\t]{0,12}") {
            prop_assert_eq!(find_colon_space(&s), s.find(": "));
        }

        #[test]
        fn spaces_are_trimmed_as_str_trims_them(s in "[ a\u{e9}]{0,8}") {
            proptest::prop_assert_eq!(trim_start_spaces(&s), s.trim_start_matches(' '));
            proptest::prop_assert_eq!(trim_end_spaces(&s), s.trim_end_matches(' '));
        }

        /// Quoted scalars are skipped with `memchr` as the byte-by-byte scan skipped them.
        #[test]
        fn comments_are_stripped_as_a_byte_by_byte_scan_strips_them(s in "[a\"'\\\\# :,é]{0,24}") {
            proptest::prop_assert_eq!(strip_comment(&s), strip_comment_bytewise(&s));
        }

        #[test]
        fn lines_are_split_as_str_split_splits_them(s in "[a#\n é]{0,40}") {
            let want: Vec<(&str, bool)> = s.split('\n').map(|l| (l, l.contains('#'))).collect();
            prop_assert_eq!(split_lines(&s).collect::<Vec<_>>(), want);
        }
    }

    proptest! {
        /// A quoted key is unescaped only once its `:` is found; the answer is the one of
        /// reading the whole quoted scalar first.
        #[test]
        fn quoted_keys_are_split_as_reading_the_scalar_first_splits_them(
            s in r#"["']((a|é|\\\\|\\"|''|"|'|: |\\n|\\u0041|\\)){0,8}( *:( [a"]{0,3})?)?"#
        ) {
            prop_assert_eq!(split_key(&s), split_key_reading_first(&s));
        }
    }

    /// [`split_key`] of a quoted key as it was first written: the whole scalar read (and
    /// unescaped) before looking for the `:` after it.
    fn split_key_reading_first(content: &str) -> Option<(Cow<'_, str>, &str)> {
        let mut cur = Cursor {
            s: content,
            i: 0,
            tags: false,
        };
        let key = cur.quoted()?;
        cur.skip_spaces();
        let rest = content[cur.i..].strip_prefix(':')?;
        if !(rest.is_empty() || rest.starts_with(' ')) {
            return None;
        }
        Some((key, trim_start_spaces(rest)))
    }

    /// [`strip_comment`] as it was first written, one byte at a time: the definition.
    fn strip_comment_bytewise(s: &str) -> Option<&str> {
        let b = s.as_bytes();
        let mut i = 0;
        let (mut after_space, mut token_start) = (true, true);
        while i < b.len() {
            match b[i] {
                b'#' if after_space => return Some(s[..i].trim_end_matches(' ')),
                b'"' if token_start => {
                    i += 1;
                    loop {
                        match b.get(i)? {
                            b'\\' => i += 2,
                            b'"' => break,
                            _ => i += 1,
                        }
                    }
                    (after_space, token_start) = (false, false);
                }
                b'\'' if token_start => {
                    i += 1;
                    loop {
                        match b.get(i)? {
                            b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
                            b'\'' => break,
                            _ => i += 1,
                        }
                    }
                    (after_space, token_start) = (false, false);
                }
                b' ' | b'\t' => (after_space, token_start) = (true, true),
                b'[' | b'{' | b',' | b':' => (after_space, token_start) = (false, true),
                _ => (after_space, token_start) = (false, false),
            }
            i += 1;
        }
        Some(s.trim_end_matches(' '))
    }

    /// The general path: spanned parser, then the tag conversion.
    fn slow(src: &str) -> Option<Json> {
        let file = SourceFile::new("t.yml", src);
        let node = slow_parse(&file, ParseOptions { allow_tags: true }).ok()?;
        super::super::cfn::to_json(&node, "t.yml").ok()
    }

    /// The fast path must agree with the general one whenever it answers.
    fn agree(src: &str) -> Option<Json> {
        let fast = parse(src).map(|n| n.to_json());
        if let Some(f) = &fast {
            assert_eq!(
                Some(f),
                slow(src).as_ref(),
                "fast and general paths differ on:\n{src}"
            );
        }
        fast
    }

    #[test]
    fn reads_the_template_subset() {
        let src = "\
AWSTemplateFormatVersion: \"2010-09-09\"
# a comment
Resources:
  Key:   # trailing comment
    Type: AWS::KMS::Key
    Properties:
      EnableKeyRotation: true
      Tags: [{Key: \"team\", Value: \"a # not a comment\"}, {Key: 'it''s', Value: x}]
      Policy:
        Statement:
          - Sid: One
            Action: [kms:Decrypt, \"kms:Encrypt\"]
            Resource: !Sub \"arn:${AWS::Partition}:s3:::b/*\"
          - !Ref Other
          -
            nested: 1
      Join: !Join
        - \"\"
        - [\"a\", !Ref B]
      Empty:
      Seq:
      - at-key-indent
      Att: !GetAtt Key.Arn
      Num: 30
      Float: 0.5
      Str: \"true\"
";
        let v = agree(src).expect("in the subset");
        assert_eq!(
            v["Resources"]["Key"]["Properties"]["Tags"][0]["Value"],
            "a # not a comment"
        );
        assert_eq!(
            v["Resources"]["Key"]["Properties"]["Tags"][1]["Key"],
            "it's"
        );
        assert_eq!(
            v["Resources"]["Key"]["Properties"]["Join"],
            serde_json::json!({"Fn::Join": ["", ["a", {"Ref": "B"}]]})
        );
        assert_eq!(v["Resources"]["Key"]["Properties"]["Empty"], Json::Null);
    }

    #[test]
    fn reads_compact_sequences_flow_maps_and_block_tags() {
        for src in [
            "Tags: [{Key: \"team\", Value: \"a # not a comment\"}, {Key: 'it''s', Value: x}]\n",
            "A:\n  - Sid: One\n    Action: [kms:Decrypt, \"kms:Encrypt\"]\n  - !Ref Other\n  -\n    nested: 1\n",
            "Join: !Join\n  - \"\"\n  - [\"a\", !Ref B]\n",
            "Empty:\nSeq:\n- at-key-indent\nAtt: !GetAtt Key.Arn\n",
            "Key:   # trailing comment\n  Type: x\n",
        ] {
            assert!(parse(src).is_some(), "{src}");
        }
    }

    #[test]
    fn gives_up_outside_the_subset() {
        for src in [
            "a: &x 1\nb: *x\n",
            "a: |\n  text\n",
            "a: >\n  text\n",
            "a: \"multi\n  line\"\n",
            "a: plain\n  continued\n",
            "---\na: 1\n",
            "a: 1\na: 2\n",
            "<<: {a: 1}\n",
            "? complex\n: key\n",
            "a: !Unknown x\n",
            "a:\n\t- tab\n",
            "a: [1, 2\n",
            "a: {b: 1\n",
            "- - nested\n",
            "a: b: c\n",
            "a: \"\\x41\"\n",
        ] {
            assert_eq!(parse(src), None, "{src:?}");
        }
    }

    #[test]
    fn escaped_values_round_trip() {
        for h in crate::probe::HOSTILE {
            let src = format!(
                "k: {}\nl: [{}, x]\n",
                crate::render::escape::quote(h),
                crate::render::escape::quote(h)
            );
            let v = agree(&src).expect("escaped values are in the subset");
            assert_eq!(v["k"], Json::String((*h).to_owned()));
            assert_eq!(v["l"][0], Json::String((*h).to_owned()));
        }
    }

    /// Random documents in the template style: the fast path either declines or agrees.
    fn leaf() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z][a-zA-Z0-9:./*-]{0,12}",
            "[0-9]{1,5}",
            Just("true".to_owned()),
            Just("null".to_owned()),
            Just("0.5".to_owned()),
            any::<String>().prop_map(|s| crate::render::escape::quote(&s)),
            "[a-z ]{0,8}".prop_map(|s| format!("'{s}'")),
            "[A-Z][a-z]{1,6}".prop_map(|s| format!("!Ref {s}")),
            "[A-Z][a-z]{1,6}\\.[A-Z][a-z]{1,4}".prop_map(|s| format!("!GetAtt {s}")),
        ]
    }

    fn doc() -> impl Strategy<Value = String> {
        let entry = ("[A-Za-z][A-Za-z0-9]{0,6}", leaf());
        let block_map = prop::collection::btree_map("[A-Za-z][A-Za-z0-9]{0,6}", leaf(), 1..5);
        (
            prop::collection::vec(entry, 1..6),
            prop::collection::vec(leaf(), 0..4),
            block_map,
        )
            .prop_map(|(entries, list, nested)| {
                let mut s = String::new();
                let mut seen = std::collections::BTreeSet::new();
                for (k, v) in entries {
                    if seen.insert(k.clone()) {
                        s.push_str(&format!("{k}: {v}\n"));
                    }
                }
                s.push_str("ZList:\n");
                for v in &list {
                    s.push_str(&format!("  - {v}\n"));
                }
                s.push_str(&format!("ZFlow: [{}]\n", list.join(", ")));
                s.push_str("ZItems:\n  - ");
                for (i, (k, v)) in nested.iter().enumerate() {
                    if i > 0 {
                        s.push_str("    ");
                    }
                    s.push_str(&format!("{k}: {v}\n"));
                }
                s
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
        #[test]
        fn fast_path_agrees_with_the_general_parser(src in doc()) {
            let _ = agree(&src);
        }
    }

    /// Any text between quotes: escapes valid or not, `''` doubled or not, a quote left open,
    /// multi-byte characters next to every special byte.
    fn quoted_leaf() -> impl Strategy<Value = String> {
        prop_oneof![
            r#"[a'\\" é:#,]{0,10}"#.prop_map(|s| format!("'{s}'")),
            r#"[a'\\" é:#,/ntu0]{0,10}"#.prop_map(|s| format!("\"{s}\"")),
            r#"[a'\\" é]{0,10}"#,
            any::<String>().prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
            any::<String>().prop_map(|s| crate::render::escape::quote(&s)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]
        /// Quoted keys and values, in block and flow context and as sequence entries: the fast
        /// path (which jumps from one quote or backslash to the next) either declines or reads
        /// what the general parser reads.
        #[test]
        fn quoted_scalars_agree_with_the_general_parser(k in quoted_leaf(), v in quoted_leaf()) {
            let _ = agree(&format!("{k}: {v}\n"));
            let _ = agree(&format!("l: [{v}, {k}]\nm: {{{k}: {v}}}\n"));
            let _ = agree(&format!("s:\n  - {k}: {v}\n    x: {v}\n  - {v}\n"));
        }
    }

    /// The values the quoted fast path must read exactly (not merely decline).
    #[test]
    fn quoted_scalars_are_read() {
        for (src, want) in [
            (r"k: 'it''s'", "it's"),
            (r"k: ''''", "'"),
            (r"k: 'a\b'", r"a\b"),
            (r#"k: "a\"b\\c\u00e9""#, "a\"b\\cé"),
            (r#"k: "é'""#, "é'"),
            (r#"k: """#, ""),
        ] {
            let v = agree(&format!("{src}\n")).expect("in the subset");
            assert_eq!(v["k"], Json::String(want.to_owned()), "{src:?}");
        }
        for src in [r"k: 'open", r#"k: "open"#, r#"k: "a\""#, r#"k: "\x""#] {
            assert_eq!(parse(&format!("{src}\n")), None, "{src:?}");
        }
    }
}
