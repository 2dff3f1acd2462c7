//! The template set: embedded defaults plus an optional override directory, in one strict,
//! escaping Tera instance.
//!
//! Lookup order, in [`Templates::load`] and nowhere else: a file `DIR/<name>` given with
//! `--templates DIR` wins over the embedded `templates/<name>`. Every `{{ value }}` is escaped
//! by [`super::escape::tera_escape`] (a JSON-quoted string, valid YAML too); `| safe` is only
//! for values the code has validated against a pattern. Undefined variables are errors.
//!
//! When to parse: a set with an override directory is parsed whole when it loads (its templates
//! may include or extend each other, and a syntax error anywhere is reported at once). The
//! embedded set alone is parsed one template at a time, the first time a template renders: a
//! render uses four of its six templates (never the bootstrap stacks), and a one-manifest run
//! should not pay for the others. The embedded templates are standalone and parse (tested:
//! `embedded_templates_parse_alone`), so this changes no result.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use serde::Serialize;

use crate::assets;
use crate::error::{Error, Result};

/// A template's text: the embedded set's is borrowed from the binary, an override file's owned.
type Text = Cow<'static, str>;

/// The buildspec template used for every gate without its own.
pub const TEMPLATE_BUILDSPEC: &str = "buildspec/gate.yml.tera";

/// The buildspec template of one gate, if the template set has it (`buildspec/<gate>.yml.tera`).
pub fn buildspec_template_for(gate: &str) -> String {
    format!("buildspec/{gate}.yml.tera")
}

/// The pipeline stack template.
pub const TEMPLATE_PIPELINE_STACK: &str = "stacks/pipeline.yml.tera";
/// The per-environment target stack template.
pub const TEMPLATE_TARGET_STACK: &str = "stacks/target.yml.tera";
/// The cross-region artifact store template (tooling account, one per extra region).
pub const TEMPLATE_REGION_STACK: &str = "stacks/region.yml.tera";

/// The name of the embedded template set, recorded in every stack's `Metadata`.
pub const EMBEDDED_SET_NAME: &str = "pipeforge";

/// Where a template came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateOrigin {
    /// Embedded in the binary.
    Embedded,
    /// From the override directory (the full path).
    Override(String),
}

/// A loaded template set.
pub struct Templates {
    compiled: Compiled,
    sources: BTreeMap<String, (Text, TemplateOrigin)>,
    set_name: String,
}

/// The parsed templates of a set (see the module docs for when each is parsed).
enum Compiled {
    /// Every template of the set in one instance, parsed when the set loaded.
    Whole(Box<tera::Tera>),
    /// The embedded set: one instance per template, parsed at its first render (the error
    /// message, if it does not parse).
    Each(BTreeMap<&'static str, OnceLock<std::result::Result<tera::Tera, String>>>),
}

/// A Tera instance with pipeforge's settings: strict, every value escaped.
fn new_tera() -> tera::Tera {
    let mut tera = tera::Tera::default();
    tera.set_escape_fn(super::escape::tera_escape);
    tera.autoescape_on(vec![".tera"]);
    tera
}

/// The error of a template set that does not parse.
fn syntax_error(name: String, message: String) -> Error {
    Error::Template {
        name,
        message,
        help:
            "fix the template syntax; `pipeforge templates check` renders every golden case with it"
                .to_owned(),
    }
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("names", &self.sources.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn collect_dir(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, (Text, TemplateOrigin)>,
) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::read(dir, e))?;
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        let is_hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if is_hidden {
            continue;
        }
        if p.is_dir() {
            collect_dir(root, &p, out)?;
        } else if p.extension().and_then(|e| e.to_str()) == Some("tera") {
            let rel = p
                .strip_prefix(root)
                .map_err(|_| {
                    Error::other(
                        format!("`{}` is outside the template directory", p.display()),
                        "use plain files inside the directory",
                    )
                })?
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&p).map_err(|e| Error::read(&p, e))?;
            out.insert(
                rel,
                (
                    Cow::Owned(text),
                    TemplateOrigin::Override(p.display().to_string()),
                ),
            );
        }
    }
    Ok(())
}

