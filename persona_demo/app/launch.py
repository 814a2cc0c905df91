"""Start the studio: parse options (flags ← env ← defaults), open the store, load the models, serve.

Binds to 127.0.0.1 unless told otherwise: the page can read and change every stored persona.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..config import StudioSettings, add_settings_arguments, settings_from_args

os.environ.setdefault("HF_HUB_OFFLINE", "0" if os.environ.get("SPACE_ID") else "1")  # Spaces: online
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

log = logging.getLogger(__name__)


def build_demo(engine, store, plugs_dir=None):
    """The studio page for an engine and a `PersonaStore` (used by tests and `main`)."""
    from .service import StudioService
    from .ui import build_studio

    service = StudioService(engine, store, plugs_dir)
    log.info("studio: %s", service.describe())  # the plugs the page offers (the engine log shows none yet)
    return build_studio(service, engine.settings.generation_concurrency)


def launch_options(host: str, port: int, auth: list[tuple[str, str]] | None) -> dict:
    """Keyword arguments for `Blocks.launch`, shared by `main` and the tests that must match it.

    `max_file_size`: gradio refuses a bigger upload before it reaches disk or our parser (same cap as
    `IngestLimits.max_bytes`).
    """
    from ..data.ingest import IngestLimits

    return {
        "server_name": host,
        "server_port": port,
        "auth": auth,
        "show_error": False,
        "max_file_size": IngestLimits().max_bytes,
    }


def parse_auth(value: str | None) -> list[tuple[str, str]] | None:
    """`user:password[,user2:password2]` → gradio's auth list; None = no login."""
    from ..errors import PersonaDemoError

    if not value:
        return None
    pairs = []
    for part in value.split(","):
        user, sep, password = part.partition(":")
        if not sep or not user.strip() or not password:
            raise PersonaDemoError("--auth must look like user:password (several separated by commas)")
        pairs.append((user.strip(), password))
    return pairs


def parser() -> argparse.ArgumentParser:
    """The studio's flags; each default is its `PERSONA_DEMO_*` variable (`StudioSettings`), else the built-in."""
    studio = StudioSettings.from_env()
    p = argparse.ArgumentParser(description="Persona Studio: a frozen LLM personalized by a Persona-Plug")
    p.add_argument("--host", default=studio.host, help="address to bind (env PERSONA_DEMO_HOST)")
    p.add_argument("--port", type=int, default=studio.port, help="env PERSONA_DEMO_PORT")
    p.add_argument("--db", help="persona database file (env PERSONA_DEMO_DB)")
    p.add_argument(
        "--plug", default=studio.plug or None, help="plug for free prompts and chat (env PERSONA_DEMO_PLUG)"
    )
    p.add_argument(
        "--auth", default=studio.auth or None, help="user:password to require a login (env PERSONA_DEMO_AUTH)"
    )
    add_settings_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    from ..data.seed import ensure_seed_personas
    from ..data.store import PersonaStore
    from ..engine.checkpoint import resolve_plug_path
    from ..engine.engine import PersonaEngine
    from ..engine.hardware import bf16_speedups
    from ..engine.models import resolve_device
    from ..errors import PersonaDemoError
    from .space import warm_umap

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = parser().parse_args(argv)
        auth = parse_auth(args.auth)
        settings = settings_from_args(args)
        if resolve_device(settings).type == "cpu":
            bf16_speedups()  # time the CPU while the process is quiet: the warm-up thread would distort it
        warm_umap()  # numba compiles while the models load
        store = PersonaStore(args.db)
        ensure_seed_personas(store)  # first start: example personas, so the demo is alive at once
        plug_path = resolve_plug_path(args.plug, settings)
        engine = PersonaEngine.from_settings(settings, plug_path=plug_path, cache=store.embedding_cache)
        demo = build_demo(engine, store, settings.plugs_dir)
    except PersonaDemoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info("Persona Studio on http://%s:%s", args.host, args.port)
    demo.queue(default_concurrency_limit=4).launch(**launch_options(args.host, args.port, auth))
    return 0
