//! A CloudFormation template seen from one account and region: intrinsic functions resolved to
//! the strings AWS would produce (`Ref`, `Fn::GetAtt`, `Fn::Sub`, `Fn::If`, `Fn::Join`), each
//! resource's ARN, and the roles' policies, so that the evaluator can read them.
//!
//! Physical ids AWS invents (KMS key ids, API ids, notification rule ids, secret suffixes) get
//! fixed sample values; policies that match them do so with wildcards, as they must on AWS.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;

use super::eval::{Policy, RolePolicies};

/// Where a template is deployed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    /// `aws`, `aws-cn`, ...
    pub partition: String,
    /// Account id.
    pub account: String,
    /// Region.
    pub region: String,
}

impl Env {
    /// An environment in the `aws` partition (or the one the region belongs to).
    pub fn new(account: &str, region: &str) -> Env {
        Env {
            partition: if region.starts_with("cn-") {
                "aws-cn"
            } else if region.starts_with("us-gov-") {
                "aws-us-gov"
            } else {
                "aws"
            }
            .to_owned(),
            account: account.to_owned(),
            region: region.to_owned(),
        }
    }
}

/// A template with its environment.
#[derive(Debug)]
pub struct Template<'a> {
    /// The template JSON (long-form intrinsics).
    pub json: &'a Json,
    /// Where it is deployed.
    pub env: Env,
    /// Values of parameters that have no default (e.g. the regional artifact keys of a pipeline
    /// stack, read from the region stacks at deploy time).
    pub params: BTreeMap<String, String>,
}

/// A resolved value: JSON with every intrinsic replaced; `None` for `AWS::NoValue`.
type Resolved = Option<Json>;

fn sample_id(logical: &str) -> String {
    let hex: String = logical
        .bytes()
        .map(|b| format!("{:02x}", b))
        .collect::<String>()
        .chars()
        .chain(std::iter::repeat('0'))
        .take(12)
        .collect();
    format!("00000000-0000-4000-8000-{hex}")
}

impl<'a> Template<'a> {
    /// The template at `env`.
    pub fn new(json: &'a Json, env: Env) -> Template<'a> {
        Template {
            json,
            env,
            params: BTreeMap::new(),
        }
    }

    /// The template with these parameter values.
    pub fn with_params(mut self, params: BTreeMap<String, String>) -> Template<'a> {
        self.params = params;
        self
    }

