"""Local AWS-compatible server for pipeforge's tests: moto's server plus the fixes listed below.

`ci/local-aws start` runs it; directly:

    python ci/local_aws/launcher.py [--host 127.0.0.1] [--port 0] [--port-file FILE]
                                    [--owner-pid PID] [--default-account ID] [--tag TEXT]

`--port 0` binds a free port; the bound port is written to `--port-file` (atomically) once the
socket accepts connections, and the file is removed on exit. With `--owner-pid` the server exits
when that process is gone. `--default-account` is the account of requests signed with keys moto does
not know (moto: 123456789012). `--tag` only marks the command line (ci/local-aws checks it).

Everything here uses moto internals and is pinned to moto==5.2.5 (ci/requirements.txt).
Deviations from plain moto that are patched:

CloudFormation engine (cfn_engine.py)
 1. CreateStack, UpdateStack, ExecuteChangeSet and DeleteStack are asynchronous, as in AWS: they
    validate, set the *_IN_PROGRESS status and return; a worker thread does the work (moto: done
    inside the request, errors returned to the caller). Requests and workers take turns on one
    lock (moto is not thread-safe); a resource's `Delay` (item 10) lets requests in meanwhile.
 2. A failing resource gets a `<LogicalId> CREATE_FAILED|UPDATE_FAILED|DELETE_FAILED` event with the
    reason, and the stack rolls back to ROLLBACK_COMPLETE (first create) or UPDATE_ROLLBACK_COMPLETE
    (update, change set), ends in DELETE_FAILED, or in ROLLBACK_FAILED / UPDATE_ROLLBACK_FAILED when
    the rollback fails (moto: stack stuck in CREATE_IN_PROGRESS, HTTP 4xx/500 to the caller).
 3. Per-resource events: CREATE_IN_PROGRESS / CREATE_COMPLETE, UPDATE_*, DELETE_* for each resource,
    UPDATE_COMPLETE_CLEANUP_IN_PROGRESS and friends on the stack (moto: stack events only).
 4. Refusals as in AWS: updates, change sets and deletes while *_IN_PROGRESS, updates of a stack in
    ROLLBACK_COMPLETE & co, a CREATE change set for an existing stack (moto created a second stack
    with the same name), a duplicate change set name; ContinueUpdateRollback is implemented.
 5. Outputs and exports are recomputed after every successful operation and served from that
    snapshot (moto kept stale outputs after ExecuteChangeSet, had none after a CREATE change set, and
    reading a stack could create missing resources lazily).
 6. Change sets: parameter-only changes appear as Modify; Modify/Remove carry PhysicalResourceId,
    Modify carries Replacement and Scope; executing one deletes the stack's other change sets; a
    failed execution is EXECUTE_FAILED; ListChangeSets lists only the given stack's (moto: all).
 7. UsePreviousValue works for parameters that took their default (moto: HTTP 500 KeyError).
 8. Requests are checked as AWS does: CAPABILITY_IAM / CAPABILITY_NAMED_IAM
    (InsufficientCapabilitiesException), TemplateBody <= 51,200 bytes, Ref/GetAtt/Sub to undefined
    names, "No updates are to be performed." for an identical UpdateStack.
 9. Stack resources are listed with their own status and time; deleted ones no longer linger (moto
    re-used a deleted resource when the same logical id was added again). A resource of a type moto
    does not emulate is still skipped, now with a CREATE_COMPLETE event saying so; an Output's
    Fn::GetAtt on one is a ValidationError (moto: HTTP 500).
10. Test hooks, in a resource's `Metadata: {LocalAws: {...}}` (AWS ignores them):
      Fail: REASON          the resource fails with REASON whenever it is created or updated
      FailRollback: REASON  the rollback of an update that fails also fails (UPDATE_ROLLBACK_FAILED)
      Delay: SECONDS        the resource takes that long (the stack stays *_IN_PROGRESS meanwhile)
    A realistic failure works too: a BucketName that already exists fails with BucketAlreadyExists.

Resource models (cfn_models.py)
11. New types: AWS::CodeBuild::Project and AWS::CodePipeline::Pipeline on moto's API backends (the
    service role must exist and trust the service; a pipeline's ArtifactStores list becomes the
    API's region map), AWS::S3::BucketPolicy, AWS::SNS::Subscription,
    AWS::SNS::TopicPolicy; AWS::CodeStarNotifications::NotificationRule and
    AWS::CodeBuild::ReportGroup are validated but kept only in the stack (moto has no such API).
12. AWS::IAM::Role: ManagedPolicyArns attached (AWS managed policies loaded on first use), which,
    like PermissionsBoundary, must exist (moto: not attached, boundary not checked); updates
    apply the trust policy, Policies, ManagedPolicyArns and PermissionsBoundary and replace the role
    when RoleName changes (moto: description only); delete detaches the managed policies first.
13. AWS::IAM::ManagedPolicy: update creates a new default version and re-syncs Roles/Users/Groups;
    delete detaches and deletes it (moto: neither, and the policy dropped out of the stack on update).
14. AWS::KMS::Key: update applies KeyPolicy, Description, EnableKeyRotation, Enabled (moto: no
    update, and the key dropped out of the stack); the policy is stored as JSON text; Tags in
    CloudFormation's Key/Value form (moto: KeyError 'TagKey').
15. AWS::S3::Bucket: VersioningConfiguration, PublicAccessBlockConfiguration and EventBridge
    notifications applied; deleting a non-empty bucket fails with BucketNotEmpty (moto: reported
    success and kept the bucket).
16. AWS::SNS::Topic: updated in place unless TopicName changes (moto re-created it, which dropped
    its subscriptions and policy). AWS::Logs::LogGroup: KmsKeyId applied; RetentionInDays and
    KmsKeyId updated in place (moto: no update).
S3, KMS and STS APIs (cfn_models.py)
17. AssumeRole needs the role to exist and to trust the caller's account, else AccessDenied (moto:
    any ARN, which gave credentials for any account).
18. GetBucketNotificationConfiguration returns the EventBridgeConfiguration that moto stores.
19. Bucket policies on object requests (moto enforces the statements whose Principal is "*"): a
    statement applies only when its Condition holds, evaluated with aws:SecureTransport=true (AWS is
    TLS-only; this endpoint is plain HTTP for convenience) and the request's
    x-amz-server-side-encryption headers (moto denied the request whenever it could not evaluate a
    Condition, whatever the Effect: a DenyInsecureTransport statement blocked every upload); the
    403 carries an AccessDenied error (moto: empty body).
20. CreateKey with the tag `_custom_id_` (moto's convention for chosen ids elsewhere) creates the key
    with that id, so an org.yaml naming its source key by ARN can be bootstrapped.
21. GetBucketVersioning answers a VersioningConfiguration document (moto: a root element named
    after the action, which the SDKs refuse to parse).
22. CreateStack, UpdateStack, CreateChangeSet and DeleteStack naming a service role (RoleARN) fail
    unless the role exists in the account and trusts cloudformation.amazonaws.com (moto: any ARN).
Account quotas (quotas.py)
23. A test hook sets a quota's value: `POST /_local_aws/quotas` with {account, service, code,
    value[, region]}; `DELETE` forgets them. IAM's roles (L-FE177D64) and policies (L-E95E4862)
    codes set `RolesQuota` / `PoliciesQuota` of GetAccountSummary (moto: fixed defaults).
24. GetServiceQuota answers every value set that way (moto: VPC quotas only, else
    NoSuchResourceException, which it still answers for the others).

CloudFormation drift detection (drift.py)
25. DetectStackDrift, DescribeStackDriftDetectionStatus and DescribeStackResourceDrifts: the
    template's resolved properties against the live resource, for AWS::IAM::Role and
    AWS::CodeBuild::Project (other types NOT_CHECKED); detection completes synchronously (moto:
    not implemented). CodeBuild's UpdateProject (moto: not implemented), the console's edit.

HTTP (keepalive.py)
26. Connections are kept alive (HTTP/1.1, as S3 does; werkzeug's server closed each one after its
    response), and moto's dispatch no longer lists its package directory on every request: the
    same answers at about a third of the server's CPU per request.

Not patched, worth knowing: change sets need ChangeSetType (moto's
default is CREATE, AWS's UPDATE); Tags are not propagated to resources; custom resources and
TimeoutInMinutes are not emulated; the TemplateURL host must not be 127.0.0.1 (moto reads the
bucket from the host): use https://BUCKET.s3.REGION.amazonaws.com/KEY, which resolves locally.
"""

