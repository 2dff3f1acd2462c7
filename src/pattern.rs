//! The `pattern` of a schema string: most are a run of ASCII classes from `^` to `$`
//! (`^[a-z][a-z0-9-]{0,62}$`), matched here without compiling a regular expression; any other
//! pattern is compiled by `regex-lite` as before. The org's forbidden-command patterns are
//! compiled here too; being unanchored searches, nearly all of them go to `regex-lite`.
//!
//! Why: a one-manifest `validate` compiled about a dozen such patterns, and `regex-lite`
//! compiles a counted repetition by copying its class once per count (`{0,62}`: 63 states),
//! then runs a backtracking-free but general matcher (~12 % of a `validate`'s instructions for
//! the compiles, ~8 % more for the matches; ARCHITECTURE.md, "Start-up").
//!
//! What is simple (everything else is handed to `regex-lite`, which also gives the error of an
//! invalid pattern): `^`, then items, then `$`, where an item is an ASCII letter, digit or one
//! of ``` _-/:@=,'"<>!%`~#&;``` and space, an escaped meta character (`\.`), or a class
//! `[...]` of such characters, of `.*+?(){}|$` and of ranges between letters or digits
//! (`a-z`; a bare `-` first or last is itself; no `^` negation, no nested class, no `&&`,
//! `--` or `~~`, no `\d`-style escape), each with at
//! most one quantifier of `?`, `*`, `+`, `{n}`, `{n,}` or `{n,m}` (`n <= m <= 1000`, no lazy
//! `?` after it). Such a pattern matches a text exactly when the text is ASCII and splits into
//! runs, one per item, of that item's characters with lengths in its range; `$` is the end of
//! the text, as in `regex-lite` without the `m` flag. Property-tested against `regex-lite` on
//! every pattern of the embedded schemas and on generated ones.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

/// A compiled pattern, with its text.
#[derive(Debug)]
pub struct Pattern {
    source: String,
    compiled: Compiled,
}

#[derive(Debug)]
enum Compiled {
    /// Anchored runs of ASCII classes, matched by [`Simple::is_match`].
    Simple(Simple),
    /// Anything else.
    Regex(regex_lite::Regex),
}

impl Pattern {
    /// Compiles `pattern`: as a [`Simple`] one when it is, else by `regex-lite` (whose error
    /// message an invalid pattern gets).
    pub fn new(pattern: &str) -> Result<Pattern, String> {
        let compiled = match Simple::parse(pattern) {
            Some(s) => Compiled::Simple(s),
            None => regex_lite::Regex::new(pattern)
                .map(Compiled::Regex)
                .map_err(|e| e.to_string())?,
        };
        Ok(Pattern {
            source: pattern.to_owned(),
            compiled,
        })
    }

    /// True when `text` matches, as `regex_lite::Regex::is_match` answers: anywhere in the
    /// text, which for a simple pattern (anchored at both ends) is the whole text.
    pub fn is_match(&self, text: &str) -> bool {
        match &self.compiled {
            Compiled::Simple(s) => s.is_match(text),
            Compiled::Regex(r) => r.is_match(text),
        }
    }

    /// The pattern's text.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when the pattern is matched without a regular expression.
    pub fn is_simple(&self) -> bool {
        matches!(self.compiled, Compiled::Simple(_))
    }
}

/// A compiled [`Pattern`], cached by its text for the process: schemas and the org's
/// forbidden commands use a handful of patterns thousands of times.
pub fn cached(pattern: &str) -> Result<Arc<Pattern>, String> {
    static CACHE: OnceLock<RwLock<BTreeMap<String, Arc<Pattern>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| RwLock::new(BTreeMap::new()));
    if let Some(p) = cache.read().ok().and_then(|c| c.get(pattern).cloned()) {
        return Ok(p);
    }
    let compiled = Arc::new(Pattern::new(pattern)?);
    if let Ok(mut c) = cache.write() {
        c.insert(pattern.to_owned(), Arc::clone(&compiled));
    }
    Ok(compiled)
}

