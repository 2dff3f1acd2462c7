"""CloudFormation engine fixes for moto 5.2.5: asynchronous operations, rollback, per-resource events.

Imported by launcher.py, which lists every deviation this module patches (items 1-10). Every stack
operation runs under one lock (`LOCK`), in a background worker, as in AWS where CreateStack,
UpdateStack, ExecuteChangeSet and DeleteStack return at once and the stack is polled.
"""

import re
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Optional

from moto.cloudformation import parsing
from moto.cloudformation.exceptions import AlreadyExistsException, CloudFormationError, ValidationError
from moto.cloudformation.models import ChangeSet, Change, CloudFormationBackend, Event, Stack
from moto.cloudformation.parsing import OutputMap, ResourceMap
from moto.cloudformation.responses import CloudFormationResponse, StackResourceDTO
from moto.cloudformation.utils import generate_changeset_id, generate_stack_id, validate_create_change_set
from moto.core.responses import ActionResult, EmptyResult
from moto.core.utils import utcnow

# One lock for all state: every request (launcher.py) and every stack worker holds it. A worker
# waiting on a `Delay` releases it (Condition.wait), so the stack can be read meanwhile.
LOCK = threading.Condition(threading.RLock())
_local = threading.local()  # .worker: True in a worker thread; .op: the running Operation

UPDATABLE = {
    "CREATE_COMPLETE",
    "UPDATE_COMPLETE",
    "UPDATE_ROLLBACK_COMPLETE",
    "IMPORT_COMPLETE",
    "IMPORT_ROLLBACK_COMPLETE",
}
TEMPLATE_BODY_LIMIT = 51_200
TEMPLATE_URL_LIMIT = 1_048_576
PSEUDO = {
    "AWS::AccountId",
    "AWS::Region",
    "AWS::StackId",
    "AWS::StackName",
    "AWS::URLSuffix",
    "AWS::NoValue",
    "AWS::Partition",
    "AWS::NotificationARNs",
}
# IAM resource types that need CAPABILITY_IAM, with the property whose presence needs CAPABILITY_NAMED_IAM.
IAM_TYPES = {
    "AWS::IAM::Role": "RoleName",
    "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
    "AWS::IAM::User": "UserName",
    "AWS::IAM::Group": "GroupName",
    "AWS::IAM::InstanceProfile": "InstanceProfileName",
    "AWS::IAM::Policy": None,
    "AWS::IAM::AccessKey": None,
    "AWS::IAM::UserToGroupAddition": None,
}


class CfnError(CloudFormationError):
    """A CloudFormation API error with an explicit code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class InjectedFailure(Exception):
    """Raised for a resource whose Metadata asks the local server to fail it."""


class Parameters(dict):
    """Stack parameters that count as given even when empty (moto's ResourceMap.update ignores an
    empty dict and keeps the previous ones, where AWS applies the defaults)."""

    def __bool__(self) -> bool:
        return True


class Operation:
    """The stack operation a worker is running; resource hooks report into it."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.failed: Optional[tuple[str, str, str, str]] = None  # logical id, type, status, reason
        self.started: set[tuple[str, str]] = set()


# --------------------------------------------------------------------------------------------- events


def add_event(
    stack: Stack, logical_id: str, resource_type: str, status: str, physical_id: str = "", reason: Optional[str] = None
) -> None:
    event = Event(
        stack_id=stack.stack_id,
        stack_name=stack.name,
        logical_resource_id=logical_id,
        physical_resource_id=physical_id,
        resource_type=resource_type,
        resource_status=status,
        resource_status_reason=reason,
        resource_properties=None,
    )
    event.sendToSns(stack.account_id, stack.region_name, stack.notification_arns)
    stack.events.append(event)


def set_status(stack: Stack, status: str, reason: Optional[str] = None) -> None:
    stack.status = status
    stack.status_reason = reason
    stack._add_stack_event(status, resource_status_reason=reason)


def resource_event(
    logical_id: str,
    resource_type: str,
    status: str,
    physical_id: str = "",
    reason: Optional[str] = None,
    once: bool = False,
) -> None:
    """Record a per-resource event on the running operation's stack (no-op outside operations)."""
    op: Optional[Operation] = getattr(_local, "op", None)
    if op is None:
        return
    if once:
        if (logical_id, status) in op.started:
            return
        op.started.add((logical_id, status))
    add_event(op.stack, logical_id, resource_type, status, physical_id or "", reason)


