"""data layer of persona_demo."""
