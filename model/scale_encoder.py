"""ScaleEncoder: scale information -> cross-attention context for the UNet.

kind "open_clip": the SCGM scale prompt through an open_clip text tower, penultimate layer then
final LayerNorm, all 77 tokens (what SD 2.1 and the official FrozenOpenCLIPEmbedder use). For
SD 2.1 that is ViT-H-14's text tower (width 1024, 24 layers), loaded from a local open_clip
checkpoint; small configs build a narrow tower with random weights in-process.
kind "numeric": ScaleInfo.embedding() through an MLP to a few context tokens, for small models.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import open_clip
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from open_clip.transformer import TextTransformer
from torch import nn

from model.scale import ScaleInfo

logger = logging.getLogger(__name__)

KINDS = ("open_clip", "numeric")


class ScaleEncoder(ModelMixin, ConfigMixin):
    """Sequence[ScaleInfo] -> B x tokens x context_dim."""

    @register_to_config
    def __init__(
        self,
        kind: str = "open_clip",
        context_dim: int = 1024,
        # open_clip text tower (defaults: ViT-H-14)
        context_length: int = 77,
        vocab_size: int = 49408,
        heads: int = 16,
        layers: int = 24,
        projection_dim: int = 1024,
        skip_last_layers: int = 1,
        # numeric
        num_tokens: int = 4,
        hidden: int = 128,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown ScaleEncoder kind {kind!r} ({' | '.join(KINDS)})")
        if kind == "open_clip":
            # projection_dim only matters for loading checkpoints strictly: the pooled,
            # projected output is not used for cross-attention.
            self.text = TextTransformer(
                context_length=context_length,
                vocab_size=vocab_size,
                width=context_dim,
                heads=heads,
                layers=layers,
                output_dim=projection_dim,
            )
        else:
            self.mlp = nn.Sequential(
                nn.Linear(3, hidden), nn.SiLU(), nn.Linear(hidden, num_tokens * context_dim)
            )

    def forward(self, scales: Sequence[ScaleInfo]) -> torch.Tensor:
        device = self.device
        if self.config.kind == "numeric":
            values = torch.tensor([s.embedding() for s in scales], device=device)
            out = self.mlp(values.to(self.dtype))
            return out.view(len(scales), self.config.num_tokens, self.config.context_dim)
        tokens = open_clip.tokenize([s.prompt() for s in scales], self.config.context_length)
        return self._encode_tokens(tokens.to(device))

    def _encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        x, attn_mask = self.text._embeds(tokens)
        blocks = self.text.transformer.resblocks
        for block in blocks[: len(blocks) - self.config.skip_last_layers]:
            x = block(x, attn_mask=attn_mask)
        return self.text.ln_final(x)

    def load_open_clip_checkpoint(self, path: str | Path) -> None:
        """Load the text tower from an open_clip checkpoint (.bin/.pt or .safetensors).

        Vision tower and logit scale entries are ignored; every text tower weight must be there.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"open_clip checkpoint not found: {path}")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: dict = load_file(str(path))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        state = loaded.get("state_dict", loaded)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        wanted = self.text.state_dict().keys()
        missing = [k for k in wanted if k not in state]
        if missing:
            raise ValueError(f"{path} lacks text tower weights, e.g. {missing[:3]}")
        self.text.load_state_dict({k: state[k] for k in wanted})
        logger.info("loaded open_clip text tower from %s", path)
