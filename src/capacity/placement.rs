//! Which tooling account a new pipeline goes to. The org policy decides, in this order: the
//! pipeline's own entry in `placement.pipelines`, its team's in `placement.teams`, else a
//! stable hash of the pipeline's name over every tooling account, weighted by each account's
//! `capacity` (rendezvous hashing: adding an account only draws pipelines towards the new one,
//! and none of those already placed moves, since their owner record keeps their placement).
//!
//! Pure: this only orders the candidates. A new pipeline's first deploy takes the first one with
//! room and its claim records it in the owner record ([`crate::owner::Placement`]); every later
//! command reads it back from there (`crate::deploy::placement`), so a change of the org's rules
//! never re-places a deployed pipeline. Only `pipeforge move` (`crate::deploy::relocate`) does.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::org::{OrgPolicy, ToolingAccount};

/// The weight of a tooling account without a `capacity`: the pipelines of six gates (seven IAM
/// roles each) that fit the default quota of 1,000 IAM roles.
pub const UNSET_CAPACITY_WEIGHT: u32 = 142;

/// Why a pipeline is placed where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlacedBy {
    /// The org has one tooling account.
    Home,
    /// The org's `placement.pipelines` names the pipeline.
    Pipeline,
    /// The org's `placement.teams` names the pipeline's team.
    Team,
    /// The stable hash of the pipeline's name (the first account of the order that had room).
    Hash,
    /// A platform engineer moved it (`pipeforge move`).
    Move,
    /// Deployed before placements were recorded: where every pipeline lived then, the home
    /// tooling account.
    Legacy,
}

impl PlacedBy {
    /// The word used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            PlacedBy::Home => "home",
            PlacedBy::Pipeline => "pipeline",
            PlacedBy::Team => "team",
            PlacedBy::Hash => "hash",
            PlacedBy::Move => "move",
            PlacedBy::Legacy => "legacy",
        }
    }
}

/// The tooling accounts a new pipeline may go to, in order of preference.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidates {
    /// The accounts; the first that fits is taken. A rule of the org names exactly one.
    pub accounts: Vec<ToolingAccount>,
    /// Why these.
    pub by: PlacedBy,
}

/// The candidates for a new pipeline `pipeline` of team `team`.
pub fn candidates(org: &OrgPolicy, pipeline: &str, team: &str) -> Candidates {
    let all = org.tooling_accounts();
    let p = &org.org.placement;
    let named = |id: &String| all.iter().find(|t| &t.account == id).cloned();
    if all.len() == 1 {
        return Candidates {
            accounts: all,
            by: PlacedBy::Home,
        };
    }
    if let Some(t) = p.pipelines.get(pipeline).and_then(named) {
        return Candidates {
            accounts: vec![t],
            by: PlacedBy::Pipeline,
        };
    }
    if let Some(t) = p.teams.get(team).and_then(named) {
        return Candidates {
            accounts: vec![t],
            by: PlacedBy::Team,
        };
    }
    Candidates {
        accounts: hash_order(pipeline, all),
        by: PlacedBy::Hash,
    }
}

/// The account a render uses before the deploy has read the pipeline's recorded placement: the
/// first candidate.
pub fn provisional(org: &OrgPolicy, pipeline: &str, team: &str) -> ToolingAccount {
    candidates(org, pipeline, team)
        .accounts
        .into_iter()
        .next()
        .unwrap_or_else(|| org.home())
}

