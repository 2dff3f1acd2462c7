"""CloudFormation resource models for moto 5.2.5: new types on moto's API backends, fixes to existing ones.

Imported by launcher.py, which lists every deviation this module patches (items 11-17). moto's model
registry is `CloudFormationModel.__subclasses__()` (lru_cached): the classes below register by
being defined before the server starts, and `install()` clears the cache. moto's model metaclass
takes the service name from the second component of `__module__`, hence the `__module__` lines.
"""

import json
import re
import threading
import uuid
from functools import lru_cache
from typing import Any

from moto.cloudformation import parsing
from moto.codebuild.exceptions import InvalidInputException
from moto.codebuild.models import codebuild_backends
from moto.codepipeline.exceptions import InvalidStructureException
from moto.codepipeline.models import CodePipeline, codepipeline_backends
from moto.core.common_models import CloudFormationModel
from moto.core.exceptions import ServiceException
from moto.iam.aws_managed_policies import aws_managed_policies_data
from moto.iam.exceptions import NotFoundException
from moto.iam.models import AWSManagedPolicy, ManagedPolicy, Role, iam_backends
from moto.kms import models as kms_models
from moto.kms.models import Key, KmsBackend
from moto.logs.models import LogGroup
from moto.s3.exceptions import BucketNotEmpty
from moto.s3.models import FakeBucket, s3_backends
from moto.s3.responses import S3Response
from moto.sns.models import Topic, sns_backends
from moto.sts.exceptions import STSClientError
from moto.sts.models import STSBackend
from moto.utilities.id_generator import TAG_KEY_CUSTOM_ID
from moto.utilities.utils import get_partition


class HandlerError(ServiceException):
    """A resource handler failure with an AWS error code."""

    def __init__(self, code: str, message: str):
        super().__init__(code, message)


def _json(document: Any) -> str:
    return document if isinstance(document, str) else json.dumps(document)


def _camel(obj: Any) -> Any:
    """CFN PascalCase -> API camelCase, recursively; `Configuration` maps keep their keys and get
    string values (the API stores them as strings: false -> "false")."""
    if isinstance(obj, list):
        return [_camel(v) for v in obj]
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            api_key = "buildspec" if key == "BuildSpec" else key[:1].lower() + key[1:]
            if key == "Configuration" and isinstance(value, dict):
                out[api_key] = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
            else:
                out[api_key] = _camel(value)
        return out
    return obj


def _tags(props: dict) -> list:
    return [{"key": t["Key"], "value": t["Value"]} for t in props.get("Tags", [])]


def _iam(account_id: str, region_name: str):
    return iam_backends[account_id][get_partition(region_name)]


def _require_service_role(account_id: str, region_name: str, role_arn: str, service: str) -> bool:
    """True when `role_arn` exists in the account and its trust policy lets `service` assume it."""
    try:
        role = _iam(account_id, region_name).get_role_by_arn(role_arn)
    except NotFoundException:
        return False
    statements = json.loads(_json(role.assume_role_policy_document)).get("Statement", [])
    for statement in statements if isinstance(statements, list) else [statements]:
        principal = statement.get("Principal") or {}
        services = principal.get("Service", []) if isinstance(principal, dict) else []
        if statement.get("Effect") == "Allow" and service in ([services] if isinstance(services, str) else services):
            return True
    return False


class _Model:
    """Common plumbing of the models below (a mixin: moto registers direct subclasses of
    CloudFormationModel only): Ref is `physical_resource_id`, update replaces."""

    ATTRIBUTES: dict = {}  # GetAtt name -> instance attribute

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr in cls.ATTRIBUTES

    def get_cfn_attribute(self, attr: str) -> Any:
        if attr in self.ATTRIBUTES:
            return getattr(self, self.ATTRIBUTES[attr])
        raise NotImplementedError(attr)

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        return cls(account_id, region_name, resource_name, cloudformation_json.get("Properties") or {})

    @classmethod
    def update_from_cloudformation_json(
        cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name
    ):
        new = cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)
        if new.physical_resource_id != original_resource.physical_resource_id:
            original_resource.delete(account_id, region_name)
        return new

    @classmethod
    def delete_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name):
        pass  # models implement delete(); moto calls it first


# ------------------------------------------------------------------------------------------ new types


