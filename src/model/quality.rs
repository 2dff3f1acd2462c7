//! `quality`: the coverage threshold, never below the org's floor.

use super::enforce::Violation;
use super::{Ctx, Origin, Sourced};
use crate::manifest::RawManifest;
use crate::org::COVERAGE_FLOOR_RULE;

/// `quality.coverage_min`, else the org's floor.
pub(super) fn coverage_min(cx: &mut Ctx<'_>, raw: &RawManifest) -> Sourced<i64> {
    let org = &cx.org.org;
    let floor = org.quality.coverage_floor;
    match raw.quality.as_ref().and_then(|q| q.coverage_min) {
        Some(c) => {
            if c < floor {
                let rule = cx.org.cite("quality.coverage_floor");
                cx.violation(Violation {
                    subject: format!("rule `{COVERAGE_FLOOR_RULE}`"),
                    path: "quality.coverage_min",
                    message: format!("coverage {c}% is below the organisation's floor of {floor}%"),
                    help: format!(
                        "use at least {floor}, or leave it out to get {floor} (org rule {rule})"
                    ),
                    enforce_from: None,
                });
            }
            Sourced::new(c, Origin::Team)
        }
        None => Sourced::new(floor, Origin::Org),
    }
}