def describe_failure(exc: BaseException) -> str:
    """The StatusReason AWS would show for a resource whose handler raised `exc`."""
    if isinstance(exc, InjectedFailure):
        return str(exc)
    code = getattr(exc, "error_type", None) or (exc.code if isinstance(getattr(exc, "code", None), str) else None)
    message = getattr(exc, "message", None) or getattr(exc, "description", None) or str(exc)
    if code:
        return f'Resource handler returned message: "{message}" (HandlerErrorCode: {code})'
    return f"Internal failure: {type(exc).__name__}: {exc}"


def record_failure(logical_id: str, resource_type: str, status: str, exc: BaseException) -> None:
    op: Optional[Operation] = getattr(_local, "op", None)
    if op is not None:
        op.failed = (logical_id, resource_type, status, describe_failure(exc))


def local_aws_metadata(resource_json: dict) -> dict:
    meta = resource_json.get("Metadata") or {}
    value = meta.get("LocalAws") if isinstance(meta, dict) else None
    return value if isinstance(value, dict) else {}


def inject(resource_json: dict) -> None:
    """Apply the test hooks of a resource's `Metadata.LocalAws`: Delay (seconds), then Fail (reason)."""
    meta = local_aws_metadata(resource_json)
    if "Delay" in meta:
        deadline = time.monotonic() + float(meta["Delay"])
        while (left := deadline - time.monotonic()) > 0:
            try:
                LOCK.wait(left)  # releases the lock so the stack can be described meanwhile
            except RuntimeError:  # lock not held (not in an operation): plain sleep
                time.sleep(left)
    if "Fail" in meta:
        raise InjectedFailure(str(meta["Fail"]))


# ------------------------------------------------------------------------------------ resource hooks


def parse_and_create_resource(logical_id, resource_json, resources_map, account_id, region_name):
    """moto's parsing.parse_and_create_resource, with events, failure capture and test hooks."""
    condition = resource_json.get("Condition")
    if condition and not resources_map.lazy_condition_map[condition]:
        return None
    resource_type = resource_json["Type"]
    parsed = parsing.parse_resource_and_generate_name(logical_id, resource_json, resources_map)  # creates dependencies
    if not parsed:
        if resource_type not in parsing.NULL_MODELS:
            resource_event(
                logical_id,
                resource_type,
                "CREATE_COMPLETE",
                reason="resource type not emulated by the local server: skipped",
                once=True,
            )
        return None
    resource_class, resolved_json, physical_name = parsed
    resource_event(logical_id, resource_type, "CREATE_IN_PROGRESS", once=True)
    try:
        inject(resource_json)
        resource = resource_class.create_from_cloudformation_json(
            physical_name,
            resolved_json,
            account_id,
            region_name,
            LogicalId=logical_id,
            StackId=resources_map.stack_id,
            ResourceType=resource_type,
        )
    except Exception as exc:
        record_failure(logical_id, resource_type, "CREATE_FAILED", exc)
        raise
    resource.cf_resource_type = resource_type
    resource.logical_resource_id = logical_id
    resource._lx_status = "CREATE_COMPLETE"
    resource._lx_updated = utcnow()
    resource_event(logical_id, resource_type, "CREATE_COMPLETE", getattr(resource, "physical_resource_id", ""))
    return resource


def parse_and_update_resource(logical_id, resource_json, resources_map, account_id, region_name):
    """moto's parsing.parse_and_update_resource, with events and failure capture; a type without an
    update handler keeps its resource (moto dropped it from the stack)."""
    parsed = parsing.parse_resource_and_generate_name(logical_id, resource_json, resources_map)
    if not parsed:
        return None
    resource_class, resolved_json, new_name = parsed
    resource_type = resource_json["Type"]
    original = resources_map[logical_id]
    if hasattr(resource_class.update_from_cloudformation_json, "__isabstractmethod__"):
        return original
    resource_event(logical_id, resource_type, "UPDATE_IN_PROGRESS", once=True)
    try:
        inject(resource_json)
        resource = resource_class.update_from_cloudformation_json(
            original_resource=original,
            new_resource_name=new_name,
            cloudformation_json=resolved_json,
            account_id=account_id,
            region_name=region_name,
        )
    except Exception as exc:
        record_failure(logical_id, resource_type, "UPDATE_FAILED", exc)
        raise
    resource.cf_resource_type = resource_type
    resource.logical_resource_id = logical_id
    resource._lx_status = "UPDATE_COMPLETE"
    resource._lx_updated = utcnow()
    resource_event(logical_id, resource_type, "UPDATE_COMPLETE", getattr(resource, "physical_resource_id", ""))
    return resource


_orig_delete_resource = ResourceMap._delete_resource
_orig_rm_update = ResourceMap.update


