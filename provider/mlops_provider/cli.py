"""The ``mlops`` command line: check, describe, run and promote pipeline specs.

    mlops lint dags/pipelines            # every error in every file, file:line:col: ...; exit 1 if any
    mlops lint --format json specs/      # the same for CI bots
    mlops schema --output spec.json      # JSON Schema for editors (yaml-language-server)
    mlops show dags/pipelines/x.yaml     # the DAGs, tasks, dependencies and schedules a spec produces
    mlops run dags/pipelines/x.yaml      # one run of a DAG of the spec, in-process (dag.test)
    mlops history / mlops rollback SPEC  # the moves of the spec's alias, and undoing one
    mlops doctor                         # can this Airflow's settings keep a DAG run's state in one place?

Exit status: 0 done, 1 the command's check failed (lint found issues, the run failed, a rollback was
refused), 2 the spec given is invalid (the issues go to stderr), 3 ``run``: the candidate was rejected.

Nothing at module level imports Airflow: ``lint`` runs in a pre-commit hook of a data-science repo in
well under a second. Each command is one function registered on :data:`app`, reusing :func:`load_one`
and the shared options below.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlops_provider.spec.kinds import KIND_NAMES

if TYPE_CHECKING:
    from mlops_provider.exceptions import SpecIssue
    from mlops_provider.plan.model import PipelinePlan
    from mlops_provider.spec.load import LoadedSpec

app = typer.Typer(
    name="mlops",
    help="Check and describe airflow-provider-mlops pipeline specs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class OutputFormat(str, enum.Enum):
    text = "text"
    json = "json"


ProjectRootOption = Annotated[
    Path | None,
    typer.Option(
        "--project-root",
        help="Where relative paths in specs resolve and which they may not leave. Default: [mlops] "
        "project_root, else the parent of the `dags` folder above each spec, else the current directory.",
        file_okay=False,
    ),
]
FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")]


# --------------------------------------------------------------------------------------------------
# shared helpers (also for commands added later)
# --------------------------------------------------------------------------------------------------
def load_all(paths: Sequence[Path], project_root: Path | None = None) -> list[LoadedSpec]:
    """Load every spec under ``paths`` (files or folders), with the cross-file checks applied."""
    from mlops_provider import config
    from mlops_provider.spec.load import check_unique_names, find_spec_files, load_spec

    allowed = config.allowed_modules()
    fixed_root = project_root.resolve() if project_root is not None else None
    loaded = [
        load_spec(path, project_root=fixed_root or config.project_root(path), allowed_modules=allowed)
        for path in find_spec_files(paths)
    ]
    check_unique_names(loaded)
    return loaded


#: exit status of a command given an invalid spec (``lint`` reports issues with 1: that is its verdict)
EXIT_INVALID_SPEC = 2


def load_one(spec: Path, project_root: Path | None = None) -> LoadedSpec:
    """Load one valid spec, or print its issues to stderr and exit with :data:`EXIT_INVALID_SPEC`."""
    (loaded,) = load_all([spec], project_root)
    if not loaded.ok:
        for issue in loaded.issues:
            typer.echo(issue.format(), err=True)
        typer.echo(f"{spec}: invalid pipeline spec", err=True)
        raise typer.Exit(EXIT_INVALID_SPEC)
    return loaded


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=2, default=_json_default, ensure_ascii=False)


# --------------------------------------------------------------------------------------------------
# mlops lint
# --------------------------------------------------------------------------------------------------
@app.command()
def lint(
    paths: Annotated[
        list[Path], typer.Argument(help="Spec files and folders (folders: every *.yaml / *.yml inside).")
    ],
    output_format: FormatOption = OutputFormat.text,
    project_root: ProjectRootOption = None,
) -> None:
    """Check pipeline specs; report every error in every file. Exit status 0 only if all are valid."""
    loaded = load_all(paths, project_root)
    issues: list[SpecIssue] = [issue for item in loaded for issue in item.issues]
    invalid = sum(1 for item in loaded if item.issues)
    summary = {
        "files": len(loaded),
        "valid": len(loaded) - invalid,
        "invalid": invalid,
        "errors": len(issues),
    }
    if output_format is OutputFormat.json:
        typer.echo(_dumps({"issues": [issue.as_dict() for issue in issues], "summary": summary}))
    else:
        for issue in issues:
            typer.echo(issue.format())
        if not loaded:
            typer.echo("mlops lint: no spec files (*.yaml, *.yml) found", err=True)
        elif issues:
            typer.echo(f"{len(issues)} error(s) in {invalid} of {len(loaded)} spec file(s)", err=True)
        else:
            typer.echo(f"{len(loaded)} spec file(s) OK", err=True)
    if issues:
        raise typer.Exit(1)


# --------------------------------------------------------------------------------------------------
# mlops schema
# --------------------------------------------------------------------------------------------------
def schema_text() -> str:
    """The spec's JSON Schema as committed in ``spec/pipeline.schema.json``."""
    from mlops_provider.spec.schema import json_schema

    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


