"""The images `make test-compose` runs: the project's three (the Dockerfile's final stages) and their
bases, built without a registry where none is reachable.

- Bases. The compose file's defaults (`python:3.11-slim-bookworm`, `redis:7.2-alpine`) when the engine
  has them or can pull them. Otherwise local ones made from Debian's packages: `debootstrap
  --variant=minbase bookworm` with Python (python3, python3-venv, python-is-python3) or Redis
  (redis-server, redis-cli), trimmed (no apt lists, docs, man pages, locales) and `docker import`ed,
  tagged by a hash of their recipe, so a second run finds them.
- The project's images, tagged `h-<hash>` by the content of what the Dockerfile copies, the Dockerfile
  itself and the base's image id: a second run with the same code builds nothing. The build installs
  Python packages from wheelhouse/ (wheels the machine's pip fetched once, kept in a cache of their
  own), so it needs no network, and no certificate of the machine's enters any image.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .engine import EngineError, ensure_programs, run

ROOT = Path(__file__).resolve().parents[2]
SUITE = "bookworm"  # python:3.11-slim-bookworm's Debian, and its Python (3.11)
TRIM = ("var/lib/apt/lists", "var/cache/apt", "var/cache/debconf/*-old", "var/log", "usr/share/doc",
        "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pushsystem"
# The wheels' platform: Debian bookworm's CPython 3.11.2 (glibc 2.36), whatever Python runs this
# (3.11.2: markers such as redis's `python_full_version < "3.11.3"` count).
WHEEL_PLATFORM = ["--only-binary=:all:", "--python-version", "3.11.2", "--implementation", "cp", "--abi", "cp311",
                  *[arg for tag in ("manylinux2014", "manylinux_2_17", "manylinux_2_28", "manylinux_2_34")
                    for arg in ("--platform", f"{tag}_{os.uname().machine}")]]


@dataclass(frozen=True)
class LocalBase:
    """A base image made from Debian's packages where the registry's cannot be had."""

    registry_image: str
    name: str
    packages: tuple[str, ...]
    changes: tuple[str, ...]  # `docker import --change` instructions

    def tag(self) -> str:
        recipe = repr((SUITE, self.packages, self.changes, TRIM, 1)).encode()
        return f"pushsystem-local/{self.name}:{hashlib.sha256(recipe).hexdigest()[:12]}"


BASES = {
    "PYTHON_IMAGE": LocalBase("python:3.11-slim-bookworm", "python", ("python3", "python3-venv", "python-is-python3"),
                              ("ENV LANG=C.UTF-8", 'CMD ["python3"]')),
    "REDIS_IMAGE": LocalBase("redis:7.2-alpine", "redis", ("redis-server",),
                             ("USER redis", "WORKDIR /var/lib/redis", 'CMD ["redis-server", "--protected-mode", "no"]')),
}


def image_exists(ref: str) -> bool:
    return run(["docker", "image", "inspect", ref], check=False).returncode == 0


def image_id(ref: str) -> str:
    return run(["docker", "image", "inspect", "--format", "{{.Id}}", ref]).stdout.strip()


def base_images(logs: Path) -> dict[str, str]:
    """PYTHON_IMAGE and REDIS_IMAGE: the registry's where the engine has or can pull them, else local."""
    chosen: dict[str, str] = {}
    to_build: list[LocalBase] = []
    for variable, base in BASES.items():
        if image_exists(base.registry_image):
            chosen[variable] = base.registry_image
        elif image_exists(base.tag()):  # made here before: the registry was unreachable then
            chosen[variable] = base.tag()
        elif run(["docker", "pull", base.registry_image], check=False, timeout=120).returncode == 0:
            chosen[variable] = base.registry_image
        else:
            chosen[variable] = base.tag()
            to_build.append(base)
    if to_build:
        ensure_programs("debootstrap")
        print(f"registry unreachable: building {', '.join(b.tag() for b in to_build)} from Debian", flush=True)
        with ThreadPoolExecutor(len(to_build)) as pool:
            list(pool.map(lambda b: build_local_base(b, logs / f"debootstrap-{b.name}.log"), to_build))
    return chosen


