"""The `generate` CLI as a user runs it, and the app's compare endpoint over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from persona_demo.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def history_file(tmp_path, bike_history) -> Path:
    path = tmp_path / "persona.txt"
    path.write_text("\n\n".join(bike_history) + "\n", encoding="utf-8")
    return path


def test_generate_json_prints_two_different_outputs(history_file):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "persona_demo", "generate", "--history", str(history_file)]
    cmd += ["--prompt", "Write a short post about your weekend.", "--json", "--max-new-tokens", "16"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["with_plug"].strip() and result["without_plug"].strip()
    assert result["with_plug"] != result["without_plug"]


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize(
    ("content", "prompt", "message"),
    [
        ("", "Hello", "empty"),
        ("A text.", "   ", "prompt is empty"),
        ("A text.", "word " * 9000, "too long"),
    ],
)
def test_generate_bad_input_gives_a_message_and_exit_2(tmp_path, capsys, content, prompt, message):
    path = tmp_path / "h.txt"
    path.write_text(content, encoding="utf-8")
    code, err = run_cli(["generate", "--history", str(path), "--prompt", prompt], capsys)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_generate_refuses_a_plug_for_another_model(tmp_path, capsys, history_file):
    bad = tmp_path / "other.safetensors"
    bad.write_bytes(b"garbage")
    code, err = run_cli(
        ["generate", "--history", str(history_file), "--prompt", "Hi", "--plug", str(bad)], capsys
    )
    assert code == 2 and "not a readable safetensors file" in err


def test_unknown_plug_name_lists_the_available_ones(capsys, history_file):
    code, err = run_cli(
        ["generate", "--history", str(history_file), "--prompt", "Hi", "--plug", "nope"], capsys
    )
    assert code == 2 and "No plug named 'nope'" in err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_compare_endpoint_serves_both_outputs(engine, tmp_path):
    from gradio_client import Client

    from persona_demo.app.launch import build_demo
    from persona_demo.data.seed import ensure_seed_personas
    from persona_demo.data.store import PersonaStore

    store = PersonaStore(tmp_path / "personas.db")
    assert ensure_seed_personas(store) >= 5
    first = store.list_personas()[0]
    port = free_port()
    demo = build_demo(engine, store).queue()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        loaded = client.predict(first.name, api_name="/load_persona")
        assert loaded.count("\n\n") == first.item_count - 1
        history = "I ride my mountain bike every weekend.\n\nTubeless tyres changed how I climb."
        without, with_plug, attended = client.predict(history, "Write a post.", 12, 1.0, api_name="/compare")
        assert without and with_plug and without != with_plug
        assert "mountain bike" in attended
        with pytest.raises(Exception, match="no history"):
            client.predict("", "Write a post.", 12, 1.0, api_name="/compare")
    finally:
        demo.close()
