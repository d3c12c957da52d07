"""One real llama.cpp server on 127.0.0.1 for the whole test run (the embedded default model)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ttc_graph.endpoints import OpenAIEndpoint
from ttc_graph.local import LocalModelServer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def local_server() -> Iterator[LocalModelServer]:
    with LocalModelServer(parallel=4) as server:
        yield server


@pytest.fixture()
def endpoint(local_server: LocalModelServer) -> OpenAIEndpoint:
    return local_server.endpoint()