class CfnCodeBuildProject(_Model, CloudFormationModel):
    """AWS::CodeBuild::Project on moto's CodeBuild backend (batch-get-projects shows it)."""

    __module__ = "moto.codebuild.cfn_ext"
    ATTRIBUTES = {"Arn": "arn"}

    def __init__(self, account_id: str, region: str, name: str, props: dict):
        self.account_id, self.region, self.name = account_id, region, props.get("Name", name)
        role = props.get("ServiceRole", "")
        if not _require_service_role(
            account_id,
            region,
            role if role.startswith("arn:") else f"arn:{get_partition(region)}:iam::{account_id}:role/{role}",
            "codebuild.amazonaws.com",
        ):
            raise InvalidInputException(f"CodeBuild is not authorized to perform: sts:AssumeRole on {role}")
        backend = codebuild_backends[account_id][region]
        backend.create_project(
            project_name=self.name,
            description=props.get("Description"),
            project_source=_camel(props.get("Source", {})),
            artifacts=_camel(props.get("Artifacts", {})),
            environment=_camel(props.get("Environment", {})),
            service_role=role,
            tags=_tags(props),
            cache=_camel(props["Cache"]) if "Cache" in props else None,
            timeout=int(props.get("TimeoutInMinutes", 60)),
            queued_timeout=int(props.get("QueuedTimeoutInMinutes", 480)),
            source_version=props.get("SourceVersion"),
            logs_config=_camel(props["LogsConfig"]) if "LogsConfig" in props else None,
            vpc_config=_camel(props["VpcConfig"]) if "VpcConfig" in props else None,
        )
        metadata = backend.codebuild_projects[self.name].project_metadata
        for key in ("EncryptionKey", "ConcurrentBuildLimit", "SecondarySources", "SecondaryArtifacts"):
            if key in props:
                metadata[key[:1].lower() + key[1:]] = _camel(props[key])
        self.arn = backend.codebuild_projects[self.name].arn

    @staticmethod
    def cloudformation_name_type() -> str:
        return "Name"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::CodeBuild::Project"

    @property
    def physical_resource_id(self) -> str:
        return self.name

    @classmethod
    def update_from_cloudformation_json(
        cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name
    ):
        original_resource.delete(account_id, region_name)  # same name: create after delete
        return cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)

    def delete(self, account_id: str, region_name: str) -> None:
        codebuild_backends[account_id][region_name].delete_project(self.name)


class CfnCodePipeline(_Model, CloudFormationModel):
    """AWS::CodePipeline::Pipeline on moto's CodePipeline backend (get-pipeline shows it)."""

    __module__ = "moto.codepipeline.cfn_ext"
    ATTRIBUTES = {"Version": "version"}
    NOT_IN_API = ("Tags", "RestartExecutionOnUpdate", "DisableInboundStageTransitions", "Name")

    def __init__(self, account_id: str, region: str, name: str, props: dict):
        self.account_id, self.region, self.name = account_id, region, props.get("Name", name)
        pipeline = self._declaration(account_id, region, props)
        backend = codepipeline_backends[account_id][region]
        if self.name in backend.pipelines:
            raise InvalidStructureException(
                f"A pipeline with the name '{self.name}' already exists in account '{account_id}'"
            )
        backend.pipelines[self.name] = CodePipeline(account_id, region, pipeline)
        backend.pipelines[self.name].tags.update({t["key"]: t["value"] for t in _tags(props)})

    def _declaration(self, account_id: str, region: str, props: dict) -> dict:
        pipeline = _camel({k: v for k, v in props.items() if k not in self.NOT_IN_API})
        pipeline["name"] = self.name
        # CloudFormation lists ArtifactStores as [{Region, ArtifactStore}]; the API (GetPipeline)
        # has a map region -> store, which SDKs parse strictly.
        stores = pipeline.get("artifactStores")
        if isinstance(stores, list):
            pipeline["artifactStores"] = {s["region"]: s["artifactStore"] for s in stores}
        if not _require_service_role(account_id, region, pipeline.get("roleArn", ""), "codepipeline.amazonaws.com"):
            raise InvalidStructureException(
                f"CodePipeline is not authorized to perform AssumeRole on role {pipeline.get('roleArn')}"
            )
        if len(pipeline.get("stages", [])) < 2:
            raise InvalidStructureException(
                f"Pipeline has only {len(pipeline.get('stages', []))} stage(s). "
                "There should be a minimum of 2 stages in a pipeline"
            )
        return pipeline

    @property
    def version(self) -> str:
        return str(codepipeline_backends[self.account_id][self.region].pipelines[self.name].pipeline["version"])

    @staticmethod
    def cloudformation_name_type() -> str:
        return "Name"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::CodePipeline::Pipeline"

    @property
    def physical_resource_id(self) -> str:
        return self.name

    @classmethod
    def update_from_cloudformation_json(
        cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name
    ):
        props = cloudformation_json.get("Properties") or {}
        if props.get("Name", original_resource.name) != original_resource.name:
            return super().update_from_cloudformation_json(
                original_resource, new_resource_name, cloudformation_json, account_id, region_name
            )
        pipeline = original_resource._declaration(account_id, region_name, props)
        codepipeline_backends[account_id][region_name].update_pipeline(pipeline)  # version + 1
        return original_resource

    def delete(self, account_id: str, region_name: str) -> None:
        codepipeline_backends[account_id][region_name].delete_pipeline(self.name)


