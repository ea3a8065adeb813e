"""The ``performance`` options: mixed precision, memory format, torch.compile and cuDNN autotuning.

    amp: off | bf16 | fp16     autocast around the forward pass and the loss. bf16 runs on CUDA and on CPU;
                               fp16 on CUDA only, with a gradient scaler (``torch.amp.GradScaler``) whose
                               skipped overflow steps are not counted as non-finite steps.
    channels_last              the network's 4-D weights (and so the activations of its 2-D convolutions) in
                               NHWC; 5-D inputs of video networks are untouched.
    compile                    ``torch.compile(model, mode=...)`` for training steps (validation uses the
                               eager network, whose sizes vary).
    cudnn_benchmark            ``torch.backends.cudnn.benchmark``.

Deformable convolutions stay in float32 under autocast (``models.common.ModulatedDeformConv2d``), as do the
sampling grids of flow warps; outputs are cast back to float32 before they are scored or written.
"""
import contextlib

import torch

from utils.errors import OptionsError

AMP_DTYPES = {'off': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
COMPILE_MODES = ('off', 'default', 'reduce-overhead', 'max-autotune')


def check_amp(amp, device):
    """The autocast dtype for ``performance.amp`` on ``device``, or OptionsError when it cannot run there."""
    dtype = AMP_DTYPES[amp]
    if dtype is torch.float16 and device.type != 'cuda':
        raise OptionsError(f'performance.amp: fp16 runs on CUDA only (device is {device}); use bf16 or off')
    if dtype is torch.bfloat16 and device.type == 'cuda' and not torch.cuda.is_bf16_supported():
        raise OptionsError('performance.amp: this GPU does not support bfloat16; use fp16')
    return dtype


def autocast(device, dtype):
    """``torch.autocast`` for ``dtype``, or a no-op context for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device, dtype):
    """A GradScaler, enabled for fp16 only (bf16 has float32's range)."""
    return torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)


def prepare_network(net, perf):
    """Apply ``channels_last`` and ``cudnn_benchmark`` (in place) and return the network."""
    if perf['cudnn_benchmark']:
        torch.backends.cudnn.benchmark = True
    if perf['channels_last']:
        # 4-D weights only: Module.to(memory_format=) also reformats 5-D ones (Conv3d), which channels_last
        # cannot hold (Temporal-LIIF's encoder is all Conv3d).
        with torch.no_grad():
            for param in net.parameters():
                if param.dim() == 4:
                    param.data = param.data.contiguous(memory_format=torch.channels_last)
    return net


def maybe_compile(model, perf):
    """``torch.compile(model, mode=perf['compile'])``, or the model itself for 'off'."""
    if perf['compile'] == 'off':
        return model
    return torch.compile(model, mode=perf['compile'])
