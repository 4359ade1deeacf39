"""Jobnet YAML files: load them, and say exactly where each problem is (file, line, YAML path).

The YAML is composed into a node tree once; the tree keeps each key's line, and every pydantic error
location is walked down that tree to the line a person should look at. A folder is loaded file by
file, so one broken file is reported and the others still load.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from rackflow.core.jobnet.model import (
    DEFER_CHECKS,
    Jobnet,
    JobnetError,
    JobnetProblem,
    LaunchedServer,
    Loc,
    ParamSpec,
    Revert,
    SshServer,
    Step,
    VmServer,
    cross_check,
    format_loc,
)
from rackflow.core.jobnet.plan import Stage, flatten_stages, merged_params

_YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_UNION_TAGS = {"step", "group", "ssh", "vm", "launch", "[key]"}
_MODELS: tuple[type[BaseModel], ...] = (Jobnet, ParamSpec, SshServer, VmServer, LaunchedServer, Step, Revert)
_KNOWN_KEYS = sorted({name for model in _MODELS for name in model.model_fields})


@dataclass(frozen=True)
class _Parsed:
    path: Path
    jobnet: Jobnet

    def problem_at(self, loc: Loc, reason: str) -> JobnetProblem:
        """Re-reads the file to find the line: keeping every node tree alive would slow the GC down."""
        return _problem_at(self.path, _compose(self.path.read_text(encoding="utf-8")), loc, reason)


def load_jobnet_file(path: str | Path) -> Jobnet:
    """One jobnet file, checked on its own (includes are only resolved by :func:`load_jobnets`).

    Raises :class:`JobnetError` with one ``file:line: yaml.path: reason`` line per problem.
    """
    return _parse_file(Path(path)).jobnet


def _parse_file(path: Path) -> _Parsed:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise JobnetError.single(f"cannot read jobnet file: {err}", file=path) from err
    loader = _YamlLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise JobnetError.single(f"invalid YAML: {_yaml_reason(err)}", file=path, line=line) from err
    finally:
        loader.dispose()
    if root is None:
        raise JobnetError.single("the file is empty", file=path)
    problems = [
        JobnetProblem(f"key {key!r} appears twice", file=path, line=line, path=where)
        for key, line, where in _duplicate_keys(root, ())
    ]
    try:
        jobnet = Jobnet.model_validate(data, context={DEFER_CHECKS: True})
    except ValidationError as err:
        problems += [_problem_from_error(path, root, error) for error in err.errors(include_url=False)]
        raise JobnetError(problems) from err
    checks = cross_check(jobnet) + _file_checks(jobnet, path.parent)
    problems += [_problem_at(path, root, loc, reason) for loc, reason in checks]
    if problems:
        raise JobnetError(problems)
    return _Parsed(path, jobnet)


def _compose(text: str) -> yaml.Node:
    loader = _YamlLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def _yaml_reason(err: yaml.YAMLError) -> str:
    problem = getattr(err, "problem", None)
    context = getattr(err, "context", None)
    return " ".join(part for part in (context, problem) if part) or str(err).splitlines()[0]


def _file_checks(jobnet: Jobnet, folder: Path) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    if not jobnet.steps and not jobnet.include:
        problems.append((("steps",), "a jobnet needs steps or include"))
    for loc, step in jobnet.indexed_steps():
        actions: list[tuple[Loc, Step | Revert]] = [(loc, step)]
        if step.revert is not None:
            actions.append(((*loc, "revert"), step.revert))
        for action_loc, action in actions:
            if action.script is not None and not (folder / action.script).is_file():
                problems.append(
                    (
                        (*action_loc, "script"),
                        f"script {action.script!r} not found at {folder / action.script}",
                    )
                )
    return problems


def _duplicate_keys(node: yaml.Node, loc: Loc) -> Iterator[tuple[str, int, str]]:
    """PyYAML keeps the last of two equal keys silently; a jobnet author wants to hear about it."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                yield name, key.start_mark.line + 1, format_loc((*loc, name))
            seen.add(name)
            yield from _duplicate_keys(value, (*loc, name))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*loc, i))


def _locate(root: yaml.Node, loc: Loc) -> tuple[int, str]:
    """The line and YAML path for a pydantic location: union tags are skipped, a missing key stays put."""
    node, line, path = root, root.start_mark.line + 1, []
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    child, line = value, key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is not None:
            node = child
            path.append(part)
        elif part not in _UNION_TAGS:
            path.append(part)
    return line, format_loc(tuple(path)) if path else ""


def _problem_at(path: Path, root: yaml.Node, loc: Loc, reason: str) -> JobnetProblem:
    line, where = _locate(root, loc)
    return JobnetProblem(reason, file=path, line=line, path=where)


def _problem_from_error(path: Path, root: yaml.Node, error: Any) -> JobnetProblem:
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        close = difflib.get_close_matches(key, _KNOWN_KEYS, n=1)
        reason = f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    elif kind == "missing":
        reason = f"missing required key {loc[-1]!r}"
    else:
        reason = str(error["msg"]).removeprefix("Value error, ")
    return _problem_at(path, root, loc, reason)