/// Turns a Tera error (and its causes) into one line of text.
fn tera_message(e: &tera::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = s.source();
    }
    msg
}

impl Templates {
    /// Loads the embedded templates, then the files of `dir` (if given) over them.
    pub fn load(dir: Option<&Path>) -> Result<Templates> {
        let mut sources: BTreeMap<String, (Text, TemplateOrigin)> = BTreeMap::new();
        for (path, text) in assets::list("templates/") {
            let name = path.trim_start_matches("templates/").to_owned();
            sources.insert(name, (Cow::Borrowed(text), TemplateOrigin::Embedded));
        }
        let Some(dir) = dir else {
            let each = assets::list("templates/")
                .map(|(path, _)| (path.trim_start_matches("templates/"), OnceLock::new()))
                .collect();
            return Ok(Templates {
                compiled: Compiled::Each(each),
                sources,
                set_name: EMBEDDED_SET_NAME.to_owned(),
            });
        };
        if !dir.is_dir() {
            return Err(Error::other(
                format!("template directory `{}` does not exist", dir.display()),
                "pass a directory laid out like `templates/` (e.g. `buildspec/gate.yml.tera`)",
            ));
        }
        collect_dir(dir, dir, &mut sources)?;
        let tera = parse_whole(&sources)?;
        let set_name = match dir.file_name() {
            Some(n) => format!("{EMBEDDED_SET_NAME}+{}", n.to_string_lossy()),
            None => EMBEDDED_SET_NAME.to_owned(),
        };
        Ok(Templates {
            compiled: Compiled::Whole(Box::new(tera)),
            sources,
            set_name,
        })
    }

    /// The embedded template set (cached).
    pub fn embedded() -> Result<&'static Templates> {
        static T: OnceLock<std::result::Result<Templates, String>> = OnceLock::new();
        T.get_or_init(|| Templates::load(None).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| {
                Error::other(
                    format!("the embedded templates are invalid: {e}"),
                    "this is a pipeforge build problem",
                )
            })
    }

    /// `sha256:<hex>` of the whole set: every template's name and text (newlines normalised), in
    /// name order. Two sets with the same hash render the same files.
    pub fn content_hash(&self) -> String {
        let mut all = Vec::new();
        for (name, (text, _)) in &self.sources {
            all.extend_from_slice(name.as_bytes());
            all.push(0);
            all.extend_from_slice(normalised(text).as_bytes());
            all.push(0);
        }
        crate::outputs::sha256(&all)
    }

    /// The set's name: `pipeforge` for the embedded set, `pipeforge+<dir name>` with an override
    /// directory (its base name only, so the name does not depend on where it is checked out).
    pub fn set_name(&self) -> &str {
        &self.set_name
    }

    /// True when the set has a template of that name.
    pub fn has(&self, name: &str) -> bool {
        self.sources.contains_key(name)
    }

    /// The source text of a template.
    pub fn source(&self, name: &str) -> Option<&str> {
        self.sources.get(name).map(|(t, _)| t.as_ref())
    }

    /// Where a template came from.
    pub fn origin(&self, name: &str) -> Option<&TemplateOrigin> {
        self.sources.get(name).map(|(_, o)| o)
    }

    /// Parses, ahead of their first render, the embedded templates a render uses (the
    /// buildspecs and the stacks, in the order a render needs them; never the bootstrap
    /// stacks), so that another thread can do it while the manifest is read, validated and
    /// planned. A template that does not parse keeps its error for the render that uses it.
    /// Nothing to do for a set with an override directory (parsed whole when it loaded).
    pub fn prepare(&self) {
        let Compiled::Each(each) = &self.compiled else {
            return;
        };
        let buildspecs = each.keys().filter(|n| n.starts_with("buildspec/"));
        let stacks = [
            TEMPLATE_TARGET_STACK,
            TEMPLATE_PIPELINE_STACK,
            TEMPLATE_REGION_STACK,
        ];
        for name in buildspecs.copied().chain(stacks) {
            let _ = self.tera_for(name);
        }
    }

    /// The names of the templates parsed so far (every one for a set parsed whole).
    #[cfg(test)]
    pub(crate) fn parsed(&self) -> Vec<&str> {
        match &self.compiled {
            Compiled::Whole(_) => self.sources.keys().map(String::as_str).collect(),
            Compiled::Each(each) => each
                .iter()
                .filter(|(_, cell)| cell.get().is_some())
                .map(|(name, _)| *name)
                .collect(),
        }
    }

    /// The parsed instance that holds template `name`.
    fn tera_for(&self, name: &str) -> Result<&tera::Tera> {
        let each = match &self.compiled {
            Compiled::Whole(tera) => return Ok(tera.as_ref()),
            Compiled::Each(each) => each,
        };
        let (Some(cell), Some((text, _))) = (each.get(name), self.sources.get(name)) else {
            return Err(Error::Template {
                name: name.to_owned(),
                message: format!("template `{name}` not found"),
                help: "this is a pipeforge bug: the template set has no such template".to_owned(),
            });
        };
        cell.get_or_init(|| {
            let mut tera = new_tera();
            tera.add_raw_template(name, &normalised(text))
                .map(|()| tera)
                .map_err(|e| tera_message(&e))
        })
        .as_ref()
        .map_err(|message| syntax_error(name.to_owned(), message.clone()))
    }

    /// Renders a template with a typed context.
    pub fn render<C: Serialize>(&self, name: &str, context: &C) -> Result<String> {
        let ctx = tera::Context::from_serialize(context).map_err(|e| Error::Template {
            name: name.to_owned(),
            message: tera_message(&e),
            help: "this is a pipeforge bug: the template context could not be built".to_owned(),
        })?;
        let out = self
            .tera_for(name)?
            .render(name, &ctx)
            .map_err(|e| Error::Template {
                name: name.to_owned(),
                message: tera_message(&e),
                help: "check the variable names against the context documented in ARCHITECTURE.md"
                    .to_owned(),
            })?;
        Ok(normalise_owned(out))
    }
}