/// The largest count of a simple pattern's repetition (`regex-lite` decides about larger ones).
const MAX_COUNT: u32 = 1000;

/// One item of a simple pattern: a set of ASCII bytes and how many of them, in a row.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Item {
    /// Bit `b` set when byte `b` (< 128) is in the set.
    set: u128,
    min: u32,
    /// `None`: no upper bound.
    max: Option<u32>,
}

impl Item {
    fn has(&self, b: u8) -> bool {
        b < 128 && self.set & (1u128 << b) != 0
    }
}

/// An anchored pattern of ASCII classes (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Simple {
    items: Vec<Item>,
}

/// True for an ASCII character that a regular expression takes as itself outside a class.
fn plain_literal(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b" _-/:@=,'\"<>!%`~#&;".contains(&c)
}

/// True for an ASCII character that a class takes as itself.
fn class_literal(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b" _/:@=,'\"<>!%`#;.*+?(){}|$".contains(&c)
}

impl Simple {
    /// The simple pattern `pattern` is, or `None` when it is not one.
    pub fn parse(pattern: &str) -> Option<Simple> {
        let body = pattern.strip_prefix('^')?.strip_suffix('$')?.as_bytes();
        let mut items = Vec::new();
        let mut i = 0;
        while i < body.len() {
            let (set, next) = match body[i] {
                b'[' => class(body, i + 1)?,
                b'\\' => {
                    let c = *body.get(i + 1)?;
                    if !escapable(c) {
                        return None;
                    }
                    (1u128 << c, i + 2)
                }
                c if plain_literal(c) => (1u128 << c, i + 1),
                _ => return None,
            };
            let (min, max, next) = quantifier(body, next)?;
            items.push(Item { set, min, max });
            i = next;
        }
        Some(Simple { items })
    }

    /// True when `text` splits into one run per item (see the module docs).
    pub fn is_match(&self, text: &str) -> bool {
        // Every item's set is ASCII, so a text with any other character cannot match.
        if !text.is_ascii() {
            return false;
        }
        let bytes = text.as_bytes();
        let n = bytes.len();
        // `reach[p]`: the items so far can end exactly at byte `p`.
        let mut reach = vec![false; n + 1];
        reach[0] = true;
        // `run[p]`: how many bytes from `p` on are in the item's set.
        let mut run = vec![0usize; n + 1];
        // Marks of the ranges reached next (+1 at a range's start, -1 after its end).
        let mut marks = vec![0i32; n + 2];
        for item in &self.items {
            for p in (0..n).rev() {
                run[p] = if item.has(bytes[p]) {
                    run[p + 1] + 1
                } else {
                    0
                };
            }
            marks.iter_mut().for_each(|m| *m = 0);
            let mut any = false;
            for p in 0..=n {
                if !reach[p] {
                    continue;
                }
                let most = match item.max {
                    Some(max) => run[p].min(max as usize),
                    None => run[p],
                };
                let least = item.min as usize;
                if least <= most {
                    marks[p + least] += 1;
                    marks[p + most + 1] -= 1;
                    any = true;
                }
            }
            if !any {
                return false;
            }
            let mut open = 0;
            for (p, r) in reach.iter_mut().enumerate() {
                open += marks[p];
                *r = open > 0;
            }
        }
        reach[n]
    }
}

