"""How long ``load_jobnets`` takes on a folder of 200 jobnets, against a 0.5 s goal.

The DAG processor parses the jobnet folder every time it reads the DAG factory file, so the load must
stay cheap. Run ``python bench/bench_jobnet_parse.py``. It prints the best of a few runs, its ratio to
the goal, and a baseline measured in the same run on the same files (bare ``yaml.load`` with the same
C loader) so a slow machine and a slow loader can be told apart.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from rackflow.core.jobnet import load_jobnets

GOAL_SECONDS = 0.5
_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def jobnet_yaml(index: int) -> str:
    """A realistic jobnet: params, three launched servers, parallel groups, reverts; some include one."""
    include = f"include: [jobnet-{index - 1:03d}]\n" if index % 10 == 9 else ""
    lines = [
        f"name: jobnet-{index:03d}",
        f"description: generated jobnet {index}",
        include.rstrip("\n"),
        "params:",
        "  root: {type: string, default: /tmp/bench}",
        "  port: {type: integer, default: 8020}",
        "servers:",
        *(f"  n{i}: {{from_launch: launch, index: {i}}}" for i in range(3)),
        "steps:",
    ]
    for stage in range(6):
        members = range(3) if stage % 2 == 0 else range(1)
        for member in members:
            lead = "  - - " if member == 0 and stage % 2 == 0 else ("    - " if stage % 2 == 0 else "  - ")
            pad = " " * len(lead)
            lines += [
                f"{lead}id: s{stage}-{member}",
                f"{pad}server: n{member}",
                f"{pad}env: {{NODE: n{member}}}",
                f"{pad}timeout: 60",
                f"{pad}command: |",
                f'{pad}  mkdir -p "$RACKFLOW_PARAM_ROOT/$NODE/s{stage}"',
                f'{pad}  echo "stage {stage} on $NODE port $RACKFLOW_PARAM_PORT"',
                f"{pad}revert:",
                f'{pad}  command: rm -rf "$RACKFLOW_PARAM_ROOT/$NODE/s{stage}"',
            ]
    return "\n".join(line for line in lines if line) + "\n"


def best_of(runs: int, action: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rackflow-jobnet-bench-") as tmp:
        folder = Path(tmp)
        for index in range(args.files):
            (folder / f"jobnet-{index:03d}.yaml").write_text(jobnet_yaml(index))
        paths = sorted(folder.glob("*.yaml"))

        library = load_jobnets(folder)
        if library.errors or len(library.jobnets) != args.files:
            raise SystemExit(f"generated jobnets did not all load: {library.errors[:3]}")
        steps = sum(len(stage) for name in library.jobnets for stage in library.stages(name))

        baseline = best_of(args.runs, lambda: [yaml.load(p.read_text(), Loader=_YamlLoader) for p in paths])
        loaded = best_of(args.runs, lambda: load_jobnets(folder))
        flattened = best_of(args.runs, lambda: [library.stages(name) for name in library.jobnets])

    print(f"jobnets: {args.files} files, {steps} steps (best of {args.runs} runs)")
    print(f"baseline yaml.load ({_YamlLoader.__name__}): {baseline:.3f} s")
    print(f"load_jobnets: {loaded:.3f} s = {loaded / baseline:.1f}x baseline")
    print(f"goal {GOAL_SECONDS:.1f} s: load_jobnets uses {loaded / GOAL_SECONDS:.0%} of it")
    print(f"stages() for every jobnet: {flattened:.3f} s")


if __name__ == "__main__":
    main()
