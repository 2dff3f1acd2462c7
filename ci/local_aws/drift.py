"""CloudFormation drift detection (DetectStackDrift, DescribeStackDriftDetectionStatus,
DescribeStackResourceDrifts) for the resource types pipeforge deploys that a person is likely to
edit in the console, and CodeBuild's UpdateProject (the console's project edit). moto has none of
them.

Drift is computed as AWS does, within what is emulated: each resource's template properties,
resolved against the stack's resources (Ref, GetAtt, Sub) as the engine resolved them when it
deployed, are compared with the live resource read from moto's service backend:

  AWS::IAM::Role          AssumeRolePolicyDocument, Description, MaxSessionDuration, Path,
                          PermissionsBoundary, ManagedPolicyArns and Policies (inline) that
                          the role's template lists (other resources attach policies too)
  AWS::CodeBuild::Project Description, ServiceRole, TimeoutInMinutes, QueuedTimeoutInMinutes,
                          Source (Type, BuildSpec), Environment (Type, Image, ComputeType,
                          PrivilegedMode, EnvironmentVariables)

A drift-aware change set (CreateChangeSet with DeploymentMode REVERT_DRIFT, an UPDATE) also lists
the drifted resources as Modify, even when the template is unchanged, and executing it puts their
compared properties back to the template's values before the (otherwise empty) update.

A property the template leaves out is compared with the service's default (e.g. a role's
MaxSessionDuration of 3600). A resource of any other type is NOT_CHECKED (AWS does the same for
types without drift support); a resource that no longer exists is DELETED. Detection runs
synchronously: DetectStackDrift returns an id whose status is already DETECTION_COMPLETE.
"""

import json
import uuid
from typing import Any, Optional

from moto.cloudformation import parsing
from moto.cloudformation.exceptions import ValidationError
from moto.cloudformation.models import Change
from moto.cloudformation.responses import CloudFormationResponse
from moto.codebuild.models import codebuild_backends
from moto.codebuild.responses import CodeBuildResponse
from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.iam.models import iam_backends
from moto.utilities.utils import get_partition

# detection id -> {"stack": Stack, "results": [...], "timestamp": datetime}; stack id -> last id
DETECTIONS: dict = {}
LATEST: dict = {}


