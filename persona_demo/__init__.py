"""persona-demo: personalize a frozen LLM with the Persona-Plug (PPlug, Liu et al. 2024)."""

__version__ = "0.1.0"
