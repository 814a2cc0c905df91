"""End to end in a real headless Chromium (Debian's `chromium`, driven by Python playwright).

Skipped only where no Chromium is installed outside CI; in CI (`CI=true`) a missing browser fails, because
`.ci/run` installs it. Screenshots go to $PERSONA_DEMO_SCREENSHOTS (set it to `assets/screenshots` to refresh
the README's images), else to the test's temp folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

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
        # the page load selects the example persona: act only after it did, or it would undo a quick action
        expect(page.locator("#persona-name textarea, #persona-name input").first).to_have_value(
            re.compile(r"\S")
        )
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


MAP_STATE = """() => {
    const plot = document.querySelector('#space-plot .js-plotly-plot');
    if (!plot || !plot._fullLayout) return null;
    const star = plot.data.find(t => t.name === 'this persona');
    const others = plot.data.find(t => t.name === 'personas');
    return {axes: [plot._fullLayout.xaxis.range, plot._fullLayout.yaxis.range],
            star: star ? String([star.x[0], star.y[0]]) : null,
            others: others ? [Array.from(others.x), Array.from(others.y)] : null};
}"""
"""The map as drawn: its axis ranges, the current persona's star and the other personas' points."""


def map_state(page) -> dict:
    return page.evaluate(MAP_STATE)


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
    page.get_by_role("tab", name="Persona & history").click()  # a first visit opens on Compare
    expect(page.locator("#persona-status")).to_contain_text(
        ": 0 items"
    )  # not the example persona's "10 items"
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

    # One more text: the star moves, the axes and every other persona's point stay where they were drawn.
    before = map_state(page)
    page.locator("#new-text textarea").fill("Sanded the keel all afternoon; the shed smells of cedar.")
    page.locator("#add-text").click()
    expect(page.locator("#persona-status")).to_contain_text("persona updated: 4 items")
    page.wait_for_function(f"({MAP_STATE})()?.star !== {json.dumps(before['star'])}", timeout=TIMEOUT_MS)
    after = map_state(page)
    assert after["others"] == before["others"]
    (x0, x1), (y0, y1) = before["axes"]
    x, y = (float(v) for v in after["star"].split(","))
    if x0 <= x <= x1 and y0 <= y <= y1:  # the axes grow only to show a point that left them
        assert after["axes"] == before["axes"]

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

    expect(page.locator("#how-to")).to_contain_text("Try it")
    page.get_by_text("technical details").click()
    expect(page.locator("#plain-status")).to_contain_text("frozen")
    page.locator("#persona-name textarea, #persona-name input").first.fill("Kai, harbour pilot")
    page.locator("#create").click()
    page.get_by_role("tab", name="Persona & history").click()
    expect(page.locator("#persona-status")).to_contain_text(
        ": 0 items"
    )  # not the example persona's "10 items"

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


QUOTED = '"The lamp is lit," she said, and the fog rolled in over the rocks.'
COMPARE_AREAS = ("#without textarea", "#with textarea")


def long_text(sentences: int = 240) -> str:
    """About 18,000 characters of distinct sentences in paragraphs: more than three items' worth."""
    paragraphs = [
        " ".join(
            f"Night {p * 6 + s}: the beam turned {p * 6 + s + 2} times a minute while gulls slept on rail {s}."
            for s in range(6)
        )
        for p in range(sentences // 6)
    ]
    return "\n\n".join(paragraphs)


def pick_persona(page, name: str) -> None:
    page.locator("#persona input").first.click()
    page.get_by_role("option").filter(has_text=name).first.click()


def assert_compare_is_empty(page, marker: str) -> None:
    """Nothing of an earlier answer: empty columns, no chart, no speed line, and not the marker text."""
    from playwright.sync_api import expect

    for box in COMPARE_AREAS:
        expect(page.locator(box)).to_have_value("")
    expect(page.locator("#attention")).not_to_contain_text("attended")
    expect(page.locator("#attention")).not_to_contain_text(marker)
    expect(page.locator("#compare-status")).not_to_contain_text("tokens/s")


def test_first_visit_runs_an_example_and_outputs_belong_to_the_selected_persona(page, tmp_path, studio_store):
    """A first visit opens on an example persona and input (one click runs
    it, and the top says in plain words what the page shows); a long text is split, not cut; a rejected upload
    is cleared; the attention chart shows quotes as quotes; switching to another persona and deleting one
    leave nothing of its answer on the page."""
    from playwright.sync_api import expect

    top = page.locator("#how-to")
    expect(top).to_contain_text("What you see")
    for jargon in ("frozen", "P_u", "UMAP (cosine)", "task adaptation"):
        assert jargon not in top.inner_text(), jargon
    expect(page.locator("#persona input").first).to_have_value(re.compile("Marguerite"))
    assert page.locator("#prompt textarea").input_value().strip()  # the example input, ready
    page.locator("#run").click()  # the one click
    expect(page.locator("#compare-status")).to_contain_text("Writing…")  # the time, while it runs
    expect(page.locator("#compare-status")).to_contain_text("tokens/s")
    assert page.locator("#with textarea").input_value().strip()
    page.get_by_text("technical details").click()  # the technical words moved here
    expect(page.locator("#plain-status")).to_contain_text("frozen")

    # Persona A: a text with quotes, a 12,000-character text, a rejected upload.
    page.locator("#persona-name textarea, #persona-name input").first.fill("Ada, lighthouse keeper")
    page.locator("#create").click()
    assert_compare_is_empty(page, "Marguerite")  # a new persona starts with an empty Compare panel
    page.get_by_role("tab", name="Persona & history").click()
    status = page.locator("#persona-status")
    expect(status).to_contain_text("Ada, lighthouse keeper: 0 items")
    page.locator("#new-text textarea").fill(QUOTED)
    page.locator("#add-text").click()
    expect(status).to_contain_text("persona updated: 1 item")
    typed = long_text()  # 17,822 characters: four items of at most 5,000
    page.locator("#new-text textarea").fill(typed)
    page.locator("#add-text").click()
    expect(page.get_by_text("That text was long: added as 4 items").first).to_be_visible()
    expect(status).to_contain_text("persona updated: 5 items")
    pid = studio_store.find_persona("Ada, lighthouse keeper")
    parts = [item.text for item in studio_store.list_items(pid)][1:]
    assert all(len(part) <= 5_000 for part in parts)
    assert re.sub(r"\s", "", "".join(parts)) == re.sub(r"\s", "", typed)  # every character, in order
    binary = tmp_path / "photo.txt"
    binary.write_bytes(bytes(range(256)) * 8)
    page.locator("#upload input[type=file]").set_input_files(str(binary))
    expect(page.get_by_text("binary file").first).to_be_visible()
    expect(page.locator("#upload")).not_to_contain_text("photo")  # a rejected upload is cleared

    # A's answer (the rating task scores in one pass); its chart quotes the quoted text as written.
    page.get_by_role("tab", name="Compare").click()
    page.get_by_label("Review rating (1-5)", exact=True).check()
    page.locator("#prompt textarea").fill("The foghorn is loud and sturdy; shipping was slow.")
    page.locator("#run").click()
    expect(page.locator("#attention")).to_contain_text("attended")
    expect(page.locator("#attention")).to_contain_text('"The lamp is lit,"')
    expect(page.locator("#attention")).not_to_contain_text("&quot;")

    # Switching to B empties every output area of A's.
    pick_persona(page, "Priya")
    expect(page.locator("#persona-name textarea, #persona-name input").first).to_have_value(
        re.compile("Priya")
    )
    assert page.locator("#with textarea").input_value() == ""  # already when the new name shows, not later
    assert_compare_is_empty(page, "The lamp is lit")

    # Back to A, a new answer, then delete A: nothing of A's is left.
    pick_persona(page, "Ada")
    expect(page.locator("#persona-name textarea, #persona-name input").first).to_have_value(re.compile("Ada"))
    page.locator("#run").click()
    expect(page.locator("#attention")).to_contain_text("The lamp is lit")
    page.locator("#delete").click()
    page.locator("#confirm-delete").click()
    expect(page.locator("#persona input").first).to_have_value("")
    assert_compare_is_empty(page, "The lamp is lit")
    page.get_by_role("tab", name="Persona & history").click()
    expect(page.locator("#persona-status")).to_have_text("Pick or create a persona.")
    expect(page.locator("#history-table")).not_to_contain_text("lamp")
    expect(page.locator("#upload")).not_to_contain_text("photo")
    page.screenshot(path=str(shots_dir(tmp_path) / "studio-after-delete.png"), full_page=True)


def overflowing(page, scope: str) -> list[str]:
    """Visible labels, texts and inputs under `scope` whose content is wider than their box (squashed)."""
    return page.evaluate(
        """scope => [...document.querySelectorAll(`${scope} label, ${scope} span, ${scope} input`)]
            .filter(e => e.offsetParent !== null && e.type !== 'range' && e.scrollWidth > e.clientWidth + 1)
            .map(e => `${e.tagName} ${(e.innerText || e.value || '').slice(0, 40)}: ${e.scrollWidth} > ${e.clientWidth}`)""",
        scope,
    )


def test_labels_titles_and_model_text_at_1280_px(page, tmp_path):
    """At 1280 px no setting label or slider number is squashed, the map's title is drawn
    whole, and chat text is shown as text (no Markdown bullet, no HTML); a chat message too long for the
    model stays in its box; Compare shows its running time and stops on Stop."""
    from playwright.sync_api import expect

    page.set_viewport_size({"width": 1280, "height": 1000})
    page.get_by_text("generation settings").click()
    expect(page.locator("#sample")).to_contain_text("sample (else greedy)")
    assert overflowing(page, "#settings") == []
    maximum = page.locator("#max-new [data-testid=max-value]")
    expect(maximum).to_have_text("256")
    box, slider = maximum.bounding_box(), page.locator("#max-new").bounding_box()
    assert box["x"] + box["width"] <= slider["x"] + slider["width"] + 0.5
    label = page.locator("#sample label").first.bounding_box()
    assert (
        label["x"] + label["width"]
        <= page.locator("#sample").bounding_box()["x"] + page.locator("#sample").bounding_box()["width"] + 0.5
    )

    page.get_by_role("tab", name="Persona & history").click()
    expect(page.locator("#space-plot")).to_contain_text("Persona space")
    title = page.locator("#space-plot .gtitle").bounding_box()
    plot = page.locator("#space-plot .main-svg").first.bounding_box()
    assert plot["x"] - 0.5 <= title["x"] and title["x"] + title["width"] <= plot["x"] + plot["width"] + 0.5
    page.screenshot(path=str(shots_dir(tmp_path) / "studio-1280.png"), full_page=True)

    # Chat: a message that Markdown would make a bullet and HTML would make bold stays as typed.
    page.get_by_role("tab", name="Chat as the persona").click()
    typed = "- not a bullet & <b>not bold</b>"
    page.locator("#chat-message textarea, #chat-message input").first.fill(typed)
    page.locator("#chat-send").click()
    expect(page.locator("#chat-parts")).to_contain_text("tokens/s")
    for chat in ("#chat-persona", "#chat-plain"):
        expect(page.locator(chat)).to_contain_text(typed)
        assert page.locator(f"{chat} li, {chat} b, {chat} ul").count() == 0, chat
    assert overflowing(page, "#settings") == []
    page.screenshot(path=str(shots_dir(tmp_path) / "studio-1280-chat.png"), full_page=True)

    # A message longer than the model reads is refused with a message, and stays in the box, whole.
    too_long = " ".join(f"Line {k}: the fog, the lamp and the long night again." for k in range(800))
    page.locator("#chat-message textarea, #chat-message input").first.fill(too_long)
    page.locator("#chat-send").click()
    expect(page.get_by_text("too long for the model").first).to_be_visible()
    assert page.locator("#chat-message textarea, #chat-message input").first.input_value() == too_long

    # Compare can be stopped while it writes; the status says so.
    page.get_by_role("tab", name="Compare").click()
    page.locator("#run").click()
    expect(page.locator("#compare-status")).to_contain_text("Writing…")
    page.locator("#stop").click()
    expect(page.locator("#compare-status")).to_have_text("Stopped.")
