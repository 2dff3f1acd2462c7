//! The template set: embedded defaults plus an optional override directory, in one strict,
//! escaping Tera instance.
//!
//! Lookup order, in [`Templates::load`] and nowhere else: a file `DIR/<name>` given with
//! `--templates DIR` wins over the embedded `templates/<name>`. Every `{{ value }}` is escaped
//! by [`super::escape::tera_escape`] (a JSON-quoted string, valid YAML too); `| safe` is only
//! for values the code has validated against a pattern. Undefined variables are errors.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use serde::Serialize;

use crate::assets;
use crate::error::{Error, Result};

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
    tera: tera::Tera,
    sources: BTreeMap<String, (String, TemplateOrigin)>,
    set_name: String,
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
    out: &mut BTreeMap<String, (String, TemplateOrigin)>,
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
                (text, TemplateOrigin::Override(p.display().to_string())),
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
        let mut sources: BTreeMap<String, (String, TemplateOrigin)> = BTreeMap::new();
        for (path, text) in assets::list("templates/") {
            let name = path.trim_start_matches("templates/").to_owned();
            sources.insert(name, (text.to_owned(), TemplateOrigin::Embedded));
        }
        if let Some(dir) = dir {
            if !dir.is_dir() {
                return Err(Error::other(
                    format!("template directory `{}` does not exist", dir.display()),
                    "pass a directory laid out like `templates/` (e.g. `buildspec/gate.yml.tera`)",
                ));
            }
            collect_dir(dir, dir, &mut sources)?;
        }
        let mut tera = tera::Tera::default();
        tera.set_escape_fn(super::escape::tera_escape);
        tera.autoescape_on(vec![".tera"]);
        let pairs: Vec<(String, String)> = sources
            .iter()
            .map(|(k, (v, _))| (k.clone(), normalise_newlines(v)))
            .collect();
        tera.add_raw_templates(pairs).map_err(|e| {
            let name = sources.keys().find(|k| tera_message(&e).contains(k.as_str())).cloned().unwrap_or_else(|| "?".to_owned());
            Error::Template {
                name,
                message: tera_message(&e),
                help: "fix the template syntax; `pipeforge templates check` renders every golden case with it".to_owned(),
            }
        })?;
        let set_name = match dir.and_then(|d| d.file_name()) {
            Some(n) => format!("{EMBEDDED_SET_NAME}+{}", n.to_string_lossy()),
            None => EMBEDDED_SET_NAME.to_owned(),
        };
        Ok(Templates {
            tera,
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
            all.extend_from_slice(normalise_newlines(text).as_bytes());
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
        self.sources.get(name).map(|(t, _)| t.as_str())
    }

    /// Where a template came from.
    pub fn origin(&self, name: &str) -> Option<&TemplateOrigin> {
        self.sources.get(name).map(|(_, o)| o)
    }

    /// Renders a template with a typed context.
    pub fn render<C: Serialize>(&self, name: &str, context: &C) -> Result<String> {
        let ctx = tera::Context::from_serialize(context).map_err(|e| Error::Template {
            name: name.to_owned(),
            message: tera_message(&e),
            help: "this is a pipeforge bug: the template context could not be built".to_owned(),
        })?;
        let out = self.tera.render(name, &ctx).map_err(|e| Error::Template {
            name: name.to_owned(),
            message: tera_message(&e),
            help: "check the variable names against the context documented in ARCHITECTURE.md"
                .to_owned(),
        })?;
        Ok(normalise_newlines(&out))
    }
}

/// `\r\n` → `\n`, and exactly one trailing newline.
pub fn normalise_newlines(s: &str) -> String {
    let mut t = s.replace("\r\n", "\n");
    while t.ends_with("\n\n") {
        t.pop();
    }
    if !t.ends_with('\n') {
        t.push('\n');
    }
    t
}
