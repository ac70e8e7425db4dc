"""Surveillance scenes: a site seen by one or several cameras, walkers crossing it, full ground truth.

A ``SiteConfig`` (YAML, see configs/synth/) fixes the cameras, static occluders, the identities and
how walkers behave. ``plan_walkers`` draws walker visits: each visit is one identity in one outfit
and condition, entering the site at its border, walking through 1-3 waypoints (some inside a
camera's view), possibly standing still at some of them, and leaving at the border; identities come
back for several visits, sometimes in other clothes. ``crossings`` adds pairs that walk through the
same point of a camera's view at the same time from opposite sides. ``render_site`` draws every
camera's frames and ground truth; ``write_site`` writes the H.264 videos and ``groundtruth.json``;
``scene_sequences`` cuts a rendered scene back into per-camera, per-visit tracks (cross-camera
identity data).

Ground truth per camera frame and visible person: identity, visit, box (visible pixels, xyxy,
x2/y2 exclusive), amodal box (whole body), state (walking/standing), full_body, visible fraction,
view angle, ground position and the visible mask as a run-length code (``synth.groundtruth``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from stages.silhouette import crop_box, cut_sides
from synth.appearance import Appearance, make_appearance
from synth.attributes import attribute_labels
from synth.background import make_background
from synth.body import Carry, GaitParams, Identity, Population, sequence_variation
from synth.camera import Camera, view_angle_deg
from synth.dataset import SyntheticSequence, carry_for, generate_identities, pretreat_mask
from synth.groundtruth import decode_mask, encode_mask, load_groundtruth
from synth.render import MAX_SLOTS, FrameRenderer, Occluder, PersonDraw, PersonFrame, ProjectedPerson, project_volumes
from synth.video import VideoWriter, iter_video
from synth.walker import Track, follow_path, speed_mps, world_volumes


def _from_dict(cls, data: dict[str, Any], where: str):
    """Dataclass from a config mapping; unknown keys are an error naming the section."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(names)}")
    return cls(**data)


@dataclass(frozen=True)
class CameraConfig:
    name: str
    position: tuple[float, float, float]
    target: tuple[float, float, float]
    hfov_deg: float = 60.0
    background: str | None = None  # one of synth.background.STYLES, None: drawn from the seed


@dataclass(frozen=True)
class OccluderConfig:
    centre: tuple[float, float]
    size: tuple[float, float, float]
    yaw_deg: float = 0.0
    colour: tuple[int, int, int] = (90, 110, 120)


@dataclass(frozen=True)
class SiteConfig:
    """Everything that defines a scene. Lengths in metres, times in seconds."""

    seed: int = 0
    fps: float = 25.0
    duration_s: float = 10.0
    frame_size: tuple[int, int] = (480, 640)  # (height, width)
    site_size: tuple[float, float] = (24.0, 16.0)  # ground rectangle centred on the origin
    cameras: tuple[CameraConfig, ...] = ()
    occluders: tuple[OccluderConfig, ...] = ()
    identities: int = 4
    visits: int = 6
    crossings: int = 1
    stand_probability: float = 0.3  # chance that a visit stands still at one of its waypoints
    stand_s: tuple[float, float] = (1.0, 4.0)
    outfit_change_probability: float = 0.3
    conditions: tuple[str, ...] = ("nm", "nm", "bg", "cl")
    population_spread: float = 1.0
    noise_sigma: float = 2.5
    lighting: tuple[float, float] = (0.06, 12.0)  # (gain amplitude, period in s)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> SiteConfig:
        data = dict(data)
        cams = tuple(_from_dict(CameraConfig, c, f"cameras[{i}]") for i, c in enumerate(data.pop("cameras", [])))
        occs = tuple(_from_dict(OccluderConfig, o, f"occluders[{i}]") for i, o in enumerate(data.pop("occluders", [])))
        for key in ("frame_size", "site_size", "stand_s", "conditions", "lighting"):
            if key in data:
                data[key] = tuple(data[key])
        cfg = _from_dict(SiteConfig, {**data, "cameras": cams, "occluders": occs}, "site config")
        if not cfg.cameras:
            raise ValueError("site config: at least one camera is needed under 'cameras'")
        return cfg

    @property
    def n_frames(self) -> int:
        return round(self.duration_s * self.fps)

    def make_cameras(self) -> list[Camera]:
        h, w = self.frame_size
        return [Camera.looking_at(w, h, (w / 2) / np.tan(np.deg2rad(c.hfov_deg) / 2), tuple(c.position),
                                  tuple(c.target), c.name) for c in self.cameras]

    def make_occluders(self) -> tuple[Occluder, ...]:
        return tuple(Occluder(tuple(o.centre), tuple(o.size), o.yaw_deg, tuple(o.colour)) for o in self.occluders)


