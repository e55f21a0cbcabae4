"""scripts/deploy.sh lambda against moto's server (a local AWS API on 127.0.0.1)."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import boto3
import pytest
from conftest import free_port

REPO = Path(__file__).resolve().parent.parent
DEPLOY = str(REPO / "scripts/deploy.sh")
NO_AWS_CONFIG = {"AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                 "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture
def moto(tmp_path):
    port = free_port()
    with open(tmp_path / "moto.log", "wb") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H",
                                 "127.0.0.1", "-p", str(port)], stdout=log,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.2)
    yield url
    proc.kill()
    proc.wait()


def _env(url: str, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "ORQ_LAMBDA", "ORQ_MAX"))}
    return {**env, **NO_AWS_CONFIG, "AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", **extra}


def deploy(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([DEPLOY, "lambda", *args], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def _clients(url: str):
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                            region_name="eu-west-1")
    return (session.client("lambda", endpoint_url=url), session.client("iam", endpoint_url=url))


def test_deploy_creates_then_updates(moto):
    env = _env(moto)
    first = deploy(env, "--function-name", "orq-test", "--region", "eu-west-1",
                   "--memory", "256")
    assert first.returncode == 0, first.stderr
    assert "creating IAM role orq-test-role" in first.stderr
    assert "creating Lambda function orq-test" in first.stderr
    for line in ("export ORQ_BACKEND=lambda", "export ORQ_LAMBDA_FUNCTION=orq-test",
                 "export AWS_REGION=eu-west-1"):
        assert line in first.stdout.splitlines()
    lam, iam = _clients(moto)
    conf = lam.get_function(FunctionName="orq-test")["Configuration"]
    assert (conf["Runtime"], conf["Handler"], conf["MemorySize"], conf["State"]) == (
        "python3.12", "lambda_handler.handler", 256, "Active")
    assert conf["Timeout"] == 65  # the largest job timeout (60 s) and a margin
    assert conf["Role"].endswith(":role/orq-test-role")
    from server.deploy_lambda import build_zip
    assert conf["CodeSha256"] == base64.b64encode(hashlib.sha256(build_zip()).digest()).decode()
    trust = iam.get_role(RoleName="orq-test-role")["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
    _assert_logs_only(iam, "orq-test-role")

    # somebody widened the role and we deploy again: an update, back to least privilege
    wide = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"}]})
    arn = iam.create_policy(PolicyName="everything", PolicyDocument=wide)["Policy"]["Arn"]
    iam.attach_role_policy(RoleName="orq-test-role", PolicyArn=arn)
    iam.put_role_policy(RoleName="orq-test-role", PolicyName="extra", PolicyDocument=wide)
    second = deploy(env, "--function-name", "orq-test", "--region", "eu-west-1",
                    "--memory", "512", "--max-timeout", "20")
    assert second.returncode == 0, second.stderr
    assert "updating Lambda function orq-test" in second.stderr
    assert "creating" not in second.stderr
    conf = lam.get_function(FunctionName="orq-test")["Configuration"]
    assert (conf["MemorySize"], conf["Timeout"], conf["LastUpdateStatus"]) == (512, 25,
                                                                                "Successful")
    assert "export ORQ_MAX_TIMEOUT_S=20" in second.stdout
    _assert_logs_only(iam, "orq-test-role")
    assert len(lam.list_functions()["Functions"]) == 1


def _assert_logs_only(iam, role: str) -> None:
    assert iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
    names = iam.list_role_policies(RoleName=role)["PolicyNames"]
    assert names == ["orq-runner-logs"]
    doc = iam.get_role_policy(RoleName=role, PolicyName=names[0])["PolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    actions = {a for st in doc["Statement"] for a in
               ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])}
    assert actions == {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"}


def test_defaults_come_from_the_environment(moto):
    res = deploy(_env(moto, AWS_REGION="ap-south-1", ORQ_LAMBDA_FUNCTION="orq-env"))
    assert res.returncode == 0, res.stderr
    assert "export ORQ_LAMBDA_FUNCTION=orq-env" in res.stdout
    assert "export AWS_REGION=ap-south-1" in res.stdout


def test_expected_failures_are_one_line(moto):
    no_creds = {k: v for k, v in _env(moto).items() if k not in ("AWS_ACCESS_KEY_ID",
                                                                   "AWS_SECRET_ACCESS_KEY")}
    res = deploy(no_creds, "--region", "eu-west-1")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("deploy lambda: error: no AWS "
                                                          "credentials")
    res = deploy(_env(moto))  # no region anywhere
    assert res.returncode == 1 and "no AWS region" in res.stderr
    assert "Traceback" not in res.stderr
    res = deploy(_env(moto), "--region", "eu-west-1", "--memory", "64")
    assert res.returncode == 2 and "--memory" in res.stderr
    assert "Traceback" not in res.stderr


def test_package_only_writes_the_zip(tmp_path):
    target = tmp_path / "runner.zip"
    res = deploy({**os.environ, **NO_AWS_CONFIG}, "--package-only", str(target))
    assert res.returncode == 0, res.stderr
    with zipfile.ZipFile(target) as zf:
        assert sorted(zf.namelist()) == ["core.py", "lambda_handler.py"]
        assert zf.read("core.py") == (REPO / "server/runner/core.py").read_bytes()
