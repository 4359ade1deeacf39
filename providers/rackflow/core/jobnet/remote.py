"""Shell text of a jobnet step on its server: start it, follow it, read its result, kill it, clean up.

Pure text in, text out (no SSH, no Airflow): the SSH step operator sends these scripts and the
trigger that follows a detached step parses what they print.

Every script is sent on the **standard input** of a fixed ``sh -s`` (never as a command line), so no
process on the server shows a step's environment or a parameter's value in ``ps -eo args``: the
values travel inside the script text, which the step writes to a 0600 file (``step.sh`` in a 0700
job folder) that the step's own shell removes as its first command. The scripts are wrapped in one
``{ ... }`` group, so ``sh`` has read all of its input before anything runs.

A **detached** step's job folder holds:

* ``pid`` — the step's session id = process group id (``$$`` right after ``setsid``);
* ``started_at`` / ``finished_at`` — the server's clock (``date +%s.%N``) at the start and the end;
* ``stdout`` / ``stderr`` — the step's output;
* ``exit_code`` — written (atomically, by rename) when the step's shell exits; a killed step has none.
"""

from __future__ import annotations

import posixpath
import secrets
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rackflow.core.jobnet.params import shell_exports

KILL_GRACE_SECONDS = 3.0
TAIL_LINES = 50
RESULT_KEY = "step_result"
"""XCom key of every step's (and revert's) result dict (see :func:`step_result`)."""
TAIL_BYTES = 65536
STARTED = "rackflow-step-started"
ATTACHED = "rackflow-step-attached"

# Runs as the new session's leader: $$ is the process group id the kill signals.
_DETACHED_WRAPPER = (
    'date +%s.%N > "$RACKFLOW_STEP_DIR/started_at"; '
    'echo $$ > "$RACKFLOW_STEP_DIR/pid"; '
    "export RACKFLOW_STEP_DIR; "
    '"$1" "$2" > "$RACKFLOW_STEP_DIR/stdout" 2> "$RACKFLOW_STEP_DIR/stderr"; '
    "ec=$?; "
    'date +%s.%N > "$RACKFLOW_STEP_DIR/finished_at"; '
    'echo $ec > "$RACKFLOW_STEP_DIR/exit_code.tmp" && '
    'mv -f "$RACKFLOW_STEP_DIR/exit_code.tmp" "$RACKFLOW_STEP_DIR/exit_code"'
)
_FOREGROUND_WRAPPER = 'echo $$ > "$RACKFLOW_STEP_DIR/pid"; export RACKFLOW_STEP_DIR; exec "$1" "$2"'


def _heredoc_token(text: str) -> str:
    while True:
        token = f"RACKFLOW_EOF_{secrets.token_hex(8)}"
        if token not in text:
            return token


def _group(lines: Sequence[str]) -> str:
    return "{\n" + "\n".join(lines) + "\n}\n"


def build_step_script(
    *,
    command: str | None,
    script_text: str | None,
    env: Mapping[str, str],
    workdir: str | None,
    job_dir: str,
    shell: str = "bash",
    detach: bool = False,
    attempt: int = 1,
) -> str:
    """The script for ``sh -s`` that writes the step into ``job_dir`` and runs it in its own session.

    The step body (exports, ``cd``, command) and a shipped script travel in quoted here-documents whose
    delimiters are random and checked absent from the body, so no byte of them is expanded by the
    outer shell. ``detach=False``: the step runs in the foreground (``setsid -w``), its output is this
    script's output, its exit code this script's, and the folder is removed at the end.
    ``detach=True``: the step is started in the background with its output and exit code in files;
    the script returns once the step's pid is written and prints :data:`STARTED`. When the folder
    already holds a started step (an earlier try of the same task launched it) nothing is started
    again and it prints :data:`ATTACHED`. Either way ``owner`` in the folder then holds ``attempt``
    (the try that follows the step now; see :func:`build_kill_command`).
    """
    if (command is None) == (script_text is None):
        raise ValueError("needs exactly one of command or script_text")
    # The step's shell has opened step.sh when it runs its first line: removing it there leaves no
    # copy of the environment (params) on the server's disk while the step runs.
    body = 'rm -f "$RACKFLOW_STEP_DIR/step.sh"\n' + shell_exports(env)
    if workdir:
        body += f"cd {shlex.quote(workdir)} || exit 96\n"
    body += 'exec "$RACKFLOW_STEP_DIR/script"\n' if script_text is not None else f"{command}\n"
    docs = [("step.sh", body)] + ([("script", script_text)] if script_text is not None else [])
    lines = ["umask 077", f"d={shlex.quote(job_dir)}"]
    if detach:
        lines += [
            f"mkdir -p {shlex.quote(posixpath.dirname(job_dir.rstrip('/')) or '/')} || exit 97",
            'if ! mkdir "$d" 2>/dev/null; then',
            f'  if [ -s "$d/pid" ]; then echo {int(attempt)} > "$d/owner"; echo {ATTACHED}; exit 0; fi',
            '  rm -rf "$d"; mkdir "$d" || exit 97',  # a launch that died before its step started
            "fi",
        ]
    else:
        lines.append('mkdir -p "$d" || exit 97')
    for name, text in docs:
        token = _heredoc_token(text)
        if not text.endswith("\n"):
            text += "\n"
        lines.append(f"cat > \"$d/{name}\" <<'{token}'\n{text}{token}")
    if script_text is not None:
        lines.append('chmod 700 "$d/script"')
    quoted_shell = shlex.quote(shell)
    lines.append(f"if command -v {quoted_shell} >/dev/null 2>&1; then s={quoted_shell}; else s=sh; fi")
    if detach:
        lines += [
            "command -v setsid >/dev/null 2>&1 || { echo 'setsid is missing on the server' >&2; exit 95; }",
            f'RACKFLOW_STEP_DIR="$d" setsid sh -c {shlex.quote(_DETACHED_WRAPPER)} rackflow-step '
            '"$s" "$d/step.sh" </dev/null >/dev/null 2>&1 &',
            'i=0; while [ ! -s "$d/pid" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done',
            "[ -s \"$d/pid\" ] || { echo 'the step did not start' >&2; exit 94; }",
            f'echo {int(attempt)} > "$d/owner"',
            f"echo {STARTED}",
        ]
    else:
        lines += [
            # $$ inside the new session is its pid = pgid = sid, whether or not setsid forked to get there.
            f'RACKFLOW_STEP_DIR="$d" setsid -w sh -c {shlex.quote(_FOREGROUND_WRAPPER)} rackflow-step '
            '"$s" "$d/step.sh" </dev/null',
            "ec=$?",
            'rm -rf "$d"',
            "exit $ec",
        ]
    return _group(lines)


