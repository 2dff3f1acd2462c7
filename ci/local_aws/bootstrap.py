"""Creates on a fresh local AWS server what the organisation policy (org.yaml) expects to exist.

Used by `ci/local-aws start`:

    python ci/local_aws/bootstrap.py info  --org FILE
        prints "TOOLING_ACCOUNT REGION" (for the launcher's --default-account and the exports)
    python ci/local_aws/bootstrap.py setup --endpoint URL --org FILE [--pipeline FILE] [--accounts A,B] [--bootstrap DIR]
        tooling account: KMS key `source.kms_key` (an alias, or a key ARN/id: the key gets that id),
        source bucket `source.bucket` (SSE-KMS with that key, versioning, EventBridge notifications,
        public access blocked); in every target account (--accounts, else the accounts of the
        pipeline manifest's environments): the role
        `deploy.bootstrap_role`, trusted by the tooling account, and the customer managed policies
        named in `deploy.execution_policy_arns` and `deploy.permissions_boundary` (stand-ins), the
        CloudFormation execution role and boundary of `pipeforge bootstrap`, and the recovery roles
        of `pipeforge recover`. In every other tooling account (`tooling_accounts`): its key and
        bucket, the execution role and boundary, and the bootstrap role's deploy policy of
        `tooling-<account>.json` (stand-ins; with --bootstrap DIR, that stack itself, deployed from
        DIR/tooling-<account>.json through CloudFormation). Then checks that AssumeRole into each
        works. Idempotent.

Errors go to stderr as "local-aws: error: MESSAGE" and "  help: HINT", with exit code 2.
"""

import argparse
import json
import os
import re
import sys

import yaml


class Failure(Exception):
    """A one-line error with a hint."""

    def __init__(self, message: str, hint: str):
        super().__init__(f"{message}\n  help: {hint}")


def _get(doc: dict, path: str, file: str):
    node = doc
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            raise Failure(f"`{path}` is missing in {file}", f"set `{path}` in {file} (see examples/org.yaml)")
        node = node[key]
    return node


def _load(file: str) -> dict:
    try:
        with open(file) as handle:
            doc = yaml.safe_load(handle)
    except OSError as error:
        raise Failure(f"cannot read {file}: {error.strerror}", "pass an existing file")
    except yaml.YAMLError as error:
        raise Failure(f"{file} is not valid YAML: {str(error).splitlines()[0]}", "fix the file")
    if not isinstance(doc, dict):
        raise Failure(f"{file} is not a YAML mapping", "fix the file")
    return doc


def org_settings(file: str) -> dict:
    doc = _load(file)
    settings = {
        "account": str(_get(doc, "tooling.account", file)),
        "region": str(_get(doc, "tooling.region", file)),
        "bucket": str(_get(doc, "source.bucket", file)),
        "kms_key": str(_get(doc, "source.kms_key", file)),
        "role": str(_get(doc, "deploy.bootstrap_role", file)),
        # Customer managed policies the org expects in every target account (names or ARNs).
        "policies": [str(p) for p in ((doc.get("deploy") or {}).get("execution_policy_arns") or [])],
        "boundary": (doc.get("deploy") or {}).get("permissions_boundary"),
        "prefix": str((doc.get("naming") or {}).get("prefix") or "pf"),
    }
    if not re.fullmatch(r"\d{12}", settings["account"]):
        raise Failure(f"`tooling.account` in {file} is not a 12-digit account id", 'quote it: account: "123456789012"')
    settings["alias"], settings["key_id"] = _key_reference(settings, file)
    # More tooling accounts (`tooling_accounts`): each gets its own key, bucket and roles.
    settings["more"] = []
    for i, extra in enumerate(doc.get("tooling_accounts") or []):
        more = dict(settings)
        for field in ("account", "region", "bucket", "kms_key"):
            if field not in extra:
                raise Failure(f"`tooling_accounts[{i}].{field}` is missing in {file}", "see README \"Running at scale\"")
            more[field] = str(extra[field])
        more["alias"], more["key_id"] = _key_reference(more, file)
        more["more"] = []
        settings["more"].append(more)
    return settings


def _key_reference(settings: dict, file: str) -> tuple:
    """(alias name or None, key id or None) of `source.kms_key`: an alias, alias ARN, key ARN or key id."""
    reference = settings["kms_key"]
    match = re.fullmatch(r"arn:aws[\w-]*:kms:([\w-]+):(\d{12}):(alias/.+|key/.+)", reference)
    if match:
        region, account, resource = match.groups()
        if (account, region) != (settings["account"], settings["region"]):
            raise Failure(
                f"`source.kms_key` in {file} is in {account}/{region}, not in the tooling account "
                f"{settings['account']}/{settings['region']}",
                "use a key of the tooling account and region",
            )
        reference = resource
    if reference.startswith("alias/"):
        return reference, None
    key_id = reference[len("key/") :] if reference.startswith("key/") else reference
    if not re.fullmatch(r"(mrk-)?[0-9a-f-]{32,40}", key_id):
        raise Failure(
            f"`source.kms_key` in {file} is neither an alias nor a key id: {settings['kms_key']}",
            "use alias/NAME, a key ARN or a key id",
        )
    return None, key_id