/// The set of the class whose `[` is just before `at`, and where the class ends.
fn class(body: &[u8], at: usize) -> Option<(u128, usize)> {
    // The class's characters, each with whether it was escaped (an escaped `-` is itself).
    let mut chars: Vec<(u8, bool)> = Vec::new();
    let mut i = at;
    loop {
        match *body.get(i)? {
            b']' if i > at => break,
            b'\\' => {
                let e = *body.get(i + 1)?;
                if !escapable(e) {
                    return None;
                }
                chars.push((e, true));
                i += 2;
            }
            c if c == b'-' || class_literal(c) => {
                chars.push((c, false));
                i += 1;
            }
            _ => return None,
        }
    }
    let raw = &body[at..i];
    if raw.windows(2).any(|w| w == b"--") {
        return None;
    }
    let mut set = 0u128;
    let mut k = 0;
    while k < chars.len() {
        match (chars[k], chars.get(k + 1), chars.get(k + 2)) {
            // A range between two letters or digits: `a-z`, `0-9`.
            ((lo, false), Some((b'-', false)), Some(&(hi, false)))
                if lo.is_ascii_alphanumeric() && hi.is_ascii_alphanumeric() =>
            {
                if hi < lo {
                    return None;
                }
                for b in lo..=hi {
                    set |= 1u128 << b;
                }
                k += 3;
            }
            // A bare `-` is itself only first or last; elsewhere (`a-z-0`, or a range of other
            // characters such as `.-z`) regex-lite decides.
            ((b'-', false), _, _) if k != 0 && k + 1 != chars.len() => return None,
            // Any other range (`.-z`, `\\.-z`) is left to regex-lite too.
            ((c, _), _, _) => {
                set |= 1u128 << c;
                k += 1;
            }
        }
    }
    if set == 0 {
        return None;
    }
    Some((set, i + 1))
}

/// True for a character that a simple pattern may escape: the classic meta characters.
fn escapable(c: u8) -> bool {
    b"\\.+*?()|[]{}^$#&-~".contains(&c)
}

