//! `versioning`: the first version and the pre-release identifier.

use super::{Ctx, Origin, Sourced, Versioning};
use crate::manifest::RawManifest;

/// The versioning settings.
pub(super) fn versioning(cx: &Ctx<'_>, raw: &RawManifest) -> Versioning {
    let org = &cx.org.org;
    let rv = raw.versioning.clone().unwrap_or_default();
    let initial = match rv.initial {
        Some(v) => Sourced::new(v, Origin::Team),
        None => Sourced::new("0.1.0".to_owned(), Origin::Default),
    };
    let prerelease = match rv.prerelease {
        Some(p) => Sourced::new(p, Origin::Team),
        None => Sourced::new(org.versioning.prerelease.clone(), Origin::Org),
    };
    Versioning {
        initial,
        prerelease,
    }
}
