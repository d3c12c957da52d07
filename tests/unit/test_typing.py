"""Type checkers see ttc_graph's types (it ships ``py.typed``), and the package's import layering holds."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "ttc_graph"

SNIPPET = """
from langgraph.checkpoint.memory import InMemorySaver

from ttc_graph.budget import Budget
from ttc_graph import create_beam_search, create_best_of_n, create_dvts, create_revisions
from ttc_graph.compute_optimal import PolicyTable, create_compute_optimal
from ttc_graph.testing import ScriptedEndpoint


def score(question: str, solution: str) -> float:
    return 0.5


def build(policy: ScriptedEndpoint, table: PolicyTable) -> None:
    reveal_type(create_best_of_n(policy, n=4, selection="majority").compile())
    reveal_type(create_beam_search(policy, score, n=4).compile(checkpointer=InMemorySaver(), name="search"))
    reveal_type(create_dvts(policy, score, n=4).compile())
    reveal_type(create_revisions(policy, score, n=4, chain_length=2).compile())
    reveal_type(create_compute_optimal(policy, score, table, budget=Budget(generations=4)).compile())
    create_best_of_n(policy, n="4")
"""

# Dependencies the check does not need to analyse (their types show as Any inside ours); keeps it a few seconds.
SKIP = (
    "langchain_core.*,langsmith.*,openai.*,pydantic.*,pydantic_core.*,httpx.*,tenacity.*,yaml.*,math_verify.*,"
    "rich.*,typer.*,numpy.*,matplotlib.*,sympy.*,xxhash.*,ormsgpack.*"
)


def mypy_cache() -> Path:
    base = os.environ.get("TTC_CACHE_DIR")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "ttc_graph") / "mypy"


def test_py_typed_ships_with_the_package() -> None:
    assert (PACKAGE / "py.typed").is_file()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["ttc_graph"]
    assert any(dep.startswith("mypy") for dep in pyproject["project"]["optional-dependencies"]["dev"])


def test_a_type_checker_sees_the_typed_compiled_graph(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="mypy is in the dev extra")
    # Install the package the way a user has it (a directory on the path, not this checkout's sources), so mypy
    # applies PEP 561: without py.typed every ttc_graph type would be Any.
    site = tmp_path / "site"
    site.mkdir()
    (site / "ttc_graph").symlink_to(PACKAGE, target_is_directory=True)
    (tmp_path / "user.py").write_text(textwrap.dedent(SNIPPET))
    (tmp_path / "mypy.ini").write_text(f"[mypy]\nfollow_imports = silent\n\n[mypy-{SKIP}]\nfollow_imports = skip\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    cmd = [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--cache-dir", str(mypy_cache()), "user.py"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    lines = result.stdout.splitlines()
    assert not [line for line in lines if "import-untyped" in line or "import-not-found" in line], result.stdout
    revealed = [line.split('Revealed type is "', 1)[1] for line in lines if "Revealed type is" in line]
    assert len(revealed) == 5, result.stdout + result.stderr
    for kind in revealed[:4]:
        assert kind.startswith("langgraph.graph.state.CompiledStateGraph[TypedDict(ttc_graph.state.TTCState, ")
        assert "ttc_graph.state.TTCContext, TypedDict(ttc_graph.state.TTCInput" in kind
        assert "TypedDict(ttc_graph.state.TTCOutput" in kind
    assert revealed[4].startswith("langgraph.graph.state.CompiledStateGraph[TypedDict(ttc_graph.compute_optimal")
    # and it checks what users pass: n must be an int
    errors = [line for line in lines if ": error:" in line]
    assert len(errors) == 1 and '"n"' in errors[0] and "arg-type" in errors[0], result.stdout


def test_specs_and_compute_optimal_import_in_either_order_without_a_cycle() -> None:
    # specs builds a compute_optimal spec through the builder compute_optimal registers; specs never imports it
    for first, second in (("ttc_graph.specs", "ttc_graph.compute_optimal"), ("ttc_graph.compute_optimal", "")):
        code = (
            f"import sys, {first}\n"
            "from ttc_graph.specs.build import GRAPH_BUILDERS\n"
            "assert 'compute_optimal' in GRAPH_BUILDERS, GRAPH_BUILDERS\n" + (f"import {second}\n" if second else "")
        )
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
    imports = [
        line
        for path in (PACKAGE / "specs").glob("*.py")
        for line in path.read_text().splitlines()
        if line.strip().startswith(("from ttc_graph.compute_optimal", "import ttc_graph.compute_optimal"))
    ]
    assert imports == []
