"""Jobnet core: model, YAML loader errors, includes, params as environment, flat stages, revert plan."""

from __future__ import annotations

import os
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from rackflow.core.jobnet import (
    LOCAL_SERVER,
    FlatStep,
    Jobnet,
    JobnetError,
    JobnetParamError,
    LaunchedServer,
    ParamSpec,
    Revert,
    Reverted,
    SshServer,
    Stage,
    Step,
    StepResult,
    StepState,
    VmServer,
    build_report,
    flatten_stages,
    format_report,
    load_jobnet_file,
    load_jobnets,
    plan_revert,
    resolve_params,
    shell_exports,
    step_env,
)

REPO = Path(__file__).resolve().parents[2]
OK, FAILED, NOT_RUN = StepState.SUCCEEDED, StepState.FAILED, StepState.NOT_RUN


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def abcd(*, d_revert: bool = True) -> Jobnet:
    """The acceptance jobnet: a, then b and c in parallel, then d."""
    return (
        Jobnet(name="abcd", servers={"s": SshServer(ssh_conn_id="ssh_s")})
        .then(Step(id="a", server="s", command="make a", revert=Revert(command="undo a")))
        .then(
            [
                Step(id="b", server="s", command="make b", revert=Revert(command="undo b")),
                Step(id="c", server="s", command="make c", revert=Revert(command="undo c")),
            ]
        )
        .then(
            Step(id="d", server="s", command="make d", revert=Revert(command="undo d") if d_revert else None)
        )
    )


def ids(stages: list[Stage]) -> list[list[str]]:
    return [[step.id for step in stage] for stage in stages]


# --- flattening -------------------------------------------------------------------------------------


def test_flatten_keeps_stage_order_and_parallel_groups() -> None:
    stages = flatten_stages(abcd())
    assert ids(stages) == [["a"], ["b", "c"], ["d"]]
    b = stages[1][0]
    assert b.run.command == "make b" and b.run.server == SshServer(ssh_conn_id="ssh_s")
    assert b.revert is not None and b.revert.command == "undo b" and b.revert.server_name == "s"


def test_revert_inherits_server_env_and_workdir_from_its_step_unless_it_sets_them() -> None:
    servers = {"a": SshServer(ssh_conn_id="ca"), "b": SshServer(ssh_conn_id="cb")}
    jobnet = (
        Jobnet(name="j", servers=servers)
        .then(
            Step(
                id="x",
                server="a",
                command="go",
                env={"N": "1", "M": "1"},
                workdir="/w",
                revert=Revert(server="b", command="undo", env={"M": "2"}),
            )
        )
        .then(Step(id="y", server="a", command="go", revert=Revert(command="undo", workdir="/v")))
    )
    (x,), (y,) = flatten_stages(jobnet)
    assert x.run.server_name == "a" and x.run.env == {"N": "1", "M": "1"}
    assert x.revert is not None and x.revert.server == SshServer(ssh_conn_id="cb")
    assert (x.revert.env, x.revert.workdir) == ({"N": "1", "M": "2"}, "/w")
    assert y.revert is not None and (y.revert.server_name, y.revert.workdir) == ("a", "/v")


def test_local_server_needs_no_definition_and_binds_to_the_worker() -> None:
    jobnet = Jobnet(name="j").then(Step(id="x", server=LOCAL_SERVER, command="true"))
    (step,) = flatten_stages(jobnet)[0]
    assert step.run.is_local and step.run.server is None
    with pytest.raises(ValidationError, match="reserved"):
        Jobnet(name="j", servers={LOCAL_SERVER: SshServer(ssh_conn_id="c")})


