//! `language` and `runtime`: a language of the catalog that the organisation allows, and one
//! of its runtime versions.

use super::{Ctx, Origin, Sourced, backticks};
use crate::catalog::{Catalog, Language};
use crate::manifest::RawManifest;
use crate::schema::did_you_mean;

/// The manifest's language, if the catalog has it and the organisation allows it.
pub(super) fn language<'c>(
    cx: &mut Ctx<'_>,
    raw: &RawManifest,
    catalog: &'c Catalog,
) -> Option<&'c Language> {
    let org = &cx.org.org;
    match raw.language.as_deref() {
        Some(l) => match catalog.language(l) {
            Some(lang) => {
                if !org.languages.allowed.is_empty()
                    && !org.languages.allowed.iter().any(|a| a == l)
                {
                    let rule = cx.org.cite("languages.allowed");
                    cx.err(
                        "language",
                        format!("language `{l}` is not allowed by the organisation"),
                        format!(
                            "allowed languages are {} (org rule {rule})",
                            backticks(&org.languages.allowed)
                        ),
                    );
                    None
                } else {
                    Some(lang)
                }
            }
            None => {
                let names: Vec<&str> = catalog.names().collect();
                let help = match did_you_mean(l, names.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("known languages are {}", backticks(&names)),
                };
                cx.err("language", format!("unknown language `{l}`"), help);
                None
            }
        },
        None => None,
    }
}

/// The runtime version: the manifest's, if the language offers it, else the language's default.
pub(super) fn runtime(
    cx: &mut Ctx<'_>,
    raw: &RawManifest,
    language: Option<&Language>,
) -> Option<Sourced<String>> {
    match (language, raw.runtime.as_deref()) {
        (Some(lang), Some(r)) => {
            if lang.runtime.versions.iter().any(|v| v == r) {
                Some(Sourced::new(r.to_owned(), Origin::Team))
            } else {
                cx.err(
                    "runtime",
                    format!(
                        "runtime `{r}` is not offered for `{}`",
                        raw.language.as_deref().unwrap_or_default()
                    ),
                    format!(
                        "choose one of {} (default `{}`)",
                        backticks(&lang.runtime.versions),
                        lang.runtime.default
                    ),
                );
                None
            }
        }
        (Some(lang), None) => Some(Sourced::new(lang.runtime.default.clone(), Origin::Language)),
        _ => None,
    }
}