@dataclass
class Visit:
    """One walker: an identity passing through the site once."""

    visit: int
    identity: Identity
    condition: str
    outfit: int
    start_frame: int
    gait: GaitParams
    carry: Carry
    appearance: Appearance
    waypoints: np.ndarray  # (K, 2) ground points, m
    stops: dict[int, float]  # waypoint index -> seconds standing there
    track: Track = field(repr=False)

    def to_json(self) -> dict:
        return {
            "visit": self.visit, "identity": self.identity.identity, "condition": self.condition,
            "outfit": self.outfit, "start_frame": self.start_frame, "frames": len(self.track),
            "carry": asdict(self.carry), "appearance": self.appearance.to_json(),
            "gait": asdict(self.gait), "waypoints": self.waypoints.tolist(),
            "stops_s": {str(k): v for k, v in self.stops.items()},
        }


def _border_point(rng: np.random.Generator, size: tuple[float, float]) -> np.ndarray:
    hx, hy = size[0] / 2, size[1] / 2
    side = int(rng.integers(4))
    t = rng.uniform(-1, 1)
    return np.array([[-hx, t * hy], [hx, t * hy], [t * hx, -hy], [t * hx, hy]][side])


def _view_point(rng: np.random.Generator, cam: Camera, spread: float = 3.0) -> np.ndarray:
    """A ground point near where the camera's optical axis meets the ground."""
    yaw, tilt = np.deg2rad(cam.yaw_deg), np.deg2rad(max(cam.tilt_deg, 3.0))
    reach = min(cam.position[2] / np.tan(tilt), 20.0)
    p = np.array(cam.position[:2]) + reach * np.array([np.cos(yaw), np.sin(yaw)])
    return p + rng.uniform(-spread, spread, 2)


def plan_walkers(cfg: SiteConfig, cameras: list[Camera], identities: list[Identity]) -> list[Visit]:
    """Draw the visits of a scene (deterministic from cfg.seed)."""
    n_frames = cfg.n_frames
    visits: list[Visit] = []
    outfits: dict[int, int] = {}

    busy_until: dict[int, int] = {}  # identity -> first frame after its last visit

    def add(ident: Identity, waypoints: np.ndarray, stops: dict[int, float], start: int, vrng) -> None:
        # One person is in one place at a time: a repeated identity comes back after its last visit.
        if ident.identity in busy_until:
            start = max(start, busy_until[ident.identity] + int(vrng.uniform(1, 4) * cfg.fps))
        if start >= n_frames - 1:
            return
        condition = str(vrng.choice(cfg.conditions))
        if ident.identity in outfits and vrng.random() < cfg.outfit_change_probability:
            outfits[ident.identity] += 1
        outfit = outfits.setdefault(ident.identity, 0)
        gait = sequence_variation(ident.gait, vrng)
        carry = carry_for(condition, vrng)
        app = make_appearance(ident.appearance_seed, carry, outfit)
        track = follow_path(ident, gait, waypoints, stops, cfg.fps, n_frames - start, float(vrng.uniform(0, 1)))
        visits.append(Visit(len(visits), ident, condition, outfit, start, gait, carry, app, waypoints, stops, track))
        busy_until[ident.identity] = start + len(track)

    for c in range(cfg.crossings):
        vrng = np.random.default_rng([cfg.seed, 7, c])
        cam = cameras[c % len(cameras)]
        meet = _view_point(vrng, cam, spread=1.0)
        angle = vrng.uniform(0, np.pi)
        d = np.array([np.cos(angle), np.sin(angle)])
        meet_frame = int(vrng.uniform(0.3, 0.7) * n_frames)
        pair = vrng.choice(len(identities), size=2, replace=len(identities) < 2)
        for sign, who in zip((1, -1), pair):
            ident = identities[int(who)]
            approach = 4.0 + vrng.uniform(0, 2)
            # Lateral offsets of 0.3 m keep the two bodies from interpenetrating.
            off = np.array([-d[1], d[0]]) * 0.3 * sign
            waypoints = np.array([meet - sign * approach * d + off, meet + off, meet + sign * 8.0 * d + off])
            speed = speed_mps(ident, ident.gait)
            start = max(0, meet_frame - int(approach / max(speed, 0.3) * cfg.fps))
            add(ident, waypoints, {}, start, vrng)
    for v in range(cfg.visits):
        vrng = np.random.default_rng([cfg.seed, 6, v])
        ident = identities[v % len(identities)]
        middle = [_view_point(vrng, cameras[int(vrng.integers(len(cameras)))]) for _ in range(int(vrng.integers(1, 4)))]
        waypoints = np.array([_border_point(vrng, cfg.site_size), *middle, _border_point(vrng, cfg.site_size)])
        stops = {}
        if vrng.random() < cfg.stand_probability:
            stops[int(vrng.integers(1, len(waypoints) - 1))] = float(vrng.uniform(*cfg.stand_s))
        # Starts spread over the clip; the first visits start inside the view to populate frame 0.
        start = int(vrng.uniform(0, 0.6) * n_frames)
        if v < 2:
            waypoints = waypoints[1:]
            start = 0
        add(ident, waypoints, stops, start, vrng)
    return visits


