//! How many lines a changed file adds and removes, for `fleet plan`: the counts of a shortest
//! line diff, without building the diff.
//!
//! A line is the bytes up to and including a `\n`; a text's last line may lack one (so `a` and
//! `a\n` are different lines). A shortest line diff keeps a longest common subsequence of the
//! lines of both texts and adds or removes every other line, so its counts follow from the
//! length of the shortest edit script alone: with `n` old lines, `m` new lines and `d` lines
//! added or removed in all, `(n + m - d) / 2` lines are kept. Myers' algorithm finds `d` in
//! O((n + m) d) time; here each of its snakes (a run of equal lines) is one comparison of the
//! bytes from where the run starts in both texts, eight bytes at a time, rather than a
//! comparison per line, and no line is hashed. A stack of thousands of lines with a few
//! scattered changes costs a pass over its bytes.

/// Lines added and removed from `old` to `new` by a shortest line diff (a replaced line is one
/// removed and one added). When one side is empty (a new file, a file gone, a deployed version
/// that could not be read) every line of the other counts.
pub fn counts(old: &str, new: &str) -> (usize, usize) {
    let (old, new) = without_common_lines(old.as_bytes(), new.as_bytes());
    if old.is_empty() || new.is_empty() {
        return (count(new), count(old));
    }
    let (a, b) = (Lines::of(old), Lines::of(new));
    let changed = edit_distance(&a, &b);
    let kept = (a.len() + b.len() - changed) / 2;
    (b.len() - kept, a.len() - kept)
}

/// `old` and `new` without the whole lines they share at the start and at the end. A shortest
/// line diff keeps a common first and last line as they are, so the diff of what remains adds
/// and removes the same lines.
pub fn without_common_lines<'a>(old: &'a [u8], new: &'a [u8]) -> (&'a [u8], &'a [u8]) {
    let same = common_prefix(old, new);
    // The common part ends after the last line end it holds: both then start a line there.
    let start = memchr::memrchr(b'\n', &old[..same]).map_or(0, |i| i + 1);
    let (a, b) = (&old[start..], &new[start..]);
    let same_end = common_suffix(a, b);
    let (at_a, at_b) = (a.len() - same_end, b.len() - same_end);
    let line_start = |s: &[u8], at: usize| at == 0 || s[at - 1] == b'\n';
    // The common end is kept from a line start in both: where it starts, if both start a line
    // there, else after its first line end (none: nothing is cut at the end).
    let tail = if line_start(a, at_a) && line_start(b, at_b) {
        0
    } else {
        memchr::memchr(b'\n', &a[at_a..]).map_or(same_end, |i| i + 1)
    };
    let keep = same_end - tail;
    (&a[..a.len() - keep], &b[..b.len() - keep])
}

/// The number of lines of `s`.
pub fn count(s: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', s).count() + usize::from(!s.is_empty() && !s.ends_with(b"\n"))
}