class CfnBucketPolicy(_Model, CloudFormationModel):
    """AWS::S3::BucketPolicy (get-bucket-policy shows it)."""

    __module__ = "moto.s3.cfn_ext"

    def __init__(self, account_id: str, region: str, name: str, props: dict):
        self.account_id, self.region, self.bucket = account_id, region, props["Bucket"]
        s3_backends[account_id][get_partition(region)].put_bucket_policy(
            self.bucket, _json(props["PolicyDocument"]).encode()
        )

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::S3::BucketPolicy"

    @property
    def physical_resource_id(self) -> str:
        return self.bucket

    def delete(self, account_id: str, region_name: str) -> None:
        try:
            s3_backends[account_id][get_partition(region_name)].delete_bucket_policy(self.bucket)
        except Exception:
            pass  # the bucket is already gone


class CfnNotificationRule(_Model, CloudFormationModel):
    """AWS::CodeStarNotifications::NotificationRule: validated and kept here (moto has no such API)."""

    __module__ = "moto.codestar.cfn_ext"
    ATTRIBUTES = {"Arn": "arn"}
    RULES: dict = {}  # ARN -> properties

    def __init__(self, account_id: str, region: str, name: str, props: dict):
        self.name = props.get("Name", name)
        problems = []
        if not 1 <= len(self.name) <= 64:
            problems.append("Name must be 1 to 64 characters")
        if props.get("DetailType") not in ("BASIC", "FULL"):
            problems.append("DetailType must be BASIC or FULL")
        if not props.get("EventTypeIds"):
            problems.append("EventTypeIds must not be empty")
        if not str(props.get("Resource", "")).startswith("arn:"):
            problems.append("Resource must be an ARN")
        if not props.get("Targets"):
            problems.append("Targets must not be empty")
        for target in props.get("Targets", []):
            address = target.get("TargetAddress", "")
            if target.get("TargetType") == "SNS":
                parts = address.split(":")
                if len(parts) < 6 or address not in sns_backends[parts[4]][parts[3]].topics:
                    problems.append(f"SNS topic {address} does not exist")
        if problems:
            raise HandlerError("ValidationException", "; ".join(problems))
        partition = get_partition(region)
        self.arn = f"arn:{partition}:codestar-notifications:{region}:{account_id}:notificationrule/{uuid.uuid4().hex}"
        CfnNotificationRule.RULES[self.arn] = props

    @staticmethod
    def cloudformation_name_type() -> str:
        return "Name"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::CodeStarNotifications::NotificationRule"

    @property
    def physical_resource_id(self) -> str:
        return self.arn

    @classmethod
    def update_from_cloudformation_json(
        cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name
    ):
        new = cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)
        CfnNotificationRule.RULES.pop(new.arn)
        new.arn = original_resource.arn  # updated in place: same ARN
        CfnNotificationRule.RULES[new.arn] = cloudformation_json.get("Properties") or {}
        return new

    def delete(self, account_id: str, region_name: str) -> None:
        CfnNotificationRule.RULES.pop(self.arn, None)


class CfnReportGroup(_Model, CloudFormationModel):
    """AWS::CodeBuild::ReportGroup: validated and kept here (moto's CodeBuild has no report groups)."""

    __module__ = "moto.codebuild.cfn_ext"
    ATTRIBUTES = {"Arn": "arn", "Name": "name"}
    GROUPS: dict = {}  # ARN -> properties

    def __init__(self, account_id: str, region: str, name: str, props: dict):
        self.name = props.get("Name", name)
        export = props.get("ExportConfig") or {}
        problems = []
        if not 2 <= len(self.name) <= 128:
            problems.append("Name must be 2 to 128 characters")
        if props.get("Type") not in ("TEST", "CODE_COVERAGE"):
            problems.append("Type must be TEST or CODE_COVERAGE")
        if export.get("ExportConfigType") not in ("S3", "NO_EXPORT"):
            problems.append("ExportConfig.ExportConfigType must be S3 or NO_EXPORT")
        if export.get("ExportConfigType") == "S3" and not (export.get("S3Destination") or {}).get("Bucket"):
            problems.append("ExportConfig.S3Destination.Bucket is required for S3 exports")
        if problems:
            raise InvalidInputException("; ".join(problems))
        self.arn = f"arn:{get_partition(region)}:codebuild:{region}:{account_id}:report-group/{self.name}"
        if self.arn in CfnReportGroup.GROUPS:
            raise HandlerError("ResourceAlreadyExistsException", f"Report group {self.arn} already exists")
        CfnReportGroup.GROUPS[self.arn] = props

    @staticmethod
    def cloudformation_name_type() -> str:
        return "Name"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::CodeBuild::ReportGroup"

    @property
    def physical_resource_id(self) -> str:
        return self.arn

    @classmethod
    def update_from_cloudformation_json(
        cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name
    ):
        original_resource.delete(account_id, region_name)
        return cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)

    def delete(self, account_id: str, region_name: str) -> None:
        CfnReportGroup.GROUPS.pop(self.arn, None)


