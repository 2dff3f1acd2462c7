//! `notifications`: e-mail subscribers and events, with the org's default events.

use super::{Ctx, Notifications, Origin, Sourced};
use crate::manifest::RawManifest;

/// The notification settings.
pub(super) fn notifications(cx: &Ctx<'_>, raw: &RawManifest) -> Notifications {
    let org = &cx.org.org;
    let rn = raw.notifications.clone().unwrap_or_default();
    let events = match rn.events {
        Some(ev) => Sourced::new(ev, Origin::Team),
        None => Sourced::new(org.notifications.default_events.clone(), Origin::Org),
    };
    Notifications {
        email: rn.email.unwrap_or_default(),
        events,
    }
}
