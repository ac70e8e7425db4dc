"""Synthetic walkers: determinism, labels, render/ground-truth agreement, exports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from stages.silhouette import cut_sides, opengait_pretreat, silhouette_from_mask
from synth.attributes import ATTRIBUTES, sample_attributes
from synth.body import Population, make_identity
from synth.dataset import BEHAVIOURS, generate_identities, generate_sequences, render_sequence
from synth.export import KNEE_ROW, dhs_windows, load_pickle_array, write_opengait
from synth.groundtruth import decode_mask, encode_mask, load_groundtruth
from synth.scene import SiteConfig, scene_sequences, site_background, write_site
from synth.video import read_video

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "synth"


def test_attribute_table_matches_ra_gar_table_1():
    names = [n for n, _ in ATTRIBUTES]
    assert names == ["gender", "age", "height", "body mass", "hair", "forward head position",
                     "uneven shoulders", "humpback", "hands", "arm swing direction",
                     "arm swing amplitude range", "upper arm movement", "toe", "drag feet", "limping"]
    assert [len(c) for _, c in ATTRIBUTES] == [2, 3, 5, 4, 4, 2, 3, 2, 4, 5, 2, 2, 3, 2, 2]
    a = sample_attributes(np.random.default_rng(0))
    assert set(a) == set(names) and all(0 <= a[n] < len(c) for n, c in ATTRIBUTES)


def test_sequences_are_deterministic_and_typed():
    kw = {"behaviours": ("walk", "mixed"), "frame_size": (240, 320)}
    a = generate_sequences(2, 2, 12, seed=5, **kw)
    b = generate_sequences(2, 2, 12, seed=5, **kw)
    c = generate_sequences(2, 2, 12, seed=6, **kw)
    for x, y in zip(a, b):
        for field in ("silhouettes", "ratios", "boxes", "crops", "walking", "full_body"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field))
    assert any(not np.array_equal(x.silhouettes, z.silhouettes) for x, z in zip(a, c))
    s = a[0]
    assert s.silhouettes.shape == (12, 64, 44) and s.silhouettes.dtype == np.uint8
    assert s.ratios.shape == (12,) and s.ratios.dtype == np.float32
    assert s.crops.shape == (12, 128, 64, 3) and s.crops.dtype == np.uint8
    assert s.walking.dtype == bool and s.full_body.dtype == bool
    assert [x.condition for x in a[:2]] == ["nm", "bg"]
    assert {x.identity for x in a} == {0, 1}
    np.testing.assert_allclose(s.ratios[s.visible], (s.boxes[s.visible, 3] - s.boxes[s.visible, 1]) / 64)
    msg = s.to_message()
    assert len(msg) == 12 and msg.frame_size == (240, 320)
    # An identity does not depend on how many others are drawn with it.
    assert generate_identities(1, 5, first_identity=1)[0].to_json() == generate_identities(2, 5)[1].to_json()


def test_behaviours_give_their_labels():
    seqs = generate_sequences(1, len(BEHAVIOURS) * 2, 40, seed=2, behaviours=BEHAVIOURS, crops=False,
                              frame_size=(240, 320))
    by = {}
    for s in seqs:
        by.setdefault(s.behaviour, []).append(s)
        assert s.visible.mean() > 0.9, s.behaviour
    for s in by.get("walk", []):
        assert s.walking.all() and s.full_body.all()
    for s in by.get("stand", []):
        assert not s.walking.any() and s.full_body.all()
    for s in by.get("partial_walk", []) + by.get("partial_stand", []):
        assert not s.full_body.all()
    for s in by.get("turn", []):
        turned = abs((s.views[-1] - s.views[0] + 180) % 360 - 180)
        assert s.walking.all() and turned > 45
    classes = np.concatenate([(s.walking * 2 + s.full_body) for s in seqs])
    assert set(np.unique(classes)) == {0, 1, 2, 3}  # all four GADER classes occur


def _knee_signal(sils: np.ndarray) -> np.ndarray:
    """(T,) horizontal extent of the knee row: how far apart the legs are."""
    rows = sils[:, KNEE_ROW, :] > 0
    cols = np.arange(rows.shape[1])
    first = np.where(rows, cols, rows.shape[1]).min(axis=1)
    last = np.where(rows, cols, -1).max(axis=1)
    return np.maximum(last - first + 1, 0).astype(np.float64)


def _autocorr(x: np.ndarray, lag: int) -> float:
    x = x - x.mean()
    return float((x[:-lag] * x[lag:]).sum() / max((x * x).sum(), 1e-9))


def test_walking_knee_row_is_periodic_standing_is_not():
    ident = make_identity(0, np.random.default_rng(3))
    walk = render_sequence(ident, 0, "nm", 90.0, "walk", 60, np.random.default_rng(4), crops=False)
    stand = render_sequence(ident, 1, "nm", 90.0, "stand", 60, np.random.default_rng(4), crops=False)
    w, s = _knee_signal(walk.silhouettes), _knee_signal(stand.silhouettes)
    # The legs open and close twice per gait cycle: the knee-row extent repeats after a step or a
    # stride (the two steps differ a little in perspective), and not after half a step.
    step = 25.0 / ident.gait.cadence / 2
    lags = np.arange(int(step * 0.8), int(2 * step * 1.2) + 1)
    corr = np.array([_autocorr(w, int(k)) for k in lags])
    best = lags[corr.argmax()]
    assert corr.max() > 0.35
    assert min(abs(best - step), abs(best - 2 * step)) < 0.2 * step
    assert _autocorr(w, round(step / 2)) < 0.1
    assert w.std() > 2.0
    assert s.std() < 0.3 * w.std() and s.std() < 1.5


def test_attribute_classes_change_silhouettes():
    base = {n: 0 for n, _ in ATTRIBUTES} | {"height": 2, "body mass": 1, "hair": 1}
    pop = Population(spread=0.0)

    def render(attrs, view):
        ident = make_identity(0, np.random.default_rng(0), pop, attributes=attrs)
        s = render_sequence(ident, 0, "nm", view, "walk", 16, np.random.default_rng(1), crops=False)
        return s.silhouettes.astype(np.float32) / 255, float(s.ratios.mean())

    ref = {v: render(base, v) for v in (0.0, 90.0)}
    for name, labels in ATTRIBUTES:
        for c in range(len(labels)):
            if c == base[name]:
                continue
            attrs = dict(base) | {name: c}
            diff = max(float(np.abs(render(attrs, v)[0] - ref[v][0]).mean()) for v in (0.0, 90.0))
            ratio = abs(render(attrs, 90.0)[1] / ref[90.0][1] - 1)
            assert diff > 0.005 or ratio > 0.03, (name, labels[c], diff, ratio)


def test_export_matches_pipeline_pretreatment(tmp_path):
    seqs = generate_sequences(1, 2, 10, seed=9, frame_size=(240, 320), masks=True,
                              behaviours=("walk", "partial_walk"))
    folders = write_opengait(seqs, tmp_path)
    for seq, folder in zip(seqs, folders):
        view = folder.name
        sils = load_pickle_array(folder / f"{view}.pkl")
        ratios = load_pickle_array(folder / f"{view}-ratios.pkl")
        rgb = load_pickle_array(folder / f"{view}-rgb.pkl")
        kept = [t for t in range(len(seq)) if opengait_pretreat(seq.masks[t]) is not None]
        assert len(sils) == len(kept) == len(ratios) == len(rgb)
        for i, t in enumerate(kept):
            np.testing.assert_array_equal(cut_sides(sils[i]), silhouette_from_mask(seq.masks[t]))
            ys = np.flatnonzero(seq.masks[t].any(axis=1))
            assert ratios[i] == pytest.approx((ys[-1] + 1 - ys[0]) / 64)
    index = json.loads((tmp_path / "sequences.json").read_text())
    assert index[0]["folder"] == folders[0].relative_to(tmp_path).as_posix()
    attrs = json.loads((tmp_path / "attributes.json").read_text())
    assert attrs["identities"]["0"]["classes"] == seqs[0].attributes
    windows = dhs_windows(seqs, lengths=(6,))
    assert windows["dhs_6"].shape[1:] == (44, 6) and len(windows["label_6"]) == len(windows["dhs_6"])


def test_pipeline_tracklets_agree_with_synthetic_sequences():
    """The pipeline's own stage, fed the rendered masks, yields the same frames and ratios and
    nearly the same silhouettes (it pretreats a box region, not the whole frame: about a pixel of
    horizontal phase)."""
    sv = pytest.importorskip("supervision")
    from pipeline.messages import Frame, FrameResult
    from stages.tracklets import TrackletAssembler

    for seq in generate_sequences(1, 2, 20, seed=9, frame_size=(240, 320), masks=True, crops=False,
                                  behaviours=("walk", "partial_walk")):
        assembler = TrackletAssembler(window_every=1000, max_length=1000, min_length=1, keep_crops=False)
        results = []
        for t in np.flatnonzero(seq.visible):
            det = sv.Detections(xyxy=seq.boxes[t][None], mask=seq.masks[t][None], tracker_id=np.array([1]))
            results.append(FrameResult(Frame("synth", int(t), t / seq.fps, np.zeros((240, 320, 3), np.uint8)), det))
        (window,) = assembler.process(results) + assembler.end_source("synth")
        got = window.sequence
        np.testing.assert_array_equal(got.frame_indices, np.flatnonzero(seq.visible))
        np.testing.assert_allclose(got.ratios, seq.ratios[seq.visible])
        agree = ((got.silhouettes > 127) == (seq.silhouettes[seq.visible] > 127)).mean()
        assert agree > 0.95


def test_rle_round_trip():
    mask = np.random.default_rng(0).random((7, 9)) > 0.5
    rle = encode_mask(mask, (3, 4, 12, 11))
    np.testing.assert_array_equal(decode_mask(rle), mask)
    assert decode_mask(rle, (20, 20))[4:11, 3:12].sum() == mask.sum()


def test_scene_masks_and_boxes_agree_with_video(tmp_path):
    cfg = SiteConfig.from_dict(yaml.safe_load((CONFIGS / "test_clip.yaml").read_text()))
    cfg = SiteConfig(**{**cfg.__dict__, "duration_s": 1.2, "noise_sigma": 0.0, "lighting": (0.0, 1.0)})
    gt = load_groundtruth(write_site(cfg, tmp_path))
    frames = read_video(tmp_path / "cam0.mp4")
    records = gt["frames"]["cam0"]
    assert len(frames) == len(records) == gt["n_frames"]
    background = site_background(cfg, 0).astype(np.int16)
    size = tuple(gt["frame_size"])
    seen = 0
    for image, people in zip(frames, records):
        diff = np.abs(image.astype(np.int16) - background).max(axis=2)
        union = np.zeros(size, bool)
        for rec in people:
            mask = decode_mask(rec["mask"], size)
            union |= mask
            ys, xs = np.nonzero(mask)
            assert rec["box"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            inner = mask & ~np.roll(mask, 1, 0) | mask & ~np.roll(mask, -1, 0)
            core = mask & ~inner
            if core.sum() > 20:
                assert np.median(diff[core]) > 12  # the person is really drawn there
                seen += 1
        grown = union | np.roll(union, 2, 0) | np.roll(union, -2, 0) | np.roll(union, 2, 1) | np.roll(union, -2, 1)
        assert np.median(diff[~grown]) < 4  # and nothing else differs from the background
    assert seen > 10
    ids = {r["identity"] for people in records for r in people}
    assert ids <= {i["identity"] for i in gt["identities"]}
    # The scene cut back into tracks: one per visit seen, frames and labels from the ground truth.
    tracks = list(scene_sequences(tmp_path, min_frames=3))
    assert {(t.identity, t.sequence) for t in tracks} <= {(v["identity"], v["visit"]) for v in gt["visits"]}
    for t in tracks:
        recs = [r for people in records for r in people if r["visit"] == t.sequence]
        assert len(t) == len(recs) and t.crops.shape == (len(t), 128, 64, 3)
        np.testing.assert_array_equal(t.boxes, np.array([r["box"] for r in recs], np.float32))
        np.testing.assert_array_equal(t.full_body, [r["full_body"] for r in recs])
        first = recs[int(np.flatnonzero(t.visible)[0])]
        np.testing.assert_array_equal(t.silhouettes[t.visible][0], silhouette_from_mask(decode_mask(first["mask"], size)))


def test_scene_is_deterministic(tmp_path):
    data = yaml.safe_load((CONFIGS / "test_clip.yaml").read_text()) | {"duration_s": 0.6}
    a = load_groundtruth(write_site(SiteConfig.from_dict(data), tmp_path / "a", video=False))
    b = load_groundtruth(write_site(SiteConfig.from_dict(data), tmp_path / "b", video=False))
    assert a == b
    assert any(a["frames"]["cam0"])
    c = load_groundtruth(write_site(SiteConfig.from_dict(data | {"seed": 4}), tmp_path / "c", video=False))
    assert c["frames"] != a["frames"]


def test_cli_dataset_and_config_errors(tmp_path, capsys):
    from synth.cli import main

    assert main(["dataset", "--config", str(CONFIGS / "test_dataset.yaml"), "--out", str(tmp_path / "ds")]) == 0
    index = json.loads((tmp_path / "ds" / "sequences.json").read_text())
    assert len(index) == 6 and (tmp_path / "ds" / "dhs.npz").is_file()
    bad = tmp_path / "bad.yaml"
    bad.write_text("identities: 2\nframez: 10\n")
    assert main(["dataset", "--config", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "framez" in capsys.readouterr().err
    bad.write_text("cameras: []\n")
    assert main(["scene", "--config", str(bad), "--out", str(tmp_path / "y")]) == 2


def test_population_spread_controls_difficulty():
    """Same-view GEI nearest neighbour finds identities easily at spread 1, hardly at spread 0.1."""

    def rank1(spread: float) -> float:
        seqs = generate_sequences(12, 2, 20, seed=1, conditions=("nm",), views=(90.0,), crops=False,
                                  frame_size=(240, 320), population=Population(spread=spread))
        gei = {(s.identity, s.sequence): s.silhouettes.astype(np.float32).mean(axis=0).ravel() for s in seqs}
        gallery = np.stack([gei[(i, 0)] for i in range(12)])
        probe = np.stack([gei[(i, 1)] for i in range(12)])
        dist = ((probe[:, None] - gallery[None]) ** 2).sum(axis=-1)
        return float((dist.argmin(axis=1) == np.arange(12)).mean())

    easy, hard = rank1(1.0), rank1(0.1)
    assert easy >= 0.75 and hard <= easy - 0.3, (easy, hard)


def test_mask_noise_corrupts_silhouettes_not_labels():
    kw = {"seed": 3, "views": (60.0,), "conditions": ("nm",), "crops": False, "frame_size": (240, 320)}
    clean = generate_sequences(1, 1, 12, **kw)[0]
    noisy = generate_sequences(1, 1, 12, mask_noise=1.0, **kw)[0]
    again = generate_sequences(1, 1, 12, mask_noise=1.0, **kw)[0]
    np.testing.assert_array_equal(noisy.silhouettes, again.silhouettes)
    for field in ("ratios", "boxes", "walking", "full_body"):
        np.testing.assert_array_equal(getattr(noisy, field), getattr(clean, field))
    a, b = clean.silhouettes > 127, noisy.silhouettes > 127
    iou = (a & b).sum() / (a | b).sum()
    assert 0.6 < iou < 0.98


def test_outfits_change_clothes_not_identity():
    seqs = generate_sequences(1, 8, 4, seed=2, conditions=("nm",), views=(90.0,), outfits=3, frame_size=(240, 320))
    by_outfit = {}
    for s in seqs:
        torso = s.crops[:, 40:70, 26:38].reshape(-1, 3).mean(axis=0)  # centre of the upper body
        by_outfit.setdefault(s.outfit, []).append(torso)
    assert len(by_outfit) >= 2 and {s.identity for s in seqs} == {0}
    means = [np.mean(v, axis=0) for v in by_outfit.values()]
    assert max(np.abs(a - b).max() for a in means for b in means) > 15


def test_realism_statistics_on_synthetic_and_casia():
    from synth.realism import load_casia_subject, sequence_stats

    ident = make_identity(0, np.random.default_rng(3))
    walk = render_sequence(ident, 0, "nm", 90.0, "walk", 60, np.random.default_rng(4), crops=False)
    stats = sequence_stats(walk.silhouettes64)
    stride_frames = 25.0 / ident.gait.cadence
    assert abs(stats["period"] - stride_frames) < 0.15 * stride_frames
    assert 0.2 < stats["aspect"] < 0.7 and stats["leg_swing"] > 4
    casia = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "casia-b"
    if not (casia / "001.npz.xz").is_file():
        pytest.skip("CASIA-B not found at ../shared/data/casia-b")
    real = sequence_stats(load_casia_subject(casia, "001")["nm-01/090"])
    assert 20 <= real["period"] <= 30 and real["leg_swing"] > 6


class _UpperHalfSegmenter:
    """A stand-in crop segmenter: the upper half of each box; keeps what it was shown."""

    crop_scale = 1.3

    def __init__(self, min_height: int) -> None:
        self.min_height = min_height
        self.seen: list[tuple[np.ndarray, np.ndarray]] = []

    def box_masks(self, people):
        self.seen += people
        masks = []
        for _, box in people:
            x1, y1, x2, y2 = int(np.floor(box[0])), int(np.floor(box[1])), int(np.ceil(box[2])), int(np.ceil(box[3]))
            mask = np.zeros((y2 - y1, x2 - x1), bool)
            mask[: (y2 - y1) // 2] = True
            masks.append(mask)
        return masks


def test_segmenter_makes_the_silhouettes_from_rendered_frames_labels_stay():
    from stages.segment.crops import region_around

    kw = {"seed": 3, "views": (60.0,), "conditions": ("nm",), "crops": False, "frame_size": (240, 320)}
    clean = generate_sequences(1, 1, 10, **kw)[0]
    segmenter = _UpperHalfSegmenter(min_height=0)
    made = generate_sequences(1, 1, 10, segmenter=segmenter, **kw)[0]
    for field in ("ratios", "boxes", "walking", "full_body"):
        np.testing.assert_array_equal(getattr(made, field), getattr(clean, field))
    assert len(segmenter.seen) == clean.visible.sum() == made.visible.sum()
    # Each silhouette is the segmenter's mask (a filled block), not the rendered body's outline.
    frame = made.silhouettes[made.visible][0] > 127
    cols = np.flatnonzero(frame.any(axis=0))
    assert frame[:, cols[0]:cols[-1] + 1].all()
    assert not np.array_equal(made.silhouettes, clean.silhouettes)
    # The segmenter sees the person with the context it cuts around the box rendered, not black.
    image, box = segmenter.seen[0]
    region = region_around(box, segmenter.crop_scale, (1, 1))
    x1, y1 = max(int(region.x1) + 1, 0), max(int(region.y1) + 1, 0)
    x2, y2 = min(int(region.x1 + region.width) - 1, 320), min(int(region.y1 + region.height) - 1, 240)
    assert (image[y1:y2, x1:x2].max(axis=2) > 0).mean() > 0.99
    assert image[:, : max(x1 - 3, 0)].max(initial=0) == 0  # nothing else is rendered


def test_segmenter_skips_people_below_its_least_height_and_refuses_mask_noise():
    kw = {"seed": 3, "views": (60.0,), "conditions": ("nm",), "crops": False, "frame_size": (240, 320)}
    tall = generate_sequences(1, 1, 6, **kw)[0]
    least = int(np.ceil((tall.boxes[:, 3] - tall.boxes[:, 1]).max())) + 1
    made = generate_sequences(1, 1, 6, segmenter=_UpperHalfSegmenter(min_height=least), **kw)[0]
    assert not made.visible.any() and not made.silhouettes.any()
    with pytest.raises(ValueError, match="either a segmenter or mask_noise"):
        generate_sequences(1, 1, 6, segmenter=_UpperHalfSegmenter(0), mask_noise=1.0, **kw)


def test_synthetic_walkers_refuse_unknown_segmenters_and_cameras():
    from training.synthetic import synthetic_arrays

    with pytest.raises(ValueError, match="unknown segmenter 'sam'"):
        synthetic_arrays(1, 1, 4, 0, segmenter="sam")
    with pytest.raises(ValueError, match="unknown cameras 'drone'"):
        synthetic_arrays(1, 1, 4, 0, cameras="drone")
