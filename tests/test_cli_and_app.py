"""The `generate` CLI as a user runs it, and the app's compare endpoint over HTTP."""

from __future__ import annotations

import json
import os
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