@dataclass
class CameraFrame:
    """One rendered frame of one camera: the image (or None) and the people it shows."""

    index: int
    image: np.ndarray | None
    people: list[tuple[Visit, PersonFrame]]


def _renderer(cfg: SiteConfig, camera: Camera, camera_index: int, rgb: bool) -> FrameRenderer:
    style = cfg.cameras[camera_index].background if camera_index < len(cfg.cameras) else None
    background = make_background(camera, cfg.seed * 101 + camera_index, style) if rgb else None
    return FrameRenderer(camera, background, cfg.make_occluders(), noise_sigma=cfg.noise_sigma,
                         lighting=cfg.lighting, fps=cfg.fps, seed=cfg.seed * 31 + camera_index)


def site_background(cfg: SiteConfig, camera_index: int) -> np.ndarray:
    """(H, W, 3) uint8 static background of one camera, occluders included (before noise and lighting)."""
    return _renderer(cfg, cfg.make_cameras()[camera_index], camera_index, True).background


def render_camera(cfg: SiteConfig, camera: Camera, visits: list[Visit], rgb: bool = True,
                  camera_index: int = 0) -> Iterator[CameraFrame]:
    """Frames of one camera in order (generator: constant memory for long clips). At most
    MAX_SLOTS (31) people are drawn per frame, in visit order."""
    n_frames = cfg.n_frames
    renderer = _renderer(cfg, camera, camera_index, rgb)
    projected: list[ProjectedPerson] = [project_volumes(camera, world_volumes(v.identity, v.gait, v.track, v.carry,
                                                                              v.appearance.long_sleeves)) for v in visits]
    h, w = camera.height, camera.width
    for f in range(n_frames):
        draws, owners = [], []
        for k, v in enumerate(visits):
            t = f - v.start_frame
            if t < 0 or t >= len(v.track):
                continue
            p = projected[k]
            box = p.box[t]
            if not p.valid[t] or box[2] < 0 or box[0] >= w or box[3] < 0 or box[1] >= h:
                continue
            if len(draws) >= MAX_SLOTS:
                break
            draws.append(PersonDraw(len(draws), p, t, v.appearance))
            owners.append(v)
        renderer.draw_labels(draws)
        frames = renderer.person_frames(draws)
        image = renderer.compose_rgb(draws, frames, f) if rgb else None
        yield CameraFrame(f, image, [(v, pf) for v, pf in zip(owners, frames) if pf.visible_px > 0])


def person_record(visit: Visit, pf: PersonFrame, camera: Camera, frame: int, with_mask: bool = True) -> dict:
    """Ground truth of one visible person in one frame (JSON-ready)."""
    t = frame - visit.start_frame
    tr = visit.track
    rec = {
        "identity": visit.identity.identity, "visit": visit.visit,
        "box": [float(v) for v in pf.box], "amodal_box": [round(float(v), 2) for v in pf.amodal_box],
        "state": "walking" if tr.walking[t] else "standing", "full_body": pf.full_body,
        "visible_fraction": round(pf.visible_px / max(pf.body_px, 1), 3),
        "view_deg": round(float(view_angle_deg(tr.heading[t], tr.position[t], camera)), 1),
        "position_m": [round(float(v), 3) for v in tr.position[t]],
    }
    if with_mask:
        rec["mask"] = encode_mask(pf.mask, pf.roi)
    return rec


