"""Benchmark sites: site configs (``synth.scene.SiteConfig`` YAML) rendered once into a cache.

A render is keyed by the site's config and the source of the renderer (``synth/``), so a changed
site or renderer renders again and an unchanged one is reused. A finished render is published by
renaming its folder, so an interrupted render is never mistaken for a complete one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path("~/.cache/gaitscope/bench/sites")
SYNTH_DIR = Path(__file__).resolve().parents[2] / "synth"


@dataclass(frozen=True)
class RenderedSite:
    """A rendered site: its name, folder, camera videos (one per camera) and ground truth file."""

    name: str
    folder: Path
    videos: list[Path]
    truth_path: Path

    def truth(self) -> dict:
        from synth.groundtruth import load_groundtruth

        return load_groundtruth(self.truth_path)


def renderer_digest() -> str:
    """Hash of the renderer's source: a render is only reused by the code that made it."""
    digest = hashlib.sha256()
    for path in sorted(SYNTH_DIR.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def site_key(site: dict) -> str:
    text = json.dumps(site, sort_keys=True, separators=(",", ":")) + renderer_digest()
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_site(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"site config not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise TypeError(f"{path}: a site config is a mapping (see configs/synth/demo_site.yaml)")
    return data


def render_site(name: str, site: dict, cache: str | Path = DEFAULT_CACHE) -> RenderedSite:
    """The rendered site from the cache, rendering it first when absent."""
    from synth.scene import SiteConfig, write_site

    config = SiteConfig.from_dict(site)  # validates before anything is written
    folder = Path(cache).expanduser() / f"{name}-{site_key(site)}"
    if not (folder / "groundtruth.json").is_file():
        log.info("rendering site %s (%d cameras, %g s) -> %s", name, len(config.cameras), config.duration_s, folder)
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        write_site(config, partial)
        partial.rename(folder)
    videos = [folder / f"{c.name}.mp4" for c in config.cameras]
    missing = [str(v) for v in videos if not v.is_file()]
    if missing:
        raise FileNotFoundError(f"site {name}: cached render lacks {missing}; delete {folder} to render again")
    return RenderedSite(name, folder, videos, folder / "groundtruth.json")
