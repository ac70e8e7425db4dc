"""The articulated walker: identity parameters, a parametric gait cycle and body volumes.

Body frame (metres): x forward, y left, z up; the origin is below the pelvis on the ground.
A walker is ``Identity`` = ``BodyParams`` (proportions, widths, posture, hair) + ``GaitParams``
(cadence, stride, joint-curve amplitudes and phases, asymmetries). ``pose`` turns a gait phase and a
walking weight per frame into joint positions (forward kinematics, vectorised over frames) and
``volumes`` dresses them with capsules and ellipsoids (``Volumes``), the only thing the renderer
needs. The sole of the lowest foot always touches the ground, so the vertical bounce of the pelvis
comes out of the leg kinematics instead of being painted on.

Gait phase ``phase`` is in strides (one unit = one full cycle, left heel strike at integers); the
right leg runs half a cycle behind. ``weight`` in [0, 1] blends from the standing pose (0) to the
full gait (1): standing still, starting and stopping use the same model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from synth.attributes import HEIGHT_EDGES_M, sample_attributes

# Materials of body volumes; the renderer colours them per person.
SKIN, HAIR, TOP, BOTTOM, SHOES, BAG = range(6)
MATERIALS = ("skin", "hair", "top", "bottom", "shoes", "bag")

JOINTS = (
    "pelvis", "spine", "neck", "head",
    "l_shoulder", "l_elbow", "l_wrist", "l_hand", "r_shoulder", "r_elbow", "r_wrist", "r_hand",
    "l_hip", "l_knee", "l_ankle", "l_heel", "l_toe", "r_hip", "r_knee", "r_ankle", "r_heel", "r_toe",
)
J = {name: i for i, name in enumerate(JOINTS)}

_STATURE_RANGES_M = (1.45,) + HEIGHT_EDGES_M + (1.97,)
_MASS_FACTOR = (0.82, 1.0, 1.2, 1.45)


@dataclass(frozen=True)
class BodyParams:
    """Static body of one identity. Lengths in metres, angles in degrees."""

    stature: float = 1.75
    female: bool = False
    mass: float = 1.0  # radius multiplier of torso and limbs
    belly: float = 0.0  # extra forward depth of the abdomen, m
    shoulder_width: float = 0.35  # distance between shoulder joints, m
    hip_width: float = 0.175  # distance between hip joints, m
    leg_ratio: float = 1.0  # leg length multiplier (proportions)
    arm_ratio: float = 1.0
    head_scale: float = 1.0
    trunk_lean: float = 3.0  # forward pitch of the lumbar spine
    hump: float = 0.0  # extra flexion of the thoracic spine
    neck_flex: float = 4.0  # forward pitch of the neck
    shoulder_offset: float = 0.0  # left shoulder minus right shoulder height, m
    hair: int = 1  # 0 bald, 1 short, 2 long, 3 bun
    hair_volume: float = 1.0


@dataclass(frozen=True)
class GaitParams:
    """Motion of one identity. Angles in degrees, cadence in strides per second."""

    cadence: float = 1.05
    stride_factor: float = 1.5  # stride length / leg length
    hip_offset: float = 5.0  # mean hip flexion
    knee_stance: float = 15.0  # loading-response knee flexion peak
    knee_swing: float = 60.0  # swing knee flexion peak
    knee_swing_phase: float = 0.7
    push_off: float = 16.0  # ankle plantar flexion at push-off
    arm_amp: float = 20.0  # shoulder swing amplitude (half range)
    arm_offset: float = 0.0  # mean shoulder flexion
    arm_plane: float = 0.0  # swing plane yaw, + swings the hand towards the midline
    arm_abduction: float = 8.0
    upper_arm_gain: float = 1.0  # 1: swing from the shoulder, small: forearm swings from the elbow
    elbow_flex: float = 18.0
    arm_lag: float = 0.03  # arm phase lag behind the opposite leg, strides
    arm_asym: float = 0.0  # left arm amplitude = (1 + arm_asym) x, right = (1 - arm_asym) x
    hands: int = 0  # 0 natural, 1 in pockets, 2 behind back, 3 crossed in front
    pelvis_rotation: float = 5.0
    lateral_sway: float = 0.02  # m
    toe_out: float = 5.0  # foot yaw, + points the toes outwards
    step_asym: float = 0.0  # left hip amplitude = (1 + step_asym) x, right = (1 - step_asym) x
    limp_side: int = 0  # 0 none, +1 left leg, -1 right leg
    limp: float = 0.0  # 0..1 severity
    drag: float = 0.0  # 0..1 foot dragging


@dataclass(frozen=True)
class Identity:
    """A stable walker: attribute classes and the parameters that realise them."""

    identity: int
    attributes: dict[str, int]
    body: BodyParams
    gait: GaitParams
    appearance_seed: int

    def to_json(self) -> dict:
        return {
            "identity": self.identity,
            "attributes": dict(self.attributes),
            "body": asdict(self.body),
            "gait": asdict(self.gait),
            "appearance_seed": self.appearance_seed,
        }


@dataclass(frozen=True)
class Carry:
    """What a walker carries or wears over the base clothes for one sequence."""

    coat: bool = False
    bag: str = "none"  # "none" | "backpack" | "shoulder" | "hand"
    bag_size: float = 1.0


NO_CARRY = Carry()


@dataclass
class Volumes:
    """Body volumes over T frames in one coordinate frame.

    caps_a, caps_b: (T, C, 3) capsule end centres; caps_ra, caps_rb: (C,) radii at the ends, m.
    ell_c: (T, E, 3) ellipsoid centres; ell_axes: (T, E, 3, 3) columns are the semi-axis vectors.
    *_mat: material per volume; *_bias: depth bias in metres added when sorting far-to-near
    (hair sits behind the head, the bag behind or beside the body).
    """

    caps_a: np.ndarray
    caps_b: np.ndarray
    caps_ra: np.ndarray
    caps_rb: np.ndarray
    caps_mat: np.ndarray
    caps_bias: np.ndarray
    ell_c: np.ndarray
    ell_axes: np.ndarray
    ell_mat: np.ndarray
    ell_bias: np.ndarray

    def transformed(self, rot: np.ndarray, trans: np.ndarray) -> Volumes:
        """Apply per-frame rigid motions: rot (T, 3, 3), trans (T, 3)."""
        return replace(
            self,
            caps_a=np.einsum("tij,tcj->tci", rot, self.caps_a) + trans[:, None],
            caps_b=np.einsum("tij,tcj->tci", rot, self.caps_b) + trans[:, None],
            ell_c=np.einsum("tij,tej->tei", rot, self.ell_c) + trans[:, None],
            ell_axes=np.einsum("tij,tejk->teik", rot, self.ell_axes),
        )


def _bump(phase: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Periodic Gaussian bump on the unit cycle."""
    d = (phase - centre + 0.5) % 1.0 - 0.5
    return np.exp(-0.5 * (d / width) ** 2)


