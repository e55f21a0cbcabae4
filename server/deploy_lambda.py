"""``scripts/deploy.sh lambda``: package the runner, create or update its IAM role and
Lambda function, wait until it can be invoked, and print the settings orq needs.

Idempotent: a second run updates the role and the function instead of failing. Reaches
AWS through boto3's normal configuration, so ``AWS_ENDPOINT_URL`` points it elsewhere
(a local AWS API such as moto's server).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import zipfile
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from . import package_files
from .backends.aws_lambda import aws_error, resolve_region
from .config import Config

ZIP_FILES = ("lambda_handler.py", "core.py")  # the same files the server uses
HANDLER = "lambda_handler.handler"
RUNTIME = "python3.12"
TIMEOUT_MARGIN_S = 5  # the function outlives the job's own timeout by this much
LOGS_POLICY_NAME = "orq-runner-logs"
WAIT_S = 300.0
TRUST_POLICY = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
    "Action": "sts:AssumeRole"}]}


class DeployError(Exception):
    """An expected failure, reported as one line."""


def build_zip() -> bytes:
    """The deployment package: the handler and the shared runner core, side by side."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ZIP_FILES:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16  # Lambda's runtime user must read it
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, package_files.read(package_files.RUNNER, name))
    return buf.getvalue()


def logs_policy(region: str, account: str, function: str) -> dict:
    """Least privilege: the function may only write its own CloudWatch logs."""
    group = f"arn:aws:logs:{region}:{account}:log-group:/aws/lambda/{function}"
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "logs:CreateLogGroup",
         "Resource": f"arn:aws:logs:{region}:{account}:*"},
        {"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": f"{group}:*"}]}


def ensure_role(iam, name: str, function: str, region: str) -> str:
    """Create the function's role, or bring an existing one back to the policies above."""
    trust = json.dumps(TRUST_POLICY)
    try:
        arn = iam.get_role(RoleName=name)["Role"]["Arn"]
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=trust)
        say(f"updating IAM role {name}")
    except ClientError as exc:
        if aws_error(exc)[0] != "NoSuchEntity":
            raise
        say(f"creating IAM role {name}")
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust,
                              Description="orq job runner: CloudWatch Logs only")["Role"]["Arn"]
    account = arn.split(":")[4]
    iam.put_role_policy(RoleName=name, PolicyName=LOGS_POLICY_NAME,
                        PolicyDocument=json.dumps(logs_policy(region, account, function)))
    _drop_other_policies(iam, name)
    return arn


def _drop_other_policies(iam, role: str) -> None:
    """The role is the function's own: anything beyond the logs policy is removed."""
    for policy in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        if policy != LOGS_POLICY_NAME:
            say(f"removing inline policy {policy} from {role} (least privilege)")
            iam.delete_role_policy(RoleName=role, PolicyName=policy)
    for policy in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]:
        say(f"detaching {policy['PolicyName']} from {role} (least privilege)")
        iam.detach_role_policy(RoleName=role, PolicyArn=policy["PolicyArn"])


def ensure_function(lam, args: argparse.Namespace, role_arn: str, code: bytes) -> dict:
    settings = {"Role": role_arn, "Handler": HANDLER, "Runtime": RUNTIME,
                "Timeout": function_timeout(args.max_timeout), "MemorySize": args.memory,
                "Description": "orq job runner (scripts/deploy.sh lambda)"}
    try:
        lam.get_function(FunctionName=args.function_name)
    except ClientError as exc:
        if aws_error(exc)[0] != "ResourceNotFoundException":
            raise
        say(f"creating Lambda function {args.function_name}")
        _create_function(lam, args.function_name, settings, code)
        return wait_ready(lam, args.function_name)
    say(f"updating Lambda function {args.function_name}")
    lam.update_function_code(FunctionName=args.function_name, ZipFile=code)
    wait_ready(lam, args.function_name)
    lam.update_function_configuration(FunctionName=args.function_name, **settings)
    return wait_ready(lam, args.function_name)


