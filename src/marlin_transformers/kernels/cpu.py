"""MARLIN's CPU fast path: oneDNN-fused linear layers and head-wise bf16 attention, set by `enable_cpu_fast_path`.

The model file (`modeling_marlin.py`, also shipped as Hub remote code) computes the plain forward. In CPU inference
most of a clip's time is its matrix products, and two things make ours faster than that plain code:
- the bias, exact GELU and residual adds fused into oneDNN's matrix product (`fused_linear`), which saves whole passes
  over memory (PyTorch's `addmm` first copies the bias into the output);
- on CPUs with AVX-512 BF16 and no AMX, bf16 attention computed a few heads at a time in plain matrix products
  (`headwise_attention_forward`): PyTorch's fused CPU attention (flash) packs its bf16 blocks for AMX tiles only, and
  took 60% of a bf16 ViT-B clip on a 2-core AMD EPYC (40 ms a layer against 16 ms; tests/benchmarks/bench_encoder.py
  prints both).

Both are exact stand-ins: each call checks that it computes what the plain code computes (a plain `nn.Linear` that no
adapter, quantization, tensor-parallel wrapper or hook replaced; inference, outside torch.compile and torch.export)
and otherwise runs the plain code. The attention is registered with transformers' `AttentionInterface` as
`ATTENTION_IMPLEMENTATION`; the fused linears are installed as the forwards of MARLIN's attention, MLP and layer
modules, as the `kernels` library's `kernelize` installs its layers.
"""

import types

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules import module as torch_module
from transformers import AttentionInterface
from transformers.activations import ACT2FN
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ..exceptions import MarlinError
from ..modeling_marlin import MarlinLayer, MarlinMLP, MarlinPreTrainedModel, MarlinSelfAttention

# The attention implementation `enable_cpu_fast_path` gives a model that uses sdpa.
ATTENTION_IMPLEMENTATION = "marlin_cpu_headwise"

ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
# oneDNN has bfloat16 matrix products only on CPUs with AVX-512 BF16 or AMX; elsewhere (e.g. AMD Zen 3) the fused call
# raises "could not create a primitive descriptor", so bfloat16 takes the plain ops there.
ONEDNN_BF16 = ONEDNN_LINEAR and bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())
_CPU_CAPABILITIES = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
# Where `headwise_attention_forward` beats PyTorch's fused attention in bf16 (see the module's docstring).
CPU_BF16_WITHOUT_AMX = bool(_CPU_CAPABILITIES.get("avx512_bf16")) and not _CPU_CAPABILITIES.get("amx_bf16")


def _is_plain_linear(module: nn.Module) -> bool:
    """True when calling `module` is exactly `F.linear(x, module.weight, module.bias)`: a plain `nn.Linear` that no
    adapter (PEFT), quantization or tensor-parallel wrapper replaced and no forward hook watches. (PyTorch has no
    public way to ask for hooks; its hook dictionaries are what `Module.__call__` itself reads.)"""
    return (
        type(module) is nn.Linear
        and not module._forward_hooks
        and not module._forward_pre_hooks
        and not torch_module._global_forward_hooks
        and not torch_module._global_forward_pre_hooks
    )