class CfnSnsSubscription(_Model, CloudFormationModel):
    """AWS::SNS::Subscription (list-subscriptions-by-topic shows it)."""

    __module__ = "moto.sns.cfn_ext"

    def __init__(self, account_id: str, region: str, name: str, props: dict):
        topic_arn = props["TopicArn"]
        self.region = topic_arn.split(":")[3]
        backend = sns_backends[account_id][self.region]
        subscription = backend.subscribe(topic_arn, props.get("Endpoint", ""), props["Protocol"])
        for attribute in ("FilterPolicy", "RawMessageDelivery", "RedrivePolicy", "FilterPolicyScope"):
            if attribute in props:
                value = props[attribute]
                subscription.attributes[attribute] = (
                    _json(value)
                    if isinstance(value, dict)
                    else str(value).lower() if isinstance(value, bool) else value
                )
        self.arn = subscription.arn

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::SNS::Subscription"

    @property
    def physical_resource_id(self) -> str:
        return self.arn

    def delete(self, account_id: str, region_name: str) -> None:
        sns_backends[account_id][self.region].unsubscribe(self.arn)


class CfnSnsTopicPolicy(_Model, CloudFormationModel):
    """AWS::SNS::TopicPolicy (get-topic-attributes shows the Policy)."""

    __module__ = "moto.sns.cfn_ext"

    def __init__(self, account_id: str, region: str, name: str, props: dict):
        self.id = name
        self.topics = list(props["Topics"])
        for arn in self.topics:
            sns_backends[account_id][arn.split(":")[3]].get_topic(arn).policy = _json(props["PolicyDocument"])

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::SNS::TopicPolicy"

    @property
    def physical_resource_id(self) -> str:
        return self.id

    @classmethod
    def update_from_cloudformation_json(
        cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name
    ):
        original_resource.delete(account_id, region_name)
        return cls.create_from_cloudformation_json(original_resource.id, cloudformation_json, account_id, region_name)

    def delete(self, account_id: str, region_name: str) -> None:
        for arn in self.topics:
            parts = arn.split(":")
            topic = sns_backends[account_id][parts[3]].topics.get(arn)
            if topic is not None:  # back to the default policy
                topic._policy_json = topic._create_default_topic_policy(parts[3], parts[4], parts[5])


# ---------------------------------------------------------------------------------- IAM fixes


@lru_cache(maxsize=1)
def _aws_managed_policies() -> dict:
    return json.loads(aws_managed_policies_data)


def _policy(iam, arn: str):
    """The managed policy `arn`, loading an AWS managed one on first use (moto loads none by default)."""
    if arn in iam.managed_policies:
        return iam.managed_policies[arn]
    name = arn.rsplit("/", 1)[-1]
    data = _aws_managed_policies().get(name)
    if data is not None and ":iam::aws:policy/" in arn:
        policy = AWSManagedPolicy.from_data(name, iam.account_id, iam.region_name, data)
        if policy.arn == arn:
            iam.managed_policies[arn] = policy
            return policy
    raise NotFoundException(f"Policy {arn} does not exist or is not attachable.")


def _sync_managed(iam, role: Role, wanted: list) -> None:
    """Attach/detach the role's ManagedPolicyArns (only those the template manages)."""
    previous = getattr(role, "_lx_managed", set())
    for arn in wanted:
        _policy(iam, arn)
    for arn in previous - set(wanted):
        if arn in role.managed_policies:
            iam.detach_role_policy(arn, role.name)
    for arn in wanted:
        if arn not in role.managed_policies:
            iam.attach_role_policy(arn, role.name)
    role._lx_managed = set(wanted)


def _sync_inline(role: Role, policies: list) -> None:
    """Put/delete the role's `Policies` (not the AWS::IAM::Policy resources attached to it)."""
    wanted = {p["PolicyName"]: _json(p["PolicyDocument"]) for p in policies}
    for name in getattr(role, "_lx_inline", set()) - set(wanted):
        role.policies.pop(name, None)
    for name, document in wanted.items():
        role.put_policy(name, document)
    role._lx_inline = set(wanted)


