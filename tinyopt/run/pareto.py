"""The Pareto front of points on two axes: the run's plots and the search's front share it."""

from __future__ import annotations


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (smaller x, larger y), by x; of equal points,
    the first stands for all."""
    front, best = [], float("-inf")
    for index in sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1])):
        if points[index][1] > best:
            front.append(index)
            best = points[index][1]
    return front


def nondominated(points: list[tuple[float, ...]]) -> list[int]:
    """Indices of the points no other point dominates, every axis smaller-is-better (no worse on every axis,
    better on one), ordered by their axes; of equal points, the first stands for all."""
    order = sorted(range(len(points)), key=lambda i: (points[i], i))
    front: list[int] = []
    for index in order:
        point = points[index]
        if not any(all(a <= b for a, b in zip(points[kept], point, strict=True)) for kept in front):
            front.append(index)
    return front
