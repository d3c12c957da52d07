"""The built wheel carries what an installed ttc_graph needs outside a source checkout: the presets of
``ttc serve`` (the shipped specs, with the compute-optimal example's table) and ``py.typed``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ROOT / "ttc_graph" / "presets"

PROBE = """
import json, ttc_graph
from ttc_graph.server.presets import load_presets
presets = load_presets()
kinds = {n: p.spec.kind for n, p in presets.items()}
print(json.dumps({"file": ttc_graph.__file__, "presets": sorted(presets), "kinds": kinds}))
"""


def test_the_wheel_ships_the_presets_and_an_installed_package_loads_them(tmp_path: Path) -> None:
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    # No network: the build uses this environment's setuptools, and no dependency is fetched.
    subprocess.run([*pip, "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-w", str(wheels)], check=True)
    (wheel,) = wheels.glob("ttc_graph-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.name for p in PRESETS.iterdir() if p.suffix in (".yaml", ".json"))
    assert shipped and all(f"ttc_graph/presets/{name}" in names for name in shipped), sorted(names)
    assert "ttc_graph/py.typed" in names

    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert Path(result["file"]).is_relative_to(site)  # the installed copy, not this checkout
    assert result["presets"] == sorted(p.stem for p in PRESETS.glob("*.yaml"))
    assert result["kinds"]["compute_optimal"] == "compute_optimal"  # its table resolved inside the install
