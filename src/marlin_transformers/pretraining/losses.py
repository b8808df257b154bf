"""MARLIN's pretraining losses (Cai et al., CVPR 2023, Sec. 3.3; the reference's `g_step` / `d_step`).

- reconstruction: MSE between the decoder's output and the raw [0, 1] pixels of the masked tubelets
  (`masked_patch_targets`, `reconstruction_loss`: defined beside the model, which reports the same loss);
- generator adversarial term: `adv_weight * -mean D(prediction)` (adv_weight 0.01 in the released configs; defined
  beside the model too, whose `loss` is reconstruction + this term while it holds its critic);
- critic (WGAN): `mean D(prediction) - mean D(real tubelets)`, plus `gp_weight * gradient_penalty` (gp_weight 0 in the
  released configs, implemented all the same).

The critic `D` is `MarlinForPreTraining.discriminator`, a per-token MLP on tubelets in `patchify_video`'s layout;
`detach_critic` / `attach_critic` make generator and critic two models for two optimizers; `critic_objective` and
`generator_objective` are each network's loss of a step, with the terms a run logs.
"""

from __future__ import annotations

import torch

from ..modeling_marlin import generator_adversarial_loss, reconstruction_loss

__all__ = [
    "attach_critic",
    "critic_loss",
    "critic_objective",
    "detach_critic",
    "generator_adversarial_loss",
    "generator_objective",
    "gradient_penalty",
    "penalty_interpolates",
]


def critic_loss(fake_scores: torch.Tensor, real_scores: torch.Tensor) -> torch.Tensor:
    """The WGAN critic loss `mean D(fake) - mean D(real)`: minimized by scoring real tubelets high, predictions low."""
    return fake_scores.float().mean() - real_scores.float().mean()


def penalty_interpolates(
    real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Points where WGAN-GP evaluates the critic's gradient: `alpha * real + (1 - alpha) * fake`.

    As in the reference, one `alpha ~ U[0, 1)` is drawn per call and shared by every token of the batch.

    Args:
        real: (batch, tokens, dim), detached here.
        fake: (batch, tokens, dim), detached here.
        generator: CPU generator `alpha` is drawn from, for reproducible runs.

    Returns:
        (batch, tokens, dim), a leaf that requires grad: score it with the critic, then call `gradient_penalty`.
    """
    alpha = torch.rand((), generator=generator).to(device=real.device, dtype=real.dtype)
    return (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)


def gradient_penalty(scores: torch.Tensor, interpolates: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: `mean over tokens of (||d D(x) / d x||_2 - 1)^2`, the norm taken per token over its pixels.

    Args:
        scores: (batch, tokens, 1) critic scores of `interpolates`.
        interpolates: (batch, tokens, dim) from `penalty_interpolates`.

    Returns:
        A scalar with a graph back to the critic's parameters (`create_graph=True`), so the critic trains on it.
    """
    (gradients,) = torch.autograd.grad(scores.sum(), interpolates, create_graph=True)  # (b, tokens, dim)
    return ((gradients.float().flatten(0, 1).norm(2, dim=1) - 1) ** 2).mean()


def critic_objective(
    critic: torch.nn.Module,
    fake: torch.Tensor,
    targets: torch.Tensor,
    gp_weight: float = 0.0,
    gp_generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The critic's loss of a step: `critic_loss` on the (detached) prediction and the real tubelets, plus
    `gp_weight * gradient_penalty` when `gp_weight > 0`; fake, real (and penalty points) go through the critic at once.

    Args:
        critic: the `MarlinDiscriminator`.
        fake: (batch, masked, c*pt*ph*pw) the generator's prediction, detached.
        targets: (batch, masked, c*pt*ph*pw) the masked tubelets' pixels (`masked_patch_targets`).
        gp_weight: the gradient penalty's weight.
        gp_generator: CPU generator of the penalty's interpolation (unused when `gp_weight` is 0).

    Returns:
        (d_loss, its terms: d_loss, d_wasserstein (mean D(fake) - mean D(real)), d_real, d_fake, and gp when
        `gp_weight > 0`).
    """
    real = targets.to(fake.dtype)
    inputs = [fake, real]
    if gp_weight > 0:
        inputs.append(penalty_interpolates(real, fake, gp_generator))
    scores = critic(torch.cat(inputs)).split(len(fake))
    d_wasserstein = critic_loss(scores[0], scores[1])
    gp = gradient_penalty(scores[2], inputs[2]) if gp_weight > 0 else None
    d_loss = d_wasserstein + gp_weight * gp if gp is not None else d_wasserstein
    terms = {
        "d_loss": d_loss,
        "d_wasserstein": d_wasserstein,
        "d_real": scores[1].float().mean(),
        "d_fake": scores[0].float().mean(),
    }
    if gp is not None:
        terms["gp"] = gp
    return d_loss, terms


def generator_objective(
    critic: torch.nn.Module, logits: torch.Tensor, targets: torch.Tensor, adv_weight: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The generator's loss of a step: `reconstruction_loss` plus the adversarial term of the prediction scored by
    the critic, whose weights get no gradient from it (none when `adv_weight` is 0).

    Args:
        critic: the `MarlinDiscriminator` (after its own step).
        logits: (batch, masked, c*pt*ph*pw) the generator's prediction, with its graph.
        targets: (batch, masked, c*pt*ph*pw) the masked tubelets' pixels.
        adv_weight: the adversarial term's weight.

    Returns:
        (g_loss, its terms: rec_loss, adv_loss, g_loss).
    """
    rec_loss = reconstruction_loss(logits, targets)
    if adv_weight:
        critic.requires_grad_(False)
        adv_loss = generator_adversarial_loss(critic(logits), adv_weight)
        critic.requires_grad_(True)
    else:
        adv_loss = torch.zeros((), device=logits.device)
    g_loss = rec_loss + adv_loss
    return g_loss, {"rec_loss": rec_loss, "adv_loss": adv_loss, "g_loss": g_loss}


def detach_critic(model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Take the critic out of a `MarlinForPreTraining`, so generator and critic are two models with disjoint weights.

    Distributed wrappers (DDP, FSDP) and the two optimizers then each see one of them, and
    `MarlinForPreTraining.forward`, holding no critic, returns the reconstruction loss alone. Put it back with
    `attach_critic` before saving the full model.

    Returns:
        (model without its critic, the critic).
    """
    critic = model.discriminator
    model.discriminator = None
    return model, critic


def attach_critic(model, critic: torch.nn.Module):
    """Undo `detach_critic`: `model.discriminator = critic`; returns the model."""
    model.discriminator = critic
    return model
