"""MSTT-specific tests: the official fixture, padding, quirks, attention against a direct version, adapter."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import models.mstt  # noqa: F401  (registers MSTT)
from models.flow import clip_flows, stack_clip_flows
from models.mstt import MSTTr, MultiScaleAttention, TransformerBlock
from tests.conftest import require, spec_file
from tests.support import assert_close_to_scale

FIXTURE = Path(__file__).parent / 'fixtures' / 'mstt_official.pt'
TINY = dict(nf=16, groups=2, front_RBs=1, back_RBs=1, patchsize=(8, 4, 2, 1), channel=32)


def spec_entries(name='mstt.txt'):
    """(name, shape) of every official state_dict entry, in order."""
    entries = []
    for line in spec_file(name).read_text().splitlines():
        if line and not line.startswith('#'):
            key, shape = line.split('\t')[:2]
            entries.append((key, tuple(int(s) for s in shape.split(',')) if shape else ()))
    return entries


def seeded_state_dict(entries, seed=0, offset_gain=20.):
    """Deterministic weights for the official names/shapes, the rule the fixture was made with.

    In state_dict order, from one ``torch.Generator`` seeded with ``seed``: float64 uniform in
    [-1, 1), times 1/sqrt(fan_in) for weights (numel / shape[0]) and 0.1 for biases, times
    ``offset_gain`` for the deformable offset convs (so offsets reach about 2 px, not 0.1 px);
    cast to float32.
    """
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in entries:
        u = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
        scale = 1 / math.sqrt(math.prod(shape[1:])) if len(shape) > 1 else 0.1
        if 'conv_offset_mask' in key:
            scale *= offset_gain
        state[key] = (u * scale).float()
    return state


def seeded_inputs(b, n, h, w, seed=1, amplitude=3.):
    """Deterministic (x, f_flow, b_flow): x uniform in [0, 1); smooth flows up to ~``amplitude`` px.

    One generator seeded with ``seed``: x = float64 uniform (b, n, 3, h, w); then a float64 normal
    (b * 2 * (n-1), 2, 5, 5) grid times ``amplitude``, cast to float32, bilinearly resized
    (align_corners=False) to (h, w) and read as (b, direction, pair, u/v, h, w).
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((b, n, 3, h, w), generator=g, dtype=torch.float64).float()
    grid = torch.randn((b * 2 * (n - 1), 2, 5, 5), generator=g, dtype=torch.float64).float() * amplitude
    flows = F.interpolate(grid, size=(h, w), mode='bilinear', align_corners=False)
    flows = flows.view(b, 2, n - 1, 2, h, w).permute(0, 1, 2, 4, 5, 3)
    return x, list(flows[:, 0].unbind(1)), list(flows[:, 1].unbind(1))


def test_official_fixture():
    """Full official configuration vs the output of the official MSTTr (same weights and inputs).

    The fixture holds the official output (XY-boy/MSTT-STVSR @62f1b7a, DCNv2 replaced by
    torchvision's deform_conv2d) for ``seeded_state_dict(spec_entries())`` and
    ``seeded_inputs(1, 4, 80, 80)``: every 8th pixel of all 7 frames, one full-resolution crop and
    the frame means. Measured differences: below 1e-7 in float32 (either deformable-conv impl).
    """
    ref = torch.load(FIXTURE, weights_only=True)
    net = MSTTr().eval()
    net.load_state_dict(seeded_state_dict(spec_entries(), ref['weight_seed'], ref['offset_gain']), strict=True)
    x, f_flow, b_flow = seeded_inputs(*ref['input_size'], seed=ref['input_seed'], amplitude=ref['flow_amplitude'])
    with torch.no_grad():
        out = net(x, f_flow, b_flow)
    top, left, size = ref['crop']
    assert_close_to_scale(out[..., ::ref['stride'], ::ref['stride']], ref['strided'])
    assert_close_to_scale(out[..., top:top + size, left:left + size], ref['crop_values'])
    assert_close_to_scale(out.mean(dim=(0, 2, 3, 4)), ref['frame_means'])


def test_padding_inside_equals_replicate_padding_outside():
    torch.manual_seed(0)
    net = MSTTr(**TINY).eval()
    x, f_flow, b_flow = seeded_inputs(1, 4, 27, 35)
    with torch.no_grad():
        out = net(x, f_flow, b_flow)
        xp = F.pad(x.flatten(0, 1), (0, 13, 0, 5), mode='replicate').view(1, 4, 3, 32, 48)

        def pad_flow(f):
            return F.pad(f.permute(0, 3, 1, 2), (0, 13, 0, 5), mode='replicate').permute(0, 2, 3, 1)

        ref = net(xp, [pad_flow(f) for f in f_flow], [pad_flow(f) for f in b_flow])
    assert out.shape == (1, 7, 3, 108, 140)
    torch.testing.assert_close(out, ref[..., :108, :140], rtol=0, atol=1e-6)