def _doc(value: Any) -> Any:
    """A policy document as data, whether stored as JSON text or a dict."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _role_properties(stack, role_name: str, expected: dict) -> Optional[dict]:
    backend = iam_backends[stack.account_id][get_partition(stack.region_name)]
    role = next((r for r in backend.get_roles() if r.name == role_name), None)
    if role is None:
        return None
    return {
        "AssumeRolePolicyDocument": _doc(role.assume_role_policy_document),
        "Description": role.description or "",
        "MaxSessionDuration": int(role.max_session_duration or 3600),
        "Path": role.path or "/",
        "PermissionsBoundary": role.permissions_boundary_arn or "",
        # Other resources of a stack attach policies too (AWS::IAM::Policy, ManagedPolicy's
        # Roles): only those the role's own template lists are compared.
        "ManagedPolicyArns": sorted(a for a in role.managed_policies if a in expected["ManagedPolicyArns"]),
        "Policies": {n: _doc(d) for n, d in sorted(role.policies.items()) if n in expected["Policies"]},
    }


def _role_expected(props: dict) -> dict:
    return {
        "AssumeRolePolicyDocument": _doc(props.get("AssumeRolePolicyDocument")),
        "Description": props.get("Description") or "",
        "MaxSessionDuration": int(props.get("MaxSessionDuration", 3600)),
        "Path": props.get("Path") or "/",
        "PermissionsBoundary": props.get("PermissionsBoundary") or "",
        "ManagedPolicyArns": sorted(props.get("ManagedPolicyArns") or []),
        "Policies": {p["PolicyName"]: _doc(p["PolicyDocument"]) for p in props.get("Policies") or []},
    }


def _env_vars(items: list, name: str, value: str, kind: str) -> list:
    return sorted(
        ({"Name": v.get(name), "Value": str(v.get(value, "")), "Type": v.get(kind) or "PLAINTEXT"} for v in items or []),
        key=lambda v: v["Name"] or "",
    )


def _role_arn(stack, role: str) -> str:
    if role.startswith("arn:"):
        return role
    return f"arn:{get_partition(stack.region_name)}:iam::{stack.account_id}:role/{role}"


def _project_properties(stack, name: str, expected: dict) -> Optional[dict]:
    project = codebuild_backends[stack.account_id][stack.region_name].codebuild_projects.get(name)
    if project is None:
        return None
    m = project.project_metadata
    env, src = m.get("environment") or {}, m.get("source") or {}
    return {
        "Description": m.get("description") or "",
        "ServiceRole": _role_arn(stack, m.get("serviceRole") or ""),
        "TimeoutInMinutes": int(m.get("timeoutInMinutes") or 60),
        "QueuedTimeoutInMinutes": int(m.get("queuedTimeoutInMinutes") or 480),
        "Source": {"Type": src.get("type"), "BuildSpec": src.get("buildspec") or ""},
        "Environment": {
            "Type": env.get("type"),
            "Image": env.get("image"),
            "ComputeType": env.get("computeType"),
            "PrivilegedMode": str(env.get("privilegedMode", False)).lower() == "true",
            "EnvironmentVariables": _env_vars(env.get("environmentVariables"), "name", "value", "type"),
        },
    }


def _project_expected(stack, props: dict) -> dict:
    env, src = props.get("Environment") or {}, props.get("Source") or {}
    return {
        "Description": props.get("Description") or "",
        "ServiceRole": _role_arn(stack, props.get("ServiceRole") or ""),
        "TimeoutInMinutes": int(props.get("TimeoutInMinutes", 60)),
        "QueuedTimeoutInMinutes": int(props.get("QueuedTimeoutInMinutes", 480)),
        "Source": {"Type": src.get("Type"), "BuildSpec": src.get("BuildSpec") or ""},
        "Environment": {
            "Type": env.get("Type"),
            "Image": env.get("Image"),
            "ComputeType": env.get("ComputeType"),
            "PrivilegedMode": str(env.get("PrivilegedMode", False)).lower() == "true",
            "EnvironmentVariables": _env_vars(env.get("EnvironmentVariables"), "Name", "Value", "Type"),
        },
    }


def _differences(expected: Any, actual: Any, path: str = "") -> list:
    """PropertyDifferences as AWS lists them: one per differing leaf, by JSON-pointer path."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for key in sorted(set(expected) | set(actual)):
            if key not in actual:
                out.append(_diff(f"{path}/{key}", expected[key], None, "REMOVE"))
            elif key not in expected:
                out.append(_diff(f"{path}/{key}", None, actual[key], "ADD"))
            else:
                out.extend(_differences(expected[key], actual[key], f"{path}/{key}"))
        return out
    if expected != actual:
        return [_diff(path, expected, actual, "NOT_EQUAL")]
    return []


def _diff(path: str, expected: Any, actual: Any, kind: str) -> dict:
    text = lambda v: v if isinstance(v, str) else json.dumps(v, sort_keys=True)  # noqa: E731
    return {
        "PropertyPath": path,
        "ExpectedValue": "" if expected is None else text(expected),
        "ActualValue": "" if actual is None else text(actual),
        "DifferenceType": kind,
    }


CHECKED = {
    "AWS::IAM::Role": (lambda stack, props: _role_expected(props), _role_properties),
    "AWS::CodeBuild::Project": (_project_expected, _project_properties),
}


def _resource_drift(stack, logical_id: str, resource_json: dict, now) -> dict:
    kind = resource_json.get("Type", "")
    parsed = stack.resource_map._parsed_resources.get(logical_id)
    physical = getattr(parsed, "physical_resource_id", "") or ""
    result = {
        "StackId": stack.stack_id,
        "LogicalResourceId": logical_id,
        "PhysicalResourceId": physical,
        "ResourceType": kind,
        "Timestamp": now,
        "StackResourceDriftStatus": "NOT_CHECKED",
    }
    if kind not in CHECKED or parsed is None:
        return result
    expected_of, actual_of = CHECKED[kind]
    props = parsing.clean_json(resource_json.get("Properties", {}), stack.resource_map)
    expected = expected_of(stack, props)
    actual = actual_of(stack, physical, expected)
    result["ExpectedProperties"] = json.dumps(expected, sort_keys=True)
    if actual is None:
        result["StackResourceDriftStatus"] = "DELETED"
        return result
    result["ActualProperties"] = json.dumps(actual, sort_keys=True)
    diffs = _differences(expected, actual)
    result["PropertyDifferences"] = diffs
    result["StackResourceDriftStatus"] = "MODIFIED" if diffs else "IN_SYNC"
    return result


