"""The deployable artefacts agree with pyproject.toml and with what the service needs."""

import ast
import tomllib
from pathlib import Path

import dockerfile
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(requirements) -> dict[str, str]:
    return dict(r.split("==", 1) for r in requirements)


def test_bentofile_pins_match_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = _pins(project["dependencies"]) | _pins(project["optional-dependencies"]["gpu"])
    bentofile = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    assert _pins(bentofile["python"]["packages"]) == expected
    assert bentofile["python"]["lock_packages"] is False
    assert bentofile["service"] == "service.app:CrossGuard"


def test_every_dependency_is_pinned_exactly():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra
    ]
    assert all("==" in r for r in requirements), requirements
    assert "torch==2.13.0" in project["dependencies"]


def test_dockerfile_runs_bentoml_as_non_root_with_readiness_healthcheck():
    commands = {c.cmd: c for c in dockerfile.parse_file(str(ROOT / "Dockerfile"))}
    assert commands["FROM"].value[0].startswith("nvidia/cuda:")
    assert commands["USER"].value[0] not in ("root", "0")
    assert "/readyz" in " ".join(commands["HEALTHCHECK"].value)
    assert list(commands["CMD"].value[:3]) == ["bentoml", "serve", "service.app:CrossGuard"]


def _imported_modules(path: Path) -> set[str]:
    """Every absolute module name `path` imports, at any depth (function bodies included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_product_and_benches_never_import_tests():
    """Test fixtures live in tests/; the packages the Bento ships, and the benches, stand
    without them (tests may import bench, never the reverse)."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(bad)
        for folder in ("service", "unlearning", "bench")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if (bad := {m for m in _imported_modules(path) if m == "tests" or m.startswith("tests.")})
    }
    assert not offenders


def test_the_vllm_bento_and_image_take_vllms_pins_and_the_projects_others():
    """vLLM pins its own transformers: the vLLM Bento lists exactly what
    deploy/vllm/requirements.py prints for GPUs, and the image installs from that script."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("vllm_requirements",
                                                  ROOT / "deploy" / "vllm" / "requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.requirements(ROOT / "pyproject.toml", gpu=True, test=False)
    bentofile = yaml.safe_load((ROOT / "bentofile.vllm.yaml").read_text())
    assert bentofile["python"]["packages"] == expected
    assert {"name": "CROSSGUARD_ENGINE", "value": "vllm"} in bentofile["envs"]
    assert "transformers" not in " ".join(expected) and expected[0].startswith("vllm==")
    run = " ".join(" ".join(c.value) for c in dockerfile.parse_file(str(ROOT / "Dockerfile"))
                   if c.cmd == "RUN")
    assert "deploy/vllm/requirements.py --gpu" in run
