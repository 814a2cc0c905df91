"""The studio's tasks: each shipped plug with its LaMP prompt template, plus a free prompt.

A task turns what the user typed into the prompt the plug was trained on, so the headline plug sees
"Generate a headline for the following article: ..." exactly as in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..tasks.lamp import get_task

FREE_PROMPT = "free"
VOICE_PLUG = "persona_voice"
"""The plug trained to carry a person's voice into open-ended writing: the default for free prompts and chat."""


@dataclass(frozen=True)
class StudioTask:
    key: str
    """The plug's data-folder name (`huffpost_headline`), or `free`."""
    label: str
    template: str
    """Prompt with an `{input}` slot."""
    example: str
    """A sample input shown in the input box's placeholder."""
    lamp_task: int | None = None
    """The LaMP task whose item templates render retrieved history items (hybrid plugs), if any."""

    def prompt(self, user_input: str) -> str:
        return self.template.replace("{input}", user_input.strip())

    @property
    def labels(self) -> tuple[str, ...]:
        """The answer set of a rating/classification task (answered by scoring it), else ()."""
        return get_task(self.lamp_task).labels if self.lamp_task else ()

    @property
    def kind(self) -> str:
        return get_task(self.lamp_task).kind if self.lamp_task else "generation"


KNOWN_TASKS: dict[str, StudioTask] = {
    task.key: task
    for task in (
        StudioTask(
            "huffpost_headline",
            "News headline",
            "Generate a headline for the following article: {input}",
            "Paste a news article; the plug writes the headline this persona would.",
            4,
        ),
        StudioTask(
            "acl_title",
            "Paper title",
            "Generate a title for the following abstract of a paper: {input}",
            "Paste a paper abstract; the plug writes the title this persona would.",
            5,
        ),
        StudioTask(
            "amazon_mi_rating",
            "Review rating (1-5)",
            "What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, "
            "or 5 without further explanation. review: {input}",
            "Paste a product review; the plug predicts the stars this persona would give.",
            3,
        ),
    )
}

FREE_TASK = StudioTask(FREE_PROMPT, "Free prompt", "{input}", "Ask anything; compare both answers.")


def shipped_tasks(plugs_dir: Path) -> list[tuple[StudioTask, Path]]:
    """Tasks whose plug file exists in `plugs_dir`, in a stable order (known tasks first)."""
    found = []
    for path in sorted(Path(plugs_dir).glob("*.safetensors")):
        task = KNOWN_TASKS.get(path.stem) or StudioTask(
            path.stem, path.stem.replace("_", " "), "{input}", "Type an input for this plug."
        )
        found.append((task, path))
    order = list(KNOWN_TASKS)
    return sorted(
        found, key=lambda tp: (order.index(tp[0].key) if tp[0].key in order else len(order), tp[0].key)
    )
