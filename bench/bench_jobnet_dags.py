"""How long the jobnet DAG file takes for 200 jobnets: folder load + building every DAG.

The dag-processor runs ``dags/rackflow_jobnets.py`` on every parse, so this is the cost Airflow pays
per parse. Prints, best of a few runs: ``load_jobnets`` (its own 0.5 s goal), the DAG build, the
whole file cold (goal: 1 s for 200 jobnets), and the re-parse when no YAML changed (the factory's
mtime cache), each as a ratio to a baseline measured in the same run (bare ``yaml.load`` of the same
files). Run ``python bench/bench_jobnet_dags.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_jobnet_parse import GOAL_SECONDS, best_of, jobnet_yaml
from rackflow.core.jobnet import load_jobnets
from rackflow.dag_factories import jobnet as factory

_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
FILE_GOAL_SECONDS = 1.0  # the whole DAG file, cold, for 200 jobnets


def _cpu_seconds(action: Callable[[], object]) -> float:
    start = time.process_time()
    action()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rackflow-jobnet-dags-bench-") as tmp:
        folder = Path(tmp)
        for index in range(args.files):
            (folder / f"jobnet-{index:03d}.yaml").write_text(jobnet_yaml(index))
        paths = sorted(folder.glob("*.yaml"))
        library = load_jobnets(folder)
        assert not library.errors and len(library.jobnets) == args.files

        def cold() -> object:
            factory._CACHE.clear()
            return factory.build_jobnet_dags(folder)

        dags = cold()
        tasks = sum(len(dag.tasks) for dag in dags.values())  # type: ignore[attr-defined]
        baseline = best_of(args.runs, lambda: [yaml.load(p.read_text(), Loader=_YamlLoader) for p in paths])
        loaded = best_of(args.runs, lambda: load_jobnets(folder))

        def build() -> object:
            with factory.cyclic_gc_paused():  # as build_jobnet_dags does
                return [factory.build_jobnet_dag(library, name) for name in sorted(library.jobnets)]

        built = best_of(args.runs, build)
        whole = best_of(args.runs, cold)
        # CPU time of this process for the same work: on a shared machine other processes stretch
        # the wall time, hardly this.
        whole_cpu = min(_cpu_seconds(cold) for _ in range(args.runs))
        warm = best_of(args.runs, lambda: factory.cached_library(folder))

    print(f"jobnets: {args.files} files -> {len(dags)} DAGs, {tasks} tasks (best of {args.runs} runs)")
    print(f"baseline yaml.load ({_YamlLoader.__name__}): {baseline:.3f} s")
    share = loaded / GOAL_SECONDS
    print(f"load_jobnets: {loaded:.3f} s = {loaded / baseline:.1f}x baseline; {share:.0%} of the goal")
    print(f"build DAGs: {built:.3f} s = {built / baseline:.1f}x baseline ({built / tasks * 1e6:.0f} us/task)")
    verdict = "met" if whole <= FILE_GOAL_SECONDS else "NOT met"
    print(
        f"whole DAG file, cold: {whole:.3f} s = {whole / baseline:.1f}x baseline; "
        f"{whole / FILE_GOAL_SECONDS:.0%} of the {FILE_GOAL_SECONDS:g} s goal ({verdict}); "
        f"CPU time {whole_cpu:.3f} s"
    )
    print(f"folder unchanged (mtime cache hit): {warm * 1000:.2f} ms = {warm / baseline:.3f}x baseline")


if __name__ == "__main__":
    main()
