"""engine layer of persona_demo."""
