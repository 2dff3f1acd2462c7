//! A literal screen in front of the org's forbidden-command patterns: most commands a
//! buildspec runs contain none of the text a pattern needs (`||`, `exit`, `set`, `trap` for
//! the embedded ones), so a substring search settles them and the regular expression runs only
//! on the others.
//!
//! The screen is derived from the pattern's text, conservatively: for each top-level
//! alternative, the longest run of characters that every match must contain. A pattern with
//! anything this reading does not understand (inline flags such as `(?i)`, escapes with
//! arguments, nested classes), or an alternative with no such run, gets no screen and the
//! regular expression runs on every command. So the screen changes no answer, only how often
//! the regular expression runs (tested against the regular expression over random patterns and
//! commands).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

/// A forbidden-command pattern with its screen.
#[derive(Debug)]
pub struct Screened {
    regex: Arc<regex_lite::Regex>,
    /// Texts of which every match contains at least one; `None`: no screen.
    needles: Option<Vec<String>>,
}

impl Screened {
    /// The compiled pattern and its screen.
    pub fn new(pattern: &str) -> Result<Screened, String> {
        Ok(Screened {
            regex: crate::schema::cached_regex(pattern)?,
            needles: needles(pattern),
        })
    }

    /// Whether the pattern matches somewhere in `text`: `regex.is_match`, run only when `text`
    /// passes the screen.
    pub fn is_match(&self, text: &str) -> bool {
        self.passes(text) && self.regex.is_match(text)
    }

    /// Whether `text` contains one of the screen's texts (always, without a screen).
    fn passes(&self, text: &str) -> bool {
        self.needles
            .as_ref()
            .is_none_or(|n| n.iter().any(|needle| text.contains(needle.as_str())))
    }
}

/// [`Screened::new`], cached by pattern: the same few patterns are checked for every gate.
pub fn cached(pattern: &str) -> Result<Arc<Screened>, String> {
    type Cache = RwLock<BTreeMap<String, Arc<Screened>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| RwLock::new(BTreeMap::new()));
    if let Some(s) = cache.read().ok().and_then(|c| c.get(pattern).cloned()) {
        return Ok(s);
    }
    let screened = Arc::new(Screened::new(pattern)?);
    if let Ok(mut c) = cache.write() {
        c.insert(pattern.to_owned(), Arc::clone(&screened));
    }
    Ok(screened)
}

/// For each top-level alternative of `pattern`, the longest literal run every match of it
/// contains; `None` when some alternative has none or the pattern is outside what
/// [`literal_runs`] reads.
fn needles(pattern: &str) -> Option<Vec<String>> {
    let runs = literal_runs(pattern)?;
    runs.into_iter()
        .map(|alt| {
            alt.into_iter()
                .max_by_key(String::len)
                .filter(|s| !s.is_empty())
        })
        .collect()
}

/// The quantifier at the start of `p`, if any: its length and whether it allows zero
/// repetitions. A lazy `?` after it is part of it. `None` for a `{` that does not start a
/// counted repetition (regex-lite rejects such patterns anyway).
fn quantifier(p: &[char]) -> Option<(usize, bool)> {
    let (len, optional) = match p.first().copied().unwrap_or_default() {
        '?' | '*' => (1, true),
        '+' => (1, false),
        '{' => {
            let close = p.iter().position(|&c| c == '}')?;
            let inner: String = p[1..close].iter().collect();
            let min = inner.split(',').next()?.trim();
            (close + 1, min.parse::<u32>().ok()? == 0)
        }
        _ => return Some((0, false)),
    };
    let lazy = usize::from(p.get(len) == Some(&'?'));
    Some((len + lazy, optional))
}