def debian_mirror() -> str:
    """The Debian mirror apt is configured with (debootstrap's packages come from the same place)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        with contextlib.suppress(OSError):
            for uri in re.findall(r"(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+)", path.read_text()):
                if uri.rstrip("/").endswith("/debian"):
                    return uri
    return "http://deb.debian.org/debian"


def build_local_base(base: LocalBase, log: Path) -> None:
    with tempfile.TemporaryDirectory(prefix=f"pushsystem-{base.name}-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        run(["debootstrap", "--variant=minbase", f"--include={','.join(base.packages)}", SUITE, str(rootfs),
             debian_mirror()], log=log, timeout=900)
        for pattern in TRIM:
            for path in rootfs.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        (rootfs / "var/log").mkdir(exist_ok=True)
        changes = [arg for change in base.changes for arg in ("--change", change)]
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            run(["docker", "import", *changes, "-", base.tag()], stdin=tar.stdout, log=log)  # type: ignore[arg-type]
        finally:
            tar.wait()
    print(f"built {base.tag()} ({image_size(base.tag())})", flush=True)


def image_size(ref: str) -> str:
    size = int(run(["docker", "image", "inspect", "--format", "{{.Size}}", ref]).stdout.strip())
    return f"{size / 1e6:.0f} MB"


# --- the project's images -----------------------------------------------------------------------------


def copied_sources(dockerfile: str) -> list[str]:
    """What the Dockerfile's COPY instructions take from the build context (globs aside: wheelhouse/,
    which follows from the requirements files)."""
    sources: list[str] = []
    for line in dockerfile.replace("\\\n", " ").splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--") and not re.search(r"[*?\[]", w)]
    return sources


def content_hash(base_id: str) -> str:
    """The project images' tag: what goes into them (the Dockerfile, every file it copies but caches
    and bytecode, the base image)."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    digest = hashlib.sha256(dockerfile.encode() + base_id.encode())
    for source in sorted(set(copied_sources(dockerfile))):
        path = ROOT / source
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            if "__pycache__" in file.parts or file.suffix == ".pyc":
                continue
            digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def wheelhouse(logs: Path) -> None:
    """ROOT/wheelhouse/: the wheels of requirements-runtime.txt and grpcio-tools for the images' Python,
    from a machine-wide cache filled by pip once per set of requirements."""
    tools = re.search(r"^grpcio-tools==\S+", (ROOT / "requirements.txt").read_text(), re.M)
    if tools is None:
        raise EngineError("requirements.txt pins no grpcio-tools (the Dockerfile's build stage needs it)")
    runtime = (ROOT / "requirements-runtime.txt").read_bytes()
    key = hashlib.sha256(runtime + tools[0].encode()
                         + " ".join(WHEEL_PLATFORM).encode()).hexdigest()[:12]
    cached = CACHE / f"wheels-{key}"
    if not (cached / ".complete").exists():
        pip = [str(ROOT / ".venv/bin/python"), "-m", "pip", "download", "-q", *WHEEL_PLATFORM, "-d", str(cached)]
        # pip judges markers by the Python running it, not --python-version: what a marker limits to
        # older Pythons (async-timeout before 3.11.3) is fetched as well.
        marked = [line.partition(";")[0].strip() for line in runtime.decode().splitlines()
                  if ";" in line and not line.lstrip().startswith("#")]
        run([*pip, "-r", str(ROOT / "requirements-runtime.txt"), *marked], log=logs / "pip-download.log")
        run([*pip, tools[0]], log=logs / "pip-download.log")
        (cached / ".complete").touch()
    target = ROOT / "wheelhouse"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    for wheel in cached.glob("*.whl"):
        try:
            os.link(wheel, target / wheel.name)
        except OSError:
            shutil.copy2(wheel, target / wheel.name)


def project_images(targets: list[str], repositories: dict[str, str], python_image: str, logs: Path) -> str:
    """Build the Dockerfile's `targets` (tagged `<repository>:h-<hash>`) unless built already; the tag."""
    tag = f"h-{content_hash(image_id(python_image))}"
    missing = [t for t in targets if not image_exists(f"{repositories[t]}:{tag}")]
    if not missing:
        print(f"project images {tag}: built already", flush=True)
        return tag
    wheelhouse(logs)
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # the builder every engine has (BuildKit needs buildx)
    try:
        for target in targets:
            run(["docker", "build", "--force-rm", "--target", target, "--build-arg", f"PYTHON_IMAGE={python_image}",
                 "--label", f"pushsystem.content={tag}", "-t", f"{repositories[target]}:{tag}", str(ROOT)],
                env=env, log=logs / "docker-build.log", timeout=1200)
    finally:
        shutil.rmtree(ROOT / "wheelhouse", ignore_errors=True)
    forget_older_builds(list(repositories.values()), keep=tag)
    return tag


def forget_older_builds(repositories: list[str], keep: str, newest: int = 3) -> None:
    """Untag all but the newest few content-hashed builds (each code change makes one); images still
    used by a container stay."""
    for repository in repositories:
        listed = run(["docker", "image", "ls", repository, "--format", "{{.Tag}}"]).stdout.split()
        tags = [t for t in listed if t.startswith("h-") and t != keep]  # newest first
        for old in tags[newest - 1:]:
            run(["docker", "image", "rm", f"{repository}:{old}"], check=False)


def sizes(images: list[str]) -> list[tuple[str, str]]:
    return [(image, image_size(image)) for image in images]
