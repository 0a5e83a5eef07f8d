"""The AWS deployment as code (deploy/): the CDK app synthesises; cfn-lint and checkov pass its template;
the template is deployed to moto's CloudFormation over HTTP and the platform runs end to end on the
stack's buckets and secrets, with its settings taken from the stack's outputs; every S3 and Secrets
Manager request of that run is checked against the run task role's policies.

moto's CloudFormation does not implement every resource type or property of the template: it skips
AWS::S3::BucketPolicy, AWS::SecretsManager::Secret and AWS::SNS::Subscription, and of AWS::S3::Bucket it
applies only the encryption. `complete_what_moto_skips` applies those declarations, read from the
template itself, through the services' own APIs (as CloudFormation would), and says which it applied.
Everything else (VPC, security groups, IAM roles and policies, log groups, ECS cluster, task definitions
and services, SNS topic, buckets) is created by moto's CloudFormation."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import pytest

from totesys_platform.settings import load_settings, settings_from_stack_outputs
from totesys_platform_tests.conftest import REPO, make_settings, run_graph
from totesys_platform_tests.test_pipeline import assert_warehouse_matches_source

DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"  # its own venv: checkov pins boto3 1.35 (see setup.py)
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/totesys-platform:1"
SETTINGS = {
    "TOTESYS_INGESTION_URL",
    "TOTESYS_PROCESSED_URL",
    "TOTESYS_REPORTS_URL",
    "TOTESYS_SOURCE_SECRET_ID",
    "TOTESYS_WAREHOUSE_SECRET_ID",
    "TOTESYS_WAREHOUSE_SCHEMA",
    "TOTESYS_ALERT_SNS_TOPIC_ARN",
    "TOTESYS_COMPUTE_LOG_BUCKET",
    "TOTESYS_RUN_TASK_DEFINITION",
}
# Actions IAM allows on no narrower resource than "*" (the service authorization reference).
NO_RESOURCE_LEVEL = {
    "ecs:DescribeTaskDefinition",
    "ecs:ListTasks",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DescribeSecurityGroups",
    "ecr:GetAuthorizationToken",
}
EXISTING_SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:totesys/{}-AbCdEf"


def synth(out: Path, **context: str) -> dict:
    """Run the CDK app as `cdk synth` does (context in CDK_CONTEXT_JSON, output in CDK_OUTDIR)."""
    assert shutil.which("node"), "the CDK app needs Node.js (`apt-get install nodejs`; scripts/test does)"
    env = {
        **os.environ,
        "CDK_OUTDIR": str(out),
        "CDK_CONTEXT_JSON": json.dumps({"image_uri": IMAGE, **context}),
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "18,20",
    }
    done = subprocess.run([sys.executable, "app.py"], cwd=DEPLOY, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    name = f"TotesysPlatform-{context.get('env_name', 'prod')}"
    return json.loads((out / f"{name}.template.json").read_text())


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """The default deployment (new VPC, RDS) and one into an existing VPC with existing database secrets."""
    variants = {
        "default": {"alert_email": "data-team@example.com", "webserver_cidr": "10.20.0.0/16"},
        "existing": {
            "env_name": "staging",
            "vpc_id": "vpc-0123456789abcdef0",
            "subnet_ids": "subnet-0123456789abcdef0,subnet-0123456789abcdef1",
            "availability_zones": "us-east-1a,us-east-1b",
            "create_database": "false",
            "warehouse_secret_arn": EXISTING_SECRET.format("warehouse"),
            "instance_db_secret_arn": EXISTING_SECRET.format("instance"),
        },
    }
    built = {}
    for variant, context in variants.items():
        out = tmp_path_factory.mktemp(f"cdk-{variant}")
        template = synth(out, **context)
        built[variant] = (next(out.glob("*.template.json")), template)
    return built


def resources(template: dict, kind: str) -> dict[str, dict]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def statements(template: dict) -> list[dict]:
    found = []
    for policy in resources(template, "AWS::IAM::Policy").values():
        found += policy["Properties"]["PolicyDocument"]["Statement"]
    return found


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("variant", ["default", "existing"])
def test_cfn_lint_reports_nothing(templates, variant):
    path, _ = templates[variant]
    done = subprocess.run([str(BIN / "cfn-lint"), str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr  # no error, no warning, no informational


@pytest.mark.parametrize("variant", ["default", "existing"])
def test_checkov_passes_and_every_skipped_check_says_why(templates, variant):
    path, template = templates[variant]
    assert CHECKOV.exists(), f"{CHECKOV} missing: scripts/bootstrap installs checkov in its own venv"
    done = subprocess.run(
        [str(CHECKOV), "-f", str(path), "--framework", "cloudformation", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(done.stdout)
    results = report["results"]
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 100, report["summary"]  # it really scanned the resources
    failed = [(c["check_id"], c["resource"]) for c in results["failed_checks"]]
    assert not failed and done.returncode == 0, failed
    for check in results["skipped_checks"]:
        assert len(check["check_result"].get("suppress_comment", "")) > 20, check["check_id"]
    # Every skip in the template is written next to its resource, with its reason.
    for resource in template["Resources"].values():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert re.fullmatch(r"CKV2?_AWS_\d+", skip["id"]) and len(skip["comment"]) > 20


def test_the_template_declares_private_immutable_buckets_and_least_privilege_roles(templates):
    _, template = templates["default"]
    buckets = resources(template, "AWS::S3::Bucket")
    assert len(buckets) == 5  # ingestion, processed, reports, compute logs, access logs
    for name, bucket in buckets.items():
        props = bucket["Properties"]
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}, name
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"], name
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, name
        assert bucket["DeletionPolicy"] == "Retain", name
    ingestion = next(n for n in buckets if n.startswith("IngestionBucket"))
    for rule in buckets[ingestion]["Properties"]["LifecycleConfiguration"]["Rules"]:
        assert set(rule) <= {"Id", "Status", "AbortIncompleteMultipartUpload"}, rule  # nothing ever expires
    policies = {p["Properties"]["Bucket"]["Ref"]: p for p in resources(template, "AWS::S3::BucketPolicy").values()}
    assert set(policies) == set(buckets)
    for name, policy in policies.items():
        tls = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if "aws:SecureTransport" in str(s)]
        assert tls and tls[0]["Effect"] == "Deny", name
    immutable = [
        s
        for s in policies[ingestion]["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny" and "s3:DeleteObject" in as_list(s["Action"])
    ]
    assert immutable and immutable[0]["Principal"] == {"AWS": "*"}
    # IAM: no wildcard action; "*" resources only for actions that allow nothing narrower; no delete.
    for statement in statements(template):
        actions = as_list(statement["Action"])
        assert not [a for a in actions if a == "*" or a.endswith(":*")], statement
        if "*" in as_list(statement["Resource"]):
            assert set(actions) <= NO_RESOURCE_LEVEL, statement
        if statement["Effect"] == "Allow":
            assert not [a for a in actions if a.startswith("s3:Delete")], statement
    # The image is pulled from its ECR repository: the execution role may pull exactly that repository.
    pulls = [s for s in statements(template) if "ecr:BatchGetImage" in as_list(s["Action"])]
    assert pulls and json.dumps(pulls[0]["Resource"]).endswith(':repository/totesys-platform"]]}')
    # Only iam:PassRole on the run task's own two roles.
    passes = [s for s in statements(template) if "iam:PassRole" in as_list(s["Action"])]
    assert len(passes) == 1 and len(passes[0]["Resource"]) == 2
    # No secret in a task definition: settings only; the instance URL is an ECS secret reference.
    for name, task in resources(template, "AWS::ECS::TaskDefinition").items():
        for container in task["Properties"]["ContainerDefinitions"]:
            text = json.dumps(container.get("Environment", []))
            assert "postgresql" not in text and "password" not in text.lower(), name
            assert [s["Name"] for s in container["Secrets"]] == ["DAGSTER_PG_URL"], name
    for secret in resources(template, "AWS::SecretsManager::Secret").values():
        text = json.dumps(secret["Properties"])
        assert "{{resolve:secretsmanager:" in text or "GenerateSecretString" in text or "SecretString" not in text
    outputs = {o["Description"]: o for o in template["Outputs"].values() if o["Description"].startswith("TOTESYS_")}
    assert set(outputs) == SETTINGS


def test_the_existing_vpc_variant_creates_no_network_and_no_database(templates):
    _, template = templates["existing"]
    kinds = {r["Type"] for r in template["Resources"].values()}
    assert not kinds & {"AWS::EC2::VPC", "AWS::EC2::NatGateway", "AWS::RDS::DBInstance"}
    services = resources(template, "AWS::ECS::Service").values()
    for service in services:
        subnets = service["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]["Subnets"]
        assert subnets == ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
    assert EXISTING_SECRET.format("warehouse") in json.dumps(template["Outputs"])


def test_without_an_image_uri_cdk_deploy_builds_the_dockerfile(tmp_path):
    out = tmp_path / "cdk.out"
    synth(out, image_uri="")
    assets = json.loads((out / "TotesysPlatform-prod.assets.json").read_text())["dockerImages"]
    [image] = assets.values()
    assert image["source"]["dockerFile"] == "deploy/Dockerfile"
    context = out / image["source"]["directory"]
    assert (context / "totesys_platform" / "definitions.py").exists() and (context / "setup.py").exists()
    assert not (context / ".venv").exists() and not (context / ".git").exists()


# --- deployed to moto ----------------------------------------------------------------------------------


def physical_ids(stack: str) -> dict[str, str]:
    """Logical id -> physical id of the stack's resources, and the pseudo parameters."""
    listed = boto3.client("cloudformation").describe_stack_resources(StackName=stack)["StackResources"]
    session = boto3.session.Session()
    return {
        "AWS::AccountId": boto3.client("sts").get_caller_identity()["Account"],
        "AWS::Region": session.region_name,
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
        **{r["LogicalResourceId"]: r["PhysicalResourceId"] for r in listed if "LogicalResourceId" in r},
    }


