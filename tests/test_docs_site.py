"""The documentation site builds in strict mode (no broken link, anchor or API reference), and strict mode bites."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("mkdocs")
pytest.importorskip("material")
pytest.importorskip("mkdocstrings_handlers.python")

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT / "src")}


def build(config: Path, site: Path) -> tuple[int, str]:
    """`mkdocs build --strict`; returns its exit status and its log (stdout and stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=config.parent,
        timeout=300,
    )
    return done.returncode, done.stdout + done.stderr


def warnings_in(log: str) -> list[str]:
    return [line for line in log.splitlines() if re.match(r"\s*(WARNING|ERROR)\b", line)]


def copy_of_the_docs(tmp_path: Path) -> Path:
    """mkdocs.yml and docs/ copied into tmp_path, src/ linked: a site that can be broken without touching ours."""
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    (tmp_path / "src").symlink_to(ROOT / "src", target_is_directory=True)
    return tmp_path / "mkdocs.yml"


def test_the_site_builds_in_strict_mode_without_a_warning(tmp_path):
    status, log = build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert status == 0, log
    assert not warnings_in(log), "\n".join(warnings_in(log))
    for page in ("index.html", "extraction/index.html", "api/modeling/index.html", "faq/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    # The API reference is rendered from the docstrings, not left as a `:::` line.
    api = (tmp_path / "site" / "api" / "modeling" / "index.html").read_text()
    assert "MarlinForPreTraining" in api and ":::" not in api


@pytest.mark.parametrize(
    "injected, expected",
    [
        ("See [the missing page](no_such_page.md).", "no_such_page.md"),
        ("See [the missing section](pretraining.md#no-such-section).", "no-such-section"),
        ("::: marlin_transformers.nonexistent", "marlin_transformers.nonexistent"),
    ],
    ids=["broken-link", "broken-anchor", "broken-api-reference"],
)
def test_strict_mode_fails_on_a_broken_link_anchor_or_reference(tmp_path, injected, expected):
    config = copy_of_the_docs(tmp_path)
    page = tmp_path / "docs" / "faq.md"
    page.write_text(page.read_text() + f"\n{injected}\n")
    status, log = build(config, tmp_path / "site")
    assert status != 0, f"the strict build passed with {injected!r} in faq.md:\n{log}"
    assert expected in log, log


def test_marlin_docs_build_writes_the_site(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "marlin_transformers.cli", "docs", "--build", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out" / "index.html").is_file()


def test_marlin_docs_says_in_one_line_what_is_missing(tmp_path, monkeypatch, capsys):
    from marlin_transformers import cli
    from marlin_transformers.cli import apps

    monkeypatch.setattr(apps, "DOCS_CONFIG", tmp_path / "mkdocs.yml")  # as in a wheel install: no checkout around
    assert cli.main(["docs", "--build", str(tmp_path / "out")]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("marlin docs: error: no mkdocs.yml") and 'pip install -e ".[docs]"' in line

    monkeypatch.setattr(apps, "DOCS_CONFIG", ROOT / "mkdocs.yml")
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *args: None)  # the docs extra not installed
    assert cli.main(["docs", "--build", str(tmp_path / "out")]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        'marlin docs: error: mkdocs, mkdocs-material, mkdocstrings[python] not installed: pip install -e ".[docs]"'
    )
    assert not (tmp_path / "out").exists()


def nav_pages(entry) -> list[str]:
    if isinstance(entry, str):
        return [entry]
    if isinstance(entry, dict):
        return [page for value in entry.values() for page in nav_pages(value)]
    return [page for item in entry for page in nav_pages(item)]


def test_the_nav_lists_every_page():
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)  # pymdownx's hooks
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)
    docs = ROOT / config["docs_dir"]
    listed = nav_pages(config["nav"])
    pages = sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*.md") if "scripts" not in p.parts)
    assert sorted(listed) == pages, f"not in the nav: {set(pages) - set(listed)}; missing: {set(listed) - set(pages)}"
    assert len(listed) == len(set(listed)), "a page is listed twice"
