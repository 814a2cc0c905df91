"""The documented API (docs/studio.md) against the running studio's own API description (gradio's `/info`):
the documented argument names, counts, order and defaults, each checked against the app."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs" / "studio.md"


def api_section() -> str:
    text = DOCS.read_text(encoding="utf-8")
    start = text.index("## API")
    return text[start : text.index("\n## ", start)]


def documented_calls(section: str) -> dict[str, tuple[int, int]]:
    """Per endpoint in the documented example code: (positional arguments, values unpacked from the result)."""
    code = section.split("```python", 1)[1].split("```", 1)[0]
    calls: dict[str, tuple[int, int]] = {}
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            names = {k.arg: k.value for k in node.value.keywords}
            target = node.targets[0]
            if "api_name" in names and isinstance(target, ast.Tuple):
                calls[ast.literal_eval(names["api_name"])] = (len(node.value.args), len(target.elts))
    return calls


def backticked(text: str) -> list[str]:
    return re.findall(r"`(\w+)`", text)


@pytest.fixture
def endpoints(running_studio) -> dict:
    from gradio_client import Client

    client = Client(running_studio, verbose=False)
    return client.view_api(return_format="dict", print_info=False)["named_endpoints"]


def test_the_docs_describe_compare_and_chat_as_the_app_serves_them(endpoints):
    section = " ".join(api_section().split())  # one line: sentences wrap anywhere
    calls = documented_calls(api_section())
    optional = re.search(r"seven optional settings, in this order: (.*?); calls that leave them out", section)
    assert optional, "docs/studio.md no longer lists the optional settings"
    settings = re.findall(r"`(\w+)` \(([^);]+)", optional.group(1))
    for endpoint in ("/compare", "/chat"):
        first = re.search(rf"`{endpoint}` takes \w+ (?:arguments )?\(([^)]*)\) and returns (\d+)", section)
        assert first, f"docs/studio.md no longer says what {endpoint} takes"
        names = backticked(first.group(1))
        params = endpoints[endpoint]["parameters"]
        served = [p["parameter_name"] for p in params]
        assert served == names + [name for name, _ in settings], endpoint
        assert int(first.group(2)) == len(endpoints[endpoint]["returns"]), endpoint
        positional, unpacked = calls[endpoint]
        assert positional == len(names), f"docs/studio.md's {endpoint} example passes {positional} arguments"
        assert unpacked == len(endpoints[endpoint]["returns"]), endpoint
        defaults = {p["parameter_name"]: p["parameter_default"] for p in params}
        for name, documented in settings:
            served_default = defaults[name]
            if isinstance(served_default, bool):
                assert documented.strip() == str(served_default).lower(), name
            else:
                assert float(documented) == pytest.approx(float(served_default)), name