    /// The resources, by logical id.
    pub fn resources(&self) -> Vec<(&'a str, &'a Json)> {
        self.json
            .get("Resources")
            .and_then(Json::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.as_str(), v)).collect())
            .unwrap_or_default()
    }

    fn resource(&self, id: &str) -> Option<&'a Json> {
        self.json.get("Resources").and_then(|r| r.get(id))
    }

    /// A resource's type.
    pub fn type_of(&self, id: &str) -> Option<&'a str> {
        self.resource(id)?.get("Type")?.as_str()
    }

    /// A resolved property of a resource, as a string.
    pub fn prop_str(&self, id: &str, prop: &str) -> Option<String> {
        let v = self.resource(id)?.get("Properties")?.get(prop)?;
        self.resolve(v)?.as_str().map(str::to_owned)
    }

    fn arn(&self, service: &str, region: bool, account: bool, rest: &str) -> String {
        format!(
            "arn:{}:{service}:{}:{}:{rest}",
            self.env.partition,
            if region { self.env.region.as_str() } else { "" },
            if account {
                self.env.account.as_str()
            } else {
                ""
            }
        )
    }

    /// The ARN of a resource (`None` for types without one, such as inline policies).
    pub fn arn_of(&self, id: &str) -> Option<String> {
        let name = |p: &str| self.prop_str(id, p).unwrap_or_else(|| id.to_owned());
        Some(match self.type_of(id)? {
            "AWS::IAM::Role" => self.arn("iam", false, true, &format!("role/{}", name("RoleName"))),
            "AWS::IAM::ManagedPolicy" => self.arn(
                "iam",
                false,
                true,
                &format!("policy/{}", name("ManagedPolicyName")),
            ),
            "AWS::KMS::Key" => self.arn("kms", true, true, &format!("key/{}", sample_id(id))),
            "AWS::KMS::Alias" => self.arn("kms", true, true, &name("AliasName")),
            "AWS::S3::Bucket" => format!("arn:{}:s3:::{}", self.env.partition, name("BucketName")),
            "AWS::Logs::LogGroup" => self.arn(
                "logs",
                true,
                true,
                &format!("log-group:{}", name("LogGroupName")),
            ),
            "AWS::CodeBuild::Project" => self.arn(
                "codebuild",
                true,
                true,
                &format!("project/{}", name("Name")),
            ),
            "AWS::CodeBuild::ReportGroup" => self.arn(
                "codebuild",
                true,
                true,
                &format!("report-group/{}", name("Name")),
            ),
            "AWS::CodePipeline::Pipeline" => self.arn("codepipeline", true, true, &name("Name")),
            "AWS::Events::Rule" => {
                self.arn("events", true, true, &format!("rule/{}", name("Name")))
            }
            "AWS::SNS::Topic" => self.arn("sns", true, true, &name("TopicName")),
            "AWS::CodeStarNotifications::NotificationRule" => self.arn(
                "codestar-notifications",
                true,
                true,
                &format!("notificationrule/{}", sample_id(id).replace('-', "")),
            ),
            "AWS::SQS::Queue" => self.arn("sqs", true, true, &name("QueueName")),
            "AWS::SecretsManager::Secret" => self.arn(
                "secretsmanager",
                true,
                true,
                &format!("secret:{}-AbCdEf", name("Name")),
            ),
            "AWS::Lambda::Function" => self.arn(
                "lambda",
                true,
                true,
                &format!("function:{}", name("FunctionName")),
            ),
            _ => return None,
        })
    }

    /// What `Ref` of a resource returns.
    fn ref_of(&self, id: &str) -> Option<String> {
        let name = |p: &str| self.prop_str(id, p).unwrap_or_else(|| id.to_owned());
        Some(match self.type_of(id)? {
            "AWS::IAM::Role" => name("RoleName"),
            "AWS::S3::Bucket" => name("BucketName"),
            "AWS::KMS::Key" => sample_id(id),
            "AWS::KMS::Alias" => name("AliasName"),
            "AWS::Logs::LogGroup" => name("LogGroupName"),
            "AWS::CodeBuild::Project" | "AWS::CodePipeline::Pipeline" | "AWS::Events::Rule" => {
                name("Name")
            }
            "AWS::Lambda::Function" => name("FunctionName"),
            "AWS::SQS::Queue" => format!(
                "https://sqs.{}.amazonaws.com/{}/{}",
                self.env.region,
                self.env.account,
                name("QueueName")
            ),
            "AWS::SNS::Topic"
            | "AWS::IAM::ManagedPolicy"
            | "AWS::SecretsManager::Secret"
            | "AWS::CodeBuild::ReportGroup"
            | "AWS::CodeStarNotifications::NotificationRule" => self.arn_of(id)?,
            _ => format!("{id}-{}", sample_id(id)),
        })
    }

    fn get_att(&self, id: &str, att: &str) -> String {
        match att {
            "Arn" => self.arn_of(id),
            "ApiEndpoint" => Some(format!(
                "https://{}.execute-api.{}.amazonaws.com",
                id.to_ascii_lowercase(),
                self.env.region
            )),
            "QueueName" => self.prop_str(id, "QueueName"),
            "KeyId" => Some(sample_id(id)),
            _ => None,
        }
        .unwrap_or_else(|| format!("{id}.{att}"))
    }

    fn pseudo(&self, name: &str) -> Option<String> {
        Some(match name {
            "AWS::Partition" => self.env.partition.clone(),
            "AWS::AccountId" => self.env.account.clone(),
            "AWS::Region" => self.env.region.clone(),
            "AWS::URLSuffix" => "amazonaws.com".to_owned(),
            "AWS::StackName" => "stack".to_owned(),
            _ => return None,
        })
    }

    fn reference(&self, name: &str) -> Resolved {
        if name == "AWS::NoValue" {
            return None;
        }
        if let Some(p) = self.pseudo(name) {
            return Some(Json::String(p));
        }
        if let Some(v) = self.params.get(name) {
            return Some(Json::String(v.clone()));
        }
        if let Some(param) = self.json.get("Parameters").and_then(|p| p.get(name)) {
            let d = param.get("Default").cloned();
            return Some(d.unwrap_or_else(|| Json::String(format!("<{name}>"))));
        }
        Some(Json::String(
            self.ref_of(name).unwrap_or_else(|| format!("<{name}>")),
        ))
    }

    fn sub(&self, text: &str, vars: &BTreeMap<String, String>) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let var = &after[..end];
            if let Some(lit) = var.strip_prefix('!') {
                out.push_str("${");
                out.push_str(lit);
                out.push('}');
            } else if let Some(v) = vars.get(var) {
                out.push_str(v);
            } else if let Some((id, att)) = var.split_once('.') {
                out.push_str(&self.get_att(id, att));
            } else {
                match self.reference(var) {
                    Some(Json::String(s)) => out.push_str(&s),
                    Some(other) => out.push_str(&other.to_string()),
                    None => {}
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn condition(&self, name: &str) -> bool {
        let Some(c) = self.json.get("Conditions").and_then(|c| c.get(name)) else {
            return false;
        };
        self.truth(c)
    }

    fn truth(&self, v: &Json) -> bool {
        let Some((f, arg)) = v
            .as_object()
            .filter(|m| m.len() == 1)
            .and_then(|m| m.iter().next())
        else {
            return false;
        };
        let args: Vec<&Json> = arg
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        match f.as_str() {
            "Fn::Equals" if args.len() == 2 => self.resolve(args[0]) == self.resolve(args[1]),
            "Fn::Not" if args.len() == 1 => !self.truth(args[0]),
            "Fn::And" => args.iter().all(|a| self.truth(a)),
            "Fn::Or" => args.iter().any(|a| self.truth(a)),
            "Condition" => arg.as_str().is_some_and(|c| self.condition(c)),
            _ => false,
        }
    }

    /// Resolves every intrinsic function in `v`.
    pub fn resolve(&self, v: &Json) -> Resolved {
        match v {
            Json::Object(m) if m.len() == 1 => {
                let (k, arg) = m.iter().next().expect("one entry");
                match k.as_str() {
                    "Ref" => self.reference(arg.as_str().unwrap_or_default()),
                    "Fn::GetAtt" => {
                        let (id, att) = match arg {
                            Json::Array(a) if a.len() == 2 => (
                                a[0].as_str().unwrap_or_default().to_owned(),
                                a[1].as_str().unwrap_or_default().to_owned(),
                            ),
                            Json::String(s) => {
                                let (i, a) = s.split_once('.').unwrap_or((s, "Arn"));
                                (i.to_owned(), a.to_owned())
                            }
                            _ => return Some(Json::String("<GetAtt>".to_owned())),
                        };
                        Some(Json::String(self.get_att(&id, &att)))
                    }
                    "Fn::Sub" => {
                        let (text, vars) = match arg {
                            Json::String(s) => (s.as_str(), BTreeMap::new()),
                            Json::Array(a) if a.len() == 2 => {
                                let vars = a[1]
                                    .as_object()
                                    .map(|m| {
                                        m.iter()
                                            .filter_map(|(k, v)| {
                                                let r = self.resolve(v)?;
                                                Some((
                                                    k.clone(),
                                                    r.as_str().map_or_else(
                                                        || r.to_string(),
                                                        str::to_owned,
                                                    ),
                                                ))
                                            })
                                            .collect()
                                    })
                                    .unwrap_or_default();
                                (a[0].as_str().unwrap_or_default(), vars)
                            }
                            _ => return Some(Json::String("<Sub>".to_owned())),
                        };
                        Some(Json::String(self.sub(text, &vars)))
                    }
                    "Fn::If" => {
                        let a = arg.as_array()?;
                        let branch = if a
                            .first()
                            .and_then(Json::as_str)
                            .is_some_and(|c| self.condition(c))
                        {
                            a.get(1)?
                        } else {
                            a.get(2)?
                        };
                        self.resolve(branch)
                    }
                    "Fn::Join" => {
                        let a = arg.as_array()?;
                        let sep = a.first()?.as_str().unwrap_or_default();
                        let parts = self.resolve(a.get(1)?)?;
                        let parts: Vec<String> = parts
                            .as_array()
                            .map(|p| {
                                p.iter()
                                    .map(|x| {
                                        x.as_str().map_or_else(|| x.to_string(), str::to_owned)
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        Some(Json::String(parts.join(sep)))
                    }
                    _ => Some(Json::Object(
                        std::iter::once((k.clone(), self.resolve(arg).unwrap_or(Json::Null)))
                            .collect(),
                    )),
                }
            }
            Json::Object(m) => Some(Json::Object(
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), self.resolve(v)?)))
                    .collect(),
            )),
            Json::Array(a) => Some(Json::Array(
                a.iter().filter_map(|v| self.resolve(v)).collect(),
            )),
            other => Some(other.clone()),
        }
    }

    /// The logical ids a value refers to (`Ref`, `Fn::GetAtt`, `${X}` and `${X.Attr}` in `Fn::Sub`).
    pub fn references(&self, v: &Json, out: &mut BTreeSet<String>) {
        match v {
            Json::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("Ref", Json::String(s)) => {
                            out.insert(s.clone());
                        }
                        ("Fn::GetAtt", Json::Array(a)) => {
                            if let Some(s) = a.first().and_then(Json::as_str) {
                                out.insert(s.to_owned());
                            }
                        }
                        ("Fn::Sub", _) => {
                            let text = match x {
                                Json::String(s) => Some(s.as_str()),
                                Json::Array(a) => {
                                    if let Some(vars) = a.get(1) {
                                        self.references(vars, out);
                                    }
                                    a.first().and_then(Json::as_str)
                                }
                                _ => None,
                            };
                            for part in text.unwrap_or_default().split("${").skip(1) {
                                let var = part.split('}').next().unwrap_or_default();
                                let id = var.split('.').next().unwrap_or_default();
                                out.insert(id.to_owned());
                            }
                        }
                        _ => self.references(x, out),
                    }
                }
            }
            Json::Array(a) => a.iter().for_each(|x| self.references(x, out)),
            _ => {}
        }
        out.retain(|id| self.resource(id).is_some());
    }

    /// Every policy of the role with logical id `role`: inline `Policies`, `ManagedPolicyArns`
    /// that name managed policies of this template, `AWS::IAM::Policy` and
    /// `AWS::IAM::ManagedPolicy` resources attached to it through `Roles`, and its boundary
    /// when that is a policy of this template. Policies of other templates (AWS managed ones,
    /// org policies given as ARNs) cannot be read and are listed in the error.
    pub fn role_policies(&self, role: &str) -> Result<RolePolicies, String> {
        self.role_policies_with(role, &BTreeMap::new())
    }

    /// [`Template::role_policies`], with managed policies of other templates (ARN → name and
    /// resolved document), e.g. a boundary the org's bootstrap creates.
    pub fn role_policies_with(
        &self,
        role: &str,
        external: &BTreeMap<String, (String, Json)>,
    ) -> Result<RolePolicies, String> {
        let props = self
            .resource(role)
            .and_then(|r| r.get("Properties"))
            .ok_or_else(|| format!("`{role}` is not a resource of the template"))?;
        let props = self.resolve(props).unwrap_or(Json::Null);
        let role_name = props
            .get("RoleName")
            .and_then(Json::as_str)
            .unwrap_or(role)
            .to_owned();
        let mut out = RolePolicies {
            role: role_name.clone(),
            ..RolePolicies::default()
        };
        for p in props
            .get("Policies")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let name = p
                .get("PolicyName")
                .and_then(Json::as_str)
                .unwrap_or("inline");
            out.identity.push(Policy::parse(
                &format!("{role_name}/{name}"),
                p.get("PolicyDocument").unwrap_or(&Json::Null),
            )?);
        }
        let mut managed = self.managed_policies();
        managed.extend(external.iter().map(|(k, v)| (k.clone(), v.clone())));
        for arn in props
            .get("ManagedPolicyArns")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(Json::as_str)
        {
            let (name, doc) = managed.get(arn).ok_or_else(|| {
                format!("`{role}` attaches `{arn}`, which is not in the template")
            })?;
            out.identity.push(Policy::parse(name, doc)?);
        }
        for (id, res) in self.resources() {
            let t = res.get("Type").and_then(Json::as_str).unwrap_or_default();
            if t != "AWS::IAM::Policy" && t != "AWS::IAM::ManagedPolicy" {
                continue;
            }
            let mut refs = BTreeSet::new();
            if let Some(roles) = res.get("Properties").and_then(|p| p.get("Roles")) {
                self.references(roles, &mut refs);
            }
            if refs.contains(role) {
                let doc = self
                    .resolve(&res["Properties"]["PolicyDocument"])
                    .unwrap_or(Json::Null);
                out.identity
                    .push(Policy::parse(&format!("{role_name}/{id}"), &doc)?);
            }
        }
        if let Some(b) = props.get("PermissionsBoundary").and_then(Json::as_str) {
            let (name, doc) = managed
                .get(b)
                .ok_or_else(|| format!("the boundary `{b}` of `{role}` is not in the template"))?;
            out.boundary = Some(Policy::parse(&format!("boundary {name}"), doc)?);
        }
        Ok(out)
    }

    /// The managed policies of the template: ARN → (name, resolved document).
    pub fn managed_policies(&self) -> BTreeMap<String, (String, Json)> {
        self.resources()
            .into_iter()
            .filter(|(_, r)| {
                r.get("Type").and_then(Json::as_str) == Some("AWS::IAM::ManagedPolicy")
            })
            .filter_map(|(id, r)| {
                let arn = self.arn_of(id)?;
                let doc = self.resolve(r.get("Properties")?.get("PolicyDocument")?)?;
                let name = self
                    .prop_str(id, "ManagedPolicyName")
                    .unwrap_or_else(|| id.to_owned());
                Some((arn, (name, doc)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t() -> Json {
        json!({
            "Parameters": {"P": {"Type": "String", "Default": "none"}},
            "Conditions": {"HasP": {"Fn::Not": [{"Fn::Equals": [{"Ref": "P"}, "none"]}]}},
            "Resources": {
                "R": {"Type": "AWS::IAM::Role", "Properties": {
                    "RoleName": "pf-x",
                    "ManagedPolicyArns": [{"Ref": "M"}],
                    "PermissionsBoundary": {"Ref": "B"},
                    "Policies": [{"PolicyName": "in", "PolicyDocument": {"Statement": [
                        {"Effect": "Allow", "Action": "s3:GetObject",
                         "Resource": {"Fn::Sub": "${Bucket.Arn}/*"}}]}}]}},
                "M": {"Type": "AWS::IAM::ManagedPolicy", "Properties": {"ManagedPolicyName": "m",
                    "PolicyDocument": {"Statement": [{"Effect": "Allow", "Action": "sqs:*",
                        "Resource": {"Fn::If": ["HasP", {"Ref": "P"}, {"Fn::Sub": "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:q"}]}}]}}},
                "B": {"Type": "AWS::IAM::ManagedPolicy", "Properties": {"ManagedPolicyName": "b",
                    "PolicyDocument": {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}}},
                "Bucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "pf-bucket"}},
                "Extra": {"Type": "AWS::IAM::Policy", "Properties": {"Roles": [{"Ref": "R"}],
                    "PolicyName": "extra",
                    "PolicyDocument": {"Statement": [{"Effect": "Allow", "Action": "sns:Publish", "Resource": "*"}]}}}
            }
        })
    }

    #[test]
    fn resolves_intrinsics_and_arns() {
        let j = t();
        let tpl = Template::new(&j, Env::new("111111111111", "eu-west-1"));
        assert_eq!(
            tpl.arn_of("R").as_deref(),
            Some("arn:aws:iam::111111111111:role/pf-x")
        );
        assert_eq!(
            tpl.arn_of("Bucket").as_deref(),
            Some("arn:aws:s3:::pf-bucket")
        );
        let sub = json!({"Fn::Sub": ["a-${X}-${AWS::Region}-${!Lit}", {"X": {"Ref": "Bucket"}}]});
        assert_eq!(
            tpl.resolve(&sub),
            Some(json!("a-pf-bucket-eu-west-1-${Lit}"))
        );
        let mut refs = BTreeSet::new();
        tpl.references(&j["Resources"]["R"]["Properties"], &mut refs);
        assert_eq!(refs.into_iter().collect::<Vec<_>>(), ["B", "Bucket", "M"]);
    }

    #[test]
    fn collects_every_policy_of_a_role() {
        let j = t();
        let tpl = Template::new(&j, Env::new("111111111111", "eu-west-1"));
        let p = tpl.role_policies("R").expect("policies");
        let names: Vec<&str> = p.identity.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["pf-x/in", "m", "pf-x/Extra"]);
        assert_eq!(p.boundary.expect("boundary").name, "boundary b");
        let m = &p.identity[1].statements[0].resources.values[0];
        assert_eq!(m, "arn:aws:sqs:eu-west-1:111111111111:q");
        let s3 = &p.identity[0].statements[0].resources.values[0];
        assert_eq!(s3, "arn:aws:s3:::pf-bucket/*");
    }
}
