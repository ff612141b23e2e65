"""The documentation holds together: a short README, links that resolve, a complete results list.

- README.md has at most 250 lines and starts with the two set-up commands.
- Every relative link in README.md and docs/**/*.md points at a file that exists.
- results/README.md lists every file in results/ (and no other), and each page it names as
  citing a file does name that file.
- The repository stands alone: no tracked file mentions files outside it, and every
  docs/ or results/ file that a tracked file names exists.
- The README's Python quickstart runs (on a tiny encoder, to stay fast).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "results"
SETUP_COMMANDS = [
    'python3 -m pip install -c constraints.txt -e ".[test]"',
    "python3 -m pytest",
]
# [text](target) and ![alt](target); the target ends at whitespace or ")"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# names that point outside the repository
OUTSIDE = ("PAPER.md", "GUIDE.md", "../shared")


def _pages() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def _relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http(s)://, mailto:, in-page anchors
        targets.append(target.split("#", 1)[0])
    return targets


def test_readme_is_short_and_starts_with_the_setup_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; keep it to 250"
    content = [line for line in lines if line.strip()]
    assert content[0].startswith("# "), "README.md should open with its title"
    assert content[1].startswith("```"), "the set-up commands come right after the title"
    assert content[2 : 2 + len(SETUP_COMMANDS)] == SETUP_COMMANDS
    assert content[2 + len(SETUP_COMMANDS)].startswith("```")


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path):
    missing = [t for t in _relative_links(page) if not (page.parent / t).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


def _results_rows() -> dict[str, list[str]]:
    """file name -> the pages its row says cite it, from the table in results/README.md."""
    rows = {}
    for line in (RESULTS / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("["):
            continue
        name = LINK.findall(cells[0])[0].rstrip("/")  # a folder is listed as name/
        rows[name] = LINK.findall(cells[-1])
    return rows


def test_results_readme_lists_every_results_file():
    # a file in a subfolder (a long study's kept runs) is listed by its folder
    files = {name.split("/")[1] for name in _tracked_files() if name.startswith("results/")}
    files.discard("README.md")
    listed = set(_results_rows())
    assert not files - listed, f"results/README.md does not list {sorted(files - listed)}"
    assert not listed - files, f"results/README.md lists missing files {sorted(listed - files)}"


def test_every_results_file_is_cited_where_results_readme_says():
    for name, pages in _results_rows().items():
        assert pages, f"results/{name}: no page cites it (cite it, or remove the file)"
        for page in pages:
            path = (RESULTS / page).resolve()
            assert path.is_file(), f"results/README.md: {page} does not exist"
            text = path.read_text(encoding="utf-8")
            assert name in text, f"{path.relative_to(ROOT)} does not name results/{name}"


def _tracked_files() -> list[str]:
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [name for name in listing.stdout.decode().split("\0") if name]


def test_no_tracked_file_points_outside_the_repository():
    offenders = []
    for name in _tracked_files():
        path = ROOT / name
        if not path.is_file():
            continue  # deleted in the working tree
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary (images)
        offenders += [f"{name}: {word}" for word in OUTSIDE if word in text]
    # this file names them to look for them
    offenders = [o for o in offenders if not o.startswith("tests/test_docs.py")]
    assert not offenders, "files that cite what the repository does not hold:\n" + "\n".join(
        offenders
    )


def test_docs_and_results_named_in_tracked_files_exist():
    # a docs/ or results/ path named in code, configs or docs must be a real file
    named = re.compile(r"(?<![\w/.-])((?:docs|results)/[\w/.-]+\.(?:md|json|png))")
    missing = []
    for name in _tracked_files():
        try:
            text = (ROOT / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        missing += [f"{name}: {path}" for path in named.findall(text) if not (ROOT / path).exists()]
    assert not missing, "references to files that do not exist:\n" + "\n".join(missing)


def _readme_python() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert blocks, "README.md has no Python quickstart"
    return blocks[0]


def test_readme_python_quickstart_runs(tmp_path, monkeypatch):
    # the same calls on timm's tiny encoder at 64 px, so the check takes seconds
    code = _readme_python().replace('"resnet18"', '"tu-test_resnet"').replace("128", "64")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert (tmp_path / "my_model" / "config.json").is_file()


def _documented_config_keys() -> dict[str, str]:
    """docs/config.md's table rows: dotted key -> the default as written."""
    row = re.compile(r"^\| `([a-z_]+\.[a-z_]+)` \| `([^`]*)` \|", re.MULTILINE)
    return dict(row.findall((ROOT / "docs" / "config.md").read_text(encoding="utf-8")))


def test_the_config_reference_lists_every_key_with_its_default():
    import yaml

    from cvae_seg.config import Config

    def as_yaml(value: object) -> str:
        value = list(value) if isinstance(value, tuple) else value
        return yaml.safe_dump(value, default_flow_style=True).removesuffix("...\n").strip()

    defaults = Config().model_dump()
    expected = {
        f"{section}.{key}": as_yaml(value)
        for section, values in defaults.items()
        for key, value in values.items()
    }
    assert _documented_config_keys() == expected
