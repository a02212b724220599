"""SFAdapter: turns the MFEncoder feature map into one feature per UNet resolution level.

T2I-Adapter-style stack, laid out as the official SCGM `RefMapAdapter`: a 3x3 input conv to the
first UNet width, then per further level a strided-conv downsample plus residual blocks (1x1
channel change, 3x3 + 1x1 convs, identity skip). For SD 2.1 the features have 320/640/1280
channels at 1/8, 1/16 and 1/32 of the block (64, 32, 16 px for a 512 block); small UNets get
their own widths. Features are scaled by 0.18215 as in the official code (its
`apply_cond_ref_encoder`), so an untrained adapter perturbs the UNet only mildly.

The features are computed once per sample and reused at every denoising step; model/injection.py
adds them to the UNet (down and up path, see there for why hooks and not diffusers'
`down_intrablock_additional_residuals`).
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class AdapterResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, down: bool, kernel_size: int) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.down = nn.Conv2d(c_in, c_in, 3, stride=2, padding=1) if down else nn.Identity()
        self.in_conv = (
            nn.Conv2d(c_in, c_out, kernel_size, padding=pad) if c_in != c_out else nn.Identity()
        )
        self.block = nn.Sequential(
            nn.Conv2d(c_out, c_out, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c_out, c_out, kernel_size, padding=pad),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_conv(self.down(x))
        return x + self.block(x)


class SFAdapter(ModelMixin, ConfigMixin):
    """B x in_channels x h x w -> [B x channels[i] x h/2^i x w/2^i for each level i]."""

    @register_to_config
    def __init__(
        self,
        in_channels: int = 384,
        channels: tuple[int, ...] = (320, 640, 1280),
        num_res_blocks: int = 2,
        kernel_size: int = 1,
        feature_scale: float = 0.18215,
        input_downscale: int = 1,
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        # For latent spaces coarser than 1/8 (small demo models) the encoder map is folded
        # down to the latent grid losslessly before the first conv.
        self.unshuffle = nn.PixelUnshuffle(input_downscale) if input_downscale > 1 else None
        self.conv_in = nn.Conv2d(in_channels * input_downscale**2, channels[0], 3, padding=1)
        self.levels = nn.ModuleList()
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            blocks = [AdapterResBlock(c_in, c_out, down=True, kernel_size=kernel_size)]
            blocks += [
                AdapterResBlock(c_out, c_out, down=False, kernel_size=kernel_size)
                for _ in range(num_res_blocks - 1)
            ]
            self.levels.append(nn.Sequential(*blocks))

    def forward(self, condition: torch.Tensor) -> list[torch.Tensor]:
        x = self.unshuffle(condition) if self.unshuffle is not None else condition
        x = self.conv_in(x)
        features = [x]
        for level in self.levels:
            x = level(x)
            features.append(x)
        scale = self.config.feature_scale
        return [f * scale for f in features]
