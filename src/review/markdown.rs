//! The pull-request comment: a [`Review`] as Markdown, within a vendor's size limit.
//!
//! The comment starts with a marker (an HTML comment on GitHub, an empty link reference on
//! Bitbucket, both invisible) by which pipeforge finds it again and updates it instead of
//! adding one per push. Then, in this order: the verdict, every problem with its line (a link to
//! the file at the commit), the pipeline (stages and actions, approvals, environments with
//! accounts and regions, gates, secret references), what changes per stack, and per file a
//! diff (collapsed on GitHub). When the whole does not fit, diffs are cut or left out first,
//! then list entries, and the comment says what was left out.
//!
//! Every text that comes from a manifest or a diff is escaped: it cannot close the comment's
//! code blocks, open HTML, or make a link.

use std::fmt::Write as _;

use super::{Review, Verdict};

/// The marker a pipeforge comment starts with (in the vendor's invisible form).
pub const MARKER: &str = "pipeforge:pull-request-preview";

/// Where a comment goes: the vendor's Markdown, its limit and how it links to files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// GitHub (`<details>` collapses diffs).
    Github {
        /// The repository's web address (`https://github.com/owner/name`).
        web: String,
    },
    /// Bitbucket Data Center.
    BitbucketServer {
        /// The repository's web address (`https://host/projects/KEY/repos/slug`).
        web: String,
    },
    /// Bitbucket Cloud.
    BitbucketCloud {
        /// The repository's web address (`https://bitbucket.org/workspace/slug`).
        web: String,
    },
}

impl Flavor {
    /// The vendor's largest comment, in characters: GitHub documents 65,536; Bitbucket Data
    /// Center and Cloud publish no number, so pipeforge stays at 32,768 for both.
    pub fn limit(&self) -> usize {
        match self {
            Flavor::Github { .. } => 65_536,
            Flavor::BitbucketServer { .. } | Flavor::BitbucketCloud { .. } => 32_768,
        }
    }

    /// The vendor's name, as said in the truncation note.
    pub fn vendor(&self) -> &'static str {
        match self {
            Flavor::Github { .. } => "GitHub",
            Flavor::BitbucketServer { .. } => "Bitbucket Data Center",
            Flavor::BitbucketCloud { .. } => "Bitbucket Cloud",
        }
    }

    /// The first line of every pipeforge comment.
    pub fn marker_line(&self) -> String {
        match self {
            Flavor::Github { .. } => format!("<!-- {MARKER} -->"),
            _ => format!("[//]: # ({MARKER})"),
        }
    }

    /// A link to `line` of `path` at `commit`.
    pub fn file_link(&self, path: &str, commit: &str, line: usize) -> String {
        let path = path.trim_start_matches('/');
        match self {
            Flavor::Github { web } => format!("{web}/blob/{commit}/{path}#L{line}"),
            Flavor::BitbucketServer { web } => format!("{web}/browse/{path}?at={commit}#{line}"),
            Flavor::BitbucketCloud { web } => format!("{web}/src/{commit}/{path}#lines-{line}"),
        }
    }

    fn collapses(&self) -> bool {
        matches!(self, Flavor::Github { .. })
    }
}

/// True when `body` is a pipeforge comment (its first line is the marker, in any flavour).
pub fn is_pipeforge_comment(body: &str) -> bool {
    let first = body.lines().next().unwrap_or_default().trim();
    first == format!("<!-- {MARKER} -->") || first == format!("[//]: # ({MARKER})")
}

/// Free text made inert: no HTML, no links, no table cells, no headings; backticks kept (they
/// mark identifiers in pipeforge's messages) but a run of them cannot open a code block.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '[' | ']' | '|' | '*' | '_' | '#' | '\\' | '!' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out.replace("```", "`\u{200b}``")
}

