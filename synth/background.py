"""Static backgrounds seen through a camera: a textured ground plane and a far scene.

Each pixel's ray is intersected with the ground (z = 0); the hit point (x, y) in metres samples a
tiled procedural texture (paving, asphalt or grass) with ``cv2.remap``, so the ground has correct
perspective. Rays that miss the ground, or hit it beyond ``far_m``, see a far scene: a sky or wall
gradient with building blocks. Deterministic from the seed.
"""

from __future__ import annotations

import cv2
import numpy as np

from synth.camera import Camera

STYLES = ("paving", "asphalt", "grass", "indoor")
_TEX = 256  # texture pixels
_TEX_M = 8.0  # metres covered by one texture tile


def _ground_texture(style: str, rng: np.random.Generator) -> np.ndarray:
    base = {
        "paving": (150, 155, 160), "asphalt": (85, 88, 92), "grass": (60, 125, 75), "indoor": (170, 175, 180),
    }[style]
    tint = rng.normal(0, 12, 3).astype(np.float32)
    noise = rng.standard_normal((_TEX // 4, _TEX // 4), dtype=np.float32)
    noise = cv2.resize(noise, (_TEX, _TEX), interpolation=cv2.INTER_CUBIC)
    fine = rng.standard_normal((_TEX, _TEX), dtype=np.float32)
    amp = np.float32({"paving": 10, "asphalt": 8, "grass": 18, "indoor": 5}[style])
    grey = amp * noise + 0.6 * amp * fine
    if style in ("paving", "indoor"):
        tile = int(rng.choice([16, 32, 64]))  # 0.5 to 2 m tiles
        lines = np.zeros((_TEX, _TEX), np.float32)
        lines[::tile, :] = 1
        lines[:, ::tile] = 1
        grey -= 45 * cv2.GaussianBlur(lines, (3, 3), 0)
    tex = grey[..., None] + (np.asarray(base, np.float32) + tint)
    return cv2.convertScaleAbs(tex)


def _far_scene(camera: Camera, rng: np.random.Generator, style: str) -> np.ndarray:
    h, w = camera.height, camera.width
    top = np.asarray(rng.choice([[200, 170, 140], [210, 200, 190], [150, 140, 130]]), np.float32)
    if style == "indoor":
        top = np.asarray([190, 195, 200], np.float32) + rng.normal(0, 10, 3).astype(np.float32)
    ramp = 1.0 - 0.25 * np.linspace(0, 1, h, dtype=np.float32)[:, None]
    img = np.empty((h, w, 3), np.uint8)
    img[:] = cv2.convertScaleAbs(top[None] * ramp)[:, None, :]
    for _ in range(int(rng.integers(4, 10))):
        x1 = int(rng.integers(-w // 4, w))
        bw = int(rng.integers(w // 10, w // 3))
        y1 = int(rng.integers(0, h // 2))
        colour = tuple(float(c) for c in rng.uniform(60, 200, 3))
        cv2.rectangle(img, (x1, y1), (x1 + bw, h), colour, -1)
        dark = tuple(c * 0.6 for c in colour)
        for wy in range(y1 + 8, h, 24):  # windows or panels
            for wx in range(x1 + 6, x1 + bw - 12, 18):
                cv2.rectangle(img, (wx, wy), (wx + 8, wy + 8), dark, -1)
    return img


def make_background(camera: Camera, seed: int, style: str | None = None, far_m: float = 60.0,
                    region: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 BGR background for ``camera``; style one of STYLES (None: drawn from seed).

    region: (x1, y1, x2, y2) to render only that window (the rest stays black; same pixels as a
    whole-frame render inside it).
    """
    rng = np.random.default_rng([seed, 11])
    style = style or str(rng.choice(STYLES))
    if style not in STYLES:
        raise ValueError(f"unknown background style {style!r}; choose one of {STYLES}")
    h, w = camera.height, camera.width
    x1, y1, x2, y2 = (0, 0, w, h) if region is None else (
        max(region[0], 0), max(region[1], 0), min(region[2], w), min(region[3], h))
    tex = _ground_texture(style, rng)
    far = _far_scene(camera, rng, style)
    lx, ly = rng.uniform(0, w), rng.uniform(0, h)
    out = np.zeros((h, w, 3), np.uint8)
    if x2 <= x1 or y2 <= y1:
        return out
    rays = camera.ground_rays((x1, y1, x2, y2))
    cx, cy, cz = camera.position
    down = rays[..., 2] < -1e-6
    s = np.where(down, np.float32(-cz) / np.where(down, rays[..., 2], np.float32(-1.0)), np.float32(0.0))
    x = s * rays[..., 0]  # relative to the camera
    y = s * rays[..., 1]
    dist = np.hypot(x, y)
    hits = down & (dist < far_m)
    scale = np.float32(_TEX / _TEX_M)
    map_x = np.where(hits, ((x + np.float32(cx)) * scale) % _TEX, 0).astype(np.float32)
    map_y = np.where(hits, ((y + np.float32(cy)) * scale) % _TEX, 0).astype(np.float32)
    ground = cv2.remap(tex, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    # Distance haze: far ground fades towards a grey.
    fade = (np.minimum(np.where(hits, dist, far_m) / np.float32(far_m), 1.0) ** 1.5 * 0.5)[..., None]
    ground = cv2.convertScaleAbs(ground * (1 - fade) + np.float32(150) * fade)
    image = np.where(hits[..., None], ground, far[y1:y2, x1:x2])
    # Uneven lighting across the image (vignetting / a lit side).
    yy, xx = np.ogrid[y1:y2, x1:x2]
    r = np.sqrt((xx - lx) ** 2 + (yy - ly) ** 2).astype(np.float32)
    light = 1.0 + 0.12 * np.cos(r / max(w, h) * np.float32(np.pi))
    out[y1:y2, x1:x2] = cv2.convertScaleAbs(image * light[..., None])
    return out
