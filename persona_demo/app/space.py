"""2-D maps of the persona embedding space: PCA at once, UMAP when ready, as plotly figures.

PCA is a closed-form SVD (milliseconds), so the first plot appears immediately; UMAP (umap-learn) needs
numba's JIT, which `warm_umap` compiles at start-up so the first click doesn't pay for it.

A map holds still (`MapLayouts`): each method is fitted once per population and an edited or new persona is
placed with the fitted reducer's transform, so the other points do not move and "previous position" is
drawn in the same layout. Only when the population changed a lot is the map refitted, rotated and scaled
onto the old layout.
"""

from __future__ import annotations

import csv
import html
import logging
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from .service import SpaceData

log = logging.getLogger(__name__)

UMAP_MIN_POINTS = 5
"""Below this many points UMAP's neighbour graph is meaningless: the map stays PCA."""

_umap_ready = threading.Event()
_warm_lock = threading.Lock()
_warm_thread: threading.Thread | None = None


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """Project rows onto their first two principal components (zeros where there is no spread)."""
    x = np.asarray(vectors, dtype=np.float64)
    if len(x) == 0:
        return np.zeros((0, 2))
    centred = x - x.mean(0, keepdims=True)
    if len(x) == 1 or not np.any(centred):
        return np.zeros((len(x), 2))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    if coords.shape[1] == 1:
        coords = np.hstack([coords, np.zeros((len(x), 1))])
    # Fix each axis' sign so small edits don't mirror the whole map.
    signs = np.sign(coords[np.abs(coords).argmax(0), range(2)])
    return coords * np.where(signs == 0, 1, signs)


Transform = Callable[[np.ndarray], np.ndarray]
"""Places new vectors (rows) in a fitted 2-D layout."""


def pca_fit(vectors: np.ndarray) -> tuple[np.ndarray, Transform]:
    """`pca_2d` and the projection that places later vectors in the same axes."""
    x = np.asarray(vectors, dtype=np.float64)
    coords = pca_2d(x)
    if len(x) < 2 or not np.any(coords):
        return coords, lambda v: np.zeros((len(v), 2))
    mean = x.mean(0)
    basis, *_ = np.linalg.lstsq(x - mean, coords, rcond=None)  # the signed components pca_2d used
    return coords, lambda v: (np.asarray(v, dtype=np.float64) - mean) @ basis