_orig_role_create = Role.create_from_cloudformation_json.__func__
_orig_role_delete = Role.delete_from_cloudformation_json.__func__


def _role_create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
    props = cloudformation_json["Properties"]
    iam = _iam(account_id, region_name)
    for arn in props.get("ManagedPolicyArns", []) + (
        [props["PermissionsBoundary"]] if props.get("PermissionsBoundary") else []
    ):
        _policy(iam, arn)  # fail before creating anything, as AWS does for a missing policy
    role = _orig_role_create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
    role._lx_inline = {p["PolicyName"] for p in props.get("Policies", [])}
    _sync_managed(iam, role, props.get("ManagedPolicyArns", []))
    return role


def _role_update(cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name):
    props = cloudformation_json["Properties"]
    if (
        props.get("RoleName", original_resource.name) != original_resource.name
        or props.get("Path", "/") != original_resource.path
    ):
        new = cls.create_from_cloudformation_json(
            props.get("RoleName", new_resource_name), cloudformation_json, account_id, region_name
        )
        cls.delete_from_cloudformation_json(original_resource.name, cloudformation_json, account_id, region_name)
        return new
    iam = _iam(account_id, region_name)
    role = original_resource
    iam.update_assume_role_policy(role.name, _json(props["AssumeRolePolicyDocument"]))
    role.description = props.get("Description", "")
    role.max_session_duration = props.get("MaxSessionDuration", 3600)
    if props.get("PermissionsBoundary"):
        _policy(iam, props["PermissionsBoundary"])
    role.permissions_boundary_arn = props.get("PermissionsBoundary") or None
    _sync_inline(role, props.get("Policies", []))
    _sync_managed(iam, role, props.get("ManagedPolicyArns", []))
    return role


def _role_delete(cls, resource_name, cloudformation_json, account_id, region_name):
    iam = _iam(account_id, region_name)
    for role in list(iam.roles.values()):
        if role.name == resource_name:
            _sync_managed(iam, role, [])
    _orig_role_delete(cls, resource_name, cloudformation_json, account_id, region_name)


_orig_policy_create = ManagedPolicy.create_from_cloudformation_json.__func__
ATTACHMENTS = {
    "Roles": ("attach_role_policy", "detach_role_policy"),
    "Users": ("attach_user_policy", "detach_user_policy"),
    "Groups": ("attach_group_policy", "detach_group_policy"),
}


def _policy_create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
    policy = _orig_policy_create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
    props = cloudformation_json.get("Properties", {})
    policy._lx_attached = {kind: set(props.get(kind, [])) for kind in ATTACHMENTS}
    return policy


def _policy_update(cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name):
    props = cloudformation_json.get("Properties", {})
    policy = original_resource
    if props.get("ManagedPolicyName", policy.name) != policy.name or (props.get("Path") or "/") != policy.path:
        new = cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)
        cls.delete_from_cloudformation_json(policy.arn, cloudformation_json, account_id, region_name)
        return new
    iam = _iam(account_id, region_name)
    document = _json(props.get("PolicyDocument"))
    if document != next(v.document for v in policy.versions if v.is_default):
        for version in [v for v in policy.versions if not v.is_default][: max(0, len(policy.versions) - 4)]:
            iam.delete_policy_version(policy.arn, version.version_id)
        iam.create_policy_version(policy.arn, document, set_as_default=True)
    policy.description = props.get("Description") or ""
    previous = getattr(policy, "_lx_attached", {})
    for kind, (attach, detach) in ATTACHMENTS.items():
        wanted = set(props.get(kind, []))
        for name in previous.get(kind, set()) - wanted:
            getattr(iam, detach)(policy.arn, name)
        for name in wanted - previous.get(kind, set()):
            getattr(iam, attach)(policy.arn, name)
    policy._lx_attached = {kind: set(props.get(kind, [])) for kind in ATTACHMENTS}
    return policy


def _policy_delete(cls, resource_name, cloudformation_json, account_id, region_name):
    iam = _iam(account_id, region_name)
    policy = iam.managed_policies.get(resource_name)  # physical id: the ARN
    if policy is None:
        return
    for entity in list(iam.roles.values()) + list(iam.users.values()) + list(iam.groups.values()):
        if policy.arn in entity.managed_policies:
            policy.detach_from(entity)
    iam.delete_policy(policy.arn)


# ------------------------------------------------------------------------------ KMS, S3, SNS fixes

_orig_key_create = Key.create_from_cloudformation_json.__func__


