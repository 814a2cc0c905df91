"""The persona map holds still on screen (axes fixed by the fitted layout) and its names never overlap."""

from __future__ import annotations

import numpy as np

from persona_demo.app.service import SpaceData
from persona_demo.app.space import LABEL_PX, PLOT_PX, MapLayouts, label_spots, space_figure


def space(vectors: np.ndarray, names: list[str]) -> SpaceData:
    n = len(names)
    return SpaceData(list(range(1, n + 1)), names, [3] * n, [["a text"]] * n, vectors)


def axes(fig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return tuple(fig.layout.xaxis.range), tuple(fig.layout.yaxis.range)


def drawn(fig, name: str) -> dict[str, tuple[float, float]]:
    """Screen-independent positions: each named point's (x, y) as drawn."""
    points = {}
    for trace in fig.data:
        if trace.name in {"personas", "this persona"}:
            for x, y, label in zip(trace.x, trace.y, trace.hovertext):
                points[label.split("</b>")[0].removeprefix("<b>")] = (x, y)
    return points


def test_an_edit_moves_only_the_edited_point_and_never_the_axes():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(8, 12))
    names = [f"Person {k}" for k in range(8)]
    layouts = MapLayouts()
    before = space_figure(space(vectors, names), "pca", current_id=3, layouts=layouts)
    assert before.layout.xaxis.autorange is False and before.layout.yaxis.autorange is False
    edited = vectors.copy()
    edited[2] += 0.05 * rng.normal(size=12)  # a small edit: the point stays inside the fitted frame
    after = space_figure(space(edited, names), "pca", current_id=3, previous=vectors[2], layouts=layouts)
    assert axes(after) == axes(before)
    old, new = drawn(before, "pca"), drawn(after, "pca")
    for name in names:
        if name != "Person 2":
            np.testing.assert_allclose(new[name], old[name])
    assert not np.allclose(new["Person 2"], old["Person 2"])


def test_a_point_edited_far_away_grows_the_frame_and_stays_visible():
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(8, 12))
    names = [f"Person {k}" for k in range(8)]
    layouts = MapLayouts()
    before = space_figure(space(vectors, names), "pca", layouts=layouts)
    far = vectors.copy()
    far[0] *= 25
    after = space_figure(space(far, names), "pca", layouts=layouts)
    (x0, x1), (y0, y1) = axes(after)
    x, y = drawn(after, "pca")["Person 0"]
    assert x0 < x < x1 and y0 < y < y1
    assert axes(after) != axes(before)
    back = space_figure(space(vectors, names), "pca", layouts=layouts)  # the point moves back inside
    assert axes(back) == axes(after)  # the axes do not shrink back: nothing else moves on screen


def boxes(xy: np.ndarray, labels: list[str], spots: list[str | None], frame) -> list[tuple]:
    """The label boxes as `label_spots` models them, for the placed names."""
    x0, x1, y0, y1 = frame
    out = []
    for (x, y), label, spot in zip(xy, labels, spots):
        if spot is None:
            continue
        px, py = (x - x0) / (x1 - x0) * PLOT_PX[0], (y - y0) / (y1 - y0) * PLOT_PX[1]
        w, h = LABEL_PX[0] * len(label), LABEL_PX[1]
        out.append(
            {
                "top center": (px - w / 2, py + 6, px + w / 2, py + 6 + h),
                "bottom center": (px - w / 2, py - 6 - h, px + w / 2, py - 6),
                "middle right": (px + 8, py - h / 2, px + 8 + w, py + h / 2),
                "middle left": (px - 8 - w, py - h / 2, px - 8, py + h / 2),
            }[spot]
        )
    return out


def test_names_of_close_points_go_to_free_spots_and_never_overlap():
    frame = (0.0, 1.0, 0.0, 1.0)
    xy = np.array([[0.50, 0.50], [0.51, 0.50], [0.50, 0.51], [0.52, 0.52], [0.49, 0.50], [0.9, 0.1]])
    labels = ["Marguerite", "Priya", "Tomasz", "Kev", "Marta", "Far away"]
    spots = label_spots(xy, labels, frame)
    assert spots[0] == "top center" and spots[-1] == "top center"
    assert sum(s is not None for s in spots) >= 3  # more than one name in a tight cluster
    placed = boxes(xy, labels, spots, frame)
    for i, a in enumerate(placed):
        for b in placed[i + 1 :]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
