"""`totesys`: the embedded database, the source (schema, sample, generator, simulator) and the demo."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

from totesys_platform.definitions import database_resource
from totesys_platform.resources.embedded import embedded_server_running, start_embedded_server, stop_embedded_server
from totesys_platform.resources.postgres import PostgresResource
from totesys_platform.settings import Settings, SettingsError, load_settings, settings_from_stack_outputs

LOCAL_INSTANCE_YAML = Path(__file__).with_name("local_dagster.yaml")


def source_db(settings: Settings) -> PostgresResource:
    return database_resource(settings, "source")


def warehouse_db(settings: Settings) -> PostgresResource:
    return database_resource(settings, "warehouse")


POSTGRES_STORAGE_YAML = """
# DAGSTER_PG_URL is set: runs, events and schedules in PostgreSQL instead of SQLite.
storage:
  postgres:
    postgres_url:
      env: DAGSTER_PG_URL
"""


def local_instance_yaml(settings: Settings) -> str:
    """The shipped local instance config; with DAGSTER_PG_URL, its storage in PostgreSQL (one setting)."""
    return LOCAL_INSTANCE_YAML.read_text() + (POSTGRES_STORAGE_YAML if settings.dagster_pg_url else "")


def ensure_dagster_home(settings: Settings) -> Path:
    """DAGSTER_HOME if set, else TOTESYS_HOME/dagster_home with the shipped local instance config.

    A dagster.yaml someone else wrote is left alone; one written here is kept in step with the settings."""
    home = Path(os.environ.get("DAGSTER_HOME") or settings.dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    wanted = local_instance_yaml(settings)
    if not config.exists() or config.read_text().startswith(LOCAL_INSTANCE_YAML.read_text().splitlines()[0]):
        if not config.exists() or config.read_text() != wanted:
            config.write_text(wanted)
    return home


def _progress(message: str) -> None:
    print(f"[totesys] {message}", flush=True)


def cmd_db(args, settings: Settings) -> int:
    pgdata = settings.embedded_pgdata
    if args.action == "start":
        start_embedded_server(pgdata)
        for db in (source_db(settings), warehouse_db(settings)):
            if not db.url:
                db.resolved_url()
        _progress(f"embedded PostgreSQL running, data in {pgdata}")
    elif args.action == "stop":
        _progress("stopped" if stop_embedded_server(pgdata) else "not running")
    elif args.action == "status":
        _progress("running" if embedded_server_running(pgdata) else "stopped")
    elif args.action == "url":
        print(
            source_db(settings).resolved_url() if args.database == "totesys" else warehouse_db(settings).resolved_url()
        )
    return 0


def cmd_source(args, settings: Settings) -> int:
    from totesys_platform.source import copy_frame, create_schema, reset_sequences, table_counts

    db = source_db(settings)
    with db.connect() as conn:
        if args.action == "create":
            create_schema(conn, replace=args.replace)
            _progress("totesys schema created")
        elif args.action == "load-sample":
            from totesys_platform.source.sample import load_sample

            create_schema(conn, replace=True)
            _progress(f"loaded {load_sample(conn, Path(args.path))}")
        elif args.action == "generate":
            from totesys_platform.source import LOAD_ORDER
            from totesys_platform.source.generator import generate

            started = time.perf_counter()
            create_schema(conn, replace=True)
            tables = generate(args.scale, args.seed)
            _progress(f"generated scale {args.scale} in {time.perf_counter() - started:.1f}s; loading with COPY")
            # Generated rows satisfy every foreign key by construction (a test loads them with the checks
            # on), so the bulk load skips the per-row FK triggers where the role allows it (superuser).
            try:
                with conn.transaction():  # a savepoint: undone if the role may not set it
                    conn.execute("SET session_replication_role = replica")
            except psycopg.errors.InsufficientPrivilege:
                _progress("not a superuser: loading with foreign-key checks on (slower)")
            for name in LOAD_ORDER:
                copy_frame(conn, name, tables[name])
                _progress(f"  {name}: {tables[name].height:,} rows ({time.perf_counter() - started:.1f}s)")
            reset_sequences(conn)
            total = sum(frame.height for frame in tables.values())
            _progress(f"source ready: {total:,} rows in {len(tables)} tables in {time.perf_counter() - started:.1f}s")
        elif args.action == "simulate":
            from totesys_platform.source.simulator import Simulator

            sim = Simulator(conn, seed=args.seed)
            kinds = tuple(args.kinds.split(",")) if args.kinds else None
            for round_ in range(args.rounds):
                _progress(f"round {round_ + 1}: {dict(sim.run(args.events, kinds))}")
                conn.commit()
                if round_ + 1 < args.rounds:
                    time.sleep(args.interval)
        elif args.action == "counts":
            for name, count in table_counts(conn).items():
                print(f"{name:>15}: {count:,}")
        conn.commit()
    return 0


def materialize_all(settings: Settings, selection: str = "*", verbose: bool = False) -> int:
    """The contract command, `dagster asset materialize -m totesys_platform --select '*'`, with one line per
    stage as it finishes; its event log goes to a file under TOTESYS_HOME/logs (and to the terminal with
    --verbose)."""
    import dagster as dg

    from totesys_platform.definitions import defs
    from totesys_platform.run_progress import follow, step_stages

    dagster_home = ensure_dagster_home(settings)
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "TOTESYS_HOME": str(settings.home)}
    command = ["dagster", "asset", "materialize", "-m", "totesys_platform", "--select", selection]
    log_path = settings.home / "logs" / f"materialize-{time.strftime('%Y%m%d-%H%M%S')}.log"
    _progress(f"{' '.join(command)}  (event log: {log_path})")
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        return follow(
            [str(Path(sys.executable).parent / command[0]), *command[1:]],
            env,
            instance,
            step_stages(defs),
            log_path,
            _progress,
            verbose=verbose,
        )


def cmd_reconcile(args, settings: Settings) -> int:
    """The reconciliation job, in this process, recorded in the local Dagster instance (seen in the UI):
    exit 0 when it ran, whatever it found; 1, with the error, when it could not run."""
    import dagster as dg

    from totesys_platform.definitions import build_definitions
    from totesys_platform.raw.checks import RECONCILE_JOB

    job = build_definitions(settings).resolve_job_def(RECONCILE_JOB)
    _progress("comparing every source table with the ingestion zone (segment checksums)")
    with dg.DagsterInstance.from_config(str(ensure_dagster_home(settings))) as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
    evaluations = result.get_asset_check_evaluations()
    for evaluation in sorted(evaluations, key=lambda e: e.asset_key.path[-1]):
        _progress(f"  {evaluation.description}")
    if not result.success:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        error = failure.event_specific_data.error.message.strip() if failure else "the run failed"
        print(f"totesys: error: reconciliation could not run: {error}", file=sys.stderr)
        return 1
    _progress(f"done (run {result.run_id}); findings are recorded and carried to the warehouse by the next runs")
    return 0


def cmd_demo(args, settings: Settings) -> int:
    """Embedded database + generated source + the whole graph, then where to look."""
    started = time.perf_counter()
    db = source_db(settings)
    with db.connect() as conn:
        populated = conn.execute("SELECT to_regclass('sales_order') IS NOT NULL").fetchone()[0]
    if args.fresh or not populated:
        cmd_source(argparse.Namespace(action="generate", scale=args.scale, seed=args.seed), settings)
    else:
        _progress("reusing the existing totesys source (use --fresh to regenerate)")
    _progress("materialising every asset: raw -> processed -> warehouse -> reports")
    code = materialize_all(settings, verbose=args.verbose)
    if code != 0:
        return code
    with warehouse_db(settings).connect() as conn:
        schema = settings.warehouse_schema
        from totesys_platform.catalog import WAREHOUSE_TABLES

        for table in WAREHOUSE_TABLES:
            query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table.name))
            count = conn.execute(query).fetchone()[0]
            _progress(f"  warehouse {schema}.{table.name}: {count:,} rows")
    described = settings.describe()
    _progress(f"done in {time.perf_counter() - started:.1f}s")
    print(f"""
