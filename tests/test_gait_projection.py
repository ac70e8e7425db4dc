"""The discriminant projection of gait embeddings: fitting, saving, loading, and its place in the gallery."""

from __future__ import annotations

import numpy as np
import pytest

from stages.gait.distance import part_distance
from stages.gait.projection import GaitProjection
from stages.gallery.search import load_gait_rescorer
from training.gait_features import WalkerSource, walker_sources
from training.gait_projection import fit_discriminant

PARTS, CHANNELS = 4, 8


VIEWS = np.random.default_rng(100).normal(0.0, 1.0, (5, PARTS, CHANNELS - 2))  # what five cameras add to a walk


def walks(identities: int, per_identity: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, P, C) embeddings whose identity lives in a few channels of every part and whose camera
    views (a strong nuisance shared by all identities) fill the others, with identity labels (N,)."""
    rng = np.random.default_rng(seed)
    who = rng.normal(0.0, 1.0, (identities, PARTS, 2))
    views = VIEWS
    feats, labels = [], []
    for i in range(identities):
        for _ in range(per_identity):
            view = views[rng.integers(len(views))] + rng.normal(0.0, 0.5, (PARTS, CHANNELS - 2))
            feats.append(np.concatenate([who[i] + rng.normal(0.0, 0.15, (PARTS, 2)), view], axis=1))
            labels.append(i)
    return np.asarray(feats, np.float32) + 3.0, np.asarray(labels)


def rank1(dist: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out nearest neighbour accuracy of a square distance matrix."""
    d = dist.copy()
    np.fill_diagonal(d, np.inf)
    return float((labels[np.argmin(d, axis=1)] == labels).mean())


def fitted(features: np.ndarray, labels: np.ndarray, version: str = "gar@test") -> GaitProjection:
    mean, matrix = fit_discriminant(features, labels, pca_dim=24, regulariser=0.1, out_dim=8)
    return GaitProjection(mean, matrix, PARTS, CHANNELS, version)


def test_the_projection_finds_identities_that_camera_views_hide():
    train_x, train_y = walks(60, 5, seed=0)
    test_x, test_y = walks(40, 5, seed=1)  # other people
    projection = fitted(train_x, train_y)
    z = projection.project(test_x)
    assert z.shape == (len(test_x), 8)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
    plain = rank1(part_distance(test_x, test_x), test_y)
    projected = rank1(np.linalg.norm(z[:, None] - z[None], axis=2), test_y)
    assert plain < 0.5 and projected > 0.8, (plain, projected)


def test_pair_distances_compare_projected_walks():
    x, y = walks(10, 3, seed=2)
    projection = fitted(x, y)
    d = projection.pair_distances(x[:5], x[5:10])
    z = projection.project(x)
    np.testing.assert_allclose(d, np.linalg.norm(z[:5] - z[5:10], axis=1), rtol=1e-5)
    assert projection.pair_distances(x[:0], x[:0]).shape == (0,)
    with pytest.raises(ValueError, match=r"\(4, 8\)"):
        projection.project(np.zeros((2, PARTS, CHANNELS + 1), np.float32))


def test_a_saved_projection_loads_as_a_gait_rescorer_named_by_its_file(tmp_path):
    x, y = walks(10, 3, seed=3)
    projection = fitted(x, y, version="gar@abc")
    path = tmp_path / "proj.npz"
    digest = projection.save(path, {"command": "test"})
    loaded = load_gait_rescorer(path)
    assert isinstance(loaded, GaitProjection)
    assert loaded.scorer == f"proj:{digest[:12]}" and loaded.gait_model_version == "gar@abc" and loaded.metric == ""
    np.testing.assert_allclose(loaded.pair_distances(x[:4], x[4:8]), projection.pair_distances(x[:4], x[4:8]), atol=1e-5)


def test_missing_or_foreign_projection_files_are_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="gait projection not found"):
        GaitProjection.load(tmp_path / "absent.npz")
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(ValueError, match="is not a gait projection"):
        load_gait_rescorer(foreign)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="is not a gait projection"):
        GaitProjection.load(garbage)


def test_other_files_load_as_cargait(tmp_path):
    with pytest.raises(FileNotFoundError, match="CarGait checkpoint not found"):
        load_gait_rescorer(tmp_path / "absent.pt")


def test_fitting_needs_two_identities():
    x, _ = walks(1, 4, seed=4)
    with pytest.raises(ValueError, match="two identities"):
        fit_discriminant(x, np.zeros(len(x), int), 8, 0.1, 4)


def test_the_gallery_refuses_an_uncalibrated_projection_it_was_told_to_use(tmp_path):
    from stages.gallery.stage import DEFAULT_SCORES, GalleryMatcher

    if not DEFAULT_SCORES.is_file():
        pytest.skip(f"shipped score-fusion parameters missing: {DEFAULT_SCORES}")
    x, y = walks(10, 3, seed=5)
    path = tmp_path / "proj.npz"
    fitted(x, y).save(path)
    with pytest.raises(ValueError, match="no calibration for re-ranker 'proj:"):
        GalleryMatcher(gallery=str(tmp_path / "g"), reranker=str(path))


@pytest.mark.parametrize(("projection_file", "gait_file"), [("gait_projection_site.npz", "gar_site.pt"),
                                                           ("gait_projection_xview_noisy.npz", "gar_xview_noisy.pt")])