/// Every template of `sources` parsed into one instance.
fn parse_whole(sources: &BTreeMap<String, (Text, TemplateOrigin)>) -> Result<tera::Tera> {
    let mut tera = new_tera();
    // Tera takes borrowed names and texts: an already normalised override file is not copied.
    let pairs = sources
        .iter()
        .map(|(k, (v, _))| (k.as_str(), normalised(v)));
    tera.add_raw_templates(pairs).map_err(|e| {
        let message = tera_message(&e);
        let name = sources
            .keys()
            .find(|k| message.contains(k.as_str()))
            .cloned()
            .unwrap_or_else(|| "?".to_owned());
        syntax_error(name, message)
    })?;
    Ok(tera)
}

/// [`normalise_newlines`] of an owned text, in place when it has no `\r`.
fn normalise_owned(mut s: String) -> String {
    // `memchr` reads a vector register's worth a step (`str::contains`, eight bytes).
    if memchr::memchr(b'\r', s.as_bytes()).is_some() {
        return normalise_newlines(&s);
    }
    s.truncate(s.trim_end_matches('\n').len());
    s.push('\n');
    s
}

/// [`normalise_newlines`], borrowing `s` when it is already normalised (every embedded
/// template: no `\r`, one trailing newline).
fn normalised(s: &str) -> Cow<'_, str> {
    let b = s.as_bytes();
    let one_newline = b.ends_with(b"\n") && !b.ends_with(b"\n\n");
    if one_newline && memchr::memchr(b'\r', b).is_none() {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(normalise_newlines(s))
    }
}

