//! Many pipelines over the org's tooling accounts, as data: where each goes (the placement rules
//! and each account's quotas), what each account then holds, and which quota binds. What
//! `cargo bench --bench capacity` prints, and how the README's "Running at scale" figures are
//! computed.

use std::collections::BTreeMap;

use serde::Serialize;

use super::footprint::{Counts, add};
use super::placement::candidates;
use super::quotas::{QUOTAS, Resource};
use crate::org::OrgPolicy;

/// A pipeline to place: its name, team and what it puts in its tooling account.
#[derive(Clone, Debug)]
pub struct Synthetic {
    /// Pipeline name.
    pub name: String,
    /// Team.
    pub team: String,
    /// Its resources in the tooling account (all regions together).
    pub tooling: Counts,
}

/// Which quota values a simulation assumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Quotas {
    /// AWS's defaults.
    Default,
    /// The highest values AWS documents granting.
    Raised,
}

/// The value of every checked quota under `q`, by resource.
pub fn limits(q: Quotas) -> BTreeMap<Resource, u64> {
    QUOTAS
        .iter()
        .filter(|x| x.checked())
        .map(|x| {
            let v = match q {
                Quotas::Default => x.default,
                Quotas::Raised => x.raisable_to.unwrap_or(x.default),
            };
            (x.resource, v)
        })
        .collect()
}

/// One tooling account after the simulation.
#[derive(Clone, Debug, Serialize)]
pub struct Load {
    /// Account id.
    pub account: String,
    /// Pipelines placed here.
    pub pipelines: u64,
    /// What they hold, the installation's own resources (`base`) included.
    pub used: Counts,
    /// The quota that is fullest, with its use and value.
    pub binding: Option<(&'static str, u64, u64)>,
}

/// The outcome of placing every pipeline.
#[derive(Clone, Debug, Serialize)]
pub struct Simulation {
    /// Each tooling account.
    pub accounts: Vec<Load>,
    /// Pipelines no account had room for.
    pub unplaced: u64,
}

fn fits(used: &Counts, need: &Counts, limits: &BTreeMap<Resource, u64>) -> bool {
    need.iter().all(|(r, n)| match limits.get(r) {
        Some(l) => used.get(r).copied().unwrap_or(0) + n <= *l,
        None => true,
    })
}

/// Places `pipelines` in order over the org's tooling accounts, as a first deploy of each would:
/// the org's rules, else the hash order, taking the first candidate with room (quotas of
/// `limits`, and the account's `capacity`). `base` is what every tooling account holds before
/// any pipeline (the installation's own stacks).
pub fn simulate(
    org: &OrgPolicy,
    pipelines: &[Synthetic],
    limits: &BTreeMap<Resource, u64>,
    base: &Counts,
) -> Simulation {
    let mut loads: Vec<Load> = org
        .tooling_accounts()
        .iter()
        .map(|t| Load {
            account: t.account.clone(),
            pipelines: 0,
            used: base.clone(),
            binding: None,
        })
        .collect();
    let caps: BTreeMap<String, Option<u32>> = org
        .tooling_accounts()
        .into_iter()
        .map(|t| (t.account, t.capacity))
        .collect();
    let mut unplaced = 0;
    for p in pipelines {
        let c = candidates(org, &p.name, &p.team);
        let slot = c.accounts.iter().find_map(|t| {
            let i = loads.iter().position(|l| l.account == t.account)?;
            let l = &loads[i];
            let room = caps
                .get(&t.account)
                .copied()
                .flatten()
                .is_none_or(|cap| l.pipelines < u64::from(cap));
            (room && fits(&l.used, &p.tooling, limits)).then_some(i)
        });
        match slot {
            Some(i) => {
                add(&mut loads[i].used, &p.tooling);
                loads[i].pipelines += 1;
            }
            None => unplaced += 1,
        }
    }
    for l in &mut loads {
        l.binding = limits
            .iter()
            .map(|(r, lim)| (*r, l.used.get(r).copied().unwrap_or(0), *lim))
            .max_by(|a, b| {
                (u128::from(a.1) * u128::from(b.2)).cmp(&(u128::from(b.1) * u128::from(a.2)))
            })
            .and_then(|(r, u, lim)| {
                QUOTAS
                    .iter()
                    .find(|q| q.resource == r)
                    .map(|q| (q.id, u, lim))
            });
    }
    Simulation {
        accounts: loads,
        unplaced,
    }
}

/// How many pipelines of footprint `per` fit one tooling account holding `base`, and the quota
/// that stops the next one.
pub fn per_account(
    per: &Counts,
    base: &Counts,
    limits: &BTreeMap<Resource, u64>,
) -> (u64, Option<&'static str>) {
    let mut best: Option<(u64, Resource)> = None;
    for (r, n) in per.iter().filter(|(_, n)| **n > 0) {
        let Some(lim) = limits.get(r) else {
            continue;
        };
        let room = lim.saturating_sub(base.get(r).copied().unwrap_or(0)) / n;
        if best.is_none_or(|(b, _)| room < b) {
            best = Some((room, *r));
        }
    }
    match best {
        Some((n, r)) => (n, QUOTAS.iter().find(|q| q.resource == r).map(|q| q.id)),
        None => (u64::MAX, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(roles: u64, pipelines: u64) -> Counts {
        let mut c = Counts::new();
        c.insert(Resource::IamRole, roles);
        c.insert(Resource::Pipeline, pipelines);
        c
    }

    #[test]
    fn iam_roles_bind_first_and_raising_them_holds_five_times_as_many() {
        let per = counts(7, 1);
        let base = counts(5, 0);
        assert_eq!(
            per_account(&per, &base, &limits(Quotas::Default)),
            (142, Some("iam-roles"))
        );
        assert_eq!(
            per_account(&per, &base, &limits(Quotas::Raised)),
            (713, Some("iam-roles"))
        );
    }

    #[test]
    fn pipelines_spill_over_to_the_next_account_of_their_order_when_one_is_full() {
        let text = crate::assets::get("examples/org.yaml").expect("embedded");
        let org = crate::org::load(&crate::SourceFile::new(
            "org.yaml",
            format!(
                "{text}tooling_accounts:\n  - {{account: \"555555555555\", region: us-east-1, bucket: b-5, kms_key: alias/k}}\n"
            ),
        ))
        .expect("org");
        let pipelines: Vec<Synthetic> = (0..300)
            .map(|i| Synthetic {
                name: format!("p-{i}"),
                team: "t".to_owned(),
                tooling: counts(7, 1),
            })
            .collect();
        let base = counts(5, 0);
        let s = simulate(&org, &pipelines, &limits(Quotas::Default), &base);
        let placed: Vec<u64> = s.accounts.iter().map(|l| l.pipelines).collect();
        assert_eq!(placed, [142, 142]);
        assert_eq!(s.unplaced, 16);
        assert_eq!(s.accounts[0].binding, Some(("iam-roles", 999, 1000)));
        let s = simulate(&org, &pipelines, &limits(Quotas::Raised), &base);
        assert_eq!(s.unplaced, 0);
        // The hash splits the equally weighted accounts about evenly.
        assert!(
            s.accounts.iter().all(|l| (120..180).contains(&l.pipelines)),
            "{:?}",
            s.accounts
        );
    }
}