def _stack(response: CloudFormationResponse, name: str):
    backend = response.cloudformation_backend
    stack = next(
        (s for s in backend.stacks.values() if name in (s.name, s.stack_id) and s.status != "DELETE_COMPLETE"),
        None,
    )
    if stack is None:
        raise ValidationError(message=f"Stack with id {name} does not exist")
    return stack


def detect_stack_drift(self: CloudFormationResponse):
    stack = _stack(self, self._get_param("StackName"))
    only = self._get_param("LogicalResourceIds", []) or []
    now = utcnow()
    resources = (stack.template_dict or {}).get("Resources", {})
    results = [
        _resource_drift(stack, lid, rj, now) for lid, rj in sorted(resources.items()) if not only or lid in only
    ]
    detection = str(uuid.uuid4())
    DETECTIONS[detection] = {"stack": stack, "results": results, "timestamp": now}
    LATEST[stack.stack_id] = detection
    return ActionResult({"StackDriftDetectionId": detection})


def describe_stack_drift_detection_status(self: CloudFormationResponse):
    detection = self._get_param("StackDriftDetectionId")
    found = DETECTIONS.get(detection)
    if found is None:
        raise ValidationError(message=f"Drift detection {detection} does not exist")
    drifted = sum(1 for r in found["results"] if r["StackResourceDriftStatus"] in ("MODIFIED", "DELETED"))
    return ActionResult(
        {
            "StackId": found["stack"].stack_id,
            "StackDriftDetectionId": detection,
            "StackDriftStatus": "DRIFTED" if drifted else "IN_SYNC",
            "DetectionStatus": "DETECTION_COMPLETE",
            "DriftedStackResourceCount": drifted,
            "Timestamp": found["timestamp"],
        }
    )


def describe_stack_resource_drifts(self: CloudFormationResponse):
    stack = _stack(self, self._get_param("StackName"))
    detection = LATEST.get(stack.stack_id)
    if detection is None:
        raise ValidationError(message=f"No drift detection has been run on stack {stack.name}")
    wanted = self._get_param("StackResourceDriftStatusFilters", []) or []
    drifts = [r for r in DETECTIONS[detection]["results"] if not wanted or r["StackResourceDriftStatus"] in wanted]
    return ActionResult({"StackResourceDrifts": drifts})


def update_project(self: CodeBuildResponse):
    """UpdateProject: the fields given replace the project's (nested maps merged one level)."""
    name = self._get_param("name")
    project = self.codebuild_backend.codebuild_projects.get(name)
    if project is None:
        from moto.codebuild.exceptions import ResourceNotFoundException

        raise ResourceNotFoundException(f"Project cannot be found: {name}")
    m = project.project_metadata
    for key in ("description", "serviceRole", "timeoutInMinutes", "queuedTimeoutInMinutes"):
        if self._get_param(key) is not None:
            m[key] = self._get_param(key)
    for key in ("source", "environment", "artifacts"):
        value = self._get_param(key)
        if value is not None:
            m[key] = {**(m.get(key) or {}), **value}
    m["lastModifiedDate"] = utcnow().timestamp()
    return ActionResult({"project": m})


def _detect(stack) -> list:
    now = utcnow()
    resources = (stack.template_dict or {}).get("Resources", {})
    return [_resource_drift(stack, lid, rj, now) for lid, rj in sorted(resources.items())]


def _revert_role(stack, name: str, expected: dict) -> None:
    backend = iam_backends[stack.account_id][get_partition(stack.region_name)]
    role = backend.get_role(name)
    role.assume_role_policy_document = json.dumps(expected["AssumeRolePolicyDocument"])
    role.description = expected["Description"]
    role.max_session_duration = expected["MaxSessionDuration"]
    role.path = expected["Path"]
    role.permissions_boundary_arn = expected["PermissionsBoundary"] or None
    role.policies = {k: json.dumps(v) for k, v in expected["Policies"].items()}
    for arn in sorted(set(role.managed_policies) - set(expected["ManagedPolicyArns"])):
        backend.detach_role_policy(arn, name)
    for arn in sorted(set(expected["ManagedPolicyArns"]) - set(role.managed_policies)):
        backend.attach_role_policy(arn, name)