# --- revert planning --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "expected_group"),
    [(["a", "b", "c", "d"], ["c", "b"]), (["a", "c", "b", "d"], ["b", "c"])],
    ids=["b-finished-first", "c-finished-first"],
)
def test_d_fails_reverts_group_in_reverse_then_a_and_never_ds_own_revert(
    completion: list[str], expected_group: list[str]
) -> None:
    stages = flatten_stages(abcd())
    plan = plan_revert(stages, {"a": OK, "b": OK, "c": OK, "d": FAILED}, completion)
    assert plan.order() == [expected_group, ["a"]]
    assert plan.never_reverted == {"d": FAILED}
    assert all(step.id != "d" for group in plan.groups for step in group)


def test_revert_order_follows_completion_times_not_declaration() -> None:
    jobnet = Jobnet(name="j", servers={"s": SshServer(ssh_conn_id="c")})
    for name in ("x", "y", "z"):
        jobnet = jobnet.then(Step(id=name, server="s", command="go", revert=Revert(command="undo")))
    stages = flatten_stages(jobnet)
    plan = plan_revert(stages, {"x": OK, "y": OK, "z": FAILED}, {"y": 10.0, "x": 20.0, "z": 30.0})
    assert plan.order() == [["x"], ["y"]]


def test_steps_without_revert_are_skipped_and_reported() -> None:
    jobnet = (
        Jobnet(name="j", servers={"s": SshServer(ssh_conn_id="c")})
        .then(Step(id="a", server="s", command="go", revert=Revert(command="undo")))
        .then(Step(id="check", server="s", command="test -f x"))
        .then(Step(id="b", server="s", command="go"))
    )
    plan = plan_revert(flatten_stages(jobnet), {"a": OK, "check": OK, "b": FAILED}, ["a", "check", "b"])
    assert plan.order() == [["a"]]
    assert plan.without_revert == ("check",)


def test_finished_member_of_a_failed_parallel_group_is_reverted_and_later_stages_are_not() -> None:
    stages = flatten_stages(abcd())
    plan = plan_revert(stages, {"a": OK, "b": FAILED, "c": OK}, ["a", "c", "b"])
    assert plan.order() == [["c"], ["a"]]
    assert plan.never_reverted == {"b": FAILED, "d": NOT_RUN}


def test_revert_plan_refuses_guessing_order_and_unknown_steps() -> None:
    stages = flatten_stages(abcd())
    with pytest.raises(ValueError, match="'b' succeeded but has no place"):
        plan_revert(stages, {"a": OK, "b": OK}, ["a"])
    with pytest.raises(ValueError, match="not in the stages"):
        plan_revert(stages, {"zz": OK}, [])


def test_report_rows_say_state_tail_and_revert_outcome() -> None:
    stages = flatten_stages(abcd(d_revert=False))
    results = {
        "a": StepResult(state=OK, exit_code=0, duration_s=1.5, output="1\n2\n3\n"),
        "b": StepResult(state=OK, exit_code=0),
        "c": StepResult(state=OK, exit_code=0),
        "d": StepResult(state=FAILED, exit_code=2, output="boom"),
    }
    rows = build_report(stages, results, {"a": True, "b": False}, tail_lines=2)
    by_id = {row.step_id: row for row in rows}
    assert [row.step_id for row in rows] == ["a", "b", "c", "d"]
    assert by_id["a"].output_tail == "2\n3" and by_id["a"].server == "s"
    assert [by_id[s].reverted for s in "abcd"] == [Reverted.YES, Reverted.FAILED, Reverted.NO, Reverted.NONE]
    assert by_id["d"].exit_code == 2
    table = format_report(rows)
    assert table.splitlines()[0].split() == ["step", "server", "state", "exit", "seconds", "reverted"]
    assert "failed" in table.splitlines()[4]


# --- YAML and the Python API ------------------------------------------------------------------------

ABCD_YAML = """
    name: abcd
    servers:
      s: {ssh_conn_id: ssh_s}
    steps:
      - id: a
        server: s
        command: make a
        revert: {command: undo a}
      - - id: b
          server: s
          command: make b
          revert: {command: undo b}
        - id: c
          server: s
          command: make c
          revert: {command: undo c}
      - id: d
        server: s
        command: make d
        revert: {command: undo d}
"""


