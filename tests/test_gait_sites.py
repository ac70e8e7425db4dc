"""Cross-camera Rank-1 on rendered walkers and the direction-handling comparison (pure numpy); the gait
evaluation's refusal of a missing GPU."""

import numpy as np
import pytest
import torch

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


def test_rank1_is_split_by_the_views_of_the_gallery_walk_and_the_probe():
    # identity 0 seen side-on throughout; identity 1's gallery walk head-on, its probes side-on
    # (90), oblique (45) and from behind (180)
    w = walks(2, [90.0, 90.0, 270.0, 90.0, 90.0] + [0.0, 90.0, 45.0, 180.0, 100.0])
    emb = np.repeat(np.eye(2, dtype=np.float32), 5, axis=0)[:, None, :]
    emb[6] = emb[0]  # identity 1's side-on same-outfit probe looks like identity 0
    res = cross_camera_rank1(emb, w)
    assert list(res["by_views"]) == ["front/back + front/back", "front/back + oblique", "front/back + side", "side + side"]
    assert res["by_views"]["side + side"] == {"same_outfit": 1.0, "changed_outfit": 1.0,
                                              "probes": {"same_outfit": 2, "changed_outfit": 2}}
    assert res["by_views"]["front/back + side"] == {"same_outfit": 0.0, "changed_outfit": 1.0,
                                                    "probes": {"same_outfit": 1, "changed_outfit": 1}}
    assert res["by_views"]["front/back + oblique"] == {"same_outfit": 1.0, "changed_outfit": None,
                                                       "probes": {"same_outfit": 1, "changed_outfit": 0}}
    assert res["by_views"]["front/back + front/back"]["probes"] == {"same_outfit": 0, "changed_outfit": 1}
    counted = sum(sum(r["probes"].values()) for r in res["by_views"].values())
    assert counted == sum(res["probes"].values()) == 8


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
    # with the window the assembler emits when the track ends
    assert pipeline_windows(29, final=True) == [slice(0, 29)]
    assert pipeline_windows(95, final=True)[-1] == slice(0, 95)
    assert pipeline_windows(150, final=True) == pipeline_windows(150)


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
    # The exact masks show the same walks from the same cameras: only the masks differ.
    exact = gait_sites.render_site_walks(identities=2, frames=6, segmenter=gait_sites.EXACT_MASKS)
    assert len(list(tmp_path.glob("sites_*.npz"))) == 3
    np.testing.assert_array_equal(exact.view_deg, segmented.view_deg)
    np.testing.assert_allclose(np.stack(exact.ratios), np.stack(segmented.ratios))
    overlap = [np.logical_and(a > 127, b > 127).sum() / max(np.logical_or(a > 127, b > 127).sum(), 1)
               for a, b in zip(exact.silhouettes, segmented.silhouettes)]
    assert np.mean(overlap) > 0.5 and not all(np.array_equal(a, b) for a, b in zip(exact.silhouettes, segmented.silhouettes))