def fused_linear(
    module: nn.Module,
    hidden_states: torch.Tensor,
    extra_bias: torch.Tensor | None = None,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """`activation(module(hidden_states) + extra_bias) + residual` (each part optional; activation and residual not
    both).

    For a plain `nn.Linear` in eager CPU inference (no autograd, float32, or bfloat16 where the CPU has bf16 matrix
    products) this is one oneDNN call with the bias, GELU or residual add fused into the matrix product. Any other
    module (a LoRA layer, a quantized or sharded replacement, one with hooks) is called as it is, so it always takes
    effect.

    Args:
        module: the projection, normally an `nn.Linear`.
        extra_bias: (out_features,) added to the output; for the attention's `qkv`, whose q/v biases are separate
            parameters (the `nn.Linear` itself has none).
    """
    if not _is_plain_linear(module):
        output = module(hidden_states)
        if extra_bias is not None:
            output = output + extra_bias
    else:
        weight, bias = module.weight, module.bias
        if extra_bias is not None:
            bias = extra_bias if bias is None else bias + extra_bias
        if (
            ONEDNN_LINEAR
            and hidden_states.device.type == "cpu"
            and (hidden_states.dtype == torch.float32 or (hidden_states.dtype == torch.bfloat16 and ONEDNN_BF16))
            and weight.dtype == hidden_states.dtype
            and not torch.is_grad_enabled()
            # torch.compile and torch.export trace the plain ops (Inductor fuses them itself, and an exported graph
            # stays free of oneDNN-only ops).
            and not torch.compiler.is_compiling()
            and not torch.compiler.is_exporting()
            and activation in (None, "gelu")
            and (residual is None or (activation is None and residual.dtype == hidden_states.dtype))
        ):
            if residual is not None:
                return torch.ops.mkldnn._linear_pointwise.binary(
                    hidden_states, residual.contiguous(), weight, bias, "add"
                )
            # algorithm "none" is the exact (erf) GELU, as nn.GELU()
            return torch.ops.mkldnn._linear_pointwise(
                hidden_states, weight, bias, activation or "none", [], "none" if activation else ""
            )
        output = F.linear(hidden_states, weight, bias)
    if activation is not None:
        output = ACT2FN[activation](output)
    return output if residual is None else output + residual


def use_headwise_attention(query: torch.Tensor, dropout: float) -> bool:
    """Whether `headwise_attention_forward` should stand in for PyTorch's fused attention (sdpa) in this call:
    bfloat16 CPU inference on a CPU without AMX, outside torch.compile and torch.export, with no dropout."""
    return (
        CPU_BF16_WITHOUT_AMX
        and query.device.type == "cpu"
        and query.dtype == torch.bfloat16
        and dropout == 0.0
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and not torch.compiler.is_exporting()
    )


def headwise_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """softmax(q k^T * scaling) v a few heads at a time, with plain batched matrix products, so that the heads' scores
    (4.9 MB a head in bfloat16 for 1568 tokens) stay in cache between the two products and the softmax. On the 2-core
    EPYC, in ViT-S and ViT-B clips, one or two heads a product were equally fast and four were up to 1.7x slower in
    ViT-S; two a product make half the synchronizations of the cores, which cost more beside other busy processes.
    For inference: `attention_mask` and `dropout` are not applied (`use_headwise_attention` says when it may run),
    and the attention weights are not returned."""
    batch_size, num_heads, seq_len, head_dim = query.shape
    heads_per_product = max(1, (10 << 20) // (seq_len * seq_len * query.element_size()))  # 2 at 1568 tokens
    query = (query * scaling).reshape(batch_size * num_heads, seq_len, head_dim)
    key = key.reshape(batch_size * num_heads, seq_len, head_dim).transpose(1, 2)
    value = value.reshape(batch_size * num_heads, seq_len, head_dim)
    output = query.new_empty(batch_size, num_heads, seq_len, head_dim)
    flat_output = output.view(batch_size * num_heads, seq_len, head_dim)
    for start in range(0, batch_size * num_heads, heads_per_product):
        heads = slice(start, start + heads_per_product)
        scores = torch.matmul(query[heads], key[heads])  # (g, n, n)
        torch.matmul(torch.softmax(scores, dim=-1), value[heads], out=flat_output[heads])  # (g, n, head_dim)
    return output.transpose(1, 2), None


def cpu_attention_forward(
    module: nn.Module, query: torch.Tensor, *args, dropout: float = 0.0, **kwargs
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The `ATTENTION_IMPLEMENTATION` attention function (the arguments of `eager_attention_forward`):
    `headwise_attention_forward` where it is faster (`use_headwise_attention`), transformers' sdpa everywhere else."""
    if use_headwise_attention(query, dropout):
        attention = headwise_attention_forward  # looked up here, so that tests can count its calls
    else:
        attention = ALL_ATTENTION_FUNCTIONS["sdpa"]
    return attention(module, query, *args, dropout=dropout, **kwargs)


AttentionInterface.register(ATTENTION_IMPLEMENTATION, cpu_attention_forward)


def fused_attention_forward(
    self: MarlinSelfAttention, hidden_states: torch.Tensor, residual: torch.Tensor | None = None, **kwargs
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`MarlinSelfAttention.forward` with its projections through `fused_linear`, plus `residual` when given."""
    qkv = fused_linear(self.qkv, hidden_states, self.qkv_bias())  # (b, n, 3 * hidden)
    context, attn_weights = self.attend(qkv, **kwargs)  # (b, n, hidden)
    return fused_linear(self.proj, context, residual=residual), attn_weights


def fused_mlp_forward(
    self: MarlinMLP, hidden_states: torch.Tensor, residual: torch.Tensor | None = None
) -> torch.Tensor:
    """`MarlinMLP.forward` with fc1's GELU fused, plus `residual` fused into fc2 when given (inference only: no
    dropout then)."""
    hidden_states = self.dropout(fused_linear(self.fc1, hidden_states, activation=self.activation))
    if residual is not None:
        return fused_linear(self.fc2, hidden_states, residual=residual)
    return self.dropout(self.fc2(hidden_states))


def fused_layer_forward(self: MarlinLayer, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
    """`MarlinLayer.forward`; in eval mode, where dropout is the identity, each residual add is fused into the
    product before it (when the attention and MLP still run the fused forwards)."""
    if self.training or not (_runs(self.attention, fused_attention_forward) and _runs(self.mlp, fused_mlp_forward)):
        return type(self).forward(self, hidden_states, **kwargs)
    hidden_states, _ = self.attention(self.layernorm_before(hidden_states), residual=hidden_states, **kwargs)
    return self.mlp(self.layernorm_after(hidden_states), residual=hidden_states)


def _runs(module: nn.Module, forward) -> bool:
    return getattr(module.forward, "__func__", None) is forward


FUSED_FORWARDS = {
    MarlinSelfAttention: fused_attention_forward,
    MarlinMLP: fused_mlp_forward,
    MarlinLayer: fused_layer_forward,
}


def enable_cpu_fast_path(model: nn.Module) -> nn.Module:
    """Make a loaded MARLIN model (or one wrapping it, e.g. a PEFT model) run its CPU fast path; returns `model`.

    A model that uses sdpa attention gets `ATTENTION_IMPLEMENTATION` (sdpa, or head-wise bf16 attention where that is
    faster); eager, flash or flex attention stays as it is. Every `MarlinSelfAttention`, `MarlinMLP` and `MarlinLayer`
    (of their exact classes) runs its projections through `fused_linear`. Each call checks that the fast path
    computes what the plain model computes: a projection that an adapter, quantization or a hook replaced, autograd,
    training mode (dropout), torch.compile / torch.export and other devices run the plain code, so the outputs are
    the plain model's up to the order of float additions. Raises `MarlinError` when `model` holds no MARLIN layer.
    """
    installed = False
    for module in model.modules():
        if isinstance(module, MarlinPreTrainedModel) and module.config._attn_implementation == "sdpa":
            module.set_attn_implementation(ATTENTION_IMPLEMENTATION)
        forward = FUSED_FORWARDS.get(type(module))
        if forward is not None:
            module.forward = types.MethodType(forward, module)
            installed = True
    if not installed:
        raise MarlinError(f"{type(model).__name__}: not a MARLIN model (no MarlinLayer in it), no CPU fast path.")
    return model
