//! A small IAM policy evaluator for identity policies and permissions boundaries, used to prove
//! that the roles pipeforge renders can do what they must and nothing that would let them
//! escalate.
//!
//! It covers what the rendered policies use: `Allow` and `Deny`, `Action`/`NotAction` and
//! `Resource`/`NotResource` with `*` and `?` wildcards (actions case-insensitively), and
//! conditions. Conditions are evaluated **conservatively**: a condition on a key the request
//! context does not speak for is *unknown*; an unknown `Allow` grants nothing and an unknown
//! `Deny` denies. For keys the context does speak for (see [`Context`]) the operators follow
//! AWS: a missing key fails a positive operator, satisfies a negated one and any `…IfExists`
//! operator; `Null` tests presence. `ForAnyValue:`/`ForAllValues:` compare value sets: the
//! operator is applied to each request value (negated: the value matches none of the policy's),
//! then one value, or every value, must satisfy it. Numeric, date and IP operators are always
//! unknown.
//!
//! Resource-based policies (key policies, bucket and topic policies) are read with the same
//! parser: a statement's `Principal`/`NotPrincipal` decides whom it speaks to
//! ([`evaluate_resource`]), and the caller combines that with the identity side the way the
//! service does (see `super::resource`). SCPs and session policies are out of scope.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;

/// `Allow` or `Deny`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Grants.
    Allow,
    /// Denies, whatever else grants.
    Deny,
}

/// A list of patterns, or everything but them (`NotAction`, `NotResource`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Patterns {
    /// The patterns.
    pub values: Vec<String>,
    /// True for `NotAction`/`NotResource`.
    pub negated: bool,
}

/// One condition: operator, key and values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    /// The operator as written (`StringEquals`, `ForAnyValue:StringLike`, `ArnLikeIfExists`…).
    pub operator: String,
    /// The key (compared case-insensitively).
    pub key: String,
    /// The values.
    pub values: Vec<String>,
}

/// One statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    /// `Sid`, or the statement's index.
    pub sid: String,
    /// Effect.
    pub effect: Effect,
    /// `Action` or `NotAction`.
    pub actions: Patterns,
    /// `Resource` or `NotResource`.
    pub resources: Patterns,
    /// Every condition (all must hold).
    pub conditions: Vec<Condition>,
    /// Whom the statement speaks to (resource-based policies only; `None` in identity
    /// policies).
    pub principals: Option<Principals>,
}

/// The `Principal` (or `NotPrincipal`) of a resource-policy statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principals {
    /// `AWS` entries: `*`, account ids, `arn:…:root`, role ARNs.
    pub aws: Vec<String>,
    /// `Service` entries, e.g. `logs.us-east-1.amazonaws.com`.
    pub service: Vec<String>,
    /// `"Principal": "*"`.
    pub anyone: bool,
    /// True for `NotPrincipal`.
    pub negated: bool,
}

/// Who makes a request, as a resource policy sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Who {
    /// An IAM role (its sessions): its ARN and account.
    Role {
        /// `arn:…:iam::<account>:role/<path><name>`.
        arn: String,
        /// The role's account.
        account: String,
    },
    /// An AWS service principal, e.g. `logs.us-east-1.amazonaws.com`.
    Service(String),
}

impl Who {
    /// The role with this ARN (its account is read from the ARN).
    pub fn role(arn: &str) -> Who {
        Who::Role {
            arn: arn.to_owned(),
            account: arn.split(':').nth(4).unwrap_or_default().to_owned(),
        }
    }

    /// Its account, for roles.
    pub fn account(&self) -> Option<&str> {
        match self {
            Who::Role { account, .. } => Some(account),
            Who::Service(_) => None,
        }
    }

    /// For reports: the role ARN or the service.
    pub fn name(&self) -> &str {
        match self {
            Who::Role { arn, .. } => arn,
            Who::Service(s) => s,
        }
    }
}

/// How a resource policy's `Allow` reaches a principal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// The statement names the principal itself (its role ARN, a service, or `*`).
    Direct,
    /// The statement names the principal's account (`arn:…:root` or the id): the account
    /// delegates to its IAM policies, which must allow it too.
    Account,
}

/// What a resource policy says about a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResourceDecision {
    /// An `Allow` applies (the most direct one) and no `Deny` does.
    Allow(Reach),
    /// No statement allows it.
    ImplicitDeny,
    /// A `Deny` applies (or may apply); the statement.
    ExplicitDeny(String),
}

/// A policy document with a name to report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Where it comes from (role and policy name, or managed policy).
    pub name: String,
    /// Its statements.
    pub statements: Vec<Statement>,
}

/// The request context: condition keys and their values, and which keys it speaks for.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Context {
    values: BTreeMap<String, Vec<String>>,
    /// Lower-case key prefixes (e.g. `iam:`) for which an absent key is known to be absent.
    known: BTreeSet<String>,
}

impl Context {
    /// A context that speaks for the keys starting with these prefixes (lower-case, e.g.
    /// `"iam:"`) and for every key given a value.
    pub fn knowing(prefixes: &[&str]) -> Context {
        Context {
            values: BTreeMap::new(),
            known: prefixes.iter().map(|p| p.to_ascii_lowercase()).collect(),
        }
    }

    /// Adds a value to a key.
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Context {
        self.values
            .entry(key.to_ascii_lowercase())
            .or_default()
            .push(value.into());
        self
    }

    /// The context without a key.
    pub fn without(mut self, key: &str) -> Context {
        self.values.remove(&key.to_ascii_lowercase());
        self
    }

    fn get(&self, key: &str) -> Option<&Vec<String>> {
        self.values.get(&key.to_ascii_lowercase())
    }

    fn speaks_for(&self, key: &str) -> bool {
        let k = key.to_ascii_lowercase();
        self.values.contains_key(&k) || self.known.iter().any(|p| k.starts_with(p.as_str()))
    }

