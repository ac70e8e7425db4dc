"""Person-centred synthetic sequences in memory, with full ground truth (no video encode).

Usage::

    from synth.dataset import generate_sequences
    from synth.attributes import ATTRIBUTES  # [(name, [class labels])] in RA-GAR table-1 order

    seqs = generate_sequences(n_identities=20, seqs_per_identity=6, frames=30, seed=0,
                              conditions=("nm", "bg", "cl"), behaviours=("walk", "mixed"))
    s = seqs[0]
    s.identity            # int, stable across sequences (and across calls with the same seed)
    s.condition           # "nm" | "bg" (carrying a bag) | "cl" (wearing a coat)
    s.outfit              # which of the identity's outfits (see ``outfits``)
    s.view_deg            # viewing angle at the middle frame, degrees in [0, 360): 0 the walker
                          #   faces the camera, 90 moves left to right (CASIA-B's view c is 180 - c)
    s.silhouettes         # (T, 64, 44) uint8 0..255: stages.silhouette pretreatment of the
                          #   rendered full-frame visible mask (zeros where ``visible`` is False)
    s.silhouettes64       # (T, 64, 64) uint8 before the side cut (OpenGait pkl layout)
    s.ratios              # (T,) float32 visible box height / 64 (GADER resize ratio)
    s.boxes               # (T, 4) float32 visible box xyxy in the frame
    s.crops               # (T, 128, 64, 3) uint8 BGR stages.silhouette.crop_box of the RGB frame
    s.walking             # (T,) bool  walking (True) or standing (False)
    s.full_body           # (T,) bool  whole body visible (False: frame edge or occluder)
    s.visible             # (T,) bool  the pretreatment kept the frame
    s.attributes          # {attribute name: class index} of the identity (ATTRIBUTES order)
    s.to_message()        # pipeline.messages.SilhouetteSequence

Sequence k of an identity uses ``conditions[k % len(conditions)]`` and, when ``views`` is given,
``views[(k // len(conditions)) % len(views)]`` (CASIA-B-style grids); otherwise a random view in
[0, 360). Behaviours (one drawn per sequence, uniformly, from ``behaviours``):

- ``walk``: walking throughout, full body;
- ``stand``: standing still (postural sway only), full body;
- ``walk_stand``: walking, stopping, maybe walking on (one or two transitions);
- ``turn``: walking and turning by 60-180 degrees around the middle frame (the view changes);
- ``partial_walk`` / ``partial_stand``: as walk / stand, but cut by a frame edge (left, right or
  bottom) or hidden behind a low occluder for part or all of the sequence;
- ``mixed``: random walk/stand stretches, partial with probability one half.

Labels ``walking`` / ``full_body`` come from the simulation and the render (a frame is full body
when the body is inside the image and at least 90 % of its pixels are visible), never from the
behaviour name. By default (``cameras=SURVEILLANCE``) each camera sits 2-5 m high, 5-14 m away,
50-75 degrees of horizontal field of view at ``frame_size``, so ratios vary like a surveillance
camera's; ``CASIA_LIKE`` places it as CASIA-B's (about 1 m high, 4-6 m away). ``population``
(``Population(spread)``) sets how alike identities are, ``outfits`` how many sets of clothes an
identity changes between, ``mask_noise`` adds segmentation-like errors to the masks the
silhouettes come from. Everything is deterministic from ``seed``: identity i and its sequence k
depend only on (seed, i, k).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from pipeline.messages import SilhouetteSequence
from stages.detect.background import box_pixels
from stages.segment.crops import region_around
from stages.silhouette import crop_box, cut_sides, opengait_pretreat
from synth.appearance import Appearance, make_appearance
from synth.background import make_background
from synth.body import DEFAULT_POPULATION, NO_CARRY, Carry, Identity, Population, make_identity, sequence_variation
from synth.camera import Camera, view_angle_deg
from synth.noise import segmentation_noise
from synth.render import FrameRenderer, Occluder, PersonDraw, PersonFrame, project_volumes
from synth.walker import Track, ramp_weights, walk_track, world_volumes

CONDITIONS = ("nm", "bg", "cl")
BEHAVIOURS = ("walk", "stand", "walk_stand", "turn", "partial_walk", "partial_stand", "mixed")
BAGS = ("backpack", "shoulder", "hand")
PARTIAL_KINDS = ("left", "right", "bottom", "occluder")


@dataclass(frozen=True)
class CameraRange:
    """Where the virtual camera of a sequence may be: uniform ranges of height above the ground (m),
    distance to the middle of the walk (m) and horizontal field of view (degrees)."""

    height_m: tuple[float, float] = (2.0, 5.0)
    distance_m: tuple[float, float] = (5.0, 14.0)
    hfov_deg: tuple[float, float] = (50.0, 75.0)


SURVEILLANCE = CameraRange()
CASIA_LIKE = CameraRange(height_m=(0.9, 1.4), distance_m=(4.0, 6.0), hfov_deg=(45.0, 60.0))
# The identity benchmark's site cameras (configs/bench/sites): 3-4.5 m high, people 7-16 m away; in
# 360x480 frames they are 45-100 px tall.
SITE = CameraRange(height_m=(3.0, 4.5), distance_m=(7.0, 16.0), hfov_deg=(55.0, 65.0))
SITE_FRAME_SIZE = (360, 480)
CAMERA_RANGES = {"surveillance": SURVEILLANCE, "casia_like": CASIA_LIKE, "site": SITE}


class BoxSegmenter(Protocol):
    """A crop segmenter the way the pipeline runs it on tracked boxes (stages.segment.pose_crop)."""

    crop_scale: float
    min_height: int

    def box_masks(self, people: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]: ...


# Segmenters synthetic silhouettes can be made with, besides the rendered masks themselves.
SEGMENTERS = ("pose_crop", "pose_refine")


def make_segmenter(name: str | None) -> BoxSegmenter | None:
    """A segmenter of ``SEGMENTERS`` by name, on one thread (None: none, the rendered masks are used).
    ``pose_crop``: the pipeline's BlazePose crop segmenter, its model from the models directory;
    ``pose_refine``: the same with the shipped mask refiner (without a detector's mask: renders have none)."""
    if name is None:
        return None
    if name not in SEGMENTERS:
        raise ValueError(f"unknown segmenter {name!r}; choose from {SEGMENTERS} or none")
    if name == "pose_refine":
        from stages.segment.refine import RefinedPoseSegmenter

        return RefinedPoseSegmenter(threads=1)
    from stages.segment.pose_crop import PoseCropSegmenter

    return PoseCropSegmenter(threads=1)


@dataclass(frozen=True)
class SyntheticSequence:
    """One rendered sequence of one identity with per-frame ground truth (see module docstring)."""

    identity: int
    sequence: int
    condition: str
    outfit: int  # clothes: 0 the identity's usual ones; others: the same person dressed differently
    behaviour: str
    view_deg: float
    silhouettes: np.ndarray
    silhouettes64: np.ndarray
    ratios: np.ndarray
    boxes: np.ndarray
    crops: np.ndarray | None
    walking: np.ndarray
    full_body: np.ndarray
    visible: np.ndarray
    views: np.ndarray  # (T,) float32 per-frame viewing angle, degrees
    attributes: dict[str, int]
    camera: Camera
    fps: float
    masks: np.ndarray | None = None  # (T, H, W) bool full-frame visible masks when asked for

    def __len__(self) -> int:
        return len(self.silhouettes)

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.camera.height, self.camera.width

    def to_message(self) -> SilhouetteSequence:
        """The pipeline's message for this sequence (frame indices 0..T-1)."""
        t = len(self)
        return SilhouetteSequence(
            silhouettes=self.silhouettes, ratios=self.ratios, boxes=self.boxes,
            frame_indices=np.arange(t, dtype=np.int64), pts_s=np.arange(t, dtype=np.float64) / self.fps,
            frame_size=self.frame_size, crops=self.crops)


def generate_identities(n_identities: int, seed: int, population: Population = DEFAULT_POPULATION,
                        first_identity: int = 0) -> list[Identity]:
    """Identities first_identity .. first_identity + n - 1; each depends only on (seed, id)."""
    return [make_identity(i, np.random.default_rng([seed, i, 0]), population)
            for i in range(first_identity, first_identity + n_identities)]


def carry_for(condition: str, rng: np.random.Generator) -> Carry:
    """What condition nm / bg / cl means for one sequence."""
    if condition == "nm":
        return NO_CARRY
    if condition == "bg":
        return Carry(bag=str(rng.choice(BAGS)), bag_size=float(rng.uniform(0.8, 1.25)))
    if condition == "cl":
        return Carry(coat=True)
    raise ValueError(f"unknown condition {condition!r}; choose from {CONDITIONS}")


def generate_sequences(n_identities: int, seqs_per_identity: int, frames: int, seed: int = 0, *,
                       conditions: tuple[str, ...] = CONDITIONS, views: tuple[float, ...] | None = None,
                       behaviours: tuple[str, ...] = ("walk",), frame_size: tuple[int, int] = (480, 640),
                       fps: float = 25.0, crops: bool = True, population: Population = DEFAULT_POPULATION,
                       first_identity: int = 0, identities: list[Identity] | None = None,
                       masks: bool = False, cameras: CameraRange = SURVEILLANCE,
                       mask_noise: float = 0.0, outfits: int = 1,
                       segmenter: BoxSegmenter | None = None) -> list[SyntheticSequence]:
    """Render ``seqs_per_identity`` sequences of ``frames`` frames for each identity.

    identities: use these instead of drawing ``n_identities`` from ``seed`` (e.g. a held-out set).
    frame_size: (height, width) of the virtual camera. crops=False skips RGB (faster).
    masks: keep the full-frame visible masks (T, H, W) bool (memory-heavy; for checks).
    cameras: camera placement ranges (SURVEILLANCE: high and far; CASIA_LIKE: CASIA-B's setting).
    mask_noise: segmentation-like errors on the masks the silhouettes are made from (0 exact,
    1 a typical segmenter; see synth.noise); boxes, ratios and labels keep the exact masks'.
    outfits: each sequence wears one of this many outfits of its identity, drawn at random (1: the
    identity always wears the same clothes; more: clothes change between sequences, as between
    cameras or days).
    segmenter: make the silhouettes as the pipeline does, by this segmenter on the rendered frame
    around the person's box (people shorter than its ``min_height`` get none), instead of from the
    rendered mask; boxes, ratios and labels stay the rendered ones.
    """
    return list(iter_sequences(n_identities, seqs_per_identity, frames, seed, conditions=conditions, views=views,
                               behaviours=behaviours, frame_size=frame_size, fps=fps, crops=crops,
                               population=population, first_identity=first_identity, identities=identities,
                               masks=masks, cameras=cameras, mask_noise=mask_noise, outfits=outfits,
                               segmenter=segmenter))


def iter_sequences(n_identities: int, seqs_per_identity: int, frames: int, seed: int = 0, *,
                   conditions: tuple[str, ...] = CONDITIONS, views: tuple[float, ...] | None = None,
                   behaviours: tuple[str, ...] = ("walk",), frame_size: tuple[int, int] = (480, 640),
                   fps: float = 25.0, crops: bool = True, population: Population = DEFAULT_POPULATION,
                   first_identity: int = 0, identities: list[Identity] | None = None,
                   masks: bool = False, cameras: CameraRange = SURVEILLANCE,
                   mask_noise: float = 0.0, outfits: int = 1,
                   segmenter: BoxSegmenter | None = None) -> Iterator[SyntheticSequence]:
    """``generate_sequences`` one sequence at a time (constant memory for large sets)."""
    if segmenter is not None and mask_noise > 0:
        raise ValueError("mask_noise models a segmenter's errors: give either a segmenter or mask_noise, not both")
    for b in behaviours:
        if b not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {b!r}; choose from {BEHAVIOURS}")
    for c in conditions:
        if c not in CONDITIONS:
            raise ValueError(f"unknown condition {c!r}; choose from {CONDITIONS}")
    people = identities if identities is not None else generate_identities(n_identities, seed, population, first_identity)
    for ident in people:
        for k in range(seqs_per_identity):
            rng = np.random.default_rng([seed, ident.identity, k + 1])
            condition = conditions[k % len(conditions)]
            view = (float(views[(k // len(conditions)) % len(views)]) if views
                    else float(rng.uniform(0.0, 360.0)))
            behaviour = str(rng.choice(behaviours))
            outfit = int(rng.integers(outfits)) if outfits > 1 else 0
            yield render_sequence(ident, k, condition, view, behaviour, frames, rng,
                                  frame_size=frame_size, fps=fps, crops=crops, masks=masks, cameras=cameras,
                                  mask_noise=mask_noise, outfit=outfit, segmenter=segmenter)


def _states(behaviour: str, frames: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """(T,) target walking states and whether the sequence is made partial."""
    states = np.ones(frames)
    partial = behaviour.startswith("partial") or (behaviour == "mixed" and rng.random() < 0.5)
    if behaviour in ("stand", "partial_stand"):
        states[:] = 0
    elif behaviour == "walk_stand":
        cut = int(rng.integers(frames // 4, 3 * frames // 4 + 1))
        states[cut:] = 0
        if rng.random() < 0.5:
            states = 1 - states
        if rng.random() < 0.4 and frames - cut > 8:
            states[cut + int(rng.integers(4, frames - cut)):] = 1 - states[-1]
    elif behaviour == "mixed":
        t = 0
        cur = float(rng.integers(0, 2))
        while t < frames:
            run = int(rng.integers(max(8, frames // 4), max(9, frames // 2)))
            states[t:t + run] = cur
            cur = 1 - cur
            t += run
    return states, partial


def _camera(rng: np.random.Generator, frame_size: tuple[int, int], cameras: CameraRange
            ) -> tuple[Camera, np.ndarray]:
    """A camera at the origin looking at the walk centre; returns (camera, centre on the ground)."""
    h, w = frame_size
    hfov = np.deg2rad(rng.uniform(*cameras.hfov_deg))
    focal = (w / 2) / np.tan(hfov / 2)
    dist = rng.uniform(*cameras.distance_m)
    cam_h = rng.uniform(*cameras.height_m)
    centre = np.array([dist, 0.0])
    return Camera.looking_at(w, h, focal, (0.0, 0.0, cam_h), (dist, 0.0, 0.9)), centre


def _make_partial(rng: np.random.Generator, camera: Camera, track: Track, stature: float,
                  kind: str | None = None) -> tuple[Camera, tuple[Occluder, ...]]:
    """Cut the walker by a frame edge (left, right, bottom) or hide part of it behind a low box."""
    kind = kind or str(rng.choice(PARTIAL_KINDS))
    mid = track.position[len(track) // 2]
    cam_xy = np.asarray(camera.position[:2])
    dist = float(np.linalg.norm(mid - cam_xy))
    if kind in ("left", "right"):
        # Person centre within 20 % of a 0.5 m body width of the edge at the frame furthest out.
        body_w = 0.5 * camera.focal_px / dist
        u = rng.uniform(-0.2, 0.2) * body_w
        if kind == "right":
            u = camera.width - u
        points = np.concatenate([track.position, np.full((len(track), 1), 0.5 * stature)], axis=1)
        for _ in range(4):  # a tilted camera's yaw does not shift points linearly: iterate
            uv, _ = camera.project(points)
            # The frame furthest out is placed at u, so every frame shows part of the walker.
            pu = uv[:, 0].min() if kind == "left" else uv[:, 0].max()
            camera = replace(camera, yaw_deg=float(camera.yaw_deg - np.rad2deg(np.arctan((pu - u) / camera.focal_px))))
        return camera, ()
    if kind == "bottom":
        # Close to the camera: the legs leave the frame through its bottom edge.
        near = rng.uniform(2.2, 4.0)
        cam_h = rng.uniform(1.8, 2.8)
        z_cut = rng.uniform(0.25, 0.55) * stature
        pos = mid + (cam_xy - mid) * near / dist
        tilt = np.rad2deg(np.arctan2(cam_h - z_cut, near) - np.arctan(camera.height / 2 / camera.focal_px))
        return replace(camera, position=(float(pos[0]), float(pos[1]), float(cam_h)), tilt_deg=float(tilt)), ()
    q = rng.uniform(0.35, 0.7)
    cam_h = camera.position[2]
    z_hidden = rng.uniform(0.35, 0.9)
    height = max(0.2, cam_h - q * (cam_h - z_hidden))
    height = min(height, cam_h - 0.3)
    at = track.position[int(rng.integers(0, len(track)))]
    centre = cam_xy + q * (at - cam_xy)
    length = rng.uniform(0.6, 1.6)
    yaw = np.rad2deg(np.arctan2(at[1] - cam_xy[1], at[0] - cam_xy[0])) + 90.0
    return camera, (Occluder((float(centre[0]), float(centre[1])), (length, 0.4, float(height)), float(yaw),
                             tuple(int(v) for v in rng.integers(40, 200, 3))),)


def render_sequence(ident: Identity, k: int, condition: str, view_deg: float, behaviour: str, frames: int,
                    rng: np.random.Generator, frame_size: tuple[int, int] = (480, 640), fps: float = 25.0,
                    crops: bool = True, masks: bool = False, cameras: CameraRange = SURVEILLANCE,
                    mask_noise: float = 0.0, outfit: int = 0,
                    segmenter: BoxSegmenter | None = None) -> SyntheticSequence:
    """One person-centred sequence (see module docstring)."""
    gait = sequence_variation(ident.gait, rng)
    carry = carry_for(condition, rng)
    appearance: Appearance = make_appearance(ident.appearance_seed, carry, outfit)
    camera, centre = _camera(rng, frame_size, cameras)
    states, partial = _states(behaviour, frames, rng)
    weight = ramp_weights(states, fps)
    # Heading so that the camera (at the origin) is seen at view_deg at the middle frame.
    az_to_cam = np.arctan2(-centre[1], -centre[0])
    heading = float(az_to_cam + np.deg2rad(view_deg))
    if behaviour == "turn":
        # Turn by 60-180 degrees (either way) in about a second around the middle frame.
        turn = np.deg2rad(rng.uniform(60.0, 180.0)) * rng.choice([-1.0, 1.0])
        span = max(fps * rng.uniform(0.7, 1.3), 2.0)
        ramp = np.clip((np.arange(frames) - frames / 2) / span + 0.5, 0.0, 1.0)
        smooth = ramp * ramp * (3 - 2 * ramp)
        heading = heading + turn * (smooth - 0.5)
        weight = weight * (1 - 0.25 * np.sin(np.pi * ramp))  # people slow down while turning
    track = walk_track(ident, gait, centre, heading, weight, fps, phase0=float(rng.uniform(0, 1)))
    occluders: tuple[Occluder, ...] = ()
    if partial:
        camera, occluders = _make_partial(rng, camera, track, ident.body.stature)
    vol = world_volumes(ident, gait, track, carry, appearance.long_sleeves)
    projected = project_volumes(camera, vol)
    bg_seed = int(rng.integers(0, 2**31 - 1))
    background = None
    if crops or segmenter is not None:
        # Only the window the walker crosses (with the segmenter's context) is rendered: nothing else is read.
        boxes_all = projected.box[projected.valid]
        if segmenter is not None and len(boxes_all):
            boxes_all = np.array([_region_bounds(b, segmenter.crop_scale) for b in boxes_all])
        region = (int(boxes_all[:, 0].min()) - 2, int(boxes_all[:, 1].min()) - 2,
                  int(boxes_all[:, 2].max()) + 3, int(boxes_all[:, 3].max()) + 3) if len(boxes_all) else None
        background = make_background(camera, bg_seed, region=region)
    renderer = FrameRenderer(camera, background, occluders, noise_sigma=float(rng.uniform(1.0, 4.0)),
                             lighting=(float(rng.uniform(0.0, 0.08)), float(rng.uniform(4.0, 12.0))),
                             fps=fps, seed=int(rng.integers(0, 2**31 - 1)))
    sil64 = np.zeros((frames, 64, 64), np.uint8)
    ratios = np.zeros(frames, np.float32)
    boxes = np.zeros((frames, 4), np.float32)
    crop_arr = np.zeros((frames, 128, 64, 3), np.uint8) if crops else None
    full = np.zeros(frames, bool)
    visible = np.zeros(frames, bool)
    mask_arr = np.zeros((frames,) + tuple(frame_size), bool) if masks else None
    camera_size = (camera.height, camera.width)
    noise_rng = np.random.default_rng([int(rng.integers(0, 2**31 - 1)), 13])
    to_segment: list[tuple[int, np.ndarray, np.ndarray]] = []  # (frame, rendered frame, box)
    for t in range(frames):
        draw = [PersonDraw(0, projected, t, appearance)]
        renderer.draw_labels(draw)
        (pf,) = renderer.person_frames(draw)
        full[t] = pf.full_body
        if pf.box is None:
            continue
        if segmenter is not None:
            sil = None
            if pf.box[3] - pf.box[1] >= segmenter.min_height:
                image = _rendered_around(renderer, draw, pf, t, camera_size, segmenter.crop_scale)
                to_segment.append((t, image, pf.box))
        elif mask_noise > 0:
            noisy, roi = segmentation_noise(pf.mask, pf.roi, camera_size, noise_rng, mask_noise)
            sil = pretreat_mask(noisy, roi, camera.width)
        else:
            sil = pretreat_mask(pf.mask, pf.roi, camera.width)
        if mask_arr is not None:
            x1, y1, x2, y2 = pf.roi
            mask_arr[t, y1:y2, x1:x2] = pf.mask
        boxes[t] = pf.box
        ratios[t] = (pf.box[3] - pf.box[1]) / 64.0
        if sil is not None:
            sil64[t] = sil
            visible[t] = True
        if crops:
            # Only the box is composed: crop_box reads nothing else.
            x1, y1, x2, y2 = (round(float(v)) for v in pf.box)
            patch = renderer.compose_rgb(draw, [pf], t, region=(x1, y1, x2, y2))
            crop_arr[t] = crop_box(patch, pf.box - np.array([x1, y1, x1, y1], np.float32))
    if to_segment:
        segmented = segmenter.box_masks([(image, box) for _, image, box in to_segment])
        for (t, _, box), mask in zip(to_segment, segmented):
            sil = pretreat_mask(mask, box_pixels(box, camera_size), camera.width)
            if sil is not None:
                sil64[t] = sil
                visible[t] = True
    views = view_angle_deg(track.heading, track.position, camera).astype(np.float32)
    return SyntheticSequence(
        identity=ident.identity, sequence=k, condition=condition, outfit=outfit, behaviour=behaviour,
        view_deg=float(view_deg % 360.0), silhouettes=cut_sides(sil64), silhouettes64=sil64, ratios=ratios,
        boxes=boxes, crops=crop_arr, walking=track.walking.copy(), full_body=full, visible=visible, views=views,
        attributes=dict(ident.attributes), camera=camera, fps=fps, masks=mask_arr)


def _region_bounds(box: np.ndarray, crop_scale: float) -> tuple[float, float, float, float]:
    """x1, y1, x2, y2 of the square a crop segmenter cuts around a box (BlazePose's input is square)."""
    region = region_around(box, crop_scale, (1, 1))
    return region.x1, region.y1, region.x1 + region.width, region.y1 + region.height


def _rendered_around(renderer: FrameRenderer, draw: list[PersonDraw], pf: PersonFrame, t: int,
                     frame_size: tuple[int, int], crop_scale: float) -> np.ndarray:
    """A frame (H, W, 3) rendered only where a crop segmenter reads around the person (black elsewhere)."""
    x1, y1, x2, y2 = _region_bounds(pf.box, crop_scale)
    window = (int(np.floor(x1)), int(np.floor(y1)), int(np.ceil(x2)) + 1, int(np.ceil(y2)) + 1)
    frame = np.zeros((*frame_size, 3), np.uint8)
    patch = renderer.compose_rgb(draw, [pf], t, region=window)
    left, top = max(window[0], 0), max(window[1], 0)
    frame[top:top + patch.shape[0], left:left + patch.shape[1]] = patch
    return frame


def pretreat_person(pf: PersonFrame, frame_width: int) -> np.ndarray | None:
    """OpenGait pretreatment of a person's visible mask in its full frame -> (64, 64) or None."""
    return pretreat_mask(pf.mask, pf.roi, frame_width)


def pretreat_mask(mask: np.ndarray, roi: tuple[int, int, int, int], frame_width: int) -> np.ndarray | None:
    """OpenGait pretreatment of a mask over roi (x1, y1, x2, y2) of a frame -> (64, 64) or None.

    Only the rows of the roi are materialised: the pretreatment keeps the rows between the first
    and last foreground row, so the result is identical to running it on the whole frame.
    """
    x1, y1, x2, y2 = roi
    rows = np.zeros((y2 - y1, frame_width), np.uint8)
    rows[:, x1:x2] = mask
    return opengait_pretreat(rows)