def test_any_number_of_frames_interleaves():
    torch.manual_seed(0)
    net = MSTTr(**TINY).eval()
    x, f_flow, b_flow = seeded_inputs(2, 3, 16, 16)
    assert net(x, f_flow, b_flow).shape == (2, 5, 3, 64, 64)
    with pytest.raises(ValueError, match='2 forward and backward flows'):
        net(x, f_flow[:1], b_flow)


def test_second_alignment_is_skipped():
    """The official aligns each pair twice and discards the second result: one call per pair here."""
    torch.manual_seed(0)
    net = MSTTr(**TINY).eval()
    calls = []
    net.MSD_align.register_forward_hook(lambda *args: calls.append(1))
    net(*seeded_inputs(1, 4, 16, 16))
    assert len(calls) == 3


def test_init_follows_official():
    net = MSTTr(**TINY)
    # Residual blocks: the ZSM block (Kaiming x 0.1, zero bias); deformable offsets: zero.
    assert net.feature_extraction[0].conv1.bias.abs().max() == 0
    assert net.MSD_align.dcnpack.conv_offset_mask.weight.abs().max() == 0
    # Everything else keeps PyTorch's default init (the transformer's init_weights is never applied).
    assert net.MSST_former.encoder[0].bias.abs().max() > 0
    assert net.conv_first.bias.abs().max() > 0


def test_attention_matches_direct_patch_attention():
    torch.manual_seed(0)
    b, t, c, h, w = 2, 3, 8, 8, 12
    attn = MultiScaleAttention(patchsize=(4, 2), channel=c).eval()
    x = torch.randn(b * t, c, h, w)
    with torch.no_grad():
        out = attn(x, b)
        q, k, v = attn.query_embedding(x), attn.key_embedding(x), attn.value_embedding(x)
        heads = []
        for i, p in enumerate((4, 2)):
            split = slice(i * c // 2, (i + 1) * c // 2)
            # Tokens: every p x p patch of every frame, flattened, via unfold (a different route).
            def tokens(z):
                z = F.unfold(z[:, split], p, stride=p).view(b, t, -1, (h // p) * (w // p))
                return z.permute(0, 1, 3, 2).reshape(b, t * (h // p) * (w // p), -1)
            qt, kt, vt = tokens(q), tokens(k), tokens(v)
            weights = torch.softmax(qt @ kt.transpose(1, 2) / math.sqrt(qt.shape[-1]), dim=-1)
            y = (weights @ vt).view(b, t, -1, c // 2 * p * p).permute(0, 1, 3, 2)
            heads.append(F.fold(y.reshape(b * t, -1, (h // p) * (w // p)), (h, w), p, stride=p))
        ref = attn.output_linear(torch.cat(heads, dim=1))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('twice', [True, False])
def test_attention_residual_quirk(twice):
    torch.manual_seed(0)
    block = TransformerBlock(patchsize=(2, 1), channel=4, attn_residual_twice=twice).eval()
    for conv in (block.feed_forward.conv[0], block.feed_forward.conv[2]):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    x = torch.randn(2, 4, 4, 4)
    with torch.no_grad():
        expected = (2 if twice else 1) * x + block.attention(x, 1)
        torch.testing.assert_close(block(x, 1), expected)


def test_adapter_computes_or_takes_flows():
    clip = require('Jilin-189/test/001/truth')
    frames = [np.asarray(Image.open(clip / f'0000000{i}.png').convert('RGB').resize((40, 40), Image.BICUBIC))
              for i in (0, 2, 4, 6)]
    lq = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)[None].float() / 255
    torch.manual_seed(0)
    net = MSTTr(**TINY, flow_backend='opencv_farneback').eval()
    forward, backward = clip_flows([f.astype(np.float32) / 255 for f in frames], 'opencv_farneback')
    with torch.no_grad():
        ref = net(lq, [torch.from_numpy(f)[None] for f in forward], [torch.from_numpy(f)[None] for f in backward])
        computed = net.predict(lq, {})
        given = net.predict(lq, {'flows': torch.from_numpy(stack_clip_flows(forward, backward))[None]})
    assert computed.shape == (1, 7, 3, 160, 160)
    torch.testing.assert_close(computed, ref)
    torch.testing.assert_close(given, ref)
