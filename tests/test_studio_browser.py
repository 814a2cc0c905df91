"""End to end in a real headless Chromium (Debian's `chromium`, driven by Python playwright).

Skipped only where no Chromium is installed outside CI; in CI (`CI=true`) a missing browser fails, because
`.ci/run` installs it. Screenshots go to $PERSONA_DEMO_SCREENSHOTS (set it to `assets/screenshots` to refresh
the README's images), else to the test's temp folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Debian's chromium (apt-get install -y chromium); .ci/run installs it")
    pytest.skip("no chromium on this machine (apt-get install -y chromium)", allow_module_level=True)

HOSTILE_NAME = "<img src=x onerror=window.__pwned=1>"
TIMEOUT_MS = 240_000  # generous: a busy 2-core CI machine; not a speed target


@pytest.fixture
def page(running_studio):
    from playwright.sync_api import expect, sync_playwright

    from persona_demo.app.space import wait_for_umap

    assert wait_for_umap(600), "UMAP warm-up did not finish"  # `python app.py` warms it while models load

    expect.set_options(timeout=TIMEOUT_MS)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(running_studio)
        yield page
        browser.close()


def settled_text(locator, polls: int = 600) -> str:
    """The locator's text once streaming stopped changing it (two equal reads a second apart)."""
    previous = None
    for _ in range(polls):
        text = locator.inner_text()
        if text and text == previous:
            return text
        previous = text
        locator.page.wait_for_timeout(1000)
    return previous or ""


def new_text(locator, before: str, polls: int = 600) -> str:
    """The speed line once it differs from `before` and stands alone (no progress timer beside it: the event
    ended)."""
    for _ in range(polls):
        text = locator.inner_text().strip()
        if text != before.strip() and text.startswith("Both columns") and "\n" not in text:
            return text
        locator.page.wait_for_timeout(1000)
    return locator.inner_text()