def write_site(cfg: SiteConfig, out_dir: str | Path, video: bool = True, masks: bool = True) -> Path:
    """Render all cameras of a site: <out>/<camera>.mp4 and <out>/groundtruth.json. Returns the JSON path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cameras = cfg.make_cameras()
    identities = generate_identities(cfg.identities, cfg.seed, Population(spread=cfg.population_spread))
    visits = plan_walkers(cfg, cameras, identities)
    gt: dict[str, Any] = {
        "format": "gaitscope-synth-groundtruth/1",
        "seed": cfg.seed, "fps": cfg.fps, "frame_size": list(cfg.frame_size),
        "n_frames": cfg.n_frames,
        "cameras": [c.to_json() for c in cameras],
        "occluders": [o.to_json() for o in cfg.make_occluders()],
        "identities": [_identity_json(i) for i in identities],
        "visits": [v.to_json() for v in visits],
        "frames": {},
    }
    for ci, cam in enumerate(cameras):
        records = []
        writer = VideoWriter(out / f"{cam.name}.mp4", cfg.fps, cfg.frame_size) if video else None
        try:
            for cf in render_camera(cfg, cam, visits, rgb=video, camera_index=ci):
                if writer is not None:
                    writer.write(cf.image)
                records.append([person_record(v, pf, cam, cf.index, masks) for v, pf in cf.people])
        finally:
            if writer is not None:
                writer.close()
        gt["frames"][cam.name] = records
    path = out / "groundtruth.json"
    path.write_text(json.dumps(gt, separators=(",", ":")))
    return path


def _identity_json(ident: Identity) -> dict:
    out = ident.to_json()
    out["attribute_labels"] = attribute_labels(ident.attributes)
    return out


def scene_sequences(scene_dir: str | Path, min_frames: int = 8) -> Iterator[SyntheticSequence]:
    """Per camera and visit, the walker's track in a rendered scene as a SyntheticSequence.

    Reads ``groundtruth.json`` and the camera videos written by ``write_site`` (masks must be in
    the JSON). Silhouettes come from the ground-truth visible masks through the same pretreatment
    as ``synth.dataset``; crops from the decoded H.264 frames (what a pipeline would see).
    ``sequence`` is the visit, ``behaviour`` is ``"scene:<camera>"``, ``view_deg`` the median view.
    Tracks with fewer than min_frames visible frames are skipped. The same identity appears in
    several cameras and visits, sometimes in other clothes: cross-camera identity data.
    """
    scene_dir = Path(scene_dir)
    gt = load_groundtruth(scene_dir / "groundtruth.json")
    attributes = {i["identity"]: i["attributes"] for i in gt["identities"]}
    visits = {v["visit"]: v for v in gt["visits"]}
    for cam_json in gt["cameras"]:
        name = cam_json["name"]
        camera = Camera(cam_json["width"], cam_json["height"], cam_json["focal_px"], tuple(cam_json["position"]),
                        cam_json["yaw_deg"], cam_json["tilt_deg"], name)
        video = scene_dir / f"{name}.mp4"
        if not video.is_file():
            raise FileNotFoundError(f"{video} not found: render the scene with video to export its tracks")
        tracks: dict[int, list[tuple]] = {}
        for index, (image, people) in enumerate(zip(iter_video(video), gt["frames"][name])):
            for rec in people:
                if "mask" not in rec:
                    raise ValueError(f"{scene_dir}: ground truth without masks; render without --no-masks")
                mask = decode_mask(rec["mask"])
                sil = pretreat_mask(mask, tuple(rec["mask"]["roi"]), camera.width)
                box = np.asarray(rec["box"], np.float32)
                tracks.setdefault(rec["visit"], []).append((index, sil, box, crop_box(image, box), rec))
        for visit_id, entries in sorted(tracks.items()):
            visible = np.array([e[1] is not None for e in entries])
            if visible.sum() < min_frames:
                continue
            visit = visits[visit_id]
            sil64 = np.stack([e[1] if e[1] is not None else np.zeros((64, 64), np.uint8) for e in entries])
            views = np.array([e[4]["view_deg"] for e in entries], np.float32)
            yield SyntheticSequence(
                identity=visit["identity"], sequence=visit_id, condition=visit["condition"], outfit=visit["outfit"],
                behaviour=f"scene:{name}", view_deg=float(np.median(views)), silhouettes=cut_sides(sil64),
                silhouettes64=sil64, ratios=np.array([(e[2][3] - e[2][1]) / 64.0 for e in entries], np.float32),
                boxes=np.stack([e[2] for e in entries]), crops=np.stack([e[3] for e in entries]),
                walking=np.array([e[4]["state"] == "walking" for e in entries]),
                full_body=np.array([e[4]["full_body"] for e in entries]), visible=visible, views=views,
                attributes=dict(attributes[visit["identity"]]), camera=camera, fps=float(gt["fps"]))