/// The length of the group or class starting at `p` (`(` or `[`), up to its closing bracket;
/// `None` for an unclosed one, a nested class or an inline flag group (`(?`).
fn bracketed(p: &[char]) -> Option<usize> {
    let mut i = 1;
    if p[0] == '(' {
        if p.get(1) == Some(&'?') {
            return None;
        }
        let mut depth = 1;
        while depth > 0 {
            match p.get(i)? {
                '\\' => i += 1,
                '[' => i += bracketed(&p[i..])? - 1,
                '(' if p.get(i + 1) == Some(&'?') => return None,
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            i += 1;
        }
        return Some(i);
    }
    // A class: `]` first (after an optional `^`) is a literal `]`.
    if p.get(i) == Some(&'^') {
        i += 1;
    }
    if p.get(i) == Some(&']') {
        i += 1;
    }
    loop {
        match p.get(i)? {
            '\\' => i += 1,
            '[' => return None,
            ']' => return Some(i + 1),
            _ => {}
        }
        i += 1;
    }
}

/// The escapes that match one character from a set or an empty position (`\<` and `\>` are
/// word boundaries, not characters): they end a run.
const CLASS_ESCAPES: &str = "sSdDwWbBAz<>";

/// For each top-level alternative of `pattern`, the runs of literal characters that every match
/// of the alternative contains, in order; `None` when the pattern holds syntax this reading
/// does not follow.
fn literal_runs(pattern: &str) -> Option<Vec<Vec<String>>> {
    let p: Vec<char> = pattern.chars().collect();
    let mut alternatives = vec![Vec::new()];
    let mut run = String::new();
    let mut i = 0;
    while let Some(&c) = p.get(i) {
        // The unit at `i`: a literal character (`Some`), or something that ends the run.
        let (literal, len) = match c {
            '\\' => {
                let e = *p.get(i + 1)?;
                if e.is_ascii_punctuation() && !"<>".contains(e) {
                    (Some(e), 2)
                } else if CLASS_ESCAPES.contains(e) {
                    (None, 2)
                } else {
                    // `\x41`, `\p{L}`, `\n`, ...: characters this reading does not decode.
                    return None;
                }
            }
            '(' | '[' => (None, bracketed(&p[i..])?),
            '.' | '^' | '$' => (None, 1),
            '|' => {
                alternatives.last_mut()?.push(std::mem::take(&mut run));
                alternatives.push(Vec::new());
                i += 1;
                continue;
            }
            ')' | ']' | '?' | '*' | '+' | '{' | '}' => return None,
            c => (Some(c), 1),
        };
        i += len;
        let (qlen, optional) = quantifier(&p[i..])?;
        i += qlen;
        match literal {
            Some(ch) if !optional => run.push(ch),
            _ => {}
        }
        if literal.is_none() || qlen > 0 {
            alternatives.last_mut()?.push(std::mem::take(&mut run));
        }
    }
    alternatives.last_mut()?.push(run);
    Some(alternatives)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn needles_of(pattern: &str) -> Option<Vec<&'static str>> {
        needles(pattern).map(|v| {
            v.into_iter()
                .map(|s| &*Box::leak(s.into_boxed_str()))
                .collect()
        })
    }

    #[test]
    fn the_embedded_patterns_are_screened_by_their_words() {
        let org = crate::org::OrgCommands::default();
        let got: Vec<_> = org
            .forbidden
            .iter()
            .map(|f| needles_of(&f.pattern))
            .collect();
        assert_eq!(
            got,
            [
                Some(vec!["||"]),
                Some(vec!["exit"]),
                Some(vec!["exit"]),
                Some(vec!["set", "errexit"]),
                Some(vec!["trap"]),
            ]
        );
    }

    #[test]
    fn quantified_and_unknown_syntax_is_read_conservatively() {
        for (pattern, want) in [
            ("abc", Some(vec!["abc"])),
            ("ab?c", Some(vec!["c"])),
            ("ab*cd", Some(vec!["cd"])),
            ("ab+cd", Some(vec!["cd"])),
            ("abb+c", Some(vec!["abb"])),
            ("xab{0,2}", Some(vec!["xa"])),
            ("xab{2}", Some(vec!["xab"])),
            ("ab??", Some(vec!["a"])),
            ("(abc)", None),
            ("(abc)def", Some(vec!["def"])),
            ("(a|b)?xy|z", Some(vec!["xy", "z"])),
            ("a|", None),
            ("[|]ab[]]c[^]x]", Some(vec!["ab"])),
            (r"\.\*x", Some(vec![".*x"])),
            (r"a\sbb", Some(vec!["bb"])),
            (r"\x41bc", None),
            (r"\p{L}bc", None),
            (r"\nbc", None),
            ("(?i)exit", None),
            ("a(?i:b)c", None),
            ("[a[b]]c", None),
            ("éé+ü", Some(vec!["éé"])),
            (r"\<ab\>", Some(vec!["ab"])),
            (r"\b{start}ab", None),
            ("", None),
        ] {
            assert_eq!(needles_of(pattern), want, "{pattern:?}");
        }
    }

    /// Commands made of the pieces the patterns look for, in any order.
    fn command() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("||"),
            Just("|"),
            Just(" "),
            Just("\t"),
            Just(";"),
            Just("&"),
            Just(":"),
            Just("true"),
            Just("exit"),
            Just("0"),
            Just("set"),
            Just("+e"),
            Just("+o"),
            Just("errexit"),
            Just("trap"),
            Just("ERR"),
            Just("EXIT"),
            Just("x"),
            Just("é"),
            Just("a"),
            Just("b"),
            Just("ab"),
            Just("."),
        ];
        prop::collection::vec(piece, 0..10).prop_map(|v| v.concat())
    }

    /// Patterns of the syntax the screen reads, and some it declines.
    fn pattern() -> impl Strategy<Value = String> {
        let atom = prop_oneof![
            Just("a"),
            Just("b"),
            Just("x"),
            Just("exit"),
            Just(r"\|"),
            Just(r"\s"),
            Just(r"\b"),
            Just("."),
            Just("^"),
            Just("$"),
            Just("[ab]"),
            Just("[^a]"),
            Just("(a|b)"),
            Just("(exit|ab)"),
            Just("(?i)a"),
            Just(r"\x61"),
            Just(r"\<"),
            Just(r"\b{end}"),
            Just("é"),
        ];
        let quant = prop_oneof![
            Just(""),
            Just(""),
            Just("?"),
            Just("*"),
            Just("+"),
            Just("{0,2}"),
            Just("{1,}"),
            Just("+?"),
        ];
        let piece = (atom, quant).prop_map(|(a, q)| format!("{a}{q}"));
        let alt = prop::collection::vec(piece, 1..6).prop_map(|v| v.concat());
        prop::collection::vec(alt, 1..3).prop_map(|v| v.join("|"))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        #[test]
        fn the_screen_never_changes_an_answer(p in pattern(), cmds in prop::collection::vec(command(), 1..8)) {
            let Ok(s) = Screened::new(&p) else { return Ok(()) };
            for c in &cmds {
                prop_assert_eq!(s.is_match(c), s.regex.is_match(c), "{:?} on {:?}", p, c);
            }
        }

        #[test]
        fn the_embedded_patterns_answer_as_their_regex(c in command()) {
            for f in crate::org::OrgCommands::default().forbidden {
                let s = Screened::new(&f.pattern).expect("embedded pattern");
                prop_assert!(s.needles.is_some());
                prop_assert_eq!(s.is_match(&c), s.regex.is_match(&c), "{:?} on {:?}", f.pattern, c);
            }
        }
    }
}