@app.command()
def schema(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file instead of stdout.", dir_okay=False),
    ] = None,
) -> None:
    """Print the JSON Schema of the pipeline spec (for editors and CI)."""
    text = schema_text()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)


# --------------------------------------------------------------------------------------------------
# mlops show
# --------------------------------------------------------------------------------------------------
def plan_of(loaded: LoadedSpec) -> PipelinePlan:
    from mlops_provider.plan.build import build_plan

    assert loaded.spec is not None  # load_one() guarantees it
    return build_plan(loaded.spec, source=loaded.display_path, text=loaded.text, spec_sha256=loaded.sha256)


def _schedule_text(schedule: str | None, assets: Sequence[str]) -> str:
    parts = [schedule] if schedule else []
    parts += [f"asset {uri}" for uri in assets]
    return " or ".join(parts) if parts else "none (manual / API only)"


def _plan_as_dict(plan: PipelinePlan) -> dict[str, Any]:
    data = dataclasses.asdict(plan)
    for dag in data["dags"]:
        dag.pop("doc_md")
    return data


@app.command()
def show(
    spec: Annotated[Path, typer.Argument(help="A pipeline spec file.", dir_okay=False)],
    output_format: FormatOption = OutputFormat.text,
    project_root: ProjectRootOption = None,
) -> None:
    """Show the DAGs, tasks, dependencies and schedules a spec produces."""
    plan = plan_of(load_one(spec, project_root))
    if output_format is OutputFormat.json:
        typer.echo(_dumps(_plan_as_dict(plan)))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.tree import Tree

    root = Tree(
        f"[bold]{escape(plan.name)}[/bold]  from {escape(plan.source)}  (sha256 {plan.spec_sha256[:12]})"
    )
    for dag in plan.dags:
        node = root.add(f"[bold cyan]DAG {escape(dag.dag_id)}[/bold cyan] ({dag.kind})")
        node.add(f"schedule: {escape(_schedule_text(dag.schedule, dag.schedule_on_assets))}")
        node.add(
            f"start: {dag.start_date.isoformat()}  catchup: {dag.catchup}  owner: {escape(dag.owner)}  "
            f"tags: {escape(', '.join(dag.tags))}"
        )
        tasks = node.add("tasks")
        for task in dag.tasks:
            after = f"  ← {', '.join(task.upstream)}" if task.upstream else ""
            emits = dag.outlets.get(task.task_id, ())
            line = f"[green]{escape(task.task_id)}[/green]  {escape(task.operator.rsplit('.', 1)[-1])}{after}"
            if task.expand:
                shards = max(len(v) for v in task.expand.values())
                line += f"  [magenta]x{shards} mapped[/magenta] over {escape(', '.join(task.expand))}"
            if emits:
                line += f"  → emits {escape(', '.join(emits))}"
            leaf = tasks.add(line)
            if task.doc:
                leaf.add(f"[dim]{escape(task.doc)}[/dim]")
    Console().print(root)