def _key_create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
    props = cloudformation_json["Properties"]
    props["Tags"] = [{"TagKey": t["Key"], "TagValue": t["Value"]} for t in props.get("Tags", [])]  # moto: KMS API form
    key = _orig_key_create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
    key.policy = _json(key.policy)  # as PutKeyPolicy stores it
    return key


def _key_update(cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name):
    props = cloudformation_json["Properties"]
    key = original_resource
    key.policy = _json(props["KeyPolicy"])
    key.description = props.get("Description") or ""
    key.key_rotation_status = props.get("EnableKeyRotation", False)
    key.enabled = props.get("Enabled", True)
    key.key_state = "Enabled" if key.enabled else "Disabled"
    return key


def _bucket_extras(bucket: FakeBucket, props: dict) -> FakeBucket:
    backend = s3_backends[bucket.account_id][get_partition(bucket.region_name)]
    if "VersioningConfiguration" in props:
        backend.put_bucket_versioning(bucket.name, props["VersioningConfiguration"]["Status"])
    if "PublicAccessBlockConfiguration" in props:
        backend.put_public_access_block(bucket.name, props["PublicAccessBlockConfiguration"])
    else:
        bucket.public_access_block = None
    eventbridge = props.get("NotificationConfiguration", {}).get("EventBridgeConfiguration", {})
    if eventbridge.get("EventBridgeEnabled") in (True, "true"):
        backend.put_bucket_notification_configuration(bucket.name, {"EventBridgeConfiguration": {}})
    return bucket


_orig_bucket_create = FakeBucket.create_from_cloudformation_json.__func__
_orig_bucket_update = FakeBucket.update_from_cloudformation_json.__func__


def _bucket_create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
    bucket = _orig_bucket_create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
    return _bucket_extras(bucket, cloudformation_json.get("Properties", {}))


def _bucket_update(cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name):
    props = cloudformation_json.get("Properties", {})
    if "Tags" in props:
        props.setdefault("BucketName", original_resource.name)  # moto reads it to tag the bucket
    bucket = _orig_bucket_update(
        cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name
    )
    return _bucket_extras(bucket, props)


def _bucket_delete(cls, resource_name, cloudformation_json, account_id, region_name):
    backend = s3_backends[account_id][get_partition(region_name)]
    if resource_name in backend.buckets and backend.buckets[resource_name].keys:
        raise BucketNotEmpty(resource_name)
    backend.delete_bucket(resource_name)


_orig_topic_update = Topic.update_from_cloudformation_json.__func__


def _topic_update(cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name):
    props = cloudformation_json["Properties"]
    if props.get("TopicName", original_resource.name) != original_resource.name:
        return _orig_topic_update(
            cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name
        )
    original_resource.display_name = props.get("DisplayName", "")
    original_resource.kms_master_key_id = props.get("KmsMasterKeyId", "")
    for subscription in props.get("Subscription", []):
        sns_backends[account_id][region_name].subscribe(
            original_resource.arn, subscription["Endpoint"], subscription["Protocol"]
        )
    return original_resource


_orig_log_group_create = LogGroup.create_from_cloudformation_json.__func__


def _log_group_create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
    group = _orig_log_group_create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
    group.kms_key_id = cloudformation_json["Properties"].get("KmsKeyId")  # moto reads `kmsKeyId` only
    return group


def _log_group_update(cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name):
    props = cloudformation_json["Properties"]
    if props.get("LogGroupName", original_resource.name) != original_resource.name:
        new = cls.create_from_cloudformation_json(props["LogGroupName"], cloudformation_json, account_id, region_name)
        original_resource.delete(account_id, region_name)
        return new
    original_resource.retention_in_days = props.get("RetentionInDays")
    original_resource.kms_key_id = props.get("KmsKeyId")
    return original_resource


# ------------------------------------------------------------------------------------ S3 API fix

_orig_get_bucket_notification = S3Response.get_bucket_notification


def _get_bucket_versioning(self: S3Response):
    """S3 answers GetBucketVersioning with a VersioningConfiguration document (moto: an element
    named after the action, which SDKs reject)."""
    status = self.backend.get_bucket_versioning(self.bucket_name)
    inner = f"<Status>{status}</Status>" if status else ""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{inner}</VersioningConfiguration>'
    )
    return 200, {"Content-Type": "application/xml"}, body


