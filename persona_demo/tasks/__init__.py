"""What the app and evaluation share above the engine: how a persona becomes a prompt."""
