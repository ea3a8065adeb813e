"""Zooming Slow-Mo checks beyond the generic ones (tests/networks/zsm.yml): the official outputs, strict loading
of an official state_dict, the test script's padding rule, the shared blocks it is built from."""
from pathlib import Path

import torch
import torch.nn.functional as F

from models.alignment import BiDeformableConvLSTM, PCDAlign
from models.common import ModulatedDeformConv2d
from models.zsm import ZSM, add_reconstruction, upsample
from tests.conftest import spec_file
from tests.support import assert_close_to_scale, seeded_weights

FIXTURE = Path(__file__).parent / 'fixtures' / 'zsm_official.pt'
TINY = dict(nf=8, groups=2, front_RBs=1, back_RBs=1, hr_nf=8)


def test_matches_official_outputs():
    """tests/fixtures/zsm_official.pt: inputs and outputs of the official LunaTokis(64, 7, 8, 5, 40)
    (Mukosame/Zooming-Slow-Mo-CVPR-2020 @a053e08, eval mode, CPU float32, the DCNv2 forward replaced by
    torchvision.ops.deform_conv2d, init_hidden's zeros on the CPU) with ``seeded_weights(net, 0)``:
    a (1, 4, 3, 8, 16) clip, and a (2, 3, 3, 10, 7) one zero-padded to 12x8 and cropped back as
    codes/test.py does (output subsampled [..., ::3, ::3]). Outputs reach about 380 with these weights;
    float32 against float32 measured 2.5e-6 of that scale (float64 against float64: 6e-15)."""
    fixture = torch.load(FIXTURE)
    net = seeded_weights(ZSM().eval(), fixture['weight_seed'])
    for case in fixture['cases']:
        with torch.no_grad():
            out = net(case['input'])[..., ::case['step'], ::case['step']]
        assert out.shape == case['output'].shape
        assert_close_to_scale(out, case['output'], rel=2e-5)


def test_official_state_dict_loads_strictly():
    net = ZSM()
    official = {}
    for line in spec_file('zsm.txt').read_text().splitlines():
        if line.startswith('#') or not line.strip():
            continue
        name, shape, _ = line.split('\t')
        official[name] = torch.randn(tuple(int(s) for s in shape.split(',') if s))
    net.load_state_dict(official, strict=True)
    torch.testing.assert_close(net.conv_last.weight, official['conv_last.weight'])


def test_built_from_the_shared_blocks_with_zsm_constants():
    """Bidirectional PCD (the interpolation and both EasyPCDs of the ConvLSTM), unbounded offsets sampling
    the source features, DCN_sep's offset conv name, zero-initialised offsets (a fresh layer is a plain conv)."""
    net = ZSM(**TINY)
    pcds = [m for m in net.modules() if isinstance(m, PCDAlign)]
    assert len(pcds) == 3 and all(m.directions == 2 and m.sample == 'src' for m in pcds)
    assert isinstance(net.ConvBLSTM, BiDeformableConvLSTM)
    dcns = [m for m in net.modules() if isinstance(m, ModulatedDeformConv2d)]
    assert len(dcns) == 18 and all(m.offset_bound is None and not m.conv_offset_mask.weight.any() for m in dcns)
    assert net.fusion.in_channels == 16 and net.ConvBLSTM.forward_net.pcd_h.fusion.in_channels == 16


def test_padding_is_zero_padding_then_crop():
    """Sizes that are not multiples of 4 are zero-padded at the bottom/right and cropped back (codes/test.py);
    multiples pass unchanged."""
    torch.manual_seed(0)
    net = ZSM(**TINY).eval()
    x = torch.rand(1, 4, 3, 13, 18)
    with torch.no_grad():
        out = net(x)
        padded = net(F.pad(x.flatten(0, 1), (0, 2, 0, 3)).view(1, 4, 3, 16, 20))
    assert out.shape == (1, 7, 3, 52, 72)
    torch.testing.assert_close(out, padded[..., :52, :72], rtol=0, atol=1e-6)


def test_full_configuration_and_unused_argument():
    net = ZSM()
    assert sum(p.numel() for p in net.parameters()) == 11_102_771
    assert len(net.feature_extraction) == 5 and len(net.recon_trunk) == 40
    assert ZSM(nframes=3, **TINY).state_dict().keys() == ZSM(**TINY).state_dict().keys()
    assert ZSM(nf=16, front_RBs=1, back_RBs=1).HRconv.weight.shape == (64, 64, 3, 3)  # 64 wide whatever nf


def test_the_x4_upsampler_is_the_official_layers_with_the_same_gradients():
    """``upsample`` (activations in place, NHWC on the CPU) against the official sequence written out with
    out-of-place LeakyReLU: outputs and every gradient, to the float32 floor."""
    torch.manual_seed(0)
    m = torch.nn.Module()
    add_reconstruction(m, nf=8, back_RBs=0, hr_nf=6)
    x = torch.randn(2, 8, 5, 7)

    def official(x):
        x = F.leaky_relu(m.pixel_shuffle(m.upconv1(x)), 0.1)
        x = F.leaky_relu(m.pixel_shuffle(m.upconv2(x)), 0.1)
        return m.conv_last(F.leaky_relu(m.HRconv(x), 0.1))

    results = []
    for fn in (official, lambda x: upsample(m, x)):
        xi = x.clone().requires_grad_()
        out = fn(xi)
        grads = torch.autograd.grad(out.square().sum(), [xi, *m.parameters()])
        results.append((out, grads))
    (want, want_grads), (got, got_grads) = results
    assert got.shape == (2, 3, 20, 28)
    assert_close_to_scale(got.detach(), want.detach())
    for g, w in zip(got_grads, want_grads):
        assert_close_to_scale(g, w)