def build_kill_command(job_dir: str, grace: float = KILL_GRACE_SECONDS, *, owner: int | None = None) -> str:
    """Signal the step's whole process group: TERM, then KILL what is left after ``grace`` seconds.

    Waits up to 2 s for the pid file (a kill right after the start); never signals a pid <= 1. With
    ``owner``, only if the folder's ``owner`` is still that try (a later try that re-attached to the
    step owns it now), and the folder is removed after the kill.
    """
    pid_file = shlex.quote(f"{job_dir}/pid")
    ticks = max(1, int(grace * 10))
    kill = (
        f"i=0; while [ ! -s {pid_file} ] && [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done; "
        f'p="$(cat {pid_file} 2>/dev/null)"; '
        'if [ "$p" -gt 1 ] 2>/dev/null; then '
        'kill -TERM -"$p" 2>/dev/null; '
        f'i=0; while kill -0 -"$p" 2>/dev/null && [ $i -lt {ticks} ]; do sleep 0.1; i=$((i+1)); done; '
        'kill -KILL -"$p" 2>/dev/null; echo "killed process group $p"; '
        "else echo 'no step process to kill'; fi; true"
    )
    if owner is None:
        return kill
    owner_file = shlex.quote(f"{job_dir}/owner")
    return (
        f'o="$(cat {owner_file} 2>/dev/null)"; '
        f'if [ -n "$o" ] && [ "$o" != {int(owner)} ]; then echo "owned by try $o: not killed"; '
        f"else {kill}; rm -rf {shlex.quote(job_dir)}; fi"
    )


def build_cleanup_command(job_dir: str) -> str:
    """Remove a step's job folder (its output files and exit code)."""
    return f"rm -rf {shlex.quote(job_dir)}"


StepState = Literal["running", "done", "lost", "gone"]


@dataclass(frozen=True)
class RemoteStepStatus:
    """One poll of a detached step: ``running``, ``done`` (with its exit code), ``lost`` (its process
    group is gone without an exit code: killed) or ``gone`` (no job folder)."""

    state: StepState
    exit_code: int | None = None
    started_at: float | None = None
    now: float | None = None

    @property
    def elapsed(self) -> float | None:
        """Seconds since the step started, on the server's clock."""
        if self.started_at is None or self.now is None:
            return None
        return self.now - self.started_at


def build_status_script(job_dirs: Sequence[str]) -> str:
    """One ``sh -s`` script that reports every job folder in ``job_dirs``: the server's clock on the
    first line, then one line per folder, in order. Only shell built-ins run per folder."""
    quoted = " ".join(shlex.quote(d) for d in job_dirs)
    return _group(
        [
            "date +%s.%N",
            f"for d in {quoted}; do",
            "  ec=; p=; st=-",
            '  if [ ! -d "$d" ]; then echo gone; continue; fi',
            '  [ -s "$d/started_at" ] && read -r st < "$d/started_at"',
            '  if [ -s "$d/exit_code" ]; then read -r ec < "$d/exit_code"; echo "done $ec $st"; continue; fi',
            '  [ -s "$d/pid" ] && read -r p < "$d/pid"',
            '  if [ "$p" -gt 1 ] 2>/dev/null && kill -0 -"$p" 2>/dev/null; then',
            '    echo "running - $st"; continue',
            "  fi",
            '  if [ -s "$d/exit_code" ]; then read -r ec < "$d/exit_code"; echo "done $ec $st"; continue; fi',
            '  echo "lost - $st"',
            "done",
        ]
    )


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        digits = text.split(".")[0]
        return float(digits) if digits.isdigit() else None


