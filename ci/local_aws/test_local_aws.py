"""End-to-end test of ci/local-aws and the launcher's CloudFormation behaviour (run by ci/test-local-aws).

Starts a server on a fresh state directory through the real script, checks the bootstrap, deploys
stacks that use every extra model and inspects them through the service APIs, makes stacks fail on
create and on update, checks the refusals AWS makes, stops the server and checks --owner-pid.
Any mismatch fails; the last line is "N passed, N failed". Timings are printed for the report.
"""

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

import boto3
import yaml
from botocore.exceptions import ClientError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "ci", "local-aws")
TOOLING, TARGETS, REGION = "123456789012", ["111111111111", "222222222222", "333333333333"], "us-east-1"
SOURCE_BUCKET, SOURCE_ALIAS, BOOTSTRAP_ROLE = (
    "example-pipeforge-source",
    "alias/pipeforge-source",
    "pipeforge-bootstrap",
)
TERMINAL = re.compile(r"(_COMPLETE|_FAILED)$")

results = {"passed": 0, "failed": 0}
timings = {}


class Mismatch(AssertionError):
    pass


def expect(condition, message):
    if not condition:
        raise Mismatch(message)


def equal(actual, wanted, what):
    if actual != wanted:
        raise Mismatch(f"{what}: got {actual!r}, want {wanted!r}")


def raises(code, call, *args, **kwargs):
    """The AWS error of `call`; fails unless its code is `code`."""
    try:
        call(*args, **kwargs)
    except ClientError as error:
        equal(error.response["Error"]["Code"], code, f"error code of {call.__name__}")
        return error.response["Error"]["Message"]
    raise Mismatch(f"{call.__name__} succeeded, want {code}")


def check(name):
    def run(function):
        started = time.monotonic()
        try:
            function()
        except Exception as error:
            results["failed"] += 1
            detail = str(error) if isinstance(error, Mismatch) else traceback.format_exc()
            print(f"FAIL {name}: {detail}", flush=True)
        else:
            results["passed"] += 1
            print(f"ok   {name} ({time.monotonic() - started:.2f}s)", flush=True)
        return function

    return run


