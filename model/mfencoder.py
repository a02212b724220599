"""MFEncoder: fuses the imagery and the cascade reference (pixels) into one condition feature map.

Two convolutional branches (imagery, reference) of three stages, each halving the resolution;
after every stage a SPADE block re-normalises the reference features with a scale and bias
computed from [reference ⊕ imagery] features; a 1x1 conv merges both branches. A 512x512 block
gives a 64x64 map, the SD latent grid. Layout follows the official SCGM `MapDualSpadeRefEncoder`
(stem 3->32, LeakyReLU(0.1), pixel-unshuffle downsampling, SPADE hidden width 128).
When a sample has no reference (root zoom, or reference dropout in training) the reference
stem output is replaced by a learned per-channel "no reference" embedding.
An encoder may carry a map head (`MapHead` below, its own imagery branch, not used here),
saved with it.
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


class MapHead(nn.Module):
    """A map drawn from the imagery alone: imagery in [-1, 1], B x 3 x H x W -> map colours,
    B x 3 x H x W (not clamped: a loss on it keeps its gradient).

    A sampler with strength < 1 (SDEdit, `model.pipeline`) starts every block from this
    sketch of its own imagery. It has its own imagery branch,
    trained by its own loss only (`mapcascade train --map-head-only`): sharing the MFEncoder's
    branch, its loss pulled the features the denoiser reads, and the synthetic world's maps got
    worse. Residual stages each halve the resolution and a feature pyramid is summed at full
    resolution: a roof is recognised from tens of pixels of context, its edge drawn per pixel.
    """

    def __init__(self, channels: tuple[int, ...], in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], 3, padding=1), nn.LeakyReLU(0.1)
        )
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1, stride=2),
                nn.LeakyReLU(0.1),
                ResBlock(c_out),
            )
            for c_in, c_out in zip(channels, channels[1:], strict=False)
        )
        self.laterals = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.to_map = nn.Sequential(nn.LeakyReLU(0.1), nn.Conv2d(width, in_channels, 1))

    @property
    def downscale(self) -> int:
        return 2 ** len(self.stages)

    def forward(self, imagery: torch.Tensor) -> torch.Tensor:
        size = tuple(imagery.shape[-2:])
        if size[0] % self.downscale or size[1] % self.downscale:
            raise ValueError(f"imagery size {size} not divisible by {self.downscale}")
        features = [self.stem(imagery)]
        for stage in self.stages:
            features.append(stage(features[-1]))
        pyramid = self.laterals[0](features[0])
        for lateral, feature in zip(self.laterals[1:], features[1:], strict=True):
            pyramid = pyramid + nn.functional.interpolate(
                lateral(feature), size=size, mode="bilinear", align_corners=False
            )
        return self.to_map(pyramid)


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
        map_head_channels: tuple[int, ...] | None = None,
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
        self.map_head: MapHead | None = None
        if map_head_channels is not None:
            self.add_map_head(tuple(map_head_channels))

    def add_map_head(self, channels: tuple[int, ...]) -> None:
        """Give the encoder a map head (fresh weights): a warm start of a model without one."""
        self.map_head = MapHead(channels, self.config.in_channels)
        # Off diffusers' list of defaulted keys too, or from_config would rebuild it headless.
        key = "map_head_channels"
        defaulted = [k for k in self.config.get("_use_default_values", []) if k != key]
        self.register_to_config(map_head_channels=list(channels), _use_default_values=defaulted)

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
        """The map head's sketch of the imagery, B x 3 x H x W (colours in [-1, 1], not clamped)."""
        if self.map_head is None:
            raise ValueError("this MFEncoder has no map head")
        return self.map_head(imagery)
