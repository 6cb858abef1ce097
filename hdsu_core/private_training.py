"""DP-SGD knowledge injection (``opacus``): the injection's optimizer clips every item's gradient
and adds Gaussian noise calibrated to a target (epsilon, delta) over the injection's epochs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch

# The recipe keys of a DP injection, with their defaults (delta: well below 1 / the member count).
DP_DEFAULTS = {"dp_delta": 1e-5, "dp_clip": 1.0}


@dataclass
class PrivateSGD:
    """What a DP injection trains with: the wrapped model (per-item gradients), the noisy
    optimizer, the Poisson-sampled loader of item indices and the engine that accounts epsilon."""

    module: torch.nn.Module
    optimizer: Any
    loader: torch.utils.data.DataLoader
    engine: Any
    delta: float
    clip: float

    def batches(self) -> Iterator[list[int]]:
        """One epoch of index batches; Poisson sampling can draw an empty one, which is skipped
        (nothing is released for it, so skipping it costs no privacy)."""
        for (idx,) in self.loader:
            if len(idx):
                yield idx.tolist()

    def report(self) -> dict[str, float]:
        """The epsilon spent so far (at most the target: an early stop spends less), delta, clip."""
        return {"dp_epsilon": float(self.engine.get_epsilon(self.delta)), "dp_delta": self.delta, "dp_clip": self.clip}


def make_private(model: torch.nn.Module, optimizer, n_items: int, recipe: dict) -> PrivateSGD:
    """Wrap ``model`` and ``optimizer`` for the recipe's ``dp_epsilon`` / ``dp_delta`` / ``dp_clip``
    over its ``max_epochs``, batches of expected size ``batch``. The noise comes from a generator
    seeded with the recipe's seed, the sampling from torch's seeded global generator: the same
    recipe gives the same weights."""
    from opacus import PrivacyEngine  # lazy: only a DP injection needs it

    recipe = {**DP_DEFAULTS, **recipe}
    indices = torch.utils.data.TensorDataset(torch.arange(n_items))
    loader = torch.utils.data.DataLoader(indices, batch_size=min(recipe["batch"], n_items))
    engine = PrivacyEngine(accountant="rdp")
    noise = torch.Generator().manual_seed(int(recipe["seed"]))
    module, opt, dp_loader = engine.make_private_with_epsilon(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        target_epsilon=float(recipe["dp_epsilon"]),
        target_delta=float(recipe["dp_delta"]),
        epochs=int(recipe["max_epochs"]),
        max_grad_norm=float(recipe["dp_clip"]),
        noise_generator=noise,
    )
    return PrivateSGD(module, opt, dp_loader, engine, float(recipe["dp_delta"]), float(recipe["dp_clip"]))


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The model inside opacus's ``GradSampleModule``, with its per-item hooks removed."""
    inner = getattr(module, "_module", module)
    remove_hooks = getattr(module, "remove_hooks", None)
    if callable(remove_hooks):
        remove_hooks()
    for p in inner.parameters():  # opacus leaves per-item gradients on the parameters
        if hasattr(p, "grad_sample"):
            p.grad_sample = None
    return inner
