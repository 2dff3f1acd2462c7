//! Whether a deploy fits its accounts: what it adds to each account quota (the new footprint
//! less what the pipeline's deployed stacks already hold), judged against the usage and value a
//! deploy read from the account. Pure: the readings come from the AWS edge
//! ([`crate::deploy::capacity`]).

use serde::Serialize;

use super::footprint::{Counts, Footprint, add};
use super::quotas::{AccountQuota, QUOTAS, Scope};
use crate::quota::thousands;

/// What a deploy adds to one quota of one account (and region, for regional quotas).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Need {
    /// Account id.
    pub account: String,
    /// The region (for account-wide quotas: the region the account is read in).
    pub region: String,
    /// True for a tooling account (the pipeline and region stacks), false for a target account.
    pub tooling: bool,
    /// The quota.
    pub quota: &'static AccountQuota,
    /// How many more of its resources the deploy creates.
    pub more: u64,
}

impl Need {
    /// `tooling account 123456789012`, `account 111111111111 (us-east-1)`, ...
    pub fn label(&self) -> String {
        let kind = if self.tooling {
            "tooling account"
        } else {
            "account"
        };
        match self.quota.scope {
            Scope::Account => format!("{kind} {}", self.account),
            Scope::Region => format!("{kind} {} ({})", self.account, self.region),
        }
    }
}

/// What a quota was read as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reading {
    /// How many are in use.
    pub used: u64,
    /// The quota's value.
    pub limit: u64,
    /// Where the value came from (`IAM GetAccountSummary`, `Service Quotas`, `AWS default`,
    /// `org capacity.quotas`).
    pub limit_from: String,
}

/// The checked quotas a deploy adds to, per account (and region): `new` less `deployed`
/// (the footprint of the pipeline's stacks as they are deployed), never below zero per place.
/// `tooling` tells the tooling accounts.
pub fn needs(new: &Footprint, deployed: &Footprint, tooling: &[&str]) -> Vec<Need> {
    let mut out: Vec<Need> = Vec::new();
    for q in QUOTAS.iter().filter(|q| q.checked()) {
        match q.scope {
            Scope::Region => {
                for p in &new.places {
                    let before = deployed
                        .places
                        .iter()
                        .find(|d| d.account == p.account && d.region == p.region)
                        .and_then(|d| d.resources.get(&q.resource))
                        .copied()
                        .unwrap_or(0);
                    let now = p.resources.get(&q.resource).copied().unwrap_or(0);
                    if now > before {
                        out.push(Need {
                            account: p.account.clone(),
                            region: p.region.clone(),
                            tooling: tooling.contains(&p.account.as_str()),
                            quota: q,
                            more: now - before,
                        });
                    }
                }
            }
            Scope::Account => {
                for account in new.accounts() {
                    let sum = |f: &Footprint| -> u64 {
                        let mut c = Counts::new();
                        for p in f.places.iter().filter(|p| p.account == account) {
                            add(&mut c, &p.resources);
                        }
                        c.get(&q.resource).copied().unwrap_or(0)
                    };
                    let (now, before) = (sum(new), sum(deployed));
                    if now > before {
                        let region = new
                            .places
                            .iter()
                            .find(|p| p.account == account)
                            .map(|p| p.region.clone())
                            .unwrap_or_default();
                        out.push(Need {
                            account: account.to_owned(),
                            region,
                            tooling: tooling.contains(&account),
                            quota: q,
                            more: now - before,
                        });
                    }
                }
            }
        }
    }
    out
}

/// What the check found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Verdict {
    /// Quotas the deploy would exceed, one sentence each.
    pub refusals: Vec<String>,
    /// Quotas the deploy leaves at or above the warning threshold.
    pub warnings: Vec<String>,
}

impl Verdict {
    /// True when nothing is refused.
    pub fn fits(&self) -> bool {
        self.refusals.is_empty()
    }
}

/// Judges one need against its reading; `warn_at_percent` is the org's threshold.
pub fn judge(need: &Need, reading: &Reading, warn_at_percent: i64, out: &mut Verdict) {
    let after = reading.used.saturating_add(need.more);
    let what = need.quota.resource.plural();
    if after > reading.limit {
        out.refusals.push(format!(
            "{} holds {} of {} {what}; this pipeline needs {}",
            need.label(),
            thousands(usize::try_from(reading.used).unwrap_or(usize::MAX)),
            thousands(usize::try_from(reading.limit).unwrap_or(usize::MAX)),
            need.more
        ));
    } else if reading.limit > 0
        && u128::from(after) * 100
            >= u128::from(reading.limit) * u128::from(warn_at_percent.max(0).unsigned_abs())
    {
        out.warnings.push(format!(
            "{} will hold {} of {} {what} ({}%) after this deploy; warning at {warn_at_percent}% (`capacity.warn_at_percent`)",
            need.label(),
            thousands(usize::try_from(after).unwrap_or(usize::MAX)),
            thousands(usize::try_from(reading.limit).unwrap_or(usize::MAX)),
            after * 100 / reading.limit
        ));
    }
}

