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
