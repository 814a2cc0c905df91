"""The studio page's panels: each builds its widgets and wires them to `StudioService`, nothing else.

persona (the left column), history (texts and the map), compare, chat, settings (generation); `common` holds
what they share: error handling, the per-session state and small presentation helpers."""