def test_yaml_and_python_api_build_the_same_model(tmp_path: Path) -> None:
    loaded = load_jobnet_file(write(tmp_path, "abcd.yaml", ABCD_YAML))
    built = abcd()
    assert loaded == built
    assert loaded.model_dump() == built.model_dump()


def test_yaml_with_params_servers_and_env_matches_python_api(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: p
        params:
          port: {type: integer, default: "8020"}
        servers:
          n0: {from_launch: launch, index: 0}
        steps:
          - id: run
            server: n0
            command: echo "$RACKFLOW_PARAM_PORT"
            env: {DEBUG: yes, LEVEL: 3}
            timeout: 30
            retries: 2
        """,
    )
    built = Jobnet(
        name="p",
        params={"port": ParamSpec(type="integer", default=8020)},
        servers={"n0": LaunchedServer(from_launch="launch", index=0)},
    ).then(
        Step(
            id="run",
            server="n0",
            command='echo "$RACKFLOW_PARAM_PORT"',
            env={"DEBUG": "true", "LEVEL": "3"},
            timeout=30,
            retries=2,
        )
    )
    assert load_jobnet_file(path) == built


def test_python_api_rejects_undefined_server_and_duplicate_id() -> None:
    base = Jobnet(name="j", servers={"s": SshServer(ssh_conn_id="c")})
    with pytest.raises(ValidationError, match=r"steps\[0\]\.server: step 'x': server 'db' is not defined"):
        base.then(Step(id="x", server="db", command="true"))
    with pytest.raises(ValidationError, match="step id 'x' is used twice"):
        base.then(Step(id="x", server="s", command="true")).then(Step(id="x", server="s", command="true"))


def test_step_needs_exactly_one_of_command_or_script() -> None:
    with pytest.raises(ValidationError, match="exactly one of command or script"):
        Step(id="x", server="s", command="a", script="b.sh")
    with pytest.raises(ValidationError, match="exactly one of command or script"):
        Step(id="x", server="s")


# --- loader errors ----------------------------------------------------------------------------------


def test_unknown_key_error_names_file_line_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "typo.yaml",
        """
        name: typo
        servers:
          s: {ssh_conn_id: c}
        steps:
          - id: a
            server: s
            comand: echo hi
        """,
    )
    with pytest.raises(JobnetError) as caught:
        load_jobnet_file(path)
    assert f"{path}:7: steps[0].comand: unknown key 'comand' (did you mean 'command'?)" in str(caught.value)


def test_undefined_server_error_names_file_line_and_step(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "x.yaml",
        """
        name: x
        servers:
          web: {ssh_conn_id: c}
        steps:
          - id: a
            server: web
            command: "true"
          - - id: b
              server: web
              command: "true"
            - id: migrate
              server: db
              command: "true"
        """,
    )
    with pytest.raises(JobnetError) as caught:
        load_jobnet_file(path)
    (problem,) = caught.value.problems
    assert (problem.file, problem.line, problem.path) == (path, 12, "steps[1][1].server")
    assert str(problem) == (
        f"{path}:12: steps[1][1].server: step 'migrate': server 'db' is not defined in servers ['web']"
    )


def test_loader_reports_duplicate_ids_duplicate_keys_bad_server_and_missing_script(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "many.yaml",
        """
        name: many
        servers:
          s: {ssh_conn_id: c}
        steps:
          - id: a
            server: s
            command: "true"
            command: "false"
          - id: a
            server: s
            script: nowhere.sh
        """,
    )
    with pytest.raises(JobnetError) as caught:
        load_jobnet_file(path)
    lines = str(caught.value).splitlines()
    assert f"{path}:8: steps[0].command: key 'command' appears twice" in lines
    assert f"{path}:9: steps[1].id: step id 'a' is used twice" in lines
    assert any(
        line.startswith(f"{path}:11: steps[1].script: script 'nowhere.sh' not found") for line in lines
    )

    bad_server = write(tmp_path, "srv.yaml", "name: srv\nservers:\n  s: {vm: a, ssh_conn_id: c}\n")
    with pytest.raises(JobnetError, match=r"srv.yaml:3: servers.s: a server needs exactly one of"):
        load_jobnet_file(bad_server)


def test_invalid_yaml_and_bad_values_point_at_their_lines(tmp_path: Path) -> None:
    broken = write(tmp_path, "broken.yaml", "name: b\nsteps:\n  - id: [unclosed\n")
    with pytest.raises(JobnetError, match=r"broken.yaml:\d+: invalid YAML"):
        load_jobnet_file(broken)
    bad = write(
        tmp_path,
        "bad.yaml",
        """
        name: Bad Name
        params:
          port: {type: integer, default: eighty}
        """,
    )
    with pytest.raises(JobnetError) as caught:
        load_jobnet_file(bad)
    text = str(caught.value)
    assert f"{bad}:1: name: String should match pattern" in text
    assert f"{bad}:3: params.port: default does not fit type integer" in text


def test_load_jobnets_returns_good_files_and_the_bad_files_error(tmp_path: Path) -> None:
    write(tmp_path, "abcd.yaml", ABCD_YAML)
    write(tmp_path, "other.yml", "name: other\nsteps:\n  - {id: x, server: local, command: 'true'}\n")
    write(tmp_path, "bad.yaml", "name: bad\nservers: {}\nsteps:\n  - {id: x, server: db, command: 'true'}\n")
    library = load_jobnets(tmp_path)
    assert sorted(library.jobnets) == ["abcd", "other"]
    (error,) = library.errors
    assert str(error) == (
        f"{tmp_path / 'bad.yaml'}:4: steps[0].server: step 'x': server 'db' is not defined in servers []"
    )


def test_duplicate_jobnet_name_rejects_the_later_file(tmp_path: Path) -> None:
    write(tmp_path, "a1.yaml", "name: same\nsteps:\n  - {id: x, server: local, command: 'true'}\n")
    write(tmp_path, "a2.yaml", "name: same\nsteps:\n  - {id: y, server: local, command: 'true'}\n")
    library = load_jobnets(tmp_path)
    assert library.files == {"same": tmp_path / "a1.yaml"}
    assert "a2.yaml:1: name: jobnet 'same' is already defined in" in str(library.errors[0])


# --- includes ---------------------------------------------------------------------------------------


def test_includes_run_first_with_prefixed_ids_and_servers_bound_by_name(tmp_path: Path) -> None:
    write(tmp_path, "scripts.sh", "echo base\n")
    write(
        tmp_path,
        "base.yaml",
        """
        name: base
        params:
          pkg: {type: string, default: curl}
        servers:
          node: {ssh_conn_id: base_default}
        steps:
          - id: install
            server: node
            script: scripts.sh
            revert: {command: "apt-get remove -y $RACKFLOW_PARAM_PKG"}
        """,
    )
    write(
        tmp_path,
        "app.yaml",
        """
        name: app
        include: [base]
        params:
          version: {type: string, default: "1"}
        servers:
          node: {vm: app-vm}
        steps:
          - id: install
            server: node
            command: "true"
        """,
    )
    library = load_jobnets(tmp_path)
    assert library.errors == []
    stages = library.stages("app")
    assert ids(stages) == [["base.install"], ["install"]]
    included = stages[0][0]
    assert included.jobnet == "base"
    assert included.run.server_name == "node" and included.run.server == VmServer(vm="app-vm")
    assert included.run.script == (tmp_path / "scripts.sh").resolve()
    assert sorted(library.params("app")) == ["pkg", "version"]
    assert library.stages("base")[0][0].run.server == SshServer(ssh_conn_id="base_default")


def test_include_cycle_is_reported_on_each_member_and_the_rest_still_load(tmp_path: Path) -> None:
    step = "steps:\n  - {id: x, server: local, command: 'true'}\n"
    write(tmp_path, "a.yaml", "name: a\ninclude: [b]\n" + step)
    write(tmp_path, "b.yaml", "name: b\ninclude:\n  - a\n" + step)
    write(tmp_path, "c.yaml", "name: c\ninclude: [a]\n" + step)
    write(tmp_path, "d.yaml", "name: d\n" + step)
    library = load_jobnets(tmp_path)
    assert sorted(library.jobnets) == ["d"]
    messages = sorted(str(error) for error in library.errors)
    assert messages == [
        f"{tmp_path / 'a.yaml'}:2: include[0]: include cycle: a -> b -> a",
        f"{tmp_path / 'b.yaml'}:3: include[0]: include cycle: b -> a -> b",
        f"{tmp_path / 'c.yaml'}:2: include[0]: includes 'a', which cannot be used",
    ]


def test_include_of_missing_or_broken_jobnet_is_rejected(tmp_path: Path) -> None:
    step = "steps:\n  - {id: x, server: local, command: 'true'}\n"
    write(tmp_path, "broken.yaml", "name: broken\nsteps:\n  - {id: x, server: local}\n")
    write(tmp_path, "uses-broken.yaml", "name: uses-broken\ninclude: [broken]\n" + step)
    write(tmp_path, "uses-ghost.yaml", "name: uses-ghost\ninclude: [ghost]\n" + step)
    library = load_jobnets(tmp_path)
    assert library.jobnets == {}
    text = "\n".join(str(error) for error in library.errors)
    assert "uses-broken.yaml:2: include[0]: includes 'broken', which has errors (see" in text
    assert "uses-ghost.yaml:2: include[0]: includes 'ghost', which is not a jobnet in" in text


def test_python_api_flatten_detects_include_cycles() -> None:
    step = Step(id="x", server=LOCAL_SERVER, command="true")
    a = Jobnet(name="a", include=["b"]).then(step)
    b = Jobnet(name="b", include=["a"]).then(step)
    with pytest.raises(JobnetError, match="include cycle: a -> b -> a"):
        flatten_stages(a, includes={"a": a, "b": b})


# --- params -----------------------------------------------------------------------------------------

HOSTILE = ["; rm -rf /", "$(reboot)", 'it\'s "quoted"', "line one\nline two", "`id` && echo pwned"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_params_reach_env_verbatim_and_never_the_command(value: str) -> None:
    jobnet = Jobnet(name="j", params={"msg": ParamSpec()}).then(
        Step(id="say", server=LOCAL_SERVER, command='printf %s "$RACKFLOW_PARAM_MSG"', env={"MODE": "x"})
    )
    (step,) = flatten_stages(jobnet)[0]
    env = step_env(step.run, jobnet.params, {"msg": value})
    assert env == {"MODE": "x", "RACKFLOW_PARAM_MSG": value}
    assert step.run.command == 'printf %s "$RACKFLOW_PARAM_MSG"'

    direct = subprocess.run(
        ["sh", "-c", step.run.command], env=env, capture_output=True, text=True, check=True
    )
    assert direct.stdout == value
    exported = shell_exports(env) + step.run.command
    through_exports = subprocess.run(
        ["sh", "-c", exported], env={}, capture_output=True, text=True, check=True
    )
    assert through_exports.stdout == value


def test_params_are_coerced_by_type_and_bad_ones_all_reported() -> None:
    specs = {
        "port": ParamSpec(type="integer", default=8020),
        "ratio": ParamSpec(type="number", default=0.5),
        "debug": ParamSpec(type="boolean", default=False),
        "name": ParamSpec(),
    }
    assert resolve_params(specs, {"port": "9000", "debug": "yes", "name": "x"}) == {
        "port": 9000,
        "ratio": 0.5,
        "debug": True,
        "name": "x",
    }
    env = step_env(Step(id="s", server="local", command="true"), specs, {"name": "n", "ratio": 2})
    assert env == {
        "RACKFLOW_PARAM_PORT": "8020",
        "RACKFLOW_PARAM_RATIO": "2",
        "RACKFLOW_PARAM_DEBUG": "false",
        "RACKFLOW_PARAM_NAME": "n",
    }
    with pytest.raises(JobnetParamError) as caught:
        resolve_params(specs, {"port": "80; rm -rf /", "debug": "maybe", "extra": 1})
    assert caught.value.problems == [
        "unknown param 'extra' (declared: ['debug', 'name', 'port', 'ratio'])",
        "param 'port': expected an integer, got '80; rm -rf /'",
        "param 'debug': expected a boolean (true/false/yes/no/on/off/1/0), got 'maybe'",
        "param 'name' is required (string) and has no default",
    ]


def test_declared_env_cannot_shadow_param_variables() -> None:
    with pytest.raises(ValidationError, match="reserved for params"):
        Step(id="s", server="local", command="true", env={"RACKFLOW_PARAM_PORT": "1"})


# --- the shipped example ----------------------------------------------------------------------------


def run_local(step: FlatStep, action_env: dict[str, str], *, revert: bool = False) -> int:
    action = step.revert if revert else step.run
    assert action is not None
    argv = ["sh", str(action.script)] if action.script else ["sh", "-c", action.command or ""]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **action_env}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30).returncode


def test_hadoop_example_runs_then_reverts_everything_when_the_smoke_test_fails(tmp_path: Path) -> None:
    """The example's commands really work under sh, and its reverts leave nothing behind."""
    library = load_jobnets(REPO / "jobnets")
    assert library.errors == []
    stages = library.stages("hadoop-cluster")
    assert ids(stages)[0] == ["install-java-nn", "install-java-dn1", "install-java-dn2"]
    assert {step.run.server_name: step.run.server for stage in stages for step in stage} == {
        f"{name}": LaunchedServer(from_launch="launch", index=i)
        for i, name in enumerate(["nn", "dn1", "dn2"])
    }
    specs = library.params("hadoop-cluster")
    values = {"root": str(tmp_path / "root"), "daemon_seconds": 60, "fail_smoke_test": True}

    states: dict[str, StepState] = {}
    completion: list[str] = []
    try:
        for stage in stages:
            for step in stage:
                code = run_local(step, step_env(step.run, specs, values))
                states[step.id] = OK if code == 0 else FAILED
                completion.append(step.id)
            if any(states[step.id] is FAILED for step in stage):
                break
        assert states["format-namenode"] is OK
        assert (tmp_path / "root/nn/etc/hadoop/core-site.xml").read_text().count("hdfs://nn:8020") == 1
        assert (tmp_path / "root/dn2/etc/hadoop/hdfs-site.xml").read_text().count("<value>2</value>") == 1
        assert states["smoke-test"] is FAILED
        pid = int((tmp_path / "root/nn/run/namenode.pid").read_text())
    finally:
        plan = plan_revert(stages, states, completion)
        for group in plan.groups:
            for step in group:
                assert step.revert is not None
                assert run_local(step, step_env(step.revert, specs, values), revert=True) == 0

    assert plan.order()[0] == ["start-datanode-dn2", "start-datanode-dn1", "start-namenode"]
    assert plan.order()[-1] == ["install-java-dn2", "install-java-dn1", "install-java-nn"]
    assert plan.never_reverted == {"smoke-test": FAILED}
    assert list((tmp_path / "root").iterdir()) == []
    assert not running(pid)


def running(pid: int) -> bool:
    """Alive and not a zombie: the stopped daemon's parent (init here) may reap it late."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.05)
    return True