@dataclass
class JobnetLibrary:
    """The usable jobnets of a folder by name, where each came from, and every file's problems."""

    jobnets: dict[str, Jobnet] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    errors: list[JobnetError] = field(default_factory=list)
    base_dirs: dict[str, Path] = field(default_factory=dict)
    """Jobnet name -> absolute folder its ``script`` paths are relative to."""

    def stages(self, name: str) -> list[Stage]:
        """Flat stages of jobnet ``name``, includes expanded and script paths made absolute."""
        return flatten_stages(self.jobnets[name], includes=self.jobnets, base_dirs=self.base_dirs)

    def params(self, name: str) -> dict[str, ParamSpec]:
        """The params a run of ``name`` takes, its includes' included."""
        return merged_params(self.jobnets[name], self.jobnets)


def load_jobnets(folder: str | Path) -> JobnetLibrary:
    """Every ``*.yaml``/``*.yml`` jobnet directly in ``folder``; bad files land in ``errors``.

    Includes are resolved by jobnet name across the folder. A jobnet whose include is unknown, broken
    or part of a cycle is rejected with the line of that include; the rest still load.
    """
    folder = Path(folder)
    paths = sorted({*folder.glob("*.yaml"), *folder.glob("*.yml")})
    library = JobnetLibrary()
    parsed: dict[str, _Parsed] = {}
    broken: dict[str, Path] = {}
    for path in paths:
        try:
            item = _parse_file(path)
        except JobnetError as err:
            library.errors.append(err)
            name = _declared_name(path)
            if name:
                broken.setdefault(name, path)
            continue
        name = item.jobnet.name
        if name in parsed:
            reason = f"jobnet {name!r} is already defined in {parsed[name].path}"
            library.errors.append(JobnetError([item.problem_at(("name",), reason)]))
            continue
        parsed[name] = item

    problems = _include_problems(parsed, broken)
    base_dir = folder.resolve()
    for name, item in parsed.items():
        if problems[name]:
            library.errors.append(JobnetError(problems[name]))
        else:
            library.jobnets[name] = item.jobnet
            library.files[name] = item.path
            library.base_dirs[name] = base_dir
    return library


def _declared_name(path: Path) -> str | None:
    """The ``name`` of a file that failed validation, so includes of it get a precise message."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YamlLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def _include_problems(parsed: dict[str, _Parsed], broken: dict[str, Path]) -> dict[str, list[JobnetProblem]]:
    problems: dict[str, list[JobnetProblem]] = {name: [] for name in parsed}

    def report(name: str, index: int, reason: str) -> None:
        problems[name].append(parsed[name].problem_at(("include", index), reason))

    for name, item in parsed.items():
        for i, target in enumerate(item.jobnet.include):
            if target in broken:
                report(name, i, f"includes {target!r}, which has errors (see {broken[target]})")
            elif target not in parsed:
                report(name, i, f"includes {target!r}, which is not a jobnet in {item.path.parent}")
            else:
                cycle = _cycle_through(name, target, parsed)
                if cycle:
                    report(name, i, f"include cycle: {' -> '.join(cycle)}")

    changed = True
    while changed:  # a jobnet that includes an unusable one is unusable too
        changed = False
        for name, item in parsed.items():
            if problems[name]:
                continue
            for i, target in enumerate(item.jobnet.include):
                if problems.get(target):
                    report(name, i, f"includes {target!r}, which cannot be used")
                    changed = True
                    break

    for name, item in parsed.items():
        if not problems[name]:
            problems[name] += _param_conflicts(item, parsed)
    return problems


def _cycle_through(start: str, first: str, parsed: dict[str, _Parsed]) -> list[str] | None:
    """The include path ``start -> first -> ... -> start`` if there is one."""
    came_from: dict[str, str] = {first: start}
    todo = [first]
    while todo:
        current = todo.pop()
        if current == start:
            path = [start]
            node = came_from[start]
            while node != start:
                path.append(node)
                node = came_from[node]
            return [start, *reversed(path[1:]), start]
        for target in parsed[current].jobnet.include if current in parsed else ():
            if target not in came_from:
                came_from[target] = current
                todo.append(target)
    return None


def _param_conflicts(item: _Parsed, parsed: dict[str, _Parsed]) -> list[JobnetProblem]:
    """Two declarations of one param name with different types would coerce a value two ways."""
    jobnets = {name: other.jobnet for name, other in parsed.items()}
    own = item.jobnet.params
    problems = []
    for target in item.jobnet.include:
        for name, spec in merged_params(jobnets[target], jobnets).items():
            if name in own and own[name].type != spec.type:
                problems.append(
                    item.problem_at(
                        ("params", name, "type"),
                        f"param {name!r} is {own[name].type} here but {spec.type} in included {target!r}",
                    )
                )
    return problems