def _delete_resource(self, parsed_resource, resource_json):
    logical_id = getattr(parsed_resource, "logical_resource_id", "")
    resource_type = resource_json["Type"]
    physical_id = getattr(parsed_resource, "physical_resource_id", "")
    resource_event(logical_id, resource_type, "DELETE_IN_PROGRESS", physical_id, once=True)
    try:
        _orig_delete_resource(self, parsed_resource, resource_json)
    except Exception as exc:
        record_failure(logical_id, resource_type, "DELETE_FAILED", exc)
        raise
    parsed_resource._lx_deleted = True
    resource_event(logical_id, resource_type, "DELETE_COMPLETE", physical_id)


def _rm_update(self, template, parameters=None):
    """moto's ResourceMap.update, forgetting the resources it deleted (moto kept them, so adding the
    same logical id back later returned the deleted resource)."""
    before = set(self._resource_json_map)
    try:
        _orig_rm_update(self, template, parameters)
    finally:
        for name in before - set(self._resource_json_map):
            if getattr(self._parsed_resources.get(name), "_lx_deleted", False):
                self._parsed_resources.pop(name, None)


def created_resources(stack: Stack) -> list:
    """The stack's resources that exist (moto's list created pending resources lazily when read)."""
    rm = stack.resource_map
    return [
        r
        for name, r in rm._parsed_resources.items()
        if name in rm._resource_json_map and hasattr(r, "logical_resource_id")
    ]


# ------------------------------------------------------------------------------ template validation


def _walk_refs(node: Any, found: set) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                target = value.split(".")[0] if isinstance(value, str) else value[0] if value else None
                if isinstance(target, str):
                    found.add(target)
            elif key == "Fn::Sub":
                text, variables = (value[0], value[1]) if isinstance(value, list) else (value, {})
                if isinstance(text, str):
                    for name in re.findall(r"\$\{([^!}][^}]*)\}", text):
                        name = name.strip().split(".")[0]
                        if name not in (variables or {}):
                            found.add(name)
                _walk_refs(variables, found)
            else:
                _walk_refs(value, found)
    elif isinstance(node, list):
        for item in node:
            _walk_refs(item, found)


def check_template(template_dict: dict, capabilities: list) -> None:
    """Checks AWS makes before accepting a template: dependencies resolve, capabilities are given."""
    if not isinstance(template_dict, dict) or not isinstance(template_dict.get("Resources"), dict):
        raise ValidationError(message="Template format error: At least one Resources member must be defined.")
    resources = template_dict["Resources"]
    known = set(resources) | set(template_dict.get("Parameters") or {}) | PSEUDO
    for section in ("Resources", "Outputs"):
        refs: set = set()
        _walk_refs(template_dict.get(section) or {}, refs)
        missing = sorted(refs - known)
        if missing:
            raise ValidationError(
                message=f"Template format error: Unresolved resource dependencies "
                f"[{', '.join(missing)}] in the {section} block of the template"
            )
    for output in (template_dict.get("Outputs") or {}).values():  # moto: HTTP 500 on these
        target = (output or {}).get("Value", {})
        target = target.get("Fn::GetAtt") if isinstance(target, dict) else None
        name = (target.split(".")[0] if isinstance(target, str) else target[0]) if target else None
        kind = (resources.get(name) or {}).get("Type", "")
        if name and kind not in parsing.get_model_map() and not kind.startswith("Custom::"):
            raise ValidationError(
                message=f"Template error: Fn::GetAtt on {name} ({kind}), a type the local server does not emulate"
            )
    needed = None
    for resource in resources.values():
        name_property = IAM_TYPES.get(resource.get("Type"), False)
        if name_property is False:
            continue
        needed = needed or "CAPABILITY_IAM"
        if name_property and name_property in (resource.get("Properties") or {}):
            needed = "CAPABILITY_NAMED_IAM"
    given = set(capabilities or [])
    if (
        needed == "CAPABILITY_NAMED_IAM"
        and needed not in given
        or needed == "CAPABILITY_IAM"
        and not given & {"CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"}
    ):
        raise CfnError("InsufficientCapabilitiesException", f"Requires capabilities : [{needed}]")


# -------------------------------------------------------------------------------- stack operations


def _run(work: Callable[[], None]) -> None:
    """Run `work` in a background worker holding LOCK; inline when already in one (nested stacks)."""
    if getattr(_local, "worker", False):
        work()
        return

    def worker() -> None:
        with LOCK:
            _local.worker = True
            try:
                work()
            except Exception:  # every operation ends its stack in a final state; this is a last resort
                import traceback

                traceback.print_exc()

    threading.Thread(target=worker, name="cfn-worker", daemon=True).start()