def test_a_shipped_projection_matches_its_manifest_and_finds_more_held_out_walkers(projection_file, gait_file,
                                                                                   tmp_path, monkeypatch):
    """The shipped file is what its manifest says, belongs to its gait model, and on walkers it never saw
    (the gait report's held-out seed) finds more people across cameras than the plain metric."""
    import hashlib
    import json

    from evaluation import gait_sites
    from stages.gait.embedding import embed_sequences
    from stages.gait.weights import load_gait_model
    from stages.gallery.stage import WEIGHTS

    path = WEIGHTS / projection_file
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest["command"].startswith("python -m training.gait_projection --config ")
    projection = GaitProjection.load(path)
    model, version = load_gait_model(WEIGHTS / gait_file)
    assert projection.gait_model_version == version == manifest["gait_model_version"]

    monkeypatch.setattr(gait_sites, "CACHE", tmp_path)
    walks = gait_sites.render_site_walks(identities=40, frames=30)
    emb = embed_sequences(model, list(zip(walks.silhouettes, walks.ratios)))
    plain = gait_sites.cross_camera_rank1(emb, walks)
    projected = gait_sites.cross_camera_rank1(projection.project(emb)[:, None], walks)
    gain = (projected["same_outfit"] + projected["changed_outfit"]) - (plain["same_outfit"] + plain["changed_outfit"])
    assert gain > 0.1, (plain, projected)


class _Payload:
    """Writes a marker file when unpickled: what a hostile projection file would run."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_projection_file_with_pickled_objects_is_refused_unrun(tmp_path):
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.npz"
    mean = np.empty(1, object)
    mean[0] = _Payload(str(marker))
    np.savez(hostile, format=np.asarray("gaitscope-gait-projection-1"), mean=mean, matrix=np.zeros((4, 2)),
             shape=np.asarray([2, 2]), gait_model_version=np.asarray("gar@x"))
    with pytest.raises(ValueError, match="is not a gait projection"):
        load_gait_rescorer(hostile)
    assert not marker.exists()


def test_the_gallery_re_scores_gait_through_a_projection_where_the_plain_metric_follows_the_camera(tmp_path):
    """Person 0 enrolled from camera view 0, person 1 from view 1; person 0 walks past view 1. The plain
    metric sees the view first and names person 1; the projection, fitted on other people, names person 0."""
    from pipeline.messages import SilhouetteSequence, TrackWindow
    from stages.gallery.scoring import ModalityScore, ScoreModel
    from stages.gallery.stage import GalleryMatcher
    from stages.gallery.store import EntryMeta, Gallery

    train_x, train_y = walks(60, 5, seed=0)
    path = tmp_path / "proj.npz"
    fitted(train_x, train_y, version="gar@1").save(path)
    projection = GaitProjection.load(path)
    same = train_y[:, None] == train_y[None]
    pairs = np.triu_indices(len(train_y), 1)
    plain = part_distance(train_x, train_x)[pairs]
    z = projection.project(train_x)
    projected = np.linalg.norm(z[:, None] - z[None], axis=2)[pairs]
    genuine = same[pairs]
    scores = {ScoreModel.score_key("gait", name, aggregate): ModalityScore.fit(d[genuine], d[~genuine])
              for name, d in (("euc", plain), (projection.scorer, projected)) for aggregate in ("best", "mean")}
    model = ScoreModel(scores, {}, {}, 0.01, {"gait": "gar@1", "appearance": ""}, source_prior=None)
    model.save(tmp_path / "scores.params.json")

    rng = np.random.default_rng(7)
    people = rng.normal(0.0, 1.0, (2, PARTS, 2))
    views = VIEWS[:2]

    def seen(person: int, view: int) -> np.ndarray:
        walk = np.concatenate([people[person] + rng.normal(0.0, 0.1, (PARTS, 2)),
                               views[view] + rng.normal(0.0, 0.1, (PARTS, CHANNELS - 2))], axis=1)
        return (walk + 3.0).astype(np.float32)

    with Gallery(tmp_path / "g") as g:
        g.add("gait", [seen(0, 0), seen(1, 1)], [EntryMeta("person0", "enrol"), EntryMeta("person1", "enrol")], "gar@1")
    probe = seen(0, 1)
    assert part_distance(probe[None], np.stack([seen(0, 0), seen(1, 1)]))[0].argmin() == 1  # the view wins

    def best(reranker: str) -> str:
        t = 3
        sequence = SilhouetteSequence(np.zeros((t, 64, 44), np.uint8), np.ones(t, np.float32), np.zeros((t, 4), np.float32),
                                      np.arange(t), np.arange(t) / 10.0, (240, 320))
        window = TrackWindow("cam2", 1, 0, True, sequence, gait_embedding=probe)
        window.model_versions["gait"] = "gar@1"
        matcher = GalleryMatcher(gallery=str(tmp_path / "g"), scores=str(tmp_path / "scores.params.json"), modalities="gait",
                                 reranker=reranker, source_centring=False, threshold=-100.0)
        decided = matcher.process([window])[0].identity
        matcher.close()
        return decided.candidates[0].identity

    assert best("none") == "person1"
    assert best(str(path)) == "person0"


def test_walker_sources_are_one_mapping_or_a_list_and_never_the_held_out_walkers():
    assert walker_sources({"identities": 10}, held_out_seed=2026) == [WalkerSource(identities=10)]
    both = walker_sources([{"identities": 10, "seed": 5}, {"identities": 4, "seed": 5, "segmenter": "pose_crop"}], 2026)
    assert [s.masks for s in both] == ["noise", "pose_crop"] and both[1].identities == 4
    with pytest.raises(ValueError, match="unknown walkers keys"):
        walker_sources([{"identities": 10, "segmentor": "pose_crop"}], 2026)
    with pytest.raises(ValueError, match="held-out seed"):
        walker_sources([{"seed": 5}, {"seed": 2026}], 2026)
    with pytest.raises(ValueError, match="non-empty list"):
        walker_sources([], 2026)
