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
_TEX = 512  # texture pixels
_TEX_M = 8.0  # metres covered by one texture tile


def _ground_texture(style: str, rng: np.random.Generator) -> np.ndarray:
    base = {
        "paving": (150, 155, 160), "asphalt": (85, 88, 92), "grass": (60, 125, 75), "indoor": (170, 175, 180),
    }[style]
    tint = rng.normal(0, 12, 3)
    noise = rng.normal(0, 1, (_TEX // 8, _TEX // 8, 1))
    noise = cv2.resize(noise, (_TEX, _TEX), interpolation=cv2.INTER_CUBIC)[..., None]
    fine = rng.normal(0, 1, (_TEX, _TEX, 1))
    amp = {"paving": 10, "asphalt": 8, "grass": 18, "indoor": 5}[style]
    tex = np.asarray(base, np.float32) + tint + amp * noise + 0.6 * amp * fine
    if style in ("paving", "indoor"):
        tile = int(rng.choice([32, 64, 128]))  # 0.5 to 2 m tiles
        lines = np.zeros((_TEX, _TEX), np.float32)
        lines[::tile, :] = 1
        lines[:, ::tile] = 1
        lines = cv2.GaussianBlur(lines, (3, 3), 0)
        tex -= 45 * lines[..., None]
    return np.clip(tex, 0, 255).astype(np.uint8)


def _far_scene(camera: Camera, rng: np.random.Generator, style: str) -> np.ndarray:
    h, w = camera.height, camera.width
    top = np.asarray(rng.choice([[200, 170, 140], [210, 200, 190], [150, 140, 130]]), np.float32)
    if style == "indoor":
        top = np.asarray([190, 195, 200], np.float32) + rng.normal(0, 10, 3)
    ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    img = np.broadcast_to(top * (1.0 - 0.25 * ramp), (h, w, 3)).copy()
    for _ in range(int(rng.integers(4, 10))):
        x1 = int(rng.integers(-w // 4, w))
        bw = int(rng.integers(w // 10, w // 3))
        y1 = int(rng.integers(0, h // 2))
        colour = rng.uniform(60, 200, 3)
        img[y1:, max(x1, 0):max(x1 + bw, 0)] = colour
        for wy in range(y1 + 8, h, 24):  # windows or panels
            img[wy:wy + 8, max(x1 + 6, 0):max(x1 + bw - 6, 0):18] *= 0.6
    return np.clip(img, 0, 255).astype(np.uint8)


def make_background(camera: Camera, seed: int, style: str | None = None, far_m: float = 60.0) -> np.ndarray:
    """(H, W, 3) uint8 BGR background for ``camera``; style one of STYLES (None: drawn from seed)."""
    rng = np.random.default_rng([seed, 11])
    style = style or str(rng.choice(STYLES))
    if style not in STYLES:
        raise ValueError(f"unknown background style {style!r}; choose one of {STYLES}")
    rays = camera.ground_rays()
    cz = camera.position[2]
    down = rays[..., 2] < -1e-6
    s = np.where(down, -cz / np.where(down, rays[..., 2], -1.0), 0.0)
    x = camera.position[0] + s * rays[..., 0]
    y = camera.position[1] + s * rays[..., 1]
    dist = np.hypot(x - camera.position[0], y - camera.position[1])
    hits = down & (dist < far_m)
    tex = _ground_texture(style, rng)
    map_x = np.where(hits, (x / _TEX_M * _TEX) % _TEX, 0).astype(np.float32)
    map_y = np.where(hits, (y / _TEX_M * _TEX) % _TEX, 0).astype(np.float32)
    ground = cv2.remap(tex, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    # Distance haze: far ground fades towards a grey.
    fade = np.clip(np.where(hits, dist, far_m) / far_m, 0, 1)[..., None] ** 1.5
    ground = (ground * (1 - 0.5 * fade) + 150 * 0.5 * fade).astype(np.uint8)
    far = _far_scene(camera, rng, style)
    image = np.where(hits[..., None], ground, far)
    # Uneven lighting across the image (vignetting / a lit side).
    yy, xx = np.mgrid[0:camera.height, 0:camera.width].astype(np.float32)
    cx, cy = rng.uniform(0, camera.width), rng.uniform(0, camera.height)
    light = 1.0 + 0.12 * np.cos(np.hypot(xx - cx, yy - cy) / max(camera.width, camera.height) * np.pi)
    return np.clip(image * light[..., None], 0, 255).astype(np.uint8)