import argparse
import os
import signal
import sys
import threading
import time


def _owner_start_time(pid: int) -> str:
    """The process start time (clock ticks since boot): a reused pid has another one."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # exited, not yet reaped by its parent
        raise ProcessLookupError(pid)
    return fields[19]


def _watch_owner(pid: int) -> None:
    """Exit (SIGTERM to ourselves) once process `pid` is gone."""
    try:
        started = _owner_start_time(pid)
    except OSError:
        started = None
    while True:
        try:
            if started is None or _owner_start_time(pid) != started:
                raise ProcessLookupError
        except (OSError, ProcessLookupError):
            print(f"local-aws: owner process {pid} is gone, exiting", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--owner-pid", type=int, help="exit when this process is gone")
    parser.add_argument("--default-account", help="account of requests with unknown keys")
    parser.add_argument("--tag", help="marks the command line; unused")
    args = parser.parse_args()

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import cfn_engine
    import cfn_models
    import drift
    import keepalive
    import quotas
    from moto.iam import models as iam_models
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    cfn_models.install()
    cfn_engine.install()
    quotas.install()
    drift.install()
    keepalive.install()
    if args.default_account:
        iam_models.DEFAULT_ACCOUNT_ID = args.default_account

    dispatcher = DomainDispatcherApplication(create_backend_app)

    def app(environ, start_response):
        """One request at a time: moto's backends are not thread-safe, and stack workers mutate them."""
        with cfn_engine.LOCK:
            hooked = quotas.handle(environ, start_response)
            if hooked is not None:
                return hooked
            return dispatcher(environ, start_response)

    try:
        server = make_server(args.host, args.port, app, threaded=True, request_handler=keepalive.handler(MotoRequestHandler))
    except OSError as error:
        sys.exit(f"local-aws: cannot listen on {args.host}:{args.port}: {error}")
    port = server.server_port
    os.environ["MOTO_PORT"] = str(port)  # moto builds some URLs (SQS queues, ...) from it

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.owner_pid:
        threading.Thread(target=_watch_owner, args=(args.owner_pid,), daemon=True).start()
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as out:
            out.write(f"{port}\n")
        os.replace(args.port_file + ".tmp", args.port_file)
    print(f"local-aws: listening on http://{args.host}:{port} (pid {os.getpid()})", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        if args.port_file:
            try:
                os.remove(args.port_file)
            except OSError:
                pass
        sys.stderr.flush()
        os._exit(0)  # skips interpreter teardown (about 0.5 s of freeing moto's objects)


if __name__ == "__main__":
    main()