# --------------------------------------------------------------------------------------------------
# mlops run
# --------------------------------------------------------------------------------------------------
@app.command()
def run(
    spec: Annotated[Path, typer.Argument(help="A pipeline spec file.", dir_okay=False, exists=True)],
    dag: Annotated[str, typer.Option("--dag", help=f"{', '.join(KIND_NAMES)}, or a DAG id.")] = "training",
    output_format: FormatOption = OutputFormat.text,
    project_root: ProjectRootOption = None,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Reuse an identical earlier model "
                                        "(same data, spec sections, code, libraries).")] = True,
) -> None:
    """Run a DAG of the spec once, in-process (Airflow dag.test), with the current Airflow/MLflow config.

    Exit status 0 if the DAG run succeeded (and promoted), 1 if it failed, 2 if the spec is invalid, 3 if
    the evaluation gate rejected the candidate (nothing registered, the alias stays). Prints the MLflow
    run, verdict, model version and alias.
    """
    from mlops_provider.run import run_command

    raise typer.Exit(run_command(spec, dag=dag, as_json=output_format is OutputFormat.json,
                                 project_root=project_root, cache=cache))


# --------------------------------------------------------------------------------------------------
# mlops history / mlops rollback
# --------------------------------------------------------------------------------------------------
@app.command()
def history(
    spec: Annotated[Path, typer.Argument(help="A pipeline spec file.", dir_okay=False, exists=True)],
    output_format: FormatOption = OutputFormat.text,
    project_root: ProjectRootOption = None,
) -> None:
    """List every move of the spec's deploy alias, oldest first: time, from, to, who, why."""
    from mlops_provider.audit import history_command

    raise typer.Exit(
        history_command(spec, as_json=output_format is OutputFormat.json, project_root=project_root)
    )


@app.command()
def rollback(
    spec: Annotated[Path, typer.Argument(help="A pipeline spec file.", dir_okay=False, exists=True)],
    to: Annotated[
        str | None, typer.Option("--to", help="Version to move the alias to. Default: its previous holder.")
    ] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why, for the audit trail.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Allow a version whose evaluation rejected it.")
    ] = False,
    project_root: ProjectRootOption = None,
) -> None:
    """Move the spec's deploy alias back to its previous holder (or --to a version) and record the move.

    Exit status 0 if it moved, 1 if there is nothing to roll back to or the version is refused, 2 if the
    spec is invalid.
    """
    from mlops_provider.audit import rollback_command

    raise typer.Exit(
        rollback_command(spec, to=to, reason=reason, force=force, project_root=project_root)
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()


# --------------------------------------------------------------------------------------------------
# mlops doctor
# --------------------------------------------------------------------------------------------------
@app.command()
def doctor(
    mlflow_conn_id: Annotated[str | None, typer.Option("--mlflow-conn-id", help="The connection the specs "
                                                        "use (default: mlflow_default).")] = None,
) -> None:
    """Check the current configuration the way the first task of a DAG run does: under an executor that may
    run tasks on other machines, the local MLflow store and workspace are refused. Exit 1 if they would be."""
    from mlops_provider import deployment
    from mlops_provider.hooks.mlflow import MLflowHook

    names = deployment.executors()
    remote = deployment.distributed(names)
    hook = MLflowHook(mlflow_conn_id=mlflow_conn_id)
    typer.echo(f"executor: {', '.join(names)}" + (" (tasks may run on other machines)" if remote else
                                                   " (every task on this machine)"))
    typer.echo(f"MLflow:   {hook.tracking_uri}  ({hook.tracking_uri_source})")
    from mlops_provider.storage.workspace import workspace_root

    typer.echo(f"workspace: {workspace_root()}")
    problems = deployment.findings(tracking_uri=hook.tracking_uri, tracking_from=hook.tracking_uri_source)
    if not remote or not problems:
        typer.echo("OK: a DAG run's tasks share one MLflow and one workspace")
        return
    for problem in problems:
        typer.echo(f"REFUSED {problem.setting}: {problem.problem}\n        fix: {problem.fix}", err=True)
    raise typer.Exit(1)