/// Judges a tooling account's `capacity` (the most pipelines the org places there) for a new
/// pipeline: `pipelines` is how many it holds.
pub fn judge_capacity(account: &str, capacity: u32, pipelines: u64, out: &mut Verdict) {
    if pipelines >= u64::from(capacity) {
        out.refusals.push(format!(
            "tooling account {account} holds {} pipelines, its capacity in the org policy is {}",
            thousands(usize::try_from(pipelines).unwrap_or(usize::MAX)),
            thousands(capacity as usize)
        ));
    }
}

/// The `help:` line of a refusal.
pub fn refusal_help(tooling: bool) -> String {
    if tooling {
        "raise the quota (Service Quotas, or an AWS support case where Service Quotas does not list it) or add a tooling account (org `tooling_accounts`)".to_owned()
    } else {
        "raise the quota in that account (Service Quotas), or deploy the environment to another account the org lists".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::footprint::AccountFootprint;
    use crate::capacity::quotas::{Resource, quota};

    fn place(account: &str, region: &str, roles: u64, pipelines: u64) -> AccountFootprint {
        let mut resources = Counts::new();
        resources.insert(Resource::IamRole, roles);
        resources.insert(Resource::Pipeline, pipelines);
        resources.insert(Resource::Stack, 1);
        AccountFootprint {
            account: account.to_owned(),
            region: region.to_owned(),
            role: "tooling",
            environments: Vec::new(),
            resources,
        }
    }

    #[test]
    fn a_redeploy_needs_only_what_it_adds() {
        let new = Footprint {
            places: vec![
                place("1", "us-east-1", 7, 1),
                place("1", "eu-west-1", 0, 0),
                place("2", "us-east-1", 2, 0),
            ],
        };
        let none = Footprint::default();
        let n = needs(&new, &none, &["1"]);
        let roles: Vec<(&str, u64, bool)> = n
            .iter()
            .filter(|n| n.quota.id == "iam-roles")
            .map(|n| (n.account.as_str(), n.more, n.tooling))
            .collect();
        assert_eq!(roles, [("1", 7, true), ("2", 2, false)]);
        // Stacks count per region: one in each of the three places.
        assert_eq!(
            n.iter()
                .filter(|n| n.quota.id == "cloudformation-stacks")
                .count(),
            3
        );
        // Deployed already, with one role fewer: only that one is new.
        let deployed = Footprint {
            places: vec![place("1", "us-east-1", 6, 1), place("2", "us-east-1", 2, 0)],
        };
        let n = needs(&new, &deployed, &["1"]);
        let left: Vec<(&str, &str, u64)> = n
            .iter()
            .map(|n| (n.quota.id, n.account.as_str(), n.more))
            .collect();
        assert_eq!(
            left,
            [("iam-roles", "1", 1), ("cloudformation-stacks", "1", 1)]
        );
    }

    #[test]
    fn full_is_refused_and_nearly_full_warns() {
        let need = Need {
            account: "123456789012".to_owned(),
            region: "us-east-1".to_owned(),
            tooling: true,
            quota: quota("iam-roles").expect("quota"),
            more: 8,
        };
        let reading = |used| Reading {
            used,
            limit: 1_000,
            limit_from: "IAM GetAccountSummary".to_owned(),
        };
        let mut v = Verdict::default();
        judge(&need, &reading(996), 80, &mut v);
        assert_eq!(
            v.refusals,
            ["tooling account 123456789012 holds 996 of 1,000 IAM roles; this pipeline needs 8"]
        );
        assert!(!v.fits());
        let mut v = Verdict::default();
        judge(&need, &reading(792), 80, &mut v);
        assert!(v.fits());
        assert_eq!(
            v.warnings,
            [
                "tooling account 123456789012 will hold 800 of 1,000 IAM roles (80%) after this deploy; warning at 80% (`capacity.warn_at_percent`)"
            ]
        );
        let mut v = Verdict::default();
        judge(&need, &reading(791), 80, &mut v);
        assert_eq!(v, Verdict::default());
        let mut v = Verdict::default();
        judge_capacity("555555555555", 600, 600, &mut v);
        assert_eq!(
            v.refusals,
            [
                "tooling account 555555555555 holds 600 pipelines, its capacity in the org policy is 600"
            ]
        );
    }
}