def resolve(value, ids: dict[str, str], template: dict):
    """The intrinsic functions the skipped resources use (Ref, Fn::GetAtt ...Arn, Fn::Join)."""
    if isinstance(value, list):
        return [resolve(v, ids, template) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"}:
        return ids[value["Ref"]]
    if set(value) == {"Fn::GetAtt"}:
        logical, attribute = value["Fn::GetAtt"]
        assert attribute == "Arn" and template["Resources"][logical]["Type"] == "AWS::S3::Bucket", value
        return f"arn:aws:s3:::{ids[logical]}"
    if set(value) == {"Fn::Join"}:
        separator, parts = value["Fn::Join"]
        return separator.join(resolve(p, ids, template) for p in parts)
    return {k: resolve(v, ids, template) for k, v in value.items()}


def complete_what_moto_skips(template: dict, stack: str) -> list[str]:
    """Apply, through the service APIs, the bucket properties and secrets moto's CloudFormation ignores."""
    ids = physical_ids(stack)
    s3, applied = boto3.client("s3"), []
    for logical, bucket in resources(template, "AWS::S3::Bucket").items():
        props, name = bucket["Properties"], ids[logical]
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration=props["VersioningConfiguration"])
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"])
        applied.append(f"{logical}: versioning, public access block")
    for logical, secret in resources(template, "AWS::SecretsManager::Secret").items():
        props = secret["Properties"]
        boto3.client("secretsmanager").create_secret(Name=props["Name"], Description=props["Description"])
        applied.append(f"{logical}: secret {props['Name']} (no value yet, as `cdk deploy` leaves it)")
    return applied


