"""app layer of persona_demo."""