def umap_fit(vectors: np.ndarray, seed: int = 0) -> tuple[np.ndarray, Transform]:
    """UMAP with cosine distance and its transform; PCA when there are too few points for a neighbour graph."""
    x = np.asarray(vectors, dtype=np.float32)
    if len(x) < UMAP_MIN_POINTS:
        return pca_fit(x)
    import umap  # imported lazily: ~5 s of numba set-up

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs/random_state notices
        reducer = umap.UMAP(
            n_neighbors=min(15, len(x) - 1), n_components=2, metric="cosine", random_state=seed, init="random"
        )
        coords = reducer.fit_transform(x).astype(np.float64)

    def transform(v: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return reducer.transform(np.asarray(v, dtype=np.float32)).astype(np.float64)

    return coords, transform


def umap_2d(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """UMAP with cosine distance; PCA when there are too few points for a neighbour graph."""
    return umap_fit(vectors, seed)[0]


Frame = tuple[float, float, float, float]
"""Axis ranges (x low, x high, y low, y high)."""

FRAME_MARGIN = 0.15
"""Room around the fitted points (share of their spread): an edited persona may move a little and names
above the points need space."""


@dataclass
class _Layout:
    vectors: dict[int, np.ndarray]  # each persona's vector when the layout was fitted
    coords: dict[int, np.ndarray]
    transform: Transform
    umap: bool
    frame: Frame
    """The axes, set once at the fit: a point that did not change stays at the same place on screen."""


def fitted_frame(coords: np.ndarray) -> Frame:
    """Axis ranges around fitted points, with `FRAME_MARGIN`; a unit square around one point."""
    if len(coords) == 0:
        return (-1.0, 1.0, -1.0, 1.0)
    low, high = coords.min(0), coords.max(0)
    span = np.maximum(high - low, 1e-9)
    span = np.where(span < 1e-6 * max(float(span.max()), 1.0), max(float(span.max()), 1.0), span)
    pad = FRAME_MARGIN * span
    return (low[0] - pad[0], high[0] + pad[0], low[1] - pad[1], high[1] + pad[1])


def frame_around(frame: Frame, points: np.ndarray) -> Frame:
    """`frame`, grown only where a point lies outside it (a persona edited far from the rest), with room
    (`FRAME_MARGIN` of the span) beyond that point, so the next small move does not grow it again."""
    if len(points) == 0:
        return frame
    x0, x1, y0, y1 = frame
    low, high = points.min(0), points.max(0)
    pad_x, pad_y = FRAME_MARGIN * (x1 - x0), FRAME_MARGIN * (y1 - y0)
    return (
        x0 if low[0] >= x0 else low[0] - pad_x,
        x1 if high[0] <= x1 else high[0] + pad_x,
        y0 if low[1] >= y0 else low[1] - pad_y,
        y1 if high[1] <= y1 else high[1] + pad_y,
    )


class MapLayouts:
    """One fitted layout per method, reused while the population stays about the same."""

    REFIT_SHARE = 0.2
    """Refit when more than this share of the fitted personas were added or removed since the fit."""

    def __init__(self) -> None:
        self._layouts: dict[str, _Layout] = {}
        self._lock = threading.Lock()

    def place(
        self, method: str, ids: Sequence[int], vectors: np.ndarray, extra: np.ndarray, space: str = "history"
    ) -> tuple[np.ndarray, np.ndarray]:
        """2-D positions of the personas and of `extra` rows (previous position, items) in the layout of
        `method` for that `space` (each space keeps its own)."""
        vectors = np.asarray(vectors, dtype=np.float64).reshape(len(ids), -1)
        with self._lock:
            layout = self._layouts.get(f"{method}:{space}")
            if layout is None or self._stale(layout, ids, method):
                layout = self._fit(method, ids, vectors, layout)
                self._layouts[f"{method}:{space}"] = layout
        moved = [
            k
            for k, (pid, v) in enumerate(zip(ids, vectors))
            if pid not in layout.vectors or not np.allclose(layout.vectors[pid], v, atol=1e-6)
        ]
        coords = np.array([layout.coords.get(pid, np.zeros(2)) for pid in ids]).reshape(len(ids), 2)
        if moved:
            coords[moved] = layout.transform(vectors[moved])
        extra_xy = layout.transform(extra) if len(extra) else np.zeros((0, 2))
        return coords, extra_xy

    def frame(self, method: str, points: np.ndarray, space: str = "history") -> Frame:
        """The axes of the layout `place` last used for this method and space, grown to show `points`. They
        only grow (until the next fit): a point moving back inside does not shrink them and move the rest."""
        with self._lock:
            layout = self._layouts.get(f"{method}:{space}")
            if layout is None:
                return frame_around(fitted_frame(np.zeros((0, 2))), points)
            layout.frame = frame_around(layout.frame, points)
            return layout.frame

    def _stale(self, layout: _Layout, ids: Sequence[int], method: str) -> bool:
        changed = len(set(ids) ^ set(layout.vectors))
        if changed > self.REFIT_SHARE * max(len(layout.vectors), 1):
            return True
        return method == "umap" and not layout.umap and len(ids) >= UMAP_MIN_POINTS

    @staticmethod
    def _fit(method: str, ids: Sequence[int], vectors: np.ndarray, old: _Layout | None) -> _Layout:
        coords, transform = umap_fit(vectors) if method == "umap" else pca_fit(vectors)
        common = [k for k, pid in enumerate(ids) if old is not None and pid in old.coords]
        frame = fitted_frame(coords)
        if old is not None and len(common) >= 3:  # rotate/scale onto the old layout: the map does not jump
            target = np.array([old.coords[ids[k]] for k in common])
            align = _procrustes(coords[common], target)
            coords, transform = align(coords), _then(transform, align)
            frame = frame_around(old.frame, coords)
        return _Layout(
            vectors={pid: vectors[k] for k, pid in enumerate(ids)},
            coords={pid: coords[k] for k, pid in enumerate(ids)},
            transform=transform,
            umap=method == "umap" and len(ids) >= UMAP_MIN_POINTS,
            frame=frame,
        )


def _procrustes(source: np.ndarray, target: np.ndarray) -> Transform:
    """The rotation (or reflection), scale and shift that best map `source` points onto `target`."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    a, b = source - mu_s, target - mu_t
    u, sv, vt = np.linalg.svd(a.T @ b)
    rotation = u @ vt
    norm = float((a**2).sum())
    scale = float(sv.sum()) / norm if norm > 0 else 1.0
    return lambda x: (np.asarray(x) - mu_s) @ rotation * scale + mu_t


def _then(first: Transform, second: Transform) -> Transform:
    return lambda x: second(first(x))


def warm_umap() -> threading.Thread:
    """Compile UMAP's numba kernels in the background (start-up), so the first map is not a 30 s wait.

    Idempotent: later calls return the thread started by the first.
    """
    global _warm_thread

    def run() -> None:
        try:
            sample = np.random.default_rng(0).normal(size=(24, 8)).astype(np.float32)
            umap_fit(sample)[1](sample[:2])  # the transform has its own kernels
        except Exception as exc:  # noqa: BLE001 - warming is best effort; PCA still works without UMAP
            log.warning("UMAP warm-up failed (maps fall back to PCA): %s", exc)
        finally:
            _umap_ready.set()

    with _warm_lock:
        if _warm_thread is None:
            _warm_thread = threading.Thread(target=run, name="umap-warmup", daemon=True)
            _warm_thread.start()
        return _warm_thread


def umap_ready() -> bool:
    return _umap_ready.is_set()


def wait_for_umap(timeout: float) -> bool:
    """Block until the warm-up finished (True) or `timeout` seconds passed (False)."""
    warm_umap()
    return _umap_ready.wait(timeout)


def _escape(text: str) -> str:
    """User text for plotly's HTML subset: <, > and & escaped; quotes stay quotes (plotly shows a `&quot;`
    or `&#x27;` entity literally)."""
    return html.escape(text, quote=False)


def _hover(name: str, count: int, samples: list[str]) -> str:
    """Hover text; everything a user typed is HTML-escaped (plotly renders a subset of HTML)."""
    lines = [f"<b>{_escape(name)}</b>", f"{count} item{'s' if count != 1 else ''}"]
    lines += [_escape(s[:80] + ("…" if len(s) > 80 else "")) for s in samples]
    return "<br>".join(lines)


def nearest(data: SpaceData, i: int, k: int = 3) -> str:
    """The personas closest to persona i in the original embedding space (cosine), not in the 2-D picture,
    which distorts distances."""
    if len(data.ids) < 2:
        return ""
    x = data.vectors.reshape(len(data.ids), -1).astype(np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    cosines = x @ x[i]
    order = [j for j in np.argsort(-cosines) if j != i][:k]
    listed = ", ".join(f"{_escape(data.names[j])} ({cosines[j]:.2f})" for j in order)
    return f"<br><i>nearest (cosine, full space):</i> {listed}"


def _label(name: str, limit: int = 18) -> str:
    """A short on-map name: the part before the first comma ("Priya, pastry chef" → "Priya"), cut to fit."""
    short = name.split(",")[0].strip() or name
    return _escape(short if len(short) <= limit else short[: limit - 1] + "…")


PLOT_PX = (460.0, 350.0)
"""About the plot area's size in pixels (a half-width column at 1280 px): where names may collide."""
LABEL_PX = (6.6, 15.0)
"""A name's width per character and its height at the map's font size, in pixels."""
LABEL_SPOTS = ("top center", "bottom center", "middle right", "middle left")


def label_spots(xy: np.ndarray, labels: Sequence[str], frame: Frame) -> list[str | None]:
    """Where to write each point's name so that no two names overlap: above, below, right or left of the
    point, in that order of preference, the first point first; None where no spot is free (the name is still
    in the point's hover text). PCA of similar personas put names on top of each other."""
    x0, x1, y0, y1 = frame
    width, height = PLOT_PX
    char, line = LABEL_PX
    placed: list[tuple[float, float, float, float]] = []
    spots: list[str | None] = []
    for (x, y), label in zip(np.asarray(xy, dtype=np.float64).reshape(-1, 2), labels):
        px = (x - x0) / max(x1 - x0, 1e-12) * width
        py = (y - y0) / max(y1 - y0, 1e-12) * height
        w = char * len(label)
        boxes = {
            "top center": (px - w / 2, py + 6, px + w / 2, py + 6 + line),
            "bottom center": (px - w / 2, py - 6 - line, px + w / 2, py - 6),
            "middle right": (px + 8, py - line / 2, px + 8 + w, py + line / 2),
            "middle left": (px - 8 - w, py - line / 2, px - 8, py + line / 2),
        }
        free = [spot for spot in LABEL_SPOTS if not any(_overlap(boxes[spot], b) for b in placed)]
        spots.append(free[0] if free else None)
        if free:
            placed.append(boxes[free[0]])
    return spots


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _visible_name(name: str) -> str:
    """The on-map name as it is drawn (entities count as one character)."""
    return html.unescape(_label(name))


def space_figure(
    data: SpaceData,
    method: str = "pca",
    current_id: int | None = None,
    previous: np.ndarray | None = None,
    layouts: MapLayouts | None = None,
    space: str = "history",
) -> go.Figure:
    """Scatter of named personas (the current one a star), its previous position, and its items if given.

    With `layouts` (one per studio), the map keeps its layout between calls (see `MapLayouts`)."""
    n = len(data.ids)
    vectors = data.vectors.reshape(n, -1) if n else np.zeros((0, 1))
    extra = [np.asarray(previous, dtype=np.float64).reshape(1, -1)] if previous is not None and n else []
    items = data.item_vectors if len(data.item_texts) else np.zeros((0, vectors.shape[1]))
    extra_rows = (
        np.vstack([*extra, items]) if n and (extra or len(items)) else np.zeros((0, vectors.shape[1]))
    )
    layouts = layouts or MapLayouts()
    persona_xy, extra_xy = layouts.place(method, data.ids, vectors, extra_rows, space)
    frame = layouts.frame(method, np.vstack([persona_xy, extra_xy]), space)
    fig = go.Figure()
    is_current = [pid == current_id for pid in data.ids]
    others = [i for i in range(n) if not is_current[i]]
    order = [i for i in range(n) if is_current[i]] + others  # the current persona's name is placed first
    spots = dict(
        zip(order, label_spots(persona_xy[order], [_visible_name(data.names[i]) for i in order], frame))
    )
    fig.add_trace(
        go.Scatter(
            x=persona_xy[others, 0] if others else [],
            y=persona_xy[others, 1] if others else [],
            mode="markers+text",
            name="personas",
            marker={"size": 11, "color": "#8aa4c8"},
            text=[_label(data.names[i]) if spots[i] else "" for i in others],
            textposition=[spots[i] or "top center" for i in others],
            textfont={"size": 11, "color": "#445"},
            cliponaxis=False,  # a name near the edge is drawn whole
            hovertext=[_hover(data.names[i], data.item_counts[i], data.samples[i]) for i in others],
            hoverinfo="text",
        )
    )
    if len(data.item_texts):
        item_xy = extra_xy[len(extra) :]
        fig.add_trace(
            go.Scatter(
                x=item_xy[:, 0],
                y=item_xy[:, 1],
                mode="markers",
                name="history items",
                marker={"size": 6, "color": "#f2b36b", "symbol": "diamond"},
                hovertext=[_escape(t[:100]) for t in data.item_texts],
                hoverinfo="text",
            )
        )
    if current_id in data.ids:
        i = data.ids.index(current_id)
        if extra:
            prev_xy = extra_xy[0]
            fig.add_trace(
                go.Scatter(
                    x=[prev_xy[0], persona_xy[i, 0]],
                    y=[prev_xy[1], persona_xy[i, 1]],
                    mode="lines+markers",
                    name="previous position",
                    line={"dash": "dot", "color": "#999"},
                    marker={"size": [9, 0], "color": "#999"},
                    hoverinfo="skip",
                )
            )
        fig.add_trace(
            go.Scatter(
                x=[persona_xy[i, 0]],
                y=[persona_xy[i, 1]],
                mode="markers+text",
                name="this persona",
                marker={"size": 18, "color": "#d62728", "symbol": "star"},
                text=[f"<b>{_label(data.names[i])}</b>"],
                textposition=spots[i] or "top center",
                textfont={"size": 13, "color": "#d62728"},
                cliponaxis=False,
                hovertext=[_hover(data.names[i], data.item_counts[i], data.samples[i]) + nearest(data, i)],
                hoverinfo="text",
            )
        )
    label = "UMAP (cosine)" if method == "umap" and n >= UMAP_MIN_POINTS else "PCA"
    missing = f"; {data.without_items} without items not shown" if data.without_items else ""
    fig.update_layout(
        # Two short lines: one long title was cut off in a half-width column at 1280 px.
        title={
            "text": f"Persona space: {_escape(space)}<br><sup>{label}; {n} personas{missing}</sup>",
            "x": 0.01,
            "xanchor": "left",
        },
        title_font_size=13,
        height=420,
        margin={"l": 60, "r": 60, "t": 56, "b": 10},
        legend={"orientation": "h"},
        hoverlabel={"align": "left"},
        # Fixed by the fitted layout (`MapLayouts`): a redraw after an edit moves only the edited point.
        xaxis={"showticklabels": False, "range": [frame[0], frame[1]], "autorange": False},
        yaxis={"showticklabels": False, "range": [frame[2], frame[3]], "autorange": False},
    )
    return fig


def map_csv(data: SpaceData, method: str, layouts: MapLayouts, path: Path, space: str = "history") -> Path:
    """The map's points as CSV (persona, x, y, items): the layout the page shows, for use elsewhere."""
    n = len(data.ids)
    coords, _ = layouts.place(method, data.ids, data.vectors.reshape(n, -1), np.zeros((0, 1)), space)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["persona_id", "name", "x", "y", "items", "space", "method"])
        for k, pid in enumerate(data.ids):
            x, y = (float(v) for v in coords[k])
            writer.writerow([pid, data.names[k], f"{x:.5f}", f"{y:.5f}", data.item_counts[k], space, method])
    return path


def attention_figure(weighted: list[tuple[float, str]]) -> go.Figure:
    """Horizontal bars: the history items the plug attended to most for this input."""
    weighted = list(reversed(weighted))  # plotly draws bottom-up; largest on top
    labels = [_escape(text[:60] + ("…" if len(text) > 60 else "")) for _, text in weighted]
    fig = go.Figure(
        go.Bar(
            x=[w for w, _ in weighted],
            y=[f"{j + 1}" for j in range(len(weighted))][::-1],
            orientation="h",
            text=labels,
            textposition="auto",
            hovertext=[_escape(t[:200]) for _, t in weighted],
            hoverinfo="text+x",
        )
    )
    fig.update_layout(
        title="History items the plug attended to",
        height=60 + 40 * max(1, len(weighted)),
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis={"title": "attention weight"},
    )
    return fig
