"""The command line: one module per `python -m persona_demo <command>`, each with its add_*_command."""
