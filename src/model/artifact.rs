//! `artifact`: what the build publishes (kind, repository, paths inside the repository), with
//! the language's defaults.

use super::{Artifact, Ctx, Origin, Sourced, is_repo_relative};
use crate::catalog::Language;
use crate::manifest::{ArtifactKind, RawManifest};

/// The artifact settings; `None` when neither the manifest nor the language gives a kind or
/// paths.
pub(super) fn artifact(
    cx: &mut Ctx<'_>,
    raw: &RawManifest,
    language: Option<&Language>,
) -> Option<Artifact> {
    let ra = raw.artifact.clone().unwrap_or_default();
    let kind = match (ra.kind, language) {
        (Some(k), _) => Some(Sourced::new(k, Origin::Team)),
        (None, Some(l)) => Some(Sourced::new(l.artifact.kind, Origin::Language)),
        (None, None) => None,
    };
    // CodeArtifact repositories default to the team's, ECR repositories to the pipeline's name.
    let repository = match (&kind, ra.repository) {
        (_, Some(r)) => Some(Sourced::new(r, Origin::Team)),
        (Some(k), None) if k.value == ArtifactKind::Codeartifact => {
            raw.team.clone().map(|t| Sourced::new(t, Origin::Default))
        }
        (Some(k), None) if k.value == ArtifactKind::Ecr => {
            raw.name.clone().map(|n| Sourced::new(n, Origin::Default))
        }
        _ => None,
    };
    let paths = match (ra.paths, language) {
        (Some(p), _) => {
            let p: Vec<String> = p.into_iter().map(|g| g.0).collect();
            for (i, g) in p.iter().enumerate() {
                if !is_repo_relative(g) {
                    cx.err(
                        &format!("artifact.paths[{i}]"),
                        format!("path `{g}` leaves the repository"),
                        "use a path relative to the repository root, without `..`, e.g. `dist/**`",
                    );
                }
            }
            Some(Sourced::new(p, Origin::Team))
        }
        (None, Some(l)) => Some(Sourced::new(l.artifact.paths.clone(), Origin::Language)),
        (None, None) => None,
    };
    Some(Artifact {
        kind: kind?,
        repository,
        paths: paths?,
    })
}
