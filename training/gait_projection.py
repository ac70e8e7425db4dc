"""Fit a discriminant projection of a gait model's embeddings (``stages.gait.projection``).

Walkers are rendered the way surveillance cameras see them (``evaluation.gait_sites``: every walk
from another random camera 2-5 m high and direction, segmenter-like mask errors, five walks per
identity of which two in other clothes with a coat or a bag) and, with ``casia_b_share`` > 0,
CASIA-B's training subjects (001-074, ``casia_b_frames`` frames per sequence) are added; all are
embedded by the frozen gait model. A linear discriminant analysis is fitted on the
per-part-normalised, flattened embeddings, each source weighted by its share: PCA to ``pca_dim``
dimensions, the within-identity scatter shrunk towards its mean eigenvalue by ``regulariser`` (few
walks per identity), then the ``out_dim`` directions with the largest between- over
within-identity variance. The walkers' seed must differ from the held-out walkers of the gait
report (``evaluation.gait_sites.SITE_SEED``). ``walkers`` may list several sources, e.g. the same
people also seen by the identity benchmark's cameras through the pipeline's BlazePose crops
(``segmenter: pose_crop``); the held-out walkers are then measured through each source's masks.

    python -m training.gait_projection --config configs/train/gait_projection_site.yaml

writes the projection and its manifest (sha256, command, data, held-out Rank-1 before and after).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import time
from pathlib import Path

import numpy as np

from pipeline.config import read_yaml
from stages.gait.projection import GaitProjection, flatten_parts

PROJECT_ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger(__name__)


def fit_discriminant(features: np.ndarray, labels: np.ndarray, pca_dim: int, regulariser: float, out_dim: int,
                     weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean (F,), matrix (F, out_dim)) of the LDA of ``features`` (N, P, C) by ``labels`` (N,);
    ``weights`` (N,): each walk's share in the means and scatters (None: equal)."""
    x = flatten_parts(features)
    labels = np.asarray(labels)
    w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    classes, inverse = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ValueError("a discriminant projection needs at least two identities")
    pca_dim = min(pca_dim, len(x) - 1, x.shape[1])
    out_dim = min(out_dim, pca_dim, len(classes) - 1)
    w = w / w.sum()
    mean = w @ x
    _, _, vt = np.linalg.svd((x - mean) * np.sqrt(w)[:, None], full_matrices=False)
    pca = vt[:pca_dim].T  # (F, pca_dim)
    z = (x - mean) @ pca
    mass = np.bincount(inverse, weights=w)
    class_means = np.zeros((len(classes), pca_dim))
    np.add.at(class_means, inverse, z * w[:, None])
    class_means /= mass[:, None]
    within = z - class_means[inverse]
    scatter_w = (within * w[:, None]).T @ within
    scatter_b = (class_means * mass[:, None]).T @ class_means  # z has weighted mean 0
    scatter_w += regulariser * np.trace(scatter_w) / pca_dim * np.eye(pca_dim)
    eigval_w, eigvec_w = np.linalg.eigh(scatter_w)
    whiten = eigvec_w / np.sqrt(eigval_w)
    eigval_b, eigvec_b = np.linalg.eigh(whiten.T @ scatter_b @ whiten)
    directions = eigvec_b[:, np.argsort(eigval_b)[::-1][:out_dim]]
    return mean, pca @ whiten @ directions


def casia_b_features(model, version: str, frames: int | None) -> dict[str, np.ndarray]:
    """Embeddings of CASIA-B's training subjects (001-074), cached per gait model and frame setting."""
    from training.casia_b import TRAIN_SUBJECTS, CasiaB
    from training.gait_features import FEATURES_DIR, extract_casia_features

    path = FEATURES_DIR / "projection" / f"{version}_train_{frames or 'all'}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    reader = CasiaB()
    return extract_casia_features(model, reader, reader.keys(subjects=TRAIN_SUBJECTS), frames, path, progress=False)