def _rendered_person(frame_size, box, visit, state="walking"):
    from synth.groundtruth import encode_mask

    mask = np.zeros(frame_size, bool)
    x1, y1, x2, y2 = box
    mask[y1:y2, x1:x2] = True
    mask[y1 + (y2 - y1) // 2 :, (x1 + x2) // 2] = False  # a gap between the legs
    roi = (x1, y1, x2, y2)
    return {"visit": visit, "state": state, "full_body": True, "visible_fraction": 1.0, "box": list(box),
            "mask": encode_mask(mask[y1:y2, x1:x2], roi)}, mask


def test_track_frames_pair_the_segmenters_silhouettes_with_exact_ones_on_walking_frames():
    from evaluation.gait_tracks import track_frames
    from evaluation.identity.truth import TrackTruth
    from pipeline.messages import GaitDetection, GaitSegment, SilhouetteSequence, TrackWindow
    from stages.silhouette import silhouette_from_mask

    size, box = (120, 80), (20, 10, 50, 100)
    people, masks = [], []
    for index in range(6):
        person, mask = _rendered_person(size, box, visit=3, state="standing" if index == 4 else "walking")
        people.append([person, {**person, "visit": 9}])
        masks.append(mask)
    truth = {"frame_size": list(size), "frames": {"cam": people}}
    segmenter = np.full((1, 64, 44), 7, np.uint8)

    def window(indices, gait):
        n = len(indices)
        seq = SilhouetteSequence(np.repeat(segmenter, n, 0), np.full(n, 1.5, np.float32),
                                 np.tile(np.array(box, np.float32), (n, 1)), np.array(indices), np.zeros(n), size)
        return TrackWindow("cam.mp4", 1, 0, False, seq, gait=gait)

    track = TrackTruth("cam.mp4", 1, "cam", 5, 3, (0, False), 6, 6)
    routed = GaitDetection([GaitSegment(1, 3, 0.9)], 0.5, "gait")  # positions 1-2 of frames 0-3
    not_routed = GaitDetection([GaitSegment(0, 4, 0.9)], 1.0, "appearance")
    frames = track_frames([window([0, 1, 2, 3], routed), window([2, 3, 4, 5], not_routed)], track, truth)  # overlap
    assert len(frames.silhouettes) == 6 and (frames.silhouettes == 7).all()
    assert frames.walking.tolist() == [True, True, True, True, False, True]
    assert frames.routed.tolist() == [False, True, True, False, False, False]
    assert len(frames.selection("segmenter_routed")[0]) == 2
    assert np.array_equal(frames.exact[0], silhouette_from_mask(masks[0]))
    walking, ratios = frames.selection("exact_walking")
    assert len(walking) == 5 and np.allclose(ratios, 1.5)
    assert len(frames.selection("segmenter_all_frames")[0]) == 6


def test_tracks_rank1_scores_each_selection_across_cameras():
    import torch

    from evaluation.gait_tracks import SELECTIONS, TrackFrames, tracks_rank1
    from evaluation.identity.truth import TrackTruth

    class MeanModel(torch.nn.Module):
        """Embeds a packed sequence by each sequence's mean pixel (enough to tell the tracks apart)."""

        def forward(self, sils, ratios, seq_lengths):
            means = torch.stack([s.mean() for s in sils[0].split(seq_lengths)])
            return type("Out", (), {"embeddings": means[:, None, None].repeat(1, 1, 2)})()

    model = MeanModel()
    model.config = type("C", (), {"parts": 1, "embed_dim": 2})()
    model.register_parameter("p", torch.nn.Parameter(torch.zeros(1)))
    tracks, frames = [], []
    for camera in ("a", "b"):
        for person in (1, 2):
            value = 40 * person  # the segmenter's look: each person their own grey
            exact = 40 * person if camera == "a" else 40 * (3 - person)  # exact masks swap the two
            tracks.append(TrackTruth(camera, person, camera, person, person, (0, False), 30, 30))
            frames.append(TrackFrames(np.full((30, 64, 44), value, np.uint8), np.full((30, 64, 44), exact, np.uint8),
                                      np.ones(30, np.float32), np.arange(30) >= 10, np.arange(30) >= 5))
    scores = tracks_rank1(model, frames, tracks)
    assert set(scores) == set(SELECTIONS)
    assert scores["segmenter_all_frames"]["same_outfit"] == 1.0 and scores["segmenter_all_frames"]["tracks"] == 4
    assert scores["segmenter_walking"]["same_outfit"] == 1.0 and scores["segmenter_routed"]["tracks"] == 4
    assert scores["exact_walking"]["same_outfit"] == 0.0
    assert scores["exact_walking"]["probes"]["same_outfit"] == 4


def test_the_tracks_command_reports_a_bad_site_or_override_in_one_line(tmp_path):
    import pytest

    from evaluation.gait import main

    with pytest.raises(SystemExit, match="error: site config not found"):
        main(["tracks", "--site", str(tmp_path / "absent.yaml")])
    site = tmp_path / "site.yaml"
    site.write_text("{}")
    with pytest.raises(SystemExit, match="error: segment.backend: unknown segment backend 'nope'"):
        main(["tracks", "--site", str(site), "--set", "segment.backend=nope"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_gait_evaluation_on_a_missing_gpu_is_refused_in_one_line():
    from evaluation.gait import main

    with pytest.raises(SystemExit, match="no CUDA GPU"):
        main(["evaluate", "--device", "cuda"])
