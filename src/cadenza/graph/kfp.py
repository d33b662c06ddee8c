"""Plan -> Kubeflow Pipelines v2 IR (PipelineSpec), as plain data. Pure: no I/O, no kfp import.

What belongs here: translating a `Plan` into the dicts of a KFP v2 pipeline spec (and its
Kubernetes platform spec), and listing every part of the pipeline KFP cannot express. What
does not: writing the YAML (`cadenza compile` in cli/), running a step (`cadenza task-run`,
engine/task_run.py), computing code fingerprints (the caller hands them in).

The IR is emitted from the Plan directly rather than built with the kfp SDK's DSL: the graph
layer stays free of the SDK (and of its protobuf/requests pins), a step is a container running
`cadenza task-run`, not a Python function the DSL would wrap, and the DSL has no hook for
Cadenza's trigger rules. The tests load every compiled file with the SDK's own loader.

How a pipeline maps (README "Running on Kubeflow Pipelines / Vertex AI"):

- every task is one step (a component + an executor running `cadenza task-run`); every data
  edge is a step input bound to the upstream's `ref` output (the JSON reference of the value
  in the artifact store, content-addressed), every order edge a `dependentTasks` entry.
- `.expand` -> a `<task>-map` step that computes the map indices, then a ParallelFor loop
  over them (a literal-only expansion iterates over a raw list, no extra step); the loop's
  `ref`s are collected (dsl.Collected) for every consumer, in map order.
- `@task.branch` -> one condition group per direct downstream (`branch == 'task'`: the
  dsl.If/Elif of one choice); downstream tasks that only follow a target join its group.
- `retry_on`: KFP retries any failed step; `task-run` records a failure retry_on does not
  name as `failed`, and the retries KFP still starts fail at once without running.
- trigger rules: all_success, none_failed, none_failed_min_one_success and none_skipped run
  after their upstream steps succeed (KFP's default); all_done, always, one_success,
  one_failed and all_failed run once they *ended* (ALL_UPSTREAM_TASKS_COMPLETED, their
  inputs optional). `cadenza task-run` then applies the exact rule to the upstream states
  and records `skipped` when it says so.
- the whole DAG is the body of an ExitHandler whose exit step `cadenza task-run --finalize`
  records what never ran (skipped / upstream_failed), mapped summaries and the run's state.
- resources -> CPU/memory requests and limits, GPUs -> accelerator (type from `gpu_type`);
  retries/backoff -> retryPolicy; cache=True -> cachingOptions with Cadenza's code
  fingerprint among the step's arguments (KFP's fingerprint hashes the arguments, image and
  inputs, and the inputs are content hashes: so it is Cadenza's cache key); timeout -> the
  pod's activeDeadlineSeconds (platform spec) and `task-run --timeout`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cadenza.core.errors import DefinitionError, Problem
from cadenza.graph.model import TaskNode, TriggerRule, iter_markers
from cadenza.graph.plan import Plan

SCHEMA_VERSION = "2.1.0"
SDK_VERSION = "cadenza-kfp-1"
RUN_ID = "{{$.pipeline_job_uuid}}"
EXIT_GROUP = "exit-handler-1"
FINALIZE = "cadenza-finalize"
# KFP caps a retry policy's backoff at one hour.
MAX_BACKOFF_S = 3600

# Rules under which a task may run after an upstream failed: KFP must start the step once
# its upstream steps ended, whatever their outcome; task-run then applies the rule.
COMPLETED_RULES = frozenset({TriggerRule.ALL_DONE, TriggerRule.ALWAYS, TriggerRule.ONE_SUCCESS,
                             TriggerRule.ONE_FAILED, TriggerRule.ALL_FAILED})
# Rules under which a skipped upstream skips the task: it may follow a branch target into
# its condition group.
SKIP_RULES = frozenset({TriggerRule.ALL_SUCCESS, TriggerRule.NONE_SKIPPED})

Group = tuple[str, ...]  # ("if", branch, target) or ("for", task)
Path = tuple[Group, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class KfpPipeline:
    """A compiled pipeline: the PipelineSpec and, when a step has a timeout, the Kubernetes
    platform spec (the second YAML document of the file). `steps` maps task ids to the
    names of their KFP tasks."""

    spec: dict[str, Any]
    platform: dict[str, Any] | None
    steps: Mapping[str, str]

    @property
    def documents(self) -> list[dict[str, Any]]:
        return [self.spec] if self.platform is None else [self.spec, self.platform]


def kfp_name(text: str) -> str:
    """A KFP task/component name: lowercase letters, digits and dashes."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return name or "task"