def parse_status_output(output: str, job_dirs: Sequence[str]) -> dict[str, RemoteStepStatus]:
    """The statuses :func:`build_status_script` printed, by job folder; ValueError on short output."""
    lines = output.splitlines()
    if len(lines) != len(job_dirs) + 1:
        raise ValueError(f"status script printed {len(lines)} lines for {len(job_dirs)} steps")
    now = _number(lines[0].strip())
    statuses = {}
    for job_dir, line in zip(job_dirs, lines[1:], strict=True):
        fields = line.split()
        state = fields[0] if fields else ""
        if state not in ("running", "done", "lost", "gone"):
            raise ValueError(f"unexpected status line {line!r}")
        code = fields[1] if len(fields) > 1 and fields[1].lstrip("-").isdigit() else None
        started = _number(fields[2]) if len(fields) > 2 and fields[2] != "-" else None
        statuses[job_dir] = RemoteStepStatus(
            state=state,  # type: ignore[arg-type]
            exit_code=int(code) if code is not None else None,
            started_at=started,
            now=now,
        )
    return statuses


def build_times_command(job_dir: str) -> str:
    """Print the step's ``exit_code``, ``started_at`` and ``finished_at`` (``-`` for a missing one),
    then the server's clock."""
    return (
        f"d={shlex.quote(job_dir)}; for f in exit_code started_at finished_at; do "
        'v=; [ -s "$d/$f" ] && read -r v < "$d/$f"; echo "${v:--}"; done; date +%s.%N'
    )


def parse_times_output(output: str) -> tuple[int | None, float | None, float | None, float | None]:
    """``(exit_code, started_at, finished_at, server_now)`` from :func:`build_times_command`'s output."""
    fields = [*output.splitlines(), "-", "-", "-", "-"][:4]
    code = fields[0].strip()
    return (
        int(code) if code.lstrip("-").isdigit() else None,
        _number(fields[1].strip()),
        _number(fields[2].strip()),
        _number(fields[3].strip()),
    )


def build_tail_command(job_dir: str, stream: Literal["stdout", "stderr"]) -> str:
    """The last :data:`TAIL_LINES` lines (at most :data:`TAIL_BYTES`) of the step's output stream."""
    path = shlex.quote(f"{job_dir}/{stream}")
    return f"tail -n {TAIL_LINES} {path} 2>/dev/null | tail -c {TAIL_BYTES}; true"


def tail_lines(text: str) -> str:
    """The tail as the report keeps it: lines without a trailing newline or carriage returns."""
    if text.endswith("\n"):
        text = text[:-1]
    return "\n".join(line.rstrip("\r") for line in text.split("\n")) if text else ""


def step_result(base: Mapping[str, Any], event: Mapping[str, Any]) -> dict[str, Any]:
    """The result dict of a detached step (XCom ``step_result``, read by the report and the revert
    plan) from the operator's ``base`` (step id, server, host, revert) and the trigger's end ``event``:
    built the same way whether the trigger ends the task or the task resumes on a worker."""
    started_at, finished_at = event.get("started_at"), event.get("finished_at")
    return {
        **base,
        "started_at": started_at,
        "exit_code": event.get("exit_code"),
        "duration_s": round(finished_at - started_at, 3) if started_at and finished_at else None,
        "finished_at": finished_at,
        "timed_out": event.get("status") == "timeout",
        "stdout_tail": event.get("stdout_tail") or "",
        "stderr_tail": event.get("stderr_tail") or "",
    }


def output_lines(server: str, result: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """A step result's output tails as the task log shows them: ``[server] line`` for stdout and
    ``[server:stderr] line`` for stderr (the worker and the trigger log the same lines)."""
    return (
        [f"[{server}] {line}" for line in result["stdout_tail"].splitlines()],
        [f"[{server}:stderr] {line}" for line in result["stderr_tail"].splitlines()],
    )


__all__ = [
    "ATTACHED",
    "KILL_GRACE_SECONDS",
    "RESULT_KEY",
    "STARTED",
    "TAIL_LINES",
    "RemoteStepStatus",
    "build_cleanup_command",
    "build_kill_command",
    "build_status_script",
    "build_step_script",
    "build_tail_command",
    "build_times_command",
    "output_lines",
    "parse_status_output",
    "parse_times_output",
    "step_result",
    "tail_lines",
]
