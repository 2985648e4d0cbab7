"""Which onnxruntime execution providers run the tagger: ``model.providers``, checked once.

The names are onnxruntime's own (``CUDAExecutionProvider``, ``CPUExecutionProvider``, ...),
in order of preference. A name onnxruntime does not know is a config error (exit 2). A
provider this onnxruntime build lacks (CUDA with the CPU-only ``onnxruntime`` package, or on a
machine without a GPU) is left out with a warning in the report, and the CPU provider always
comes last as the fallback: an audit written for a GPU node still runs on a laptop.
"""

from __future__ import annotations

from collections.abc import Sequence

from hepaudit.errors import ConfigError, close_matches

CPU = "CPUExecutionProvider"


def resolve_providers(requested: Sequence[str]) -> tuple[list[str], str | None]:
    """The providers to give onnxruntime, and a warning when some asked for are not available."""
    import onnxruntime as ort

    known = ort.get_all_providers()
    for name in requested:
        if name not in known:
            raise ConfigError(f"model.providers: {name!r} is not an onnxruntime execution provider"
                              f"{close_matches(name, known)}")
    available = ort.get_available_providers()
    usable = [p for p in dict.fromkeys(requested) if p in available]
    missing = [p for p in dict.fromkeys(requested) if p not in available]
    if CPU not in usable:
        usable.append(CPU)
    if not missing:
        return usable, None
    hint = " (install onnxruntime-gpu, and check the CUDA libraries it needs)" if any(
        "CUDA" in p or "TensorRT" in p for p in missing) else ""
    return usable, (f"model.providers: {', '.join(missing)} not available in this onnxruntime build "
                    f"(available: {', '.join(available)}){hint}; the tagger runs on {', '.join(usable)}")
