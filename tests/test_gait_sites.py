"""Cross-camera Rank-1 on rendered walkers and the direction-handling comparison (pure numpy)."""

import numpy as np

from evaluation.gait_sites import SEQUENCE_PLAN, SiteWalks, cross_camera_rank1, direction_variants, moves_right_to_left


def walks(identities: int, views: list[float]) -> SiteWalks:
    n_plan = len(SEQUENCE_PLAN)
    n = identities * n_plan
    return SiteWalks(
        silhouettes=[np.zeros((4, 64, 44), np.uint8)] * n,
        ratios=[np.ones(4, np.float32)] * n,
        identity=np.repeat(np.arange(identities), n_plan),
        outfit=np.tile([o for _, o in SEQUENCE_PLAN], identities),
        condition=np.tile([c for c, _ in SEQUENCE_PLAN], identities),
        view_deg=np.asarray(views, np.float32),
        gallery=np.arange(n) % n_plan == 0,
    )


def test_moves_right_to_left_follows_the_view_angle():
    w = walks(1, [90.0, 270.0, 0.0, 180.0, 359.0])
    assert moves_right_to_left(w).tolist() == [False, True, False, False, True]


def test_rank1_counts_same_and_changed_outfit_probes_apart():
    w = walks(3, [90.0] * 15)
    emb = np.repeat(np.eye(3, dtype=np.float32), 5, axis=0)[:, None, :]  # every sequence at its identity's point
    emb[8] = emb[0]  # identity 1's first changed-outfit probe looks like identity 0
    res = cross_camera_rank1(emb, w)
    assert res["probes"] == {"same_outfit": 6, "changed_outfit": 6}
    assert res["same_outfit"] == 1.0
    assert res["changed_outfit"] == round(5 / 6, 4)
    assert res["chance"] == round(1 / 3, 4)


def test_normalising_the_direction_matches_walks_seen_from_both_sides():
    # a direction-bound model: a walk seen mirrored lands on the negative of its identity's point
    identities = 4
    w = walks(identities, [90.0, 270.0, 90.0, 270.0, 90.0] * identities)  # gallery walks left to right
    centres = np.eye(identities, dtype=np.float32)[w.identity][:, None, :]
    left = moves_right_to_left(w)[:, None, None]
    plain = np.where(left, -centres, centres)
    mirrored = -plain
    variants = direction_variants(plain, mirrored, moves_right_to_left(w))
    assert np.array_equal(variants["normalised"], centres)
    assert np.array_equal(variants["flip_mean"], np.zeros_like(centres))
    normalised = cross_camera_rank1(variants["normalised"], w)
    assert normalised["same_outfit"] == 1.0 and normalised["changed_outfit"] == 1.0
    as_seen = cross_camera_rank1(plain, w)
    assert as_seen["same_outfit"] == 0.5 and as_seen["changed_outfit"] == 0.5  # the right-to-left probes miss


def test_a_reranker_reorders_the_shortlist_it_is_given():
    w = walks(3, [90.0] * 15)
    emb = np.repeat(np.eye(3, dtype=np.float32), 5, axis=0)[:, None, :]
    emb[1] = 0.9 * emb[5] + 0.1 * emb[0]  # identity 0's first probe sits near identity 1
    assert cross_camera_rank1(emb, w)["same_outfit"] == round(5 / 6, 4)
    seen = {}

    def rerank_by_identity(probe_idx, gallery_idx, dist, valid):  # a re-ranker that knows who is who
        seen["shape"] = (len(probe_idx), len(gallery_idx), dist.shape)
        return (w.identity[probe_idx][:, None] != w.identity[gallery_idx][None, :]).astype(float)

    res = cross_camera_rank1(emb, w, rerank=rerank_by_identity)
    assert res["same_outfit"] == 1.0 and res["changed_outfit"] == 1.0
    assert seen["shape"] == (12, 3, (12, 3))


def test_pipeline_windows_are_the_assemblers_windows():
    from evaluation.gait_sites import pipeline_windows

    assert pipeline_windows(29) == []
    assert pipeline_windows(95) == [slice(0, 30), slice(0, 60), slice(0, 90)]
    assert pipeline_windows(150)[-1] == slice(30, 150) and len(pipeline_windows(150)) == 5