def fit(config: dict) -> tuple[GaitProjection, dict]:
    """The projection of ``config`` and what was measured on the held-out walkers."""
    from evaluation.gait_sites import SITE_SEED, cross_camera_rank1
    from stages.gait.weights import load_gait_model
    from training.gait_features import walker_features, walker_sources

    sources = walker_sources(config.get("walkers", {}), SITE_SEED)
    casia_share = float(config.get("casia_b_share", 0.0))
    if not 0.0 <= casia_share < 1.0:
        raise ValueError(f"casia_b_share must be in [0, 1), got {casia_share}")
    model, version = load_gait_model(PROJECT_ROOT / config.get("gait_weights", "weights/gar_site.pt"))
    t0 = time.time()
    sets = [walker_features(model, version, s.identities, s.seed, s.frames, s.mask_noise, s.segmenter)[0]
            for s in sources]
    features = np.concatenate([w.features for w in sets])
    labels = np.concatenate([w.subjects for w in sets])  # one seed's walker is one person in every source
    weights = np.full(len(features), (1.0 - casia_share) / len(features))
    log.info("embedded %d walks of %d identities in %.0f s", len(features), len(set(labels.tolist())), time.time() - t0)
    data = {"walkers": {"identities": len(set(labels.tolist())), "walks": len(features), "share": 1.0 - casia_share,
                        "sources": [{"masks": s.masks, "identities": s.identities, "walks": len(w.features)}
                                    for s, w in zip(sources, sets)]}}
    if casia_share > 0:
        casia = casia_b_features(model, version, config.get("casia_b_frames", 10))
        features = np.concatenate([features, casia["embeddings"]])
        labels = np.concatenate([labels, np.array([f"c{s}" for s in casia["labels"]])])
        weights = np.concatenate([weights, np.full(len(casia["labels"]), casia_share / len(casia["labels"]))])
        data["casia_b"] = {"identities": len(set(casia["labels"].tolist())), "sequences": len(casia["labels"]),
                           "share": casia_share}
    mean, matrix = fit_discriminant(features, labels, int(config.get("pca_dim", 96)),
                                    float(config.get("regulariser", 0.1)), int(config.get("out_dim", 32)), weights)
    projection = GaitProjection(mean, matrix, features.shape[1], features.shape[2], version)
    by_masks = {}
    for source in sources:  # the report's held-out walkers seen through each source's masks
        if source.masks in by_masks:
            continue
        held_set, held = walker_features(model, version, int(config.get("held_out_identities", 100)), SITE_SEED,
                                         source.frames, source.mask_noise, source.segmenter)
        by_masks[source.masks] = {
            "seed": SITE_SEED, "identities": int(held.gallery.sum()),
            "plain": cross_camera_rank1(held_set.features, held),
            "projected": cross_camera_rank1(projection.project(held_set.features)[:, None], held)}
    measured = {
        "held_out_walkers": by_masks[sources[0].masks],
        "data": data,
        "seconds": round(time.time() - t0, 1),
    }
    if len(by_masks) > 1:
        measured["held_out_walkers_by_masks"] = by_masks
    return projection, measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.gait_projection", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="fitting recipe (configs/train/gait_projection_site.yaml)")
    parser.add_argument("--out", default=None, help="override the recipe's output path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch

    config = read_yaml(args.config)  # _base_ inheritance resolved
    torch.set_num_threads(int(config.get("threads", 2)))
    projection, measured = fit(config)
    out = PROJECT_ROOT / (args.out or config.get("out", "weights/gait_projection_site.npz"))
    command = f"python -m training.gait_projection --config {args.config}" + (f" --out {args.out}" if args.out else "")
    digest = projection.save(out, {"command": command, "gait_model_version": projection.gait_model_version})
    manifest = {
        "file": out.name,
        "sha256": digest,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "config": config,
        "data": {"description": "rendered walkers (evaluation.gait_sites.render_site_walks: five walks per identity, "
                                "each from another random surveillance camera and direction, two in other clothes) "
                                "and CASIA-B's training subjects 001-074, weighted by their shares",
                 **measured["data"]},
        "gait_model_version": projection.gait_model_version,
        "shape": {"in": [projection.parts, projection.channels], "out": int(projection.matrix.shape[1])},
        "metrics": {k: measured[k] for k in ("held_out_walkers", "held_out_walkers_by_masks") if k in measured},
        "seconds": measured["seconds"],
    }
    out.with_suffix(".json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {out} (sha256 {digest[:12]})")
    for masks, held in measured.get("held_out_walkers_by_masks", {"": measured["held_out_walkers"]}).items():
        print(f"held-out walkers{' (' + masks + ' masks)' if masks else ''} Rank-1 same / changed outfit: plain "
              f"{held['plain']['same_outfit']:.3f} / {held['plain']['changed_outfit']:.3f}, projected "
              f"{held['projected']['same_outfit']:.3f} / {held['projected']['changed_outfit']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
