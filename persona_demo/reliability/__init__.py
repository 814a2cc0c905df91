"""Load, fault and access checks against the running studio (`python -m persona_demo soak`, tests/reliability)."""
