"""The infill networks: partial convolution, ConvLSTM, attention and the four InfillNet variants.

Networks here are tiny (widths 4-8) on grids of a few dozen pixels, so the suite runs in seconds
on a CPU; the properties under test (masking, causality, streaming, grid independence) do not
depend on the size.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the usual alias)

from radinfill.model import InfillNet, build, list_variants
from radinfill.model.attention import CrossModalAttention, masked_global_pool
from radinfill.model.convlstm import ConvLSTM, ConvLSTMCell
from radinfill.model.features import AUX_ADVECTED, AUX_CHANNELS, AUX_HOLE
from radinfill.model.pconv import MaskedAvgPool2d, PartialConv2d, partial_conv2d

VARIANTS = list_variants()
TEMPORAL = [name for name in VARIANTS if "lstm" in name]
#: Small architecture for the tests: three levels, so grids are padded to a multiple of 8.
TINY = {"widths": (4, 8, 8), "kernels": (5, 3, 3), "attention_reduction": 1}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny(variant: str, **hparams: object) -> InfillNet:
    """A tiny network with its zero-initialised output layer perturbed.

    The head starts at zero (so that the untrained network returns the advected field); with a
    zero head no gradient reaches the body and every output equals the input, which would make
    the gradient, causality and locality tests vacuous. Small weights keep the correction
    realistic (|c| < 2 in log1p space), so that absolute tolerances mean something.
    """
    model = build(variant, **{**TINY, **hparams})
    with torch.no_grad():
        model.head.block.conv.weight.normal_(std=0.05)
        model.head.block.conv.bias.normal_(std=0.05)
    return model


def disc(rows: int, cols: int, centre: tuple[float, float], radius: float) -> torch.Tensor:
    """Boolean ``(rows, cols)`` disc."""
    r = torch.arange(rows)[:, None] - centre[0]
    c = torch.arange(cols)[None, :] - centre[1]
    return r**2 + c**2 < radius**2


def sample(
    rows: int = 40, cols: int = 56, steps: int = 4, batch: int = 2, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random rain, validity and auxiliary channels with an outage and a no-coverage corner.

    The hole (a disc) is missing in the last two frames; the top-left corner has no coverage in
    any frame. ``aux`` follows the channel layout of :mod:`radinfill.model.features`.
    """
    generator = torch.Generator().manual_seed(seed)
    values = torch.relu(torch.randn(batch, steps, 1, rows, cols, generator=generator)) * 4.0
    hole = disc(rows, cols, (rows / 2, cols / 2), min(rows, cols) / 4)
    covered = ~disc(rows, cols, (0, 0), min(rows, cols) / 3)
    valid = covered.expand(batch, steps, 1, rows, cols).clone()
    valid[:, -2:, 0] &= ~hole
    valid = valid.float()
    values = values * valid
    aux = torch.randn(batch, AUX_CHANNELS, rows, cols, generator=generator)
    aux[:, AUX_ADVECTED] = torch.relu(aux[:, AUX_ADVECTED]) * 3.0
    aux[:, AUX_HOLE] = hole.float()
    return values, valid, aux


# --- partial convolution ------------------------------------------------------------------------


