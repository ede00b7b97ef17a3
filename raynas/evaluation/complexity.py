"""Model complexity: parameters, FLOPs (``torch.utils.flop_counter``) and wall-clock latency.

FLOPs are counted the way PyTorch counts them: one multiply-add = 2 FLOPs, for the ops FlopCounterMode
knows (convolutions, matmuls, ...; element-wise ops, NMS and ROI-Align are not counted). Papers that
report "FLOPs" for detectors (OPANAS Table 1, FAD) usually count multiply-adds: divide by 2 to compare.

torchvision's ``deform_conv2d`` has no formula in ``torch.utils.flop_counter``, so without one a deformable
3x3 conv would count only its offset conv; :func:`count_flops` gives it the formula of the plain
convolution with the same weight and output (the multiply-adds of the kernel; the bilinear sampling of
the input is element-wise work, not counted, as for every other op here).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count


def _deform_conv2d_flop(x_shape, w_shape, _offset, _mask, _bias, *args, out_shape=None, **kwargs) -> int:
    return conv_flop_count(x_shape, w_shape, out_shape, transposed=False)


def _custom_flop_formulas() -> dict[Any, Callable]:
    import torchvision  # noqa: F401  (registers torch.ops.torchvision)

    op = torch.ops.torchvision.deform_conv2d
    return {op: _deform_conv2d_flop, op.default: _deform_conv2d_flop}


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared ones once); ``trainable_only`` counts those with ``requires_grad``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


@contextlib.contextmanager
def _eval_mode(model: Callable) -> Iterator[None]:
    """Eval mode for an ``nn.Module`` (a detector in train mode wants targets), restored afterwards."""
    if not isinstance(model, nn.Module):
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _call(model: Callable, inputs: Any) -> Any:
    """A tuple is unpacked as positional arguments; anything else (tensor, list of images, dict) is one."""
    return model(*inputs) if isinstance(inputs, tuple) else model(inputs)


def count_flops(model: Callable, inputs: Any) -> int:
    """FLOPs of one call ``model(inputs)`` in eval mode, without autograd.

    ``inputs``: a tensor, a list of images (torchvision detectors), an ``OrderedDict`` of feature maps (a
    neck), or a tuple of positional arguments.
    """
    counter = FlopCounterMode(display=False, custom_mapping=_custom_flop_formulas())
    with _eval_mode(model), torch.inference_mode(), counter:
        _call(model, inputs)
    return int(counter.get_total_flops())


def _to_device(inputs: Any, device: torch.device) -> Any:
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if isinstance(inputs, dict):
        return type(inputs)((k, _to_device(v, device)) for k, v in inputs.items())
    if isinstance(inputs, list | tuple):
        return type(inputs)(_to_device(v, device) for v in inputs)
    return inputs


def measure_latency(
    model: nn.Module,
    inputs: Any,
    warmup: int = 2,
    repeats: int = 5,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Wall-clock time of ``model(inputs)`` in eval mode: ``{"mean_ms", "std_ms"}`` over ``repeats`` calls.

    ``device`` defaults to the model's; the inputs are moved there (the model is not moved: a measurement
    should not change what it measures). On CUDA each call is bracketed by ``torch.cuda.synchronize`` so
    the time covers the kernels, not just their launch.
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    model_device = next(model.parameters()).device
    if device is not None and torch.device(device) not in (model_device, torch.device(model_device.type)):
        raise ValueError(f"the model is on {model_device} but device={device}; move it first")
    inputs = _to_device(inputs, model_device)

    def sync() -> None:
        if model_device.type == "cuda":
            torch.cuda.synchronize(model_device)

    times_ms = []
    with _eval_mode(model), torch.inference_mode():
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            _call(model, inputs)
            sync()
            if i >= warmup:
                times_ms.append((time.perf_counter() - start) * 1000.0)
    return {
        "mean_ms": statistics.fmean(times_ms),
        "std_ms": statistics.stdev(times_ms) if len(times_ms) > 1 else 0.0,
    }
