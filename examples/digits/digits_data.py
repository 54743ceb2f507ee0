"""A small image dataset made on the spot: noisy 8x8 renderings of the digits 0-9.

Nothing is downloaded: every image comes from a 5x7 pixel font, placed at a random offset in an 8x8
canvas, dimmed, speckled and blurred by Gaussian noise, all from a seeded generator — so the same
seed gives the same bytes on every machine.
"""
from __future__ import annotations

import numpy as np

# 5 columns x 7 rows per digit, '#' = ink.
FONT = {
    0: [".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."],
    1: ["..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."],
    2: [".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"],
    3: ["#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."],
    4: ["...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."],
    5: ["#####", "#....", "####.", "....#", "....#", "#...#", ".###."],
    6: ["..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."],
    7: ["#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."],
    8: [".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."],
    9: [".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."],
}
SIDE = 8
CLASSES = 10


def glyphs() -> np.ndarray:
    """(10, 7, 5) array of the clean digits, ink = 1.0."""
    return np.array([[[c == "#" for c in row] for row in FONT[d]] for d in range(CLASSES)], dtype=np.float64)


def make_dataset(n: int, seed: int, noise: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, 64) in [0, 1] and their labels (n,), determined by `seed` alone."""
    rng = np.random.default_rng(seed)
    font = glyphs()
    labels = rng.integers(0, CLASSES, size=n)
    dy = rng.integers(0, SIDE - 7 + 1, size=n)        # 0..1 rows of slack
    dx = rng.integers(0, SIDE - 5 + 1, size=n)        # 0..3 columns of slack
    ink = rng.uniform(0.6, 1.0, size=n)
    images = np.zeros((n, SIDE, SIDE))
    for i in range(n):
        images[i, dy[i]:dy[i] + 7, dx[i]:dx[i] + 5] = font[labels[i]] * ink[i]
    dropout = rng.random((n, SIDE, SIDE)) < 0.08       # missing ink
    images[dropout] = 0.0
    images += rng.normal(0.0, noise, size=images.shape)
    return np.clip(images, 0.0, 1.0).reshape(n, SIDE * SIDE), labels
