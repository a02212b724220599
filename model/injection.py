"""Adds SFAdapter features to a diffusers UNet2DConditionModel where the official SCGM code does.

Official `ControlledUnetModel` adds feature i after the *first* ResBlock(+attention) of down
level i (input_blocks 1, 4, 7) and again after the first ResBlock(+attention) of the up path at
the same level (output_blocks 9, 6, 3). diffusers' `down_intrablock_additional_residuals` adds
after the *last* layer pair of a down block (after the downsampler for blocks without attention)
and never on the up path, so it cannot express this; forward hooks on those first layer pairs
can, without forking the UNet. Features are added in the module's output dtype; adding zeros
leaves the UNet output bit-identical to the plain UNet's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def _first_layer_pair(block: Any) -> nn.Module:  # a diffusers down/up block
    # The attention follows the resnet inside a block, so its output ends the first pair.
    attentions = getattr(block, "attentions", None)
    if attentions is not None and len(attentions) > 0:
        return attentions[0]
    return block.resnets[0]


def injection_points(unet: Any) -> list[tuple[nn.Module, nn.Module]]:  # a UNet2DConditionModel
    """(down module, up module) per resolution level, finest level first."""
    levels = len(unet.down_blocks)
    return [
        (_first_layer_pair(unet.down_blocks[i]), _first_layer_pair(unet.up_blocks[levels - 1 - i]))
        for i in range(levels)
    ]


def _add(output: Any, feature: torch.Tensor) -> Any:
    if isinstance(output, torch.Tensor):
        return output + feature.to(output.dtype)
    if isinstance(output, tuple):  # Transformer2DModel(return_dict=False)
        return (output[0] + feature.to(output[0].dtype), *output[1:])
    output.sample = output.sample + feature.to(output.sample.dtype)
    return output


class FeatureInjector:
    """Forward hooks installed once on a UNet; they add whatever features are active.

    Installing the hooks once (instead of per call) keeps torch.compile from recompiling for
    every batch: the hooks stay the same objects, only the tensors they read change.
    """

    def __init__(self, unet: Any, up_path: bool = True) -> None:
        self.features: Sequence[torch.Tensor] | None = None
        self.levels = len(unet.down_blocks)
        for level, (down, up) in enumerate(injection_points(unet)):
            down.register_forward_hook(self._hook(level))
            if up_path:
                up.register_forward_hook(self._hook(level))

    def _hook(self, level: int):  # noqa: ANN202 - torch hook signature
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            if self.features is None or level >= len(self.features):
                return None  # output unchanged
            feature = self.features[level]
            if output_shape(output) != tuple(feature.shape):
                raise ValueError(
                    f"adapter feature {tuple(feature.shape)} does not match UNet activation "
                    f"{output_shape(output)} in {type(module).__name__}"
                )
            return _add(output, feature)

        return hook


@contextmanager
def inject_features(unet: Any, features: Sequence[torch.Tensor]) -> Iterator[None]:
    """Within the block, every UNet forward adds features[i] at level i (down and up path)."""
    injector = getattr(unet, "_scgm_injector", None)
    if injector is None:
        injector = FeatureInjector(unet)
        unet._scgm_injector = injector  # plain attribute: not a submodule, not saved
    if len(features) > injector.levels:
        raise ValueError(f"{len(features)} adapter features for a {injector.levels}-level UNet")
    injector.features = list(features)
    try:
        yield
    finally:
        injector.features = None


def output_shape(output: Any) -> tuple[int, ...]:
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, tuple):
        return tuple(output[0].shape)
    return tuple(output.sample.shape)