def _get_bucket_notification(self: S3Response):
    """moto stores EventBridgeConfiguration but leaves it out of GetBucketNotificationConfiguration."""
    status, headers, body = _orig_get_bucket_notification(self)
    config = self.backend.get_bucket_notification_configuration(self.bucket_name)
    if config is not None and config.event_bridge is not None:
        text = body.decode() if isinstance(body, bytes) else body
        if "</NotificationConfiguration>" in text:
            text = text.replace(
                "</NotificationConfiguration>", "<EventBridgeConfiguration/></NotificationConfiguration>"
            )
        else:
            text = re.sub(
                r"<NotificationConfiguration([^>]*)/>",
                r"<NotificationConfiguration\1><EventBridgeConfiguration/></NotificationConfiguration>",
                text,
            )
        body = text.encode() if isinstance(body, bytes) else text
        headers.pop("Content-Length", None)
    return status, headers, body


_request = threading.local()  # .headers: headers of the S3 object request being served
_orig_key_response = S3Response._key_response


ACCESS_DENIED = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    "<Message>Access Denied</Message><RequestId>local</RequestId><HostId>local</HostId></Error>"
)


def _key_response(self: S3Response, request, full_url):
    """moto's object request handler, with the request headers at hand for the bucket policy and an
    AccessDenied error body on a 403 from the bucket policy (moto: empty body)."""
    _request.headers = request.headers
    try:
        status, headers, body = _orig_key_response(self, request, full_url)
    finally:
        _request.headers = None
    if status == 403 and not body and request.method != "HEAD":
        headers = dict(headers, **{"Content-Type": "application/xml"})
        body = ACCESS_DENIED
    return status, headers, body


def _condition_holds(operator: str, expected: dict, context: dict) -> bool:
    """One IAM condition operator block; unknown operators do not hold."""
    if_exists = operator.endswith("IfExists")
    base = operator[: -len("IfExists")] if if_exists else operator
    for key, wanted in expected.items():
        wanted = [
            str(w).lower() if isinstance(w, bool) else str(w)
            for w in (wanted if isinstance(wanted, list) else [wanted])
        ]
        actual = context.get(key.lower())
        if base == "Null":
            if (actual is None) != (wanted[0].lower() == "true"):
                return False
            continue
        if actual is None:
            if if_exists or base.startswith(("StringNot", "ArnNot")):
                continue
            return False
        like = [re.escape(w).replace(r"\*", ".*").replace(r"\?", ".") for w in wanted]
        tests = {
            "StringEquals": actual in wanted,
            "StringNotEquals": actual not in wanted,
            "StringEqualsIgnoreCase": actual.lower() in [w.lower() for w in wanted],
            "StringLike": any(re.fullmatch(p, actual) for p in like),
            "ArnLike": any(re.fullmatch(p, actual) for p in like),
            "StringNotLike": not any(re.fullmatch(p, actual) for p in like),
            "ArnNotLike": not any(re.fullmatch(p, actual) for p in like),
            "ArnEquals": actual in wanted,
            "ArnNotEquals": actual not in wanted,
            "Bool": actual.lower() in [w.lower() for w in wanted],
        }
        if not tests.get(base, False):
            return False
    return True


def _bucket_permission(self: FakeBucket, action: str, resource: str):
    """Bucket policy for an object request: a statement for Principal "*" applies only when its
    Condition holds (moto denied the request whenever it could not evaluate a Condition, whatever the
    Effect). Context: aws:SecureTransport is true (AWS only takes TLS; this endpoint is plain HTTP for
    convenience) and the request's x-amz-server-side-encryption* headers."""
    from moto.iam.access_control import PermissionResult

    if self.policy is None:
        return PermissionResult.NEUTRAL
    headers = getattr(_request, "headers", None) or {}
    context = {"aws:securetransport": "true"}
    for header in ("x-amz-server-side-encryption", "x-amz-server-side-encryption-aws-kms-key-id"):
        if headers.get(header) is not None:
            context[f"s3:{header}"] = headers.get(header)
    statements = json.loads(self.policy.decode()).get("Statement", [])
    result = PermissionResult.NEUTRAL
    for statement in statements if isinstance(statements, list) else [statements]:
        if statement.get("Principal") not in ("*", {"AWS": "*"}):
            continue  # as moto: only statements for everyone are evaluated
        actions = statement.get("Action", [])
        resources = statement.get("Resource", [])
        if not any(
            re.fullmatch(re.escape(a).replace(r"\*", ".*"), action, re.I)
            for a in (actions if isinstance(actions, list) else [actions])
        ):
            continue
        if not any(
            re.fullmatch(re.escape(r).replace(r"\*", ".*"), resource)
            for r in (resources if isinstance(resources, list) else [resources])
        ):
            continue
        if not all(_condition_holds(op, block, context) for op, block in (statement.get("Condition") or {}).items()):
            continue
        if statement.get("Effect") == "Deny":
            return PermissionResult.DENIED
        result = PermissionResult.PERMITTED
    return result