def _revert_project(stack, name: str, expected: dict) -> None:
    m = codebuild_backends[stack.account_id][stack.region_name].codebuild_projects[name].project_metadata
    m["description"] = expected["Description"]
    m["serviceRole"] = expected["ServiceRole"]
    m["timeoutInMinutes"] = expected["TimeoutInMinutes"]
    m["queuedTimeoutInMinutes"] = expected["QueuedTimeoutInMinutes"]
    m["source"] = {**(m.get("source") or {}), "type": expected["Source"]["Type"], "buildspec": expected["Source"]["BuildSpec"]}
    env = expected["Environment"]
    m["environment"] = {
        **(m.get("environment") or {}),
        "type": env["Type"],
        "image": env["Image"],
        "computeType": env["ComputeType"],
        "privilegedMode": env["PrivilegedMode"],
        "environmentVariables": [
            {"name": v["Name"], "value": v["Value"], "type": v["Type"]} for v in env["EnvironmentVariables"]
        ],
    }


REVERT = {"AWS::IAM::Role": _revert_role, "AWS::CodeBuild::Project": _revert_project}

_MODE: dict = {"value": None}


def _wrap_create_change_set_response(original):
    def create_change_set(self: CloudFormationResponse):
        _MODE["value"] = self._get_param("DeploymentMode")
        try:
            return original(self)
        finally:
            _MODE["value"] = None

    return create_change_set


def _wrap_create_change_set(original):
    def create_change_set(self, *args, **kwargs):
        change_set_id, stack_id = original(self, *args, **kwargs)
        change_set = self.change_sets[change_set_id]
        if _MODE["value"] != "REVERT_DRIFT" or change_set.change_set_type != "UPDATE":
            return change_set_id, stack_id
        stack = self.stacks[stack_id]
        drifted = [r for r in _detect(stack) if r["StackResourceDriftStatus"] == "MODIFIED"]
        change_set._lx_revert = [r["LogicalResourceId"] for r in drifted]
        listed = {c.logical_resource_id for c in change_set.changes}
        for r in drifted:
            if r["LogicalResourceId"] in listed:
                continue
            change = Change(action="Modify", logical_resource_id=r["LogicalResourceId"], resource_type=r["ResourceType"])
            change.physical_resource_id = r["PhysicalResourceId"]
            change.replacement = "False"
            change.scope = ["Properties"]
            change_set.changes.append(change)
        if drifted and change_set.status == "FAILED":
            change_set.status, change_set.execution_status = "CREATE_COMPLETE", "AVAILABLE"
            change_set.status_reason = None
        return change_set_id, stack_id

    return create_change_set


def _wrap_execute_change_set(original, find):
    def execute_change_set(self, change_set_name, stack_name=None):
        change_set = find(self, change_set_name, stack_name)
        stack = self.stacks.get(change_set.stack_id)
        revert = getattr(change_set, "_lx_revert", [])
        if stack is not None and revert and change_set.execution_status == "AVAILABLE":
            resources = (stack.template_dict or {}).get("Resources", {})
            for lid in revert:
                rj = resources.get(lid) or {}
                kind = rj.get("Type", "")
                parsed = stack.resource_map._parsed_resources.get(lid)
                if kind not in REVERT or parsed is None:
                    continue
                props = parsing.clean_json(rj.get("Properties", {}), stack.resource_map)
                expected = CHECKED[kind][0](stack, props)
                REVERT[kind](stack, parsed.physical_resource_id, expected)
        return original(self, change_set_name, stack_name)

    return execute_change_set


def install() -> None:
    import cfn_engine
    from moto.cloudformation.models import CloudFormationBackend

    CloudFormationResponse.create_change_set = _wrap_create_change_set_response(CloudFormationResponse.create_change_set)
    CloudFormationBackend.create_change_set = _wrap_create_change_set(CloudFormationBackend.create_change_set)
    CloudFormationBackend.execute_change_set = _wrap_execute_change_set(
        CloudFormationBackend.execute_change_set, cfn_engine._find_change_set
    )
    CloudFormationResponse.detect_stack_drift = detect_stack_drift
    CloudFormationResponse.describe_stack_drift_detection_status = describe_stack_drift_detection_status
    CloudFormationResponse.describe_stack_resource_drifts = describe_stack_resource_drifts
    CodeBuildResponse.update_project = update_project