@contextmanager
def _operation(stack: Stack):
    previous = getattr(_local, "op", None)
    _local.op = Operation(stack)
    try:
        yield _local.op
    finally:
        _local.op = previous


def _failed_resource(op: Operation, exc: Exception) -> str:
    """Emit the failed resource's event; return the reason to put on the stack."""
    failed, op.failed = op.failed, None
    op.started.clear()  # what follows (a rollback) reports its own events
    if failed:
        logical_id, resource_type, status, reason = failed
        add_event(op.stack, logical_id, resource_type, status, reason=reason)
        return f"[{logical_id}]"
    return f"[] ({describe_failure(exc)})"


def _publish_outputs(backend: CloudFormationBackend, stack: Stack) -> None:
    """Evaluate Outputs and Exports once, after a successful operation, and serve that snapshot."""
    stack.output_map = OutputMap(stack.resource_map, stack.template_dict, stack.stack_id)
    exports = stack.output_map.exports
    for export in exports:
        other = backend.exports.get(export.name)
        if other is not None and other.exporting_stack_id != stack.stack_id:
            owner = backend.stacks.get(other.exporting_stack_id)
            raise ValidationError(
                message=f"Export with name {export.name} is already exported by stack "
                f"{owner.name if owner else other.exporting_stack_id}"
            )
    names = {e.name: e.value for e in exports}
    values = {e.value: e.name for e in exports}
    outputs = []
    for key in stack.output_map:
        output = stack.output_map[key]
        if output:
            outputs.append(
                {
                    "OutputKey": output.key,
                    "OutputValue": output.value,
                    "Description": output.description,
                    "ExportName": values.get(output.value),
                }
            )
    for name, export in list(backend.exports.items()):
        if export.exporting_stack_id == stack.stack_id and name not in names:
            del backend.exports[name]
    for export in exports:
        backend.exports[export.name] = export
    stack._lx_outputs = outputs or None
    stack._lx_exports = exports
    stack.description = stack.template_dict.get("Description")


def _clear_outputs(backend: CloudFormationBackend, stack: Stack) -> None:
    for name, export in list(backend.exports.items()):
        if export.exporting_stack_id == stack.stack_id:
            del backend.exports[name]
    stack._lx_outputs = None
    stack._lx_exports = []


def _create_work(backend: CloudFormationBackend, stack: Stack) -> None:
    with _operation(stack) as op:
        try:
            stack.resource_map.create(stack.template_dict)
            _publish_outputs(backend, stack)
        except Exception as exc:
            failed = _failed_resource(op, exc)
            set_status(
                stack,
                "ROLLBACK_IN_PROGRESS",
                f"The following resource(s) failed to create: {failed}. Rollback requested by user.",
            )
            reason = stack.status_reason
            _clear_outputs(backend, stack)
            try:
                stack.resource_map.delete()
            except Exception as rollback_exc:
                set_status(
                    stack,
                    "ROLLBACK_FAILED",
                    f"The following resource(s) failed to delete: " f"{_failed_resource(op, rollback_exc)}. ",
                )
                return
            set_status(stack, "ROLLBACK_COMPLETE")
            stack.status_reason = reason
            return
        set_status(stack, "CREATE_COMPLETE")


def _update_work(
    backend: CloudFormationBackend,
    stack: Stack,
    template: str,
    parameters: dict,
    role_arn: Optional[str],
    tags: Optional[dict],
) -> None:
    old = (stack.template, stack.template_dict, dict(stack.parameters), stack.role_arn, dict(stack.tags))
    with _operation(stack) as op:
        try:
            stack.template = template
            stack._parse_template()
            stack.resource_map.update(stack.template_dict, Parameters(parameters))
            _publish_outputs(backend, stack)
        except Exception as exc:
            failed = _failed_resource(op, exc)
            set_status(stack, "UPDATE_ROLLBACK_IN_PROGRESS", f"The following resource(s) failed to update: {failed}. ")
            stack._lx_rollback = (old, stack.template_dict)
            _rollback_update(backend, stack, op, honour_fail_rollback=True)
            return
        stack.parameters = parameters
        stack.role_arn = role_arn
        if tags is not None:
            stack.tags = tags
        stack.last_updated_time = utcnow()
        set_status(stack, "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS")
        set_status(stack, "UPDATE_COMPLETE")


