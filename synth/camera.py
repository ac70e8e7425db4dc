"""Pinhole camera over the ground plane.

World frame: metres, x and y on the ground, z up. Camera frame: x right, y down, z forward (OpenCV).
``yaw_deg`` is the heading of the optical axis on the ground (0 = world +x, counter-clockwise),
``tilt_deg`` how far it looks down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    width: int
    height: int
    focal_px: float
    position: tuple[float, float, float]
    yaw_deg: float
    tilt_deg: float
    name: str = "cam0"

    @staticmethod
    def looking_at(width: int, height: int, focal_px: float, position: tuple[float, float, float],
                   target: tuple[float, float, float], name: str = "cam0") -> Camera:
        """A camera at ``position`` whose optical axis passes through ``target`` (world metres)."""
        d = np.asarray(target, dtype=np.float64) - np.asarray(position, dtype=np.float64)
        yaw = math.degrees(math.atan2(d[1], d[0]))
        tilt = math.degrees(math.atan2(-d[2], math.hypot(d[0], d[1])))
        return Camera(width, height, float(focal_px), tuple(float(v) for v in position), yaw, tilt, name)

    @property
    def rotation(self) -> np.ndarray:
        """(3, 3) world -> camera rotation (rows: camera x, y, z axes in world coordinates)."""
        yaw, tilt = math.radians(self.yaw_deg), math.radians(self.tilt_deg)
        fwd = np.array([math.cos(yaw) * math.cos(tilt), math.sin(yaw) * math.cos(tilt), -math.sin(tilt)])
        right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
        down = np.cross(fwd, right)
        return np.stack([right, down, fwd])

    @property
    def intrinsics(self) -> np.ndarray:
        """(3, 3) K with the principal point at the image centre."""
        return np.array([[self.focal_px, 0, self.width / 2], [0, self.focal_px, self.height / 2], [0, 0, 1.0]])

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) world -> (..., 3) camera coordinates."""
        return (np.asarray(points) - np.asarray(self.position)) @ self.rotation.T

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(..., 3) world points -> (..., 2) pixel coordinates and (...,) depth in metres."""
        pc = self.to_camera(points)
        z = pc[..., 2]
        zs = np.maximum(z, 1e-3)
        uv = np.stack([self.focal_px * pc[..., 0] / zs + self.width / 2,
                       self.focal_px * pc[..., 1] / zs + self.height / 2], -1)
        return uv, z

    def ground_rays(self, region: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """(h, w, 3) float32 world direction of the ray through each pixel centre of the image or
        of region (x1, y1, x2, y2)."""
        x1, y1, x2, y2 = region or (0, 0, self.width, self.height)
        u = (np.arange(x1, x2, dtype=np.float32) + 0.5 - self.width / 2) / self.focal_px
        v = (np.arange(y1, y2, dtype=np.float32) + 0.5 - self.height / 2) / self.focal_px
        rot = self.rotation.astype(np.float32)
        # d_world = u * right + v * down + forward, built by broadcasting instead of a matmul.
        return (u[None, :, None] * rot[0] + v[:, None, None] * rot[1] + rot[2]).astype(np.float32)

    def to_json(self) -> dict:
        return {
            "name": self.name, "width": self.width, "height": self.height, "focal_px": self.focal_px,
            "position": list(self.position), "yaw_deg": self.yaw_deg, "tilt_deg": self.tilt_deg,
            "K": self.intrinsics.tolist(), "R": self.rotation.tolist(),
            "t": (-self.rotation @ np.asarray(self.position)).tolist(),
        }


def view_angle_deg(heading_rad: np.ndarray, position_xy: np.ndarray, camera: Camera) -> np.ndarray:
    """Viewing angle of a walker, degrees in [0, 360).

    0: the walker faces the camera (walks towards it); 90: the camera sees the walker's right side
    (the walker moves left to right in the image); 180: seen from behind; 270: left side.
    """
    to_cam = np.asarray(camera.position[:2]) - np.asarray(position_xy)
    az = np.arctan2(to_cam[..., 1], to_cam[..., 0])
    return np.rad2deg(heading_rad - az) % 360.0
