"""The AWS deployment of totesys_platform as one CDK stack (see README.md in this folder).

What it creates: the lake buckets (ingestion, processed, reports) and the compute-log bucket, the database
secrets, an ECS cluster with the Dagster webserver and daemon services and the run task definition that
deploy/dagster.yaml's EcsRunLauncher starts, optionally an RDS PostgreSQL for the Dagster instance and the
warehouse, the alert topic, and one least-privilege role per task kind. Its outputs are the platform's
settings, each output's description being the setting's exact name (`totesys stack-settings` reads them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

REPO = Path(__file__).resolve().parents[1]  # the image is built from the repository root
DAGSTER_HOME = "/opt/dagster/dagster_home"
ECR_IMAGE = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com/([^:@]+)(?::([^@]+))?$")
# deploy/dagster.yaml reads the Dagster instance database URL from DAGSTER_PG_URL, which ECS injects from
# the "url" key of the instance database secret.
INSTANCE_DB_URL_KEY = "url"
DATABASE_ADMIN = "totesys_admin"


@dataclass
class DeploySettings:
    """The deployment's parameters (CDK context: `cdk deploy -c key=value`)."""

    env_name: str = "prod"
    image_uri: str | None = None  # None: build deploy/Dockerfile as a CDK asset at `cdk deploy`
    alert_email: str | None = None
    vpc_id: str | None = None  # None: a new VPC (2 AZs, one NAT gateway)
    subnet_ids: list[str] = field(default_factory=list)  # private subnets of vpc_id, for tasks and RDS
    availability_zones: list[str] = field(default_factory=list)
    create_database: bool = True  # RDS PostgreSQL for the Dagster instance and the warehouse
    warehouse_secret_arn: str | None = None  # with create_database false: existing secrets
    instance_db_secret_arn: str | None = None  # JSON {"url": "postgresql+psycopg2://..."}
    warehouse_schema: str = "warehouse"
    webserver_cidr: str | None = None  # who may reach the UI on port 3000 (your VPN's range); None: no one

    @classmethod
    def from_context(cls, node) -> DeploySettings:
        def get(key: str, default=None):
            value = node.try_get_context(key)
            return default if value in (None, "") else value

        def listed(key: str) -> list[str]:
            value = get(key, [])
            return [v for v in value.split(",") if v] if isinstance(value, str) else list(value)

        settings = cls(
            env_name=get("env_name", "prod"),
            image_uri=get("image_uri"),
            alert_email=get("alert_email"),
            vpc_id=get("vpc_id"),
            subnet_ids=listed("subnet_ids"),
            availability_zones=listed("availability_zones"),
            create_database=str(get("create_database", "true")).lower() not in ("false", "0", "no"),
            warehouse_secret_arn=get("warehouse_secret_arn"),
            instance_db_secret_arn=get("instance_db_secret_arn"),
            warehouse_schema=get("warehouse_schema", "warehouse"),
            webserver_cidr=get("webserver_cidr"),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.vpc_id and (not self.subnet_ids or len(self.subnet_ids) != len(self.availability_zones)):
            raise ValueError("vpc_id needs subnet_ids and availability_zones, one zone per subnet")
        if not self.create_database and not (self.warehouse_secret_arn and self.instance_db_secret_arn):
            raise ValueError("create_database=false needs warehouse_secret_arn and instance_db_secret_arn")


# Checks that do not apply, with the reason (recorded next to each resource they are skipped on).
LOGS_ENCRYPTED_BY_CLOUDWATCH = (
    "CKV_AWS_158",
    "CloudWatch Logs encrypts every log group at rest with its own key; no secret is ever logged",
)
SECRET_WITH_MANAGED_KEY = (
    "CKV_AWS_149",
    "encrypted with the account's AWS-managed Secrets Manager key; a customer key adds cost, not protection here",
)


def skip_checks(construct: Construct, *reasons: tuple[str, str]) -> None:
    """Record why a checkov check does not apply, next to the resource (checkov reads the metadata)."""
    resource = construct.node.default_child if not isinstance(construct, cdk.CfnResource) else construct
    resource.add_metadata("checkov", {"skip": [{"id": check, "comment": why} for check, why in reasons]})  # type: ignore[union-attr]


class TotesysPlatformStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, *, settings: DeploySettings, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.settings = settings
        self.prefix = f"totesys-{settings.env_name}"
        self._buckets()
        self._source_secret()
        self._network()
        if settings.create_database:
            self._database_instance()
            warehouse_secret, instance_secret = self._database_secrets()
        else:
            warehouse_secret, instance_secret = self._existing_database_secrets()
        self._alerts()
        self.platform_settings = self._platform_settings(warehouse_secret)
        self._compute(instance_secret)
        secret_arns = [self.source_secret_arn, warehouse_secret.secret_arn]
        self._run_role_policies(secret_arns)
        self._daemon_role_policies(secret_arns)
        self._webserver_role_policies()
        self._outputs()

    # --- parts of the stack, in the order they are made (construct ids are the stack's own) -------------

    def _buckets(self) -> None:
        self.access_logs = s3.Bucket(
            self,
            "AccessLogsBucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=cdk.Duration.days(365))],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        skip_checks(self.access_logs, ("CKV_AWS_18", "the access-log bucket itself; logging it would loop"))
        self.ingestion = self._bucket(
            "IngestionBucket",
            # Nothing in the ingestion zone may ever be deleted: keep every version, expire nothing.
            lifecycle=[s3.LifecycleRule(abort_incomplete_multipart_upload_after=cdk.Duration.days(7))],
        )
        self.processed = self._bucket("ProcessedBucket")
        self.reports = self._bucket("ReportsBucket")
        self.compute_logs = self._bucket(
            "ComputeLogsBucket",
            lifecycle=[
                s3.LifecycleRule(
                    expiration=cdk.Duration.days(180),
                    noncurrent_version_expiration=cdk.Duration.days(30),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(7),
                )
            ],
        )
        # The ingestion zone is immutable: no principal may delete an object or a version of one.
        self.ingestion.add_to_resource_policy(
            iam.PolicyStatement(
                sid="IngestionZoneIsImmutable",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutLifecycleConfiguration"],
                resources=[self.ingestion.bucket_arn, self.ingestion.arn_for_objects("*")],
            )
        )

    def _source_secret(self) -> None:
        name = self.prefix
        self.source_secret_name = f"{name}/source-database"
        source_secret = secretsmanager.Secret(
            self,
            "SourceDatabaseSecret",
            secret_name=self.source_secret_name,
            description='totesys (read only): set to {"url": "postgresql://..."} or the RDS JSON shape',
        )
        skip_checks(source_secret, SECRET_WITH_MANAGED_KEY)
        self.source_secret_arn = self._secret_arn_pattern(self.source_secret_name)

    def _network(self) -> None:
        settings = self.settings
        if settings.vpc_id:
            self.vpc = ec2.Vpc.from_vpc_attributes(
                self,
                "Vpc",
                vpc_id=settings.vpc_id,
                availability_zones=settings.availability_zones,
                private_subnet_ids=settings.subnet_ids,
            )
        else:
            self.vpc = ec2.Vpc(
                self,
                "Vpc",
                max_azs=2,
                nat_gateways=1,
                subnet_configuration=[
                    ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                    ec2.SubnetConfiguration(
                        name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=22
                    ),
                ],
            )
            flow_log = self.vpc.add_flow_log("FlowLog")
            assert flow_log.log_group is not None
            skip_checks(flow_log.log_group, LOGS_ENCRYPTED_BY_CLOUDWATCH)
            for subnet in self.vpc.public_subnets:
                skip_checks(
                    subnet,
                    ("CKV_AWS_130", "public subnets hold only the NAT gateway; tasks and RDS are private"),
                )
        self.private = ec2.SubnetSelection(subnets=self.vpc.private_subnets)
        self.tasks_sg = ec2.SecurityGroup(
            self,
            "TasksSecurityGroup",
            vpc=self.vpc,
            description="totesys platform tasks: no inbound; outbound to AWS APIs and the databases",
            allow_all_outbound=True,
        )
        if settings.webserver_cidr:
            self.tasks_sg.add_ingress_rule(
                ec2.Peer.ipv4(settings.webserver_cidr), ec2.Port.tcp(3000), "the Dagster UI, from webserver_cidr"
            )

    def _database_instance(self) -> None:
        """An RDS PostgreSQL instance for the warehouse and the Dagster instance, reachable from the tasks only."""
        name = self.prefix
        db_sg = ec2.SecurityGroup(
            self, "DatabaseSecurityGroup", vpc=self.vpc, description="RDS: PostgreSQL from the tasks only"
        )
        db_sg.add_ingress_rule(self.tasks_sg, ec2.Port.tcp(5432), "PostgreSQL from the platform's tasks")
        self.database = rds.DatabaseInstance(
            self,
            "Database",
            engine=rds.DatabaseInstanceEngine.postgres(version=rds.PostgresEngineVersion.VER_17_9),
            instance_type=ec2.InstanceType.of(ec2.InstanceClass.BURSTABLE4_GRAVITON, ec2.InstanceSize.SMALL),
            vpc=self.vpc,
            vpc_subnets=self.private,
            security_groups=[db_sg],
            database_name="totesys",
            credentials=rds.Credentials.from_generated_secret(
                DATABASE_ADMIN,
                secret_name=f"{name}/database",
                # the password goes into connection URLs: no characters that need quoting
                exclude_characters=" %+~`#$&*()|[]{}:;<>?!'/@\"\\",
            ),
            storage_encrypted=True,
            allocated_storage=50,
            max_allocated_storage=200,
            backup_retention=cdk.Duration.days(14),
            deletion_protection=True,
            removal_policy=cdk.RemovalPolicy.SNAPSHOT,
            auto_minor_version_upgrade=True,
            copy_tags_to_snapshot=True,
            enable_performance_insights=True,
            iam_authentication=True,
            instance_identifier=name,
            cloudwatch_logs_exports=["postgresql"],
            publicly_accessible=False,
        )
        skip_checks(
            self.database,
            ("CKV_AWS_157", "single-AZ at the default size (cost); set multi_az on the construct for HA"),
            ("CKV_AWS_118", "enhanced monitoring is optional; Performance Insights and logs are on"),
        )

    def _database_secrets(self) -> tuple[secretsmanager.ISecret, secretsmanager.ISecret]:
        """The instance's log group, its generated secret (the warehouse's) and the Dagster instance's URL."""
        name = self.prefix
        # RDS writes to this group; made here (not by CDK's log-retention Lambda) to set its retention.
        database_logs = logs.LogGroup(
            self,
            "DatabaseLogs",
            log_group_name=f"/aws/rds/instance/{name}/postgresql",
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        skip_checks(database_logs, LOGS_ENCRYPTED_BY_CLOUDWATCH)
        skip_checks(self.database.node.find_child("Secret"), SECRET_WITH_MANAGED_KEY)
        assert self.database.secret is not None
        warehouse_secret = self.database.secret
        # The instance URL, built at deploy time: the template holds only a reference to the password.
        password = self.database.secret.secret_value_from_json("password").unsafe_unwrap()
        instance_secret = secretsmanager.Secret(
            self,
            "InstanceDatabaseSecret",
            secret_name=f"{name}/dagster-instance-database",
            description="The Dagster instance storage (runs, events, schedules): DAGSTER_PG_URL",
            secret_object_value={
                INSTANCE_DB_URL_KEY: cdk.SecretValue.unsafe_plain_text(
                    f"postgresql+psycopg2://{DATABASE_ADMIN}:{password}@{self.database.db_instance_endpoint_address}"
                    f":{self.database.db_instance_endpoint_port}/totesys"
                )
            },
        )
        skip_checks(instance_secret, SECRET_WITH_MANAGED_KEY)
        return warehouse_secret, instance_secret

    def _existing_database_secrets(self) -> tuple[secretsmanager.ISecret, secretsmanager.ISecret]:
        settings = self.settings
        warehouse_secret = secretsmanager.Secret.from_secret_complete_arn(
            self, "WarehouseSecret", str(settings.warehouse_secret_arn)
        )
        instance_secret = secretsmanager.Secret.from_secret_complete_arn(
            self, "InstanceDatabaseSecret", str(settings.instance_db_secret_arn)
        )
        return warehouse_secret, instance_secret

    def _alerts(self) -> None:
        settings = self.settings
        self.alerts = sns.Topic(
            self,
            "AlertTopic",
            display_name="totesys platform alerts",
            master_key=kms.Alias.from_alias_name(self, "SnsManagedKey", "alias/aws/sns"),
        )
        if settings.alert_email:
            self.alerts.add_subscription(subscriptions.EmailSubscription(settings.alert_email))

    def _platform_settings(self, warehouse_secret: secretsmanager.ISecret) -> dict[str, str]:
        """The platform's settings: the tasks' environment and the stack's outputs."""
        return {
            "TOTESYS_INGESTION_URL": f"s3://{self.ingestion.bucket_name}",
            "TOTESYS_PROCESSED_URL": f"s3://{self.processed.bucket_name}",
            "TOTESYS_REPORTS_URL": f"s3://{self.reports.bucket_name}",
            "TOTESYS_SOURCE_SECRET_ID": self.source_secret_name,
            "TOTESYS_WAREHOUSE_SECRET_ID": warehouse_secret.secret_arn,
            "TOTESYS_WAREHOUSE_SCHEMA": self.settings.warehouse_schema,
            "TOTESYS_ALERT_SNS_TOPIC_ARN": self.alerts.topic_arn,
            "TOTESYS_COMPUTE_LOG_BUCKET": self.compute_logs.bucket_name,
            "TOTESYS_RUN_TASK_DEFINITION": self._family("run"),
        }

    def _compute(self, instance_secret: secretsmanager.ISecret) -> None:
        """The cluster, the task roles and definitions, and the webserver and daemon services."""
        self.cluster = ecs.Cluster(self, "Cluster", vpc=self.vpc, container_insights_v2=ecs.ContainerInsights.ENABLED)
        image = self._image(self.settings.image_uri)
        self.execution_role = iam.Role(
            self,
            "TaskExecutionRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="ECS agent: pull the image, write the logs, inject the Dagster instance database secret",
        )
        self.run_role = self._task_role("RunTaskRole", "run tasks: the data work")
        self.daemon_role = self._task_role("DaemonTaskRole", "dagster-daemon: sensors, schedules, run launcher")
        self.webserver_role = self._task_role("WebserverTaskRole", "dagster-webserver: the UI")

        self.run_task = self._task_definition("run", cpu=1024, memory=4096, role=self.run_role)
        self._container(self.run_task, "run", image, instance_secret, command=None)
        web_task = self._task_definition("webserver", cpu=512, memory=2048, role=self.webserver_role)
        web = self._container(
            web_task,
            "webserver",
            image,
            instance_secret,
            command=["dagster-webserver", "-h", "0.0.0.0", "-p", "3000", "-w", "workspace.yaml"],
        )
        web.add_port_mappings(ecs.PortMapping(container_port=3000))
        daemon_task = self._task_definition("daemon", cpu=512, memory=2048, role=self.daemon_role)
        self._container(
            daemon_task, "daemon", image, instance_secret, command=["dagster-daemon", "run", "-w", "workspace.yaml"]
        )
        self._services(web_task, daemon_task)

    def _services(self, web_task: ecs.FargateTaskDefinition, daemon_task: ecs.FargateTaskDefinition) -> None:
        for construct_id, task in (("WebserverService", web_task), ("DaemonService", daemon_task)):
            ecs.FargateService(
                self,
                construct_id,
                cluster=self.cluster,
                task_definition=task,
                desired_count=1,
                security_groups=[self.tasks_sg],
                vpc_subnets=self.private,
                assign_public_ip=False,
                circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            )

    def _run_role_policies(self, secret_arns: list[str]) -> None:
        self.run_role.add_to_policy(
            iam.PolicyStatement(
                sid="ListTheZones",
                actions=["s3:ListBucket"],
                resources=[b.bucket_arn for b in (self.ingestion, self.processed, self.reports)],
            )
        )
        self.run_role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadAndWriteTheZones",  # no s3:DeleteObject: the ingestion zone is append-only
                actions=["s3:GetObject", "s3:PutObject"],
                resources=[b.arn_for_objects("*") for b in (self.ingestion, self.processed, self.reports)],
            )
        )
        self.run_role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteStepLogs",
                actions=["s3:PutObject"],
                resources=[self.compute_logs.arn_for_objects("dagster/compute-logs/*")],
            )
        )
        self.run_role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadTheDatabaseSecrets", actions=["secretsmanager:GetSecretValue"], resources=secret_arns
            )
        )

    def _daemon_role_policies(self, secret_arns: list[str]) -> None:
        self.daemon_role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadTheDatabaseSecrets",  # the change sensor reads max(last_updated) at the source
                actions=["secretsmanager:GetSecretValue"],
                resources=secret_arns,
            )
        )
        self.daemon_role.add_to_policy(
            iam.PolicyStatement(sid="SendAlerts", actions=["sns:Publish"], resources=[self.alerts.topic_arn])
        )
        run_family = self.run_task.family
        self.daemon_role.add_to_policy(
            iam.PolicyStatement(
                sid="LaunchRuns",
                actions=["ecs:RunTask"],
                resources=[self.format_arn(service="ecs", resource="task-definition", resource_name=f"{run_family}:*")],
                conditions={"ArnEquals": {"ecs:cluster": self.cluster.cluster_arn}},
            )
        )
        task_arns = self._task_arns()
        self.daemon_role.add_to_policy(
            iam.PolicyStatement(
                sid="WatchAndStopRuns",
                actions=["ecs:DescribeTasks", "ecs:StopTask", "ecs:TagResource"],
                resources=[task_arns],
            )
        )
        self.daemon_role.add_to_policy(
            iam.PolicyStatement(
                sid="DescribeWithoutResourceLevelPermissions",
                # These actions support no resource-level permissions (IAM's service authorization
                # reference): the resource must be "*". The launcher reads its own task's networking.
                actions=[
                    "ecs:DescribeTaskDefinition",
                    "ecs:ListTasks",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeSubnets",
                    "ec2:DescribeSecurityGroups",
                ],
                resources=["*"],
            )
        )
        self.daemon_role.add_to_policy(
            iam.PolicyStatement(
                sid="PassOnlyTheRunTaskRoles",
                actions=["iam:PassRole"],
                resources=[self.run_role.role_arn, self.execution_role.role_arn],
            )
        )

    def _webserver_role_policies(self) -> None:
        task_arns = self._task_arns()
        self.webserver_role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadStepLogs",
                actions=["s3:GetObject"],
                resources=[self.compute_logs.arn_for_objects("dagster/compute-logs/*")],
            )
        )
        self.webserver_role.add_to_policy(
            iam.PolicyStatement(sid="TerminateRuns", actions=["ecs:StopTask"], resources=[task_arns])
        )

    def _task_arns(self) -> str:
        return self.format_arn(service="ecs", resource="task", resource_name=f"{self.cluster.cluster_name}/*")

    def _outputs(self) -> None:
        for setting, value in self.platform_settings.items():
            words = setting.removeprefix("TOTESYS_").split("_")  # output keys allow no "_": the name is the description
            cdk.CfnOutput(self, "Setting" + "".join(w.capitalize() for w in words), value=value, description=setting)

    # --- helpers -----------------------------------------------------------------------------------

    def _bucket(self, construct_id: str, lifecycle: list[s3.LifecycleRule] | None = None) -> s3.Bucket:
        """A private, encrypted, versioned, TLS-only bucket, access-logged, kept when the stack goes."""
        return s3.Bucket(
            self,
            construct_id,
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix=f"{construct_id}/",
            # Replaced objects (Delta's _last_checkpoint pointer, merged dimension files) keep old versions
            # for 30 days; current objects never expire. Incomplete uploads are not objects.
            lifecycle_rules=lifecycle
            or [
                s3.LifecycleRule(
                    noncurrent_version_expiration=cdk.Duration.days(30),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(7),
                )
            ],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )

    def _image(self, uri: str | None) -> ecs.ContainerImage:
        """The tasks' image: built from deploy/Dockerfile by `cdk deploy`, or one already pushed. An ECR
        image is taken through its repository, so that the execution role is granted the pull."""
        if not uri:
            return ecs.ContainerImage.from_asset(
                str(REPO),
                file="deploy/Dockerfile",
                exclude=[".venv*", ".git", ".totesys*", "deploy/cdk.out", "**/__pycache__", "benchmarks"],
            )
        ecr_image = ECR_IMAGE.match(uri)
        if not ecr_image:
            return ecs.ContainerImage.from_registry(uri)  # a public registry: nothing to grant
        account, region, name, tag = ecr_image.groups()
        repository = ecr.Repository.from_repository_attributes(
            self,
            "ImageRepository",
            repository_arn=f"arn:{self.partition}:ecr:{region}:{account}:repository/{name}",
            repository_name=name,
        )
        return ecs.ContainerImage.from_ecr_repository(repository, tag or "latest")

    def _secret_arn_pattern(self, secret_name: str) -> str:
        # Secrets Manager appends "-" and six random characters to a secret's name in its ARN.
        return self.format_arn(
            service="secretsmanager",
            resource="secret",
            resource_name=f"{secret_name}-*",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )

    def _task_role(self, construct_id: str, what: str) -> iam.Role:
        return iam.Role(
            self, construct_id, assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"), description=what
        )

    def _family(self, kind: str) -> str:
        return f"totesys-{self.settings.env_name}-{kind}"

    def _task_definition(self, kind: str, *, cpu: int, memory: int, role: iam.Role) -> ecs.FargateTaskDefinition:
        return ecs.FargateTaskDefinition(
            self,
            f"{kind.capitalize()}TaskDefinition",
            family=self._family(kind),
            cpu=cpu,
            memory_limit_mib=memory,
            task_role=role,
            execution_role=self.execution_role,
        )

    def _container(
        self,
        task: ecs.FargateTaskDefinition,
        kind: str,
        image: ecs.ContainerImage,
        instance_secret: secretsmanager.ISecret,
        command: list[str] | None,
    ) -> ecs.ContainerDefinition:
        log_group = logs.LogGroup(
            self,
            f"{kind.capitalize()}Logs",
            log_group_name=f"/totesys/{self.settings.env_name}/{kind}",
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        skip_checks(log_group, LOGS_ENCRYPTED_BY_CLOUDWATCH)
        container = task.add_container(
            kind,
            container_name=kind,
            image=image,
            command=command,
            logging=ecs.LogDrivers.aws_logs(stream_prefix=kind, log_group=log_group),
            # Settings only: no secret is an environment variable. The platform reads the database URLs
            # from Secrets Manager at run time; the instance database's parts are ECS secrets.
            environment={
                "DAGSTER_HOME": DAGSTER_HOME,
                **self.platform_settings,
                "AWS_REGION": self.region,
            },
            secrets={"DAGSTER_PG_URL": ecs.Secret.from_secrets_manager(instance_secret, INSTANCE_DB_URL_KEY)},
            readonly_root_filesystem=False,
        )
        return container
