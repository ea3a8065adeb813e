"""Stand-ins for the compiled DCNv2 ops of the official repositories, which build them as a CUDA extension
named ``_ext`` (MSTT ``models/DCNv2``, STDAN ``codes/models/modules/DCNv2_latest``, and the other Zooming
Slow-Mo descendants) that this machine may not have.

``ext_stand_in()`` is a module that their ``dcn_v2.py`` imports as ``_ext``
(``official_import(root, tag, {'_ext': ext_stand_in()})``): its functions take the arguments and return the
values of the compiled ones, so the official ``torch.autograd.Function`` classes run unchanged, forward and
backward, on any device:

    dcn_v2_forward(input, weight, bias, offset, mask, kh, kw, sh, sw, ph, pw, dh, dw, deformable_groups)
        -> (b, out, h', w')                      modulated deformable convolution (DCNv2)
    dcn_v2_backward(input, weight, bias, offset, mask, grad_output, kh, ..., deformable_groups)
        -> [grad_input, grad_offset, grad_mask, grad_weight, grad_bias]
    dsp_v2_forward(input, offset, mask, kh, kw, sh, sw, ph, pw, dh, dw, deformable_groups)
        -> (b, c, kh*kw, h*w)                    STDAN's modulated deformable sampling (the im2col of DCNv2)
    dsp_v2_backward(input, offset, mask, grad_output, kh, ..., deformable_groups)
        -> [grad_input, grad_offset, grad_mask]

Offsets are (b, 2 * groups * kh * kw, h', w') as (dy, dx) per group and tap, masks (b, groups * kh * kw, h', w'),
the layout of both the CUDA kernels and ``torchvision.ops.deform_conv2d``. The backward functions recompute
the forward under autograd, which costs one extra forward per backward call.

``modulated_deform_conv`` answers for the other kind of op these folders hold: detectron2's
``modulated_deform_conv`` function (STDAN's ``DCNv2Pack``), whose autograd Function refuses CPU tensors.
"""
import types

import torch
from torchvision.ops import deform_conv2d

from models.common import modulated_deform_sample


def _gradients(forward, inputs, grad_output):
    """Gradients of ``forward(*inputs)`` against ``grad_output``, one per input (the official Functions call
    the backward ops under no_grad)."""
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_() for t in inputs]
        out = forward(*leaves)
    return list(torch.autograd.grad(out, leaves, grad_output))


def _dcn(input, weight, bias, offset, mask, stride, padding, dilation):
    return deform_conv2d(input, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask)


def dcn_v2_forward(input, weight, bias, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                   dilation_h, dilation_w, deformable_group):
    return _dcn(input, weight, bias, offset, mask, (stride_h, stride_w), (pad_h, pad_w), (dilation_h, dilation_w))


def dcn_v2_backward(input, weight, bias, offset, mask, grad_output, kernel_h, kernel_w, stride_h, stride_w, pad_h,
                    pad_w, dilation_h, dilation_w, deformable_group):
    geometry = (stride_h, stride_w), (pad_h, pad_w), (dilation_h, dilation_w)
    grad_input, grad_weight, grad_bias, grad_offset, grad_mask = _gradients(
        lambda *t: _dcn(*t, *geometry), (input, weight, bias, offset, mask), grad_output)
    return [grad_input, grad_offset, grad_mask, grad_weight, grad_bias]


def _dsp(input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    # The CUDA op writes an (h, w) column grid whatever its padding, reading taps at y*stride - pad + i*dilation:
    # with stride 1 that is modulated_deform_sample's grid. STDAN only calls it square and with stride 1.
    if kernel_h != kernel_w or pad_h != pad_w or dilation_h != dilation_w or (stride_h, stride_w) != (1, 1):
        raise NotImplementedError(f'dsp_v2 stand-in: square kernel, padding and dilation and stride 1 only, got '
                                  f'kernel {kernel_h}x{kernel_w}, stride {stride_h}x{stride_w}, padding '
                                  f'{pad_h}x{pad_w}, dilation {dilation_h}x{dilation_w}')
    b, c, h, w = input.shape
    cols = modulated_deform_sample(input, offset, mask, kernel_h, pad_h, dilation_h)
    return cols.reshape(b, c, kernel_h * kernel_w, h * w)  # channel c*k*k + tap, as the CUDA op's view


def dsp_v2_forward(input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
                   dilation_w, deformable_group):
    return _dsp(input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w)


def dsp_v2_backward(input, offset, mask, grad_output, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                    dilation_h, dilation_w, deformable_group):
    geometry = kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w
    return _gradients(lambda *t: _dsp(*t, *geometry), (input, offset, mask), grad_output)


def ext_stand_in():
    """A fresh ``_ext`` module (see the module docstring) for ``official_import``'s ``stand_ins``."""
    ext = types.ModuleType('_ext', 'DCNv2 ops through torchvision.ops.deform_conv2d and grid_sample '
                                   '(benchmarks.official.dcnv2)')
    for fn in (dcn_v2_forward, dcn_v2_backward, dsp_v2_forward, dsp_v2_backward):
        setattr(ext, fn.__name__, fn)
    return ext


def modulated_deform_conv(input, offset, mask, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                          deformable_groups=1):
    """detectron2's ``modulated_deform_conv`` (arguments as it takes them) through torchvision, differentiable by
    autograd; the convolution groups and deformable groups follow from the weight and offset shapes."""
    return deform_conv2d(input, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask)