/// A number in (0, 1) from `pipeline` and `account`: the same inputs always give the same one.
fn unit(pipeline: &str, account: &str) -> f64 {
    let h = Sha256::new()
        .chain_update(account.as_bytes())
        .chain_update([0u8])
        .chain_update(pipeline.as_bytes())
        .finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    // 53 bits, as many as an f64 holds exactly; +0.5 keeps it off 0 and 1.
    ((u64::from_be_bytes(b) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// Every account, ordered by weighted rendezvous score for `pipeline`, highest first.
pub fn hash_order(pipeline: &str, accounts: Vec<ToolingAccount>) -> Vec<ToolingAccount> {
    let mut scored: Vec<(f64, ToolingAccount)> = accounts
        .into_iter()
        .map(|t| {
            let weight = f64::from(t.capacity.unwrap_or(UNSET_CAPACITY_WEIGHT));
            (-weight / unit(pipeline, &t.account).ln(), t)
        })
        .collect();
    scored.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then_with(|| a.1.account.cmp(&b.1.account))
    });
    scored.into_iter().map(|(_, t)| t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(extra: &str) -> OrgPolicy {
        let text = crate::assets::get("examples/org.yaml").expect("embedded");
        crate::org::load(&crate::SourceFile::new(
            "org.yaml",
            format!("{text}{extra}"),
        ))
        .expect("org")
    }

    const TWO: &str = "tooling_accounts:\n  - {account: \"555555555555\", region: us-east-1, bucket: b-555, kms_key: alias/k, capacity: 600}\n";

    #[test]
    fn one_tooling_account_takes_everything() {
        let c = candidates(&org(""), "orders-api", "payments");
        assert_eq!(c.by, PlacedBy::Home);
        assert_eq!(c.accounts.len(), 1);
        assert_eq!(c.accounts[0].account, "123456789012");
        assert_eq!(c.accounts[0].bucket, "example-pipeforge-source");
    }

    #[test]
    fn a_pipeline_rule_beats_a_team_rule_which_beats_the_hash() {
        let o = org(&format!(
            "{TWO}placement:\n  pipelines: {{orders-api: \"123456789012\"}}\n  teams: {{payments: \"555555555555\"}}\n"
        ));
        let c = candidates(&o, "orders-api", "payments");
        assert_eq!(
            (c.by, c.accounts[0].account.as_str()),
            (PlacedBy::Pipeline, "123456789012")
        );
        assert_eq!(c.accounts.len(), 1);
        let c = candidates(&o, "ledger", "payments");
        assert_eq!(
            (c.by, c.accounts[0].account.as_str()),
            (PlacedBy::Team, "555555555555")
        );
        let c = candidates(&o, "ledger", "risk");
        assert_eq!(c.by, PlacedBy::Hash);
        assert_eq!(c.accounts.len(), 2);
    }

    #[test]
    fn the_hash_is_stable_weighted_and_moves_little_when_an_account_is_added() {
        let t = |id: &str, cap: u32| ToolingAccount {
            account: id.to_owned(),
            region: "us-east-1".to_owned(),
            bucket: format!("b-{id}"),
            kms_key: "alias/k".to_owned(),
            capacity: Some(cap),
        };
        let two = vec![t("111111111111", 100), t("222222222222", 300)];
        let three = vec![
            t("111111111111", 100),
            t("222222222222", 300),
            t("333333333333", 400),
        ];
        let first = |accounts: &Vec<ToolingAccount>, name: &str| {
            hash_order(name, accounts.clone())[0].account.clone()
        };
        let names: Vec<String> = (0..4000).map(|i| format!("p-{i}")).collect();
        let mut share = std::collections::BTreeMap::<String, usize>::new();
        let mut moved = 0;
        for n in &names {
            let a = first(&two, n);
            assert_eq!(a, first(&two, n), "stable");
            let b = first(&three, n);
            if a != b {
                assert_eq!(b, "333333333333", "only towards the new account");
                moved += 1;
            }
            *share.entry(a).or_default() += 1;
        }
        // Weighted 1:3, within a few percent.
        let small = share["111111111111"] as f64 / names.len() as f64;
        assert!((0.22..0.28).contains(&small), "{small}");
        // The new account (half the weight) draws about half of the pipelines.
        let m = moved as f64 / names.len() as f64;
        assert!((0.45..0.55).contains(&m), "{m}");
    }

    #[test]
    fn placement_rules_must_name_a_tooling_account() {
        let text = crate::assets::get("examples/org.yaml").expect("embedded");
        let e = crate::org::load(&crate::SourceFile::new(
            "org.yaml",
            format!("{text}{TWO}placement:\n  teams: {{payments: \"999999999999\"}}\n"),
        ))
        .expect_err("unknown account");
        assert!(
            e.to_string()
                .contains("`999999999999` is not one of the tooling accounts"),
            "{e}"
        );
        let e = crate::org::load(&crate::SourceFile::new(
            "org.yaml",
            format!(
                "{text}tooling_accounts:\n  - {{account: \"123456789012\", region: us-east-1, bucket: example-pipeforge-source, kms_key: alias/k}}\n"
            ),
        ))
        .expect_err("the home account again");
        let text = e.to_string();
        assert!(
            text.contains("tooling account `123456789012` is listed twice"),
            "{text}"
        );
        assert!(
            text.contains("source bucket `example-pipeforge-source` is used twice"),
            "{text}"
        );
    }
}