/// `\r\n` → `\n`, and exactly one trailing newline.
pub fn normalise_newlines(s: &str) -> String {
    let mut t = if s.contains('\r') {
        s.replace("\r\n", "\n")
    } else {
        // The usual case (every rendered file): one copy, room for the newline.
        let mut t = String::with_capacity(s.len() + 1);
        t.push_str(s.trim_end_matches('\n'));
        t
    };
    while t.ends_with("\n\n") {
        t.pop();
    }
    if !t.ends_with('\n') {
        t.push('\n');
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded set is parsed one template at a time: each must parse alone, and the set
    /// must parse as a whole too (as it does under an override directory).
    #[test]
    fn embedded_templates_parse_alone() {
        let set = Templates::load(None).expect("embedded set");
        let names: Vec<&str> = set.sources.keys().map(String::as_str).collect();
        assert!(names.len() >= 6, "{names:?}");
        for name in &names {
            set.tera_for(name)
                .unwrap_or_else(|e| panic!("{name} does not parse alone: {e}"));
        }
        parse_whole(&set.sources).expect("the embedded set parses as a whole");
    }

    /// A template that does not parse is reported by name, at load with an override directory
    /// (even one no render uses) and at first use in the embedded set.
    #[test]
    fn syntax_errors_name_the_template() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("extra")).expect("mkdir");
        std::fs::write(dir.path().join("extra/broken.yml.tera"), "a: {{ x \n").expect("write");
        let err = Templates::load(Some(dir.path())).expect_err("a syntax error");
        assert!(err.to_string().contains("extra/broken.yml.tera"), "{err}");

        let mut set = Templates::load(None).expect("embedded set");
        set.sources.insert(
            "extra/broken.yml.tera".to_owned(),
            (Cow::Borrowed("a: {{ x \n"), TemplateOrigin::Embedded),
        );
        if let Compiled::Each(each) = &mut set.compiled {
            each.insert("extra/broken.yml.tera", OnceLock::new());
        }
        let err = set
            .render("extra/broken.yml.tera", &serde_json::json!({"x": 1}))
            .expect_err("a syntax error");
        assert!(err.to_string().contains("extra/broken.yml.tera"), "{err}");
        let missing = set.render("nope.yml.tera", &serde_json::json!({}));
        assert!(missing.is_err());
    }

    /// `prepare` parses what a render uses, never the bootstrap stacks; a broken template
    /// keeps its error for the render that uses it.
    #[test]
    fn prepare_parses_the_render_templates_only_and_keeps_errors() {
        let mut set = Templates::load(None).expect("embedded set");
        set.sources.insert(
            "buildspec/broken.yml.tera".to_owned(),
            (Cow::Borrowed("a: {{ x \n"), TemplateOrigin::Embedded),
        );
        if let Compiled::Each(each) = &mut set.compiled {
            each.insert("buildspec/broken.yml.tera", OnceLock::new());
        }
        set.prepare();
        let Compiled::Each(each) = &set.compiled else {
            panic!("the embedded set is parsed template by template")
        };
        let parsed: Vec<&str> = each
            .iter()
            .filter(|(_, cell)| cell.get().is_some())
            .map(|(name, _)| *name)
            .collect();
        assert_eq!(
            parsed,
            [
                "buildspec/broken.yml.tera",
                TEMPLATE_BUILDSPEC,
                TEMPLATE_PIPELINE_STACK,
                TEMPLATE_REGION_STACK,
                TEMPLATE_TARGET_STACK
            ]
        );
        let err = set
            .render("buildspec/broken.yml.tera", &serde_json::json!({"x": 1}))
            .expect_err("a syntax error");
        assert!(
            err.to_string().contains("buildspec/broken.yml.tera"),
            "{err}"
        );
    }

    #[test]
    fn newlines_are_normalised_the_same_owned_or_borrowed() {
        for s in [
            "",
            "\n",
            "\n\n",
            "a",
            "a\n",
            "a\n\n\n",
            "a\r\nb\r\n\r\n",
            "a\rb",
            "a\nb\n",
        ] {
            let want = s.replace("\r\n", "\n").trim_end_matches('\n').to_owned() + "\n";
            assert_eq!(normalise_newlines(s), want, "{s:?}");
            assert_eq!(normalise_owned(s.to_owned()), want, "{s:?}");
            // Borrowed exactly when there is nothing to change.
            let cow = normalised(s);
            assert_eq!(cow, want, "{s:?}");
            assert_eq!(matches!(cow, Cow::Borrowed(_)), s == want, "{s:?}");
        }
    }
}
