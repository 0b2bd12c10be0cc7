"""The package layout: the root is `ember`, every subpackage is installed, imports are absolute."""

import pathlib
import shutil
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _subpackages() -> set[str]:
    found = set()
    for init in ROOT.rglob("__init__.py"):
        parts = init.parent.relative_to(ROOT).parts
        if parts and parts[0] in {"tests", "build", "venv", ".venv", "docs", "scripts"}:
            continue
        found.add(".".join(("ember", *parts)))
    return found


def test_every_subpackage_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    assert _subpackages() == listed, "update [tool.setuptools] packages in pyproject.toml"


def test_no_generic_top_level_modules_and_no_root_conftest():
    assert not (ROOT / "conftest.py").exists()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = config["tool"]["setuptools"]["packages"]
    assert all(p == "ember" or p.startswith("ember.") for p in packages)


def test_import_is_lazy():
    # `import ember` must not pull in onnx or the compiler; `ember.compile` loads them.
    code = ("import sys, ember; assert 'onnx' not in sys.modules, 'onnx imported eagerly'; "
            "assert 'ember.compiler' not in sys.modules; ember.compile; "
            "assert 'ember.compiler.build' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def test_ruff_clean():
    # Includes the ban on relative imports (the root is a package; see DESIGN.md).
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]' installs it)")
    result = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
def test_suite_runs_from_a_clone_folder_named_anything(tmp_path):
    # pytest imports the root __init__.py under the folder's name if anything goes relative.
    clone = tmp_path / "ember-ci"
    shutil.copytree(ROOT, clone, ignore=shutil.ignore_patterns(
        ".git", "venv", ".venv", "__pycache__", "*.egg-info", "build"))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/unit/test_graph_ir.py", "tests/unit/test_target.py"],
        cwd=clone, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
