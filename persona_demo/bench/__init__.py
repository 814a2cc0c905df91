"""Speed and scaling benchmarks: above the app, whose persona updates and maps they time."""
