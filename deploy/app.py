#!/usr/bin/env python3
"""The CDK app: `cdk synth` / `cdk deploy` from this folder (cdk.json runs it), or `python app.py`, which
writes the CloudFormation template to CDK_OUTDIR (default cdk.out). Parameters are CDK context, e.g.
`cdk deploy -c env_name=prod -c image_uri=<ecr-uri> -c alert_email=ops@example.com` (see README.md)."""

import aws_cdk as cdk
from stack import DeploySettings, TotesysPlatformStack

# Access logs are delivered under a bucket policy (not the legacy log-delivery ACL).
app = cdk.App(analytics_reporting=False, context={"@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True})
settings = DeploySettings.from_context(app.node)
TotesysPlatformStack(
    app,
    f"TotesysPlatform-{settings.env_name}",
    settings=settings,
    description="totesys_platform: lake buckets, database secrets, ECS (Dagster webserver, daemon, runs), alerts",
    synthesizer=cdk.DefaultStackSynthesizer(generate_bootstrap_version_rule=True),
)
app.synth()
