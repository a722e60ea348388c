"""`pip install .` and `pip install -e .` both make `twistd --help` list llamaswap.

Each case builds a fresh virtual environment (no system site-packages, so nothing installed
on this machine can stand in for the real thing) and runs its own twistd.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("editable", [False, True], ids=["pip-install", "pip-install-e"])
def test_twistd_lists_the_plugin_after_install(tmp_path: Path, editable: bool) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
           "--disable-pip-version-check"]
    target = ["-e", str(REPO)] if editable else [str(REPO)]
    subprocess.run([*pip, *target], check=True, cwd=tmp_path, timeout=600)
    result = subprocess.run([str(venv / "bin" / "twistd"), "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert "llamaswap" in result.stdout
    # The demo model server used by config/example.yaml is installed beside twistd.
    assert (venv / "bin" / "llamaswap-demo").exists()


def test_every_package_of_llamaswap_is_in_the_wheel() -> None:
    """pyproject.toml lists packages by name: a new subpackage left out of the list would be
    missing from `pip install .` (the editable install hides that), so list them all."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])
    found = {".".join(init.parent.relative_to(REPO).parts)
             for init in (REPO / "llamaswap").rglob("__init__.py")}
    assert found and found <= listed, sorted(found - listed)
