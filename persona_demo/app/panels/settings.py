"""The generation settings every answer uses (an accordion under the tabs)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ...engine.generation import GenerationOptions
from .. import args as arg
from ..service import PersonaParts


@dataclass(frozen=True)
class SettingsPanel:
    max_new: gr.Slider
    strength: gr.Slider
    sample: gr.Checkbox
    temperature: gr.Slider
    top_p: gr.Slider
    repetition_penalty: gr.Slider
    no_repeat: gr.Slider
    guidance: gr.Slider
    no_echo: gr.Slider
    use_soft: gr.Checkbox
    use_texts: gr.Checkbox

    def first_inputs(self) -> list[gr.components.Component]:
        """The four settings compare and chat took from the start (max new tokens ... temperature)."""
        return [self.max_new, self.strength, self.sample, self.temperature]

    def extra_inputs(self) -> list[gr.components.Component]:
        """Settings added later; they go last, so API calls written for the first seven arguments keep
        working."""
        return [
            self.top_p,
            self.repetition_penalty,
            self.no_repeat,
            self.use_soft,
            self.use_texts,
            self.guidance,
            self.no_echo,
        ]


SETTING_WIDTH = 250
"""Each setting's minimum width (px): the row wraps instead of squashing a label or a slider's number box
(at 1280 px, eleven settings in one row cut "sample (else greedy)" and showed 256 as "25")."""


def build_settings_panel(max_new_tokens: int) -> SettingsPanel:
    wide = {"min_width": SETTING_WIDTH}
    with gr.Accordion("generation settings", open=False, elem_id="settings"), gr.Row():
        max_new = gr.Slider(
            *arg.MAX_NEW_TOKENS,
            value=max_new_tokens,
            step=1,
            label="max new tokens",
            info=f"then up to {arg.REPLY_SENTENCE_ROOM} more to end the sentence",
            elem_id="max-new",
            **wide,
        )
        strength = gr.Slider(*arg.STRENGTH, value=1.0, step=0.1, label="persona strength", **wide)
        sample = gr.Checkbox(label="sample (else greedy)", elem_id="sample", **wide)
        temperature = gr.Slider(
            *arg.TEMPERATURE, value=GenerationOptions.temperature, step=0.05, label="temperature", **wide
        )
        top_p = gr.Slider(*arg.TOP_P, value=arg.REPLY_TOP_P, step=0.05, label="top-p (sampling)", **wide)
        repetition_penalty = gr.Slider(
            *arg.REPETITION_PENALTY,
            value=arg.REPLY_REPETITION_PENALTY,
            step=0.05,
            label="repetition penalty (1 = off)",
            **wide,
        )
        no_repeat = gr.Slider(
            *arg.NO_REPEAT_NGRAM,
            value=arg.REPLY_NO_REPEAT_NGRAM,
            step=1,
            label="no repeated n-grams of this size (0 = off)",
            **wide,
        )
        guidance = gr.Slider(
            *arg.PERSONA_GUIDANCE,
            value=arg.REPLY_PERSONA_GUIDANCE,
            step=0.25,
            label="persona guidance, chat and free prompt (0 = off)",
            **wide,
        )
        no_echo = gr.Slider(
            *arg.ECHO_NGRAM,
            value=arg.REPLY_ECHO_NGRAM,
            step=1,
            label="chat and free prompt: never copy this many tokens of the message or instruction (0 = off)",
            **wide,
        )
        use_soft = gr.Checkbox(value=True, label="persona: plug's soft tokens", elem_id="use-soft", **wide)
        use_texts = gr.Checkbox(
            value=True, label="persona: own texts in the prompt", elem_id="use-texts", **wide
        )
    return SettingsPanel(
        max_new,
        strength,
        sample,
        temperature,
        top_p,
        repetition_penalty,
        no_repeat,
        guidance,
        no_echo,
        use_soft,
        use_texts,
    )


def options(
    max_new: float,
    sample: bool,
    temperature: float,
    top_p: float = arg.REPLY_TOP_P,
    repetition_penalty: float = arg.REPLY_REPETITION_PENALTY,
    no_repeat: float = arg.REPLY_NO_REPEAT_NGRAM,
    guidance: float = arg.REPLY_PERSONA_GUIDANCE,
    no_echo: float = arg.REPLY_ECHO_NGRAM,
) -> GenerationOptions:
    """The sliders' values (checked: an API call may send anything) as generation options."""
    return GenerationOptions(
        max_new_tokens=int(arg.number(max_new, "max new tokens", arg.MAX_NEW_TOKENS, integer=True)),
        sentence_room=arg.REPLY_SENTENCE_ROOM,
        do_sample=arg.flag(sample, "sample"),
        temperature=arg.number(temperature, "temperature", arg.TEMPERATURE),
        top_p=arg.number(top_p, "top-p", arg.TOP_P),
        repetition_penalty=arg.number(repetition_penalty, "repetition penalty", arg.REPETITION_PENALTY),
        no_repeat_ngram_size=int(
            arg.number(no_repeat, "no-repeat n-gram", arg.NO_REPEAT_NGRAM, integer=True)
        ),
        persona_guidance=arg.number(guidance, "persona guidance", arg.PERSONA_GUIDANCE),
        echo_ngram_size=int(arg.number(no_echo, "no-echo n-gram", arg.ECHO_NGRAM, integer=True)),
    ).validated()


def parts(soft_tokens: bool, retrieved_texts: bool) -> PersonaParts:
    """Which parts of the persona the answer gets (the two checkboxes)."""
    return PersonaParts(arg.flag(soft_tokens, "soft tokens"), arg.flag(retrieved_texts, "own texts"))