/// Text for an inline code span: inert there, except a backtick, which is replaced.
pub fn code(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '`' {
                '\''
            } else if c.is_control() {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// A fenced code block that its content cannot close.
fn fenced(lang: &str, text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    let mut t = text.to_owned();
    if !t.ends_with('\n') {
        t.push('\n');
    }
    format!("{fence}{lang}\n{t}{fence}\n")
}

/// Where the comment is about: the head commit and the manifest's path in the repository.
#[derive(Clone, Debug)]
pub struct Context<'a> {
    /// The vendor.
    pub flavor: &'a Flavor,
    /// The pull request's head commit (full hash).
    pub commit: &'a str,
    /// The manifest's path in the repository.
    pub manifest_path: &'a str,
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

fn head(r: &Review, cx: &Context<'_>) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{}", cx.flavor.marker_line());
    match (r.verdict, &r.pipeline) {
        (Verdict::Valid, Some(p)) => {
            let _ = writeln!(
                o,
                "### ✅ pipeforge: pipeline `{}` of team `{}` is valid",
                code(&p.name),
                code(&p.team)
            );
        }
        _ => {
            let n = r.problems.len() + usize::from(r.error.is_some());
            let _ = writeln!(
                o,
                "### ❌ pipeforge: `{}` has {n} problem{}; nothing would deploy",
                code(cx.manifest_path),
                if n == 1 { "" } else { "s" }
            );
        }
    }
    let against = match (r.baseline, &r.baseline_commit) {
        (super::BaselineKind::Deployed, Some(c)) => {
            format!(
                "compared with the deployed pipeline (commit `{}`)",
                short(c)
            )
        }
        (super::BaselineKind::Deployed, None) => "compared with the deployed pipeline".to_owned(),
        (super::BaselineKind::TargetBranch, Some(c)) => format!(
            "nothing deployed yet: compared with the target branch (commit `{}`)",
            short(c)
        ),
        (super::BaselineKind::TargetBranch, None) => {
            "nothing deployed yet: compared with the target branch".to_owned()
        }
        (super::BaselineKind::None, _) => "nothing to compare with".to_owned(),
    };
    let _ = writeln!(o, "\nHead `{}`, {against}.\n", short(cx.commit));
    o
}

fn problems(r: &Review, cx: &Context<'_>, max: usize) -> String {
    let mut o = String::new();
    if r.problems.is_empty() && r.error.is_none() {
        return o;
    }
    let _ = writeln!(o, "#### Problems\n");
    for p in r.problems.iter().take(max) {
        let at = match p.line {
            Some(l) => format!(
                "[{}:{l}]({})",
                esc(cx.manifest_path),
                cx.flavor.file_link(cx.manifest_path, cx.commit, l)
            ),
            None => esc(cx.manifest_path),
        };
        let path = p
            .path
            .as_ref()
            .map(|k| format!(" `{}`", code(k)))
            .unwrap_or_default();
        let _ = writeln!(o, "- {at}{path}: {}", esc(&p.message));
        if let Some(h) = &p.help {
            let _ = writeln!(o, "  help: {}", esc(h));
        }
    }
    if r.problems.len() > max {
        let _ = writeln!(
            o,
            "- … and {} more (run `pipeforge validate`)",
            r.problems.len() - max
        );
    }
    if let Some(e) = &r.error {
        let _ = writeln!(o, "\n{}", fenced("text", e));
    }
    o.push('\n');
    o
}

fn pipeline(r: &Review) -> String {
    let mut o = String::new();
    let Some(p) = &r.pipeline else {
        return o;
    };
    let _ = writeln!(o, "#### Pipeline\n");
    let _ = writeln!(
        o,
        "{} · tooling account {}\n",
        esc(&p.language),
        esc(&p.tooling)
    );
    let _ = writeln!(o, "| stage | actions |\n|---|---|");
    for s in &p.stages {
        let acts: Vec<String> = s
            .actions
            .iter()
            .map(|a| match a.kind {
                "approval" => format!(
                    "**⏸ approval** ({})",
                    esc(a.environment.as_deref().unwrap_or_default())
                ),
                "create-change-set" | "execute-change-set" => format!(
                    "{} → {} {}",
                    esc(&a.name),
                    esc(a.account.as_deref().unwrap_or_default()),
                    esc(a.region.as_deref().unwrap_or_default())
                ),
                _ => esc(&a.name),
            })
            .collect();
        let _ = writeln!(o, "| {} | {} |", esc(&s.name), acts.join(" → "));
    }
    let _ = writeln!(
        o,
        "\n| environment | account | region | approval |\n|---|---|---|---|"
    );
    for e in &p.environments {
        let approval = match (e.approval, e.production) {
            (true, true) => "required (production)",
            (true, false) => "required",
            (false, _) => "none",
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {approval} |",
            esc(&e.name),
            esc(&e.account),
            esc(&e.region)
        );
    }
    let gates: Vec<String> = p
        .gates
        .iter()
        .map(|g| {
            format!(
                "`{}` ({}{})",
                code(&g.name),
                g.stage,
                if g.mandatory { ", mandatory" } else { "" }
            )
        })
        .collect();
    let _ = writeln!(o, "\nGates: {}", gates.join(", "));
    if !p.disabled_gates.is_empty() {
        let off: Vec<String> = p
            .disabled_gates
            .iter()
            .map(|g| format!("`{}`", code(g)))
            .collect();
        let _ = writeln!(o, "\nTurned off (optional): {}", off.join(", "));
    }
    if !p.secrets.is_empty() {
        let refs: Vec<String> = p
            .secrets
            .iter()
            .map(|s| format!("`{}` ← `{}`", code(&s.variable), code(&s.reference)))
            .collect();
        let _ = writeln!(o, "\nSecrets (references only): {}", refs.join(", "));
    }
    o.push('\n');
    o
}

fn stacks(r: &Review, max_resources: usize) -> String {
    let mut o = String::new();
    if r.pipeline.is_none() || r.baseline == super::BaselineKind::None {
        return o;
    }
    let _ = writeln!(o, "#### Changes\n");
    if r.unchanged() {
        let _ = writeln!(o, "Nothing changes.\n");
        return o;
    }
    for s in r.stacks.iter().filter(|s| s.status != "unchanged") {
        let repl = s.replacements();
        let _ = writeln!(
            o,
            "- stack `{}` ({}): {} added, {} removed, {} modified{}{}",
            code(&s.stack),
            s.status,
            s.added.len(),
            s.removed.len(),
            s.modified.len(),
            if repl > 0 {
                format!(", **⚠ {repl} replaced**")
            } else {
                String::new()
            },
            if s.sections.is_empty() {
                String::new()
            } else {
                format!("; also {}", esc(&s.sections.join(", ")))
            }
        );
        let mut lines = Vec::new();
        lines.extend(
            s.added
                .iter()
                .map(|a| format!("  - `+ {}` {}", code(&a.id), esc(&a.rtype))),
        );
        lines.extend(
            s.removed
                .iter()
                .map(|a| format!("  - `- {}` {}", code(&a.id), esc(&a.rtype))),
        );
        lines.extend(s.modified.iter().map(|m| {
            format!(
                "  - `~ {}` {}: {}{}",
                code(&m.id),
                esc(&m.rtype),
                esc(&m.changed.join(", ")),
                if m.replacement {
                    " — **replacement**"
                } else {
                    ""
                }
            )
        }));
        let n = lines.len();
        for l in lines.into_iter().take(max_resources) {
            let _ = writeln!(o, "{l}");
        }
        if n > max_resources {
            let _ = writeln!(o, "  - … and {} more", n - max_resources);
        }
    }
    let files: Vec<String> = r
        .files
        .iter()
        .map(|f| format!("`{}` ({})", code(&f.path), f.status))
        .collect();
    if !files.is_empty() {
        let _ = writeln!(o, "- files: {}", files.join(", "));
    }
    o.push('\n');
    o
}

fn diff_block(flavor: &Flavor, title: &str, diff: &str) -> String {
    if flavor.collapses() {
        format!(
            "<details><summary>{}</summary>\n\n{}\n</details>\n\n",
            esc(title),
            fenced("diff", diff)
        )
    } else {
        format!("{}\n\n{}\n", esc(title), fenced("diff", diff))
    }
}

/// `s` cut to at most `max` characters.
fn cut(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// The comment for `r`, at most the flavour's limit in characters.
pub fn comment(r: &Review, cx: &Context<'_>) -> String {
    comment_within(r, cx, cx.flavor.limit())
}

/// [`comment`] within `limit` characters.
pub fn comment_within(r: &Review, cx: &Context<'_>, limit: usize) -> String {
    let footer = "\n<sub>Updated by pipeforge on every push; nothing is deployed until the pull request is merged.</sub>\n";
    let note_room = 400;
    let budget = limit.saturating_sub(chars(footer) + note_room);
    // The parts that must be there, shortened until they fit.
    let mut left_out = Vec::new();
    let mut base = String::new();
    for (max_problems, max_resources) in [(200, 100), (50, 25), (10, 5), (3, 0)] {
        base = format!(
            "{}{}{}{}",
            head(r, cx),
            problems(r, cx, max_problems),
            pipeline(r),
            stacks(r, max_resources)
        );
        if chars(&base) <= budget {
            break;
        }
    }
    if chars(&base) > budget {
        base = cut(&base, budget).to_owned();
        left_out.push("the end of the summary".to_owned());
    }
    let mut out = base;
    let mut room = budget.saturating_sub(chars(&out));
    for f in &r.files {
        let title = format!("{} ({})", f.path, f.status);
        let block = diff_block(cx.flavor, &title, &f.diff);
        if chars(&block) <= room {
            room -= chars(&block);
            out.push_str(&block);
            continue;
        }
        // Cut the diff to what is left, when enough is left to be useful.
        let overhead = chars(&diff_block(cx.flavor, &title, "")) + 40;
        if room > overhead + 200 {
            let part = format!("{}\n… (cut here)\n", cut(&f.diff, room - overhead - 20));
            let block = diff_block(cx.flavor, &title, &part);
            room = room.saturating_sub(chars(&block));
            out.push_str(&block);
            left_out.push(format!("the rest of the diff of `{}`", esc(&f.path)));
        } else {
            left_out.push(format!("the diff of `{}`", esc(&f.path)));
        }
    }
    if !left_out.is_empty() {
        let shown: Vec<&str> = left_out.iter().take(5).map(String::as_str).collect();
        let more = left_out.len().saturating_sub(shown.len());
        let _ = write!(
            out,
            "\n> **Truncated** to stay within the {} characters of a {} comment: left out {}{}. Run `pipeforge diff` or open the preview page for everything.\n",
            cx.flavor.limit(),
            cx.flavor.vendor(),
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }
    out.push_str(footer);
    if chars(&out) > limit {
        // Unreachable by construction (the note has its room); cut all the same.
        out = cut(&out, limit).to_owned();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review::{Baseline, BaselineKind, review};
    use crate::{Inputs, SourceFile};

    fn gh() -> Flavor {
        Flavor::Github {
            web: "https://github.com/payments/orders-api".to_owned(),
        }
    }

    fn cx(f: &Flavor) -> Context<'_> {
        Context {
            flavor: f,
            commit: "0123456789abcdef0123456789abcdef01234567",
            manifest_path: "pipeline.yml",
        }
    }

    fn example() -> String {
        include_str!("../../examples/pipeline.yml").to_owned()
    }

    #[test]
    fn problems_link_to_their_line_at_the_commit() {
        let inputs = Inputs::load(None, None, None).expect("inputs");
        let text = example().replace("approval: true", "approval: false");
        let r = review(&SourceFile::new("pipeline.yml", text), &inputs, None);
        let f = gh();
        let c = comment(&r, &cx(&f));
        assert!(is_pipeforge_comment(&c));
        assert!(c.contains("❌"), "{c}");
        assert!(
            c.contains("https://github.com/payments/orders-api/blob/0123456789abcdef0123456789abcdef01234567/pipeline.yml#L"),
            "{c}"
        );
    }

    #[test]
    fn hostile_text_cannot_make_links_html_or_close_code_blocks() {
        assert_eq!(
            esc("<!-- x --> [a](http://e) ```"),
            "&lt;\\!-- x --&gt; \\[a\\](http://e) `\u{200b}``"
        );
        let block = fenced("diff", "a ``` b ```` c");
        assert!(block.starts_with("`````diff\n"), "{block}");
    }

    #[test]
    fn a_long_comment_is_cut_within_the_limit_and_says_so() {
        let inputs = Inputs::load(None, None, None).expect("inputs");
        let old =
            crate::generate(&SourceFile::new("pipeline.yml", example()), &inputs).expect("renders");
        let mut base = Baseline::from_outputs(BaselineKind::Deployed, None, &old.outputs);
        // Every buildspec differs entirely from the baseline.
        for (p, b) in base.files.iter_mut() {
            if p.starts_with("buildspecs/") {
                *b = b"version: 0.2\n".to_vec();
            }
        }
        let r = review(
            &SourceFile::new("pipeline.yml", example()),
            &inputs,
            Some(&base),
        );
        for f in [
            gh(),
            Flavor::BitbucketCloud {
                web: "https://bitbucket.org/p/o".into(),
            },
        ] {
            let full = comment_within(&r, &cx(&f), 1_000_000);
            assert!(!full.contains("Truncated"));
            for limit in [6_000, 12_000] {
                let c = comment_within(&r, &cx(&f), limit);
                assert!(
                    c.chars().count() <= limit,
                    "{} > {limit}",
                    c.chars().count()
                );
                assert!(c.contains("**Truncated**"), "{c}");
                assert!(c.contains("#### Pipeline"));
            }
        }
    }
}

#[cfg(test)]
mod example {
    use super::*;
    use crate::review::{Baseline, BaselineKind, review};
    use crate::{Inputs, SourceFile};

    /// `docs/pr-comment-example.md`, the comment the README shows: the example manifest with
    /// a changed variable and a new environment, against its deployed bundle. Rewritten with
    /// `UPDATE_GOLDEN=1` (never when `CI` is set).
    #[test]
    fn the_readme_example_comment_is_current() {
        let inputs = Inputs::load(None, None, None).expect("inputs");
        let text = include_str!("../../examples/pipeline.yml");
        let old = crate::generate(&SourceFile::new("pipeline.yml", text.to_owned()), &inputs)
            .expect("renders");
        let new = text.replace("LOG_LEVEL: info", "LOG_LEVEL: debug").replace(
            "  - {name: test, account: \"222222222222\"}\n",
            "  - {name: test, account: \"222222222222\"}\n  - {name: staging, account: \"444444444444\"}\n",
        );
        assert_ne!(new, text);
        let base = Baseline::from_outputs(
            BaselineKind::Deployed,
            Some("9fceb02d0ae598e95dc970b74767f19372d61af8".to_owned()),
            &old.outputs,
        );
        let r = review(&SourceFile::new("pipeline.yml", new), &inputs, Some(&base));
        let f = Flavor::Github {
            web: "https://github.com/payments/orders-api".to_owned(),
        };
        let body = comment(
            &r,
            &Context {
                flavor: &f,
                commit: "3a0f86fb8db8eea7ccbb9a95f325ddbedfb25e15",
                manifest_path: "pipeline.yml",
            },
        );
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/pr-comment-example.md");
        if std::env::var_os("UPDATE_GOLDEN").is_some() && std::env::var_os("CI").is_none() {
            std::fs::write(path, &body).expect("write");
        }
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == body,
            "docs/pr-comment-example.md is stale; run `UPDATE_GOLDEN=1 cargo test --lib review`"
        );
    }
}