def _create_function(lam, name: str, settings: dict, code: bytes) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            lam.create_function(FunctionName=name, Code={"ZipFile": code}, Publish=False,
                                **settings)
            return
        except ClientError as exc:
            # a new IAM role takes a few seconds before Lambda may assume it
            if (aws_error(exc)[0] != "InvalidParameterValueException"
                    or "assume" not in str(exc) or time.monotonic() > deadline):
                raise
            time.sleep(3)


def wait_ready(lam, name: str, timeout_s: float = WAIT_S) -> dict:
    """Wait for State Active and LastUpdateStatus Successful; fail on Failed."""
    deadline = time.monotonic() + timeout_s
    while True:
        conf = lam.get_function_configuration(FunctionName=name)
        state, update = conf.get("State", "Active"), conf.get("LastUpdateStatus", "Successful")
        if state == "Failed" or update == "Failed":
            reason = conf.get("StateReason") or conf.get("LastUpdateStatusReason") or "no reason"
            raise DeployError(f"function {name} failed: {reason}")
        if state == "Active" and update == "Successful":
            return conf
        if time.monotonic() > deadline:
            raise DeployError(f"function {name} still {state}/{update} after {timeout_s:.0f}s")
        time.sleep(1)


def function_timeout(max_job_timeout_s: float) -> int:
    return min(900, int(max_job_timeout_s + 0.999) + TIMEOUT_MARGIN_S)


def settings_text(function: str, region: str, max_timeout: float) -> str:
    return "\n".join([
        "# orq settings for the Lambda backend (e.g. eval \"$(scripts/deploy.sh lambda)\")",
        "export ORQ_BACKEND=lambda", f"export ORQ_LAMBDA_FUNCTION={function}",
        f"export ORQ_LAMBDA_REGION={region}", f"export AWS_REGION={region}",
        f"export ORQ_MAX_TIMEOUT_S={max_timeout:g}"]) + "\n"


def say(text: str) -> None:
    print(f"==> {text}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(prog="scripts/deploy.sh lambda",
                                     description="Deploy orq's job runner to AWS Lambda.")
    parser.add_argument("--function-name", default=env.get("ORQ_LAMBDA_FUNCTION")
                        or Config.lambda_function)
    parser.add_argument("--region", default=env.get("ORQ_LAMBDA_REGION") or None)
    parser.add_argument("--memory", type=int, default=512, help="MB (128-10240)")
    parser.add_argument("--max-timeout", type=float,
                        default=float(env.get("ORQ_MAX_TIMEOUT_S") or Config.max_timeout_s),
                        help="largest job timeout in seconds (the function gets a bit more)")
    parser.add_argument("--role-name", help="IAM role (default: <function>-role)")
    parser.add_argument("--package-only", metavar="FILE.zip",
                        help="only write the deployment zip")
    args = parser.parse_args(argv)
    if not 128 <= args.memory <= 10240:
        parser.error("--memory must be between 128 and 10240")
    if not 0 < args.max_timeout <= 900 - TIMEOUT_MARGIN_S:
        parser.error(f"--max-timeout must be between 1 and {900 - TIMEOUT_MARGIN_S}")
    args.role_name = args.role_name or f"{args.function_name}-role"
    return args


def deploy(args: argparse.Namespace) -> str:
    region = resolve_region(args.region)
    if not region:
        raise DeployError("no AWS region: pass --region or set AWS_REGION")
    session = boto3.Session(region_name=region)
    role_arn = ensure_role(session.client("iam"), args.role_name, args.function_name, region)
    conf = ensure_function(session.client("lambda"), args, role_arn, build_zip())
    say(f"function {conf['FunctionName']} is Active ({conf.get('FunctionArn', '')})")
    return settings_text(args.function_name, region, args.max_timeout)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.package_only:
            Path(args.package_only).write_bytes(build_zip())
            say(f"wrote {args.package_only}")
            return 0
        sys.stdout.write(deploy(args))
        return 0
    except NoCredentialsError:
        fail("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
             "(or AWS_PROFILE), e.g. with `aws configure`")
    except ClientError as exc:
        code, message = aws_error(exc)
        fail(f"{exc.operation_name}: {code}: {message}")
    except (DeployError, BotoCoreError, OSError) as exc:
        fail(str(exc))
    return 1


def fail(message: str) -> None:
    print(f"deploy lambda: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