@pytest.mark.parametrize(("stride", "kernel"), [(1, 3), (2, 5)])
def test_partial_conv_ignores_values_under_mask_zero(stride, kernel):
    x = torch.randn(2, 3, 17, 20)
    mask = (torch.rand(2, 1, 17, 20) > 0.6).float()
    weight, bias = torch.randn(4, 3, kernel, kernel), torch.randn(4)
    out, new_mask = partial_conv2d(x, mask, weight, bias, stride, kernel // 2)
    changed = torch.where(mask.bool(), x, torch.randn_like(x) * 100.0)
    out_changed, _ = partial_conv2d(changed, mask, weight, bias, stride, kernel // 2)
    assert torch.equal(out, out_changed)
    assert (out[new_mask.expand_as(out) == 0] == 0).all()


@pytest.mark.parametrize(("stride", "kernel", "dilation"), [(1, 3, 1), (2, 5, 1), (1, 3, 2)])
def test_partial_conv_new_mask_marks_windows_with_a_valid_input(stride, kernel, dilation):
    mask = (torch.rand(1, 1, 23, 19) > 0.85).float()
    padding = dilation * (kernel // 2)
    _, new_mask = partial_conv2d(
        torch.randn(1, 2, 23, 19), mask, torch.randn(3, 2, kernel, kernel), None,
        stride, padding, dilation,
    )  # fmt: skip
    # Independent reference: a window saw a valid input iff its maximum is 1.
    expected = F.max_pool2d(F.pad(mask, (padding,) * 4), kernel, stride, 0, dilation)
    assert torch.equal(new_mask, expected)
    assert 0 < new_mask.mean() < 1


def test_partial_conv_with_all_valid_mask_is_a_plain_convolution():
    x = torch.randn(2, 3, 16, 21)
    weight, bias = torch.randn(5, 3, 3, 3), torch.randn(5)
    out, new_mask = partial_conv2d(x, torch.ones(2, 1, 16, 21), weight, bias, 1, 0)
    assert torch.allclose(out, F.conv2d(x, weight, bias), atol=1e-5)
    assert (new_mask == 1).all()


def test_partial_conv_renormalises_by_the_valid_count():
    """A constant field under a ragged mask: each output is the full-window sum of the constant."""
    mask = (torch.rand(1, 1, 15, 15) > 0.5).float()
    out, new_mask = partial_conv2d(
        torch.full((1, 2, 15, 15), 0.7), mask, torch.ones(1, 2, 3, 3), torch.tensor([0.5]), 1, 1
    )
    # 2 channels x 9 taps of 0.7, as if every input were valid, plus the bias.
    expected = torch.where(new_mask.bool(), torch.tensor(2 * 9 * 0.7 + 0.5), torch.tensor(0.0))
    assert torch.allclose(out, expected, atol=1e-5)


def test_partial_conv_told_its_input_is_masked_gives_the_same_result():
    mask = (torch.rand(2, 1, 17, 20) > 0.6).float()
    x = torch.randn(2, 3, 17, 20) * mask
    weight, bias = torch.randn(4, 3, 5, 5), torch.randn(4)
    told = partial_conv2d(x, mask, weight, bias, 2, 2, masked=True)
    for a, b in zip(told, partial_conv2d(x, mask, weight, bias, 2, 2), strict=True):
        assert torch.equal(a, b)


def test_partial_conv_of_channel_groups_is_that_of_their_concatenation():
    mask = (torch.rand(2, 1, 17, 20) > 0.6).float()
    parts = [torch.randn(2, 3, 17, 20), torch.randn(2, 2, 17, 20)]
    weight, bias = torch.randn(4, 5, 3, 3), torch.randn(4)
    whole, whole_mask = partial_conv2d(torch.cat(parts, 1), mask, weight, bias, 1, 1)
    out, new_mask = partial_conv2d(parts, mask, weight, bias, 1, 1)
    assert torch.allclose(out, whole, atol=1e-5)
    assert torch.equal(new_mask, whole_mask)
    with pytest.raises(ValueError, match="4 channels, the weight 5"):
        partial_conv2d([parts[0], parts[0][:, :1]], mask, weight)


def test_partial_conv_wants_a_single_channel_mask_of_the_input_size():
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="mask"):
        partial_conv2d(x, torch.ones(1, 3, 8, 8), torch.randn(2, 3, 3, 3))
    with pytest.raises(ValueError, match="size"):
        partial_conv2d(x, torch.ones(1, 1, 8, 9), torch.randn(2, 3, 3, 3))
    with pytest.raises(ValueError, match="odd"):
        PartialConv2d(3, 2, 4)


def test_masked_average_pool_is_the_mean_of_valid_pixels():
    x = torch.arange(2 * 6 * 6, dtype=torch.float32).reshape(1, 2, 6, 6)
    mask = torch.zeros(1, 1, 6, 6)
    mask[..., 0, 0] = mask[..., 0, 1] = mask[..., 1, 1] = 1.0
    pooled, new_mask = MaskedAvgPool2d(2, 3, stride=2)(x, mask)
    # Output (i, j) covers rows 2i-1..2i+1 and columns 2j-1..2j+1.
    for channel in range(2):
        x_c = x[0, channel]
        assert torch.isclose(pooled[0, channel, 0, 0], (x_c[0, 0] + x_c[0, 1] + x_c[1, 1]) / 3)
        assert torch.isclose(pooled[0, channel, 0, 1], (x_c[0, 1] + x_c[1, 1]) / 2)
        assert torch.isclose(pooled[0, channel, 1, 1], x_c[1, 1])
    expected_mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert torch.equal(new_mask[0, 0], expected_mask)
    assert (pooled[0, :, 2] == 0).all()
    assert not list(MaskedAvgPool2d(2, 3).state_dict())  # nothing to learn or to save


# --- ConvLSTM and attention ---------------------------------------------------------------------


def test_convlstm_in_pieces_equals_whole_sequence():
    lstm = ConvLSTM(3, 5, 3)
    sequence = torch.randn(2, 6, 3, 12, 9)
    outputs, (hidden, cell) = lstm(sequence)
    first, state = lstm(sequence[:, :4])
    second, (hidden_2, cell_2) = lstm(sequence[:, 4:], state)
    assert torch.allclose(torch.cat([first, second], 1), outputs, atol=1e-6)
    assert torch.allclose(hidden, hidden_2, atol=1e-6)
    assert torch.allclose(cell, cell_2, atol=1e-6)
    assert outputs.shape == (2, 6, 5, 12, 9)


def test_convlstm_weights_do_not_depend_on_the_grid():
    cell = ConvLSTMCell(2, 4, 3)
    shapes = {name: tuple(p.shape) for name, p in cell.named_parameters()}
    assert shapes == {"gates.weight": (16, 6, 3, 3), "gates.bias": (16,)}
    for size in [(7, 11), (30, 4)]:
        hidden, _ = cell(torch.randn(1, 2, *size))
        assert hidden.shape == (1, 4, *size)
    with pytest.raises(ValueError, match="state size"):
        cell(torch.randn(1, 2, 7, 11), (torch.zeros(1, 4, 7, 10), torch.zeros(1, 4, 7, 10)))


def test_masked_global_pool_ignores_masked_pixels_and_matches_adaptive_pooling():
    x = torch.randn(2, 3, 9, 14)
    mean, maximum = masked_global_pool(x, torch.ones(2, 1, 9, 14))
    assert torch.allclose(mean, F.adaptive_avg_pool2d(x, 1).flatten(1), atol=1e-6)
    assert torch.equal(maximum, F.adaptive_max_pool2d(x, 1).flatten(1))
    mask = torch.zeros(2, 1, 9, 14)
    mask[..., 2:5, 3:8] = 1.0
    mean, maximum = masked_global_pool(x + 1000.0 * (1 - mask), mask)
    inside = x[..., 2:5, 3:8]
    assert torch.allclose(mean, inside.mean(dim=(2, 3)), atol=1e-5)
    assert torch.equal(maximum, inside.amax(dim=(2, 3)))


def test_cross_modal_attention_works_on_any_grid_and_stays_in_the_mask():
    attention = CrossModalAttention(6, reduction=2)
    for size in [(10, 37), (33, 8)]:
        aux, radar = torch.rand(2, 6, *size), torch.rand(2, 4, *size)
        mask = torch.ones(2, 1, *size)
        mask[..., : size[0] // 2, :] = 0.0
        out = attention(aux, mask, radar)
        assert out.shape == aux.shape
        assert (out[mask.expand_as(out) == 0] == 0).all()
        # Both attentions are weights in (0, 1) on the auxiliary features.
        assert ((out >= 0) & (out <= aux)).all()


# --- InfillNet ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_untrained_network_returns_the_advected_field(variant):
    values, valid, aux = sample()
    aux[:, AUX_ADVECTED, :3] = -1.0  # a negative input is clipped like the output
    prediction, _ = build(variant, **TINY)(values, valid, aux)
    assert prediction.shape == (2, 1, 40, 56)
    hole = aux[:, AUX_HOLE : AUX_HOLE + 1].bool()
    assert torch.equal(prediction[hole], aux[:, AUX_ADVECTED : AUX_ADVECTED + 1][hole])
    assert (prediction >= 0).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_parameter_gets_a_gradient(variant):
    model = tiny(variant, lstm_levels=3)
    values, valid, aux = sample()
    prediction, _ = model(values, valid, aux)
    assert (prediction >= 0).all()
    hole = aux[:, AUX_HOLE : AUX_HOLE + 1].bool()
    (prediction[hole].mean() + prediction.square().mean()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("variant", VARIANTS)
def test_values_without_data_do_not_influence_the_prediction(variant):
    model = tiny(variant)
    values, valid, aux = sample()
    prediction, _ = model(values, valid, aux)
    noise = torch.rand_like(values) * 50.0
    changed_values = torch.where(valid.bool(), values, noise)
    domain = torch.maximum(valid[:, -1], aux[:, AUX_HOLE : AUX_HOLE + 1]).bool()
    changed_aux = torch.where(domain, aux, torch.rand_like(aux) * 50.0)
    changed_aux[:, AUX_HOLE] = aux[:, AUX_HOLE]  # the hole channel defines the domain
    changed, _ = model(changed_values, valid, changed_aux)
    domain = domain.expand_as(prediction)
    assert torch.equal(prediction[domain], changed[domain])
    # Outside the domain nothing is predicted: the advected input passes through.
    assert torch.equal(changed[~domain], changed_aux[:, AUX_ADVECTED : AUX_ADVECTED + 1][~domain])


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_partial_convolution_reads_features_already_zero_outside_its_mask(variant):
    """The network tells its partial convolutions that their inputs are masked (they skip the
    multiplication): sound only while every feature map it convolves is 0 wherever its mask
    is 0. Checked layer by layer, with noise where there is no data and a grid to be padded."""
    model = tiny(variant)
    values, valid, aux = sample(rows=37, cols=53)
    values = torch.where(valid.bool(), values, torch.rand_like(values) * 50.0)
    domain = torch.maximum(valid[:, -1], aux[:, AUX_HOLE : AUX_HOLE + 1]).bool()
    aux = torch.where(domain, aux, torch.rand_like(aux) * 50.0)
    checked = []

    def check(module: PartialConv2d, args: tuple[torch.Tensor | list, torch.Tensor]) -> None:
        x, mask = args
        for part in [x] if isinstance(x, torch.Tensor) else x:  # a decoder's channel groups
            assert (part[mask.expand_as(part) == 0] == 0).all()
        checked.append((module, bool((mask == 0).any())))

    convolutions = [m for m in model.modules() if isinstance(m, PartialConv2d)]
    for module in convolutions:
        module.register_forward_pre_hook(check)
    with torch.no_grad():
        model(values, valid, aux)
    assert {module for module, _ in checked} == set(convolutions)
    # Something to check: the finer maps have masked pixels (the coarsest may be all valid).
    assert sum(masked for _, masked in checked) >= 3


@pytest.mark.parametrize("variant", VARIANTS)
def test_frames_encoded_one_at_a_time_match_the_batched_encoder(variant):
    """The radar encoder takes one frame at a time and keeps a level's earlier frames only where
    a ConvLSTM reads them; what it keeps equals all frames encoded as one batch."""
    model = tiny(variant)
    values, valid, _ = sample(steps=5)
    radar = torch.log1p(values) * valid
    with torch.no_grad():
        batched = list(model.encoder(radar.flatten(0, 1), valid.flatten(0, 1)))
        framewise = list(model._encode_frames(values, valid))
    assert len(framewise) == len(batched) == len(model.levels)
    for level, (x, m), (bx, bm) in zip(model.levels, framewise, batched, strict=True):
        bx, bm = (t.unflatten(0, values.shape[:2]) for t in (bx, bm))
        if not level.recurrent:
            bx, bm = bx[:, -1:], bm[:, -1:]
        assert x.shape == bx.shape
        assert m.shape == bm.shape
        assert torch.allclose(x, bx, atol=1e-6)
        assert torch.equal(m, bm)
    assert any(level.recurrent for level in model.levels) == ("lstm" in variant)


@pytest.mark.parametrize("variant", TEMPORAL)
def test_streaming_one_frame_at_a_time_equals_one_call(variant):
    model = tiny(variant)
    values, valid, aux = sample(steps=5)
    with torch.no_grad():
        whole, whole_state = model(values, valid, aux)
        state = None
        for t in range(values.shape[1]):
            step, state = model(values[:, t : t + 1], valid[:, t : t + 1], aux, state)
    assert torch.allclose(step, whole, atol=1e-5)
    assert len(state) == len(whole_state) == 2
    for (h_1, c_1), (h_2, c_2) in zip(state, whole_state, strict=True):
        assert torch.allclose(h_1, h_2, atol=1e-5)
        assert torch.allclose(c_1, c_2, atol=1e-5)


@pytest.mark.parametrize("variant", TEMPORAL)
def test_state_before_a_frame_does_not_depend_on_it(variant):
    """A full call decomposes into the prefix's state plus the last frame, whatever that frame is.

    Holds for the original and for an altered last frame; a network that looked ahead (e.g. a
    bidirectional memory) would give the prefix a state that depends on the last frame.
    """
    model = tiny(variant)
    values, valid, aux = sample(steps=4)
    altered = values.clone()
    altered[:, -1] = torch.rand_like(altered[:, -1]) * 10.0 * valid[:, -1]
    with torch.no_grad():
        _, prefix_state = model(values[:, :-1], valid[:, :-1], aux)
        outputs = []
        for sequence in (values, altered):
            whole, _ = model(sequence, valid, aux)
            continued, _ = model(sequence[:, -1:], valid[:, -1:], aux, prefix_state)
            assert torch.allclose(whole, continued, atol=1e-5)
            outputs.append(whole)
    assert not torch.allclose(outputs[0], outputs[1], atol=1e-3)


@pytest.mark.parametrize("variant", VARIANTS)
def test_window_use(variant):
    """Temporal variants remember the earliest frame; the others read only the last frame."""
    model = tiny(variant)
    values, valid, aux = sample(steps=4)
    with torch.no_grad():
        prediction, _ = model(values, valid, aux)
        earlier = values.clone()
        earlier[:, :-1] = torch.rand_like(earlier[:, :-1]) * 10.0 * valid[:, :-1]
        changed_earlier, _ = model(earlier, valid, aux)
        last = values.clone()
        last[:, -1] = torch.rand_like(last[:, -1]) * 10.0 * valid[:, -1]
        changed_last, _ = model(last, valid, aux)
    assert not torch.allclose(prediction, changed_last, atol=1e-3)
    if variant in TEMPORAL:
        assert not torch.allclose(prediction, changed_earlier, atol=1e-3)
    else:
        assert torch.equal(prediction, changed_earlier)


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_weights_run_on_any_grid(variant):
    model = tiny(variant)
    for rows, cols in [(40, 56), (64, 64), (45, 61), (9, 30)]:
        values, valid, aux = sample(rows, cols, steps=3, batch=1)
        prediction, state = model(values, valid, aux)
        assert prediction.shape == (1, 1, rows, cols)
        assert torch.isfinite(prediction).all()
        assert (prediction >= 0).all()
        if state is not None:  # padded to a multiple of 8: levels 1 and 2 at 1/4 and 1/8
            assert state[-1][0].shape[2:] == (-(-rows // 8), -(-cols // 8))


@pytest.mark.parametrize(("variant", "reach"), [("baseline", 16), ("lstm", 40)])
def test_crop_gives_the_full_field_prediction_away_from_its_border(variant, reach):
    """The network is local: padding and the crop edge only matter within its reach.

    ``reach`` (pixels) is the receptive field of the tiny network: its encoder, decoder and
    head; with a ConvLSTM, also 3 frames x 1 pixel at 1/8 resolution per frame. The crop starts
    at multiples of 8 (the stride of the deepest level) and has a size that is not, so the
    internal padding is exercised. Attention variants are excluded: their channel attention
    pools over the whole field, by design.
    """
    model = tiny(variant)
    values, valid, aux = sample(200, 200, steps=3, batch=1)
    rows, cols = slice(24, 24 + 141), slice(16, 16 + 157)
    with torch.no_grad():
        full, _ = model(values, valid, aux)
        crop, _ = model(values[..., rows, cols], valid[..., rows, cols], aux[..., rows, cols])
    full = full[..., rows, cols]
    inner = (..., slice(reach, -reach), slice(reach, -reach))
    assert torch.allclose(crop[inner], full[inner], rtol=0.0, atol=1e-5)
    assert not torch.allclose(crop, full, rtol=0.0, atol=1e-3)  # the edge does matter


def test_registry_and_pinned_arguments():
    assert VARIANTS == ["attention", "baseline", "lstm", "lstm_attention"]
    with pytest.raises(ValueError, match="baseline, lstm"):
        build("transformer")
    with pytest.raises(ValueError, match="lstm"):
        build("baseline", lstm=True)
    with pytest.raises(ValueError, match="attention"):
        build("lstm", attention=True)
    with pytest.raises(TypeError):
        build("baseline", depth=3)
    for bad, message in [
        ({"widths": (4, 8), "kernels": (3,)}, "equally long"),
        ({"kernels": (4, 3, 3, 3)}, "odd"),
        ({"widths": (4, 0, 8, 8)}, "positive"),
        ({"aux_channels": 3}, "aux_channels"),
        ({"window": 0}, "window"),
    ]:
        with pytest.raises(ValueError, match=message):
            build("baseline", **bad)
    with pytest.raises(ValueError, match="lstm_levels"):
        build("lstm", widths=(4, 8), kernels=(3, 3), lstm_levels=3)
    model = build("lstm", lstm=True)
    assert model.variant == "lstm"
    assert model.temporal


@pytest.mark.parametrize("variant", VARIANTS)
def test_hparams_json_round_trip_rebuilds_the_architecture(variant):
    model = build(variant, widths=[3, 5], kernels=[3, 5], window=4, aux_channels=7)
    hparams = json.loads(json.dumps(model.hparams))
    rebuilt = build(model.variant, **hparams)
    assert rebuilt.variant == variant
    assert rebuilt.hparams == model.hparams
    shapes = {key: tensor.shape for key, tensor in model.state_dict().items()}
    assert {key: tensor.shape for key, tensor in rebuilt.state_dict().items()} == shapes
    rebuilt.load_state_dict(model.state_dict(), strict=True)


def test_forward_rejects_inconsistent_inputs():
    values, valid, aux = sample()
    with pytest.raises(ValueError, match="aux"):
        build("baseline", **TINY)(values, valid, aux[:, :4])
    with pytest.raises(ValueError, match="valid"):
        build("baseline", **TINY)(values, valid[:, 1:], aux)
    with pytest.raises(ValueError, match="values"):
        build("baseline", **TINY)(values[:, :, 0], valid[:, :, 0], aux)
    lstm = build("lstm", **TINY)
    _, state = lstm(values, valid, aux)
    with pytest.raises(ValueError, match="no recurrent state"):
        build("baseline", **TINY)(values, valid, aux, state)
    with pytest.raises(ValueError, match="levels"):
        lstm(values, valid, aux, state[:1])


def test_default_sizes_fit_a_cpu():
    counts = {v: sum(p.numel() for p in build(v).parameters()) for v in VARIANTS}
    assert counts["lstm_attention"] <= 1_000_000
    assert counts["baseline"] < counts["attention"] < counts["lstm_attention"]
    assert counts["baseline"] < counts["lstm"] < counts["lstm_attention"]


def test_model_package_imports_without_torch():
    code = (
        "import sys, radinfill.model, radinfill.model.baselines, radinfill.model.features; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