def _rot_z(angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    z, o = np.zeros_like(c), np.ones_like(c)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def _rotate_z(v: np.ndarray, angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1], v[..., 2]], -1)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def _up_dir(pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Upward segment direction leaning forward by pitch and to the left by roll (radians)."""
    return _unit(np.stack([np.sin(pitch) * np.cos(roll), np.sin(roll), np.cos(pitch) * np.cos(roll)], -1))


def segment_lengths(body: BodyParams) -> dict[str, float]:
    """Segment lengths in metres from stature (anthropometric fractions) and proportion ratios."""
    h = body.stature
    leg = body.leg_ratio
    return {
        "ankle": 0.039 * h,
        "shank": 0.246 * h * leg,
        "thigh": 0.245 * h * leg,
        "foot": 0.152 * h,
        "lumbar": 0.12 * h,
        "thorax": 0.175 * h,
        "neck": 0.05 * h,
        "head": 0.065 * h * body.head_scale,
        "upper_arm": 0.186 * h * body.arm_ratio,
        "forearm": 0.146 * h * body.arm_ratio,
        "hand": 0.07 * h,
        "leg": (0.039 + 0.491 * leg) * h,
    }


def stride_length(body: BodyParams, gait: GaitParams) -> float:
    """Stride length in metres: tied to leg length."""
    return gait.stride_factor * segment_lengths(body)["leg"]


def pose(body: BodyParams, gait: GaitParams, phase: np.ndarray, weight: np.ndarray,
         time_s: np.ndarray | None = None) -> np.ndarray:
    """Joint positions (T, len(JOINTS), 3) in the body frame for gait phase (T,) and weight (T,).

    time_s (T,) drives the slow postural sway of a standing person (absent: no sway).
    """
    phase = np.asarray(phase, dtype=np.float64)
    w = np.clip(np.asarray(weight, dtype=np.float64), 0.0, 1.0)
    t = len(phase)
    seg = segment_lengths(body)
    rad = np.deg2rad
    out = np.zeros((t, len(JOINTS), 3))

    # Hip amplitude from the stride: half a stride = 2 L sin(A) (symmetric swing of both legs).
    stride = stride_length(body, gait)
    amp_hip = np.rad2deg(np.arcsin(np.clip(stride / (4.0 * seg["leg"]), 0.0, 0.9)))
    limp = gait.limp * (gait.limp_side != 0)

    # Pelvis: rotation, lateral sway, standing sway; height fixed at the end by ground contact.
    two_pi_phase = 2 * np.pi * phase
    pelvis_yaw = -rad(gait.pelvis_rotation) * np.cos(two_pi_phase) * w
    sway_t = np.zeros(t) if time_s is None else np.asarray(time_s, dtype=np.float64)
    stand_sway = (1 - w) * 0.012 * np.sin(2 * np.pi * 0.23 * sway_t + 1.3)
    pelvis = np.stack([
        (1 - w) * 0.006 * np.sin(2 * np.pi * 0.17 * sway_t),
        gait.lateral_sway * np.cos(two_pi_phase - np.pi / 2) * w + stand_sway,
        np.full(t, seg["leg"] + 0.02 * body.stature),
    ], -1)
    out[:, J["pelvis"]] = pelvis

    # Legs.
    for side, name in ((1, "l"), (-1, "r")):
        leg_phase = phase if side == 1 else phase + 0.5
        asym = 1 + side * gait.step_asym
        is_limp = gait.limp_side == side
        hip_amp = amp_hip * asym * (1 - 0.3 * limp * is_limp)
        knee_swing = gait.knee_swing * (1 - 0.6 * gait.drag) * (1 - 0.65 * limp * is_limp)
        push = gait.push_off * (1 - 0.8 * gait.drag)
        th = rad(gait.hip_offset + hip_amp * np.cos(2 * np.pi * leg_phase)) * w
        tk = rad(gait.knee_stance * _bump(leg_phase, 0.12, 0.07)
                 + knee_swing * _bump(leg_phase, gait.knee_swing_phase, 0.12)) * w + rad(3.0)
        ta = rad(-5 * _bump(leg_phase, 0.06, 0.05) + 9 * _bump(leg_phase, 0.42, 0.12)
                 - push * _bump(leg_phase, 0.6, 0.06)) * w
        # Frontal plane: the stance hip adducts under the body, the swing hip abducts a little;
        # a limping leg swings outwards (circumduction) instead of bending.
        ab = rad(-0.5 - 2.5 * _bump(leg_phase, 0.3, 0.12) + 3.0 * _bump(leg_phase, 0.75, 0.1)
                 + 10.0 * limp * is_limp * _bump(leg_phase, 0.72, 0.12)) * w + rad(-1.0) * (1 - w)
        hip_local = np.stack([np.zeros(t), np.full(t, side * body.hip_width / 2), np.zeros(t)], -1)
        hip = pelvis + _rotate_z(hip_local, pelvis_yaw)
        d_thigh = _unit(np.stack([np.sin(th) * np.cos(ab), side * np.sin(ab), -np.cos(th) * np.cos(ab)], -1))
        # Out- or in-toeing comes with a rotated leg: the knee swings in the foot's direction.
        leg_yaw = pelvis_yaw + side * rad(0.5 * gait.toe_out)
        d_thigh = _rotate_z(d_thigh, leg_yaw)
        knee = hip + seg["thigh"] * d_thigh
        alpha = th - tk
        d_shank = _unit(np.stack([np.sin(alpha), side * np.sin(ab) * 0.5, -np.cos(alpha)], -1))
        d_shank = _rotate_z(d_shank, leg_yaw)
        ankle = knee + seg["shank"] * d_shank
        beta = alpha + ta
        foot_yaw = side * rad(gait.toe_out) + pelvis_yaw
        d_foot = _rotate_z(np.stack([np.cos(beta), np.zeros(t), np.sin(beta)], -1), foot_yaw)
        normal = _rotate_z(np.stack([-np.sin(beta), np.zeros(t), np.cos(beta)], -1), foot_yaw)
        out[:, J[f"{name}_hip"]] = hip
        out[:, J[f"{name}_knee"]] = knee
        out[:, J[f"{name}_ankle"]] = ankle
        out[:, J[f"{name}_heel"]] = ankle - 0.12 * seg["foot"] * d_foot - 0.55 * seg["ankle"] * normal
        out[:, J[f"{name}_toe"]] = ankle + 0.6 * seg["foot"] * d_foot - 0.3 * seg["ankle"] * normal

    # Trunk: lumbar, thorax, neck, head; trunk roll from uneven shoulders and the limp.
    limp_roll = rad(7.0) * limp * gait.limp_side * _bump(phase if gait.limp_side >= 0 else phase + 0.5, 0.25, 0.12) * w
    roll = np.full(t, np.arctan2(body.shoulder_offset, body.shoulder_width) * 0.5) + limp_roll
    lean = np.full(t, rad(body.trunk_lean))
    d_lumbar = _up_dir(lean, roll)
    spine = pelvis + seg["lumbar"] * d_lumbar
    d_thorax = _up_dir(lean + rad(body.hump), roll)
    neck = spine + seg["thorax"] * d_thorax
    d_neck = _up_dir(lean + rad(body.hump) * 1.3 + rad(body.neck_flex), roll * 0.5)
    head = neck + (seg["neck"] + seg["head"] * 0.9) * d_neck
    out[:, J["spine"]] = spine
    out[:, J["neck"]] = neck
    out[:, J["head"]] = head

    # Arms: shoulders counter-rotate against the pelvis.
    thorax_yaw = -0.6 * pelvis_yaw
    for side, name in ((1, "l"), (-1, "r")):
        lat = _rotate_z(np.stack([np.zeros(t), np.full(t, side * body.shoulder_width / 2), np.zeros(t)], -1), thorax_yaw)
        shoulder = neck + lat - 0.025 * body.stature * d_thorax
        shoulder[:, 2] += side * body.shoulder_offset / 2
        # A hump pushes the shoulders forward.
        shoulder[:, 0] += 0.15 * seg["thorax"] * np.sin(rad(body.hump))
        # Arm of one side swings with the opposite leg.
        opp = phase + (0.5 if side == 1 else 0.0) - gait.arm_lag
        swing = np.cos(2 * np.pi * opp)
        amp = gait.arm_amp * (1 + side * gait.arm_asym)
        if gait.hands == 0:
            ts = rad(gait.arm_offset * w + amp * gait.upper_arm_gain * swing * w)
            forearm_extra = amp * (1 - gait.upper_arm_gain) * 1.3 * swing * w
            te = rad(gait.elbow_flex + 10 * np.maximum(swing, 0) * w + forearm_extra)
            plane = rad(gait.arm_plane) * np.ones(t)
            ab = rad(gait.arm_abduction) * np.ones(t)
            medial = plane
        else:
            ts, te, ab, medial = _hand_pose(gait.hands, t, w, swing)
            plane = np.zeros(t)
        d_up = _unit(np.stack([np.sin(ts) * np.cos(plane), side * (np.sin(ab) - np.sin(ts) * np.sin(plane)),
                               -np.cos(ts)], -1))
        pf = ts + te
        d_fore = _unit(np.stack([np.sin(pf) * np.cos(medial), -side * np.abs(np.sin(pf)) * np.sin(medial)
                                 + side * np.sin(ab) * 0.5, -np.cos(pf)], -1))
        d_up, d_fore = _rotate_z(d_up, thorax_yaw), _rotate_z(d_fore, thorax_yaw)
        elbow = shoulder + seg["upper_arm"] * d_up
        wrist = elbow + seg["forearm"] * d_fore
        out[:, J[f"{name}_shoulder"]] = shoulder
        out[:, J[f"{name}_elbow"]] = elbow
        out[:, J[f"{name}_wrist"]] = wrist
        out[:, J[f"{name}_hand"]] = wrist + seg["hand"] * d_fore

    # Ground contact: the lowest sole point of either foot touches z = 0.
    soles = out[:, [J["l_heel"], J["l_toe"], J["r_heel"], J["r_toe"]], 2]
    out[:, :, 2] -= soles.min(axis=1, keepdims=True)
    return out


def _hand_pose(hands: int, t: int, w: np.ndarray, swing: np.ndarray) -> tuple[np.ndarray, ...]:
    """(shoulder flexion, elbow flexion, abduction, forearm medial angle) in radians for held arms."""
    rad = np.deg2rad
    small = rad(2.0) * swing * w
    if hands == 1:  # in pockets: hands at the hips, slightly out
        return rad(-4.0) + small, np.full(t, rad(30.0)), np.full(t, rad(14.0)), np.full(t, rad(-5.0))
    if hands == 2:  # behind back: upper arms back, forearms across the back
        return rad(-28.0) + small, np.full(t, rad(-62.0)), np.full(t, rad(6.0)), np.full(t, rad(62.0))
    # crossed in front: forearms horizontal across the chest
    return rad(12.0) + small, np.full(t, rad(85.0)), np.full(t, rad(10.0)), np.full(t, rad(70.0))


def volumes(body: BodyParams, joints: np.ndarray, carry: Carry | None = None, long_sleeves: bool = True) -> Volumes:
    """Dress joints (T, J, 3) with capsules and ellipsoids (the body frame of ``pose``);
    carry None: nothing carried, no coat."""
    carry = carry or NO_CARRY
    t = len(joints)
    s = body.stature / 1.75
    m = body.mass
    j = lambda name: joints[:, J[name]]
    caps: list[tuple] = []  # (a, b, ra, rb, mat, bias)
    ells: list[tuple] = []  # (c, axes (T,3,3), mat, bias)

    def frame_axes(up: np.ndarray, fwd_hint: np.ndarray) -> np.ndarray:
        """(T, 3, 3) orthonormal columns (forward, left, up) around an up direction."""
        up = _unit(up)
        fwd = _unit(fwd_hint - (fwd_hint * up).sum(-1, keepdims=True) * up)
        left = np.cross(up, fwd)
        return np.stack([fwd, left, up], -1)

    def ellipsoid(c, axes_frame, rx, ry, rz, mat, bias=0.0):
        ells.append((c, axes_frame * np.array([rx, ry, rz]), mat, bias))

    hip_mid = (j("l_hip") + j("r_hip")) / 2
    fwd_pelvis = _unit(np.cross(j("l_hip") - j("r_hip"), np.array([0.0, 0.0, 1.0])))
    fwd_chest = _unit(np.cross(j("l_shoulder") - j("r_shoulder"), np.array([0.0, 0.0, 1.0])))
    thorax_up = j("neck") - j("spine")
    lumbar_up = j("spine") - j("pelvis")

    # Legs (trousers), shoes.
    for side in ("l", "r"):
        # Radii include trousers: real legs read wider in silhouettes than bare limbs.
        caps.append((j(f"{side}_hip"), j(f"{side}_knee"), 0.1 * m * s, 0.076 * m ** 0.5 * s, BOTTOM, 0.0))
        caps.append((j(f"{side}_knee"), j(f"{side}_ankle"), 0.074 * m ** 0.5 * s, 0.056 * s, BOTTOM, 0.0))
        caps.append((j(f"{side}_heel"), j(f"{side}_toe"), 0.046 * s, 0.036 * s, SHOES, -0.01))
    # Pelvis, abdomen, chest.
    pelvis_c = j("pelvis") + 0.01 * s * np.array([0.0, 0.0, 1.0])
    hip_half = (0.16 if body.female else 0.15) * m ** 0.7 * s + (body.hip_width - 0.17 * s) * 0.5
    ellipsoid(pelvis_c, frame_axes(lumbar_up, fwd_pelvis), 0.1 * m * s, hip_half, 0.11 * s, BOTTOM)
    abd_c = (j("pelvis") + j("spine")) / 2 + 0.6 * body.belly * fwd_pelvis + 0.02 * s * _unit(lumbar_up)
    ellipsoid(abd_c, frame_axes(lumbar_up, fwd_pelvis), 0.115 * m * s + body.belly, 0.155 * m * s, 0.13 * s, TOP)
    chest_c = j("spine") + 0.5 * (j("neck") - j("spine")) - 0.005 * s * fwd_chest
    chest_w = body.shoulder_width / 2 + 0.005 * s * m
    ellipsoid(chest_c, frame_axes(thorax_up, fwd_chest), 0.13 * m * s, chest_w, 0.19 * s, TOP)
    if body.hump > 8:
        hump_c = chest_c + 0.06 * s * _unit(thorax_up) - (0.06 + 0.002 * body.hump) * s * fwd_chest
        ellipsoid(hump_c, frame_axes(thorax_up, fwd_chest), 0.08 * s * m, 0.12 * s * m, 0.12 * s, TOP)
    # Shoulder girdle and neck.
    caps.append((j("l_shoulder"), j("r_shoulder"), 0.058 * m * s, 0.058 * m * s, TOP, 0.0))
    caps.append((j("neck") - 0.02 * s * _unit(thorax_up), j("head") - 0.06 * s * _unit(j("head") - j("neck")),
                 0.05 * s, 0.045 * s, SKIN, 0.01))
    # Head: a skull (hair-covered unless bald) and a face ellipsoid set forward and down, so the
    # face shows from the front, hair on top and at the sides, only hair from behind.
    head_up = j("head") - j("neck")
    head_axes = frame_axes(head_up, fwd_chest)
    hz = 0.065 * body.stature * body.head_scale
    hv = body.hair_volume
    up_u = _unit(head_up)
    if body.hair == 0:
        ellipsoid(j("head"), head_axes, 0.095 * s, 0.078 * s, hz, SKIN)
    else:
        ellipsoid(j("head") + 0.008 * s * up_u - 0.006 * s * fwd_chest, head_axes,
                  0.098 * s * hv, 0.082 * s * hv, hz * (0.98 + 0.04 * hv), HAIR)
    ellipsoid(j("head") + 0.035 * s * fwd_chest - 0.02 * s * up_u, head_axes,
              0.07 * s, 0.068 * s, hz * 0.82, SKIN, -0.004)
    if body.hair == 2:  # long: down the back to the shoulders
        ellipsoid(j("head") - 0.1 * s * up_u - 0.06 * s * fwd_chest, head_axes,
                  0.08 * s * hv, 0.1 * s * hv, hz * 1.6, HAIR, 0.01)
    elif body.hair == 3:  # bun at the back of the head
        ellipsoid(j("head") + 0.07 * s * up_u - 0.12 * s * fwd_chest, head_axes,
                  0.072 * s * hv, 0.065 * s * hv, 0.07 * s * hv, HAIR, 0.01)
    # Arms.
    for side in ("l", "r"):
        caps.append((j(f"{side}_shoulder"), j(f"{side}_elbow"), 0.056 * m * s, 0.045 * m * s, TOP, 0.0))
        caps.append((j(f"{side}_elbow"), j(f"{side}_wrist"), 0.042 * m * s, 0.03 * s,
                     TOP if long_sleeves or carry.coat else SKIN, 0.0))
        caps.append((j(f"{side}_wrist"), j(f"{side}_hand"), 0.03 * s, 0.024 * s, SKIN, 0.0))
    # Coat: a wider chest and a skirt from the waist to above the knees.
    if carry.coat:
        ellipsoid(chest_c, frame_axes(thorax_up, fwd_chest), 0.13 * m * s, chest_w + 0.03 * s, 0.21 * s, TOP)
        knees = (j("l_knee") + j("r_knee")) / 2
        hem = hip_mid + 0.8 * (knees - hip_mid)
        caps.append((j("pelvis") + 0.05 * s * _unit(lumbar_up), hem, hip_half + 0.04 * s,
                     hip_half + 0.04 * s + 0.2 * np.linalg.norm(j("l_knee") - j("r_knee"), axis=-1).mean(),
                     TOP, 0.005))
        for side in ("l", "r"):
            caps.append((j(f"{side}_shoulder"), j(f"{side}_elbow"), 0.065 * m * s, 0.055 * m * s, TOP, 0.002))
    # Bags.
    b = carry.bag_size
    if carry.bag == "backpack":
        c = chest_c - (0.105 * m * s + 0.08 * s * b) * fwd_chest - 0.03 * s * _unit(thorax_up)
        ellipsoid(c, frame_axes(thorax_up, fwd_chest), 0.08 * s * b, 0.15 * s * b, 0.2 * s * b, BAG, 0.0)
    elif carry.bag == "shoulder":
        c = j("r_hip") + np.array([0.0, -1.0, 0.0]) * (hip_half + 0.03 * s) + 0.06 * s * _unit(lumbar_up)
        ellipsoid(c, frame_axes(lumbar_up, fwd_pelvis), 0.06 * s * b, 0.05 * s * b, 0.13 * s * b, BAG, 0.0)
        caps.append((j("l_shoulder"), c + 0.1 * s * b * _unit(lumbar_up), 0.012 * s, 0.012 * s, BAG, 0.0))
    elif carry.bag == "hand":
        c = j("r_hand") - np.array([0.0, 0.0, 0.12 * s * b])
        ellipsoid(c, frame_axes(np.broadcast_to([0.0, 0.0, 1.0], (t, 3)).copy(), fwd_pelvis),
                  0.14 * s * b, 0.05 * s * b, 0.12 * s * b, BAG, 0.0)

    return Volumes(
        caps_a=np.stack([np.broadcast_to(c[0], (t, 3)) for c in caps], 1).astype(np.float64),
        caps_b=np.stack([np.broadcast_to(c[1], (t, 3)) for c in caps], 1).astype(np.float64),
        caps_ra=np.array([float(c[2]) for c in caps]),
        caps_rb=np.array([float(np.mean(c[3])) for c in caps]),
        caps_mat=np.array([c[4] for c in caps], dtype=np.int64),
        caps_bias=np.array([c[5] for c in caps]),
        ell_c=np.stack([np.broadcast_to(e[0], (t, 3)) for e in ells], 1).astype(np.float64),
        ell_axes=np.stack([e[1] for e in ells], 1).astype(np.float64),
        ell_mat=np.array([e[2] for e in ells], dtype=np.int64),
        ell_bias=np.array([e[3] for e in ells]),
    )


# ---------------------------------------------------------------------------------------------
# Identities: attribute classes -> parameters.

@dataclass(frozen=True)
class Population:
    """How identities are drawn: the difficulty of telling them apart.

    spread in [0, 1]: the share of attributes drawn freely (the others take the population's most
    common class) and the scale of the free, identity-specific variation of every continuous
    parameter. 1: independent identities; smaller: closer identities; 0: identical walkers.
    """

    spread: float = 1.0


DEFAULT_POPULATION = Population()


def make_identity(identity: int, rng: np.random.Generator, population: Population = DEFAULT_POPULATION,
                  attributes: dict[str, int] | None = None) -> Identity:
    """Draw one identity: attribute classes (or the given ones) realised by explicit parameters."""
    a = dict(attributes) if attributes is not None else sample_attributes(rng, population.spread)
    sp = population.spread

    def n(sd: float) -> float:  # free identity-specific variation
        return float(rng.normal(0.0, sd * sp))

    def u(lo: float, hi: float) -> float:  # within-class variation
        mid = (lo + hi) / 2
        return float(mid + (rng.uniform(lo, hi) - mid) * sp)

    female = a["gender"] == 1
    stature = u(_STATURE_RANGES_M[a["height"]] + 0.005, _STATURE_RANGES_M[a["height"] + 1] - 0.005)
    mass = _MASS_FACTOR[a["body mass"]] * (1 + n(0.04))
    age = a["age"]
    belly = max(0.0, (0.03 if age == 1 else 0.0) + 0.05 * max(0, a["body mass"] - 1) + n(0.01))
    shoulder = stature * ((0.185 if female else 0.205) + n(0.007)) * (0.95 + 0.05 * mass)
    hip = stature * ((0.108 if female else 0.098) + n(0.004))
    hump = u(25.0, 35.0) if a["humpback"] else u(0.0, 5.0)
    neck_flex = u(22.0, 32.0) if a["forward head position"] else u(0.0, 6.0)
    sh_off = {0: n(0.006), 1: u(0.035, 0.06), 2: -u(0.035, 0.06)}[a["uneven shoulders"]]
    body = BodyParams(
        stature=stature, female=female, mass=mass, belly=belly, shoulder_width=shoulder, hip_width=hip,
        leg_ratio=1 + n(0.025), arm_ratio=1 + n(0.025),
        head_scale=(1 + n(0.03)) * (1.75 / stature) ** 0.3,
        trunk_lean=1.0 + (6.0 if age == 2 else 0.0) + n(1.5), hump=hump, neck_flex=neck_flex,
        shoulder_offset=sh_off, hair=a["hair"], hair_volume=1 + n(0.08),
    )
    # Motion.
    age_cad = (1.0, 0.97, 0.88)[age]
    age_stride = (1.0, 0.96, 0.82)[age]
    drag = u(0.7, 1.0) if a["drag feet"] else 0.0
    limp = u(0.6, 1.0) if a["limping"] else 0.0
    swing_amp = u(22.0, 32.0) if a["arm swing amplitude range"] else u(4.0, 12.0)
    direction = a["arm swing direction"]
    arm_offset = {1: u(10.0, 16.0), 2: -u(10.0, 16.0)}.get(direction, n(2.0))
    arm_plane = {3: u(22.0, 32.0), 4: -u(18.0, 28.0)}.get(direction, n(3.0))
    arm_abd = (u(16.0, 24.0) if direction == 4 else 2.5 + n(1.0))
    toe = {0: n(4.0) * 0.7 + 4.0, 1: -u(16.0, 26.0), 2: u(18.0, 28.0)}[a["toe"]]
    gait = GaitParams(
        cadence=(1.05 + n(0.06)) * age_cad * (1.03 if female else 1.0) * (1 - 0.05 * drag),
        stride_factor=(1.5 + n(0.08)) * age_stride * (1 - 0.2 * drag) * (1 - 0.1 * limp),
        hip_offset=5.0 + n(2.0),
        knee_stance=15.0 + n(3.0),
        knee_swing=(60.0 + n(4.0)) * (0.85 if age == 2 else 1.0),
        knee_swing_phase=0.7 + n(0.015),
        push_off=16.0 + n(3.0),
        arm_amp=swing_amp * (0.75 if age == 2 else 1.0),
        arm_offset=arm_offset, arm_plane=arm_plane, arm_abduction=arm_abd,
        upper_arm_gain=0.15 if a["upper arm movement"] else 1.0,
        elbow_flex=18.0 + n(5.0), arm_lag=0.03 + n(0.015), arm_asym=n(0.08),
        hands=a["hands"],
        pelvis_rotation=(6.5 if female else 4.5) + n(1.0),
        lateral_sway=(0.026 if female else 0.018) + n(0.004),
        toe_out=toe, step_asym=n(0.03),
        limp_side=(int(rng.choice([-1, 1])) if a["limping"] else 0), limp=limp, drag=drag,
    )
    return Identity(identity=identity, attributes=a, body=body, gait=gait,
                    appearance_seed=int(rng.integers(0, 2**31 - 1)))


def sequence_variation(gait: GaitParams, rng: np.random.Generator, speed_noise: float = 0.03) -> GaitParams:
    """Per-sequence speed noise: cadence and stride vary a little around the identity's values."""
    return replace(gait, cadence=gait.cadence * (1 + rng.normal(0, speed_noise)),
                   stride_factor=gait.stride_factor * (1 + rng.normal(0, speed_noise)))
