"""Augmentations that make sense for overhead imagery: the 8 symmetries of the square.

An aerial tile has no canonical "up": flips and 90-degree rotations give equally plausible
images and, unlike crops, keep every object the caption names in view. Captions that say
*where* something is ("in the top left", "on the right") would then be wrong, so the same
transform is applied to their direction words: :func:`transform_caption` rewrites
``top``/``bottom``/``left``/``right`` (and pairs such as ``bottom left``) to match the image.
"""

from __future__ import annotations

import re

import torch

_DIR = {"top": (-1, 0), "bottom": (1, 0), "left": (0, -1), "right": (0, 1)}
_PAIR = re.compile(r"\b(?:(top|bottom)\s+(left|right)|(top|bottom|left|right))\b", re.IGNORECASE)


def dihedral(image: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """Rotate a (C, H, W) image ``k`` quarter turns counter-clockwise, then mirror it left-right
    if ``flip``."""
    out = torch.rot90(image, k % 4, dims=(1, 2)) if k % 4 else image
    if flip:
        out = torch.flip(out, dims=(2,))
    return out.contiguous()


def _move(dy: int, dx: int, k: int, flip: bool) -> tuple[int, int]:
    for _ in range(k % 4):  # counter-clockwise: top -> left -> bottom -> right -> top
        dy, dx = -dx, dy
    return (dy, -dx) if flip else (dy, dx)


def _words(dy: int, dx: int) -> str:
    vertical = {-1: "top", 1: "bottom"}.get(dy, "")
    horizontal = {-1: "left", 1: "right"}.get(dx, "")
    return " ".join(w for w in (vertical, horizontal) if w)


def transform_caption(text: str, k: int, flip: bool) -> str:
    """The caption of a tile after :func:`dihedral` with the same ``k`` and ``flip``."""
    if k % 4 == 0 and not flip:
        return text

    def repl(m: re.Match[str]) -> str:
        words = [w.lower() for w in m.groups() if w]
        dy = sum(_DIR[w][0] for w in words)
        dx = sum(_DIR[w][1] for w in words)
        out = _words(*_move(dy, dx, k, flip))
        return out.capitalize() if m.group(0)[0].isupper() else out

    return _PAIR.sub(repl, text)
