"""Temporal-LIIF-specific tests: the official-output fixture, strict loading of official state_dicts, the
nearest lookup and gathered unfold against grid_sample and F.unfold, the time convention, chunked rendering
and the adapter. Generic tests (shapes, gradients, training steps, spec names) run from
tests/networks/temporal_liif.yml."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import models.temporal_liif  # noqa: F401  (registers TemporalLIIF)
from models.temporal_liif import TemporalLIIF, nearest_index, normalise
from tests.conftest import spec_file
from tests.support import assert_close_to_scale
from utils.coords import instant_to_t, make_coord, video_queries

FIXTURE = Path(__file__).parent / 'fixtures' / 'temporal_liif_official.pt'
TINY = dict(n_resblocks=1, n_feats=4, hidden_list=[8, 8])


def seeded_weights(net, seed=0):
    """Overwrite every trainable parameter from a seed, by name, so that the official class and ours get the
    same weights without storing them: sorted names, float64 normals r; weights r / sqrt(fan_in), biases
    0.1 r (outputs of about unit scale). The frozen MeanShift constants keep their values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(net.named_parameters()):
            if p.requires_grad:
                r = torch.randn(p.shape, generator=g, dtype=torch.float64)
                p.copy_(r / math.sqrt(p[0].numel()) if p.dim() > 1 else 0.1 * r)


def tiny(seed=0, **kwargs):
    torch.manual_seed(seed)
    return TemporalLIIF(**{**TINY, **kwargs})


def test_matches_official_output():
    """tests/fixtures/temporal_liif_official.pt: input (2, 3, 4, 6, 7), queries (2, 2320, 3) (the 7 instants
    of a 13 x 20 video grid, then 500 random coordinates and cells) and the output of the official LIIF
    (ggcr/Super-Temporal-LIIF@0253720, edsr-baseline + mlp [256] * 4, ``.cuda()`` removed, CPU float32,
    ``seeded_weights(net, 0)``). Measured difference: 0 (bit-equal); the tolerance allows other BLAS."""
    fixture = torch.load(FIXTURE)
    net = TemporalLIIF().eval()
    seeded_weights(net, fixture['weight_seed'])
    with torch.no_grad():
        out = net(fixture['input'], fixture['coord'], fixture['cell'])
    assert out.shape == fixture['output'].shape == (2, 2320, 3)
    assert_close_to_scale(out, fixture['output'])


def test_official_state_dict_loads_strictly():
    """A state_dict with the official names and shapes (the spec file) loads with strict=True, and the 24
    MeanShift values are frozen: 4,004,291 trainable parameters of 4,004,315."""
    net = TemporalLIIF()
    official = {}
    for line in spec_file('temporal_liif.txt').read_text().splitlines():
        if not line.startswith('#'):
            name, shape, _ = line.split('\t')
            official[name] = torch.randn(tuple(int(s) for s in shape.split(',') if s))
    net.load_state_dict(official, strict=True)
    torch.testing.assert_close(net.imnet.layers[8].bias, official['imnet.layers.8.bias'])
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 4_004_291
    assert net.encoder.sub_mean.weight.shape == (3, 3, 1, 1) and not net.encoder.sub_mean.weight.requires_grad


def test_mean_shift_is_never_applied():
    net = tiny().eval()
    x, coord = torch.rand(1, 3, 2, 5, 5), torch.rand(1, 20, 3) * 2 - 1
    cell = torch.full((1, 20, 3), 0.1)
    with torch.no_grad():
        before = net(x, coord, cell)
        net.encoder.sub_mean.bias.fill_(3.0)
        net.encoder.add_mean.weight.fill_(2.0)
        torch.testing.assert_close(net(x, coord, cell), before, rtol=0, atol=0)


def test_nearest_index_matches_grid_sample():
    """The lookup is grid_sample's nearest (align_corners=False), including coordinates on cell borders."""
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 5, 8, 45):
        borders = -1 + 2 * torch.arange(n + 1) / n
        coord = torch.cat([torch.rand(2000, generator=g) * 2 - 1, borders, borders + 1e-6, borders - 1e-6])
        coord = coord.clamp(-1 + 1e-6, 1 - 1e-6)
        values = torch.arange(n, dtype=torch.float32).view(1, 1, 1, n)
        grid = torch.stack([coord, torch.zeros_like(coord)], -1).view(1, 1, -1, 2)
        expected = F.grid_sample(values, grid, mode='nearest', align_corners=False).view(-1).long()
        assert torch.equal(nearest_index(coord, n), expected), n


