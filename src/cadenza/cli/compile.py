"""`cadenza compile FILE[:PIPELINE] --format kfp|dockerfile -o OUT`.

What belongs here: loading the pipeline, handing its Plan to the compiler (graph/kfp.py),
writing the YAML, and the project's Dockerfile (the image the steps run in: pinned
requirements and the pipeline files). What does not: the translation itself.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cadenza.cli.console import escape, out

DEFAULT_IMAGE = "cadenza-pipeline:latest"
BASE_IMAGE = "python:3.11-slim"


def step_source(target: str, plan_name: str, source_file: str | None = None) -> str:
    """How the steps name the pipeline: its file relative to the project folder (the image's
    working directory: where `cadenza compile` runs), and the pipeline's name. A bare
    pipeline name (found through cadenza.toml) uses the file that defines it."""
    file_part = target
    if not Path(target).is_file() and ":" in target:
        file_part = target.rsplit(":", 1)[0]
    if not Path(file_part).is_file() and source_file:
        file_part = source_file
    path = Path(file_part)
    if path.is_absolute():
        try:
            path = path.resolve().relative_to(Path.cwd().resolve())
        except ValueError:
            path = Path(path.name)
    return f"{path.as_posix()}:{plan_name}"


def fingerprints_of(plan: Any) -> dict[str, str]:
    """The cache=True tasks' fingerprints: code (and the project code it calls), version,
    requirements and interpreter (graph/fingerprint.py)."""
    import hashlib
    import json

    from cadenza.graph.fingerprint import code_fingerprint

    out_: dict[str, str] = {}
    for node in plan.graph:
        o = node.options
        if o.cache:
            parts = [code_fingerprint(node.fn), o.version or "", list(o.requirements),
                     o.python or ""]
            out_[node.id] = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]
    return out_


def compile_command(
    target: Annotated[str, typer.Argument(metavar="FILE[:PIPELINE]", help="The pipeline.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The file to write.")],
    format_: Annotated[str, typer.Option(
        "--format", "-f", help="kfp (Kubeflow Pipelines v2 YAML) or dockerfile.")] = "kfp",
    image: Annotated[str, typer.Option(
        "--image", help="The image the steps run in (built from `--format dockerfile`).")
    ] = DEFAULT_IMAGE,
    cadenza_spec: Annotated[str | None, typer.Option(
        "--cadenza-requirement", help="How the Dockerfile installs Cadenza (default: "
        "cadenza[s3,gcs]==<this version>).")] = None,
    requirements: Annotated[Path | None, typer.Option(
        "--requirements", "-r", help="A requirements file whose lines the Dockerfile "
        "installs too (what tasks import when they run).")] = None,
) -> None:
    """Compile a pipeline for Kubeflow Pipelines / Vertex AI (or write its Dockerfile).

    Each KFP step runs `cadenza task-run` in --image; the artifact root must be object
    storage (CADENZA_ARTIFACT_ROOT=s3://... or gs://...). Exit code 2 lists every part of
    the pipeline KFP cannot express.
    """
    from cadenza.cli.discovery import resolve_pipeline
    from cadenza.core.errors import UsageError
    from cadenza.core.settings import get_settings

    settings = get_settings()
    plan = resolve_pipeline(target, settings)
    source = step_source(target, plan.name, plan.source_file)
    if format_ == "kfp":
        import yaml

        from cadenza.graph.kfp import compile_kfp

        compiled = compile_kfp(plan, image=image, source=source,
                               fingerprints=fingerprints_of(plan))
        header = (f"# Kubeflow Pipelines v2 pipeline compiled by Cadenza from {source}\n"
                  f"# Each step runs `cadenza task-run` in {image}.\n")
        text = header + yaml.safe_dump_all(compiled.documents, sort_keys=False,
                                           default_flow_style=False, width=100)
        output.write_text(text, encoding="utf-8")
        out().print(f"wrote {escape(str(output))}: {len(compiled.steps)} tasks of pipeline "
                    f"[bold]{escape(plan.name)}[/] for Kubeflow Pipelines (image "
                    f"{escape(image)})")
        return
    if format_ == "dockerfile":
        extra = [] if requirements is None else [
            line.strip() for line in requirements.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
        text = dockerfile(plan, source=source, cadenza_spec=cadenza_spec, extra=extra)
        output.write_text(text, encoding="utf-8")
        out().print(f"wrote {escape(str(output))}: build it from the project folder "
                    f"(docker build -f {escape(str(output))} -t {escape(image)} .)")
        return
    raise UsageError(f"unknown --format {format_!r}", pipeline=plan.name,
                     hint="--format kfp or --format dockerfile")


# -- the Dockerfile -----------------------------------------------------------------------------
def dockerfile(plan: Any, *, source: str, cadenza_spec: str | None = None,
               extra: list[str] | None = None) -> str:
    """A Dockerfile for the steps of `plan`: the interpreter, Cadenza, the pinned
    distributions the pipeline's module imports (as installed here), and the project."""
    from cadenza import __version__

    spec = cadenza_spec or f"cadenza[s3,gcs]=={__version__}"
    pins = pinned_requirements(plan)
    named = {_name_of(p) for p in extra or []}
    pins = [p for p in pins if _name_of(p) not in named] + list(extra or [])
    lines = [
        f"# The image of pipeline {plan.name}'s steps (Cadenza `compile --format dockerfile`).",
        "# Build it from the project folder; pins are the versions installed where it was",
        "# compiled.",
        f"FROM {BASE_IMAGE}",
        "ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 CADENZA_HOME=/tmp/cadenza",
        "WORKDIR /app",
        "RUN python -m pip install --no-cache-dir \\",
        *[f"    {_quoted(p)} \\" for p in [spec, *pins]],
        "    && cadenza version",
        *_env_builds(plan),
        f"COPY {source.rsplit(':', 1)[0]} /app/{source.rsplit(':', 1)[0]}",
        "COPY . /app",
        'ENTRYPOINT ["cadenza"]',
        'CMD ["task-run", "--help"]',
        "",
    ]
    return "\n".join(lines)


ENVS_DIR = "/opt/cadenza/envs"


def _env_builds(plan: Any) -> list[str]:
    """The uv environments of the tasks with `requirements=`/`python=`, built into the
    image (a derived image: the steps find them ready instead of building them at start)."""
    sets = sorted({(tuple(n.options.requirements), n.options.python) for n in plan.graph
                   if n.options.isolated}, key=repr)
    if not sets:
        return []
    lines = [f"ENV CADENZA_ENVS_DIR={ENVS_DIR}"]
    for requirements, python in sets:
        import json

        version = "None" if python is None else json.dumps(python)
        call = (f"from cadenza.executors.envs import ensure_env; "
                f"ensure_env(tuple({json.dumps(list(requirements))}), {version})")
        lines.append(f"RUN python -c {_quoted(call)}")
    return lines


def pinned_requirements(plan: Any) -> list[str]:
    """`name==version` of Cadenza's dependencies (with the s3/gcs extras) and of the
    distributions the process has imported from site-packages once the pipeline's module is
    loaded, with everything they require (markers evaluated here): the environment the
    pipeline was compiled in. Packages a task imports only when it runs are not seen: list
    them in --requirements."""
    from importlib import metadata

    from packaging.requirements import Requirement

    del plan  # its module is loaded: what it imported is in sys.modules
    tops = metadata.packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    wanted: dict[str, set[str]] = {"cadenza": {"s3", "gcs"}}
    for name, mod in list(sys.modules.items()):
        top = name.split(".", 1)[0]
        file = getattr(mod, "__file__", None) or ""
        if top in stdlib or top == "cadenza" or "-packages" not in file:
            continue
        for dist_name in tops.get(top, []):
            wanted.setdefault(dist_name, set())
    seen: dict[str, str] = {}
    todo = list(wanted.items())
    while todo:
        name, extras = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen and not extras:
            continue
        seen[key] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if any(req.marker is None or req.marker.evaluate({"extra": e})
                   for e in (extras or {""})):
                todo.append((req.name, set(req.extras)))
    return sorted(f"{n}=={v}" for n, v in seen.items() if n != "cadenza")


def _name_of(requirement: str) -> str:
    import re

    return re.split(r"[\[=<>!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _quoted(requirement: str) -> str:
    import shlex

    return shlex.quote(requirement)
