"""Where a walker is, frame by frame: tracks on the ground plane and their body volumes.

A ``Track`` is the per-frame state of one walker: position on the ground (m), heading (rad,
counter-clockwise from world +x), walking weight (0 standing .. 1 walking) and gait phase (strides).
``follow_path`` simulates a walker along waypoints with stops (standing still), smooth turns and
starting/stopping ramps; ``walk_track`` builds the straight or turning walks of person-centred
sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synth.body import NO_CARRY, Carry, GaitParams, Identity, Volumes, _rot_z, pose, stride_length, volumes

RAMP_S = 0.4  # seconds to start or stop walking
WALKING_THRESHOLD = 0.5  # weight above which a frame counts as walking


@dataclass
class Track:
    """Per-frame state, all (T,): position (T, 2) m, heading rad, weight 0..1, phase strides,
    time_s seconds since the walker appeared."""

    position: np.ndarray
    heading: np.ndarray
    weight: np.ndarray
    phase: np.ndarray
    time_s: np.ndarray

    def __len__(self) -> int:
        return len(self.position)

    @property
    def walking(self) -> np.ndarray:
        """(T,) bool ground truth state: True walking, False standing."""
        return self.weight >= WALKING_THRESHOLD


def world_volumes(identity: Identity, gait: GaitParams, track: Track, carry: Carry = NO_CARRY,
                  long_sleeves: bool = True) -> Volumes:
    """Body volumes of a walker along ``track`` in world coordinates."""
    joints = pose(identity.body, gait, track.phase, track.weight, track.time_s)
    vol = volumes(identity.body, joints, carry, long_sleeves)
    trans = np.concatenate([track.position, np.zeros((len(track), 1))], axis=1)
    return vol.transformed(_rot_z(track.heading), trans)


def speed_mps(identity: Identity, gait: GaitParams) -> float:
    """Walking speed in m/s: stride length x cadence."""
    return stride_length(identity.body, gait) * gait.cadence


def walk_track(identity: Identity, gait: GaitParams, centre: np.ndarray, heading: float | np.ndarray,
               weight: np.ndarray, fps: float, phase0: float = 0.0) -> Track:
    """A walk through ``centre`` (reached at the middle frame) with per-frame weights and a heading
    that is constant (straight) or given per frame (turning), radians."""
    weight = np.asarray(weight, dtype=np.float64)
    t = len(weight)
    heading = np.broadcast_to(np.asarray(heading, dtype=np.float64), (t,)).copy()
    step = speed_mps(identity, gait) * weight / fps
    moves = np.stack([np.cos(heading), np.sin(heading)], axis=-1) * step[:, None]
    position = np.concatenate([np.zeros((1, 2)), np.cumsum(moves[:-1], axis=0)])
    position += np.asarray(centre, dtype=np.float64)[None] - position[t // 2]
    phase = phase0 + np.concatenate([[0.0], np.cumsum(gait.cadence * weight[:-1] / fps)])
    return Track(position, heading, weight, phase, np.arange(t) / fps)


def ramp_weights(states: np.ndarray, fps: float) -> np.ndarray:
    """Smooth (T,) weights from (T,) target states (1 walk, 0 stand) with RAMP_S ramps."""
    step = 1.0 / max(RAMP_S * fps, 1.0)
    w = np.empty(len(states))
    cur = float(states[0])
    for i, s in enumerate(states):
        cur = min(cur + step, s) if s > cur else max(cur - step, s)
        w[i] = cur
    return w


def follow_path(identity: Identity, gait: GaitParams, waypoints: np.ndarray, stops: dict[int, float],
                fps: float, max_frames: int, phase0: float = 0.0, turn_rate_deg_s: float = 120.0) -> Track:
    """Simulate a walker from waypoints[0] along the waypoints, standing ``stops[k]`` seconds at
    waypoint k; ends when the last waypoint is reached or after max_frames frames."""
    pts = np.asarray(waypoints, dtype=np.float64)
    speed = speed_mps(identity, gait)
    pos = pts[0].copy()
    d0 = pts[1] - pts[0]
    heading = float(np.arctan2(d0[1], d0[0]))
    w, phase, target, stand_left = 0.0 if stops.get(0, 0) > 0 else 1.0, phase0, 1, float(stops.get(0, 0.0))
    ramp = 1.0 / max(RAMP_S * fps, 1.0)
    max_turn = np.deg2rad(turn_rate_deg_s) / fps
    out_p, out_h, out_w, out_ph = [], [], [], []
    for _ in range(max_frames):
        out_p.append(pos.copy())
        out_h.append(heading)
        out_w.append(w)
        out_ph.append(phase)
        if stand_left > 0:
            stand_left -= 1.0 / fps
            w = max(w - ramp, 0.0)
        else:
            to = pts[target] - pos
            want = float(np.arctan2(to[1], to[0]))
            diff = (want - heading + np.pi) % (2 * np.pi) - np.pi
            heading += float(np.clip(diff, -max_turn, max_turn))
            # Slow down in sharp turns, as people do.
            w = min(w + ramp, 1.0 - 0.5 * min(abs(diff) / np.pi, 1.0))
            w = max(w, 0.0)
            pos = pos + speed * w / fps * np.array([np.cos(heading), np.sin(heading)])
            if np.linalg.norm(pts[target] - pos) < max(0.25, speed / fps):
                if target == len(pts) - 1:
                    break
                stand_left = float(stops.get(target, 0.0))
                target += 1
        phase += gait.cadence * w / fps
    n = len(out_p)
    return Track(np.array(out_p), np.array(out_h), np.array(out_w), np.array(out_ph), np.arange(n) / fps)
