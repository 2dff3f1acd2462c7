//! `deploy`: the application's template (one file inside the repository), its stack name and
//! the parameters every environment starts from.

use std::collections::BTreeMap;

use super::{Ctx, Deploy, Origin, Sourced, is_repo_relative};
use crate::manifest::RawManifest;

/// The deployment; `None` without a template or a stack name.
pub(super) fn deploy(
    cx: &mut Ctx<'_>,
    raw: &RawManifest,
    parameters: &BTreeMap<String, String>,
) -> Option<Deploy> {
    let rd = raw.deploy.clone().unwrap_or_default();
    if let Some(t) = &rd.template {
        if !is_repo_relative(t) {
            cx.err(
                "deploy.template",
                format!("template path `{t}` leaves the repository"),
                "use a path relative to the repository root, without `..`, e.g. `infra/app.yml`",
            );
        } else if t.contains(['*', '?', '[']) {
            cx.err(
                "deploy.template",
                format!("template path `{t}` is a pattern"),
                "name one file, e.g. `infra/app.yml`",
            );
        }
    }
    let stack_name = match (&rd.stack_name, &raw.name) {
        (Some(s), _) => Some(Sourced::new(s.clone(), Origin::Team)),
        (None, Some(n)) => Some(Sourced::new(n.clone(), Origin::Default)),
        _ => None,
    };
    Some(Deploy {
        template: rd.template?,
        stack_name: stack_name?,
        parameters: parameters.clone(),
    })
}

/// `deploy.parameters`: the template parameters of every environment.
pub(super) fn parameters(raw: &RawManifest) -> BTreeMap<String, String> {
    raw.deploy
        .as_ref()
        .and_then(|d| d.parameters.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}
