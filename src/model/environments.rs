//! `environments`: unique names, accounts the org lists and opens to the team, one environment
//! per account and region, approvals (never off in production, whether the name or the account
//! makes it production), regions the org allows, and accounts that can use the org's execution
//! policies; parameters on top of the deploy's.

use std::collections::BTreeMap;

use super::{Ctx, Environment, Origin, ProductionBy, Sourced, backticks};
use crate::manifest::RawManifest;
use crate::org::Account;

/// The environments in promotion order (those without a name or an account are left out; the
/// schema check reported them). `deploy_params` are the parameters every environment starts
/// from.
pub(super) fn environments(
    cx: &mut Ctx<'_>,
    raw: &RawManifest,
    deploy_params: &BTreeMap<String, String>,
) -> Vec<Environment> {
    let mut environments = Vec::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut places: BTreeMap<(String, String), (usize, String)> = BTreeMap::new();
    for (i, e) in raw
        .environments
        .clone()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let base = format!("environments[{i}]");
        if let Some(name) = &e.name
            && let Some(first) = names.insert(name.clone(), i)
        {
            cx.err(&format!("{base}.name"), format!("environment `{name}` is listed twice"), format!("environment names must be unique; `environments[{first}]` already uses `{name}`"));
        }
        let (Some(name), Some(account)) = (e.name.clone(), e.account.clone()) else {
            continue;
        };
        let listed = account_of(cx, &base, &account, raw.team.as_deref());
        let region = region(cx, &base, e.region);
        let place = (account.clone(), region.value.clone());
        if let Some((first, first_name)) = places.get(&place) {
            let stack = raw
                .deploy
                .as_ref()
                .and_then(|d| d.stack_name.clone())
                .or_else(|| raw.name.clone())
                .map_or_else(|| "the application stack".to_owned(), |s| format!("`{s}`"));
            cx.err(
                &format!("{base}.account"),
                format!(
                    "environment `{name}` deploys to the same account and region as `{first_name}` (`environments[{first}]`): account {account}, {}",
                    region.value
                ),
                format!(
                    "give each environment its own account or region: both deploy stages would change the application stack {stack} there, so `{first_name}` would replace what `{name}` runs"
                ),
            );
        } else {
            places.insert(place, (i, name.clone()));
        }
        let mut production_by = Vec::new();
        if cx.org.is_production(&name) {
            production_by.push(ProductionBy::Name);
        }
        if listed.as_ref().is_some_and(|(_, a)| a.production) {
            production_by.push(ProductionBy::Account);
        }
        let approval = approval(
            cx,
            &base,
            &name,
            listed.as_ref(),
            &production_by,
            e.approval,
        );
        check_execution_policies(cx, &base, &account);
        let mut parameters = deploy_params.clone();
        for (k, v) in e.parameters.unwrap_or_default() {
            parameters.insert(k, v.0);
        }
        environments.push(Environment {
            name,
            account,
            region,
            production: !production_by.is_empty(),
            production_by,
            account_name: listed.map(|(_, a)| a.name),
            approval,
            parameters,
        });
    }
    environments
}

/// The org's entry for `account`, which must be listed (when the org lists accounts) and open
/// to `team`; `None` when the org lists no accounts or the account is refused (reported).
fn account_of(
    cx: &mut Ctx<'_>,
    base: &str,
    account: &str,
    team: Option<&str>,
) -> Option<(usize, Account)> {
    cx.org.org.accounts.as_ref()?;
    let path = format!("{base}.account");
    let usable = |cx: &Ctx<'_>| match team {
        Some(team) => {
            let open = cx.org.accounts_for_team(team);
            if open.is_empty() {
                format!("team `{team}` may deploy to no account of the organisation yet")
            } else {
                let list: Vec<String> = open.iter().map(|a| a.label()).collect();
                format!("team `{team}` may deploy to {}", list.join(", "))
            }
        }
        None => "name the team to see the accounts it may use".to_owned(),
    };
    let Some((k, a)) = cx.org.account(account).map(|(k, a)| (k, a.clone())) else {
        let rule = cx.org.cite("accounts");
        let help = format!(
            "{}; to add an account, a platform engineer lists it under `accounts` in the org policy with its `name`, `production` and `teams` (org rule {rule})",
            usable(cx)
        );
        cx.err(
            &path,
            format!("account `{account}` is not one of the organisation's accounts"),
            help,
        );
        return None;
    };
    if let Some(team) = team
        && !a.open_to(team)
    {
        let rule = cx.org.cite(&format!("accounts[{k}].teams"));
        let help = format!(
            "{} is open to {} only (org rule {rule}); {}",
            a.label(),
            backticks(&a.teams),
            usable(cx)
        );
        cx.err(
            &path,
            format!(
                "account `{account}` (`{}`) is not open to team `{team}`",
                a.name
            ),
            help,
        );
        return None;
    }
    Some((k, a))
}