def test_leave_out_rank1_splits_by_clothes_and_looks_only_at_other_cameras():
    from evaluation.gait_sites import leave_out_rank1

    # Person 1 on camera a and b in the same clothes and on b in a coat; person 2 on b only.
    identity = np.array([1, 1, 1, 2])
    clothes = [(0, False), (0, False), (0, True), (0, False)]
    camera = np.array(["a", "b", "b", "b"])
    emb = np.zeros((4, 2, 3), np.float32)
    emb[0, :, 0] = 1.0
    emb[1, :, 0] = 0.9   # nearest to walk 0
    emb[2, :, 1] = 1.0   # the coat walk looks like nobody
    emb[3, :, 0] = 0.8   # person 2 is closer to walk 0 than the coat walk is
    scores = leave_out_rank1(emb, identity, clothes, camera)
    # same clothes: walk 0 finds walk 1 and walk 1 finds walk 0; walk 3 has no mate on another camera
    assert scores["same_outfit"] == 1.0 and scores["probes"]["same_outfit"] == 2
    # changed: walk 0 (its same-clothes mate left out) finds person 2 before the coat walk; walk 2 finds walk 0
    assert scores["changed_outfit"] == 0.5 and scores["probes"]["changed_outfit"] == 2


def test_site_track_walks_keep_walking_whole_body_frames_per_camera_and_visit():
    from evaluation.gait_sites import site_track_walks
    from synth.groundtruth import encode_mask

    body = np.zeros((40, 16), bool)
    body[2:38, 4:12] = True

    def person(visit, state="walking", full_body=True):
        return {"visit": visit, "box": [20, 10, 36, 50], "state": state, "full_body": full_body,
                "mask": encode_mask(body, (20, 10, 36, 50))}

    frames = {"a": [[person(0), person(1, state="standing")] for _ in range(35)],
              "b": [[person(2, full_body=i % 2 == 0)] for i in range(70)]}
    truth = {"cameras": [{"name": "a", "width": 80, "height": 60}, {"name": "b", "width": 80, "height": 60}],
             "visits": [{"visit": 0, "identity": 7, "outfit": 0, "condition": "nm"},
                        {"visit": 1, "identity": 8, "outfit": 0, "condition": "nm"},
                        {"visit": 2, "identity": 7, "outfit": 1, "condition": "cl"}],
             "frames": frames}
    walks = site_track_walks(truth)
    # visit 1 never walks; visit 2 is whole-body in 35 of its frames
    assert list(walks.identity) == [7, 7] and list(walks.camera) == ["a", "b"]
    assert walks.clothes == [(0, False), (1, True)]
    assert [len(s) for s in walks.silhouettes] == [35, 35] and walks.silhouettes[0].shape[1:] == (64, 44)
    assert np.allclose(walks.ratios[0], 40 / 64)
    noisy = site_track_walks(truth, mask_noise=1.0)
    assert not np.array_equal(noisy.silhouettes[0], walks.silhouettes[0])


def test_held_out_walkers_segmented_by_the_pipelines_blazepose(tmp_path, monkeypatch):
    """``--walker-masks pose_crop``: the walkers' silhouettes come from the BlazePose crop segmenter
    (cached apart from the noisy-mask walks): whole people, not the rendered outlines."""
    from evaluation import gait_sites
    from tests.helpers import SHARED_MODELS, require_model

    require_model("mediapipe_pose/pose_landmark_full.tflite")
    monkeypatch.setenv("GAITSCOPE_MODELS", str(SHARED_MODELS))
    monkeypatch.setattr(gait_sites, "CACHE", tmp_path)
    segmented = gait_sites.render_site_walks(identities=2, frames=6, segmenter="pose_crop")
    noisy = gait_sites.render_site_walks(identities=2, frames=6)
    assert len(list(tmp_path.glob("sites_*.npz"))) == 2
    np.testing.assert_array_equal(segmented.identity, noisy.identity)
    for sil, ratio in zip(segmented.silhouettes, segmented.ratios):
        assert sil.shape == (6, 64, 44)
        shown = sil.reshape(6, -1).max(axis=1) > 0
        assert shown.sum() >= 5  # people of the sites' size are tall enough to be segmented
        # A person: foreground in the middle column from head to legs, empty at the sides.
        person = sil[shown] > 127
        assert person[:, 10:50, 22].mean() > 0.8 and person[:, :, :3].mean() < 0.05
        assert (ratio[shown] * 64 >= 40).all()
    assert not all(np.array_equal(a, b) for a, b in zip(segmented.silhouettes, noisy.silhouettes))
