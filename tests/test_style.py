"""Repository hygiene: ruff-clean code (lint and format), declared dependencies, no sys.path
edits, an import of cvae_seg that stays offline, and the release files."""

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    shutil.which("ruff") is None, reason="ruff is not installed (pip install -e .[test])"
)
@pytest.mark.parametrize("command", [["check"], ["format", "--check"]])
def test_ruff(command):
    result = subprocess.run(["ruff", *command, "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- packaging
# import name -> distribution name, where they differ
DISTRIBUTIONS = {
    "PIL": "pillow",
    "yaml": "pyyaml",
    "segmentation_models_pytorch": "segmentation-models-pytorch",
}
SCRIPTS = ("cvae_seg", "tools", "benchmarks", "demo")


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level names imported anywhere in the package and the scripts (inside functions
    too), mapped to the files that import them; the standard library and our own modules
    left out."""
    local = {"cvae_seg"} | {p.stem for folder in SCRIPTS[1:] for p in (ROOT / folder).glob("*.py")}
    found: dict[str, set[str]] = {}
    for folder in SCRIPTS:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in local:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        declared += extra
    names = {re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].lower() for spec in declared}
    missing = {
        name: sorted(files)
        for name, files in _third_party_imports().items()
        if DISTRIBUTIONS.get(name, name).lower().replace("_", "-") not in names
    }
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_no_sys_path_edits():
    """Scripts and tests import the installed package; benchmark and demo scripts reach the
    tests through pytest's ``pythonpath`` setting, never through code."""
    offenders = [
        str(path.relative_to(ROOT))
        for folder in (*SCRIPTS, "tests")
        for path in (ROOT / folder).rglob("*.py")
        if re.search(r"sys\.path\.(insert|append|extend)|sys\.path\s*\+?=", path.read_text())
        and path != Path(__file__)
    ]
    assert not offenders, offenders


def test_import_cvae_seg_leaves_albumentations_unloaded():
    """albumentations checks the network for updates when imported, unless
    NO_ALBUMENTATIONS_UPDATE is set: `import cvae_seg` must not import it at all, nor the
    training and evaluation modules a Python user imports to train or score a model."""
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    code = ("import cvae_seg, cvae_seg.training, cvae_seg.evaluation, sys; "
            "print('albumentations' in sys.modules)")  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_release_files_and_version():
    from cvae_seg.version import __version__

    for name in ("LICENSE", "CHANGELOG.md", "CITATION.cff", "CONTRIBUTING.md", "cvae_seg/py.typed"):
        assert (ROOT / name).is_file(), name
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert f"## {__version__}" in (ROOT / "CHANGELOG.md").read_text()
    assert f"version: {__version__}" in (ROOT / "CITATION.cff").read_text()


# --------------------------------------------------------------------------- kept results
@pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout"
)
def test_the_long_studies_kept_files_are_not_ignored_by_git():
    """The long studies keep their finished runs' small files under results/ to survive a
    new machine; one that .gitignore matched would never be committed, silently."""
    import known_truth_runs
    import lfw_study_table

    kept = [
        f"results/known_truth_side_by_side_runs/cpu_8000steps/K2/cnn/seed0/{name}"
        for name in known_truth_runs.KEPT
    ]
    kept += [f"results/lfw128_table_runs/table/CNN/seed0/{n}" for n in lfw_study_table.KEPT_RUN]
    kept += [f"results/lfw128_table_runs/{name}" for name in lfw_study_table.KEPT_TABLE]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *kept], cwd=ROOT, capture_output=True, text=True
    )
    assert ignored.returncode == 1, f"ignored by .gitignore: {ignored.stdout.split()}"