def alive(pid):
    """Process `pid` exists and has not exited (a zombie waiting to be reaped has)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def script(*args, timeout=600):
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------------------ clients


class Aws:
    def __init__(self, endpoint, key="testing", secret="testing", token=None):
        self.args = dict(
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            aws_session_token=token,
        )

    def __call__(self, service):
        return boto3.client(service, **self.args)

    def assume(self, account, role=BOOTSTRAP_ROLE):
        creds = self("sts").assume_role(RoleArn=f"arn:aws:iam::{account}:role/{role}", RoleSessionName="test")[
            "Credentials"
        ]
        return Aws(self.args["endpoint_url"], creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])


def wait(cfn, stack, timeout=30):
    """Poll until the stack reaches a final state; returns the stack description."""
    deadline = time.monotonic() + timeout
    while True:
        description = cfn.describe_stacks(StackName=stack)["Stacks"][0]
        if TERMINAL.search(description["StackStatus"]) and "_IN_PROGRESS" not in description["StackStatus"]:
            return description
        if time.monotonic() > deadline:
            raise Mismatch(f"stack {stack} still {description['StackStatus']} after {timeout}s")
        time.sleep(0.02)


def events(cfn, stack):
    """Stack events, oldest first, as (LogicalResourceId, ResourceStatus, reason) triples."""
    found = cfn.describe_stack_events(StackName=stack)["StackEvents"]
    return [(e["LogicalResourceId"], e["ResourceStatus"], e.get("ResourceStatusReason") or "") for e in reversed(found)]


def outputs(description):
    return {o["OutputKey"]: o["OutputValue"] for o in description.get("Outputs") or []}


def deploy(cfn, stack, template, change_set_type, parameters=(), name=None):
    """Create a change set, wait for it, execute it, wait for the stack; returns (change set, stack)."""
    name = name or f"cs-{int(time.monotonic() * 1000)}"
    cfn.create_change_set(
        StackName=stack,
        ChangeSetName=name,
        ChangeSetType=change_set_type,
        TemplateBody=json.dumps(template),
        Capabilities=["CAPABILITY_NAMED_IAM"],
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters],
    )
    change_set = cfn.describe_change_set(StackName=stack, ChangeSetName=name)
    equal(change_set["Status"], "CREATE_COMPLETE", f"change set {name} status")
    cfn.execute_change_set(StackName=stack, ChangeSetName=name)
    return change_set, wait(cfn, stack)


# ------------------------------------------------------------------------------------------ templates


def sub(text):
    return {"Fn::Sub": text}


def ref(name):
    return {"Ref": name}


def att(name, attribute):
    return {"Fn::GetAtt": [name, attribute]}


def trust(service):
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
    }


BUILDSPEC = "version: 0.2\nphases:\n  build:\n    commands:\n      - make build\n"


def probe_template():
    """One resource of every extra model, wired the way pipeforge's pipeline stack wires them."""
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "local-aws probe",
        "Parameters": {
            "Name": {"Type": "String", "Default": "probe"},
            "Target": {"Type": "String", "Default": "222222222222"},
        },
        "Resources": {
            "Key": {
                "Type": "AWS::KMS::Key",
                "Properties": {
                    "EnableKeyRotation": True,
                    "KeyPolicy": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Sid": "Root",
                                "Effect": "Allow",
                                "Principal": {"AWS": sub("arn:aws:iam::${AWS::AccountId}:root")},
                                "Action": "kms:*",
                                "Resource": "*",
                            }
                        ],
                    },
                },
            },
            "KeyAlias": {
                "Type": "AWS::KMS::Alias",
                "Properties": {"AliasName": sub("alias/${Name}-artifacts"), "TargetKeyId": ref("Key")},
            },
            "Artifacts": {
                "Type": "AWS::S3::Bucket",
                "Properties": {
                    "BucketName": sub("${Name}-artifacts-${AWS::AccountId}"),
                    "VersioningConfiguration": {"Status": "Enabled"},
                    "BucketEncryption": {
                        "ServerSideEncryptionConfiguration": [
                            {
                                "ServerSideEncryptionByDefault": {
                                    "SSEAlgorithm": "aws:kms",
                                    "KMSMasterKeyID": att("Key", "Arn"),
                                }
                            }
                        ]
                    },
                },
            },
            "ArtifactsPolicy": {
                "Type": "AWS::S3::BucketPolicy",
                "Properties": {
                    "Bucket": ref("Artifacts"),
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Sid": "TargetRead",
                                "Effect": "Allow",
                                "Principal": {"AWS": sub("arn:aws:iam::${Target}:root")},
                                "Action": "s3:GetObject",
                                "Resource": sub("${Artifacts.Arn}/*"),
                            },
                            {
                                "Sid": "DenyInsecureTransport",
                                "Effect": "Deny",
                                "Principal": "*",
                                "Action": "s3:*",
                                "Resource": [att("Artifacts", "Arn"), sub("${Artifacts.Arn}/*")],
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            },
                            {
                                "Sid": "DenyUnencryptedUploads",
                                "Effect": "Deny",
                                "Principal": "*",
                                "Action": "s3:PutObject",
                                "Resource": sub("${Artifacts.Arn}/*"),
                                "Condition": {"StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}},
                            },
                        ],
                    },
                },
            },
            "BuildPolicy": {
                "Type": "AWS::IAM::ManagedPolicy",
                "Properties": {
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": sub("${Artifacts.Arn}/*")}
                        ],
                    }
                },
            },
            "BuildRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "RoleName": sub("${Name}-build"),
                    "AssumeRolePolicyDocument": trust("codebuild.amazonaws.com"),
                    "ManagedPolicyArns": [ref("BuildPolicy"), "arn:aws:iam::aws:policy/AWSCodeBuildDeveloperAccess"],
                    "Policies": [
                        {
                            "PolicyName": "logs",
                            "PolicyDocument": {
                                "Version": "2012-10-17",
                                "Statement": [{"Effect": "Allow", "Action": "logs:PutLogEvents", "Resource": "*"}],
                            },
                        }
                    ],
                },
            },
            "BuildLogs": {
                "Type": "AWS::Logs::LogGroup",
                "Properties": {
                    "LogGroupName": sub("/aws/codebuild/${Name}-build"),
                    "RetentionInDays": 30,
                    "KmsKeyId": att("Key", "Arn"),
                },
            },
            "Reports": {
                "Type": "AWS::CodeBuild::ReportGroup",
                "Properties": {
                    "Name": sub("${Name}-junit"),
                    "Type": "TEST",
                    "DeleteReports": True,
                    "ExportConfig": {"ExportConfigType": "NO_EXPORT"},
                },
            },
            "Build": {
                "Type": "AWS::CodeBuild::Project",
                "Properties": {
                    "LogsConfig": {"CloudWatchLogs": {"Status": "ENABLED", "GroupName": ref("BuildLogs")}},
                    "Name": sub("${Name}-build"),
                    "ServiceRole": att("BuildRole", "Arn"),
                    "EncryptionKey": att("Key", "Arn"),
                    "Artifacts": {"Type": "CODEPIPELINE"},
                    "TimeoutInMinutes": 30,
                    "Environment": {
                        "Type": "LINUX_CONTAINER",
                        "ComputeType": "BUILD_GENERAL1_SMALL",
                        "Image": "aws/codebuild/standard:7.0",
                        "EnvironmentVariables": [{"Name": "TARGET", "Type": "PLAINTEXT", "Value": ref("Target")}],
                    },
                    "Source": {"Type": "CODEPIPELINE", "BuildSpec": BUILDSPEC},
                },
            },
            "PipelineRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "RoleName": sub("${Name}-pipeline"),
                    "AssumeRolePolicyDocument": trust("codepipeline.amazonaws.com"),
                },
            },
            "PipelinePolicy": {
                "Type": "AWS::IAM::Policy",
                "Properties": {
                    "PolicyName": "pipeline",
                    "Roles": [ref("PipelineRole")],
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {"Effect": "Allow", "Action": "codebuild:StartBuild", "Resource": att("Build", "Arn")}
                        ],
                    },
                },
            },
            "Pipeline": {
                "Type": "AWS::CodePipeline::Pipeline",
                "Properties": {
                    "Name": sub("${Name}-pipeline"),
                    "RoleArn": att("PipelineRole", "Arn"),
                    "PipelineType": "V2",
                    "ArtifactStore": {
                        "Type": "S3",
                        "Location": ref("Artifacts"),
                        "EncryptionKey": {"Id": att("Key", "Arn"), "Type": "KMS"},
                    },
                    "Stages": [
                        {
                            "Name": "Source",
                            "Actions": [
                                {
                                    "Name": "Source",
                                    "ActionTypeId": {
                                        "Category": "Source",
                                        "Owner": "AWS",
                                        "Provider": "S3",
                                        "Version": "1",
                                    },
                                    "Configuration": {
                                        "S3Bucket": ref("Artifacts"),
                                        "S3ObjectKey": "source.zip",
                                        "PollForSourceChanges": False,
                                    },
                                    "OutputArtifacts": [{"Name": "Src"}],
                                }
                            ],
                        },
                        {
                            "Name": "Build",
                            "Actions": [
                                {
                                    "Name": "Build",
                                    "ActionTypeId": {
                                        "Category": "Build",
                                        "Owner": "AWS",
                                        "Provider": "CodeBuild",
                                        "Version": "1",
                                    },
                                    "Configuration": {"ProjectName": ref("Build")},
                                    "InputArtifacts": [{"Name": "Src"}],
                                    "OutputArtifacts": [{"Name": "Out"}],
                                }
                            ],
                        },
                        {
                            "Name": "Deploy",
                            "Actions": [
                                {
                                    "Name": "Deploy",
                                    "RunOrder": 2,
                                    "ActionTypeId": {
                                        "Category": "Deploy",
                                        "Owner": "AWS",
                                        "Provider": "CloudFormation",
                                        "Version": "1",
                                    },
                                    "RoleArn": sub("arn:aws:iam::${Target}:role/pipeforge-bootstrap"),
                                    "Configuration": {
                                        "ActionMode": "CREATE_UPDATE",
                                        "StackName": sub("${Name}-app"),
                                        "TemplatePath": "Out::app.json",
                                        "Capabilities": "CAPABILITY_NAMED_IAM",
                                        "RoleArn": sub("arn:aws:iam::${Target}:role/${Name}-exec"),
                                    },
                                    "InputArtifacts": [{"Name": "Out"}],
                                }
                            ],
                        },
                    ],
                },
            },
            "Topic": {
                "Type": "AWS::SNS::Topic",
                "Properties": {"TopicName": sub("${Name}-events"), "DisplayName": "probe"},
            },
            "TopicPolicy": {
                "Type": "AWS::SNS::TopicPolicy",
                "Properties": {
                    "Topics": [ref("Topic")],
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Sid": "Notifications",
                                "Effect": "Allow",
                                "Principal": {"Service": "codestar-notifications.amazonaws.com"},
                                "Action": "sns:Publish",
                                "Resource": ref("Topic"),
                            }
                        ],
                    },
                },
            },
            "Oncall": {
                "Type": "AWS::SNS::Subscription",
                "Properties": {"TopicArn": ref("Topic"), "Protocol": "email", "Endpoint": "oncall@example.com"},
            },
            "Notifications": {
                "Type": "AWS::CodeStarNotifications::NotificationRule",
                "Properties": {
                    "Name": sub("${Name}-pipeline"),
                    "DetailType": "FULL",
                    "Resource": sub("arn:aws:codepipeline:${AWS::Region}:${AWS::AccountId}:${Pipeline}"),
                    "EventTypeIds": ["codepipeline-pipeline-pipeline-execution-failed"],
                    "Targets": [{"TargetType": "SNS", "TargetAddress": ref("Topic")}],
                },
            },
            "Trigger": {
                "Type": "AWS::Events::Rule",
                "Properties": {
                    "EventPattern": {"source": ["aws.s3"], "detail": {"bucket": {"name": [ref("Artifacts")]}}},
                    "Targets": [
                        {
                            "Id": "pipeline",
                            "RoleArn": att("PipelineRole", "Arn"),
                            "Arn": sub("arn:aws:codepipeline:${AWS::Region}:${AWS::AccountId}:${Pipeline}"),
                        }
                    ],
                },
            },
        },
        "Outputs": {
            "PipelineName": {"Value": ref("Pipeline")},
            "PipelineVersion": {"Value": att("Pipeline", "Version")},
            "ProjectArn": {"Value": att("Build", "Arn")},
            "KeyArn": {"Value": att("Key", "Arn"), "Export": {"Name": sub("${AWS::StackName}-key")}},
            "NotificationRuleArn": {"Value": ref("Notifications")},
            "ReportGroupArn": {"Value": ref("Reports")},
        },
    }


def small_template(**extra_resources):
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic", "Properties": {"DisplayName": "one"}}},
        "Outputs": {"TopicArn": {"Value": ref("Topic")}},
    }
    template["Resources"].update(extra_resources)
    return template


FAILING_BUCKET = {"Type": "AWS::S3::Bucket", "Metadata": {"LocalAws": {"Fail": "injected by the test"}}}


# ---------------------------------------------------------------------------------------- the test


def main() -> int:
    state_dir = tempfile.mkdtemp(prefix="local-aws-test-")
    server = {}
    try:
        run_checks(state_dir, server)
    finally:
        script("stop", "--state-dir", state_dir)
        for process in server.get("sleepers", []):
            process.kill()
        shutil.rmtree(state_dir, ignore_errors=True)
    print("timings: " + ", ".join(f"{k} {v:.3f}s" for k, v in timings.items()))
    print(f"{results['passed']} passed, {results['failed']} failed")
    return 1 if results["failed"] else 0


def run_checks(state_dir, server):
    @check("start prints exactly the exports and records the server")
    def _():
        started = time.monotonic()
        done = script("start", "--state-dir", state_dir)
        timings["start (venv ready)"] = time.monotonic() - started
        equal(done.returncode, 0, f"exit code of start (stderr: {done.stderr.strip()})")
        lines = done.stdout.splitlines()
        equal(len(lines), 5, f"stdout lines of start: {done.stdout!r}")
        match = re.fullmatch(r"export AWS_ENDPOINT_URL=http://127\.0\.0\.1:(\d+)", lines[0])
        expect(match, f"first line {lines[0]!r}")
        equal(
            lines[1:],
            [
                "export AWS_ACCESS_KEY_ID=testing",
                "export AWS_SECRET_ACCESS_KEY=testing",
                f"export AWS_REGION={REGION}",
                f"export AWS_DEFAULT_REGION={REGION}",
            ],
            "credential lines",
        )
        server["endpoint"] = lines[0].split("=", 1)[1]
        server["pid"] = int(open(os.path.join(state_dir, "server.pid")).read())
        equal(open(os.path.join(state_dir, "server.port")).read().strip(), match.group(1), "recorded port")
        again = script("start", "--state-dir", state_dir)
        equal((again.returncode, again.stdout), (0, done.stdout), "second start (already running)")
        equal(int(open(os.path.join(state_dir, "server.pid")).read()), server["pid"], "pid after second start")
        env = script("env", "--state-dir", state_dir)
        equal((env.returncode, env.stdout), (0, done.stdout), "env")
        status = script("status", "--state-dir", state_dir)
        equal(status.returncode, 0, "status exit code while running")
        expect(f"pid {server['pid']}" in status.stdout, f"status output {status.stdout!r}")

    if "endpoint" not in server:
        return
    aws = Aws(server["endpoint"])
    cfn = aws("cloudformation")

    @check("the quota hook sets GetAccountSummary's and GetServiceQuota's values; DELETE forgets them")
    def _():
        import urllib.request

        def hook(method, body=None):
            data = json.dumps(body).encode() if body is not None else None
            request = urllib.request.Request(server["endpoint"] + "/_local_aws/quotas", data=data, method=method)
            with urllib.request.urlopen(request, timeout=10) as answer:
                equal(answer.status, 200, f"{method} status")

        iam, quotas = aws("iam"), aws("service-quotas")
        equal(iam.get_account_summary()["SummaryMap"]["RolesQuota"], 1000, "moto's default")
        raises("NoSuchResourceException", quotas.get_service_quota, ServiceCode="cloudformation", QuotaCode="L-0485CB21")
        hook("POST", {"account": TOOLING, "service": "iam", "code": "L-FE177D64", "value": 12})
        hook("POST", {"account": TOOLING, "region": REGION, "service": "cloudformation", "code": "L-0485CB21", "value": 7})
        equal(iam.get_account_summary()["SummaryMap"]["RolesQuota"], 12, "RolesQuota set")
        got = quotas.get_service_quota(ServiceCode="cloudformation", QuotaCode="L-0485CB21")["Quota"]["Value"]
        equal(got, 7.0, "stack count set")
        other = boto3.client("service-quotas", **{**aws.args, "region_name": "eu-west-1"})
        raises("NoSuchResourceException", other.get_service_quota, ServiceCode="cloudformation", QuotaCode="L-0485CB21")
        hook("DELETE")
        equal(iam.get_account_summary()["SummaryMap"]["RolesQuota"], 1000, "forgotten")

    @check("connections are kept alive; unread and chunked bodies never leak into the next request")
    def _():
        import socket

        host, port = server["endpoint"].rsplit("//", 1)[1].split(":")
        hook = "/_local_aws/quotas"

        def answers(sock, count):
            """Reads `count` responses off `sock`: [(status, headers, body)]."""
            data, out = b"", []
            sock.settimeout(10)
            while len(out) < count:
                head, sep, rest = data.partition(b"\r\n\r\n")
                if sep:
                    lines = head.decode().split("\r\n")
                    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
                    length = int(headers.get("content-length", "0"))
                    if len(rest) >= length:
                        out.append((int(lines[0].split()[1]), headers, rest[:length]))
                        data = rest[length:]
                        continue
                chunk = sock.recv(65536)
                if not chunk:
                    raise Mismatch(f"connection closed after {len(out)} of {count} responses")
                data += chunk
            return out, data

        smuggled = f"DELETE {hook} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        with socket.create_connection((host, int(port))) as sock:
            requests = [
                # The hook answers GET with 405 without reading the body: the body is drained, not
                # taken for a request (that DELETE would answer 200).
                f"GET {hook} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(smuggled)}\r\n\r\n{smuggled}",
                # A chunked body the hook does not read either (it reads Content-Length bytes).
                f"POST {hook} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                f"{len(smuggled):x}\r\n{smuggled}\r\n0\r\n\r\n",
                f"POST {hook} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}",
                f"DELETE {hook} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            ]
            sock.sendall("".join(requests).encode())
            got, rest = answers(sock, 4)
            equal([status for status, _, _ in got], [405, 400, 400, 200], "statuses on one connection")
            equal(got[0][2], b"POST or DELETE\n", "body of the 405")
            equal(
                [headers.get("connection") for _, headers, _ in got],
                ["keep-alive", "keep-alive", "keep-alive", "close"],
                "Connection headers",
            )
            equal(rest + sock.recv(65536), b"", "bytes after the last response (the server closes)")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(f"GET {hook} HTTP/1.0\r\n\r\n".encode())
            got, _ = answers(sock, 1)
            equal((got[0][0], got[0][1].get("connection")), (405, "close"), "an HTTP/1.0 request")
            equal(sock.recv(65536), b"", "an HTTP/1.0 connection after its response")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(f"GET {hook} HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n".encode())
            got, _ = answers(sock, 1)
            equal(got[0][1].get("connection"), "close", "a request with a malformed Content-Length")
        s3 = aws("s3")
        s3.put_object(Bucket=SOURCE_BUCKET, Key="t/meta", Body=b"x", Metadata={"team_name": "a", "team-id": "b"})
        equal(s3.head_object(Bucket=SOURCE_BUCKET, Key="t/meta")["Metadata"], {"team_name": "a", "team-id": "b"}, "metadata")

    @check("bad usage fails with exit code 2 and a hint")
    def _():
        for args in (
            ["frobnicate"],
            ["start", "--port", "x"],
            ["stop", "--owner-pid", "1"],
            ["start", "--org", "/nope.yaml"],
        ):
            done = script(*args)
            equal(done.returncode, 2, f"exit code of {args}")
            expect(
                re.search(r"^local-aws: error: .+\n  help: .+", done.stderr, re.M), f"stderr of {args}: {done.stderr!r}"
            )
        usage = script("--help")
        equal(usage.returncode, 0, "exit code of --help")
        for text in (
            "start [--port N] [--state-dir DIR] [--owner-pid PID]",
            "LocalAws: {Fail:",
            "status [--state-dir DIR]",
        ):
            expect(text in usage.stdout, f"--help lacks {text!r}")

    @check("source bucket: SSE-KMS with the org key, versioning, EventBridge, public access blocked")
    def _():
        s3, kms = aws("s3"), aws("kms")
        key = next(a for a in kms.list_aliases()["Aliases"] if a["AliasName"] == SOURCE_ALIAS)
        key_arn = kms.describe_key(KeyId=key["TargetKeyId"])["KeyMetadata"]["Arn"]
        rule = s3.get_bucket_encryption(Bucket=SOURCE_BUCKET)["ServerSideEncryptionConfiguration"]["Rules"][0]
        equal(
            rule["ApplyServerSideEncryptionByDefault"],
            {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn},
            "encryption",
        )
        equal(s3.get_bucket_versioning(Bucket=SOURCE_BUCKET).get("Status"), "Enabled", "versioning")
        expect(
            "EventBridgeConfiguration" in s3.get_bucket_notification_configuration(Bucket=SOURCE_BUCKET), "EventBridge"
        )
        block = s3.get_public_access_block(Bucket=SOURCE_BUCKET)["PublicAccessBlockConfiguration"]
        expect(all(block.values()) and len(block) == 4, f"public access block {block}")
        s3.put_object(
            Bucket=SOURCE_BUCKET, Key="t/p/source.zip", Body=b"zip", ServerSideEncryption="aws:kms", SSEKMSKeyId=key_arn
        )
        head = s3.head_object(Bucket=SOURCE_BUCKET, Key="t/p/source.zip")
        equal((head["ServerSideEncryption"], bool(head.get("VersionId"))), ("aws:kms", True), "uploaded object")

    @check("KMS alias names an enabled key with rotation")
    def _():
        kms = aws("kms")
        alias = [a for a in kms.list_aliases()["Aliases"] if a["AliasName"] == SOURCE_ALIAS]
        equal(len(alias), 1, "aliases named alias/pipeforge-source")
        metadata = kms.describe_key(KeyId=SOURCE_ALIAS)["KeyMetadata"]
        equal((metadata["Enabled"], metadata["KeyManager"]), (True, "CUSTOMER"), "key state")
        expect(kms.get_key_rotation_status(KeyId=metadata["KeyId"])["KeyRotationEnabled"], "rotation enabled")

    @check("bootstrap role in every target account, reachable only through AssumeRole with trust")
    def _():
        equal(aws("sts").get_caller_identity()["Account"], TOOLING, "tooling account")
        for account in TARGETS:
            target = aws.assume(account)
            equal(target("sts").get_caller_identity()["Account"], account, f"account after AssumeRole into {account}")
            role = target("iam").get_role(RoleName=BOOTSTRAP_ROLE)["Role"]
            principal = role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
            equal(principal, {"AWS": f"arn:aws:iam::{TOOLING}:root"}, f"trust of the role in {account}")
        message = raises(
            "AccessDenied",
            aws("sts").assume_role,
            RoleArn=f"arn:aws:iam::444444444444:role/{BOOTSTRAP_ROLE}",
            RoleSessionName="denied",
        )
        expect("444444444444" in message, message)
        other = aws.assume(TARGETS[0])  # trust names the tooling account only
        raises(
            "AccessDenied",
            other("sts").assume_role,
            RoleArn=f"arn:aws:iam::{TARGETS[1]}:role/{BOOTSTRAP_ROLE}",
            RoleSessionName="denied",
        )

    @check("a stack operation naming a service role needs the role to exist and trust CloudFormation")
    def _():
        target = aws.assume(TARGETS[0])
        cfn = target("cloudformation")
        body = json.dumps(small_template())
        exec_role = f"arn:aws:iam::{TARGETS[0]}:role/{BOOTSTRAP_ROLE}-cfn-exec"
        for role in (f"arn:aws:iam::{TARGETS[0]}:role/missing", f"arn:aws:iam::{TARGETS[0]}:role/{BOOTSTRAP_ROLE}"):
            message = raises(
                "ValidationError",
                cfn.create_change_set,
                StackName="lx-service-role",
                ChangeSetName="cs1",
                ChangeSetType="CREATE",
                TemplateBody=body,
                RoleARN=role,
            )
            expect("is invalid or cannot be assumed" in message, message)
        cfn.create_change_set(
            StackName="lx-service-role", ChangeSetName="cs2", ChangeSetType="CREATE", TemplateBody=body, RoleARN=exec_role
        )
        cfn.delete_change_set(StackName="lx-service-role", ChangeSetName="cs2")
        # DeleteStack too (the stack is in REVIEW_IN_PROGRESS after its CREATE change set).
        message = raises(
            "ValidationError", cfn.delete_stack, StackName="lx-service-role", RoleARN=f"arn:aws:iam::{TARGETS[0]}:role/missing"
        )
        expect("is invalid or cannot be assumed" in message, message)
        recovery_exec = f"arn:aws:iam::{TARGETS[0]}:role/{BOOTSTRAP_ROLE}-recovery-exec"
        cfn.delete_stack(StackName="lx-service-role", RoleARN=recovery_exec)

    @check("target stack in another account from a TemplateURL in the source bucket")
    def _():
        key = "payments/orders-api/bundle/abc/stacks/app.json"
        aws("s3").put_object(
            Bucket=SOURCE_BUCKET,
            Key=key,
            Body=json.dumps(small_template()).encode(),
            ServerSideEncryption="aws:kms",
            SSEKMSKeyId=SOURCE_ALIAS,
        )
        target = aws.assume(TARGETS[0])
        target_cfn = target("cloudformation")
        target_cfn.create_change_set(
            StackName="app",
            ChangeSetName="first",
            ChangeSetType="CREATE",
            TemplateURL=f"https://{SOURCE_BUCKET}.s3.{REGION}.amazonaws.com/{key}",
        )
        target_cfn.execute_change_set(StackName="app", ChangeSetName="first")
        stack = wait(target_cfn, "app")
        equal(stack["StackStatus"], "CREATE_COMPLETE", "target stack")
        expect(stack["StackId"].split(":")[4] == TARGETS[0], stack["StackId"])
        expect(outputs(stack)["TopicArn"].split(":")[4] == TARGETS[0], f"outputs {outputs(stack)}")
        raises("ValidationError", cfn.describe_stacks, StackName="app")  # not in the tooling account
        target_cfn.create_change_set(
            StackName="app",
            ChangeSetName="second",
            ChangeSetType="UPDATE",
            TemplateBody=json.dumps(small_template(Two={"Type": "AWS::SNS::Topic"})),
        )
        listed = target_cfn.list_change_sets(StackName="app")["Summaries"]
        equal([s["ChangeSetName"] for s in listed], ["first", "second"], "change sets of app")
        equal(target_cfn.list_change_sets(StackName="other")["Summaries"], [], "change sets of another stack")

    @check("probe stack with every extra model: CREATE_COMPLETE, per-resource events, outputs")
    def _():
        template = probe_template()
        started = time.monotonic()
        cfn.create_stack(StackName="probe", TemplateBody=json.dumps(template), Capabilities=["CAPABILITY_NAMED_IAM"])
        stack = wait(cfn, "probe")
        timings["first stack create (18 resources)"] = time.monotonic() - started
        equal(
            stack["StackStatus"],
            "CREATE_COMPLETE",
            f"status ({stack.get('StackStatusReason')}; {events(cfn, 'probe')})",
        )
        got = outputs(stack)
        equal(
            sorted(got),
            ["KeyArn", "NotificationRuleArn", "PipelineName", "PipelineVersion", "ProjectArn", "ReportGroupArn"],
            "outputs",
        )
        equal(
            got["ReportGroupArn"], f"arn:aws:codebuild:{REGION}:{TOOLING}:report-group/probe-junit", "report group ARN"
        )
        equal((got["PipelineName"], got["PipelineVersion"]), ("probe-pipeline", "1"), "pipeline outputs")
        equal(got["ProjectArn"], f"arn:aws:codebuild:{REGION}:{TOOLING}:project/probe-build", "project ARN output")
        expect(
            got["NotificationRuleArn"].startswith(
                f"arn:aws:codestar-notifications:{REGION}:{TOOLING}:notificationrule/"
            ),
            got["NotificationRuleArn"],
        )
        seen = events(cfn, "probe")
        for logical_id in template["Resources"]:
            statuses = [s for (l, s, _) in seen if l == logical_id]
            equal(statuses, ["CREATE_IN_PROGRESS", "CREATE_COMPLETE"], f"events of {logical_id}")
        equal([s for (l, s, _) in seen if l == "probe"], ["CREATE_IN_PROGRESS", "CREATE_COMPLETE"], "stack events")
        listed = {
            r["LogicalResourceId"]: r for r in cfn.list_stack_resources(StackName="probe")["StackResourceSummaries"]
        }
        equal(sorted(listed), sorted(template["Resources"]), "listed resources")
        equal({r["ResourceStatus"] for r in listed.values()}, {"CREATE_COMPLETE"}, "resource statuses")
        equal(listed["Pipeline"]["ResourceType"], "AWS::CodePipeline::Pipeline", "pipeline resource type")
        started = time.monotonic()
        cfn.create_stack(StackName="small", TemplateBody=json.dumps(small_template()))
        equal(wait(cfn, "small")["StackStatus"], "CREATE_COMPLETE", "small stack")
        timings["later stack create (1 resource)"] = time.monotonic() - started

    @check("CodeBuild project through the CodeBuild API")
    def _():
        projects = aws("codebuild").batch_get_projects(names=["probe-build"])["projects"]
        equal(len(projects), 1, "projects named probe-build")
        project = projects[0]
        equal(project["source"], {"type": "CODEPIPELINE", "buildspec": BUILDSPEC}, "source")
        equal(project["serviceRole"], f"arn:aws:iam::{TOOLING}:role/probe-build", "service role")
        equal(
            project["environment"]["environmentVariables"],
            [{"name": "TARGET", "type": "PLAINTEXT", "value": "222222222222"}],
            "environment variables",
        )
        equal(
            (project["environment"]["image"], project["environment"]["computeType"], project["timeoutInMinutes"]),
            ("aws/codebuild/standard:7.0", "BUILD_GENERAL1_SMALL", 30),
            "environment",
        )
        expect(project["encryptionKey"].startswith(f"arn:aws:kms:{REGION}:{TOOLING}:key/"), project["encryptionKey"])
        equal(
            project["logsConfig"]["cloudWatchLogs"],
            {"status": "ENABLED", "groupName": "/aws/codebuild/probe-build"},
            "logs config",
        )
        groups = aws("logs").describe_log_groups(logGroupNamePrefix="/aws/codebuild/probe-build")["logGroups"]
        equal([(g["retentionInDays"], g["kmsKeyId"]) for g in groups], [(30, project["encryptionKey"])], "log group")

    @check("CodePipeline V2 pipeline, stages, cross-account action role through the CodePipeline API")
    def _():
        pipeline = aws("codepipeline").get_pipeline(name="probe-pipeline")["pipeline"]
        equal(
            (pipeline["pipelineType"], pipeline["roleArn"], pipeline["version"]),
            ("V2", f"arn:aws:iam::{TOOLING}:role/probe-pipeline", 1),
            "pipeline",
        )
        equal([s["name"] for s in pipeline["stages"]], ["Source", "Build", "Deploy"], "stages")
        equal(pipeline["artifactStore"]["location"], f"probe-artifacts-{TOOLING}", "artifact store")
        equal(pipeline["artifactStore"]["encryptionKey"]["type"], "KMS", "artifact store key")
        source = pipeline["stages"][0]["actions"][0]
        equal(source["configuration"]["PollForSourceChanges"], "false", "configuration values are strings")
        deploy_action = pipeline["stages"][2]["actions"][0]
        equal(deploy_action["roleArn"], "arn:aws:iam::222222222222:role/pipeforge-bootstrap", "deploy action role")
        equal(
            deploy_action["configuration"],
            {
                "ActionMode": "CREATE_UPDATE",
                "StackName": "probe-app",
                "TemplatePath": "Out::app.json",
                "Capabilities": "CAPABILITY_NAMED_IAM",
                "RoleArn": "arn:aws:iam::222222222222:role/probe-exec",
            },
            "deploy configuration",
        )
        equal(
            (deploy_action["actionTypeId"]["provider"], deploy_action["runOrder"]),
            ("CloudFormation", 2),
            "deploy action",
        )

    @check("KMS key policy and rotation, bucket policy and versioning, IAM roles and policies")
    def _():
        kms, s3, iam = aws("kms"), aws("s3"), aws("iam")
        key_id = kms.describe_key(KeyId="alias/probe-artifacts")["KeyMetadata"]["KeyId"]
        policy = json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
        equal([s["Sid"] for s in policy["Statement"]], ["Root"], "key policy statements")
        expect(kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"], "stack key rotation")
        bucket = f"probe-artifacts-{TOOLING}"
        bucket_policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
        equal(
            [(st["Sid"], st["Effect"]) for st in bucket_policy["Statement"]],
            [("TargetRead", "Allow"), ("DenyInsecureTransport", "Deny"), ("DenyUnencryptedUploads", "Deny")],
            "bucket policy",
        )
        equal(
            bucket_policy["Statement"][0]["Principal"],
            {"AWS": "arn:aws:iam::222222222222:root"},
            "bucket policy principal",
        )
        s3.put_object(Bucket=bucket, Key="ok", Body=b"x", ServerSideEncryption="aws:kms")  # the policy lets it in
        equal(s3.get_object(Bucket=bucket, Key="ok")["Body"].read(), b"x", "object behind the bucket policy")
        try:
            s3.put_object(Bucket=bucket, Key="plain", Body=b"x")
        except ClientError as error:
            equal(
                (error.response["ResponseMetadata"]["HTTPStatusCode"], error.response["Error"]["Code"]),
                (403, "AccessDenied"),
                "unencrypted upload",
            )
        else:
            raise Mismatch("an upload without SSE-KMS passed the DenyUnencryptedUploads statement")
        s3.delete_object(Bucket=bucket, Key="ok")
        equal(s3.get_bucket_versioning(Bucket=bucket).get("Status"), "Enabled", "stack bucket versioning")
        attached = sorted(
            p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName="probe-build")["AttachedPolicies"]
        )
        equal(len(attached), 2, f"attached policies {attached}")
        expect(attached[0].startswith(f"arn:aws:iam::{TOOLING}:policy/probe-BuildPolicy-"), attached[0])
        equal(attached[1], "arn:aws:iam::aws:policy/AWSCodeBuildDeveloperAccess", "AWS managed policy")
        equal(iam.list_role_policies(RoleName="probe-build")["PolicyNames"], ["logs"], "inline policies")
        trusted = iam.get_role(RoleName="probe-pipeline")["Role"]["AssumeRolePolicyDocument"]["Statement"][0][
            "Principal"
        ]
        equal(trusted, {"Service": "codepipeline.amazonaws.com"}, "pipeline role trust")
        document = iam.get_role_policy(RoleName="probe-pipeline", PolicyName="pipeline")["PolicyDocument"]
        equal(
            document["Statement"][0]["Resource"],
            f"arn:aws:codebuild:{REGION}:{TOOLING}:project/probe-build",
            "AWS::IAM::Policy on the pipeline role",
        )

    @check("SNS subscription and topic policy, Events rule target")
    def _():
        sns, events_client = aws("sns"), aws("events")
        topic = f"arn:aws:sns:{REGION}:{TOOLING}:probe-events"
        subscriptions = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
        equal(
            [(s["Protocol"], s["Endpoint"]) for s in subscriptions], [("email", "oncall@example.com")], "subscriptions"
        )
        policy = json.loads(sns.get_topic_attributes(TopicArn=topic)["Attributes"]["Policy"])
        equal([s.get("Sid") for s in policy["Statement"]], ["Notifications"], "topic policy")
        rule = next(r for r in events_client.list_rules()["Rules"] if r["Name"].startswith("probe-Trigger-"))
        targets = events_client.list_targets_by_rule(Rule=rule["Name"])["Targets"]
        equal([t["Arn"] for t in targets], [f"arn:aws:codepipeline:{REGION}:{TOOLING}:probe-pipeline"], "rule targets")

    @check("update through an UPDATE change set: diff, new values through the APIs, outputs recomputed")
    def _():
        template = probe_template()
        resources = template["Resources"]
        resources["Build"]["Properties"]["Source"]["BuildSpec"] = BUILDSPEC + "      - make test\n"
        resources["Key"]["Properties"]["KeyPolicy"]["Statement"][0]["Sid"] = "RootAccount"
        resources["BuildRole"]["Properties"]["ManagedPolicyArns"] = [ref("BuildPolicy")]
        resources["BuildPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]["Action"] = [
            "s3:GetObject",
            "s3:PutObject",
        ]
        resources["Topic"]["Properties"]["DisplayName"] = "probe v2"
        resources["BuildLogs"]["Properties"]["RetentionInDays"] = 90
        resources["Pipeline"]["Properties"]["Stages"][2]["Actions"][0]["Configuration"][
            "ActionMode"
        ] = "REPLACE_ON_FAILURE"
        resources["Extra"] = {"Type": "AWS::SNS::Topic"}
        template["Outputs"]["ExtraArn"] = {"Value": ref("Extra")}
        started = time.monotonic()
        change_set, stack = deploy(cfn, "probe", template, "UPDATE", parameters=[("Target", "222222222222")])
        timings["change set update (7 modified, 1 added)"] = time.monotonic() - started
        changes = {c["ResourceChange"]["LogicalResourceId"]: c["ResourceChange"] for c in change_set["Changes"]}
        equal(
            {k: c["Action"] for k, c in changes.items()},
            {
                "Build": "Modify",
                "Key": "Modify",
                "BuildRole": "Modify",
                "BuildPolicy": "Modify",
                "Topic": "Modify",
                "Pipeline": "Modify",
                "BuildLogs": "Modify",
                "Extra": "Add",
            },
            "change set actions",
        )
        equal(
            (changes["Build"]["Replacement"], changes["Build"]["PhysicalResourceId"]),
            ("False", "probe-build"),
            "Build change",
        )
        equal(stack["StackStatus"], "UPDATE_COMPLETE", f"status ({events(cfn, 'probe')[-8:]})")
        got = outputs(stack)
        expect(
            got.get("ExtraArn", "").endswith(":probe-Extra-" + got.get("ExtraArn", "").rsplit("-", 1)[-1]),
            f"outputs {got}",
        )
        equal(got["PipelineVersion"], "2", "pipeline version output")
        project = aws("codebuild").batch_get_projects(names=["probe-build"])["projects"][0]
        expect(project["source"]["buildspec"].endswith("make test\n"), "updated buildspec")
        kms = aws("kms")
        key_id = kms.describe_key(KeyId="alias/probe-artifacts")["KeyMetadata"]["KeyId"]
        equal(
            json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])["Statement"][0]["Sid"],
            "RootAccount",
            "updated key policy",
        )
        iam = aws("iam")
        attached = iam.list_attached_role_policies(RoleName="probe-build")["AttachedPolicies"]
        equal(len(attached), 1, f"attached policies after update {attached}")
        policy = iam.get_policy(PolicyArn=attached[0]["PolicyArn"])["Policy"]
        equal(policy["DefaultVersionId"], "v2", "managed policy version after update")
        version = iam.get_policy_version(PolicyArn=policy["Arn"], VersionId="v2")["PolicyVersion"]["Document"]
        equal(version["Statement"][0]["Action"], ["s3:GetObject", "s3:PutObject"], "managed policy document")
        topic = f"arn:aws:sns:{REGION}:{TOOLING}:probe-events"
        equal(aws("sns").get_topic_attributes(TopicArn=topic)["Attributes"]["DisplayName"], "probe v2", "display name")
        equal(len(aws("sns").list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]), 1, "subscription kept")
        action = aws("codepipeline").get_pipeline(name="probe-pipeline")["pipeline"]["stages"][2]["actions"][0]
        equal(action["configuration"]["ActionMode"], "REPLACE_ON_FAILURE", "updated pipeline action")
        updated = [l for (l, s, _) in events(cfn, "probe") if s == "UPDATE_COMPLETE"]
        equal(
            sorted(set(updated) - {"probe"}),
            ["Build", "BuildLogs", "BuildPolicy", "BuildRole", "Key", "Pipeline", "Topic"],
            "UPDATE_COMPLETE events",
        )
        groups = aws("logs").describe_log_groups(logGroupNamePrefix="/aws/codebuild/probe-build")["logGroups"]
        equal([g["retentionInDays"] for g in groups], [90], "log group retention after update")

    @check("change set without changes is FAILED with AWS's reason; parameter-only change is a Modify")
    def _():
        stack = cfn.describe_stacks(StackName="small")["Stacks"][0]
        template = cfn.get_template(StackName="small")["TemplateBody"]
        cfn.create_change_set(
            StackName="small",
            ChangeSetName="same",
            ChangeSetType="UPDATE",
            TemplateBody=template if isinstance(template, str) else json.dumps(template),
        )
        same = cfn.describe_change_set(StackName="small", ChangeSetName="same")
        equal((same["Status"], same["ExecutionStatus"]), ("FAILED", "UNAVAILABLE"), "empty change set")
        expect("didn't contain changes" in same["StatusReason"], same["StatusReason"])
        cfn.delete_change_set(StackName="small", ChangeSetName="same")
        with_parameter = {
            "Parameters": {"Shown": {"Type": "String"}},
            "Resources": {"Topic": {"Type": "AWS::SNS::Topic", "Properties": {"DisplayName": ref("Shown")}}},
        }
        _, created = deploy(cfn, "param", with_parameter, "CREATE", parameters=[("Shown", "a")])
        equal(created["StackStatus"], "CREATE_COMPLETE", "parameter stack")
        cfn.create_change_set(
            StackName="param",
            ChangeSetName="p2",
            ChangeSetType="UPDATE",
            UsePreviousTemplate=True,
            Parameters=[{"ParameterKey": "Shown", "ParameterValue": "b"}],
        )
        changes = cfn.describe_change_set(StackName="param", ChangeSetName="p2")["Changes"]
        equal(
            [(c["ResourceChange"]["LogicalResourceId"], c["ResourceChange"]["Action"]) for c in changes],
            [("Topic", "Modify")],
            "parameter-only change",
        )
        expect(stack["StackStatus"] == "CREATE_COMPLETE", "small stack untouched")

    @check("CREATE change set on an existing stack and updates of a busy stack are refused")
    def _():
        raises(
            "ValidationError",
            cfn.create_change_set,
            StackName="small",
            ChangeSetName="again",
            ChangeSetType="CREATE",
            TemplateBody=json.dumps(small_template()),
        )
        slow = small_template(Slow={"Type": "AWS::SNS::Topic", "Metadata": {"LocalAws": {"Delay": 1.0}}})
        cfn.create_stack(StackName="slow", TemplateBody=json.dumps(slow))
        time.sleep(0.3)
        busy = cfn.describe_stacks(StackName="slow")["Stacks"][0]
        equal(busy["StackStatus"], "CREATE_IN_PROGRESS", "status during a Delay")
        message = raises(
            "ValidationError", cfn.update_stack, StackName="slow", TemplateBody=json.dumps(small_template())
        )
        expect("CREATE_IN_PROGRESS state and can not be updated" in message, message)
        raises("ValidationError", cfn.delete_stack, StackName="slow")
        equal(wait(cfn, "slow")["StackStatus"], "CREATE_COMPLETE", "slow stack")

    @check("capabilities, TemplateBody limit and unresolved references are checked as AWS does")
    def _():
        named_role = {
            "Resources": {
                "R": {
                    "Type": "AWS::IAM::Role",
                    "Properties": {"RoleName": "named", "AssumeRolePolicyDocument": trust("lambda.amazonaws.com")},
                }
            }
        }
        message = raises(
            "InsufficientCapabilitiesException",
            cfn.create_stack,
            StackName="caps",
            TemplateBody=json.dumps(named_role),
            Capabilities=["CAPABILITY_IAM"],
        )
        equal(message, "Requires capabilities : [CAPABILITY_NAMED_IAM]", "capabilities message")
        big = small_template()
        big["Description"] = "x" * 60_000
        message = raises("ValidationError", cfn.create_stack, StackName="big", TemplateBody=json.dumps(big))
        expect("51200" in message, message)
        dangling = small_template()
        dangling["Outputs"]["Bad"] = {"Value": ref("Missing")}
        message = raises("ValidationError", cfn.create_stack, StackName="dangling", TemplateBody=json.dumps(dangling))
        expect("Unresolved resource dependencies [Missing]" in message, message)
        raises("ValidationError", cfn.describe_stacks, StackName="caps")

    @check("failure on create: CREATE_FAILED event, rollback, ROLLBACK_COMPLETE, delete and re-create")
    def _():
        template = small_template(Bucket=FAILING_BUCKET, After={"Type": "AWS::SNS::Topic", "DependsOn": "Bucket"})
        response = cfn.create_stack(StackName="doomed", TemplateBody=json.dumps(template))
        stack = wait(cfn, "doomed")
        equal(stack["StackStatus"], "ROLLBACK_COMPLETE", "status")
        equal(
            stack["StackStatusReason"],
            "The following resource(s) failed to create: [Bucket]. Rollback requested by user.",
            "status reason",
        )
        expect("Outputs" not in stack, f"outputs of a rolled back stack: {stack.get('Outputs')}")
        seen = events(cfn, "doomed")
        expect(("Bucket", "CREATE_FAILED", "injected by the test") in seen, f"events {seen}")
        statuses = [s for (l, s, _) in seen if l == "doomed"]
        equal(statuses, ["CREATE_IN_PROGRESS", "ROLLBACK_IN_PROGRESS", "ROLLBACK_COMPLETE"], "stack events")
        equal(
            [s for (l, s, _) in seen if l == "Topic"],
            ["CREATE_IN_PROGRESS", "CREATE_COMPLETE", "DELETE_IN_PROGRESS", "DELETE_COMPLETE"],
            "Topic events",
        )
        expect(not [e for e in seen if e[0] == "After"], "a resource after the failure was not started")
        topics = [t["TopicArn"] for t in aws("sns").list_topics()["Topics"]]
        expect(not [t for t in topics if ":doomed-Topic-" in t], f"rolled back topic still exists: {topics}")
        equal(cfn.list_stack_resources(StackName="doomed")["StackResourceSummaries"], [], "resources after rollback")
        message = raises(
            "ValidationError", cfn.update_stack, StackName="doomed", TemplateBody=json.dumps(small_template())
        )
        expect("ROLLBACK_COMPLETE state and can not be updated" in message, message)
        cfn.delete_stack(StackName="doomed")
        equal(wait(cfn, response["StackId"])["StackStatus"], "DELETE_COMPLETE", "after delete")
        raises("ValidationError", cfn.describe_stacks, StackName="doomed")
        cfn.create_stack(StackName="doomed", TemplateBody=json.dumps(small_template()))
        equal(wait(cfn, "doomed")["StackStatus"], "CREATE_COMPLETE", "re-created stack")

    @check("realistic failure: a bucket name that exists gives BucketAlreadyExists and ROLLBACK_COMPLETE")
    def _():
        template = {"Resources": {"Clash": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": SOURCE_BUCKET}}}}
        cfn.create_change_set(
            StackName="clash", ChangeSetName="c1", ChangeSetType="CREATE", TemplateBody=json.dumps(template)
        )
        cfn.execute_change_set(StackName="clash", ChangeSetName="c1")
        stack = wait(cfn, "clash")
        equal(stack["StackStatus"], "ROLLBACK_COMPLETE", "status")
        failed = [r for (l, s, r) in events(cfn, "clash") if (l, s) == ("Clash", "CREATE_FAILED")]
        equal(len(failed), 1, "CREATE_FAILED events")
        expect("BucketAlreadyExists" in failed[0], failed[0])
        equal(
            cfn.describe_change_set(StackName="clash", ChangeSetName="c1")["ExecutionStatus"],
            "EXECUTE_FAILED",
            "change set execution status",
        )

    @check("failure on update: UPDATE_FAILED/CREATE_FAILED events, rollback to the previous state")
    def _():
        first = small_template(Kept={"Type": "AWS::SNS::Topic", "Properties": {"DisplayName": "kept"}})
        _, stack = deploy(cfn, "upd", first, "CREATE")
        equal(stack["StackStatus"], "CREATE_COMPLETE", "first deploy")
        before = outputs(stack)
        second = copy.deepcopy(first)
        second["Resources"]["Topic"]["Properties"]["DisplayName"] = "two"
        second["Resources"]["Added"] = {"Type": "AWS::SNS::Topic", "DependsOn": "Topic"}
        second["Resources"]["Bucket"] = dict(FAILING_BUCKET, DependsOn="Added")
        del second["Resources"]["Kept"]
        second["Outputs"]["AddedArn"] = {"Value": ref("Added")}
        change_set, stack = deploy(cfn, "upd", second, "UPDATE")
        equal(stack["StackStatus"], "UPDATE_ROLLBACK_COMPLETE", "status")
        equal(outputs(stack), before, "outputs after rollback")
        seen = events(cfn, "upd")
        rollback = [r for (l, s, r) in seen if (l, s) == ("upd", "UPDATE_ROLLBACK_IN_PROGRESS")]
        equal(rollback, ["The following resource(s) failed to update: [Bucket]. "], "rollback reason")
        expect(("Bucket", "CREATE_FAILED", "injected by the test") in seen, f"events {seen}")
        tail = [s for (l, s, _) in seen if l == "upd"][-4:]
        equal(
            tail,
            [
                "UPDATE_IN_PROGRESS",
                "UPDATE_ROLLBACK_IN_PROGRESS",
                "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
                "UPDATE_ROLLBACK_COMPLETE",
            ],
            "stack events",
        )
        topic = before["TopicArn"]
        equal(
            aws("sns").get_topic_attributes(TopicArn=topic)["Attributes"]["DisplayName"],
            "one",
            "display name rolled back",
        )
        listed = sorted(
            r["LogicalResourceId"] for r in cfn.list_stack_resources(StackName="upd")["StackResourceSummaries"]
        )
        equal(listed, ["Kept", "Topic"], "resources after rollback")
        added = [r for (l, s, r) in seen if l == "Added" and s == "DELETE_COMPLETE"]
        equal(len(added), 1, "the added topic was deleted in the rollback")
        equal(
            cfn.describe_change_set(StackName="upd", ChangeSetName=change_set["ChangeSetName"])["ExecutionStatus"],
            "EXECUTE_FAILED",
            "change set execution status",
        )
        third = copy.deepcopy(second)
        del third["Resources"]["Bucket"]
        _, stack = deploy(cfn, "upd", third, "UPDATE")
        equal(stack["StackStatus"], "UPDATE_COMPLETE", "a good update recovers")
        expect("AddedArn" in outputs(stack), f"outputs {outputs(stack)}")

    @check("failed rollback: UPDATE_ROLLBACK_FAILED, then ContinueUpdateRollback")
    def _():
        cfn.create_stack(StackName="stuck", TemplateBody=json.dumps(small_template()))
        equal(wait(cfn, "stuck")["StackStatus"], "CREATE_COMPLETE", "first create")
        bad = small_template(
            Bucket={
                "Type": "AWS::S3::Bucket",
                "Metadata": {"LocalAws": {"Fail": "update fails", "FailRollback": "rollback fails"}},
            }
        )
        cfn.update_stack(StackName="stuck", TemplateBody=json.dumps(bad))
        stack = wait(cfn, "stuck")
        equal(stack["StackStatus"], "UPDATE_ROLLBACK_FAILED", "status")
        expect(("Bucket", "UPDATE_FAILED", "rollback fails") in events(cfn, "stuck"), "rollback failure event")
        raises("ValidationError", cfn.update_stack, StackName="stuck", TemplateBody=json.dumps(small_template()))
        cfn.continue_update_rollback(StackName="stuck")
        equal(wait(cfn, "stuck")["StackStatus"], "UPDATE_ROLLBACK_COMPLETE", "after ContinueUpdateRollback")

    @check("deleting a stack with a non-empty bucket ends in DELETE_FAILED")
    def _():
        template = {
            "Resources": {"Data": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "local-aws-test-data"}}}
        }
        cfn.create_stack(StackName="data", TemplateBody=json.dumps(template))
        equal(wait(cfn, "data")["StackStatus"], "CREATE_COMPLETE", "create")
        aws("s3").put_object(Bucket="local-aws-test-data", Key="k", Body=b"v")
        cfn.delete_stack(StackName="data")
        stack = wait(cfn, "data")
        equal(stack["StackStatus"], "DELETE_FAILED", "status")
        expect(
            "BucketNotEmpty" in [r for (l, s, r) in events(cfn, "data") if s == "DELETE_FAILED" and l == "Data"][0],
            "DELETE_FAILED reason",
        )

    @check("stop from another checkout ends exactly that server and removes its state")
    def _():
        pid = server["pid"]
        # A second checkout (another worktree): its own copy of the script and the launcher.
        other = tempfile.mkdtemp(prefix="local-aws-checkout-")
        try:
            os.makedirs(os.path.join(other, "ci", "local_aws"))
            shutil.copy2(SCRIPT, os.path.join(other, "ci", "local-aws"))
            shutil.copy2(os.path.join(ROOT, "ci", "local_aws", "launcher.py"), os.path.join(other, "ci", "local_aws"))
            elsewhere = subprocess.run(
                [os.path.join(other, "ci", "local-aws"), "status", "--state-dir", state_dir],
                capture_output=True,
                text=True,
                timeout=60,
            )
            equal(elsewhere.returncode, 0, f"status from another checkout ({elsewhere.stderr})")
            done = subprocess.run(
                [os.path.join(other, "ci", "local-aws"), "stop", "--state-dir", state_dir],
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            shutil.rmtree(other, ignore_errors=True)
        equal(done.returncode, 0, f"exit code of stop ({done.stderr})")
        expect(not alive(pid), f"server {pid} still running")
        for name in ("server.pid", "server.port", "server.env"):
            expect(not os.path.exists(os.path.join(state_dir, name)), f"{name} left behind")
        equal(script("status", "--state-dir", state_dir).returncode, 1, "status exit code after stop")
        equal(script("env", "--state-dir", state_dir).returncode, 2, "env exit code after stop")
        equal(script("stop", "--state-dir", state_dir).returncode, 0, "second stop")

    @check("--org with a key ARN and execution policies; --owner-pid: the server exits once its owner is gone")
    def _():
        owner = subprocess.Popen(["sleep", "600"])
        server.setdefault("sleepers", []).append(owner)
        owned = tempfile.mkdtemp(prefix="local-aws-owned-")
        key_id = "1234abcd-12ab-34cd-56ef-1234567890ab"
        with open(os.path.join(ROOT, "examples", "org.yaml")) as handle:
            org = yaml.safe_load(handle)
        org["source"]["kms_key"] = f"arn:aws:kms:{REGION}:{TOOLING}:key/{key_id}"
        org["deploy"]["execution_policy_arns"] = [
            "pipeforge-app-deploy",
            "platform/app-iam",
            "arn:aws:iam::aws:policy/ReadOnlyAccess",
        ]
        org["deploy"]["permissions_boundary"] = "pipeforge-app-boundary"
        org_file = os.path.join(owned, "org.yaml")
        with open(org_file, "w") as handle:
            yaml.safe_dump(org, handle)
        try:
            done = script(
                "start",
                "--state-dir",
                owned,
                "--owner-pid",
                str(owner.pid),
                "--accounts",
                "111111111111",
                "--org",
                org_file,
            )
            equal(done.returncode, 0, f"start ({done.stderr})")
            pid = int(open(os.path.join(owned, "server.pid")).read())
            equal(script("status", "--state-dir", owned).returncode, 0, "status while the owner lives")
            other = Aws(done.stdout.splitlines()[0].split("=", 1)[1])
            equal(other("kms").describe_key(KeyId=key_id)["KeyMetadata"]["Arn"], org["source"]["kms_key"], "key by ARN")
            iam = other.assume("111111111111")("iam")
            names = sorted((p["Path"], p["PolicyName"]) for p in iam.list_policies(Scope="Local")["Policies"])
            equal(
                names,
                [
                    ("/", "pipeforge-app-boundary"),
                    ("/", "pipeforge-app-deploy"),
                    ("/", "pipeforge-bootstrap-roles-boundary"),
                    ("/platform/", "app-iam"),
                ],
                "org policies and the deploy roles' boundary in the target account",
            )
            owner.send_signal(signal.SIGKILL)
            owner.wait()
            started = time.monotonic()
            while alive(pid) and time.monotonic() - started < 10:
                time.sleep(0.01)
            timings["exit after owner died"] = time.monotonic() - started
            expect(not alive(pid), f"server {pid} outlived its owner")
            equal(script("status", "--state-dir", owned).returncode, 1, "status after the owner died")
        finally:
            script("stop", "--state-dir", owned)
            shutil.rmtree(owned, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