def target_accounts(accounts: str, pipeline: str) -> list:
    if accounts:
        found = [a.strip() for a in accounts.split(",") if a.strip()]
    else:
        environments = _load(pipeline).get("environments") or []
        found = [str(e["account"]) for e in environments if isinstance(e, dict) and "account" in e]
    bad = [a for a in found if not re.fullmatch(r"\d{12}", a)]
    if bad:
        raise Failure(f"not a 12-digit account id: {', '.join(bad)}", "pass --accounts 111111111111,222222222222")
    return list(dict.fromkeys(found))


def _client(service: str, endpoint: str, region: str, account: str = None):
    import boto3

    client = boto3.client(
        service, endpoint_url=endpoint, region_name=region, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    if account:  # act as an administrator of that account (how the role would be bootstrapped)
        client.meta.events.register(
            "before-sign.*.*", lambda request, **_: request.headers.__setitem__("x-moto-account-id", account)
        )
    return client


def _ensure_key(kms, org: dict, accounts: list) -> str:
    for alias in kms.list_aliases()["Aliases"]:
        if org["alias"] and alias["AliasName"] == org["alias"] and alias.get("TargetKeyId"):
            return kms.describe_key(KeyId=alias["TargetKeyId"])["KeyMetadata"]["Arn"]
    if org["key_id"]:
        try:
            return kms.describe_key(KeyId=org["key_id"])["KeyMetadata"]["Arn"]
        except kms.exceptions.NotFoundException:
            pass
    statements = [
        {
            "Sid": "ToolingAccount",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{org['account']}:root"},
            "Action": "kms:*",
            "Resource": "*",
        }
    ]
    if accounts:
        statements.append(
            {
                "Sid": "TargetAccountsDecrypt",
                "Effect": "Allow",
                "Principal": {"AWS": [f"arn:aws:iam::{a}:root" for a in accounts]},
                "Action": ["kms:Decrypt", "kms:DescribeKey"],
                "Resource": "*",
            }
        )
    key = kms.create_key(
        Description="pipeforge source bundles",
        KeyUsage="ENCRYPT_DECRYPT",
        Policy=json.dumps({"Version": "2012-10-17", "Statement": statements}),
        Tags=[{"TagKey": "managed-by", "TagValue": "ci/local-aws"}]
        + ([{"TagKey": "_custom_id_", "TagValue": org["key_id"]}] if org["key_id"] else []),
    )["KeyMetadata"]
    kms.enable_key_rotation(KeyId=key["KeyId"])
    if org["alias"]:
        kms.create_alias(AliasName=org["alias"], TargetKeyId=key["KeyId"])
    return key["Arn"]


def _ensure_bucket(s3, org: dict, key_arn: str, accounts: list) -> None:
    bucket = org["bucket"]
    existing = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    if bucket not in existing:
        extra = (
            {} if org["region"] == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": org["region"]}}
        )
        s3.create_bucket(Bucket=bucket, **extra)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn},
                    "BucketKeyEnabled": True,
                }
            ]
        },
    )
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}})
    statements = [
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    ]
    if accounts:
        statements.append(
            {
                "Sid": "TargetAccountsRead",
                "Effect": "Allow",
                "Principal": {"AWS": [f"arn:aws:iam::{a}:root" for a in accounts]},
                "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                "Resource": f"arn:aws:s3:::{bucket}/*",
            }
        )
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": statements}))


def _ensure_role(iam, org: dict, key_arn: str) -> None:
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{org['account']}:root"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )
    permissions = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["cloudformation:*"], "Resource": "*"},
                {
                    "Effect": "Allow",
                    "Action": ["iam:PassRole"],
                    "Resource": "*",
                    "Condition": {"StringEquals": {"iam:PassedToService": "cloudformation.amazonaws.com"}},
                },
                {
                    "Effect": "Allow",
                    "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                    "Resource": f"arn:aws:s3:::{org['bucket']}/*",
                },
                {"Effect": "Allow", "Action": ["kms:Decrypt", "kms:DescribeKey"], "Resource": key_arn},
            ],
        }
    )
    try:
        iam.create_role(
            RoleName=org["role"],
            AssumeRolePolicyDocument=trust,
            Description="pipeforge deploys target stacks through this role",
            Tags=[{"Key": "managed-by", "Value": "ci/local-aws"}],
        )
    except iam.exceptions.EntityAlreadyExistsException:
        iam.update_assume_role_policy(RoleName=org["role"], PolicyDocument=trust)
    iam.put_role_policy(RoleName=org["role"], PolicyName="pipeforge-deploy", PolicyDocument=permissions)


# Stand-ins for the org's application policies: the local server does not enforce IAM permissions,
# but roles can only attach (or be bounded by) policies that exist, as in AWS.
APP_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Resource": "*",
            "Action": [
                "cloudformation:*",
                "s3:*",
                "sns:*",
                "sqs:*",
                "lambda:*",
                "logs:*",
                "dynamodb:*",
                "events:*",
                "ssm:GetParameter*",
            ],
        }
    ],
}
BOUNDARY_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {
            "Effect": "Deny",
            "Action": ["iam:CreateUser", "iam:CreateAccessKey", "organizations:*", "account:*"],
            "Resource": "*",
        },
    ],
}


def _customer_policy(reference: str, account: str):
    """(path, name) of a customer managed policy named by `reference` in `account`, or None when it
    is an AWS managed policy or belongs to another account."""
    match = re.fullmatch(r"arn:aws[\w-]*:iam::(\d{12}|aws):policy(/.*)?/([^/]+)", reference)
    if match:
        owner, path, name = match.groups()
        return ((path or "") + "/", name) if owner == account else None
    path, _, name = reference.rpartition("/")
    return (f"/{path}/" if path else "/", name)


def _ensure_policies(iam, org: dict, account: str) -> None:
    wanted = [(ref, APP_POLICY) for ref in org["policies"]]
    if org["boundary"]:
        wanted.append((str(org["boundary"]), BOUNDARY_POLICY))
    for reference, document in wanted:
        found = _customer_policy(reference, account)
        if found is None:
            continue
        path, name = found
        try:
            iam.create_policy(
                PolicyName=name,
                Path=path,
                PolicyDocument=json.dumps(document),
                Description="stand-in for the org policy, created by ci/local-aws",
            )
        except iam.exceptions.EntityAlreadyExistsException:
            pass


# Stand-in for the execution roles and boundaries `pipeforge bootstrap` creates: CloudFormation
# deploys pipeforge's stacks with these roles (the local server checks that a stack's role exists
# and trusts CloudFormation, as AWS does, but enforces no permissions).
EXEC_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def _ensure_execution_role(iam, name: str, boundary: str) -> None:
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "cloudformation.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ],
        }
    )
    try:
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust, Description="stand-in, created by ci/local-aws")
    except iam.exceptions.EntityAlreadyExistsException:
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=trust)
    iam.put_role_policy(RoleName=name, PolicyName="stand-in", PolicyDocument=json.dumps(EXEC_POLICY))
    try:
        iam.create_policy(PolicyName=boundary, PolicyDocument=json.dumps(EXEC_POLICY), Description="stand-in, created by ci/local-aws")
    except iam.exceptions.EntityAlreadyExistsException:
        pass


def _ensure_deployer_policy(iam, org: dict, account: str) -> None:
    """Stand-in for `ToolingAccountDeployer` of `tooling-<account>.json`: a managed policy
    `<prefix>-pipeforge-tooling-deployer` attached to the bootstrap role of another tooling account."""
    name = f"{org['prefix']}-pipeforge-tooling-deployer"
    try:
        iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(EXEC_POLICY), Description="stand-in, created by ci/local-aws")
    except iam.exceptions.EntityAlreadyExistsException:
        pass
    iam.attach_role_policy(RoleName=org["role"], PolicyArn=f"arn:aws:iam::{account}:policy/{name}")


def _ensure_recovery_roles(iam, org: dict) -> None:
    """Stand-ins for `<role>-recovery` (assumed by `pipeforge recover`, trusting the tooling account)
    and `<role>-recovery-exec` (CloudFormation deletes through it; no permissions, as in target.json)."""
    trusts = {
        f"{org['role']}-recovery": {"AWS": f"arn:aws:iam::{org['account']}:root"},
        f"{org['role']}-recovery-exec": {"Service": "cloudformation.amazonaws.com"},
    }
    for name, principal in trusts.items():
        trust = json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}],
            }
        )
        try:
            iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust, Description="stand-in, created by ci/local-aws")
        except iam.exceptions.EntityAlreadyExistsException:
            iam.update_assume_role_policy(RoleName=name, PolicyDocument=trust)


def _deploy_stack(cfn, name: str, file: str) -> None:
    """Creates stack `name` from the template `file` (once) and waits for it."""
    import time

    try:
        status = cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"]
    except cfn.exceptions.ClientError:
        status = None
    if status is None:
        with open(file) as handle:
            body = handle.read()
        cfn.create_stack(StackName=name, TemplateBody=body, Capabilities=["CAPABILITY_NAMED_IAM"])
    for _ in range(600):
        status = cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"]
        if not status.endswith("_IN_PROGRESS"):
            break
        time.sleep(0.05)
    if status not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        reasons = [
            f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', '')}"
            for e in cfn.describe_stack_events(StackName=name)["StackEvents"]
            if e["ResourceStatus"].endswith("_FAILED")
        ]
        raise Failure(f"stack `{name}` from {file} ended {status}: {'; '.join(reasons)}", "fix the template")


def setup(endpoint: str, org: dict, accounts: list, bootstrap_dir: str = "") -> None:
    sts = _client("sts", endpoint, org["region"])
    caller = sts.get_caller_identity()["Account"]
    if caller != org["account"]:
        raise Failure(
            f"the server's default account is {caller}, not tooling.account {org['account']}",
            "start the launcher with --default-account (ci/local-aws start does)",
        )
    accounts = accounts + [m["account"] for m in org["more"] if m["account"] not in accounts]
    key_arn = _ensure_key(_client("kms", endpoint, org["region"]), org, accounts)
    _ensure_bucket(_client("s3", endpoint, org["region"]), org, key_arn, accounts)
    def stack_file(more: dict) -> str:
        return f"{bootstrap_dir}/tooling-{more['account']}.json" if bootstrap_dir else ""

    for more in org["more"]:  # every other tooling account: its key, bucket and execution role
        if stack_file(more):
            continue  # its bootstrap stack, below (it attaches a policy to the bootstrap role)
        more_key = _ensure_key(_client("kms", endpoint, more["region"], more["account"]), more, accounts)
        _ensure_bucket(_client("s3", endpoint, more["region"], more["account"]), more, more_key, accounts)
        _ensure_execution_role(
            _client("iam", endpoint, more["region"], more["account"]),
            f"{org['prefix']}-pipeforge-cfn-exec",
            f"{org['prefix']}-pipeforge-roles-boundary",
        )
    for account in accounts:
        iam = _client("iam", endpoint, org["region"], account)
        _ensure_role(iam, org, key_arn)
        _ensure_policies(iam, org, account)
        _ensure_execution_role(iam, f"{org['role']}-cfn-exec", f"{org['role']}-roles-boundary")
        _ensure_recovery_roles(iam, org)
    for more in org["more"]:  # what `tooling-<account>.json` gives the bootstrap role there
        file = stack_file(more)
        if file:
            if not os.path.isfile(file):
                raise Failure(f"{file} does not exist", "run `pipeforge bootstrap --out DIR` with the same org policy")
            cfn = _client("cloudformation", endpoint, more["region"], more["account"])
            _deploy_stack(cfn, f"{org['prefix']}-pipeforge-tooling", file)
            continue
        _ensure_deployer_policy(_client("iam", endpoint, more["region"], more["account"]), org, more["account"])
    tooling_iam = _client("iam", endpoint, org["region"], org["account"])
    _ensure_execution_role(
        tooling_iam, f"{org['prefix']}-pipeforge-cfn-exec", f"{org['prefix']}-pipeforge-roles-boundary"
    )
    for account in accounts:  # the path pipeforge takes: tooling credentials -> AssumeRole
        role_arn = f"arn:aws:iam::{account}:role/{org['role']}"
        creds = sts.assume_role(RoleArn=role_arn, RoleSessionName="local-aws-check")["Credentials"]
        import boto3

        got = boto3.client(
            "sts",
            endpoint_url=endpoint,
            region_name=org["region"],
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        ).get_caller_identity()["Account"]
        if got != account:
            raise Failure(f"AssumeRole into {role_arn} gave account {got}", "report this as a bug in ci/local_aws")


def main() -> int:
    parser = argparse.ArgumentParser(description="bootstrap a local AWS server for pipeforge")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info")
    info.add_argument("--org", required=True)
    run = sub.add_parser("setup")
    run.add_argument("--org", required=True)
    run.add_argument("--endpoint", required=True)
    run.add_argument("--pipeline", default="examples/pipeline.yml")
    run.add_argument("--accounts", default="")
    run.add_argument("--bootstrap", default="")
    args = parser.parse_args()
    try:
        org = org_settings(args.org)
        if args.command == "info":
            print(org["account"], org["region"])
            return 0
        accounts = target_accounts(args.accounts, args.pipeline)
        setup(args.endpoint, org, accounts, args.bootstrap)
        print(
            f"local-aws: bucket {org['bucket']}, key {org['kms_key']}, role {org['role']} in "
            f"{', '.join(accounts) or 'no account'}",
            file=sys.stderr,
        )
        return 0
    except Failure as failure:
        print(f"local-aws: error: {failure}", file=sys.stderr)
        return 2
    except Exception as error:  # botocore errors and the like: one line, not a traceback
        print(
            f"local-aws: error: bootstrap failed: {type(error).__name__}: {error}\n"
            f"  help: see the server log in the state directory",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