/// Whether a manual approval precedes the deployment: always in production, whether its name
/// or its account (`listed`) makes it production.
fn approval(
    cx: &mut Ctx<'_>,
    base: &str,
    name: &str,
    listed: Option<&(usize, Account)>,
    production_by: &[ProductionBy],
    approval: Option<bool>,
) -> Sourced<bool> {
    let production = !production_by.is_empty();
    match approval {
        Some(false) if production => {
            let (message, rule) = match listed {
                Some((k, a)) if !production_by.contains(&ProductionBy::Name) => (
                    format!(
                        "`{name}` deploys to the production account `{}` (`{}`); its approval cannot be turned off",
                        a.id, a.name
                    ),
                    cx.org.cite(&format!("accounts[{k}].production")),
                ),
                _ => (
                    format!(
                        "`{name}` is a production environment; its approval cannot be turned off"
                    ),
                    cx.org.cite("environments.production"),
                ),
            };
            cx.err(&format!("{base}.approval"), message, format!("remove `approval: false`; production deploys always wait for a manual approval (org rule {rule})"));
            Sourced::new(true, Origin::Org)
        }
        Some(a) => Sourced::new(
            a || production,
            if production {
                Origin::Org
            } else {
                Origin::Team
            },
        ),
        None if production => Sourced::new(true, Origin::Org),
        None => Sourced::new(false, Origin::Default),
    }
}

/// The environment's region (else the tooling region), which the org must allow.
fn region(cx: &mut Ctx<'_>, base: &str, region: Option<String>) -> Sourced<String> {
    let org = &cx.org.org;
    let region = match region {
        Some(r) => Sourced::new(r, Origin::Team),
        None => Sourced::new(org.tooling.region.clone(), Origin::Org),
    };
    if !org.environments.allowed_regions.is_empty()
        && !org.environments.allowed_regions.contains(&region.value)
    {
        let rule = cx.org.cite("environments.allowed_regions");
        let path = if region.from == Origin::Team {
            format!("{base}.region")
        } else {
            base.to_owned()
        };
        cx.err(
            &path,
            format!(
                "region `{}` is not allowed by the organisation",
                region.value
            ),
            format!(
                "use one of {} (org rule {rule})",
                backticks(&org.environments.allowed_regions)
            ),
        );
    }
    region
}