/// The length of the longest common prefix of `a` and `b`, compared eight bytes at a time.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = word(&a[i..]) ^ word(&b[i..]);
        if x != 0 {
            // Little-endian: the first differing byte is the lowest non-zero one.
            return i + (x.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + a[i..n]
        .iter()
        .zip(&b[i..n])
        .take_while(|(x, y)| x == y)
        .count()
}

/// The length of the longest common suffix of `a` and `b`, compared eight bytes at a time.
fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[a.len() - n..], &b[b.len() - n..]);
    let mut same = 0;
    while same + 8 <= n {
        let at = n - same - 8;
        let x = word(&a[at..]) ^ word(&b[at..]);
        if x != 0 {
            // Little-endian: the last differing byte is the highest non-zero one.
            return same + (x.leading_zeros() / 8) as usize;
        }
        same += 8;
    }
    let rest = n - same;
    same + a[..rest]
        .iter()
        .rev()
        .zip(b[..rest].iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

/// The first eight bytes of `s` (at least eight long) as a little-endian word.
fn word(s: &[u8]) -> u64 {
    let mut w = [0; 8];
    w.copy_from_slice(&s[..8]);
    u64::from_le_bytes(w)
}

/// A text and where each of its lines starts.
struct Lines<'a> {
    text: &'a [u8],
    /// The start of every line, then the text's length: line `i` is
    /// `text[starts[i]..starts[i + 1]]`.
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn of(text: &'a [u8]) -> Lines<'a> {
        let mut starts = Vec::with_capacity(text.len() / 32 + 2);
        starts.push(0);
        starts.extend(memchr::memchr_iter(b'\n', text).map(|i| i + 1));
        if !text.ends_with(b"\n") {
            starts.push(text.len());
        }
        Lines { text, starts }
    }

    fn len(&self) -> usize {
        self.starts.len() - 1
    }

    /// How many lines from line `x` here are equal to the lines from line `y` of `other`, one
    /// for one. Both texts are compared as bytes from where those lines start: every line that
    /// ends inside the common part is the same line in both (its line end is at the same place
    /// in both), except a last line without a line end, which is the same only when the other
    /// text ends there too.
    fn same_run(&self, x: usize, other: &Lines<'_>, y: usize) -> usize {
        let (from_a, from_b) = (&self.text[self.starts[x]..], &other.text[other.starts[y]..]);
        let same = common_prefix(from_a, from_b);
        let base = self.starts[x];
        let mut run = self.starts[x + 1..].partition_point(|&end| end - base <= same);
        if run > 0 {
            let last = &self.text[self.starts[x + run - 1]..self.starts[x + run]];
            if !last.ends_with(b"\n") && from_b.len() != from_a.len() {
                run -= 1;
            }
        }
        run
    }
}

/// The number of lines a shortest edit script from `a` to `b` adds or removes (Myers, "An
/// O(ND) difference algorithm and its variations", 1986: the furthest point reached on each
/// diagonal with `d` edits, for growing `d`).
fn edit_distance(a: &Lines<'_>, b: &Lines<'_>) -> usize {
    let (n, m) = (a.len() as isize, b.len() as isize);
    let max = n + m;
    // `furthest[k + offset]`: the furthest `x` reached on diagonal `k = x - y`.
    let offset = max + 1;
    let mut furthest = vec![0isize; 2 * max as usize + 3];
    for d in 0..=max {
        for k in (-d..=d).step_by(2) {
            let i = (k + offset) as usize;
            // Down (a line added) from diagonal k + 1, or right (a line removed) from k - 1:
            // whichever reached further.
            let mut x = if k == -d || (k != d && furthest[i - 1] < furthest[i + 1]) {
                furthest[i + 1]
            } else {
                furthest[i - 1] + 1
            };
            let y = x - k;
            if x < n && y < m {
                x += a.same_run(x as usize, b, y as usize) as isize;
            }
            furthest[i] = x;
            if x >= n && x - k >= m {
                return d as usize;
            }
        }
    }
    max as usize
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The counts by their definition: a line diff (`similar`), every changed line counted.
    pub(in crate::fleet) fn by_line_diff(old: &str, new: &str) -> (usize, usize) {
        let diff = similar::TextDiff::from_lines(old, new);
        let (mut added, mut removed) = (0, 0);
        for c in diff.iter_all_changes() {
            match c.tag() {
                similar::ChangeTag::Insert => added += 1,
                similar::ChangeTag::Delete => removed += 1,
                similar::ChangeTag::Equal => {}
            }
        }
        (added, removed)
    }

    #[test]
    fn a_line_diff_sees_only_the_lines_that_differ() {
        let cut = |a: &'static str, b: &'static str| {
            let (a, b) = without_common_lines(a.as_bytes(), b.as_bytes());
            (
                std::str::from_utf8(a).expect("utf-8"),
                std::str::from_utf8(b).expect("utf-8"),
            )
        };
        assert_eq!(cut("a\nb\nc\nd\n", "a\nb\nX\nd\n"), ("c\n", "X\n"));
        // Common bytes that do not make a whole line stay with their line, at either end.
        assert_eq!(
            cut("line 1\nline 2", "line 1\nline 3"),
            ("line 2", "line 3")
        );
        assert_eq!(cut("ab\n", "b\n"), ("ab\n", "b\n"));
        assert_eq!(cut("x\n", "y\nx\n"), ("", "y\n"));
        assert_eq!(cut("a\nb", "a\nb\n"), ("b", "b\n"));
        assert_eq!(cut("same\n", "same\n"), ("", ""));
        assert_eq!(cut("a\na\n", "a\n"), ("a\n", ""));
        // Past the first eight bytes, and a difference in each byte of a word.
        for at in 0..24 {
            let old = "0123456789abcdefghijklmn\n".repeat(3);
            let mut new = old.clone().into_bytes();
            new[25 + at] = b'X';
            let new = String::from_utf8(new).expect("utf-8");
            let (a, b) = without_common_lines(old.as_bytes(), new.as_bytes());
            assert_eq!(
                (a, b),
                (&old.as_bytes()[25..50], &new.as_bytes()[25..50]),
                "{at}"
            );
        }
    }

    #[test]
    fn common_ends_are_found_at_every_byte() {
        let text: Vec<u8> = (0..40u8).collect();
        for len in 0..=40 {
            for at in 0..len {
                let mut other = text[..len].to_vec();
                other[at] ^= 0x80;
                assert_eq!(common_prefix(&text[..len], &other), at, "{len} {at}");
                assert_eq!(
                    common_suffix(&text[..len], &other),
                    len - at - 1,
                    "{len} {at}"
                );
            }
            assert_eq!(common_prefix(&text[..len], &text[..len]), len);
            assert_eq!(common_suffix(&text[..len], &text[..len]), len);
            assert_eq!(common_prefix(&text[..len], &text), len);
            assert_eq!(common_suffix(&text[40 - len..], &text), len);
        }
    }

    #[test]
    fn a_last_line_without_a_line_end_is_another_line() {
        assert_eq!(counts("a\nb", "a\nb\n"), (1, 1));
        assert_eq!(counts("a\nb\nc", "a\nb\nc\nd"), (2, 1));
        assert_eq!(counts("x\nab", "y\nabc"), (2, 2));
        assert_eq!(counts("x\nabc", "y\nab"), (2, 2));
        assert_eq!(counts("x\nab\n", "y\nab"), (2, 2));
        // A lone carriage return does not end a line.
        assert_eq!(counts("a\rb\nc\n", "a\rX\nc\n"), (1, 1));
    }

    #[test]
    fn scattered_changes_in_a_long_text() {
        let old: String = (0..3000).map(|i| format!("    \"line\": {i},\n")).collect();
        let mut new = old.replace("\"line\": 700,", "\"line\": 700, \"x\": 1,");
        new = new.replace("    \"line\": 1500,\n", "");
        new = new.replace(
            "    \"line\": 2500,\n",
            "    \"line\": 2500,\n    \"new\": true,\n",
        );
        assert_eq!(counts(&old, &new), (2, 2));
        assert_eq!(counts(&old, &new), by_line_diff(&old, &new));
    }

    proptest::proptest! {
        /// Lines of several lengths (shorter and longer than a word, some sharing a prefix),
        /// with or without a last line end, against the line diff's own counts.
        #[test]
        fn counts_are_those_of_a_line_diff(
            old in proptest::collection::vec(0usize..7, 0..60),
            new in proptest::collection::vec(0usize..7, 0..60),
            end_old in proptest::bool::ANY,
            end_new in proptest::bool::ANY,
        ) {
            const LINES: [&str; 7] =
                ["", "}", "},", "    \"Type\": \"A\"", "    \"Type\": \"AB\"", "abcdefghijklmnopq", "abcdefgh"];
            let text = |lines: &[usize], end: bool| {
                let mut t = lines.iter().map(|&l| LINES[l]).collect::<Vec<_>>().join("\n");
                if end {
                    t.push('\n');
                }
                t
            };
            let (old, new) = (text(&old, end_old), text(&new, end_new));
            proptest::prop_assert_eq!(counts(&old, &new), by_line_diff(&old, &new));
        }
    }
}
