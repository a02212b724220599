"""Named model configurations: how to build (or find) the five modules of a generator, and the
one registry of them (`REGISTRY`: name -> how Generator.load gets it, whether and how it trains).

- tiny: random weights, built in-process with a fixed seed (identical in every process), for
  tests: a 512x512 block in a fraction of a second on CPU.
- sd21: SD 2.1-base UNet/VAE (diffusers folder or hub id), ViT-H-14 text tower (local open_clip
  checkpoint) and our MFEncoder/SFAdapter weights; `random_weights=True` builds the full-size
  architecture with random weights for benchmarks, downloading nothing. Sources come from
  arguments or, for Generator.load("sd21"), the environment variables below.
- demo: the CPU-sized model trained and shipped by the project in model/weights/demo/ (a
  checkpoint folder written by Generator.save_pretrained).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from model.codec import Codec, PatchCodec
from model.mfencoder import MFEncoder
from model.scale_encoder import ScaleEncoder
from model.sfadapter import SFAdapter

DEMO_WEIGHTS = Path(__file__).parent / "weights" / "demo"
SD21_HUB_ID = "stabilityai/stable-diffusion-2-1-base"
# Environment for Generator.load("sd21"): diffusers folder or hub id, open_clip ViT-H-14
# checkpoint file, folder holding our mfencoder/ and sfadapter/ (save_pretrained layout).
ENV_SD21 = "MAPCASCADE_SD21"
ENV_OPENCLIP = "MAPCASCADE_OPENCLIP_VITH14"
ENV_ADAPTER = "MAPCASCADE_SCGM_ADAPTER"


# A generator's components, name -> the classes a checkpoint may hold there; the one list of
# them (as diffusers' `register_modules`): pipeline, checkpoints and training iterate it.
COMPONENT_CLASSES: dict[str, tuple[type[torch.nn.Module], ...]] = {
    "unet": (UNet2DConditionModel,),
    "vae": (AutoencoderKL, PatchCodec),
    "mfencoder": (MFEncoder,),
    "sfadapter": (SFAdapter,),
    "scale_encoder": (ScaleEncoder,),
}
COMPONENTS = tuple(COMPONENT_CLASSES)
# What the diffusion training updates (and averages): everything but the autoencoder.
DENOISER = tuple(c for c in COMPONENTS if c != "vae")


@dataclass
class Components:
    """The modules of a generator plus its sampling defaults."""

    name: str
    unet: UNet2DConditionModel
    vae: Codec
    mfencoder: MFEncoder
    sfadapter: SFAdapter
    scale_encoder: ScaleEncoder
    steps: int
    scheduler: str
    prediction_type: str = "epsilon"  # what the UNet predicts (model/schedulers.py)

    def modules(self) -> dict[str, Any]:  # name -> its module, in COMPONENTS order
        return {key: getattr(self, key) for key in COMPONENTS}


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Deterministic weight init without disturbing the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# SD 2.1-base architecture (the hub config of stabilityai/stable-diffusion-2-1-base).
SD21_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "layers_per_block": 2,
    "cross_attention_dim": 1024,
    "attention_head_dim": (5, 10, 20, 20),  # diffusers' name; these are head counts (64-wide)
    "use_linear_projection": True,
    "norm_num_groups": 32,
}
SD21_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 512,
}
SD21_TEXT = {"kind": "open_clip", "context_dim": 1024, "heads": 16, "layers": 24}
SD21_MFENCODER = {"stem_channels": 32, "channels": (64, 128, 256), "out_channels": 384}
SD21_SFADAPTER = {"in_channels": 384, "channels": (320, 640, 1280), "num_res_blocks": 2}

TINY_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (16, 32, 64, 64),
    # No attention at the finest level: 4096-token self-attention would dominate on CPU.
    "down_block_types": (
        "DownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "attention_head_dim": 2,
    "use_linear_projection": True,
    "norm_num_groups": 8,
}
TINY_VAE = {
    **SD21_VAE,
    "block_out_channels": (8, 8, 16, 16),
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "mid_block_add_attention": False,
}
TINY_TEXT = {"kind": "open_clip", "context_dim": 32, "heads": 2, "layers": 2, "projection_dim": 32}
TINY_MFENCODER = {
    "stem_channels": 8,
    "channels": (8, 16, 32),
    "spade_hidden": 16,
    "out_channels": 32,
}
TINY_SFADAPTER = {"in_channels": 32, "channels": (16, 32, 64), "num_res_blocks": 1}


def build_tiny() -> Components:
    with seeded(0):
        return Components(
            name="tiny",
            unet=UNet2DConditionModel(**TINY_UNET),
            vae=AutoencoderKL(**TINY_VAE),
            mfencoder=MFEncoder(**TINY_MFENCODER),
            sfadapter=SFAdapter(**TINY_SFADAPTER),
            scale_encoder=ScaleEncoder(**TINY_TEXT),
            steps=4,
            scheduler="ddpm",
        )


# demo: a CPU-sized SCGM model trained from scratch by `mapcascade train --config demo`.
# Its latent is the lossless factor-4 patch codec (model/codec.py): 128x128x48 for a 512 block,
# standardised with the colour statistics of the training maps. The UNet and MFEncoder stay
# narrow at full latent resolution and put attention only on the two coarsest levels.
DEMO_FACTOR = 4  # pixels per latent cell along each side
DEMO_CODEC = {
    "factor": DEMO_FACTOR,
    "mean": (0.7662, 0.7426, 0.6743),
    "std": (0.1460, 0.1402, 0.1912),
}
DEMO_LATENT_CHANNELS = 3 * DEMO_FACTOR**2
DEMO_UNET = {
    "sample_size": 128,
    "in_channels": DEMO_LATENT_CHANNELS,
    "out_channels": DEMO_LATENT_CHANNELS,
    # 48 at the top: each latent cell is a 4x4 RGB patch (48 numbers) to be drawn.
    "block_out_channels": (48, 64, 128, 128),
    "down_block_types": ("DownBlock2D", "DownBlock2D") + ("CrossAttnDownBlock2D",) * 2,
    "up_block_types": ("CrossAttnUpBlock2D",) * 2 + ("UpBlock2D", "UpBlock2D"),
    "layers_per_block": 1,
    "cross_attention_dim": 64,
    "attention_head_dim": 4,
    "use_linear_projection": True,
    "norm_num_groups": 8,
}
DEMO_TEXT = {"kind": "numeric", "context_dim": 64, "num_tokens": 4, "hidden": 64}
# Two stages: the condition map lands on the factor-4 latent grid (128x128 for a block).
DEMO_MFENCODER = {
    "stem_channels": 16,
    "channels": (16, 32),
    "spade_hidden": 32,
    "spade_norm": "group",
    "out_channels": 64,
}
# Trained from scratch, so no SD-latent-sized damping of the features.
DEMO_SFADAPTER = {
    "in_channels": 64,
    "channels": DEMO_UNET["block_out_channels"],
    "num_res_blocks": 1,
    "feature_scale": 1.0,
}
DEMO_STEPS = 2
DEMO_SCHEDULER = "ddim"
DEMO_PREDICTION = "v_prediction"


def build_demo(seed: int = 0) -> Components:
    """The demo architecture with fresh weights: the starting point of its training."""
    with seeded(seed):
        return Components(
            name="demo",
            unet=UNet2DConditionModel(**DEMO_UNET),
            vae=PatchCodec(**DEMO_CODEC),
            mfencoder=MFEncoder(**DEMO_MFENCODER),
            sfadapter=SFAdapter(**DEMO_SFADAPTER),
            scale_encoder=ScaleEncoder(**DEMO_TEXT),
            steps=DEMO_STEPS,
            scheduler=DEMO_SCHEDULER,
            prediction_type=DEMO_PREDICTION,
        )


def build_sd21(
    random_weights: bool = False,
    sd: str | None = None,
    open_clip_checkpoint: str | None = None,
    adapter: str | None = None,
) -> Components:
    """SD 2.1-base + SCGM modules. Without random_weights every source must be reachable."""
    if random_weights:
        with seeded(0):
            return Components(
                name="sd21",
                unet=UNet2DConditionModel(**SD21_UNET),
                vae=AutoencoderKL(**SD21_VAE),
                mfencoder=MFEncoder(**SD21_MFENCODER),
                sfadapter=SFAdapter(**SD21_SFADAPTER),
                scale_encoder=ScaleEncoder(**SD21_TEXT),
                steps=50,
                scheduler="ddpm",
            )
    sd = sd or os.environ.get(ENV_SD21, SD21_HUB_ID)
    open_clip_checkpoint = open_clip_checkpoint or os.environ.get(ENV_OPENCLIP)
    adapter = adapter or os.environ.get(ENV_ADAPTER)
    if not open_clip_checkpoint or not adapter:
        raise FileNotFoundError(
            "sd21 needs an open_clip ViT-H-14 checkpoint and SCGM adapter weights: set "
            f"{ENV_OPENCLIP} and {ENV_ADAPTER} (and {ENV_SD21} for a local SD 2.1-base "
            "folder), or load a checkpoint folder written by Generator.save_pretrained"
        )
    scale_encoder = ScaleEncoder(**SD21_TEXT)
    scale_encoder.load_open_clip_checkpoint(open_clip_checkpoint)
    return Components(
        name="sd21",
        unet=UNet2DConditionModel.from_pretrained(sd, subfolder="unet"),
        vae=AutoencoderKL.from_pretrained(sd, subfolder="vae"),
        mfencoder=MFEncoder.from_pretrained(adapter, subfolder="mfencoder"),
        sfadapter=SFAdapter.from_pretrained(adapter, subfolder="sfadapter"),
        scale_encoder=scale_encoder,
        steps=50,
        scheduler="ddpm",
    )


def demo_weights_dir() -> Path:
    if not (DEMO_WEIGHTS / "generator.json").is_file():
        raise FileNotFoundError(
            f"the demo model is not shipped yet: no checkpoint in {DEMO_WEIGHTS} (it is trained "
            "by a later issue); use 'tiny', 'sd21' or a checkpoint folder"
        )
    return DEMO_WEIGHTS


def load_demo() -> Components:
    from model.generator import load_components  # it imports this module

    return load_components(demo_weights_dir())


@dataclass(frozen=True)
class ModelConfig:
    """A named configuration: what `Generator.load(name)` gives and how `train` starts it."""

    name: str
    load: Callable[[], Components]
    init: Callable[[int], Components] | None  # fresh weights to train (by seed); None: cannot
    learning_rate: float = 3e-4  # training's default
    # The paper's fine-tune of a pretrained UNet: MFEncoder, SFAdapter and the UNet attention
    # layers learn; otherwise the whole denoiser does.
    attention_only: bool = False

    @property
    def trainable(self) -> bool:
        return self.init is not None


REGISTRY: dict[str, ModelConfig] = {
    c.name: c
    for c in (
        ModelConfig("demo", load=load_demo, init=build_demo),
        ModelConfig("tiny", load=build_tiny, init=lambda seed: build_tiny()),
        ModelConfig("sd21", load=build_sd21, init=lambda seed: build_sd21(), learning_rate=5e-5,
                    attention_only=True),
    )
}  # fmt: skip
CONFIG_NAMES = tuple(REGISTRY)
TRAINABLE_CONFIGS = tuple(name for name, c in REGISTRY.items() if c.trainable)
