"""Rasterise body volumes: label image, visible masks, boxes and RGB.

Capsules project to the convex hull of two circles (end centres projected exactly, radii f r / z),
ellipsoids to the ellipse of their local affine projection; both become 16-point convex polygons
built for all frames at once with numpy and filled with ``cv2.fillConvexPoly`` (sub-pixel, 4 bits)
far to near. Every pixel of the uint16 label image holds ``(slot + 1) << 6 | material << 3 | shade``:
the person slot gives the visible masks, material and shade (0 near .. 7 far side of the body) give
the colour through a lookup table, so RGB costs one table look-up per person pixel.
Static occluders are drawn into the background and into the label image with code 0 (background)
at their depth, so they hide whoever walks behind them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from synth.appearance import Appearance
from synth.body import MATERIALS, TOP, Volumes
from synth.camera import Camera

_HALF = 8  # points per capsule end
_POINTS = 2 * _HALF
_SHIFT = 4  # sub-pixel bits for cv2 polygon filling
_SCALE = float(1 << _SHIFT)
MAX_SLOTS = 31  # people per frame
_LUT_SIZE = (MAX_SLOTS + 1) << 6
_SHADE_GAIN = 1.14 - 0.055 * np.arange(8)

_CAP_ANGLES = np.linspace(-np.pi / 2, np.pi / 2, _HALF)
_ELL_ANGLES = np.linspace(0, 2 * np.pi, _POINTS, endpoint=False)


@dataclass(frozen=True)
class Occluder:
    """A static box on the ground: centre (x, y) m, size (length, depth, height) m, yaw degrees."""

    centre: tuple[float, float]
    size: tuple[float, float, float]
    yaw_deg: float = 0.0
    colour: tuple[int, int, int] = (90, 110, 120)

    def corners(self) -> np.ndarray:
        """(8, 3) world corners."""
        lx, ly, h = self.size
        yaw = np.deg2rad(self.yaw_deg)
        c, s = np.cos(yaw), np.sin(yaw)
        local = np.array([[x, y, z] for z in (0.0, h) for x in (-lx / 2, lx / 2) for y in (-ly / 2, ly / 2)])
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
        return local @ rot.T + np.array([self.centre[0], self.centre[1], 0.0])

    def to_json(self) -> dict:
        return {"centre": list(self.centre), "size": list(self.size), "yaw_deg": self.yaw_deg}


@dataclass
class ProjectedPerson:
    """One walker's volumes projected for T frames.

    polys: (T, P, 16, 2) int32 pixel coordinates << 4; depth: (T, P) metres (far first when sorted);
    codes: (T, P) uint16 ``material << 3 | shade``; box: (T, 4) float32 amodal xyxy of the body;
    valid: (T,) bool, False where part of the body is behind the camera.
    """

    polys: np.ndarray
    depth: np.ndarray
    codes: np.ndarray
    box: np.ndarray
    valid: np.ndarray

    def __len__(self) -> int:
        return len(self.polys)


def project_volumes(camera: Camera, vol: Volumes) -> ProjectedPerson:
    """Project world-frame volumes of T frames to polygons (vectorised over frames and volumes)."""
    f = camera.focal_px
    pa, za = camera.project(vol.caps_a)
    pb, zb = camera.project(vol.caps_b)
    ra = f * vol.caps_ra / np.maximum(za, 1e-3)
    rb = f * vol.caps_rb / np.maximum(zb, 1e-3)
    d = pb - pa
    length = np.linalg.norm(d, axis=-1, keepdims=True)
    d = np.where(length > 1e-6, d / np.maximum(length, 1e-9), np.array([1.0, 0.0]))
    n = np.stack([-d[..., 1], d[..., 0]], -1)
    cos, sin = np.cos(_CAP_ANGLES)[:, None], np.sin(_CAP_ANGLES)[:, None]
    end_b = pb[..., None, :] + rb[..., None, None] * (cos * d[..., None, :] + sin * n[..., None, :])
    end_a = pa[..., None, :] - ra[..., None, None] * (cos * d[..., None, :] + sin * n[..., None, :])
    caps = np.concatenate([end_b, end_a], axis=-2)  # (T, C, 16, 2)
    caps_depth = (za + zb) / 2 + vol.caps_bias

    # Ellipsoids: local affine projection J A of the semi-axes, outline through a 2x2 Cholesky factor.
    pc = camera.to_camera(vol.ell_c)
    z = np.maximum(pc[..., 2], 1e-3)
    jac = np.zeros(pc.shape[:-1] + (2, 3))
    jac[..., 0, 0] = f / z
    jac[..., 1, 1] = f / z
    jac[..., 0, 2] = -f * pc[..., 0] / z**2
    jac[..., 1, 2] = -f * pc[..., 1] / z**2
    ja = jac @ camera.rotation @ vol.ell_axes  # (T, E, 2, 3)
    m = ja @ np.swapaxes(ja, -1, -2)
    l11 = np.sqrt(np.maximum(m[..., 0, 0], 1e-9))
    l21 = m[..., 1, 0] / l11
    l22 = np.sqrt(np.maximum(m[..., 1, 1] - l21**2, 1e-9))
    ce, se = np.cos(_ELL_ANGLES), np.sin(_ELL_ANGLES)
    centre = np.stack([f * pc[..., 0] / z + camera.width / 2, f * pc[..., 1] / z + camera.height / 2], -1)
    ell = np.stack([centre[..., 0, None] + l11[..., None] * ce,
                    centre[..., 1, None] + l21[..., None] * ce + l22[..., None] * se], -1)
    ell_depth = pc[..., 2] + vol.ell_bias

    polys = np.concatenate([caps, ell], axis=1)
    depth = np.concatenate([caps_depth, ell_depth], axis=1)
    mats = np.concatenate([vol.caps_mat, vol.ell_mat])
    # Shade: the far side of the body is darker (self-shadowing cue for RGB models).
    rel = depth - np.median(depth, axis=1, keepdims=True)
    shade = np.clip(np.round(3 + rel / 0.06), 0, 7).astype(np.uint16)
    codes = (mats.astype(np.uint16)[None] << 3) | shade
    valid = (np.minimum(za.min(axis=1), zb.min(axis=1)) > 0.2) & (pc[..., 2].min(axis=1) > 0.2)
    flat = polys.reshape(len(polys), -1, 2)
    box = np.concatenate([flat.min(axis=1), flat.max(axis=1)], axis=-1).astype(np.float32)
    # Frames with the body behind the camera are never drawn; keep their numbers finite for the cast.
    polys = np.clip(np.nan_to_num(polys * _SCALE), -1e8, 1e8)
    return ProjectedPerson(polys=np.round(polys).astype(np.int32), depth=depth, codes=codes, box=box, valid=valid)


@dataclass
class PersonFrame:
    """What a frame shows of one person.

    roi: (x1, y1, x2, y2) int pixel window of ``mask`` (the amodal box clipped to the image);
    mask: (roi h, roi w) bool visible pixels; box: (4,) float32 xyxy of the visible pixels
    (x2, y2 exclusive) or None when nothing is visible; amodal_box: the whole body, possibly
    outside the image; visible_px / body_px: visible and whole-body pixel counts (body_px counts
    only pixels inside the image when the body is cut by the frame edge; full_body then is False).
    """

    slot: int
    roi: tuple[int, int, int, int]
    mask: np.ndarray
    box: np.ndarray | None
    amodal_box: np.ndarray
    visible_px: int
    body_px: int
    full_body: bool


@dataclass
class PersonDraw:
    """A person to draw in one frame: slot (0..30), projection, frame index into it, appearance."""

    slot: int
    projected: ProjectedPerson
    t: int
    appearance: Appearance | None = None


class FrameRenderer:
    """Draws frames of one camera over a static background (occluders included).

    background: (H, W, 3) uint8 BGR without occluders; noise_sigma: sensor noise std in grey levels;
    lighting: (amplitude, period_s) of a slow global gain change; fps converts frames to seconds.
    """

    def __init__(self, camera: Camera, background: np.ndarray | None = None,
                 occluders: tuple[Occluder, ...] = (), noise_sigma: float = 0.0,
                 lighting: tuple[float, float] = (0.0, 10.0), fps: float = 25.0, seed: int = 0) -> None:
        self.camera = camera
        self.size = (camera.height, camera.width)
        self.label = np.zeros(self.size, dtype=np.uint16)
        self.occluders = occluders
        self._occ_polys: list[np.ndarray] = []
        self._occ_depth: list[float] = []
        for occ in occluders:
            uv, z = camera.project(occ.corners())
            if (z > 0.2).all():
                hull = cv2.convexHull(np.round(uv * _SCALE).astype(np.int32))
                self._occ_polys.append(hull.reshape(-1, 2))
                # The centre depth orders the box against walkers (boxes are small next to the scene).
                self._occ_depth.append(float(np.median(z)))
        if background is not None:
            self.background = background.copy()
            self._draw_occluders(self.background)
        else:
            self.background = None
        self.lighting = lighting
        self.fps = fps
        self._noise_sigma = noise_sigma if background is not None else 0.0
        self._noise_seed = seed
        self._noise: list[tuple[np.ndarray, np.ndarray]] = []
        self._luts: dict[int, tuple[Appearance, np.ndarray]] = {}

    def _noise_bank(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Three frames of Gaussian sensor noise split into positive and negative uint8 parts."""
        if not self._noise and self._noise_sigma > 0:
            rng = np.random.default_rng([self._noise_seed, 77])
            for _ in range(3):
                n = rng.standard_normal(self.size + (3,), dtype=np.float32) * np.float32(self._noise_sigma)
                self._noise.append((np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8)))
        return self._noise

    def _draw_occluders(self, image: np.ndarray) -> None:
        order = np.argsort(self._occ_depth)[::-1]
        for k in order:
            occ = self.occluders[k]
            cv2.fillConvexPoly(image, self._occ_polys[k], occ.colour, cv2.LINE_AA, _SHIFT)
            # Darker top edge gives the box some volume.
            cv2.polylines(image, [self._occ_polys[k]], True, tuple(int(c * 0.6) for c in occ.colour), 1,
                          cv2.LINE_AA, _SHIFT)

    def draw_labels(self, people: list[PersonDraw]) -> None:
        """Fill the label image far to near with every person's volumes and the occluders."""
        label = self.label
        label.fill(0)
        depths, owners, index = [], [], []
        for k, p in enumerate(people):
            depths.append(p.projected.depth[p.t])
            owners.append(np.full(p.projected.depth.shape[1], k))
            index.append(np.arange(p.projected.depth.shape[1]))
        if self._occ_depth:
            depths.append(np.asarray(self._occ_depth))
            owners.append(np.full(len(self._occ_depth), -1))
            index.append(np.arange(len(self._occ_depth)))
        if not depths:
            return
        depth = np.concatenate(depths)
        owner = np.concatenate(owners)
        idx = np.concatenate(index)
        for k in np.argsort(-depth, kind="stable"):
            o, i = owner[k], idx[k]
            if o < 0:
                cv2.fillConvexPoly(label, self._occ_polys[i], 0, cv2.LINE_8, _SHIFT)
            else:
                p = people[o]
                code = ((p.slot + 1) << 6) | int(p.projected.codes[p.t, i])
                cv2.fillConvexPoly(label, p.projected.polys[p.t, i], code, cv2.LINE_8, _SHIFT)

    def person_frames(self, people: list[PersonDraw]) -> list[PersonFrame]:
        """Visible masks and boxes of the people last drawn by ``draw_labels``."""
        h, w = self.size
        out = []
        boxes = [p.projected.box[p.t] for p in people]
        for k, p in enumerate(people):
            ab = boxes[k]
            x1, y1 = max(int(np.floor(ab[0])), 0), max(int(np.floor(ab[1])), 0)
            x2, y2 = min(int(np.ceil(ab[2])) + 1, w), min(int(np.ceil(ab[3])) + 1, h)
            inside = ab[0] >= 0 and ab[1] >= 0 and ab[2] <= w - 1 and ab[3] <= h - 1
            if x2 <= x1 or y2 <= y1:
                out.append(PersonFrame(p.slot, (0, 0, 0, 0), np.zeros((0, 0), bool), None, ab, 0, 0, False))
                continue
            mask = (self.label[y1:y2, x1:x2] >> 6) == (p.slot + 1)
            visible = int(np.count_nonzero(mask))
            overlapped = any(
                j != k and boxes[j][0] < ab[2] and boxes[j][2] > ab[0] and boxes[j][1] < ab[3] and boxes[j][3] > ab[1]
                for j in range(len(people))) or bool(self._occ_polys)
            body = self._body_pixels(p, (x1, y1, x2, y2)) if overlapped else visible
            if visible:
                rows = np.flatnonzero(mask.any(axis=1))
                cols = np.flatnonzero(mask.any(axis=0))
                box = np.array([x1 + cols[0], y1 + rows[0], x1 + cols[-1] + 1, y1 + rows[-1] + 1], np.float32)
            else:
                box = None
            full = bool(inside and visible > 0 and visible >= 0.9 * body
                        and (box[3] - box[1]) >= 0.93 * (ab[3] - ab[1]))
            out.append(PersonFrame(p.slot, (x1, y1, x2, y2), mask, box, ab, visible, body, full))
        return out

    def _body_pixels(self, p: PersonDraw, roi: tuple[int, int, int, int]) -> int:
        """Pixels of the whole body alone inside roi (occlusion by others ignored)."""
        x1, y1, x2, y2 = roi
        canvas = np.zeros((y2 - y1, x2 - x1), dtype=np.uint8)
        offset = np.array([x1, y1], dtype=np.int32) << _SHIFT
        for poly in p.projected.polys[p.t]:
            cv2.fillConvexPoly(canvas, poly - offset, 1, cv2.LINE_8, _SHIFT)
        return int(np.count_nonzero(canvas))

    def _person_lut(self, appearance: Appearance, gain: float) -> np.ndarray:
        """(64, 3) uint8 colours of ``material << 3 | shade`` codes for one appearance."""
        key = id(appearance)
        base = self._luts.get(key)
        if base is None or base[0] is not appearance:
            cols = appearance.colours.astype(np.float32)
            table = np.zeros((64, 3), np.float32)
            for mat in range(len(MATERIALS)):
                table[mat << 3:(mat << 3) + 8] = cols[mat][None] * _SHADE_GAIN[:, None]
            base = (appearance, table)
            self._luts[key] = base
        return np.clip(base[1] * gain, 0, 255).astype(np.uint8)

    def gain(self, frame_index: int) -> float:
        amp, period = self.lighting
        return float(1.0 + amp * np.sin(2 * np.pi * frame_index / (self.fps * period)))

    def compose_rgb(self, people: list[PersonDraw], frames: list[PersonFrame], frame_index: int,
                    region: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """BGR uint8 frame: background, people coloured through the label image, sensor noise.

        region: (x1, y1, x2, y2) to compose only that window (returned alone); None: whole frame.
        """
        if self.background is None:
            raise ValueError("this renderer has no background: construct it with one to render RGB")
        h, w = self.size
        rx1, ry1, rx2, ry2 = (0, 0, w, h) if region is None else (
            max(region[0], 0), max(region[1], 0), min(region[2], w), min(region[3], h))
        g = self.gain(frame_index)
        bg = self.background[ry1:ry2, rx1:rx2]
        image = bg.copy() if g == 1.0 else cv2.convertScaleAbs(bg, alpha=g)
        lut = np.zeros((_LUT_SIZE, 3), dtype=np.uint8)
        for p in people:
            base = (p.slot + 1) << 6
            lut[base:base + 64] = self._person_lut(p.appearance, g)
        for p, pf in zip(people, frames):
            x1, y1 = max(pf.roi[0], rx1), max(pf.roi[1], ry1)
            x2, y2 = min(pf.roi[2], rx2), min(pf.roi[3], ry2)
            if x2 <= x1 or y2 <= y1:
                continue
            sub = self.label[y1:y2, x1:x2]
            fg = sub > 0
            view = image[y1 - ry1:y2 - ry1, x1 - rx1:x2 - rx1]
            view[fg] = lut[sub[fg]]
            if p.appearance.stripes > 0:
                ab = pf.amodal_box
                period = max(2.0, p.appearance.stripes * (ab[3] - ab[1]))
                rows = ((np.arange(y1, y2) - ab[1]) / period).astype(np.int64) % 2 == 1
                top = ((sub >> 3) == (((p.slot + 1) << 3) | TOP)) & rows[:, None]
                shade = _SHADE_GAIN[(sub[top] & 7).astype(np.int64)]
                colour = np.asarray(p.appearance.stripe_colour, np.float32)[None] * shade[:, None] * g
                view[top] = np.clip(colour, 0, 255).astype(np.uint8)
        if self._noise_sigma > 0:
            if region is None:
                pos, neg = self._noise_bank()[frame_index % 3]
            else:  # fresh noise for a small window is cheaper than a whole-frame bank
                rng = np.random.default_rng([self._noise_seed, 78, frame_index])
                n = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(self._noise_sigma)
                pos, neg = np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8)
            cv2.add(image, pos, dst=image)
            cv2.subtract(image, neg, dst=image)
        return image