/// The quantifier at `at`, if any: its bounds and where the item ends.
fn quantifier(body: &[u8], at: usize) -> Option<(u32, Option<u32>, usize)> {
    let (min, max, next) = match body.get(at) {
        Some(b'?') => (0, Some(1), at + 1),
        Some(b'*') => (0, None, at + 1),
        Some(b'+') => (1, None, at + 1),
        Some(b'{') => {
            let close = at + body[at..].iter().position(|&b| b == b'}')?;
            let inner = std::str::from_utf8(&body[at + 1..close]).ok()?;
            let number = |s: &str| -> Option<u32> {
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 4 {
                    return None;
                }
                s.parse().ok().filter(|&n| n <= MAX_COUNT)
            };
            let (min, max) = match inner.split_once(',') {
                None => {
                    let n = number(inner)?;
                    (n, Some(n))
                }
                Some((lo, "")) => (number(lo)?, None),
                Some((lo, hi)) => (number(lo)?, Some(number(hi)?)),
            };
            if max.is_some_and(|m| m < min) {
                return None;
            }
            (min, max, close + 1)
        }
        _ => return Some((1, Some(1), at)),
    };
    // A second quantifier (`a{1,2}?`, `a*+`) is not an item: the caller refuses it.
    Some((min, max, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every `pattern` of the embedded schemas.
    fn schema_patterns() -> Vec<String> {
        let mut out = Vec::new();
        for text in [
            include_str!("../schema/pipeline.schema.json"),
            include_str!("../schema/org.schema.json"),
        ] {
            let json: serde_json::Value = serde_json::from_str(text).expect("a schema");
            collect(&json, &mut out);
        }
        out.sort();
        out.dedup();
        out
    }

    fn collect(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("pattern", serde_json::Value::String(p)) => out.push(p.clone()),
                        _ => collect(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_name_patterns_are_simple_and_the_others_are_not() {
        let patterns = schema_patterns();
        assert!(patterns.len() > 20, "{patterns:?}");
        let simple: Vec<_> = patterns
            .iter()
            .filter(|p| Simple::parse(p).is_some())
            .collect();
        assert!(simple.len() > 15, "{simple:?}");
        for p in [
            "^[a-z][a-z0-9-]{0,62}$",
            "^[A-Za-z0-9][A-Za-z0-9._/-]{1,99}$",
            "^[0-9]{12}$",
            "^[A-Z_][A-Z0-9_]*$",
            "^[a-z][a-z0-9-]{1,38}[a-z0-9]$",
            "^[A-Za-z0-9 _.:/=+@-]{1,128}$",
            "^sg-[0-9a-f]{8,17}$",
        ] {
            assert!(Simple::parse(p).is_some(), "{p}");
        }
        for p in [
            "^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}$",
            "^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$",
            "^(ssm|secretsmanager):.+$",
            "set\\s+\\+e|set\\s+\\+o\\s+errexit",
            "^a{2,1}$",
            "^a{1001}$",
            "^a{1,2}?$",
            "^a**$",
            "^[a-z&&b]$",
            "^[a--b]$",
            "^[a-z-0]$",
            "^[z-a]$",
            "^[^a]$",
            "^[]$",
            "^[[:alpha:]]$",
            "^\\d$",
            "^a.b$",
            "^a|b$",
            "a$",
            "^a",
            "^a\\$",
            "^é$",
            "^\\<$",
            "^\\/$",
            "^\\_$",
            "^[\\<]$",
            "^[.-z]$",
        ] {
            assert_eq!(Simple::parse(p), None, "{p}");
        }
    }

    #[test]
    fn a_pattern_regex_lite_refuses_is_refused() {
        for p in ["^a{2,1}$", "^[z-a]$", "^[a$", "^a{1,2$"] {
            assert!(Pattern::new(p).is_err(), "{p}");
        }
        assert!(Pattern::new("^[a-z]{1,3}$").is_ok_and(|p| p.is_simple()));
        assert!(Pattern::new("^(a|b)$").is_ok_and(|p| !p.is_simple()));
        assert_eq!(
            Pattern::new("^(a|b)$").map(|p| p.as_str().to_owned()),
            Ok("^(a|b)$".to_owned())
        );
    }

    #[test]
    fn examples_match_as_regex_lite_does() {
        let cases = [
            ("^[a-z][a-z0-9-]{0,62}$", "orders-api", true),
            ("^[a-z][a-z0-9-]{0,62}$", "Orders", false),
            ("^[a-z][a-z0-9-]{0,62}$", "", false),
            ("^[a-z][a-z0-9-]{0,62}$", "a\n", false),
            ("^[a-z][a-z0-9-]{0,62}$", "a-é", false),
            ("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", "my.bucket-1", true),
            ("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", "ab", false),
            ("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", "abc-", false),
            ("^[0-9]{12}$", "123456789012", true),
            ("^[0-9]{12}$", "1234567890123", false),
            ("^[A-Z_][A-Z0-9_]*$", "_", true),
            ("^x?y+z*$", "yy", true),
            ("^x?$", "", true),
            ("^$", "", true),
            ("^$", "a", false),
            ("^x?y+z*$", "xz", false),
            ("^a\\.b$", "a.b", true),
            ("^a\\.b$", "axb", false),
        ];
        for (p, text, expected) in cases {
            let simple = Simple::parse(p).expect(p);
            let re = regex_lite::Regex::new(p).expect(p);
            assert_eq!(re.is_match(text), expected, "regex-lite {p} {text:?}");
            assert_eq!(simple.is_match(text), expected, "{p} {text:?}");
        }
    }

    /// Texts made mostly of the characters a pattern names, so that matches are common.
    fn text_for(pattern: &str) -> impl Strategy<Value = String> + use<> {
        let mut alphabet: Vec<char> = pattern
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || c.is_ascii_punctuation())
            .collect();
        alphabet.extend([
            'a', 'z', 'A', '0', '9', '-', '.', ' ', '\n', 'é', '\u{212A}', 'ſ',
        ]);
        alphabet.sort_unstable();
        alphabet.dedup();
        prop::collection::vec(prop::sample::select(alphabet), 0..80)
            .prop_map(|cs| cs.into_iter().collect())
    }

    /// One item of a generated simple pattern: its text, characters in its set and one not,
    /// and its bounds (`None`: unbounded).
    fn generated_item() -> impl Strategy<Value = (String, Vec<char>, (u32, Option<u32>))> {
        let atom = prop::sample::select(vec![
            ("[a-z]", "aqz", '-'),
            ("[a-z0-9-]", "a9-", '.'),
            ("[-a-c]", "-ac", 'd'),
            ("[A-Za-z0-9._/-]", "Z0./-", ' '),
            ("[0-9]", "07", 'a'),
            ("[ _.:/=+@-]", " @+", 'a'),
            ("[\\]\\-x]", "]-x", 'y'),
            ("[a-]", "a-", 'b'),
            ("a", "a", 'b'),
            ("-", "-", 'a'),
            ("\\.", ".", 'x'),
            ("\\-", "-", 'x'),
            (" ", " ", 'x'),
        ]);
        let quantifier = prop_oneof![
            Just((String::new(), (1, Some(1)))),
            Just(("?".to_owned(), (0, Some(1)))),
            Just(("*".to_owned(), (0, None))),
            Just(("+".to_owned(), (1, None))),
            (0u32..4).prop_map(|n| (format!("{{{n}}}"), (n, Some(n)))),
            (0u32..4).prop_map(|n| (format!("{{{n},}}"), (n, None))),
            (0u32..4, 0u32..6).prop_map(|(n, k)| (format!("{{{n},{}}}", n + k), (n, Some(n + k)))),
        ];
        (atom, quantifier).prop_map(|((text, members, other), (q, bounds))| {
            let mut chars: Vec<char> = members.chars().collect();
            chars.push(other);
            (format!("{text}{q}"), chars, bounds)
        })
    }

    /// A generated simple pattern and texts near it: for each item a run whose length is
    /// around its bounds, mostly of its characters, sometimes one that is not.
    fn generated_case() -> impl Strategy<Value = (String, Vec<String>)> {
        prop::collection::vec(generated_item(), 0..6).prop_flat_map(|items| {
            let pattern = format!(
                "^{}$",
                items.iter().map(|(t, _, _)| t.as_str()).collect::<String>()
            );
            let runs: Vec<_> = items
                .iter()
                .map(|(_, chars, (min, max))| {
                    let top = max.unwrap_or(min + 3) + 1;
                    let low = min.saturating_sub(1);
                    let chars = chars.clone();
                    (
                        low..=top,
                        any::<prop::sample::Index>(),
                        any::<prop::sample::Index>(),
                    )
                        .prop_map(move |(n, i, j)| {
                            (0..n)
                                .map(|k| {
                                    // The last character is the one not in the set: rarely.
                                    let c = chars.len() - 1;
                                    if k == 0 && j.index(8) == 0 {
                                        chars[c]
                                    } else {
                                        chars[(i.index(c) + k as usize) % c]
                                    }
                                })
                                .collect::<String>()
                        })
                })
                .collect();
            let text = runs.prop_map(|r| r.concat());
            (Just(pattern), prop::collection::vec(text, 8))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn schema_patterns_match_as_regex_lite_does(
            (p, texts) in prop::sample::select(schema_patterns()).prop_flat_map(|p| {
                let texts = prop::collection::vec(text_for(&p), 32);
                (Just(p), texts)
            }),
        ) {
            let re = regex_lite::Regex::new(&p).expect("the schemas' patterns compile");
            let compiled = Pattern::new(&p).expect("compiles");
            for text in &texts {
                prop_assert_eq!(compiled.is_match(text), re.is_match(text), "{} {:?}", p, text);
            }
        }

        #[test]
        fn generated_patterns_match_as_regex_lite_does((p, texts) in generated_case()) {
            let re = regex_lite::Regex::new(&p).expect("a generated pattern compiles");
            let simple = Simple::parse(&p);
            prop_assert!(simple.is_some(), "{} is simple", p);
            let simple = simple.expect("checked");
            for text in &texts {
                prop_assert_eq!(simple.is_match(text), re.is_match(text), "{} {:?}", p, text);
            }
        }
    }
}
