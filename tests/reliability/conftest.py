"""Fixtures for the reliability suite: the studio served exactly as `app.py` serves it (launch_options)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import free_port


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every reliability test serves the real app under load or faults: all of them are `slow`."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def serve(engine, studio_store) -> Iterator[Callable[..., str]]:
    """serve(auth=None) -> URL: the real page, store and models on a free loopback port, in this process."""
    from persona_demo.app.launch import build_demo, launch_options

    demos = []

    def start(auth: list[tuple[str, str]] | None = None) -> str:
        port = free_port()
        demo = build_demo(engine, studio_store).queue(default_concurrency_limit=4)
        demo.launch(prevent_thread_lock=True, quiet=True, **launch_options("127.0.0.1", port, auth))
        demos.append(demo)
        return f"http://127.0.0.1:{port}"

    yield start
    for demo in demos:
        demo.close()