/// The execution role in `account` can use every execution policy of the org.
fn check_execution_policies(cx: &mut Ctx<'_>, base: &str, account: &str) {
    let org = &cx.org.org;
    // The execution role in this account can only attach AWS managed policies, policies of
    // this account, or policies given by name (which must exist in every target account).
    let dep = &org.deploy;
    let policies = dep
        .execution_policy_arns
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("deploy.execution_policy_arns[{i}]"), p))
        .chain(
            dep.permissions_boundary
                .iter()
                .map(|p| ("deploy.permissions_boundary".to_owned(), p)),
        );
    for (rule_path, policy) in policies {
        let owner = policy
            .strip_prefix("arn:")
            .and_then(|r| r.split(':').nth(3))
            .filter(|o| *o != "aws");
        if let Some(owner) = owner
            && owner != account
        {
            let rule = cx.org.cite(&rule_path);
            cx.err(
                &format!("{base}.account"),
                format!("the organisation's execution policy `{policy}` belongs to account {owner}, so no role in {account} can use it"),
                format!("in the org policy, name the policy instead (it must exist in every target account) or use an AWS managed policy (org rule {rule})"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::error::SourceFile;
    use crate::model::{Model, ProductionBy};

    fn validate_with(org: &str, environments: &str, team: &str) -> Result<Model, String> {
        let org = crate::org::load(&SourceFile::new("org.yaml", org)).expect("org");
        let catalog = crate::catalog::Catalog::embedded().expect("catalog");
        let manifest = format!(
            "version: 1\nname: orders-api\nteam: {team}\nlanguage: python\n\
             deploy: {{template: infra/app.yml}}\nenvironments:\n{environments}"
        );
        crate::validate(&SourceFile::new("pipeline.yml", manifest), &org, catalog)
            .map_err(|e| e.to_string())
    }

    fn embedded() -> String {
        crate::assets::get("examples/org.yaml")
            .expect("embedded org")
            .to_owned()
    }

    /// The embedded policy as older policies were: without `accounts` and `teams`.
    fn legacy() -> String {
        let text = embedded();
        let cut = text
            .find("\n# Every account a pipeline may deploy to")
            .expect("accounts");
        text[..cut].to_owned() + "\n"
    }

    #[test]
    fn an_environment_on_a_production_account_always_waits_for_an_approval() {
        let m = validate_with(
            &embedded(),
            "  - {name: live, account: \"333333333333\"}\n",
            "payments",
        )
        .expect("valid");
        let live = &m.environments[0];
        assert!(live.production);
        assert_eq!(live.production_by, [ProductionBy::Account]);
        assert_eq!(live.account_name.as_deref(), Some("shared-prod"));
        assert!(live.approval.value, "approval forced by the account");
        // Asking for it is fine; turning it off is refused, citing the account's rule.
        let e = validate_with(
            &embedded(),
            "  - {name: live, account: \"333333333333\", approval: false}\n",
            "payments",
        )
        .expect_err("approval off");
        assert!(e.contains("`environments[0].approval`"), "{e}");
        assert!(e.contains("production account `333333333333`"), "{e}");
        assert!(e.contains("(`accounts[2].production`)"), "{e}");
        // The name rule stays: `prod` on a non-production account is production too.
        let m = validate_with(
            &embedded(),
            "  - {name: prod, account: \"111111111111\"}\n",
            "payments",
        )
        .expect("valid");
        assert_eq!(m.environments[0].production_by, [ProductionBy::Name]);
        assert!(m.environments[0].approval.value);
    }

    #[test]
    fn only_listed_accounts_open_to_the_team_are_accepted() {
        let e = validate_with(
            &embedded(),
            "  - {name: dev, account: \"999999999999\"}\n",
            "billing",
        )
        .expect_err("unknown account");
        assert!(
            e.contains("account `999999999999` is not one of the organisation's accounts"),
            "{e}"
        );
        assert!(
            e.contains("team `billing` may deploy to `111111111111` (`shared-dev`)"),
            "{e}"
        );
        assert!(e.contains("lists it under `accounts`"), "{e}");
        let e = validate_with(
            &embedded(),
            "  - {name: prod, account: \"444444444444\"}\n",
            "billing",
        )
        .expect_err("another team's account");
        assert!(
            e.contains("account `444444444444` (`payments-prod`) is not open to team `billing`"),
            "{e}"
        );
        let m = validate_with(
            &embedded(),
            "  - {name: prod, account: \"444444444444\"}\n",
            "payments",
        )
        .expect("the team's own account");
        assert_eq!(
            m.environments[0].account_name.as_deref(),
            Some("payments-prod")
        );
    }

    #[test]
    fn two_environments_on_one_account_and_region_are_refused_at_the_second() {
        let e = validate_with(
            &embedded(),
            "  - {name: staging, account: \"333333333333\", region: eu-west-1}\n  \
             - {name: prod, account: \"333333333333\", region: eu-west-1}\n",
            "payments",
        )
        .expect_err("same place");
        assert!(e.contains("`environments[1].account`"), "{e}");
        assert!(!e.contains("`environments[0].account`"), "{e}");
        assert!(
            e.contains("same account and region as `staging` (`environments[0]`)"),
            "{e}"
        );
        // The default region counts: `us-east-1` given or implied is the same place.
        let e = validate_with(
            &embedded(),
            "  - {name: a, account: \"111111111111\"}\n  \
             - {name: b, account: \"111111111111\", region: us-east-1}\n",
            "payments",
        )
        .expect_err("same place");
        assert!(e.contains("`environments[1].account`"), "{e}");
        // Another region (or account) is another place.
        validate_with(
            &embedded(),
            "  - {name: a, account: \"111111111111\"}\n  \
             - {name: b, account: \"111111111111\", region: eu-west-1}\n",
            "payments",
        )
        .expect("another region");
    }

    #[test]
    fn older_policies_without_accounts_keep_todays_rules() {
        let m = validate_with(
            &legacy(),
            "  - {name: live, account: \"999999999999\"}\n",
            "billing",
        )
        .expect("any account");
        assert!(!m.environments[0].production);
        assert_eq!(m.environments[0].account_name, None);
        let org = crate::org::load(&SourceFile::new("org.yaml", legacy())).expect("org");
        let warnings: Vec<String> = org.warnings().into_iter().map(|(m, _)| m).collect();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("lists no `accounts`"), "{warnings:?}");
        assert!(warnings[1].contains("lists no `teams`"), "{warnings:?}");
        let embedded = crate::org::embedded().expect("org");
        assert!(embedded.warnings().is_empty());
    }
}
