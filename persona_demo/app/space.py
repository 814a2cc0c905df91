"""2-D maps of the persona embedding space: PCA at once, UMAP when ready, as plotly figures.

PCA is a closed-form SVD (milliseconds), so the first plot appears immediately; UMAP (umap-learn) needs
numba's JIT, which `warm_umap` compiles at start-up so the first click doesn't pay for it.
"""

from __future__ import annotations

import html
import logging
import threading
import warnings

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


def umap_2d(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """UMAP with cosine distance; PCA when there are too few points for a neighbour graph."""
    x = np.asarray(vectors, dtype=np.float32)
    if len(x) < UMAP_MIN_POINTS:
        return pca_2d(x)
    import umap  # imported lazily: ~5 s of numba set-up

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs/random_state notices
        reducer = umap.UMAP(
            n_neighbors=min(15, len(x) - 1), n_components=2, metric="cosine", random_state=seed, init="random"
        )
        return reducer.fit_transform(x).astype(np.float64)


def warm_umap() -> threading.Thread:
    """Compile UMAP's numba kernels in the background (start-up), so the first map is not a 30 s wait.

    Idempotent: later calls return the thread started by the first.
    """
    global _warm_thread

    def run() -> None:
        try:
            umap_2d(np.random.default_rng(0).normal(size=(24, 8)).astype(np.float32))
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


def _hover(name: str, count: int, samples: list[str]) -> str:
    """Hover text; everything a user typed is HTML-escaped (plotly renders a subset of HTML)."""
    lines = [f"<b>{html.escape(name)}</b>", f"{count} item{'s' if count != 1 else ''}"]
    lines += [html.escape(s[:80] + ("…" if len(s) > 80 else "")) for s in samples]
    return "<br>".join(lines)


def space_figure(
    data: SpaceData,
    method: str = "pca",
    current_id: int | None = None,
    previous: np.ndarray | None = None,
) -> go.Figure:
    """Scatter of personas (current one highlighted), its previous position, and its items if given."""
    vectors = data.vectors.reshape(len(data.ids), -1) if len(data.ids) else np.zeros((0, 1))
    extra = [previous] if previous is not None and len(data.ids) else []
    items = data.item_vectors if len(data.item_texts) else np.zeros((0, vectors.shape[1]))
    stacked = (
        np.vstack([vectors, *[np.asarray(e).reshape(1, -1) for e in extra], items])
        if len(data.ids)
        else vectors
    )
    coords = umap_2d(stacked) if method == "umap" else pca_2d(stacked)
    n = len(data.ids)
    persona_xy = coords[:n]
    fig = go.Figure()
    is_current = [pid == current_id for pid in data.ids]
    others = [i for i in range(n) if not is_current[i]]
    fig.add_trace(
        go.Scatter(
            x=persona_xy[others, 0] if others else [],
            y=persona_xy[others, 1] if others else [],
            mode="markers",
            name="personas",
            marker={"size": 11, "color": "#8aa4c8"},
            hovertext=[_hover(data.names[i], data.item_counts[i], data.samples[i]) for i in others],
            hoverinfo="text",
        )
    )
    if len(data.item_texts):
        item_xy = coords[n + len(extra) :]
        fig.add_trace(
            go.Scatter(
                x=item_xy[:, 0],
                y=item_xy[:, 1],
                mode="markers",
                name="history items",
                marker={"size": 6, "color": "#f2b36b", "symbol": "diamond"},
                hovertext=[html.escape(t[:100]) for t in data.item_texts],
                hoverinfo="text",
            )
        )
    if current_id in data.ids:
        i = data.ids.index(current_id)
        if extra:
            prev_xy = coords[n]
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
                mode="markers",
                name="this persona",
                marker={"size": 18, "color": "#d62728", "symbol": "star"},
                hovertext=[_hover(data.names[i], data.item_counts[i], data.samples[i])],
                hoverinfo="text",
            )
        )
    label = "UMAP (cosine)" if method == "umap" and len(stacked) >= UMAP_MIN_POINTS else "PCA"
    fig.update_layout(
        title=f"Persona embeddings ({label}; {n} personas)",
        height=420,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h"},
        xaxis={"showticklabels": False},
        yaxis={"showticklabels": False},
    )
    return fig


def attention_figure(weighted: list[tuple[float, str]]) -> go.Figure:
    """Horizontal bars: the history items the plug attended to most for this input."""
    weighted = list(reversed(weighted))  # plotly draws bottom-up; largest on top
    labels = [html.escape(text[:60] + ("…" if len(text) > 60 else "")) for _, text in weighted]
    fig = go.Figure(
        go.Bar(
            x=[w for w, _ in weighted],
            y=[f"{j + 1}" for j in range(len(weighted))][::-1],
            orientation="h",
            text=labels,
            textposition="auto",
            hovertext=[html.escape(t[:200]) for _, t in weighted],
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
