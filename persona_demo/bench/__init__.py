"""Speed and scaling benchmarks: above the app, whose persona updates and maps they time."""

STEPS = (
    "plug_overhead",
    "side_by_side",
    "chat_reply",
    "pplug_vs_rag",
    "persona_update",
    "encode_throughput",
    "projection",
    "train_step",
    "train_scaling",
    "cold_start",
)
"""The bench's figures in the order they run (`bench --only` picks some); kept here so the CLI lists them
without importing torch."""
