"""GaitBase-style GAR model: OpenGait checkpoint compatibility, pooling, ratio attention, distillation."""

import collections

import pytest
import torch
import torch.nn.functional as F

from stages.gait.model import GaitBase, GaitBaseConfig, GARDistillation, MotionProfile
from stages.gait.weights import config_from_state_dict, load_gait_model

torch.set_num_threads(1)


def opengait_gaitbase_shapes(
    channels=(64, 128, 256, 512), layers=(1, 1, 1, 1), strides=(1, 2, 2, 1), parts=16, embed=256, classes=74
):
    """Parameter names/shapes of OpenGait's Baseline + ResNet9 (configs/gaitbase/gaitbase_da_casiab.yaml),
    derived from OpenGait's construction: BasicConv2d stem at .conv, bn1, torchvision-style
    _make_layer blocks with a 1x1 downsample when stride != 1 or channels change, SeparateFCs
    (p, c_in, c_out), SeparateBNNecks with one parallel BatchNorm1d over c*p."""
    shapes = {}

    def bn(prefix, c):
        shapes.update(
            {
                f"{prefix}.weight": (c,),
                f"{prefix}.bias": (c,),
                f"{prefix}.running_mean": (c,),
                f"{prefix}.running_var": (c,),
                f"{prefix}.num_batches_tracked": (),
            }
        )

    b = "Backbone.forward_block"
    shapes[f"{b}.conv1.conv.weight"] = (channels[0], 1, 3, 3)
    bn(f"{b}.bn1", channels[0])
    inplanes = channels[0]
    for i, (planes, blocks, stride) in enumerate(zip(channels, layers, strides), start=1):
        for j in range(blocks):
            p = f"{b}.layer{i}.{j}"
            s = stride if j == 0 else 1
            shapes[f"{p}.conv1.weight"] = (planes, inplanes, 3, 3)
            bn(f"{p}.bn1", planes)
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            if j == 0 and (s != 1 or inplanes != planes):
                shapes[f"{p}.downsample.0.weight"] = (planes, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes)
            inplanes = planes
    shapes["FCs.fc_bin"] = (parts, channels[-1], embed)
    shapes["BNNecks.fc_bin"] = (parts, embed, classes)
    bn("BNNecks.bn1d", embed * parts)
    return shapes


def random_state(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, s in shapes.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(100)
        elif k.endswith("running_var"):
            out[k] = torch.rand(s, generator=g) + 0.5
        else:
            out[k] = torch.randn(s, generator=g) * 0.1
    return out


def test_gaitbase_keys_and_shapes_match_opengait():
    expected = opengait_gaitbase_shapes()
    model = GaitBase(GaitBaseConfig())
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected


def test_opengait_checkpoint_loads_strictly(tmp_path):
    state = random_state(opengait_gaitbase_shapes())
    path = tmp_path / "GaitBase_DA-60000.pt"
    # OpenGait's checkpoint layout; MultiStepLR's state holds a Counter of milestones
    torch.save(
        {
            "model": state,
            "optimizer": {"state": {}, "param_groups": []},
            "scheduler": {"milestones": collections.Counter({20000: 1})},
            "iteration": 60000,
        },
        path,
    )
    model, version = load_gait_model(path)
    assert version.startswith("GaitBase_DA-60000@")
    assert model.config == GaitBaseConfig()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k])


def opengait_reference_embedding(state, sils, strides=(1, 2, 2, 1), parts=16):
    """OpenGait's Baseline inference written out functionally: ResNet9 per frame, max over time,
    horizontal pooling (mean + max) into parts, separate FCs; embeddings [n, c, p]."""

    def bn(x, p):
        return F.batch_norm(
            x,
            state[f"{p}.running_mean"],
            state[f"{p}.running_var"],
            state[f"{p}.weight"],
            state[f"{p}.bias"],
            False,
            0.0,
            1e-5,
        )

    n, s, h, w = sils.shape
    x = sils.reshape(n * s, 1, h, w)
    b = "Backbone.forward_block"
    x = F.relu(bn(F.conv2d(x, state[f"{b}.conv1.conv.weight"], padding=1), f"{b}.bn1"))
    for i, stride in enumerate(strides, start=1):
        p = f"{b}.layer{i}.0"
        y = F.relu(bn(F.conv2d(x, state[f"{p}.conv1.weight"], stride=stride, padding=1), f"{p}.bn1"))
        y = bn(F.conv2d(y, state[f"{p}.conv2.weight"], padding=1), f"{p}.bn2")
        if f"{p}.downsample.0.weight" in state:
            x = bn(F.conv2d(x, state[f"{p}.downsample.0.weight"], stride=stride), f"{p}.downsample.1")
        x = F.relu(y + x)
    x = x.reshape(n, s, *x.shape[1:]).max(1)[0]  # [n, c, h, w]
    z = x.reshape(n, x.shape[1], parts, -1)
    feat = z.mean(-1) + z.max(-1)[0]  # [n, c, p]
    return feat.permute(2, 0, 1).matmul(state["FCs.fc_bin"]).permute(1, 2, 0)  # [n, c_out, p]


def test_embedding_matches_opengait_computation():
    shapes = opengait_gaitbase_shapes(channels=(8, 16, 32, 32), embed=24, classes=5)
    state = random_state(shapes, seed=1)
    model = GaitBase(config_from_state_dict(state))
    model.load_state_dict(state, strict=True)
    model.eval()
    sils = (torch.rand(2, 5, 64, 44) > 0.5).float()
    with torch.no_grad():
        ours = model(sils).embeddings  # [n, p, c]
    ref = opengait_reference_embedding(state, sils)
    torch.testing.assert_close(ours, ref.permute(0, 2, 1), rtol=1e-4, atol=1e-4)