def shots_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("PERSONA_DEMO_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_create_edit_upload_generate_chat_in_a_browser(page, tmp_path):
    from playwright.sync_api import expect

    shots = shots_dir(tmp_path)
    # A persona with a hostile name: shown as text, runs nothing.
    page.locator("#persona-name textarea, #persona-name input").first.fill(HOSTILE_NAME)
    page.locator("#create").click()
    expect(page.locator("#persona-status")).to_contain_text("0 items")
    assert page.evaluate("window.__pwned") is None

    # Write one text: the status and the map update without a reload.
    page.locator("#new-text textarea").fill("I restore old sailing boats in a shed by the harbour.")
    page.locator("#add-text").click()
    expect(page.locator("#persona-status")).to_contain_text("persona updated: 1 item")
    expect(page.locator("#space-plot")).to_contain_text("this persona")

    # Upload a file: two more items.
    upload = tmp_path / "posts.txt"
    upload.write_text(
        "Varnish needs three thin coats.\n\nThe mast came down in the storm.\n", encoding="utf-8"
    )
    page.locator("#upload input[type=file]").set_input_files(str(upload))
    expect(page.locator("#persona-status")).to_contain_text("persona updated: 3 items")
    expect(page.locator("#space-plot")).to_contain_text("previous position")
    expect(page.locator("#history-table")).to_contain_text("Varnish needs three thin coats.")
    expect(page.locator("#space-plot")).to_contain_text("UMAP")  # replaces the instant PCA map
    page.screenshot(path=str(shots / "studio-persona.png"), full_page=True)

    # Compare: two outputs side by side.
    page.get_by_role("tab", name="Compare").click()
    page.locator("#prompt textarea").fill(
        "The harbour authority will close the old boat shed next spring to build apartments."
    )
    page.locator("#run").click()
    expect(page.locator("#attention")).to_contain_text("attended")
    assert page.locator("#without textarea").input_value().strip()
    assert page.locator("#with textarea").input_value().strip()
    expect(page.locator("#compare-status")).to_contain_text("tokens/s")  # elapsed time and speed
    page.screenshot(path=str(shots / "studio-compare.png"), full_page=True)

    # Chat one turn as the persona.
    page.get_by_role("tab", name="Chat as the persona").click()
    page.locator("#chat-message textarea, #chat-message input").first.fill("What are you working on?")
    page.locator("#chat-send").click()
    expect(page.locator("#chat-persona .bot, #chat-persona [data-testid=bot]").first).to_be_visible()
    expect(page.locator("#chat-plain .bot, #chat-plain [data-testid=bot]").first).to_be_visible()
    assert settled_text(page.locator("#chat-persona")).count("What are you working on?") == 1
    # what the persona side received: both parts, and which of the persona's texts the prompt carried
    expect(page.locator("#chat-parts")).to_contain_text("soft tokens + own texts")
    expect(page.locator("#chat-parts")).to_contain_text("Texts in the prompt")
    expect(page.locator("#chat-parts")).to_contain_text("tokens/s")
    page.screenshot(path=str(shots / "studio-chat.png"), full_page=True)
    assert page.evaluate("window.__pwned") is None


def test_a_newcomer_is_told_what_to_do_and_a_rejected_action_marks_nothing(page, tmp_path):
    """The first screen says how to use the studio and what each plug was shown to do; an empty text or a
    binary upload is refused with one message, and no box, picker or upload zone is left marked "Error"."""
    from playwright.sync_api import expect

    expect(page.locator("#how-to")).to_contain_text("How to use")
    expect(page.locator("#plain-status")).to_contain_text("frozen")
    page.locator("#persona-name textarea, #persona-name input").first.fill("Kai, harbour pilot")
    page.locator("#create").click()
    expect(page.locator("#persona-status")).to_contain_text("0 items")

    page.locator("#add-text").click()  # nothing typed
    expect(page.get_by_text("Write some text first").first).to_be_visible()
    binary = tmp_path / "photo.txt"
    binary.write_bytes(bytes(range(256)) * 8)
    page.locator("#upload input[type=file]").set_input_files(str(binary))
    expect(page.get_by_text("binary file").first).to_be_visible()
    page.wait_for_timeout(1500)  # let the failed events settle
    for box in ("#persona", "#new-text", "#item", "#history-table", "#upload"):
        assert page.locator(box).get_by_text("Error", exact=True).count() == 0, box
    expect(page.locator("#upload")).not_to_contain_text("photo.txt")  # a rejected file does not linger
    page.locator("#new-text textarea").fill("Fog over the pier again; the ferry waited an hour.")
    page.locator("#add-text").click()
    expect(page.locator("#persona-status")).to_contain_text("persona updated: 1 item")

    # Every Compare task: what it expects, what its plug was shown to do, and both outputs.
    page.get_by_role("tab", name="Compare").click()
    inputs = {
        "News headline": "The harbour pilots will strike next week over night shifts.",
        "Paper title": "We study fog prediction for harbour traffic with small sensor networks.",
        "Review rating (1-5)": "The foghorn I bought is loud and sturdy, shipping was slow.",
        "Free prompt": "Write a short post about your week.",
    }
    for label, text in inputs.items():
        page.get_by_label(label, exact=True).check()
        expect(page.locator("#task-note")).not_to_be_empty()
        assert page.locator("#prompt textarea").get_attribute("placeholder")
        page.locator("#prompt textarea").fill(text)
        before = page.locator("#compare-status").inner_text()
        page.locator("#run").click()
        assert "tokens/s" in new_text(page.locator("#compare-status"), before), label  # this run's speed line
        assert page.locator("#with textarea").input_value().strip(), label

    # Chat: an empty message is refused in place; the box stays usable and the next message goes through.
    page.get_by_role("tab", name="Chat as the persona").click()
    page.locator("#chat-send").click()
    expect(page.get_by_text("Type a message first").first).to_be_visible()
    page.wait_for_timeout(1500)
    for box in ("#chat-message", "#chat-persona", "#chat-plain"):
        assert page.locator(box).get_by_text("Error", exact=True).count() == 0, box
    page.locator("#chat-message textarea, #chat-message input").first.fill("How was the fog today?")
    page.locator("#chat-send").click()
    expect(page.locator("#chat-persona")).to_contain_text("How was the fog today?")
    expect(page.locator("#chat-parts")).to_contain_text("tokens/s")

    # Switching persona starts a fresh chat: no earlier conversation under another name.
    page.locator("#persona input").first.click()
    page.get_by_role("option").filter(has_text="Priya").first.click()
    expect(page.locator("#persona-status")).to_contain_text("Priya")
    expect(page.locator("#chat-persona")).not_to_contain_text("How was the fog today?")
