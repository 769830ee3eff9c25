"""Everything that runs is pinned: the venv matches requirements/constraints.txt exactly, torch is
pinned in pyproject.toml, and every base image of the Dockerfiles and every image of the compose
file carries a fixed version tag (docs/reliability.md, "Security").
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO

CONSTRAINTS = REPO / "requirements" / "constraints.txt"
TORCH = "2.13.0"
#: the installer's own tools: ``pip freeze`` leaves them out, so ``make lock`` never pins them
INSTALLER_TOOLS = {"pip", "setuptools", "wheel", "distribute"}


def constraints() -> dict[str, str]:
    """name (canonical) -> version of every ``name==version`` line; any other requirement line fails."""
    pins: dict[str, str] = {}
    for number, line in enumerate(CONSTRAINTS.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9][A-Za-z0-9.+!_-]*)", text)
        assert m, f"constraints.txt:{number}: not an exact pin `name==version`: {text!r}"
        name = canonicalize_name(m.group(1))
        assert name not in pins, f"constraints.txt:{number}: {name} pinned twice"
        pins[name] = m.group(2)
    return pins


def installed() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out.setdefault(canonicalize_name(name), []).append(dist.version)
    return out


def test_every_installed_distribution_is_pinned_at_its_installed_version():
    pins = constraints()
    dists = installed()
    assert len(pins) > 100 and "mlflow" in pins and "prefect" in pins          # the real lock, not a stub
    problems = []
    for name, versions in sorted(dists.items()):
        if name in {"etfuse", "torch"} | INSTALLER_TOOLS:
            continue
        if len(set(versions)) > 1:
            problems.append(f"{name}: installed twice ({versions})")
        elif name not in pins:
            problems.append(f"{name}=={versions[0]} is installed but not pinned in constraints.txt")
        elif pins[name] != versions[0]:
            problems.append(f"{name}: installed {versions[0]}, pinned {pins[name]}")
    assert not problems, "the venv does not match requirements/constraints.txt (make lock, then reinstall):\n  " \
        + "\n  ".join(problems)
    missing = sorted(set(pins) - set(dists))
    assert not missing, f"pinned but not installed (a stale lock?): {missing}"


def test_torch_is_pinned_in_pyproject_and_installed_at_that_version():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    torch = [Requirement(r) for r in project["dependencies"] if canonicalize_name(Requirement(r).name) == "torch"]
    assert [str(r) for r in torch] == [f"torch=={TORCH}"]
    assert "torch" not in constraints()                    # installed on its own, first (Makefile, Dockerfiles)
    assert Version(metadata.version("torch")).base_version == TORCH
    assert f"torch=={TORCH}" in (REPO / "Makefile").read_text()
    for dockerfile in ("Dockerfile.cpu", "Dockerfile.gpu"):
        assert f"ARG TORCH_VERSION={TORCH}" in (REPO / "infra" / "docker" / dockerfile).read_text(), dockerfile


def image_tag(reference: str) -> tuple[str, str | None, str | None]:
    """``registry/name:tag@sha256:...`` -> (name, tag, digest)."""
    name, _, digest = reference.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1:], digest or None
    return name, None, digest or None


def fixed(reference: str) -> bool:
    """A digest, or a tag that names a version (a digit in it) and is not ``latest``."""
    _, tag, digest = image_tag(reference)
    if digest:
        return bool(re.fullmatch(r"sha256:[0-9a-f]{64}", digest))
    return tag is not None and tag != "latest" and not tag.endswith("-latest") and any(c.isdigit() for c in tag)


def expand(text: str, variables: dict[str, str]) -> str:
    """``${VAR}``, ``${VAR:-default}``, ``${VAR-default}`` and ``$VAR`` from ``variables`` (else the default)."""
    def one(m: re.Match) -> str:
        name = m.group("name") or m.group("bare")
        if name in variables:
            return variables[name]
        assert m.group("default") is not None, f"{name} has no value and no default in {text!r}"
        return m.group("default")
    pattern = r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
    return re.sub(pattern, one, text)


def base_images(dockerfile: Path) -> list[str]:
    """Every ``FROM`` of a Dockerfile with its ARGs resolved; stages built earlier in the file are left out."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    images = []
    for line in re.sub(r"\\\n", " ", dockerfile.read_text()).splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0].upper() == "ARG" and not images and "=" in words[1]:   # only ARGs before the first FROM
            key, _, value = words[1].partition("=")
            args[key] = value.strip("\"'")
        elif words[0].upper() == "FROM":
            rest = [w for w in words[1:] if not w.startswith("--")]
            image = expand(rest[0], args)
            if image.lower() not in stages:            # FROM <an earlier stage> pulls nothing
                images.append(image)
            if len(rest) >= 3 and rest[1].upper() == "AS":
                stages.add(rest[2].lower())
    return images


DOCKERFILES = sorted((REPO / "infra" / "docker").glob("Dockerfile.*"))


def test_there_are_dockerfiles_to_check():
    assert {p.name for p in DOCKERFILES} >= {"Dockerfile.cpu", "Dockerfile.gpu"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_base_image_has_a_fixed_tag(dockerfile):
    images = base_images(dockerfile)
    assert images, f"{dockerfile.name}: no FROM found"
    loose = [image for image in images if not fixed(image)]
    assert not loose, f"{dockerfile.name}: base images without a fixed version tag: {loose}"


def test_compose_images_have_fixed_tags():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    env_example = dict(line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines()
                       if line.strip() and not line.startswith("#") and "=" in line)
    services = compose["services"]
    assert len(services) >= 8
    images = {}
    for name, service in services.items():
        assert "image" in service, f"service {name} has no image name (a build alone gets an unversioned tag)"
        images[name] = service["image"]
    loose = {}
    for name, reference in images.items():
        for resolved in (expand(reference, {}), expand(reference, env_example)):    # compose's default and .env's
            if not fixed(resolved):
                loose[name] = resolved
    assert not loose, f"compose images without a fixed version tag: {loose}"


@pytest.mark.parametrize("reference,ok", [
    ("python:3.11.14-slim-bookworm", True), ("nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04", True),
    ("ghcr.io/astral-sh/uv:0.13.8", True), ("localhost:5000/etfuse-cpu:0.1.0", True),
    ("python@sha256:" + "a" * 64, True),
    ("python", False), ("python:latest", False), ("python:slim", False), ("localhost:5000/etfuse-cpu", False),
    ("postgres:bookworm", False), ("nvidia/cuda:cudnn-latest", False),
])
def test_the_tag_rule(reference, ok):
    assert fixed(reference) is ok


def test_args_and_stages_are_resolved(tmp_path):
    dockerfile = tmp_path / "Dockerfile.x"
    dockerfile.write_text("ARG BASE=python:3.11.14-slim\nARG UV=ghcr.io/astral-sh/uv:latest\n"
                          "FROM ${UV} AS uv\nFROM $BASE AS build\nARG LATER=ignored\nFROM build\n"
                          "FROM --platform=linux/amd64 ${BASE}\n")
    assert base_images(dockerfile) == ["ghcr.io/astral-sh/uv:latest", "python:3.11.14-slim", "python:3.11.14-slim"]
    assert [fixed(i) for i in base_images(dockerfile)] == [False, True, True]