def test_decoding_at_feature_centres_is_unfold_then_mlp():
    """Without the ensemble, a query at the centre of feature (t, y, x) feeds the MLP with F.unfold's 3x3
    neighbourhood of that time slice (zero padded, channel c*9 + tap), a zero relative coordinate and the
    cell in feature units: the gathered unfold equals the unfolded volume."""
    net = tiny(local_ensemble=False).eval()
    feat = torch.randn(2, 4, 3, 5, 6)
    centres = torch.stack(torch.meshgrid(make_coord(3), make_coord(5), make_coord(6), indexing='ij'), -1)
    coord = centres.view(1, -1, 3).expand(2, -1, 3)
    cell = torch.tensor([0.5, 0.2, 0.1]).expand(2, 90, 3)
    unfolded = torch.stack([F.unfold(feat[:, :, i], 3, padding=1) for i in range(3)], 2)  # (b, 36, t, h*w)
    expected_inp = torch.cat([unfolded.flatten(2).transpose(1, 2), torch.zeros(2, 90, 3),
                              cell * torch.tensor([3.0, 5.0, 6.0])], -1)
    with torch.no_grad():
        torch.testing.assert_close(net.query(feat, coord, cell), net.imnet(expected_inp))


@pytest.mark.parametrize('feat_unfold, cell_decode', [(True, True), (True, False), (False, True), (False, False)])
def test_query_is_the_mlp_on_the_unfolded_neighbourhood_anywhere(feat_unfold, cell_decode):
    """At random queries, with each official switch: the MLP on [the (unfolded) feature of the nearest cell,
    the coordinate relative to its centre, the cell] (feature units), computed here from F.unfold, equals
    ``query`` (whose first layer is applied per feature position and gathered)."""
    torch.manual_seed(0)
    net = tiny(local_ensemble=False, feat_unfold=feat_unfold, cell_decode=cell_decode).eval()
    feat, (t, h, w) = torch.randn(2, 4, 3, 5, 6), (3, 5, 6)
    coord = torch.rand(2, 50, 3) * 2 - 1
    cell = torch.rand(2, 50, 3)
    k = 3 if feat_unfold else 1
    unfolded = torch.stack([F.unfold(feat[:, :, i], k, padding=k // 2) for i in range(t)], 2).flatten(2)
    index = [((coord[..., i] + 1) * n - 1).div(2).round().long() for i, n in enumerate((t, h, w))]
    voxel = (index[0] * h + index[1]) * w + index[2]
    q_feat = torch.stack([unfolded[i][:, voxel[i]].t() for i in range(2)])
    centre = torch.stack([-1 + (2 * index[i] + 1) / n for i, n in enumerate((t, h, w))], -1)
    sizes = torch.tensor([t, h, w], dtype=torch.float32)
    inp = [q_feat, (coord - centre) * sizes] + ([cell * sizes] if cell_decode else [])
    with torch.no_grad():
        assert_close_to_scale(net.query(feat, coord, cell), net.imnet(torch.cat(inp, -1)))


@pytest.mark.parametrize('dtype, rel', [(torch.float64, 1e-5), (torch.bfloat16, 5e-2)])
def test_the_network_in_another_dtype_renders_what_the_float32_one_does(dtype, rel):
    """In float64 and in bfloat16 the network renders the float32 network's video to that precision: the
    query coordinates are float64 or float32, never coarser."""
    torch.manual_seed(0)
    net = tiny().eval()
    lq = torch.rand(1, 2, 3, 6, 7)
    with torch.no_grad():
        single = net.render(lq, times=[0, 0.25, 1], size=(10, 9))
        other = net.to(dtype).render(lq.to(dtype), times=[0, 0.25, 1], size=(10, 9))
    assert other.dtype == torch.promote_types(torch.float32, dtype)  # the ensemble weights are float32 or finer
    assert_close_to_scale(other.float(), single, rel)


def test_time_convention():
    """Input frame k of n sits at its make_coord centre; instant k + 1/2 on the border between k and k + 1."""
    torch.testing.assert_close(torch.tensor(instant_to_t(range(4), 4)), make_coord(4))
    assert instant_to_t([0.5, 1.5, 2.5], 4) == [-0.5, 0.0, 0.5]
    coord, cell = video_queries(4, [0, 0.5, 3], (2, 3))
    assert coord.shape == cell.shape == (18, 3)
    torch.testing.assert_close(coord[:6, 1:], torch.stack(torch.meshgrid(make_coord(2), make_coord(3),
                                                                          indexing='ij'), -1).view(6, 2))
    assert coord[6:12, 0].eq(-0.5).all() and coord[12:, 0].eq(0.75).all()
    torch.testing.assert_close(cell[0], torch.tensor([2.0, 1.0, 2 / 3]))
    assert video_queries(4, [1], (2, 3), cell_t=0.25)[1][0, 0] == 0.25


def test_ensemble_reads_the_frame_at_an_input_instant_and_both_halfway():
    """With the opposite-corner weights, a query at input instant k depends on the features of frame k only
    (the members that land on frame k + 1 get weight ~1e-9), and one at k + 1/2 on frames k and k + 1."""
    net = tiny().eval()
    feat = torch.randn(1, 4, 4, 5, 6)
    coord, cell = video_queries(4, [1, 1.5], (7, 9))
    coord, cell = coord[None], cell[None]

    def changes(frame):
        other = feat.clone()
        other[:, :, frame] += 1
        with torch.no_grad():
            diff = (net.query(other, coord, cell) - net.query(feat, coord, cell)).abs().view(2, -1).amax(1)
        return diff > 1e-6  # (instant 1, instant 1.5)

    assert changes(0).tolist() == [False, False]
    assert changes(1).tolist() == [True, True]
    assert changes(2).tolist() == [False, True]
    assert changes(3).tolist() == [False, False]


def test_render_is_forward_in_chunks():
    net = tiny().eval()
    lq = torch.rand(2, 3, 3, 5, 4)
    coord, cell = video_queries(3, [0, 0.25, 2], (11, 7))
    with torch.no_grad():
        direct = net(normalise(lq), coord.expand(2, -1, 3), cell.expand(2, -1, 3))
        direct = (direct * 0.5 + 0.5).view(2, 3, 11, 7, 3).permute(0, 1, 4, 2, 3)
        for chunk in (1000, 77, 5):
            torch.testing.assert_close(net.render(lq, [0, 0.25, 2], (11, 7), chunk=chunk), direct, rtol=0, atol=1e-6)


def test_any_frame_count_and_size():
    """No size constraint: any number of frames, any LR size (including 1 x 1), any output size."""
    net = tiny().eval()
    with torch.no_grad():
        assert net.render(torch.rand(1, 1, 3, 1, 1), [0], (3, 2)).shape == (1, 1, 3, 3, 2)
        assert net.render(torch.rand(1, 5, 3, 6, 4)).shape == (1, 9, 3, 24, 16)
        assert net.render(torch.rand(1, 2, 3, 9, 7), [0.3, 0.9], (10, 31)).shape == (1, 2, 3, 10, 31)


def test_predict_paths_agree():
    """With gradients predict calls forward once (DDP-safe), without it renders in chunks: same values."""
    net = tiny().eval()
    lq = torch.rand(2, 4, 3, 6, 5)
    with torch.no_grad():
        rendered = net.predict(lq)
    assert rendered.shape == (2, 7, 3, 24, 20)
    trained = net.predict(lq)
    assert trained.requires_grad and not rendered.requires_grad
    torch.testing.assert_close(trained.detach(), rendered, rtol=0, atol=1e-6)


def test_constructor_variants():
    """Official switches: without unfold or cell the MLP input shrinks (64 + 3 [+ 3]); without the ensemble
    (an official crash) one member decodes."""
    assert TemporalLIIF(feat_unfold=False).imnet.layers[0].in_features == 70
    assert TemporalLIIF(cell_decode=False).imnet.layers[0].in_features == 579
    assert TemporalLIIF().imnet.layers[0].in_features == 582
    net = tiny(local_ensemble=False, feat_unfold=False, cell_decode=False).eval()
    with torch.no_grad():
        assert net.render(torch.rand(1, 2, 3, 4, 4)).shape == (1, 3, 3, 16, 16)
