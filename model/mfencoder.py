"""MFEncoder: fuses the imagery and the cascade reference (pixels) into one condition feature map.

Two convolutional branches (imagery, reference) of three stages, each halving the resolution;
after every stage a SPADE block re-normalises the reference features with a scale and bias
computed from [reference ⊕ imagery] features; a 1x1 conv merges both branches. A 512x512 block
gives a 64x64 map, the SD latent grid. Layout follows the official SCGM `MapDualSpadeRefEncoder`
(stem 3->32, LeakyReLU(0.1), pixel-unshuffle downsampling, SPADE hidden width 128).
When a sample has no reference (root zoom, or reference dropout in training) the reference
stem output is replaced by a learned per-channel "no reference" embedding, or, in an encoder
with a map head, by the map its imagery branch draws alone (1x1 conv of the last imagery
stage, trained by `mapcascade train --imagery-map-weight`): the root zoom of a cascade then
starts from a coarse map of its own imagery rather than from nothing.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def _norm(kind: str, channels: int) -> nn.Module:
    # Official SPADE uses BatchNorm; GroupNorm is batch-size independent in training.
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(32, channels), channels, affine=True)
    raise ValueError(f"unknown SPADE norm {kind!r} (batch | group)")


class Spade(nn.Module):
    """Normalise x, then modulate it with a per-pixel scale and bias computed from cond."""

    def __init__(self, channels: int, cond_channels: int, hidden: int, norm: str) -> None:
        super().__init__()
        self.norm = _norm(norm, channels)
        self.shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, 3, padding=1), nn.ReLU())
        self.to_scale = nn.Conv2d(hidden, channels, 3, padding=1)
        self.to_bias = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        hidden = self.shared(cond)
        return self.norm(x) * (1 + self.to_scale(hidden)) + self.to_bias(hidden)


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PixelUnshuffleDown(nn.Module):
    """Halve the resolution without discarding pixels: space-to-depth, then a 1x1 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.unshuffle = nn.PixelUnshuffle(2)
        self.proj = nn.Conv2d(channels * 4, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.unshuffle(x))


def _stage(c_in: int, c_out: int, residual: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1), nn.LeakyReLU(0.1)]
    if residual:  # the imagery branch is the deeper one, as in the official encoder
        layers.append(ResBlock(c_out))
    layers.append(PixelUnshuffleDown(c_out))
    return nn.Sequential(*layers)


class MFEncoder(ModelMixin, ConfigMixin):
    """(imagery, reference) in [-1, 1], Bx3xHxW -> B x out_channels x H/8 x W/8."""

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        stem_channels: int = 32,
        channels: tuple[int, ...] = (64, 128, 256),
        spade_hidden: int = 128,
        spade_norm: str = "batch",
        out_channels: int = 384,
        map_head: bool = False,
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        self.imagery_stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_channels, 3, padding=1), nn.LeakyReLU(0.1)
        )
        self.reference_stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_channels, 3, padding=1), nn.LeakyReLU(0.1)
        )
        # Zero start: a dropped reference begins as "no reference signal" and is learned.
        self.no_reference = nn.Parameter(torch.zeros(stem_channels))
        widths = (stem_channels, *channels)
        self.imagery_stages = nn.ModuleList(
            _stage(widths[i], widths[i + 1], residual=True) for i in range(len(channels))
        )
        self.reference_stages = nn.ModuleList(
            _stage(widths[i], widths[i + 1], residual=False) for i in range(len(channels))
        )
        self.fusions = nn.ModuleList(Spade(c, 2 * c, spade_hidden, spade_norm) for c in channels)
        self.merge = nn.Conv2d(2 * channels[-1], out_channels, 1, bias=False)
        # Not named map_head: diffusers resolves config keys before submodules.
        self.to_map: nn.Conv2d | None = None
        if map_head:
            self.add_map_head()

    def add_map_head(self) -> None:
        """Give the encoder a map head (fresh weights): a warm start of a model without one."""
        self.to_map = nn.Conv2d(self.config.channels[-1], self.config.in_channels, 1)
        # Off diffusers' list of defaulted keys too, or from_config would rebuild it headless.
        defaulted = [k for k in self.config.get("_use_default_values", []) if k != "map_head"]
        self.register_to_config(map_head=True, _use_default_values=defaulted)

    @property
    def downscale(self) -> int:
        return 2 ** len(self.config.channels)

    def forward(
        self,
        imagery: torch.Tensor,
        reference: torch.Tensor | None = None,
        has_reference: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """has_reference: bool per sample; False samples use the learned no-reference input."""
        size = imagery.shape[-1]
        if imagery.shape[-2] % self.downscale or size % self.downscale:
            raise ValueError(f"imagery size {tuple(imagery.shape[-2:])} not divisible by 8")
        stages = self.imagery_features(imagery)
        missing = torch.ones(imagery.shape[0], dtype=torch.bool, device=imagery.device)
        if reference is not None:
            missing = torch.zeros_like(missing) if has_reference is None else ~has_reference
        if self.to_map is not None and bool(missing.any()):
            # The drawn map stands in for the missing reference; it is what the map head
            # learns by its own loss, not what the denoiser's loss would make of it.
            drawn = self._draw(stages[-1], imagery.shape[-2:]).clamp(-1.0, 1.0).detach()
            reference = drawn if reference is None else torch.where(
                missing.to(reference.device)[:, None, None, None], drawn, reference
            )  # fmt: skip
            missing = torch.zeros_like(missing)
        img = stages[0]
        null = self.no_reference.to(img.dtype)[None, :, None, None].expand_as(img)
        ref = null if reference is None else self.reference_stem(reference)
        ref = torch.where(missing.to(ref.device)[:, None, None, None], null, ref)
        for img, reference_stage, fusion in zip(
            stages[1:], self.reference_stages, self.fusions, strict=True
        ):
            ref = reference_stage(ref)
            ref = fusion(ref, torch.cat([ref, img], dim=1))
        return self.merge(torch.cat([ref, img], dim=1))

    def imagery_features(self, imagery: torch.Tensor) -> list[torch.Tensor]:
        """The imagery branch: the stem's output, then each stage's."""
        out = [self.imagery_stem(imagery)]
        for stage in self.imagery_stages:
            out.append(stage(out[-1]))
        return out

    def draw_map(self, imagery: torch.Tensor) -> torch.Tensor:
        """The map the imagery branch sees alone, B x 3 x H x W (colours in [-1, 1], not clamped:
        a loss on it keeps its gradient); needs a map head."""
        return self._draw(self.imagery_features(imagery)[-1], imagery.shape[-2:])

    def _draw(self, features: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if self.to_map is None:
            raise ValueError("this MFEncoder has no map head")
        return nn.functional.interpolate(
            self.to_map(features), size=tuple(size), mode="bilinear", align_corners=False
        )
