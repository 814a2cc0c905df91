"""Token budgets that training, scoring and evaluation share (a light module: no torch)."""

PROMPT_TOKENS = 256
"""Prompt tokens a teacher-forcing row keeps (training and NLL scoring cut longer prompts from the right)."""

PERSONA_TEXT_WORDS = 40
"""Words each persona text keeps in the persona prompt (chat, free prompts, the voice plug's training): enough
for topic and tone, a bounded prompt for a 135M model. A plug records its own (`train --words-per-text`)."""
