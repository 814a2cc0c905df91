"""experiments layer of persona_demo."""
