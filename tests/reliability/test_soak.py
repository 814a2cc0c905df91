"""The soak as CI runs it: 6 users for half a minute against the real app in a child process.

Asserts behaviour only (no failed request, no lost write, no leak, memory measured); the latency figures are
printed for the log and belong in the README's Reliability section, not in assertions.
"""

from __future__ import annotations

import pytest

from persona_demo.__main__ import main
from persona_demo.reliability.report import format_report
from persona_demo.reliability.soak import SoakConfig, run_soak


def test_six_users_for_half_a_minute(tmp_path):
    report = run_soak(SoakConfig(users=6, minutes=0.5, max_new_tokens=8, workdir=tmp_path))
    text = format_report(report)
    print(text)
    assert report["errors"] == 0, text
    assert report["failures"] == [] and report["leaks"] == []
    assert report["store"]["integrity_check"] == "ok" and report["store"]["lost_writes"] == 0
    assert report["store"]["acknowledged_writes"] >= 6
    exercised = set(report["endpoints"])
    assert {"create_persona", "select_persona", "add_text", "upload_history", "compare"} <= exercised
    assert report["rss_mb"]["start"] > 0 and report["rss_mb"]["end"] > 0
    assert report["app_alive_at_end"]
    assert [line for line in text.splitlines() if "error" in line.lower()] == ["errors: 0"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--users", "0"], "--users"),
        (["--minutes", "-1"], "--minutes"),
        (["--max-new-tokens", "9999"], "tokens"),
    ],
)
def test_soak_refuses_bad_options(capsys, args, message):
    assert main(["soak", *args]) == 2
    assert message in capsys.readouterr().err
