"""The soak's figures: per-endpoint percentiles, the terminal table and the JSON file."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Sample:
    """One request as a soak user saw it."""

    endpoint: str
    latency_s: float
    queue_wait_s: float | None
    ok: bool


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; 0 for no values (an endpoint nobody reached)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(samples: list[Sample]) -> dict[str, dict[str, float]]:
    """requests, failed, latency and queue-wait p50/p95 for each endpoint."""
    by: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by[s.endpoint].append(s)
    table = {}
    for endpoint, rows in sorted(by.items()):
        lat = [s.latency_s for s in rows]
        waits = [s.queue_wait_s for s in rows if s.queue_wait_s is not None]
        table[endpoint] = {
            "requests": len(rows),
            "failed": sum(not s.ok for s in rows),
            "p50_s": round(percentile(lat, 0.5), 3),
            "p95_s": round(percentile(lat, 0.95), 3),
            "queue_wait_p50_s": round(percentile(waits, 0.5), 3),
            "queue_wait_p95_s": round(percentile(waits, 0.95), 3),
        }
    return table


def format_report(report: dict[str, Any]) -> str:
    """Plain text for the terminal; the word 'error' appears once, on the `errors: N` line."""
    lines = [
        (
            f"soak: {report['users']} users x {report['minutes']} min, max_new_tokens "
            f"{report['max_new_tokens']}, app start {report['startup_s']} s, ran {report['elapsed_s']} s"
        ),
        f"requests: {report['requests']} ({report['requests_per_s']}/s)",
        f"{'endpoint':<16}{'n':>6}{'failed':>8}{'p50 s':>8}{'p95 s':>8}{'wait p50':>10}{'wait p95':>10}",
    ]
    for name, row in report["endpoints"].items():
        lines.append(
            f"{name:<16}{row['requests']:>6}{row['failed']:>8}{row['p50_s']:>8.2f}{row['p95_s']:>8.2f}"
            f"{row['queue_wait_p50_s']:>10.2f}{row['queue_wait_p95_s']:>10.2f}"
        )
    rss = report["rss_mb"]
    store = report["store"]
    lines += [
        f"queue wait: p50 {report['queue_wait_p50_s']} s, p95 {report['queue_wait_p95_s']} s",
        (
            f"rss MB: start {rss['start']}, after warm-up {rss['after_warmup']}, end {rss['end']} "
            f"(growth after warm-up {report['rss_growth_after_warmup_pct']}%; warm-up ended at "
            f"{report['warmup_s']} s)"
        ),
        (
            f"acknowledged writes: {store['acknowledged_writes']}, lost: {store['lost_writes']}, "
            f"integrity_check: {store['integrity_check']}"
        ),
        f"cross-session leaks: {len(report['leaks'])}",
        f"app alive at end: {report['app_alive_at_end']}",
        f"errors: {report['errors']}",
    ]
    lines += [f"  failed: {f}" for f in report["failures"]]
    lines += [f"  leak: {f}" for f in report["leaks"]]
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
