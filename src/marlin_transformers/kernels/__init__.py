"""Speed-ups for MARLIN that the model files leave out, applied to a loaded model by one call.

    from marlin_transformers.kernels import enable_cpu_fast_path
    enable_cpu_fast_path(model)  # oneDNN-fused linears, and bf16 attention a few heads at a time where faster

The model files compute the plain, exact forward that Hub remote-code users get; what is here computes the same thing
faster on CPUs, and steps aside wherever it would not (see `cpu`).
"""

from .cpu import ATTENTION_IMPLEMENTATION, enable_cpu_fast_path

__all__ = ["ATTENTION_IMPLEMENTATION", "enable_cpu_fast_path"]