def small_config(**kw):
    return GaitBaseConfig(channels=(4, 8, 8, 8), strides=(1, 2, 1, 1), maxpool=True, embed_dim=6, class_num=3, **kw)


def test_packed_sequences_equal_separate_forward():
    torch.manual_seed(0)
    model = GaitBase(small_config(ratio_attention=True)).eval()
    a, b = torch.rand(1, 4, 64, 44), torch.rand(1, 7, 64, 44)
    ra, rb = torch.rand(1, 4) + 1, torch.rand(1, 7) + 1
    with torch.no_grad():
        packed = model(torch.cat([a, b], 1), torch.cat([ra, rb], 1), seq_lengths=[4, 7]).embeddings
        sep = torch.cat([model(a, ra).embeddings, model(b, rb).embeddings])
    assert packed.shape == (2, 16, 6)
    torch.testing.assert_close(packed, sep, rtol=1e-5, atol=1e-5)


def test_ratio_attention_identity_without_ratios_and_active_with_them():
    torch.manual_seed(0)
    plain = GaitBase(small_config()).eval()
    gar = GaitBase(small_config(ratio_attention=True)).eval()
    gar.load_state_dict(plain.state_dict(), strict=False)
    assert set(gar.state_dict()) - set(plain.state_dict()) == {"RatioAttention.conv.weight", "RatioAttention.conv.bias"}
    x = torch.rand(2, 6, 64, 44)
    with torch.no_grad():
        torch.testing.assert_close(gar(x).embeddings, plain(x).embeddings)
        low = gar(x, torch.full((2, 6), 0.5)).embeddings
        high = gar(x, torch.full((2, 6), 8.0)).embeddings
    assert not torch.allclose(low, high)


def test_distillation_stops_gradient_into_rgb_branch():
    torch.manual_seed(0)
    net = GARDistillation(small_config())
    sils, rgb = torch.rand(2, 3, 64, 44), torch.rand(2, 3, 3, 64, 44)
    out_s, out_f, distill = net(sils, rgb)
    assert out_f.embeddings.shape == out_s.embeddings.shape == (2, 16, 6)
    distill.backward()
    assert all(p.grad is None or not p.grad.any() for p in net.rgb.parameters())
    assert net.adapters[0].weight.grad.abs().sum() > 0
    assert net.silhouette.Backbone.forward_block.conv1.conv.weight.grad.abs().sum() > 0


def walking_bar(length, period):
    """A bar swinging left and right across a 64 x 44 frame, one full swing every ``period`` frames."""
    sils = torch.zeros(length, 64, 44)
    for t in range(length):
        x = int(round(18 + 12 * torch.sin(torch.tensor(2 * torch.pi * t / period)).item()))
        sils[t, 8:56, x:x + 8] = 1.0
    return sils


def test_motion_profile_dips_at_the_period_and_marks_unseen_lags():
    profile = MotionProfile(max_lag=20, parts=16, embed_dim=6)
    for period in (9, 13):
        p = profile.profile(walking_bar(30, period)[None])[0]
        distances, seen = p[:20], p[20:]
        assert distances[period - 1] < 0.05  # frames one period apart are alike
        assert distances[period // 2 - 1] > 1.0  # half a period apart, farther than unrelated frames
        assert int(torch.argmin(distances[4:period + 2])) + 5 == period
        assert seen.tolist() == [1.0] * 20
    short = profile.profile(walking_bar(12, 9)[None])[0]
    assert short[20:].tolist() == [1.0] * 11 + [0.0] * 9
    assert short[11:20].tolist() == [1.0] * 9  # unseen lags read as unrelated frames
    mirrored = profile.profile(walking_bar(30, 9).flip(-1)[None])
    torch.testing.assert_close(mirrored, profile.profile(walking_bar(30, 9)[None]))


def test_motion_profile_starts_silent_then_separates_cadences_packed_or_not():
    torch.manual_seed(0)
    plain = GaitBase(small_config()).eval()
    moving = GaitBase(small_config(motion_lags=16)).eval()
    moving.load_state_dict(plain.state_dict(), strict=False)
    assert {k for k in moving.state_dict() if k not in plain.state_dict()} == {
        "MotionProfile.mlp.0.weight", "MotionProfile.mlp.0.bias", "MotionProfile.mlp.2.weight", "MotionProfile.mlp.2.bias"}
    slow, fast = walking_bar(20, 12), walking_bar(20, 7)
    with torch.no_grad():
        torch.testing.assert_close(moving(slow[None]).embeddings, plain(slow[None]).embeddings)
        torch.nn.init.normal_(moving.MotionProfile.mlp[-1].weight)
        a, b = moving(slow[None]).embeddings, moving(fast[None]).embeddings
        packed = moving(torch.cat([slow, fast[:15]])[None], seq_lengths=[20, 15]).embeddings
    assert not torch.allclose(a, b, atol=1e-3)
    torch.testing.assert_close(packed[0], a[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed[1], moving(fast[None, :15]).embeddings[0], rtol=1e-5, atol=1e-5)


def test_unknown_config_key_is_reported():
    with pytest.raises(ValueError, match="unknown gait model keys"):
        GaitBaseConfig.from_dict({"channels": [1, 2, 3, 4], "widht": 3})