def _rollback_update(backend: CloudFormationBackend, stack: Stack, op: Operation, honour_fail_rollback: bool) -> None:
    """Re-apply the template and parameters the stack had before the failed update."""
    (template, template_dict, parameters, role_arn, tags), failed_template = stack._lx_rollback
    try:
        if honour_fail_rollback:
            for logical_id, resource in (failed_template.get("Resources") or {}).items():
                if "FailRollback" in local_aws_metadata(resource):
                    op.failed = (
                        logical_id,
                        resource.get("Type", ""),
                        "UPDATE_FAILED",
                        str(local_aws_metadata(resource)["FailRollback"]),
                    )
                    raise InjectedFailure(op.failed[3])
        stack.resource_map.update(template_dict, Parameters(parameters))
        stack.template, stack.template_dict = template, template_dict
        stack.parameters, stack.role_arn, stack.tags = parameters, role_arn, tags
        _publish_outputs(backend, stack)
    except Exception as exc:
        set_status(
            stack,
            "UPDATE_ROLLBACK_FAILED",
            f"The following resource(s) failed to update: {_failed_resource(op, exc)}. ",
        )
        return
    stack.last_updated_time = utcnow()
    set_status(stack, "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS")
    set_status(stack, "UPDATE_ROLLBACK_COMPLETE")
    del stack._lx_rollback


def _live_stack(backend: CloudFormationBackend, name_or_id: str) -> Optional[Stack]:
    if name_or_id in backend.stacks:
        return backend.stacks[name_or_id]
    return next((s for s in backend.stacks.values() if s.name == name_or_id), None)


def _check_updatable(stack: Stack) -> None:
    if stack.status not in UPDATABLE:
        raise ValidationError(message=f"Stack:{stack.stack_id} is in {stack.status} state and can not be updated.")


def _check_service_role(self: CloudFormationBackend, role_arn) -> None:
    """As AWS: a stack operation naming a service role fails unless the role exists in the account
    and CloudFormation may assume it."""
    from cfn_models import _require_service_role  # the launcher puts this directory on sys.path

    if role_arn and not _require_service_role(self.account_id, self.region_name, role_arn, "cloudformation.amazonaws.com"):
        raise ValidationError(message=f"Role {role_arn} is invalid or cannot be assumed")


def _wait_nested(stack: Stack, wanted: str) -> None:
    """Nested stacks run inline; make the parent's resource fail when the child did."""
    if getattr(_local, "worker", False) and stack.status != wanted:
        raise ValidationError(
            message=f"Embedded stack {stack.stack_id} was not successfully created: {stack.status_reason}"
        )


def create_stack(
    self: CloudFormationBackend,
    name,
    template,
    parameters,
    notification_arns=None,
    tags=None,
    role_arn=None,
    enable_termination_protection=False,
    timeout_in_mins=None,
    stack_policy_body=None,
):
    if _live_stack(self, name) is not None:
        raise AlreadyExistsException(f"Stack [{name}] already exists")
    _check_service_role(self, role_arn)
    stack = Stack(
        stack_id=generate_stack_id(name, self.region_name, self.account_id),
        name=name,
        template=template,
        parameters=parameters,
        account_id=self.account_id,
        region_name=self.region_name,
        notification_arns=notification_arns,
        tags=tags,
        role_arn=role_arn,
        cross_stack_resources=self.exports,
        enable_termination_protection=enable_termination_protection,
        timeout_in_mins=timeout_in_mins,
        stack_policy_body=stack_policy_body,
    )
    self.stacks[stack.stack_id] = stack
    set_status(stack, "CREATE_IN_PROGRESS", "User Initiated")
    _run(lambda: _create_work(self, stack))
    _wait_nested(stack, "CREATE_COMPLETE")
    return stack


def _resolve_update_parameters(self: CloudFormationBackend, instance, incoming_params):
    if not isinstance(instance, Stack):
        return _orig_resolve(self, instance, incoming_params)
    resolved = {}
    for param in incoming_params:
        key = param["ParameterKey"]
        if param.get("UsePreviousValue"):
            value = instance.parameters.get(key, instance.resource_map.resolved_parameters.get(key))
            if value is None:
                raise ValidationError(
                    message=f"Invalid input for parameter key {key}. Cannot specify "
                    f"usePreviousValue as true for a parameter key not in the previous template"
                )
            resolved[key] = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        elif "ParameterValue" in param:
            resolved[key] = param["ParameterValue"]
    return resolved


