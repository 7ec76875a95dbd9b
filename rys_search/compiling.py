"""Decoder layers through torch.compile: the elementwise work between the matrix products, fused.

    >>> compile_layers(runtime.layers, mode="default")   # ScheduledModel does this itself on a GPU
    RYS_SEARCH_COMPILE=0 rys-search run ...               # off
    RYS_SEARCH_COMPILE=max-autotune-no-cudagraphs ...     # on, with that torch.compile mode

Issue 6's profile of the Qwen3-8B shape: matrix products 58% of the GPU time, elementwise
kernels 30% (fp32 RMSNorm, rotary, SiLU-and-multiply, residual adds), each a kernel that reads
and writes a whole activation. Inductor fuses them:

- a decoder layer's whole forward is compiled for calls without a KV cache (the engine's
  whole-sequence batches): norms, rotary, attention glue, SiLU-and-multiply and residual adds;
- its parameter-holding parts without a KV-cache slot (the MLP; the norms too where norms.py has
  not fused them) are compiled on their own for calls with a cache (shared prompts and their
  continuations, generation), where the layer itself runs eagerly: the cache is a Python object
  indexed by the layer's position.

How: the forward of each class is compiled once with dynamic shapes (batches differ in rows and
length) and each module's class is swapped for a subclass whose forward calls the compiled one.
The runtime's clones (copy.copy) keep the subclass, and since Dynamo lifts a module's
parameters to graph inputs, every layer and every clone shares the same graphs (one per kind
of attention, full or sliding). Inside a compiled layer the parts run their plain forward, so
compiled code never nests.

Safety: a compile or compiled call that fails for any reason but memory (no compiler, an op
Dynamo cannot trace) logs one warning, and that class runs eagerly from then on; the failed
call is recomputed eagerly.

When: RYS_SEARCH_COMPILE unset: on for models of at least COMPILE_MIN_PARAMETERS on a GPU, off on
a CPU (compiling takes minutes there, more than a short CPU study gains) and off for smaller
models: their layers' GPU work is too little to hide the host's, and each compiled call adds a
guard check and a wrapper. SmolLM2 (135M) on the H100, `benchmarks/throughput.py --model SmolLM2
--variants engine --schedules 10`, seconds a schedule, eager against compiled: 0.307 / 0.400 and
0.307 / 0.438 on two machines; on two more, runs interleaved, 0.317, 0.323 / 0.514, 0.365, 0.427
and 0.350, 0.427 / 0.391, 0.525. With layer calls replayed as CUDA graphs (graphs.py, on a GPU by
default) a compiled call's host work runs only at its capture, yet SmolLM2 still gained nothing
(`--schedules 30`: 0.160 and 0.144 eager against 0.176 and 0.143 compiled, runs interleaved, and
9-11 s of compiling in the first schedule): its host work is the limit. Compiling was built for
the Qwen3-8B shape (the profile above). 0/off/false: off; 1/on/true/default: on; a mode that
captures CUDA graphs of its own (reduce-overhead, max-autotune) is refused with one line; any
other value is passed to torch.compile as its mode.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable

from .errors import UserError, first_line

__all__ = ["COMPILE_MIN_PARAMETERS", "compile_layers", "compile_setting", "uncompile_layers"]

log = logging.getLogger(__name__)
COMPILE_MIN_PARAMETERS = 1_000_000_000  # unset RYS_SEARCH_COMPILE: smaller models run eagerly on a GPU
# modes with CUDA graphs: SmolLM2 on the H100 with reduce-overhead failed in the shared start's cache pass
# ("accessing tensor output of CUDAGraphs that has been overwritten by a subsequent run"); max-autotune
# captures CUDA graphs too (torch.compile's documentation)
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
_CLASSES: dict[tuple[type, str, str, bool], type] = {}


def compile_setting(device: Any, parameters: int | None = None) -> str | None:
    """The torch.compile mode for a model of that many parameters on device ("default"), or None for
    eager layers."""
    value = os.environ.get("RYS_SEARCH_COMPILE")
    if value is None:
        big = parameters is None or parameters >= COMPILE_MIN_PARAMETERS
        return "default" if getattr(device, "type", str(device)) == "cuda" and big else None
    value = value.strip()
    if value.lower() in ("", "0", "off", "false", "no"):
        return None
    if value.lower() in ("1", "on", "true", "yes", "default"):
        return "default"
    if value.lower() in CUDA_GRAPH_MODES:
        raise UserError(f"RYS_SEARCH_COMPILE={value}: this torch.compile mode captures CUDA graphs, whose outputs "
                        "the next call overwrites while the engine still holds them; use 1, "
                        "max-autotune-no-cudagraphs or 0")
    return value


def compile_layers(layers: Iterable[Any], mode: str = "default", backend: str = "inductor") -> int:
    """Swap each decoder layer, and its cache-free parts, for a compiled subclass; the number swapped."""
    swapped = 0
    for layer in layers:
        if getattr(type(layer), "_rys_base", None) is None:
            layer.__class__ = _compiled_class(type(layer), mode, backend, whole_layer=True)
            swapped += 1
        for module in _parts(layer):
            if getattr(type(module), "_rys_base", None) is None:
                module.__class__ = _compiled_class(type(module), mode, backend, whole_layer=False)
                swapped += 1
    return swapped


def uncompile_layers(layers: Iterable[Any]) -> None:
    """Back to the plain classes (the modules themselves are untouched)."""
    for layer in layers:
        for module in layer.modules():
            base = getattr(type(module), "_rys_base", None)
            if base is not None:
                module.__class__ = base


def _parts(layer: Any) -> list[Any]:
    """The layer's submodules that hold parameters but no KV-cache slot, outermost first, excluding
    plain linear maps (nothing to fuse), norms already fused (norms.py: one kernel and a product,
    no compiled call's guard check) and anything inside one already chosen."""
    from torch import nn

    chosen: list[Any] = []
    for name, module in layer.named_modules():
        if not name or isinstance(module, (nn.Linear, nn.Embedding)) or not any(True for _ in module.parameters()):
            continue
        if getattr(type(module), "_rys_norm_base", None) is not None:
            continue
        if any(isinstance(getattr(m, "layer_idx", None), int) for m in module.modules()):
            continue  # the attention: it updates the KV cache at its position
        if any(_within(module, outer) for outer in chosen):
            continue
        chosen.append(module)
    return chosen


def _within(module: Any, outer: Any) -> bool:
    return any(m is module for m in outer.modules())


# a layer's KV cache argument: past_key_values, renamed cache in transformers 5.24 (the old name still accepted)
_CACHE_ARGUMENTS = ("past_key_values", "cache")


def _compiled_class(base: type, mode: str, backend: str, whole_layer: bool) -> type:
    key = (base, mode, backend, whole_layer)
    if key in _CLASSES:
        return _CLASSES[key]
    import torch

    state: dict[str, Any] = {"fn": None, "broken": False}

    def forward(self, *args, **kwargs):
        if (state["broken"] or torch.compiler.is_compiling()
                or (whole_layer and any(kwargs.get(name) is not None for name in _CACHE_ARGUMENTS))):
            return base.forward(self, *args, **kwargs)
        try:
            if state["fn"] is None:
                state["fn"] = torch.compile(base.forward, dynamic=True, backend=backend,
                                            mode=None if mode == "default" else mode)
            return state["fn"](self, *args, **kwargs)
        except Exception as exc:
            from .scoring.memory import out_of_memory

            if out_of_memory(exc):
                raise
            state["broken"] = True
            first = first_line(exc, "")
            log.warning("torch.compile of %s failed (%s: %s); it runs eagerly", base.__name__, type(exc).__name__, first[:300])
            return base.forward(self, *args, **kwargs)

    cls = type(f"Compiled{base.__name__}", (base,), {"forward": forward, "_rys_base": base,
                                                     "__module__": base.__module__})
    _CLASSES[key] = cls
    return cls
