"""A virtualenv for plug-in tests: its own site-packages, seeing this one's packages (agent-fleet
and its dependencies) through a `.pth` line, so nothing is downloaded."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path


def venv_seeing_ours(root: Path) -> tuple[Path, Path]:
    """A new virtualenv under `root`: (its python, its site-packages directory)."""
    venv = root / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    # addsitedir, not a bare path: this venv's own .pth files (the editable agent-fleet) count.
    (Path(site) / "agent_fleet_base.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    return python, Path(site)