# ------------------------------------------------------------------------------------ KMS API fix

_key_ids = threading.local()  # .next: the id the key being created gets
_orig_generate_key_id = kms_models.generate_key_id
_orig_create_key = KmsBackend.create_key


def _generate_key_id(multi_region: bool = False) -> str:
    custom, _key_ids.next = getattr(_key_ids, "next", None), None
    return custom or _orig_generate_key_id(multi_region)


def _create_key(self: KmsBackend, policy, key_usage, key_spec, description, tags, multi_region=False, origin="AWS_KMS"):
    """CreateKey with a tag `_custom_id_` (moto's convention for chosen ids) creates the key with that id."""
    tags = list(tags or [])
    custom = [t["TagValue"] for t in tags if t.get("TagKey") == TAG_KEY_CUSTOM_ID]
    if custom:
        if custom[0] in self.keys:
            raise HandlerError("AlreadyExistsException", f"Key {custom[0]} already exists")
        _key_ids.next = custom[0]
        tags = [t for t in tags if t.get("TagKey") != TAG_KEY_CUSTOM_ID]
    try:
        return _orig_create_key(self, policy, key_usage, key_spec, description, tags, multi_region, origin)
    finally:
        _key_ids.next = None


# ------------------------------------------------------------------------------------------- STS

_orig_assume_role = STSBackend.assume_role


def _assume_role(self: STSBackend, region_name, role_session_name, role_arn, policy, duration, external_id):
    """AssumeRole only for a role that exists and trusts the caller's account (moto: any ARN)."""
    parts = (role_arn or "").split(":")
    denied = STSClientError(
        "AccessDenied",
        f"User: arn:{get_partition(region_name)}:iam::{self.account_id}:root is not "
        f"authorized to perform: sts:AssumeRole on resource: {role_arn}",
    )
    if len(parts) < 6:
        raise denied
    try:
        role = iam_backends[parts[4]][get_partition(region_name)].get_role_by_arn(role_arn)
    except NotFoundException:
        raise denied
    statements = json.loads(_json(role.assume_role_policy_document)).get("Statement", [])
    for statement in statements if isinstance(statements, list) else [statements]:
        actions = statement.get("Action", [])
        principal = statement.get("Principal", {})
        aws = principal.get("AWS", []) if isinstance(principal, dict) else [principal]
        aws = [aws] if isinstance(aws, str) else aws
        if (
            statement.get("Effect") == "Allow"
            and set([actions] if isinstance(actions, str) else actions) & {"sts:AssumeRole", "sts:*", "*"}
            and any(p == "*" or p == self.account_id or f":{self.account_id}:" in p for p in aws)
        ):
            return _orig_assume_role(self, region_name, role_session_name, role_arn, policy, duration, external_id)
    raise denied


def _assume_role_unchecked(self: STSBackend, **kwargs):
    return _orig_assume_role(self, **kwargs)  # web identity and SAML keep moto's behaviour


def install() -> None:
    Role.create_from_cloudformation_json = classmethod(_role_create)
    Role.update_from_cloudformation_json = classmethod(_role_update)
    Role.delete_from_cloudformation_json = classmethod(_role_delete)
    ManagedPolicy.create_from_cloudformation_json = classmethod(_policy_create)
    ManagedPolicy.update_from_cloudformation_json = classmethod(_policy_update)
    ManagedPolicy.delete_from_cloudformation_json = classmethod(_policy_delete)
    Key.create_from_cloudformation_json = classmethod(_key_create)
    Key.update_from_cloudformation_json = classmethod(_key_update)
    FakeBucket.create_from_cloudformation_json = classmethod(_bucket_create)
    FakeBucket.update_from_cloudformation_json = classmethod(_bucket_update)
    FakeBucket.delete_from_cloudformation_json = classmethod(_bucket_delete)
    Topic.update_from_cloudformation_json = classmethod(_topic_update)
    LogGroup.create_from_cloudformation_json = classmethod(_log_group_create)
    LogGroup.update_from_cloudformation_json = classmethod(_log_group_update)
    S3Response.get_bucket_notification = _get_bucket_notification
    S3Response.get_bucket_versioning = _get_bucket_versioning
    S3Response._key_response = _key_response
    FakeBucket.get_permission = _bucket_permission
    kms_models.generate_key_id = _generate_key_id
    KmsBackend.create_key = _create_key
    STSBackend.assume_role = _assume_role
    STSBackend.assume_role_with_web_identity = _assume_role_unchecked
    parsing.get_model_list.cache_clear()
    parsing.get_model_map.cache_clear()
    parsing.get_name_type_map.cache_clear()