def update_stack(self: CloudFormationBackend, name, template, role_arn, parameters, tags):
    stack = self.get_stack(name)
    _check_updatable(stack)
    _check_service_role(self, role_arn)
    resolved = self._resolve_update_parameters(instance=stack, incoming_params=parameters)
    if stack.template == template and resolved == stack.parameters and (tags is None or tags == stack.tags):
        raise ValidationError(message="No updates are to be performed.")
    Stack.parse_template(template)  # a syntax error is the caller's, not the stack's
    set_status(stack, "UPDATE_IN_PROGRESS", "User Initiated")
    _run(lambda: _update_work(self, stack, template, resolved, role_arn or stack.role_arn, tags))
    _wait_nested(stack, "UPDATE_COMPLETE")
    return stack


def continue_update_rollback(self: CloudFormationBackend, name: str) -> None:
    stack = self.get_stack(name)
    if stack.status != "UPDATE_ROLLBACK_FAILED":
        raise ValidationError(
            message=f"Stack {stack.stack_id} is in {stack.status} state and can not continue update rollback."
        )
    set_status(stack, "UPDATE_ROLLBACK_IN_PROGRESS", "User Initiated")

    def work() -> None:
        with _operation(stack) as op:
            _rollback_update(self, stack, op, honour_fail_rollback=False)

    _run(work)


def delete_stack(self: CloudFormationBackend, name_or_stack_id: str) -> None:
    stack = _live_stack(self, name_or_stack_id)
    if stack is None or stack.status == "DELETE_IN_PROGRESS":
        return
    if stack.status.endswith("_IN_PROGRESS") and stack.status != "REVIEW_IN_PROGRESS":
        raise ValidationError(message=f"Stack [{stack.name}] cannot be deleted while in status {stack.status}")
    set_status(stack, "DELETE_IN_PROGRESS", "User Initiated")

    def work() -> None:
        with _operation(stack) as op:
            try:
                stack.resource_map.delete()
            except Exception as exc:
                set_status(
                    stack, "DELETE_FAILED", f"The following resource(s) failed to delete: {_failed_resource(op, exc)}. "
                )
                return
            _clear_outputs(self, stack)
            for cs_id in [i for i, cs in self.change_sets.items() if cs.stack_id == stack.stack_id]:
                del self.change_sets[cs_id]
            self.stacks.pop(stack.stack_id, None)
            self.deleted_stacks[stack.stack_id] = stack
            stack.deletion_time = utcnow()
            set_status(stack, "DELETE_COMPLETE")

    _run(work)


# ------------------------------------------------------------------------------------- change sets


def create_change_set(
    self: CloudFormationBackend,
    stack_name,
    change_set_name,
    template,
    parameters,
    description,
    change_set_type,
    notification_arns=None,
    tags=None,
    role_arn=None,
):
    validate_create_change_set(change_set_name)
    _check_service_role(self, role_arn)
    stack = _live_stack(self, stack_name)
    if change_set_type == "UPDATE":
        if stack is None:
            raise ValidationError(stack_name)
        _check_updatable(stack)
    elif change_set_type == "CREATE":
        if stack is not None and stack.status != "REVIEW_IN_PROGRESS":
            raise ValidationError(
                message=f"Stack [{stack_name}] already exists and cannot be created again "
                f"with the changeSet [{change_set_name}]."
            )
        Stack(
            stack_id=generate_stack_id(stack_name, self.region_name, self.account_id),
            name=stack_name,
            template=template,
            parameters=parameters,
            account_id=self.account_id,
            region_name=self.region_name,
            cross_stack_resources=self.exports,
        )  # validation only: parameters, outputs
        if stack is None:
            stack = Stack(
                stack_id=generate_stack_id(stack_name, self.region_name, self.account_id),
                name=stack_name,
                template={},
                parameters=parameters,
                account_id=self.account_id,
                region_name=self.region_name,
                notification_arns=notification_arns,
                tags=tags,
                role_arn=role_arn,
            )
            self.stacks[stack.stack_id] = stack
            set_status(stack, "REVIEW_IN_PROGRESS", "User Initiated")
    else:
        raise ValidationError(message=f"ChangeSetType {change_set_type} is not supported by the local server")
    if any(cs.stack_id == stack.stack_id and cs.change_set_name == change_set_name for cs in self.change_sets.values()):
        raise AlreadyExistsException(f"ChangeSet [{change_set_name}] already exists")
    change_set_id = generate_changeset_id(change_set_name, self.region_name, self.account_id)
    change_set = ChangeSet(
        change_set_type=change_set_type,
        change_set_id=change_set_id,
        change_set_name=change_set_name,
        stack=stack,
        template=template,
        parameters=parameters,
        description=description,
        notification_arns=notification_arns,
        tags=tags,
        role_arn=role_arn,
    )
    if change_set_type == "UPDATE" and stack.has_template(template) and stack.has_parameters(parameters):
        change_set.status = "FAILED"
        change_set.execution_status = "UNAVAILABLE"
        change_set.status_reason = (
            "The submitted information didn't contain changes. " "Submit different information to create a change set."
        )
    else:
        change_set.status = "CREATE_COMPLETE"
        change_set.execution_status = "AVAILABLE"
    self.change_sets[change_set_id] = change_set
    return change_set_id, stack.stack_id


