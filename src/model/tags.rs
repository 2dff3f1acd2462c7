//! `tags`: the manifest's tags (no reserved key, AWS's characters only), the org's required
//! tags, and AWS's limit of 50.

use std::collections::BTreeMap;

use super::{Ctx, is_tag_value_char};
use crate::error::Diagnostic;
use crate::manifest::RawManifest;
use crate::schema::join_key;

/// The manifest's tags.
pub(super) fn tags(cx: &mut Ctx<'_>, raw: &RawManifest) -> BTreeMap<String, String> {
    let org = &cx.org.org;
    let mut tags = BTreeMap::new();
    for (k, v) in raw.tags.clone().unwrap_or_default() {
        let path = join_key("tags", &k);
        let lower = k.to_ascii_lowercase();
        if lower == "team" || lower == "pipeline" || lower.starts_with("aws:") {
            cx.err_key(&path, format!("tag key `{k}` is reserved"), "pipeforge sets `team` and `pipeline` itself, and `aws:` tags belong to AWS; choose another key");
            continue;
        }
        if let Some(bad) = v.0.chars().find(|c| !is_tag_value_char(*c)) {
            cx.err(
                &path,
                format!("tag value contains {bad:?}, which AWS does not allow in tags"),
                "use letters, digits, spaces and `_ . : / = + - @` only",
            );
            continue;
        }
        tags.insert(k, v.0);
    }
    for (i, req) in org.tags.required.iter().enumerate() {
        if !tags.contains_key(req) {
            let rule = cx.org.cite(&format!("tags.required[{i}]"));
            let path = if cx.checked.spans.contains("tags") {
                "tags"
            } else {
                ""
            };
            if path.is_empty() {
                cx.diags.push(Diagnostic::file_level(
                    cx.file.name.clone(),
                    format!("missing required tag `{req}`"),
                    format!("add `tags: {{{req}: ...}}` (org rule {rule})"),
                ));
            } else {
                cx.err_key(
                    path,
                    format!("missing required tag `{req}`"),
                    format!("add `{req}: ...` under `tags` (org rule {rule})"),
                );
            }
        }
    }
    if tags.len() + 2 > 50 {
        cx.err_key(
            "tags",
            format!(
                "{} tags plus `team` and `pipeline` exceed the AWS limit of 50",
                tags.len()
            ),
            "remove tags until there are at most 48",
        );
    }
    tags
}