def apply_bucket_policies(template: dict, stack: str) -> list[str]:
    """The template's bucket policies, applied after the run: moto evaluates a statement whose condition it
    has no value for (here aws:SecureTransport, of the TLS-only statements) as a Deny of every request."""
    ids, applied = physical_ids(stack), []
    for logical, policy in resources(template, "AWS::S3::BucketPolicy").items():
        props = resolve(policy["Properties"], ids, template)
        boto3.client("s3").put_bucket_policy(Bucket=props["Bucket"], Policy=json.dumps(props["PolicyDocument"]))
        applied.append(f"{logical}: bucket policy")
    return applied


def moto_api(endpoint: str, path: str, method: str = "POST") -> str:
    request = urllib.request.Request(f"{endpoint}/moto-api/recorder/{path}", method=method)
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback test server
        return response.read().decode()


def performed_actions(recording: str) -> list[tuple[str, str]]:
    """(IAM action, resource ARN) of every recorded S3 and Secrets Manager request."""
    actions = []
    for line in recording.splitlines():
        entry = json.loads(line)
        headers = {k.lower(): v for k, v in entry["headers"].items()}
        service = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", headers.get("authorization", ""))
        service = service.group(1) if service else ""
        url = urlsplit(entry["url"])
        if service == "secretsmanager":
            body = base64.b64decode(entry["body"]) if entry["body_encoded"] else entry["body"]
            operation = headers["x-amz-target"].split(".")[-1]
            secret = json.loads(body)["SecretId"]
            arn = boto3.client("secretsmanager").describe_secret(SecretId=secret)["ARN"]
            actions.append((f"secretsmanager:{operation}", arn))
        elif service == "s3":
            actions += s3_actions(
                entry["method"], unquote(url.path), parse_qs(url.query, keep_blank_values=True), headers
            )
        else:
            raise AssertionError(f"the platform called an unexpected service: {service or entry['url']}")
    return actions


