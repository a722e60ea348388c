"""The web UI's files: all shipped in the package, served without a key (they hold no
data), free of HTML injection sinks and of absolute URLs (the UI must work under a prefix)."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest

from llamaswap.web import auth
from llamaswap.web.ui import PAGES, UI_DIR, fragment_location

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(UI_DIR.rglob("*.js"))


def test_every_ui_file_is_in_the_package_data() -> None:
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["llamaswap"]
    files = [p.relative_to(UI_DIR.parent).as_posix() for p in UI_DIR.rglob("*") if p.is_file()]
    assert len(files) >= 15
    missing = [f for f in files if not any(fnmatch.fnmatchcase(f, g) for g in globs)]
    assert missing == []


def test_ui_files_need_no_key_but_the_api_does() -> None:
    assert not auth.needs_key("/ui", b"GET")
    assert not auth.needs_key("/ui/", b"GET")
    assert not auth.needs_key("/ui/js/views/activity.js", b"HEAD")
    assert auth.needs_key("/ui/index.html", b"POST")
    assert auth.needs_key("/uix", b"GET")
    assert auth.needs_key("/api/events", b"GET")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(UI_DIR).as_posix())
def test_scripts_never_parse_html(script: Path) -> None:
    text = script.read_text()
    for sink in ("innerHTML =", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", "DOMParser"):
        assert sink not in text, f"{script.name} uses {sink}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(UI_DIR).as_posix())
def test_scripts_use_relative_urls_only(script: Path) -> None:
    absolute = re.findall(r"""["'`]/(?:api|v1|logs|upstream|running|metrics|ui)\b""",
                          script.read_text())
    assert absolute == [], f"{script.name}: {absolute}"


def test_index_loads_only_relative_files() -> None:
    html = (UI_DIR / "index.html").read_text()
    assert re.findall(r'(?:src|href)="(/|https?:)', html) == []


def test_page_paths_redirect_relatively_to_fragments() -> None:
    assert fragment_location("models", []) == b"./#/models"
    assert fragment_location("models", ["org", "name"]) == b"../../#/models/org/name"
    assert fragment_location("logs", [""]) == b"../#/logs/"
    routes = re.findall(r"^  (\w+): \(\) => import", (UI_DIR / "js" / "main.js").read_text(), re.M)
    assert PAGES - {"performance"} == set(routes) - {"model"}
