"""What the issue 13 acceptance tests run inside a job, and how they read its output.

:data:`PROBE` (a ``sh -c`` script; its arguments are paths) prints the job's environment and uid, then
tries to read each path (a directory is listed); :func:`assert_confined` checks what it printed.
"""

from __future__ import annotations

import pwd

# Prints its environment and uid, then tries to read each argument (a file or a directory).
PROBE = r"""
env
echo "uid=$(id -u)"
for target in "$@"; do
  if [ -d "$target" ]; then ls -- "$target" 2>&1 >/dev/null | sed 's/^/read: /'
  else cat -- "$target" 2>&1 >/dev/null | sed 's/^/read: /'
  fi
  echo "done: $target"
done
"""


def probe_lines(output: str, targets: list[str]) -> dict[str, list[str]]:
    """What the probe printed for each target (the ``read:`` lines before its ``done:`` line)."""
    said: dict[str, list[str]] = {t: [] for t in targets}
    pending: list[str] = []
    for line in output.splitlines():
        if line.startswith("read: "):
            pending.append(line.removeprefix("read: "))
        elif line.startswith("done: "):
            said[line.removeprefix("done: ")] = pending
            pending = []
    return said


def assert_confined(output: str, account: str, targets: list[str]) -> None:
    """The probe's output shows no Airflow/AWS variable, ``account``'s uid, and every read refused."""
    env_names = [line.partition("=")[0] for line in output.splitlines() if "=" in line]
    assert not [n for n in env_names if "AIRFLOW" in n or "AWS" in n], output
    assert f"uid={pwd.getpwnam(account).pw_uid}" in output.splitlines(), output
    for target, said in probe_lines(output, targets).items():
        assert said and all("Permission denied" in s for s in said), (target, said, output)
