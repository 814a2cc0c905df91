"""Token budgets that training, scoring and evaluation share (a light module: no torch)."""

PROMPT_TOKENS = 256
"""Prompt tokens a teacher-forcing row keeps (training and NLL scoring cut longer prompts from the right)."""
