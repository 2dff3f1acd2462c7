//! Warn first, then enforce: how a manifest's violation of a waivable org rule (a mandatory
//! gate turned off or missing, a forbidden command, the coverage floor) is treated on the day of
//! the evaluation.
//!
//! In this order: an active waiver covering the pipeline allows it (a `waived` notice); a rule
//! whose `enforce_from` is still ahead allows it (a `warning` notice, an error from that day);
//! anything else is an error, whose help names a waiver that covered the pipeline but expired.
//! Without a day (`Evaluation::today` unknown) every rule is enforced and no waiver applies.

use super::{Ctx, Notice, NoticeKind, WaiverUse};
use crate::date::Date;
use crate::org::Waiver;

/// A violation of a waivable rule.
pub(super) struct Violation<'a> {
    /// ``gate `x` `` or ``rule `y` `` (as `Waiver::subject` names it).
    pub subject: String,
    /// The manifest's key path.
    pub path: &'a str,
    /// What is wrong (the error's message).
    pub message: String,
    /// What to do (the error's help).
    pub help: String,
    /// The rule's `enforce_from`, when it has one.
    pub enforce_from: Option<Date>,
}

fn waiver_use(index: usize, w: &Waiver, expires: Date) -> WaiverUse {
    WaiverUse {
        index,
        reason: w.reason.clone(),
        approver: w.approver.clone(),
        expires,
    }
}

impl Ctx<'_> {
    fn location(&self, path: &str) -> String {
        if self.checked.spans.contains(path) {
            let s = self.checked.spans.value(path);
            format!("{}:{}:{}", self.file.name, s.start.line, s.start.col)
        } else {
            self.file.name.clone()
        }
    }

    /// Decides a violation: true when it is allowed (waived, or not enforced yet; a notice is
    /// recorded), false when it is an error (reported).
    pub(super) fn violation(&mut self, v: Violation<'_>) -> bool {
        let Some(today) = self.eval.today else {
            self.err(v.path, v.message, v.help);
            return false;
        };
        let repository = self.eval.repository.as_deref();
        let mut active: Option<(usize, &Waiver, Date)> = None;
        let mut expired: Option<(usize, &Waiver, Date)> = None;
        for (i, w) in self.org.waivers_for(&v.subject, &self.name, repository) {
            let Some(until) = w.expiry() else { continue };
            let slot = if until >= today {
                &mut active
            } else {
                &mut expired
            };
            if slot.is_none_or(|(_, _, d)| until > d) {
                *slot = Some((i, w, until));
            }
        }
        if let Some((i, w, until)) = active {
            let use_ = waiver_use(i, w, until);
            self.used_waivers.insert(i);
            self.notices.push(Notice {
                kind: NoticeKind::Waived,
                subject: v.subject,
                path: Some(v.path.to_owned()),
                message: format!(
                    "{} (waived until {until} by {}: {})",
                    v.message, w.approver, w.reason
                ),
                help: format!(
                    "the waiver ({}) ends after {until}; fix this before then: {}",
                    self.org.cite(&format!("waivers[{i}]")),
                    v.help
                ),
                until,
                waiver: Some(use_),
                location: self.location(v.path),
            });
            return true;
        }
        if let Some((i, _, _)) = expired {
            self.used_waivers.insert(i);
        }
        if let Some(from) = v.enforce_from.filter(|from| today < *from) {
            self.notices.push(Notice {
                kind: NoticeKind::Warning,
                subject: v.subject,
                path: Some(v.path.to_owned()),
                message: format!(
                    "{}; this is an error from {from} ({})",
                    v.message,
                    match today.days_until(from) {
                        1 => "tomorrow".to_owned(),
                        n => format!("in {n} days"),
                    }
                ),
                help: v.help,
                until: from,
                waiver: None,
                location: self.location(v.path),
            });
            return true;
        }
        let help = match expired {
            Some((i, w, until)) => format!(
                "{}; the waiver of {} for this pipeline ({}, approved by {}) expired on {until}: a platform engineer renews it, or the manifest is fixed",
                v.help,
                v.subject,
                self.org.cite(&format!("waivers[{i}]")),
                w.approver
            ),
            None => v.help,
        };
        self.err(v.path, v.message, help);
        false
    }
}

/// Waivers that cover the pipeline, have expired and were not needed by any decision: a warning
/// to remove them (a waiver that was needed is already part of that decision's error).
pub(super) fn expired_waivers(cx: &mut Ctx<'_>) {
    let Some(today) = cx.eval.today else {
        return;
    };
    let repository = cx.eval.repository.as_deref();
    for (i, w) in cx.org.org.waivers.iter().enumerate() {
        let Some(until) = w.expiry() else { continue };
        if until >= today || cx.used_waivers.contains(&i) || !w.covers(&cx.name, repository) {
            continue;
        }
        cx.notices.push(Notice {
            kind: NoticeKind::Warning,
            subject: w.subject(),
            path: None,
            message: format!(
                "the waiver of {} for this pipeline expired on {until}; nothing needs it any more",
                w.subject()
            ),
            help: format!(
                "a platform engineer removes it from the org policy ({})",
                cx.org.cite(&format!("waivers[{i}]"))
            ),
            until,
            waiver: Some(waiver_use(i, w, until)),
            location: cx.file.name.clone(),
        });
    }
}
