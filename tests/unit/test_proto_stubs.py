"""The committed generated stubs match proto/ (regenerating them changes nothing)."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

from semirl.proto import generator_pb2_grpc, types_pb2
from semirl.protogen import stale_files


def test_generated_stubs_are_up_to_date() -> None:
    assert stale_files() == [], "run `make proto` and commit the stubs"


def _requirement(name: str) -> Requirement:
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    requirements = pyproject["project"]["dependencies"] + [
        r for extra in pyproject["project"]["optional-dependencies"].values() for r in extra]
    (found,) = [Requirement(r) for r in requirements if Requirement(r).name == name]
    return found


def _lowest_allowed(requirement: Requirement) -> Version:
    lower = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==", "~=")]
    assert lower, f"{requirement} has no lower bound"
    return max(lower)


def test_dependency_bounds_admit_only_runtimes_the_stubs_accept() -> None:
    """pyproject's lowest allowed protobuf and grpcio are at least what the generated stubs check at import."""
    source = Path(types_pb2.__file__).read_text()
    major, minor, patch = (int(n) for n in re.search(
        r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),",
        source).groups())
    assert _lowest_allowed(_requirement("protobuf")) >= Version(f"{major}.{minor}.{patch}")
    for name in ("grpcio", "grpcio-health-checking", "grpcio-tools"):
        assert _lowest_allowed(_requirement(name)) >= Version(generator_pb2_grpc.GRPC_GENERATED_VERSION), name
