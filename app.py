"""Persona Studio: `python app.py` serves the Gradio app on 127.0.0.1 with the embedded default models."""

from __future__ import annotations

import sys

from persona_demo.app.launch import main

if __name__ == "__main__":
    sys.exit(main())