Warehouse:       {described["warehouse"]}  schema {schema}
                 psql "$(totesys db url warehouse)"
Source:          {described["source"]}
Ingestion zone:  {settings.ingestion_url}
Processed zone:  {settings.processed_url}
Dashboard:       {settings.reports_url}/dashboard.html   (views: schema reports in the warehouse)
Dagster UI:      DAGSTER_HOME={ensure_dagster_home(settings)} .venv/bin/dg dev
                 then open http://127.0.0.1:3000 (lineage, sensors, checks)
""")
    return 0


def cmd_stack_settings(args) -> int:
    """The deployed stack's outputs as shell settings (no secret: the stack outputs secret ids only)."""
    import shlex

    import boto3

    stack = boto3.client("cloudformation").describe_stacks(StackName=args.stack_name)["Stacks"][0]
    for key, value in sorted(settings_from_stack_outputs(stack.get("Outputs", [])).items()):
        print(f"export {key}={shlex.quote(value)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="totesys", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    db = sub.add_parser("db", help="the embedded PostgreSQL server")
    db.add_argument("action", choices=["start", "stop", "status", "url"])
    db.add_argument("database", nargs="?", default="totesys", choices=["totesys", "warehouse"])
    src = sub.add_parser("source", help="the totesys source database")
    src_sub = src.add_subparsers(dest="action", required=True)
    src_sub.add_parser("create", help="create the schema").add_argument("--replace", action="store_true")
    src_sub.add_parser("load-sample", help="load the real public sample").add_argument("path")
    gen = src_sub.add_parser("generate", help="replace the data with a synthetic totesys")
    gen.add_argument("--scale", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=42)
    sim = src_sub.add_parser("simulate", help="apply business events")
    sim.add_argument("--events", type=int, default=100)
    sim.add_argument("--kinds", default="", help="comma-separated event kinds (default: a realistic mix)")
    sim.add_argument("--rounds", type=int, default=1)
    sim.add_argument("--interval", type=float, default=60.0, help="seconds between rounds")
    sim.add_argument("--seed", type=int, default=0)
    src_sub.add_parser("counts", help="rows per table")
    demo = sub.add_parser("demo", help="run the platform end to end on embedded defaults")
    demo.add_argument("--scale", type=float, default=1.0)
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--fresh", action="store_true", help="regenerate the source first")
    demo.add_argument("--verbose", action="store_true", help="show Dagster's event log on the terminal too")
    materialize = sub.add_parser("materialize", help="materialise every asset (the contract command)")
    materialize.add_argument("--verbose", action="store_true", help="show Dagster's event log on the terminal too")
    sub.add_parser("reconcile", help="find deletes, quiet updates and late rows the cursor cannot see")
    sub.add_parser("settings", help="print the settings (secrets redacted)")
    stack = sub.add_parser("stack-settings", help="print `export` lines of the settings a deployed stack outputs")
    stack.add_argument("stack_name", help="the CloudFormation stack, e.g. TotesysPlatform-prod")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "stack-settings":
        return cmd_stack_settings(args)
    try:
        settings = load_settings()
        if args.command == "settings":
            for key, value in settings.describe().items():
                print(f"{key:>17}: {value}")
            return 0
        if args.command == "materialize":
            return materialize_all(settings, verbose=args.verbose)
        commands = {"db": cmd_db, "source": cmd_source, "demo": cmd_demo, "reconcile": cmd_reconcile}
        return commands[args.command](args, settings)
    except (SettingsError, psycopg.OperationalError, RuntimeError, FileNotFoundError) as err:
        print(f"totesys: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
