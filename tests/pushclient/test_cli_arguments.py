"""pushctl's bad arguments found before any call: one line on stderr and exit 2, as the README says,
whatever the command (no server is needed: nothing is sent)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT, free_port
from tests.support.timing import timeout


def pushctl(*args: str) -> subprocess.CompletedProcess[str]:
    # Addresses where nothing listens: a command that got as far as a call would fail differently (exit 1).
    nobody = f"127.0.0.1:{free_port()}"
    return subprocess.run([sys.executable, "-m", "pushclient", "--push", nobody, "--tasks", nobody, *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout(30))


@pytest.mark.parametrize("command", [("task", "list"), ("publish", "--topic", "t", "--type", "x"), ("info",),
                                     ("tail", "t")])
def test_an_unreadable_tls_ca_is_a_bad_argument(tmp_path: Path, command: tuple[str, ...]):
    missing = tmp_path / "nonexistent.pem"
    result = pushctl("--tls-ca", str(missing), *command)
    assert (result.returncode, result.stdout, result.stderr) == (
        2, "", f"pushctl: error: --tls-ca: No such file or directory: {missing}\n")


def test_task_params_that_are_not_an_object_are_a_bad_argument():
    result = pushctl("task", "start", "--params", "[1]")
    assert (result.returncode, result.stdout, result.stderr) == (
        2, "", "pushctl task start: error: argument --params: must be a JSON object\n")