def s3_actions(method: str, path: str, query: dict, headers: dict) -> list[tuple[str, str]]:
    bucket, _, key = path.lstrip("/").partition("/")
    if not key:
        if method in ("GET", "HEAD") and not set(query) - {
            "list-type",
            "prefix",
            "delimiter",
            "continuation-token",
            "start-after",
            "max-keys",
            "encoding-type",
            "fetch-owner",
        }:
            return [("s3:ListBucket", f"arn:aws:s3:::{bucket}")]
        if method == "GET" and "location" in query:
            return [("s3:GetBucketLocation", f"arn:aws:s3:::{bucket}")]
        raise AssertionError(f"unmapped S3 bucket request {method} {path}?{query}")
    arn = f"arn:aws:s3:::{bucket}/{key}"
    if method in ("GET", "HEAD"):
        return [("s3:GetObject", arn)]
    if method in ("PUT", "POST"):  # put, multipart create / part / complete
        copied = headers.get("x-amz-copy-source")
        return [("s3:PutObject", arn)] + (
            [("s3:GetObject", f"arn:aws:s3:::{unquote(copied).lstrip('/')}")] if copied else []
        )
    if method == "DELETE":
        return [("s3:AbortMultipartUpload" if "uploadId" in query else "s3:DeleteObject", arn)]
    raise AssertionError(f"unmapped S3 request {method} {path}")


def role_policies(role_name: str) -> list[str]:
    iam = boto3.client("iam")
    return [
        json.dumps(iam.get_role_policy(RoleName=role_name, PolicyName=p)["PolicyDocument"])
        for p in iam.list_role_policies(RoleName=role_name)["PolicyNames"]
    ]


def permitted(policies: list[str], action: str, resource: str) -> bool:
    """moto's own IAM policy evaluator (the one it enforces requests with)."""
    from moto.iam.access_control import IAMPolicy, PermissionResult

    results = [IAMPolicy(p).is_action_permitted(action, resource) for p in policies]
    return PermissionResult.PERMITTED in results and PermissionResult.DENIED not in results


