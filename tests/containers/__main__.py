"""`make test-compose`: the system as real containers on this machine, tested.

1. A Docker engine and Compose that answer (tests/containers/engine.py: installed from Debian's packages
   and dockerd started when missing, stopped again at the end if started here).
2. The images (images.py): the bases from the registry or made from Debian's packages, the project's
   built unless built already for this content.
3. `compose config`, then `up` under a project name of its own on free host ports; every healthcheck.
4. The containers' hardening (checks.py), the images' sizes.
5. The portable integration suite (`-m portable`, tests/support/targets.py) against the stack.
6. The fault pass (faults.py): docker kill / pause / restart under a publisher and churning subscribers;
   its table.
7. `down -v` whatever happened; every container's log in test-artifacts/compose/ when something failed.

Exit 0 only when all of it passed; anything that cannot be done here fails with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

from tests.support.faults import summary_table
from tests.support.targets import run_portable_suite

from .checks import container_problems
from .engine import Engine, EngineError
from .faults import fault_pass, violations
from .images import base_images, project_images, sizes
from .stack import ROOT, ComposeStack, built_images, compose_document

ARTIFACTS = ROOT / "test-artifacts" / "compose"
DURATIONS: list[tuple[str, float]] = []


class Failed(Exception):
    pass


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    print(f"\n== {name}", flush=True)
    started = time.monotonic()
    try:
        yield
    finally:
        DURATIONS.append((name, time.monotonic() - started))


def portable_suite(stack: ComposeStack) -> str:
    """pytest -m portable against the stack: every selected test passed, none skipped."""
    ok, summary = run_portable_suite(stack.portable_env(), ARTIFACTS / "portable-junit.xml", ROOT)
    if not ok:
        raise Failed(f"portable suite: {summary}")
    return summary


def run_stack(engine: Engine, stack_holder: list[ComposeStack]) -> list[str]:
    report = []
    document = compose_document()
    repositories = built_images(document)
    with step("images"):
        bases = base_images(ARTIFACTS)
        tag = project_images(list(repositories), repositories, bases["PYTHON_IMAGE"], ARTIFACTS)
    stack = ComposeStack(engine.compose, {"IMAGE_TAG": tag, **bases}, document=document)
    stack_holder.append(stack)
    with step("config and up"):
        stack.run("config", "-q")
        stack.up(ARTIFACTS / "compose-up.log")
        report.append(f"every service healthy {stack.wait_healthy():.1f} s after `up` returned (project {stack.project})")
    if problems := container_problems(stack, set(repositories.values())):
        raise Failed("containers: " + "; ".join(problems))
    images = [f"{repositories[t]}:{tag}" for t in repositories] + [bases["REDIS_IMAGE"], bases["PYTHON_IMAGE"]]
    report += [f"image {name:<48} {size:>8}" for name, size in sizes(images)]
    with step("portable suite"):
        report.append(portable_suite(stack))
    with step("fault pass"):
        outcomes, notes = asyncio.run(fault_pass(stack))
    table = summary_table(outcomes)
    print("\n" + table + "\n" + "\n".join(notes), flush=True)
    (ARTIFACTS / "faults.txt").write_text("\n\n".join(o.table() + "\n" + o.summary() for o in outcomes)
                                          + "\n\n" + table + "\n")
    report += [table, *notes]
    if broken := [v for o in outcomes for v in violations(o)]:
        raise Failed("exactly-once-or-told broken: " + "; ".join(broken))
    return report


def main() -> int:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `finally` still takes the stack down
    started = time.monotonic()
    engine, stacks, report, failure = Engine(ARTIFACTS), [], [], ""
    try:
        with step("engine"):
            engine.open()
        report = run_stack(engine, stacks)
    except (EngineError, Failed, AssertionError, subprocess.TimeoutExpired) as exc:
        failure = f"{type(exc).__name__}: {exc}"
    except BaseException as exc:
        failure = f"interrupted or crashed: {exc!r}"
        raise
    finally:
        with step("down"):
            for stack in stacks:
                if failure:
                    stack.save_logs(ARTIFACTS / "logs")
                try:
                    stack.down(ARTIFACTS / "compose-down.log")
                except EngineError as exc:
                    failure = failure or str(exc)
            engine.close()
        print("\n" + "\n".join(report))
        print("durations: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in DURATIONS)
              + f"; total {time.monotonic() - started:.0f} s")
    if failure:
        print(f"\nmake test-compose FAILED: {failure}\n(container logs and build logs: {ARTIFACTS})", file=sys.stderr)
        return 1
    print("\nmake test-compose passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
