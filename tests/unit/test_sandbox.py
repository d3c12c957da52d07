"""The program sandbox: restricted interpreter in a worker process with CPU, memory and output limits."""

from __future__ import annotations

import pytest

from ttc_graph.errors import ConfigurationError
from ttc_graph.verifiers.sandbox import ProgramResult, Sandbox


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(cpu_seconds=1, memory_mb=128, max_output=200, workers=2) as box:
        yield box


def test_a_normal_program_gives_its_answer_variable(sandbox: Sandbox) -> None:
    result = sandbox.run("april = 48\nmay = april / 2\nanswer = april + may")
    assert result == ProgramResult(value="72", output="", truncated=False)
    assert result.ok


def test_printed_output_and_functions(sandbox: Sandbox) -> None:
    result = sandbox.run("def f(a):\n    return a * 2\nprint('total:', f(4))")
    assert result.ok
    assert result.value == "total: 8"
    assert result.output == "total: 8\n"


def test_the_last_expression_is_the_value_without_answer_or_print(sandbox: Sandbox) -> None:
    assert sandbox.run("x = 3\nx * 7").value == "21"


def test_math_imports_bind_safe_functions(sandbox: Sandbox) -> None:
    assert sandbox.run("import math\nanswer = math.ceil(2.5)").value == "3"
    assert sandbox.run("from math import floor\nanswer = floor(2.5)").value == "2"


@pytest.mark.parametrize(
    "code",
    [
        "import os\nos.system('echo hi')",
        "import math, os\nanswer = 1",
        "from os import path\nanswer = 1",
        "from math import __loader__\nanswer = 1",
        "import subprocess",
    ],
)
def test_imports_are_forbidden(sandbox: Sandbox, code: str) -> None:
    result = sandbox.run(code)
    assert result.error == "forbidden"
    assert result.value is None


@pytest.mark.parametrize(
    "code",
    [
        "open('/etc/passwd').read()",
        "f = open('/tmp/ttc_sandbox_probe', 'w')\nf.write('x')",
        "__import__('os').system('echo hi')",
        "().__class__.__bases__[0].__subclasses__()",
        "answer = (1).__class__",
        "getattr(1, '__class__')",
        "eval('1 + 1')",
        "exec('x = 1')",
        "compile('1', 'f', 'eval')",
        "'{0.__class__}'.format(1)",
        "globals()",
        "import math\nanswer = math.__dict__",
    ],
)
def test_files_evaluation_and_dunders_are_forbidden(sandbox: Sandbox, code: str) -> None:
    result = sandbox.run(code)
    assert result.error == "forbidden", result
    assert result.value is None


def test_an_infinite_loop_is_ended_by_the_cpu_limit(sandbox: Sandbox) -> None:
    result = sandbox.run("while True:\n    pass")
    assert result.error == "timeout"
    assert sandbox.run("answer = 5").value == "5"  # a fresh worker takes over


def test_a_c_level_loop_is_ended_by_the_cpu_limit(sandbox: Sandbox) -> None:
    assert sandbox.run("answer = sum(range(10**13))").error == "timeout"


@pytest.mark.parametrize(
    "code",
    ["x = [0] * 10**9", "x = []\nwhile True:\n    x.append([0] * 100000)", "x = bytearray(10**10)"],
)
def test_unbounded_allocation_is_stopped_by_the_memory_limit(sandbox: Sandbox, code: str) -> None:
    result = sandbox.run(code)
    assert result.error == "memory", result
    assert sandbox.run("answer = 6").value == "6"


def test_huge_numbers_and_strings_are_refused(sandbox: Sandbox) -> None:
    assert sandbox.run("x = 2 ** 10 ** 10").error == "runtime"
    assert sandbox.run("x = 'a' * 10**9").error == "runtime"


def test_huge_output_is_truncated(sandbox: Sandbox) -> None:
    # 5,000 lines (about 24,000 characters) is far past the 200-character cap and takes ~0.05 s of CPU,
    # well inside the 1 s limit even on a loaded machine (100,000 lines took ~1 s and could hit the limit).
    result = sandbox.run("for i in range(5000):\n    print(i)\nanswer = 7")
    assert result.ok
    assert result.truncated
    assert len(result.output) == 200
    assert result.value == "7"


def test_printing_forever_ends_by_the_cpu_limit(sandbox: Sandbox) -> None:
    assert sandbox.run("while True:\n    print('spam' * 1000)").error == "timeout"


def test_syntax_and_runtime_errors_are_typed(sandbox: Sandbox) -> None:
    assert sandbox.run("x = (").error == "syntax"
    assert sandbox.run("x = 1 / 0").error == "runtime"
    assert sandbox.run("   ").error == "syntax"
    assert "ZeroDivisionError" in sandbox.run("x = 1 / 0").message


def test_run_many_keeps_order_across_workers(sandbox: Sandbox) -> None:
    codes = [f"answer = {i} * 2" for i in range(10)] + ["while True:\n    pass", "answer = 'done'"]
    results = sandbox.run_many(codes)
    assert [r.value for r in results[:10]] == [str(i * 2) for i in range(10)]
    assert results[10].error == "timeout"
    assert results[11].value == "done"


async def test_arun_many(sandbox: Sandbox) -> None:
    results = await sandbox.arun_many(["answer = 1", "answer = 2.0", "answer = 2.5"])
    assert [r.value for r in results] == ["1", "2", "2.5"]


def test_no_file_is_written(sandbox: Sandbox, tmp_path) -> None:
    target = tmp_path / "probe.txt"
    sandbox.run(f"f = open({str(target)!r}, 'w')\nf.write('x')")
    assert not target.exists()


@pytest.mark.parametrize(
    "kwargs",
    [{"cpu_seconds": 0}, {"memory_mb": 1}, {"max_output": 0}, {"workers": 0}, {"wall_seconds": -1}],
)
def test_bad_settings_are_refused(kwargs) -> None:
    with pytest.raises(ConfigurationError):
        Sandbox(**kwargs)


def test_close_stops_workers() -> None:
    box = Sandbox(workers=1)
    assert box.run("answer = 1").value == "1"
    worker = box._idle[0]
    box.close()
    assert not worker.alive()