def _change_set_diff(self: ChangeSet) -> list:
    """Resource changes, including those caused only by changed parameters, with PhysicalResourceId
    and Replacement (moto: neither)."""
    resource_map = self.stack.resource_map
    old = resource_map._resource_json_map
    new = self.template_dict.get("Resources") or {}
    by_action = resource_map.build_resource_diff(self.template_dict, self.parameters)
    changes = []
    for action in ("Add", "Modify", "Remove"):
        for name in by_action[action]:
            source = old[name] if action == "Remove" else new[name]
            change = Change(action=action, logical_resource_id=name, resource_type=source["Type"])
            if action != "Add":
                change.physical_resource_id = getattr(
                    resource_map._parsed_resources.get(name), "physical_resource_id", None
                )
            if action == "Modify":
                name_property = parsing.resource_name_property_from_type(source["Type"])
                before, after = (old[name].get("Properties") or {}), (source.get("Properties") or {})
                replaced = bool(name_property) and before.get(name_property) != after.get(name_property)
                change.replacement = "True" if replaced else "False"
                change.scope = ["Properties"]
            changes.append(change)
    return changes


def _find_change_set(backend: CloudFormationBackend, name: str, stack_name: Optional[str]) -> ChangeSet:
    if name in backend.change_sets:
        return backend.change_sets[name]
    for change_set in backend.change_sets.values():
        if change_set.change_set_name == name and stack_name in (None, "", change_set.stack_name, change_set.stack_id):
            return change_set
    raise CfnError("ChangeSetNotFound", f"ChangeSet [{name}] does not exist")


def execute_change_set(self: CloudFormationBackend, change_set_name, stack_name=None):
    change_set = _find_change_set(self, change_set_name, stack_name)
    stack = self.stacks.get(change_set.stack_id)
    if stack is None:
        raise ValidationError(change_set.stack_name)
    if change_set.execution_status != "AVAILABLE":
        raise CfnError(
            "InvalidChangeSetStatus",
            f"ChangeSet [{change_set.change_set_id}] cannot be executed in "
            f"its current execution status of [{change_set.execution_status}]",
        )
    for other in [i for i, cs in self.change_sets.items() if cs.stack_id == stack.stack_id and cs is not change_set]:
        del self.change_sets[other]  # AWS deletes a stack's other change sets once one is executed
    change_set.execution_status = "EXECUTE_IN_PROGRESS"

    if change_set.change_set_type == "CREATE":
        stack.template, stack.parameters = change_set.template, change_set.parameters
        stack.tags = change_set.tags or stack.tags
        stack.role_arn = change_set.role_arn
        stack.cross_stack_resources = self.exports
        stack._parse_template()
        stack.resource_map = stack._create_resource_map()
        set_status(stack, "CREATE_IN_PROGRESS", "User Initiated")

        def work() -> None:
            _create_work(self, stack)
            change_set.execution_status = "EXECUTE_COMPLETE" if stack.status == "CREATE_COMPLETE" else "EXECUTE_FAILED"

    else:
        _check_updatable(stack)
        set_status(stack, "UPDATE_IN_PROGRESS", "User Initiated")

        def work() -> None:
            _update_work(
                self,
                stack,
                change_set.template,
                change_set.parameters,
                change_set.role_arn or stack.role_arn,
                change_set.tags or None,
            )
            change_set.execution_status = "EXECUTE_COMPLETE" if stack.status == "UPDATE_COMPLETE" else "EXECUTE_FAILED"

    _run(work)


# --------------------------------------------------------------------------------------- responses


def _template_checks(response: CloudFormationResponse, stack: Optional[Stack] = None) -> None:
    """TemplateBody size, dependencies and capabilities, checked when the request arrives."""
    body = response._get_param("TemplateBody")
    url = response._get_param("TemplateURL")
    if body is not None and len(body.encode()) > TEMPLATE_BODY_LIMIT:
        raise ValidationError(
            message="1 validation error detected: Value at 'templateBody' failed to satisfy "
            f"constraint: Member must have length less than or equal to {TEMPLATE_BODY_LIMIT}"
        )
    if body is None and url:
        body = response._get_stack_from_s3_url(url)
        if len(body.encode()) > TEMPLATE_URL_LIMIT:
            raise ValidationError(message=f"Template may not exceed {TEMPLATE_URL_LIMIT} bytes in size.")
    if body is None and response._get_bool_param("UsePreviousTemplate", False) and stack is not None:
        body = stack.template
    if body is None:
        return
    try:
        template_dict = Stack.parse_template(body)
    except Exception as exc:
        raise ValidationError(message=f"Template format error: {exc}")
    check_template(template_dict, response._get_param("Capabilities", []))