@pytest.mark.slow
def test_the_stack_deploys_to_moto_and_the_platform_runs_on_its_outputs_within_its_iam(
    moto_endpoint, sample_source, new_database, tmp_path, capsys
):
    warehouse_url = new_database("wh_stack")
    secrets = boto3.client("secretsmanager")
    existing = {
        name: secrets.create_secret(Name=f"existing-{tmp_path.name}/{name}", SecretString=json.dumps({"url": url}))[
            "ARN"
        ]
        for name, url in (("warehouse", warehouse_url), ("instance", "postgresql+psycopg2://u@dagster-db/dagster"))
    }
    # What `cdk bootstrap` leaves in an account, and what `cdk deploy` does with a template over 50 kB.
    boto3.client("ssm").put_parameter(
        Name="/cdk-bootstrap/hnb659fds/version", Value="30", Type="String", Overwrite=True
    )
    env_name = f"t{tmp_path.name[-6:].lower()}".replace("_", "")
    template = synth(
        tmp_path / "cdk.out",
        env_name=env_name,
        create_database="false",
        warehouse_secret_arn=existing["warehouse"],
        instance_db_secret_arn=existing["instance"],
    )
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=f"cdk-assets-{env_name}")
    s3.put_object(Bucket=f"cdk-assets-{env_name}", Key="template.json", Body=json.dumps(template))
    cloudformation = boto3.client("cloudformation")
    stack = f"TotesysPlatform-{env_name}"
    cloudformation.create_stack(
        StackName=stack,
        TemplateURL=f"https://cdk-assets-{env_name}.s3.amazonaws.com/template.json",
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
    )
    cloudformation.get_waiter("stack_create_complete").wait(
        StackName=stack, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )
    deployed = physical_ids(stack)
    for kind in (
        "AWS::IAM::Role",
        "AWS::ECS::TaskDefinition",
        "AWS::ECS::Service",
        "AWS::SNS::Topic",
        "AWS::S3::Bucket",
    ):
        assert set(resources(template, kind)) <= set(deployed), kind
    applied = complete_what_moto_skips(template, stack)
    assert len(applied) == 5 + 1, applied

    # The buckets as the template declares them.
    outputs = settings_from_stack_outputs(cloudformation.describe_stacks(StackName=stack)["Stacks"][0]["Outputs"])
    assert set(outputs) == SETTINGS
    from totesys_platform.cli import main as totesys

    capsys.readouterr()
    assert totesys(["stack-settings", stack]) == 0
    exported = capsys.readouterr().out.splitlines()
    assert sorted(exported) == sorted(f"export {k}={v}" for k, v in outputs.items()), exported
    ingestion = outputs["TOTESYS_INGESTION_URL"].removeprefix("s3://")
    for url in (outputs["TOTESYS_INGESTION_URL"], outputs["TOTESYS_PROCESSED_URL"], outputs["TOTESYS_REPORTS_URL"]):
        bucket = url.removeprefix("s3://")
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
        assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())

    # The operator sets the source secret (the stack creates it empty), then the platform runs on the outputs.
    secrets.put_secret_value(
        SecretId=outputs["TOTESYS_SOURCE_SECRET_ID"], SecretString=json.dumps({"url": sample_source})
    )
    settings = load_settings({**outputs, "TOTESYS_HOME": str(tmp_path / "home"), "TOTESYS_MAX_RETRIES": "0"})
    assert settings.source_url is None and settings.warehouse_url is None  # credentials only from the secrets
    moto_api(moto_endpoint, "reset-recording")
    moto_api(moto_endpoint, "start-recording")
    try:
        assert run_graph(settings).success
    finally:
        moto_api(moto_endpoint, "stop-recording")
    recording = moto_api(moto_endpoint, "download-recording", method="GET")
    admin = make_settings(tmp_path / "admin", sample_source, warehouse_url, TOTESYS_WAREHOUSE_SCHEMA="warehouse")
    assert_warehouse_matches_source(admin)
    assert len(apply_bucket_policies(template, stack)) == 5
    policy = json.loads(s3.get_bucket_policy(Bucket=ingestion)["Policy"])
    deny = [s for s in policy["Statement"] if s["Effect"] == "Deny" and "s3:DeleteObject" in as_list(s["Action"])]
    assert deny and f"arn:aws:s3:::{ingestion}/*" in as_list(deny[0]["Resource"])

    # IAM: every S3 and Secrets Manager request of the run is allowed by the run task role's policies.
    actions = performed_actions(recording)
    kinds = {action for action, _ in actions}
    assert {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "secretsmanager:GetSecretValue"} <= kinds, kinds
    run_role = next(v for k, v in deployed.items() if k.startswith("RunTaskRole") and "Policy" not in k)
    policies = role_policies(run_role)
    denied = sorted({(a, r) for a, r in actions if not permitted(policies, a, r)})
    assert not denied, denied[:20]
    # ... and no platform role may delete in the ingestion zone (the run never tried).
    assert not [r for a, r in actions if a == "s3:DeleteObject" and r.startswith(f"arn:aws:s3:::{ingestion}/")]
    for logical, role in deployed.items():
        if template["Resources"].get(logical, {}).get("Type") == "AWS::IAM::Role":
            assert not permitted(
                role_policies(role), "s3:DeleteObject", f"arn:aws:s3:::{ingestion}/sales_order/x.parquet"
            ), logical
    # The least privilege is real: the same run's requests are not all allowed to the webserver's role.
    webserver = next(v for k, v in deployed.items() if k.startswith("WebserverTaskRole") and "Policy" not in k)
    assert not all(permitted(role_policies(webserver), a, r) for a, r in actions)