    /// The keys with values, for reports.
    pub fn describe(&self) -> String {
        self.values
            .iter()
            .map(|(k, v)| format!("{k}={}", v.join("|")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What a request asks.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Request {
    /// `service:Action`.
    pub action: String,
    /// The resource ARN, or `*` for actions without resource-level permissions.
    pub resource: String,
    /// Condition keys.
    pub context: Context,
}

/// The outcome of an evaluation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// An `Allow` applies and no `Deny` does.
    Allow,
    /// Nothing allows it.
    ImplicitDeny,
    /// A `Deny` applies (or may apply: its conditions are unknown); the statement.
    ExplicitDeny(String),
}

/// Three-valued logic of conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tri {
    True,
    False,
    Unknown,
}

/// Glob match with `*` (any run) and `?` (one character).
pub fn glob(pattern: &str, text: &str) -> bool {
    glob_folding(pattern, text, false)
}

/// [`glob`] with ASCII letters matching either case, as IAM matches action names.
fn action_matches(pattern: &str, action: &str) -> bool {
    glob_folding(pattern, action, true)
}

/// [`glob`], ASCII letters matching either case when `fold` is set. ASCII texts (every action
/// and ARN of a rendered stack) are matched byte by byte, others character by character: a
/// `?` takes one character, never part of one. Nothing is allocated for ASCII: a permission
/// check matches every statement of every policy against each request.
fn glob_folding(pattern: &str, text: &str, fold: bool) -> bool {
    if pattern.is_ascii() && text.is_ascii() {
        let eq = |a: &u8, b: &u8| a == b || (fold && a.eq_ignore_ascii_case(b));
        glob_units(pattern.as_bytes(), text.as_bytes(), b'*', b'?', eq)
    } else {
        let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
        let eq = |a: &char, b: &char| a == b || (fold && a.eq_ignore_ascii_case(b));
        glob_units(&p, &t, '*', '?', eq)
    }
}

/// The glob of [`glob`] over units (bytes of ASCII text, or characters): `star` takes any run
/// of units, `one` exactly one, any other unit a unit `eq` to it.
fn glob_units<T: Copy + PartialEq>(
    p: &[T],
    t: &[T],
    star: T,
    one: T,
    eq: impl Fn(&T, &T) -> bool,
) -> bool {
    let (mut pi, mut ti) = (0, 0);
    // The last `*` met: the pattern index just after it, and the text index where what it
    // takes ends so far. A mismatch after it lets it take one more unit.
    let mut after_star: Option<(usize, usize)> = None;
    while ti < t.len() {
        // The pattern's `*` is a wildcard first, even where the text has a `*` of its own (a
        // request for every resource): taken as a literal it would set no point to backtrack to.
        if pi < p.len() && p[pi] == star {
            pi += 1;
            after_star = Some((pi, ti));
        } else if pi < p.len() && (p[pi] == one || eq(&p[pi], &t[ti])) {
            pi += 1;
            ti += 1;
        } else if let Some((after, taken)) = after_star {
            pi = after;
            ti = taken + 1;
            after_star = Some((after, ti));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == star {
        pi += 1;
    }
    pi == p.len()
}

impl Patterns {
    fn matches(&self, value: &str, f: fn(&str, &str) -> bool) -> bool {
        self.values.iter().any(|p| f(p, value)) != self.negated
    }
}

fn strings(v: Option<&Json>) -> Vec<String> {
    match v {
        Some(Json::String(s)) => vec![s.clone()],
        Some(Json::Array(a)) => a
            .iter()
            .map(|x| match x {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        Some(Json::Bool(b)) => vec![b.to_string()],
        Some(Json::Number(n)) => vec![n.to_string()],
        _ => Vec::new(),
    }
}

fn patterns(st: &Json, positive: &str, negative: &str) -> Result<Patterns, String> {
    match (st.get(positive), st.get(negative)) {
        (Some(v), None) => Ok(Patterns {
            values: strings(Some(v)),
            negated: false,
        }),
        (None, Some(v)) => Ok(Patterns {
            values: strings(Some(v)),
            negated: true,
        }),
        _ => Err(format!(
            "needs exactly one of `{positive}` and `{negative}`"
        )),
    }
}

fn principals(st: &Json) -> Result<Option<Principals>, String> {
    let (value, negated) = match (st.get("Principal"), st.get("NotPrincipal")) {
        (None, None) => return Ok(None),
        (Some(v), None) => (v, false),
        (None, Some(v)) => (v, true),
        _ => return Err("has both `Principal` and `NotPrincipal`".to_owned()),
    };
    let mut p = Principals {
        aws: Vec::new(),
        service: Vec::new(),
        anyone: false,
        negated,
    };
    match value {
        Json::String(s) if s == "*" => p.anyone = true,
        Json::Object(m) => {
            for (k, v) in m {
                match k.as_str() {
                    "AWS" => p.aws.extend(strings(Some(v))),
                    "Service" => p.service.extend(strings(Some(v))),
                    other => return Err(format!("principal type `{other}` is not supported")),
                }
            }
        }
        other => return Err(format!("`Principal` {other} is not supported")),
    }
    Ok(Some(p))
}

impl Principals {
    /// Whether the statement speaks to `who`, and how.
    fn reach(&self, who: &Who) -> Option<Reach> {
        let hit = if self.anyone || self.aws.iter().any(|a| a == "*") {
            Some(Reach::Direct)
        } else {
            match who {
                Who::Service(s) => self.service.iter().any(|x| x == s).then_some(Reach::Direct),
                Who::Role { arn, account } => {
                    if self.aws.iter().any(|a| a == arn) {
                        Some(Reach::Direct)
                    } else {
                        self.aws
                            .iter()
                            .any(|a| {
                                a == account
                                    || (a.ends_with(":root")
                                        && a.split(':').nth(4) == Some(account.as_str()))
                            })
                            .then_some(Reach::Account)
                    }
                }
            }
        };
        match (hit, self.negated) {
            (h, false) => h,
            // `NotPrincipal`: everyone but the principals listed.
            (Some(_), true) => None,
            (None, true) => Some(Reach::Direct),
        }
    }
}

/// Evaluates a resource-based policy for a request by `who`: the statements whose principal
/// matches, with the identity policies left to the caller. `aws:PrincipalArn`,
/// `aws:PrincipalAccount` and `aws:PrincipalServiceName` are added to the request's context.
pub fn evaluate_resource(policy: &Policy, who: &Who, request: &Request) -> ResourceDecision {
    let mut ctx = request.context.clone();
    match who {
        Who::Role { arn, account } => {
            ctx = ctx
                .with("aws:PrincipalArn", arn.as_str())
                .with("aws:PrincipalAccount", account.as_str());
            ctx.known.insert("aws:principalservicename".to_owned());
        }
        Who::Service(s) => {
            ctx = ctx.with("aws:PrincipalServiceName", s.as_str());
            ctx.known.insert("aws:principalarn".to_owned());
            ctx.known.insert("aws:principalaccount".to_owned());
        }
    }
    let mut best: Option<Reach> = None;
    for s in &policy.statements {
        let Some(reach) = s.principals.as_ref().and_then(|p| p.reach(who)) else {
            continue;
        };
        if !s.covers(request) {
            continue;
        }
        match (s.effect, s.applies(&ctx)) {
            (Effect::Deny, Tri::True | Tri::Unknown) => {
                return ResourceDecision::ExplicitDeny(format!("{} `{}`", policy.name, s.sid));
            }
            (Effect::Allow, Tri::True) if best != Some(Reach::Direct) => best = Some(reach),
            _ => {}
        }
    }
    best.map_or(ResourceDecision::ImplicitDeny, ResourceDecision::Allow)
}

impl Policy {
    /// Reads a policy document whose intrinsic functions are already resolved to strings.
    pub fn parse(name: &str, doc: &Json) -> Result<Policy, String> {
        let list = match doc.get("Statement") {
            Some(Json::Array(a)) => a.iter().collect(),
            Some(s @ Json::Object(_)) => vec![s],
            _ => return Err(format!("policy `{name}` has no `Statement`")),
        };
        let mut statements = Vec::new();
        for (i, st) in list.into_iter().enumerate() {
            let sid = st
                .get("Sid")
                .and_then(Json::as_str)
                .map_or_else(|| format!("#{i}"), str::to_owned);
            let at = |e: String| format!("policy `{name}`, statement `{sid}`: {e}");
            let effect = match st.get("Effect").and_then(Json::as_str) {
                Some("Allow") => Effect::Allow,
                Some("Deny") => Effect::Deny,
                other => return Err(at(format!("unknown `Effect` {other:?}"))),
            };
            let mut conditions = Vec::new();
            if let Some(c) = st.get("Condition") {
                let ops = c
                    .as_object()
                    .ok_or_else(|| at("`Condition` is not an object".to_owned()))?;
                for (op, keys) in ops {
                    let keys = keys
                        .as_object()
                        .ok_or_else(|| at(format!("`{op}` is not an object")))?;
                    for (key, values) in keys {
                        conditions.push(Condition {
                            operator: op.clone(),
                            key: key.clone(),
                            values: strings(Some(values)),
                        });
                    }
                }
            }
            statements.push(Statement {
                actions: patterns(st, "Action", "NotAction").map_err(at)?,
                resources: patterns(st, "Resource", "NotResource").map_err(at)?,
                principals: principals(st).map_err(at)?,
                sid,
                effect,
                conditions,
            });
        }
        Ok(Policy {
            name: name.to_owned(),
            statements,
        })
    }
}

fn compare(base: &str, policy: &str, request: &str) -> Option<bool> {
    Some(match base {
        "StringEquals" | "StringNotEquals" | "ArnEquals" | "ArnNotEquals" => policy == request,
        "StringEqualsIgnoreCase" | "StringNotEqualsIgnoreCase" => {
            policy.eq_ignore_ascii_case(request)
        }
        "StringLike" | "StringNotLike" | "ArnLike" | "ArnNotLike" => glob(policy, request),
        "Bool" => policy.eq_ignore_ascii_case(request),
        _ => return None,
    })
}

fn condition(c: &Condition, ctx: &Context) -> Tri {
    let (set, op) = match c.operator.split_once(':') {
        Some((s, rest)) => (Some(s), rest),
        None => (None, c.operator.as_str()),
    };
    let (base, if_exists) = match op.strip_suffix("IfExists") {
        Some(b) => (b, true),
        None => (op, false),
    };
    if !ctx.speaks_for(&c.key) {
        return Tri::Unknown;
    }
    let Some(values) = ctx.get(&c.key) else {
        return match base {
            "Null" => match c.values.first().map(String::as_str) {
                Some("true") => Tri::True,
                Some("false") => Tri::False,
                _ => Tri::Unknown,
            },
            _ if if_exists || base.contains("Not") || set == Some("ForAllValues") => Tri::True,
            _ => Tri::False,
        };
    };
    if base == "Null" {
        return if c.values.first().map(String::as_str) == Some("false") {
            Tri::True
        } else {
            Tri::False
        };
    }
    let negated = base.contains("Not");
    // One request value satisfies the operator when it matches one of the policy's values or,
    // for a negated operator, none of them (its values are a NOR).
    let holds = |r: &String| -> Option<bool> {
        let mut any = false;
        for p in &c.values {
            any |= compare(base, p, r)?;
        }
        Some(any != negated)
    };
    let every = || {
        values
            .iter()
            .map(holds)
            .try_fold(true, |a, h| h.map(|h| a && h))
    };
    let some = || {
        values
            .iter()
            .map(holds)
            .try_fold(false, |a, h| h.map(|h| a || h))
    };
    let hit = match set {
        Some("ForAllValues") => every(),
        // At least one request value satisfies it: for `ForAnyValue:StringNotEquals`, one value
        // outside the policy's list is enough.
        Some("ForAnyValue") => some(),
        // Without a set operator the key has one value; given several, a negated operator
        // holds only when none of them matches.
        _ if negated => every(),
        _ => some(),
    };
    match hit {
        Some(true) => Tri::True,
        Some(false) => Tri::False,
        None => Tri::Unknown,
    }
}

impl Statement {
    fn covers(&self, r: &Request) -> bool {
        self.actions.matches(&r.action, action_matches) && self.resources.matches(&r.resource, glob)
    }

    fn applies(&self, ctx: &Context) -> Tri {
        let mut out = Tri::True;
        for c in &self.conditions {
            match condition(c, ctx) {
                Tri::False => return Tri::False,
                Tri::Unknown => out = Tri::Unknown,
                Tri::True => {}
            }
        }
        out
    }
}

/// Evaluates one set of policies (a role's identity policies, or a boundary).
pub fn evaluate(policies: &[&Policy], request: &Request) -> Decision {
    let mut allowed = false;
    for p in policies {
        for s in &p.statements {
            if !s.covers(request) {
                continue;
            }
            match (s.effect, s.applies(&request.context)) {
                (Effect::Deny, Tri::True | Tri::Unknown) => {
                    return Decision::ExplicitDeny(format!("{} `{}`", p.name, s.sid));
                }
                (Effect::Allow, Tri::True) => allowed = true,
                _ => {}
            }
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

/// A role's policies: what it is granted and, if it has one, its permissions boundary.
#[derive(Clone, Debug, Default)]
pub struct RolePolicies {
    /// The role (logical id or name), for reports.
    pub role: String,
    /// Identity policies: inline, attached managed policies, `AWS::IAM::Policy` resources.
    pub identity: Vec<Policy>,
    /// The permissions boundary.
    pub boundary: Option<Policy>,
}

impl RolePolicies {
    /// The effective decision: allowed by the identity policies and by the boundary (if any),
    /// denied by neither.
    pub fn decide(&self, request: &Request) -> Decision {
        let identity: Vec<&Policy> = self.identity.iter().collect();
        let d = evaluate(&identity, request);
        let Some(b) = &self.boundary else {
            return d;
        };
        match (d, evaluate(&[b], request)) {
            (Decision::ExplicitDeny(s), _) | (_, Decision::ExplicitDeny(s)) => {
                Decision::ExplicitDeny(s)
            }
            (Decision::Allow, Decision::Allow) => Decision::Allow,
            _ => Decision::ImplicitDeny,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(doc: Json) -> Policy {
        Policy::parse("p", &doc).expect("parses")
    }

    fn req(action: &str, resource: &str, ctx: Context) -> Request {
        Request {
            action: action.to_owned(),
            resource: resource.to_owned(),
            context: ctx,
        }
    }

    #[test]
    fn globs_match_like_iam() {
        assert!(glob("arn:aws:s3:::pf-*", "arn:aws:s3:::pf-orders"));
        assert!(!glob("arn:aws:s3:::pf-*", "arn:aws:s3:::other"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*", ""));
        assert!(glob("*:*", "a:b"));
        assert!(glob("arn:*:log-group:*", "arn:aws:logs:r:1:log-group:*"));
        assert!(!glob("arn:x:log-group:/aws/*", "arn:x:log-group:*"));
        assert!(action_matches("S3:Get*", "s3:getobject"));
    }

    #[test]
    fn allow_deny_and_not_action() {
        let p = policy(json!({"Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::pf-*"},
            {"Effect": "Deny", "Action": "s3:DeleteBucket", "Resource": "*"},
            {"Effect": "Allow", "NotAction": ["iam:*", "s3:*"], "Resource": "*"}
        ]}));
        let ctx = Context::default();
        assert_eq!(
            evaluate(
                &[&p],
                &req("s3:GetObject", "arn:aws:s3:::pf-x", ctx.clone())
            ),
            Decision::Allow
        );
        assert_eq!(
            evaluate(
                &[&p],
                &req("s3:GetObject", "arn:aws:s3:::other", ctx.clone())
            ),
            Decision::ImplicitDeny
        );
        assert!(matches!(
            evaluate(
                &[&p],
                &req("s3:DeleteBucket", "arn:aws:s3:::pf-x", ctx.clone())
            ),
            Decision::ExplicitDeny(_)
        ));
        assert_eq!(
            evaluate(&[&p], &req("sqs:SendMessage", "arn:q", ctx.clone())),
            Decision::Allow
        );
        assert_eq!(
            evaluate(&[&p], &req("iam:CreateRole", "arn:r", ctx)),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn not_resource_excludes() {
        let p = policy(
            json!({"Statement": {"Effect": "Allow", "Action": "sns:Publish",
            "NotResource": "arn:aws:sns:*:*:secret-*"}}),
        );
        let c = Context::default();
        assert_eq!(
            evaluate(&[&p], &req("sns:Publish", "arn:aws:sns:r:1:t", c.clone())),
            Decision::Allow
        );
        assert_eq!(
            evaluate(&[&p], &req("sns:Publish", "arn:aws:sns:r:1:secret-t", c)),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn conditions_on_known_keys_follow_aws() {
        let boundary = "arn:aws:iam::1:policy/b";
        let p = policy(json!({"Statement": [
            {"Effect": "Allow", "Action": "iam:CreateRole", "Resource": "*",
             "Condition": {"StringEquals": {"iam:PermissionsBoundary": boundary}}},
            {"Sid": "KeepBoundary", "Effect": "Deny", "Action": "iam:CreateRole", "Resource": "*",
             "Condition": {"StringNotEquals": {"iam:PermissionsBoundary": boundary}}}
        ]}));
        let iam = Context::knowing(&["iam:"]);
        // Without a boundary: the key is absent; the Allow fails, the negated Deny applies.
        assert_eq!(
            evaluate(&[&p], &req("iam:CreateRole", "arn:r", iam.clone())),
            Decision::ExplicitDeny("p `KeepBoundary`".to_owned())
        );
        assert!(matches!(
            evaluate(
                &[&p],
                &req(
                    "iam:CreateRole",
                    "arn:r",
                    iam.clone()
                        .with("iam:PermissionsBoundary", "arn:aws:iam::1:policy/other")
                )
            ),
            Decision::ExplicitDeny(_)
        ));
        assert_eq!(
            evaluate(
                &[&p],
                &req(
                    "iam:CreateRole",
                    "arn:r",
                    iam.with("iam:PermissionsBoundary", boundary)
                )
            ),
            Decision::Allow
        );
    }

    #[test]
    fn unknown_conditions_are_conservative() {
        let p = policy(json!({"Statement": [
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*",
             "Condition": {"StringLike": {"s3:prefix": "jobs/*"}}}
        ]}));
        // The context does not speak for `s3:prefix`: the Allow does not count.
        assert_eq!(
            evaluate(&[&p], &req("s3:ListBucket", "arn:b", Context::default())),
            Decision::ImplicitDeny
        );
        let d = policy(json!({"Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:*", "Resource": "*",
             "Condition": {"NumericGreaterThan": {"s3:max-keys": "10"}}}
        ]}));
        // An unknown Deny denies.
        assert!(matches!(
            evaluate(&[&d], &req("s3:GetObject", "arn:b", Context::default())),
            Decision::ExplicitDeny(_)
        ));
    }

    #[test]
    fn if_exists_null_and_sets() {
        let p = policy(json!({"Statement": [
            {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "*",
             "Condition": {"StringEqualsIfExists": {"iam:PassedToService": "codebuild.amazonaws.com"}}},
            {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*",
             "Condition": {"ForAnyValue:StringEquals": {"kms:ResourceAliases": "alias/a"}}},
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*",
             "Condition": {"Null": {"s3:x": "true"}}}
        ]}));
        let iam = Context::knowing(&["iam:"]);
        assert_eq!(
            evaluate(&[&p], &req("iam:PassRole", "arn:r", iam.clone())),
            Decision::Allow
        );
        assert_eq!(
            evaluate(
                &[&p],
                &req(
                    "iam:PassRole",
                    "arn:r",
                    iam.with("iam:PassedToService", "lambda.amazonaws.com")
                )
            ),
            Decision::ImplicitDeny
        );
        let kms = Context::default().with("kms:ResourceAliases", "alias/z");
        assert_eq!(
            evaluate(
                &[&p],
                &req(
                    "kms:Decrypt",
                    "k",
                    kms.with("kms:ResourceAliases", "alias/a")
                )
            ),
            Decision::Allow
        );
        assert_eq!(
            evaluate(&[&p], &req("s3:GetObject", "o", Context::knowing(&["s3:"]))),
            Decision::Allow
        );
    }

    #[test]
    fn a_boundary_caps_and_its_denies_count() {
        let role = RolePolicies {
            role: "r".to_owned(),
            identity: vec![policy(
                json!({"Statement": {"Effect": "Allow", "Action": "*:*", "Resource": "*"}}),
            )],
            boundary: Some(policy(json!({"Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "s3:DeleteBucket", "Resource": "*"}
            ]}))),
        };
        let c = Context::default();
        assert_eq!(
            role.decide(&req("s3:GetObject", "o", c.clone())),
            Decision::Allow
        );
        assert_eq!(
            role.decide(&req("iam:CreateRole", "r", c.clone())),
            Decision::ImplicitDeny
        );
        assert!(matches!(
            role.decide(&req("s3:DeleteBucket", "b", c)),
            Decision::ExplicitDeny(_)
        ));
    }

    #[test]
    fn resource_policies_speak_to_their_principals() {
        let p = policy(json!({"Statement": [
            {"Sid": "Account", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*",
             "Principal": {"AWS": "arn:aws:iam::111111111111:root"},
             "Condition": {"ArnEquals": {"aws:PrincipalArn": "arn:aws:iam::111111111111:role/a"}}},
            {"Sid": "Named", "Effect": "Allow", "Action": "kms:Encrypt", "Resource": "*",
             "Principal": {"AWS": ["arn:aws:iam::222222222222:role/b"]}},
            {"Sid": "Logs", "Effect": "Allow", "Action": "kms:Encrypt*", "Resource": "*",
             "Principal": {"Service": "logs.us-east-1.amazonaws.com"},
             "Condition": {"ArnEquals": {"kms:EncryptionContext:aws:logs:arn": "arn:g"}}},
            {"Sid": "Tls", "Effect": "Deny", "Action": "*", "Resource": "*", "Principal": "*",
             "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
        ]}));
        let tls = || Context::default().with("aws:SecureTransport", "true");
        let a = Who::role("arn:aws:iam::111111111111:role/a");
        let other = Who::role("arn:aws:iam::111111111111:role/other");
        let b = Who::role("arn:aws:iam::222222222222:role/b");
        let logs = Who::Service("logs.us-east-1.amazonaws.com".to_owned());
        assert_eq!(
            evaluate_resource(&p, &a, &req("kms:Decrypt", "k", tls())),
            ResourceDecision::Allow(Reach::Account)
        );
        assert_eq!(
            evaluate_resource(&p, &other, &req("kms:Decrypt", "k", tls())),
            ResourceDecision::ImplicitDeny
        );
        assert_eq!(
            evaluate_resource(&p, &b, &req("kms:Encrypt", "k", tls())),
            ResourceDecision::Allow(Reach::Direct)
        );
        assert_eq!(
            evaluate_resource(&p, &b, &req("kms:Decrypt", "k", tls())),
            ResourceDecision::ImplicitDeny
        );
        let ctx = tls().with("kms:EncryptionContext:aws:logs:arn", "arn:g");
        assert_eq!(
            evaluate_resource(&p, &logs, &req("kms:Encrypt", "k", ctx)),
            ResourceDecision::Allow(Reach::Direct)
        );
        let wrong = tls().with("kms:EncryptionContext:aws:logs:arn", "arn:other");
        assert_eq!(
            evaluate_resource(&p, &logs, &req("kms:Encrypt", "k", wrong)),
            ResourceDecision::ImplicitDeny
        );
        // Without TLS, or with the transport unknown, the deny applies.
        assert!(matches!(
            evaluate_resource(&p, &a, &req("kms:Decrypt", "k", Context::default())),
            ResourceDecision::ExplicitDeny(_)
        ));
        let not = policy(
            json!({"Statement": {"Effect": "Deny", "Action": "*", "Resource": "*",
            "NotPrincipal": {"AWS": "arn:aws:iam::111111111111:role/a"}}}),
        );
        assert_eq!(
            evaluate_resource(&not, &a, &req("s3:GetObject", "o", tls())),
            ResourceDecision::ImplicitDeny
        );
        assert!(matches!(
            evaluate_resource(&not, &b, &req("s3:GetObject", "o", tls())),
            ResourceDecision::ExplicitDeny(_)
        ));
    }

    #[test]
    fn malformed_policies_are_errors() {
        assert!(Policy::parse("p", &json!({})).is_err());
        assert!(
            Policy::parse(
                "p",
                &json!({"Statement": {"Effect": "Maybe", "Action": "*", "Resource": "*"}})
            )
            .is_err()
        );
        assert!(
            Policy::parse(
                "p",
                &json!({"Statement": {"Effect": "Allow", "Action": "a", "NotAction": "b", "Resource": "*"}})
            )
            .is_err()
        );
    }

    /// One statement with one condition on `s3:prefix`, evaluated for `s3:GetObject` (a `Deny`
    /// comes after an `Allow` of everything, so that only the `Deny` decides).
    fn under(effect: &str, op: &str, value: Json, ctx: Context) -> Decision {
        let mut statements = Vec::new();
        if effect == "Deny" {
            statements.push(json!({"Effect": "Allow", "Action": "*", "Resource": "*"}));
        }
        statements.push(
            json!({"Sid": "C", "Effect": effect, "Action": "s3:GetObject",
            "Resource": "*", "Condition": {op: {"s3:prefix": value}}}),
        );
        let p = policy(json!({ "Statement": statements }));
        evaluate(&[&p], &req("s3:GetObject", "o", ctx))
    }

    fn allows(op: &str, value: Json, ctx: Context) -> bool {
        under("Allow", op, value, ctx) == Decision::Allow
    }

    fn denies(op: &str, value: Json, ctx: Context) -> bool {
        matches!(under("Deny", op, value, ctx), Decision::ExplicitDeny(_))
    }

    /// A context that knows the `s3:` keys, with these values of `s3:prefix`.
    fn prefixes(values: &[&str]) -> Context {
        values
            .iter()
            .fold(Context::knowing(&["s3:"]), |c, v| c.with("s3:prefix", *v))
    }

    #[test]
    fn each_string_operator_compares_as_aws_does() {
        let is = |v: &str| prefixes(&[v]);
        assert!(allows("StringEquals", json!("Jobs/x"), is("Jobs/x")));
        assert!(!allows("StringEquals", json!("Jobs/x"), is("jobs/x")));
        assert!(allows(
            "StringEqualsIgnoreCase",
            json!("jobs/X"),
            is("Jobs/x")
        ));
        assert!(!allows(
            "StringEqualsIgnoreCase",
            json!("jobs/X"),
            is("Jobs/y")
        ));
        assert!(!allows(
            "StringNotEqualsIgnoreCase",
            json!("JOBS/X"),
            is("Jobs/x")
        ));
        assert!(allows(
            "StringNotEqualsIgnoreCase",
            json!("JOBS/X"),
            is("Logs/x")
        ));
        assert!(allows("StringLike", json!("Jobs/*"), is("Jobs/x")));
        assert!(!allows("StringLike", json!("Jobs/*"), is("Logs/x")));
        assert!(!allows("StringNotLike", json!("Jobs/*"), is("Jobs/x")));
        assert!(allows("StringNotLike", json!("Jobs/*"), is("Logs/x")));
        assert!(allows(
            "ArnLike",
            json!("arn:aws:s3:::pf-*"),
            is("arn:aws:s3:::pf-a")
        ));
        assert!(!allows(
            "ArnLike",
            json!("arn:aws:s3:::pf-*"),
            is("arn:aws:s3:::x")
        ));
        assert!(allows("ArnNotEquals", json!("arn:a"), is("arn:b")));
        assert!(!allows("ArnNotEquals", json!("arn:a"), is("arn:a")));
        assert!(allows("Bool", json!("TRUE"), is("true")));
        assert!(!allows("Bool", json!("true"), is("false")));
        // Any of the policy's values: two that both match still match.
        assert!(allows(
            "StringLike",
            json!(["pf-*", "pf-o*"]),
            is("pf-orders")
        ));
        assert!(allows("StringEquals", json!(["a", "b"]), is("b")));
        assert!(!allows("StringNotEquals", json!(["a", "b"]), is("b")));
        // Numeric, date and IP operators are unknown: an `Allow` grants nothing, a `Deny` denies.
        assert!(!allows("NumericLessThan", json!("10"), is("5")));
        assert!(denies("NumericLessThan", json!("10"), is("50")));
        assert!(denies("IpAddress", json!("10.0.0.0/8"), is("192.0.2.1")));
    }

    #[test]
    fn json_booleans_and_numbers_in_conditions_are_read_as_text() {
        let p = policy(json!({"Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Sid": "Tls", "Effect": "Deny", "Action": "s3:*", "Resource": "*",
             "Condition": {"Bool": {"aws:SecureTransport": false}}},
            {"Sid": "Keys", "Effect": "Deny", "Action": "s3:ListBucket", "Resource": "*",
             "Condition": {"StringEquals": {"s3:max-keys": 1000}}},
            {"Sid": "Mixed", "Effect": "Deny", "Action": "s3:ListBucket", "Resource": "*",
             "Condition": {"StringEquals": {"s3:delimiter": [7, true]}}}
        ]}));
        let ctx = |tls: &str, keys: &str, delimiter: &str| {
            Context::default()
                .with("aws:SecureTransport", tls)
                .with("s3:max-keys", keys)
                .with("s3:delimiter", delimiter)
        };
        let list = |c| evaluate(&[&p], &req("s3:ListBucket", "b", c));
        let deny = |sid: &str| Decision::ExplicitDeny(format!("p `{sid}`"));
        // A plain-HTTP request is denied by a `false` written as a JSON boolean, and only it.
        assert_eq!(list(ctx("false", "1", "/")), deny("Tls"));
        assert_eq!(list(ctx("true", "1", "/")), Decision::Allow);
        assert_eq!(list(ctx("true", "1000", "/")), deny("Keys"));
        assert_eq!(list(ctx("true", "1", "7")), deny("Mixed"));
        assert_eq!(list(ctx("true", "1", "true")), deny("Mixed"));
    }

    #[test]
    fn null_tests_presence_and_an_absent_key_follows_its_operator() {
        let absent = || Context::knowing(&["s3:"]);
        let present = || prefixes(&["jobs/"]);
        assert!(allows("Null", json!("true"), absent()));
        assert!(!allows("Null", json!("true"), present()));
        assert!(!allows("Null", json!("false"), absent()));
        assert!(allows("Null", json!("false"), present()));
        // A deny of requests that carry the key leaves the others alone, and the reverse.
        assert!(!denies("Null", json!("false"), absent()));
        assert!(denies("Null", json!("false"), present()));
        assert!(!denies("Null", json!("true"), present()));
        // `Null` with a value that is neither `true` nor `false` is unknown.
        assert!(!allows("Null", json!("maybe"), absent()));
        assert!(denies("Null", json!("maybe"), absent()));
        // An absent key fails a positive operator, satisfies a negated one, `…IfExists` and
        // `ForAllValues:` (vacuously), and fails `ForAnyValue:`.
        assert!(!allows("StringLike", json!("*"), absent()));
        assert!(!denies("StringLike", json!("*"), absent()));
        assert!(allows("StringNotLike", json!("jobs/*"), absent()));
        assert!(allows("StringLikeIfExists", json!("jobs/*"), absent()));
        assert!(allows(
            "ForAllValues:StringEquals",
            json!("jobs/"),
            absent()
        ));
        assert!(!allows(
            "ForAnyValue:StringEquals",
            json!("jobs/"),
            absent()
        ));
        // A key no one speaks for is unknown, whatever the operator.
        assert!(!allows(
            "StringNotLike",
            json!("jobs/*"),
            Context::default()
        ));
        assert!(denies("StringLike", json!("jobs/*"), Context::default()));
    }

    #[test]
    fn set_operators_compare_every_value_of_the_request() {
        let ab = || json!(["a", "b"]);
        assert!(allows(
            "ForAllValues:StringEquals",
            ab(),
            prefixes(&["a", "b"])
        ));
        assert!(!allows(
            "ForAllValues:StringEquals",
            ab(),
            prefixes(&["a", "c"])
        ));
        assert!(!allows(
            "ForAllValues:StringEquals",
            ab(),
            prefixes(&["c", "a"])
        ));
        assert!(allows(
            "ForAllValues:StringNotEquals",
            ab(),
            prefixes(&["c", "d"])
        ));
        assert!(!allows(
            "ForAllValues:StringNotEquals",
            ab(),
            prefixes(&["c", "b"])
        ));
        assert!(allows(
            "ForAnyValue:StringEquals",
            ab(),
            prefixes(&["c", "a"])
        ));
        assert!(allows(
            "ForAnyValue:StringEquals",
            ab(),
            prefixes(&["b", "c"])
        ));
        assert!(!allows(
            "ForAnyValue:StringEquals",
            ab(),
            prefixes(&["c", "d"])
        ));
        assert!(allows(
            "ForAnyValue:StringLike",
            json!("a*"),
            prefixes(&["x", "ab"])
        ));
    }

    #[test]
    fn a_deny_of_any_value_outside_a_list_denies_a_request_with_one_such_value() {
        // The usual allow-list of tag keys: one value outside the list is enough to deny, even
        // when the others are in it.
        let allowed = || json!(["team", "owner"]);
        for op in ["ForAnyValue:StringNotEquals", "ForAnyValue:StringNotLike"] {
            assert!(denies(op, allowed(), prefixes(&["team", "admin"])), "{op}");
            assert!(denies(op, allowed(), prefixes(&["admin"])), "{op}");
            assert!(!denies(op, allowed(), prefixes(&["owner", "team"])), "{op}");
        }
        // `ForAllValues:` with a negated operator: every value must be outside the list.
        assert!(!denies(
            "ForAllValues:StringNotEquals",
            allowed(),
            prefixes(&["team", "admin"])
        ));
        assert!(denies(
            "ForAllValues:StringNotEquals",
            allowed(),
            prefixes(&["x", "admin"])
        ));
        // Without a set operator (a context given several values of a single-valued key), a
        // negated operator holds only when no value matches, a positive one when one does.
        assert!(!denies(
            "StringNotEquals",
            allowed(),
            prefixes(&["team", "admin"])
        ));
        assert!(denies(
            "StringNotEquals",
            allowed(),
            prefixes(&["admin", "x"])
        ));
        assert!(denies(
            "StringEquals",
            allowed(),
            prefixes(&["admin", "team"])
        ));
        assert!(!denies(
            "StringEquals",
            allowed(),
            prefixes(&["admin", "x"])
        ));
    }

    #[test]
    fn a_principal_is_anyone_or_typed_entries_and_nothing_else() {
        let with = |principal: Json| {
            Policy::parse(
                "p",
                &json!({"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*",
                    "Principal": principal}}),
            )
        };
        assert!(with(json!("*")).is_ok());
        // A bare ARN is not `Principal` syntax: refused, never read as anyone.
        let err = with(json!("arn:aws:iam::111111111111:root")).expect_err("a bare ARN");
        assert!(err.contains("is not supported"), "{err}");
        let err = with(json!({"Federated": "cognito-identity.amazonaws.com"})).expect_err("type");
        assert!(err.contains("`Federated`"), "{err}");
        let both = json!({"Statement": {"Effect": "Deny", "Action": "*", "Resource": "*",
            "Principal": "*", "NotPrincipal": {"AWS": "1"}}});
        let err = Policy::parse("p", &both).expect_err("both");
        assert!(err.contains("both `Principal` and `NotPrincipal`"), "{err}");
    }

    #[test]
    fn a_statement_reaches_the_principals_it_names_and_their_accounts_only() {
        let p = policy(json!({"Statement": [
            {"Sid": "Role", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "*",
             "Principal": {"AWS": "arn:aws:iam::111111111111:role/a"}},
            {"Sid": "Id", "Effect": "Allow", "Action": "s3:PutObject", "Resource": "*",
             "Principal": {"AWS": "222222222222"}},
            {"Sid": "Root", "Effect": "Allow", "Action": "s3:DeleteObject", "Resource": "*",
             "Principal": {"AWS": ["arn:aws:iam::333333333333:root"]}},
            {"Sid": "Star", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*",
             "Principal": {"AWS": "*"}},
            {"Sid": "Service", "Effect": "Allow", "Action": "sns:Publish", "Resource": "*",
             "Principal": {"Service": "events.amazonaws.com"}}
        ]}));
        let on = |who: &Who, action: &str| {
            evaluate_resource(&p, who, &req(action, "o", Context::default()))
        };
        let role =
            |account: &str, name: &str| Who::role(&format!("arn:aws:iam::{account}:role/{name}"));
        let events = Who::Service("events.amazonaws.com".to_owned());
        let sns = Who::Service("sns.amazonaws.com".to_owned());
        let (direct, account) = (
            ResourceDecision::Allow(Reach::Direct),
            ResourceDecision::Allow(Reach::Account),
        );
        assert_eq!(on(&role("111111111111", "a"), "s3:GetObject"), direct);
        // Naming one role reaches no other role of its account.
        assert_eq!(
            on(&role("111111111111", "b"), "s3:GetObject"),
            ResourceDecision::ImplicitDeny
        );
        assert_eq!(on(&role("222222222222", "x"), "s3:PutObject"), account);
        assert_eq!(
            on(&role("444444444444", "x"), "s3:PutObject"),
            ResourceDecision::ImplicitDeny
        );
        assert_eq!(on(&role("333333333333", "x"), "s3:DeleteObject"), account);
        assert_eq!(
            on(&role("444444444444", "x"), "s3:DeleteObject"),
            ResourceDecision::ImplicitDeny
        );
        assert_eq!(on(&role("444444444444", "x"), "s3:ListBucket"), direct);
        assert_eq!(on(&sns, "s3:ListBucket"), direct);
        assert_eq!(on(&events, "sns:Publish"), direct);
        assert_eq!(on(&sns, "sns:Publish"), ResourceDecision::ImplicitDeny);
        assert_eq!(
            on(&role("111111111111", "a"), "sns:Publish"),
            ResourceDecision::ImplicitDeny
        );
        // `NotPrincipal` naming an account spares that account's roles only.
        let not = policy(json!({"Statement": {"Sid": "Others", "Effect": "Deny",
            "Action": "*", "Resource": "*",
            "NotPrincipal": {"AWS": "arn:aws:iam::111111111111:root"}}}));
        let get =
            |who: &Who| evaluate_resource(&not, who, &req("s3:GetObject", "o", Context::default()));
        assert_eq!(
            get(&role("111111111111", "a")),
            ResourceDecision::ImplicitDeny
        );
        assert_eq!(
            get(&role("222222222222", "a")),
            ResourceDecision::ExplicitDeny("p `Others`".to_owned())
        );
        assert_eq!(
            get(&events),
            ResourceDecision::ExplicitDeny("p `Others`".to_owned())
        );
    }

    #[test]
    fn the_most_direct_allow_counts_and_any_deny_of_the_principal_wins() {
        let direct = json!({"Sid": "Direct", "Effect": "Allow", "Action": "s3:GetObject",
            "Resource": "*", "Principal": {"AWS": "arn:aws:iam::111111111111:role/a"}});
        let account = json!({"Sid": "Account", "Effect": "Allow", "Action": "s3:*",
            "Resource": "*", "Principal": {"AWS": "111111111111"}});
        let a = Who::role("arn:aws:iam::111111111111:role/a");
        let get = || req("s3:GetObject", "o", Context::default());
        for order in [
            json!([direct.clone(), account.clone()]),
            json!([account.clone(), direct.clone()]),
        ] {
            let p = policy(json!({ "Statement": order }));
            assert_eq!(
                evaluate_resource(&p, &a, &get()),
                ResourceDecision::Allow(Reach::Direct)
            );
            assert_eq!(
                evaluate_resource(&p, &a, &req("s3:PutObject", "o", Context::default())),
                ResourceDecision::Allow(Reach::Account)
            );
        }
        // A deny whose condition cannot be decided denies; one for another principal does not.
        let p = policy(json!({"Statement": [direct, account,
            {"Sid": "Other", "Effect": "Deny", "Action": "*", "Resource": "*",
             "Principal": {"AWS": "arn:aws:iam::111111111111:role/b"}},
            {"Sid": "Vpc", "Effect": "Deny", "Action": "s3:GetObject", "Resource": "*",
             "Principal": "*", "Condition": {"StringNotEquals": {"aws:SourceVpce": "vpce-1"}}}
        ]}));
        assert_eq!(
            evaluate_resource(&p, &a, &get()),
            ResourceDecision::ExplicitDeny("p `Vpc`".to_owned())
        );
        assert_eq!(
            evaluate_resource(&p, &a, &req("s3:PutObject", "o", Context::default())),
            ResourceDecision::Allow(Reach::Account)
        );
        // The principal's own keys are known: its account, and no service name.
        let own = policy(
            json!({"Statement": {"Effect": "Allow", "Action": "s3:GetObject",
            "Resource": "*", "Principal": "*", "Condition": {
                "StringEquals": {"aws:PrincipalAccount": "111111111111"},
                "Null": {"aws:PrincipalServiceName": "true"}}}}),
        );
        assert_eq!(
            evaluate_resource(&own, &a, &get()),
            ResourceDecision::Allow(Reach::Direct)
        );
        let other = Who::role("arn:aws:iam::222222222222:role/a");
        assert_eq!(
            evaluate_resource(&own, &other, &get()),
            ResourceDecision::ImplicitDeny
        );
        let logs = Who::Service("logs.amazonaws.com".to_owned());
        assert_eq!(
            evaluate_resource(&own, &logs, &get()),
            ResourceDecision::ImplicitDeny
        );
    }

    #[test]
    fn globs_backtrack_and_match_whole_strings() {
        assert!(glob("*ab", "aab"));
        assert!(glob("a*b*c", "abxbc"));
        assert!(glob("*a*", "bbba"));
        assert!(glob("a*", "a"));
        assert!(glob("**", "x"));
        assert!(glob("a*?", "ab"));
        assert!(!glob("a*?", "a"));
        assert!(!glob("a", "ab"));
        assert!(!glob("ab", "a"));
        assert!(!glob("a*b", "abc"));
        assert!(!glob("?", ""));
        assert!(glob("", ""));
        assert!(!glob("", "a"));
        assert!(!action_matches("s3:Get*", "s3:putobject"));
        // A `*` in the text (a request for every resource) is tried against the rest of the
        // pattern like any other character when the pattern's `*` backtracks.
        assert!(glob("*?", "x*"));
        assert!(glob("a*?", "ab*"));
        // A pattern's `*` meeting a `*` in the text is still a wildcard: it can take more.
        assert!(glob("*b", "*ab"));
        assert!(glob("arn:*:b", "arn:*:a:b"));
        assert!(!glob("*b", "*a"));
    }

    /// IAM's definition, written as the recursion it is: `*` takes any run of characters (none,
    /// or a `*` of the text's own), `?` exactly one, any other character itself, and the whole
    /// text must be taken.
    fn by_definition(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|k| by_definition(rest, &t[k..])),
            Some((c, rest)) => {
                t.first().is_some_and(|x| *c == '?' || c == x) && by_definition(rest, &t[1..])
            }
        }
    }

    /// Every string of up to `len` characters of `alphabet`.
    fn strings_of(alphabet: &[char], len: usize) -> Vec<Vec<char>> {
        let mut all = vec![Vec::new()];
        let mut last = vec![Vec::new()];
        for _ in 0..len {
            last = last
                .iter()
                .flat_map(|s: &Vec<char>| {
                    alphabet.iter().map(move |c| {
                        let mut n = s.clone();
                        n.push(*c);
                        n
                    })
                })
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn globs_match_as_iam_defines_them_on_every_short_pattern_and_text() {
        let patterns = strings_of(&['a', 'b', '*', '?'], 5);
        let texts = strings_of(&['a', 'b', '*'], 5);
        let mut wrong = Vec::new();
        for p in &patterns {
            for t in &texts {
                let (ps, ts): (String, String) = (p.iter().collect(), t.iter().collect());
                if glob(&ps, &ts) != by_definition(p, t) {
                    wrong.push(format!("{ps:?} ~ {ts:?}: {}", glob(&ps, &ts)));
                }
            }
        }
        assert_eq!(patterns.len() * texts.len(), 1365 * 364);
        assert!(
            wrong.is_empty(),
            "{} cases, first: {:#?}",
            wrong.len(),
            &wrong[..wrong.len().min(10)]
        );
    }

    /// The character path (a text or pattern that is not all ASCII: `é`) and the case folding
    /// of action names agree with the definition too: `glob` tells `A` from `a`, and
    /// `action_matches` is the definition on ASCII-lowercased strings.
    #[test]
    fn other_characters_and_action_names_match_as_iam_defines_them() {
        let patterns = strings_of(&['a', 'A', 'é', '*', '?'], 4);
        let texts = strings_of(&['a', 'A', 'é', '*'], 4);
        let lower = |s: &[char]| s.iter().map(char::to_ascii_lowercase).collect::<Vec<_>>();
        let mut wrong = Vec::new();
        for p in &patterns {
            for t in &texts {
                let (ps, ts): (String, String) = (p.iter().collect(), t.iter().collect());
                if glob(&ps, &ts) != by_definition(p, t) {
                    wrong.push(format!("glob {ps:?} ~ {ts:?}"));
                }
                if action_matches(&ps, &ts) != by_definition(&lower(p), &lower(t)) {
                    wrong.push(format!("action {ps:?} ~ {ts:?}"));
                }
            }
        }
        assert_eq!(patterns.len() * texts.len(), 781 * 341);
        assert!(
            wrong.is_empty(),
            "{} cases, first: {:#?}",
            wrong.len(),
            &wrong[..wrong.len().min(10)]
        );
    }

    #[test]
    fn contexts_and_principals_describe_themselves() {
        let c = Context::default()
            .with("b:K", "2")
            .with("a:k", "1")
            .with("A:K", "3");
        assert_eq!(c.describe(), "a:k=1|3, b:k=2");
        let c = c.without("A:k");
        assert_eq!(c.describe(), "b:k=2");
        assert!(c.speaks_for("B:k"));
        assert!(!c.speaks_for("a:k"));
        let known = Context::knowing(&["IAM:"]);
        assert!(known.speaks_for("iam:PassedToService"));
        assert!(!known.speaks_for("s3:prefix"));
        assert_eq!(known.get("iam:PassedToService"), None);
        let r = Who::role("arn:aws:iam::111111111111:role/path/a");
        assert_eq!(r.account(), Some("111111111111"));
        assert_eq!(r.name(), "arn:aws:iam::111111111111:role/path/a");
        let s = Who::Service("logs.amazonaws.com".to_owned());
        assert_eq!(s.account(), None);
        assert_eq!(s.name(), "logs.amazonaws.com");
    }

    #[test]
    fn a_role_is_denied_by_either_side_and_allowed_only_by_both() {
        let allow_s3 = json!({"Statement": {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}});
        let deny_put = json!({"Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Sid": "NoPut", "Effect": "Deny", "Action": "s3:PutObject", "Resource": "*"}
        ]});
        let role = |identity: &Json, boundary: Option<&Json>| RolePolicies {
            role: "r".to_owned(),
            identity: vec![Policy::parse("identity", identity).expect("parses")],
            boundary: boundary.map(|b| Policy::parse("boundary", b).expect("parses")),
        };
        let c = Context::default();
        let put = || req("s3:PutObject", "o", c.clone());
        let deny = |p: &str| Decision::ExplicitDeny(format!("{p} `NoPut`"));
        assert_eq!(
            role(&deny_put, Some(&allow_s3)).decide(&put()),
            deny("identity")
        );
        assert_eq!(
            role(&allow_s3, Some(&deny_put)).decide(&put()),
            deny("boundary")
        );
        assert_eq!(role(&allow_s3, None).decide(&put()), Decision::Allow);
        assert_eq!(
            role(&allow_s3, None).decide(&req("sqs:SendMessage", "q", c.clone())),
            Decision::ImplicitDeny
        );
        // The boundary allows what the identity does not: nothing.
        assert_eq!(
            role(&allow_s3, Some(&deny_put)).decide(&req("sqs:SendMessage", "q", c)),
            Decision::ImplicitDeny
        );
    }
}