def _wrap_response(name: str, lookup_stack: bool = False) -> None:
    original = getattr(CloudFormationResponse, name)

    def checked(self: CloudFormationResponse):
        stack = None
        if lookup_stack:
            stack = _live_stack(self.cloudformation_backend, self._get_param("StackName") or "")
        _template_checks(self, stack)
        return original(self)

    setattr(CloudFormationResponse, name, checked)


_orig_delete_stack_response = CloudFormationResponse.delete_stack


def _delete_stack_response(self: CloudFormationResponse):
    """DeleteStack naming a service role (RoleARN): the role must exist and trust CloudFormation."""
    _check_service_role(self.cloudformation_backend, self._get_param("RoleARN"))
    return _orig_delete_stack_response(self)


def _continue_update_rollback_response(self: CloudFormationResponse):
    self.cloudformation_backend.continue_update_rollback(self._get_param("StackName"))
    return EmptyResult()


def _list_change_sets_response(self: CloudFormationResponse):
    """Only the change sets of the stack asked for (moto: every stack's)."""
    wanted = self._get_param("StackName")
    return ActionResult(
        {
            "Summaries": [
                cs for cs in self.cloudformation_backend.list_change_sets() if wanted in (cs.stack_name, cs.stack_id)
            ]
        }
    )


def _list_stack_resources_response(self: CloudFormationResponse):
    stack, resources = self.cloudformation_backend.list_stack_resources(self._get_param("StackName"))
    return ActionResult(
        {
            "StackResourceSummaries": [
                {
                    "LogicalResourceId": r.logical_resource_id,
                    "PhysicalResourceId": getattr(r, "physical_resource_id", ""),
                    "ResourceType": getattr(r, "cf_resource_type", ""),
                    "ResourceStatus": getattr(r, "_lx_status", "CREATE_COMPLETE"),
                    "LastUpdatedTimestamp": getattr(r, "_lx_updated", stack.creation_time),
                }
                for r in resources
            ]
        }
    )


_orig_dto_init = StackResourceDTO.__init__


def _dto_init(self, stack, resource) -> None:
    _orig_dto_init(self, stack, resource)
    self.resource_status = getattr(resource, "_lx_status", "CREATE_COMPLETE")
    self.timestamp = self.last_updated_timestamp = getattr(resource, "_lx_updated", stack.creation_time)


# ----------------------------------------------------------------------------------------- install

_orig_resolve = CloudFormationBackend._resolve_update_parameters


def install() -> None:
    parsing.parse_and_create_resource = parse_and_create_resource
    parsing.parse_and_update_resource = parse_and_update_resource
    ResourceMap._delete_resource = _delete_resource
    ResourceMap.update = _rm_update
    Stack.outputs = property(lambda self: getattr(self, "_lx_outputs", None))
    Stack.exports = property(lambda self: getattr(self, "_lx_exports", []))
    Stack.stack_resources = property(created_resources)
    Stack.status_reason = None
    Stack.last_updated_time = None
    Stack.deletion_time = None
    ChangeSet.diff = _change_set_diff
    Change.physical_resource_id = None
    Change.replacement = None
    Change.scope = None
    CloudFormationBackend.create_stack = create_stack
    CloudFormationBackend.update_stack = update_stack
    CloudFormationBackend.delete_stack = delete_stack
    CloudFormationBackend.create_change_set = create_change_set
    CloudFormationBackend.execute_change_set = execute_change_set
    CloudFormationBackend.continue_update_rollback = continue_update_rollback
    CloudFormationBackend._resolve_update_parameters = _resolve_update_parameters
    CloudFormationResponse.delete_stack = _delete_stack_response
    CloudFormationResponse.continue_update_rollback = _continue_update_rollback_response
    CloudFormationResponse.list_stack_resources = _list_stack_resources_response
    CloudFormationResponse.list_change_sets = _list_change_sets_response
    StackResourceDTO.__init__ = _dto_init
    _wrap_response("create_stack")
    _wrap_response("update_stack", lookup_stack=True)
    _wrap_response("create_change_set", lookup_stack=True)
