"""The studio's named endpoints through gradio_client, against the app served on a free port."""

from __future__ import annotations

import pytest


@pytest.fixture
def client(running_studio):
    from gradio_client import Client

    return Client(running_studio, verbose=False)


def test_named_endpoints_are_documented(client):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {
        "/select_persona",
        "/create_persona",
        "/add_text",
        "/upload_history",
        "/compare",
        "/chat",
    } <= names


def test_create_add_compare_chat_through_the_api(client, tmp_path):
    created = client.predict("API persona", "", api_name="/create_persona")
    pid = created["value"]
    assert any(label.startswith("API persona (0)") for label, _ in created["choices"])
    client.predict(pid, api_name="/select_persona")
    rows, _, status, *_ = client.predict("I sail small boats on cold lakes.", "", api_name="/add_text")
    assert status.startswith("persona updated: 1 item") and rows["data"][0][1].startswith("I sail")
    upload = tmp_path / "more.txt"
    upload.write_text("Reefing early saves the day.\n\nDinghy racing on Sundays.\n", encoding="utf-8")
    from gradio_client import handle_file

    rows, _, status, *_ = client.predict(handle_file(str(upload)), "", api_name="/upload_history")
    assert status.startswith("persona updated: 3 items")
    without, with_plug, _ = client.predict(
        "huffpost_headline", "The lake froze early this year.", 8, 1.0, False, 0.7, api_name="/compare"
    )
    assert without and with_plug
    # the seven arguments API clients were written for; the newer settings take the page's defaults
    _, persona_chat, plain_chat, note = client.predict(
        "Any plans?", [], [], 6, 1.0, False, 0.7, api_name="/chat"
    )
    assert persona_chat[-1]["role"] == "assistant" and plain_chat[-1]["role"] == "assistant"
    assert "soft tokens + own texts" in note and "Reefing early" in note
    # both persona parts switched off: the note says so and lists no texts
    *_, note = client.predict(
        "Any plans?", [], [], 6, 1.0, False, 0.7, 0.9, 1.0, 0, False, False, api_name="/chat"
    )
    assert "persona prompt only" in note and "Texts in the prompt" not in note
    # all fourteen, the last the echo guard: off is accepted, a one-token guard is refused with a message
    everything = ["Any plans?", [], [], 6, 1.0, False, 0.7, 0.9, 1.0, 0, True, True, 2.0]
    assert client.predict(*everything, 0, api_name="/chat")[1][-1]["role"] == "assistant"
    with pytest.raises(Exception, match="no-echo n-gram size must be 0"):
        client.predict(*everything, 1, api_name="/chat")


def test_errors_come_back_as_messages_and_the_app_keeps_serving(client):
    with pytest.raises(Exception, match="Pick a persona"):
        client.predict("text", "", api_name="/add_text")
    empty = client.predict("Nobody yet", "", api_name="/create_persona")["value"]
    client.predict(empty, api_name="/select_persona")
    with pytest.raises(Exception, match="no history"):
        client.predict("free", "Hello", 4, 1.0, False, 0.7, api_name="/compare")
    with pytest.raises(Exception, match="already"):
        client.predict("Nobody yet", "", api_name="/create_persona")
    assert client.predict(1, api_name="/select_persona")[2]  # still serving


def test_sessions_do_not_share_the_selected_persona(running_studio):
    from gradio_client import Client

    alice, bob = Client(running_studio, verbose=False), Client(running_studio, verbose=False)
    pid = alice.predict("Alice's persona", "", api_name="/create_persona")["value"]
    alice.predict(pid, api_name="/select_persona")
    with pytest.raises(Exception, match="Pick a persona"):
        bob.predict("Bob writes into nobody's persona", "", api_name="/add_text")
    alice.predict("Alice's own text.", "", api_name="/add_text")