def compile_kfp(plan: Plan, *, image: str, source: str,
                fingerprints: Mapping[str, str] | None = None) -> KfpPipeline:
    """The KFP v2 pipeline spec of `plan`, whose steps run `cadenza task-run` in `image`,
    loading the pipeline from `source` ("path/in/image.py:pipeline").

    `fingerprints` maps the ids of `cache=True` tasks to their code fingerprints (computed
    by the caller: they read the code). Raises DefinitionError listing every part of the
    pipeline KFP cannot express, each naming the task and the fix.

    Example:
        >>> out = compile_kfp(quickstart.plan, image="ghcr.io/me/proj:1",
        ...                   source="pipelines/quickstart.py:quickstart")
        >>> out.spec["pipelineInfo"]["name"], sorted(out.steps)[:2]
        ('quickstart', ['alert', 'deploy'])
    """
    return _Compiler(plan, image=image, source=source,
                     fingerprints=dict(fingerprints or {})).build()


@dataclass(slots=True)
class _Dag:
    """One DAG of the spec: the root's exit-handler body, a condition group or a loop."""

    path: Path
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    output_types: dict[str, str] = field(default_factory=dict)


class _Compiler:
    def __init__(self, plan: Plan, *, image: str, source: str,
                 fingerprints: dict[str, str]) -> None:
        self.plan = plan
        self.graph = plan.graph
        self.image = image
        self.source = source
        self.fingerprints = fingerprints
        self.problems: list[Problem] = []
        self.down = self.graph.downstream()
        self.names: dict[str, str] = {}
        self.components: dict[str, dict[str, Any]] = {}
        self.executors: dict[str, dict[str, Any]] = {}
        self.platform_executors: dict[str, dict[str, Any]] = {}
        self.dags: dict[Path, _Dag] = {}
        self.cond: dict[str, Path] = {}  # task id -> its condition-group path (no loops)
        self.param_types = {p.name: _param_type(p.annotation) for p in plan.parameters.specs}

    # -- names and places ---------------------------------------------------------------------
    def _unique(self, base: str) -> str:
        taken = set(self.names.values()) | {EXIT_GROUP, FINALIZE}
        name, n = base, 1
        while name in taken or name.endswith("-map") and name[:-4] in self.graph.nodes:
            n += 1
            name = f"{base}-{n}"
        return name

    def _place(self) -> None:
        """Decide each task's condition-group path (see the module docstring)."""
        branches = {n.id for n in self.graph if n.options.is_branch}
        target_of: dict[str, str] = {}
        for b in branches:
            for t in self.down[b]:
                if t in target_of:
                    self._problem(t, f"it is a direct downstream of two branch tasks "
                                  f"('{target_of[t]}' and '{b}'), which KFP cannot nest",
                                  "put a task between one of the branches and it")
                target_of[t] = b
        for tid in self.plan.topological_ids():
            node = self.graph.nodes[tid]
            ups = [self.cond[u] for u in node.upstream if u in self.cond]
            if tid in target_of:
                b = target_of[tid]
                if self.graph.nodes[b].is_mapped:
                    self._problem(b, "a mapped (.expand) branch task cannot choose its "
                                  "downstream tasks on KFP (each instance would choose)",
                                  "return the choice from a task that is not mapped")
                path = self.cond.get(b, ()) + (("if", b, tid),)
            elif not ups:
                path = ()
            else:
                longest = max(ups, key=len)
                nested = all(longest[:len(p)] == p for p in ups)
                if node.options.trigger_rule in SKIP_RULES and nested:
                    path = longest
                else:
                    path = _common_prefix(ups)
            self.cond[tid] = path
            self.names[tid] = self._unique(kfp_name(tid))

    def _full(self, tid: str) -> Path:
        """The path of the DAG a task's step sits in (its loop for a mapped task)."""
        path = self.cond[tid]
        return path + (("for", tid),) if self.graph.nodes[tid].is_mapped else path

    def _dag(self, path: Path) -> _Dag:
        dag = self.dags.get(path)
        if dag is None:
            dag = self.dags[path] = _Dag(path=path)
            if path:
                self._dag(path[:-1])
        return dag

    def _group_name(self, group: Group) -> str:
        if group[0] == "for":
            return f"for-{self.names[group[1]]}"
        return f"if-{self.names[group[1]]}-{self.names[group[2]]}"

    def _unit(self, path: Path, tid: str) -> str:
        """The name, in the DAG at `path`, of the task that holds `tid`'s step."""
        full = self._full(tid)
        if full[:len(path)] != path:
            raise AssertionError(f"{tid} is not under {path}")
        if len(full) > len(path):
            return self._group_name(full[len(path)])
        return self.names[tid]

    # -- problems -----------------------------------------------------------------------------
    def _problem(self, task: str | None, message: str, hint: str) -> None:
        self.problems.append(Problem(message=message, task=task, hint=hint))

    def _check(self) -> None:
        for node in self.graph:
            o = node.options
            if o.sensor is not None:
                self._problem(node.id, "a sensor task waits inside Cadenza's scheduler; a KFP "
                              "step cannot poll without holding a pod",
                              "start the KFP run when the condition holds (a Cadenza "
                              "sensor trigger, or your event source), and drop the sensor "
                              "task from the pipeline")
            custom = list(o.resources.custom)
            if custom:
                self._problem(node.id, f"resources {', '.join(sorted(custom))} have no KFP "
                              "equivalent (KFP knows cpu, memory and accelerators)",
                              'keep cpu, memory, gpu and gpu_type in resources={...}')
        for node in self.graph:
            for up in node.data_upstream:
                if not _is_prefix(self.cond[up], self.cond[node.id]):
                    branch = next(g for g in self.cond[up]
                                  if g not in self.cond[node.id])
                    self._problem(
                        node.id,
                        f"it reads the output of '{up}', which branch '{branch[1]}' may "
                        f"skip; KFP cannot pass an output out of a dsl.If that did not run "
                        f"(trigger_rule '{node.options.trigger_rule.value}')",
                        f"read the output of '{up}' only in tasks that follow it with "
                        f"trigger_rule='all_success' (they join its dsl.If), or order-depend "
                        f"on it ({up} >> {node.id}) and take the value from a task outside "
                        f"the branch")

    # -- inputs -------------------------------------------------------------------------------
    def _bind(self, path: Path, channel: str) -> dict[str, Any]:
        """How a task in the DAG at `path` gets `channel` (param--P, ref--T, branch--B,
        idx--M); declares it on the enclosing DAGs and feeds their group tasks on the way."""
        kind, _, what = channel.partition("--")
        if kind == "param":
            if not path:
                return {"componentInputParameter": f"param--{what}"}
            producer: Path | None = None
        else:  # ref, branch, idx: produced by a step next to the task's condition group
            producer = self.cond[what]
        if producer is not None and producer == path:
            if kind == "ref":
                node = self.graph.nodes[what]
                key = f"ref--{what}" if node.is_mapped else "ref"
                return {"taskOutputParameter": {"producerTask": self._unit(path, what),
                                                "outputParameterKey": key}}
            if kind == "branch":
                return {"taskOutputParameter": {"producerTask": self.names[what],
                                                "outputParameterKey": "branch"}}
            return {"taskOutputParameter": {"producerTask": f"{self.names[what]}-map",
                                            "outputParameterKey": "indices"}}
        if not path:
            raise AssertionError(f"{channel} is not visible at the top")
        dag = self._dag(path)
        if channel not in dag.inputs:
            dag.inputs[channel] = {"parameterType": self._channel_type(channel)}
            group_task = self._dag(path[:-1]).tasks[self._group_name(path[-1])]
            params = group_task.setdefault("inputs", {}).setdefault("parameters", {})
            params[channel] = self._bind(path[:-1], channel)
            self._depend(group_task, params[channel])
        return {"componentInputParameter": channel}

    def _channel_type(self, channel: str) -> str:
        kind, _, what = channel.partition("--")
        if kind == "param":
            return self.param_types[what]
        if kind == "ref":
            return "LIST" if self.graph.nodes[what].is_mapped else "STRING"
        if kind == "idx":
            return "LIST"
        return "STRING"

    @staticmethod
    def _depend(task: dict[str, Any], binding: dict[str, Any]) -> None:
        producer = binding.get("taskOutputParameter", {}).get("producerTask")
        if producer:
            deps = task.setdefault("dependentTasks", [])
            if producer not in deps:
                deps.append(producer)
                deps.sort()

    # -- steps --------------------------------------------------------------------------------
    def _step_inputs(self, node: TaskNode, *, helper: bool) -> tuple[
            dict[str, dict[str, Any]], list[str]]:
        """(component input definitions, the channels it takes) of a task's step or of its
        `-map` helper step."""
        defs: dict[str, dict[str, Any]] = {}
        channels: list[str] = []
        optional = node.options.trigger_rule in COMPLETED_RULES
        for p in self.plan.parameters.specs:
            channels.append(f"param--{p.name}")
            defs[f"param--{p.name}"] = {"parameterType": self.param_types[p.name]}
        for up in node.data_upstream:
            ch = f"ref--{up}"
            channels.append(ch)
            spec: dict[str, Any] = {"parameterType": self._channel_type(ch)}
            if optional:  # an upstream that failed produced no output
                spec.update(isOptional=True,
                            defaultValue=[] if spec["parameterType"] == "LIST" else "")
            defs[ch] = spec
        if node.is_mapped and not helper:
            defs[f"item--{node.id}"] = {"parameterType": "NUMBER_INTEGER"}
        return defs, channels

    def _args(self, node: TaskNode, *, helper: bool) -> list[str]:
        args = ["--pipeline", self.source, "--task", node.id, "--run-id", RUN_ID]
        for p in self.plan.parameters.specs:
            args += ["--param", f"{p.name}={{{{$.inputs.parameters['param--{p.name}']}}}}"]
        for up in node.data_upstream:
            args += ["--input", f"{up}={{{{$.inputs.parameters['ref--{up}']}}}}"]
        if helper:
            return args + ["--expand", "--output-indices",
                           "{{$.outputs.parameters['indices'].output_file}}"]
        if node.is_mapped:
            args += ["--map-index", f"{{{{$.inputs.parameters['item--{node.id}']}}}}"]
        args += ["--output-ref", "{{$.outputs.parameters['ref'].output_file}}"]
        if node.options.is_branch:
            args += ["--output-branch", "{{$.outputs.parameters['branch'].output_file}}"]
        if node.options.timeout_s:
            args += ["--timeout", f"{node.options.timeout_s:g}"]
        fp = self.fingerprints.get(node.id)
        if node.options.cache and fp:
            args += ["--fingerprint", fp]
        return args

    def _add_step(self, node: TaskNode, *, helper: bool) -> None:
        name = self.names[node.id] + ("-map" if helper else "")
        path = self.cond[node.id] if helper else self._full(node.id)
        defs, channels = self._step_inputs(node, helper=helper)
        comp: dict[str, Any] = {"executorLabel": f"exec-{name}"}
        if defs:
            comp["inputDefinitions"] = {"parameters": defs}
        outputs = ({"indices": {"parameterType": "LIST"}} if helper
                   else {"ref": {"parameterType": "STRING"}})
        if node.options.is_branch and not helper:
            outputs["branch"] = {"parameterType": "STRING"}
        comp["outputDefinitions"] = {"parameters": outputs}
        self.components[f"comp-{name}"] = comp
        container: dict[str, Any] = {"image": self.image, "command": ["cadenza", "task-run"],
                                     "args": self._args(node, helper=helper)}
        if not helper:
            resources = _resources(node)
            if resources:
                container["resources"] = resources
            if node.options.timeout_s:
                self.platform_executors[f"exec-{name}"] = {
                    "activeDeadlineSeconds": int(-(-node.options.timeout_s // 1)) + 60}
        self.executors[f"exec-{name}"] = {"container": container}

        dag = self._dag(path)
        task: dict[str, Any] = {"componentRef": {"name": f"comp-{name}"},
                                "taskInfo": {"name": name}}
        o = node.options
        task["cachingOptions"] = {"enableCache": bool(o.cache) and not helper}
        params: dict[str, Any] = {}
        for ch in channels:
            params[ch] = self._bind(path, ch)
            self._depend(task, params[ch])
        if node.is_mapped and not helper:
            params[f"item--{node.id}"] = {"componentInputParameter": f"item--{node.id}"}
        if params:
            task["inputs"] = {"parameters": params}
        if not helper:
            if o.retries:
                task["retryPolicy"] = _retry_policy(node)
            if o.trigger_rule in COMPLETED_RULES:
                task["triggerPolicy"] = {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}
        dag.tasks[name] = task

    def _add_groups(self) -> None:
        """Condition groups and loops, outermost first, each a task in its parent DAG."""
        paths = sorted({p[:i] for p in (self._full(t) for t in self.graph.nodes)
                        for i in range(1, len(p) + 1)}, key=len)
        for path in paths:
            group = path[-1]
            name = self._group_name(group)
            self.components[f"comp-{name}"] = {}  # filled in by _finish
            parent = self._dag(path[:-1])
            self._dag(path)
            task: dict[str, Any] = {"componentRef": {"name": f"comp-{name}"},
                                    "taskInfo": {"name": name}}
            parent.tasks[name] = task
            if group[0] == "if":
                _, b, t = group
                ch = f"branch--{b}"
                binding = self._bind(path[:-1], ch)
                task["inputs"] = {"parameters": {ch: binding}}
                self._depend(task, binding)
                task["triggerPolicy"] = {
                    "condition": f"inputs.parameter_values['{ch}'] == {json.dumps(t)}"}
            else:
                node = self.graph.nodes[group[1]]
                literal = _literal_length(node, self.plan)
                if literal is not None:
                    task["parameterIterator"] = {
                        "items": {"raw": json.dumps(list(range(literal)))},
                        "itemInput": f"item--{node.id}"}
                else:
                    ch = f"idx--{node.id}"
                    binding = self._bind(path[:-1], ch)
                    task["inputs"] = {"parameters": {ch: binding}}
                    self._depend(task, binding)
                    task["parameterIterator"] = {"items": {"inputParameter": ch},
                                                 "itemInput": f"item--{node.id}"}
                # dsl.Collected: the loop's DAG output is the list of its steps' refs.
                loop = self._dag(path)
                loop.outputs[f"ref--{node.id}"] = {"valueFromParameter": {
                    "producerSubtask": self.names[node.id], "outputParameterKey": "ref"}}
                loop.output_types[f"ref--{node.id}"] = "LIST"
                loop.inputs[f"item--{node.id}"] = {"parameterType": "NUMBER_INTEGER"}

    def _order_edges(self) -> None:
        for node in self.graph:
            for up in node.upstream:
                full_u, full_d = self._full(up), self._full(node.id)
                common = _common_prefix([full_u, full_d])
                unit_u, unit_d = self._unit(common, up), self._unit(common, node.id)
                if unit_u == unit_d:
                    continue
                task = self._dag(common).tasks[unit_d]
                deps = task.setdefault("dependentTasks", [])
                if unit_u not in deps:
                    deps.append(unit_u)
                    deps.sort()

    def _finish_groups(self) -> None:
        """Each group's component: its DAG, outputs, and every input its task passes in
        (the channels bound through it, the branch value or the loop's items)."""
        for path, dag in self.dags.items():
            if not path:
                continue
            name = self._group_name(path[-1])
            comp: dict[str, Any] = {"dag": {"tasks": dag.tasks}}
            if dag.outputs:
                comp["dag"]["outputs"] = {"parameters": dag.outputs}
                comp["outputDefinitions"] = {"parameters": {
                    k: {"parameterType": v} for k, v in dag.output_types.items()}}
            inputs = dict(dag.inputs)
            passed = self.dags[path[:-1]].tasks[name].get("inputs", {}).get("parameters", {})
            for ch in passed:
                inputs.setdefault(ch, {"parameterType": self._channel_type(ch)})
            if inputs:
                comp["inputDefinitions"] = {"parameters": dict(sorted(inputs.items()))}
            self.components[f"comp-{name}"] = comp

    # -- the whole ----------------------------------------------------------------------------
    def build(self) -> KfpPipeline:
        self._place()
        self._check()
        if self.problems:
            raise DefinitionError(self.plan.name, self.problems)
        self._dag(())
        self._add_groups()
        for tid in self.plan.topological_ids():
            node = self.graph.nodes[tid]
            if node.is_mapped and _literal_length(node, self.plan) is None:
                self._add_step(node, helper=True)
            self._add_step(node, helper=False)
        self._order_edges()
        self._finish_groups()

        body = self.dags[()]
        exit_inputs = {f"param--{p}": {"parameterType": t} for p, t in self.param_types.items()}
        exit_comp: dict[str, Any] = {"dag": {"tasks": body.tasks}}
        if exit_inputs:
            exit_comp["inputDefinitions"] = {"parameters": exit_inputs}
        self.components[f"comp-{EXIT_GROUP}"] = exit_comp
        self.components[f"comp-{FINALIZE}"] = {
            "executorLabel": f"exec-{FINALIZE}",
            "inputDefinitions": {"parameters": {
                "status": {"parameterType": "TASK_FINAL_STATUS", "isOptional": True}}}}
        self.executors[f"exec-{FINALIZE}"] = {"container": {
            "image": self.image, "command": ["cadenza", "task-run"],
            "args": ["--pipeline", self.source, "--run-id", RUN_ID, "--finalize",
                     "--status", "{{$.inputs.parameters['status']}}"]}}
        root_tasks: dict[str, Any] = {
            EXIT_GROUP: {"componentRef": {"name": f"comp-{EXIT_GROUP}"},
                         "taskInfo": {"name": EXIT_GROUP}},
            FINALIZE: {"componentRef": {"name": f"comp-{FINALIZE}"},
                       "dependentTasks": [EXIT_GROUP],
                       "inputs": {"parameters": {"status": {
                           "taskFinalStatus": {"producerTask": EXIT_GROUP}}}},
                       "taskInfo": {"name": FINALIZE},
                       "triggerPolicy": {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}},
        }
        if exit_inputs:
            root_tasks[EXIT_GROUP]["inputs"] = {"parameters": {
                f"param--{p}": {"componentInputParameter": p} for p in self.param_types}}
        root: dict[str, Any] = {"dag": {"tasks": root_tasks}}
        if self.param_types:
            root["inputDefinitions"] = {"parameters": {
                p.name: _root_param(p.annotation, p.has_default, p.default,
                                    self.param_types[p.name])
                for p in self.plan.parameters.specs}}
        info: dict[str, Any] = {"name": kfp_name(self.plan.name)}
        if self.plan.description:
            info["description"] = self.plan.description
        spec: dict[str, Any] = {
            "components": dict(sorted(self.components.items())),
            "deploymentSpec": {"executors": dict(sorted(self.executors.items()))},
            "pipelineInfo": info,
            "root": root,
            "schemaVersion": SCHEMA_VERSION,
            "sdkVersion": SDK_VERSION,
        }
        platform = None
        if self.platform_executors:
            platform = {"platforms": {"kubernetes": {"deploymentSpec": {
                "executors": dict(sorted(self.platform_executors.items()))}}}}
        return KfpPipeline(spec=spec, platform=platform, steps=dict(self.names))


# -- pure helpers ------------------------------------------------------------------------------
def _common_prefix(paths: list[Path]) -> Path:
    if not paths:
        return ()
    out: list[Group] = []
    for parts in zip(*paths, strict=False):
        if all(p == parts[0] for p in parts):
            out.append(parts[0])
        else:
            break
    return tuple(out)


def _is_prefix(prefix: Path, path: Path) -> bool:
    return path[:len(prefix)] == prefix


def _literal_length(node: TaskNode, plan: Plan) -> int | None:
    """The number of instances of a mapped task whose mapped arguments are all literal
    lists (known now); None when one comes from a parameter or a task."""
    n = 1
    for name in node.mapped:
        value = node.args[name]
        if type(value) is not list or any(True for _ in iter_markers(value)):
            return None
        n *= len(value)
    return n if node.mapped else None


_TYPES: dict[Any, str] = {int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE", str: "STRING",
                          bool: "BOOLEAN", dict: "STRUCT", list: "LIST"}


def _param_type(annotation: Any) -> str:
    """The KFP parameter type of a pipeline parameter (STRING for anything unusual: task-run
    parses it as JSON then)."""
    if annotation in _TYPES:
        return _TYPES[annotation]
    origin = getattr(annotation, "__origin__", None)
    if origin in (list, tuple):
        return "LIST"
    if origin is dict:
        return "STRUCT"
    return "STRING"


def _root_param(annotation: Any, has_default: bool, default: Any, kfp_type: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"parameterType": kfp_type}
    if has_default:
        spec["isOptional"] = True
        if default is not None:
            spec["defaultValue"] = (default if kfp_type != "STRING" or isinstance(default, str)
                                    else json.dumps(default))
    del annotation
    return spec


def _retry_policy(node: TaskNode) -> dict[str, Any]:
    o = node.options
    policy: dict[str, Any] = {"maxRetryCount": o.retries,
                              "backoffDuration": f"{min(o.retry_delay_s, MAX_BACKOFF_S):g}s",
                              "backoffFactor": float(o.retry_backoff)}
    cap = MAX_BACKOFF_S if o.max_retry_delay_s is None else min(o.max_retry_delay_s,
                                                                MAX_BACKOFF_S)
    policy["backoffMaxDuration"] = f"{cap:g}s"
    return policy


def _quantity(value: float) -> str:
    return f"{value:g}"


def _memory(n: int) -> str:
    """A Kubernetes quantity: 4294967296 -> "4Gi"."""
    for unit, size in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def _resources(node: TaskNode) -> dict[str, Any]:
    r = node.options.resources
    out: dict[str, Any] = {}
    if r.cpu:
        out.update(cpuRequest=float(r.cpu), cpuLimit=float(r.cpu),
                   resourceCpuRequest=_quantity(r.cpu), resourceCpuLimit=_quantity(r.cpu))
    if r.memory_bytes:
        mem = _memory(r.memory_bytes)
        out.update(memoryRequest=r.memory_bytes / 1e9, memoryLimit=r.memory_bytes / 1e9,
                   resourceMemoryRequest=mem, resourceMemoryLimit=mem)
    if r.gpu:
        kind = r.gpu_type or "nvidia.com/gpu"
        out["accelerator"] = {"type": kind, "count": str(r.gpu),
                              "resourceType": kind, "resourceCount": str(r.gpu)}
    return out


__all__ = ["KfpPipeline", "compile_kfp", "kfp_name"]
