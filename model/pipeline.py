"""The SCGM sampling pipeline: encode conditions -> prepare latents -> denoise -> decode.

Every random draw comes from a per-sample CPU torch.Generator seeded with the request's noise
seed, so a sample's noise does not depend on its batch mates or the device; with
batch_invariant a batch of N gives bit-identical images to N single calls. The scheduler works
in fp32 whatever the model dtype.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from PIL import Image

from model.codec import Codec, decode_latents, encode_latents, latent_factor
from model.configs import COMPONENTS
from model.injection import inject_features
from model.mfencoder import MFEncoder
from model.request import BlockRequest
from model.scale import ScaleInfo
from model.scale_encoder import ScaleEncoder
from model.schedulers import check_prediction_type, make_scheduler
from model.sfadapter import SFAdapter

logger = logging.getLogger(__name__)


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> 3xHxW float in [-1, 1] (the official code feeds x * 2 - 1)."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """3xHxW in [-1, 1] -> RGB PIL image."""
    array = ((tensor.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).cpu().numpy(), mode="RGB")


def sample_generator(seed: int) -> torch.Generator:
    # torch seeds are 64-bit; hashed block seeds may be wider.
    return torch.Generator("cpu").manual_seed(seed % 2**64)


# Anchored noise is drawn per tile of this many pixels of the frame's zoom.
NOISE_TILE = 256


def anchored_noise(
    seed: int, zoom: int, origin: tuple[int, int], shape: tuple[int, int, int], factor: int
) -> torch.Tensor:
    """Initial latent noise (1 x C x H x W for shape C, H, W) fixed to the world, not the frame:
    each 256 px tile of the zoom has its own draw, seeded by (seed, zoom, tile). A block and
    the context margin of its neighbour then start from the same noise where they overlap,
    so both draw the same map there and the blocks join without a seam."""
    x0, y0 = origin
    if x0 % factor or y0 % factor:
        raise ValueError(f"noise origin {origin} is not a multiple of the latent factor {factor}")
    channels, height, width = shape
    cell = NOISE_TILE // factor  # latent cells per noise tile
    lx0, ly0 = x0 // factor, y0 // factor
    tx0, ty0 = lx0 // cell, ly0 // cell
    tx1, ty1 = (lx0 + width - 1) // cell, (ly0 + height - 1) // cell
    canvas = torch.empty(channels, (ty1 - ty0 + 1) * cell, (tx1 - tx0 + 1) * cell)
    for ty in range(ty0, ty1 + 1):
        for tx in range(tx0, tx1 + 1):
            key = hashlib.blake2b(f"{seed}:{zoom}:{tx}:{ty}".encode(), digest_size=8).digest()
            g = torch.Generator("cpu").manual_seed(int.from_bytes(key, "big") >> 1)
            row, col = (ty - ty0) * cell, (tx - tx0) * cell
            canvas[:, row : row + cell, col : col + cell] = torch.randn(
                channels, cell, cell, generator=g
            )
    top, left = ly0 - ty0 * cell, lx0 - tx0 * cell
    return canvas[None, :, top : top + height, left : left + width]


@dataclass
class Conditions:
    context: torch.Tensor  # B x tokens x dim, cross-attention
    features: list[torch.Tensor]  # SFAdapter output, one per UNet level


def encode_conditions(
    mfencoder: MFEncoder,
    sfadapter: SFAdapter,
    scale_encoder: ScaleEncoder,
    imagery: torch.Tensor,
    reference: torch.Tensor | None,
    has_reference: torch.Tensor,
    scales: Sequence[ScaleInfo],
    dtype: torch.dtype | None = None,
) -> Conditions:
    """SCGM's conditioning, the one used by sampling and training: MFEncoder fuses imagery and
    cascade reference (absent ones become its learned null), SFAdapter turns that into one
    feature per UNet level, the scale encoder writes the scale text as cross-attention tokens.
    Images are B x 3 x H x W in [-1, 1]; `dtype` casts the context to the UNet's."""
    features = sfadapter(mfencoder(imagery, reference, has_reference))
    context = scale_encoder(scales)
    return Conditions(context=context if dtype is None else context.to(dtype), features=features)


class MapPipeline:
    """Holds the five modules; call it with block requests to get RGB maps."""

    def __init__(
        self,
        unet: UNet2DConditionModel,
        vae: Codec,
        mfencoder: MFEncoder,
        sfadapter: SFAdapter,
        scale_encoder: ScaleEncoder,
        prediction_type: str = "epsilon",
    ) -> None:
        self.prediction_type = check_prediction_type(prediction_type)
        self.unet = unet
        self.vae = vae
        self.mfencoder = mfencoder
        self.sfadapter = sfadapter
        self.scale_encoder = scale_encoder
        for module in self.modules().values():
            module.eval().requires_grad_(False)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {key: getattr(self, key) for key in COMPONENTS}

    def to(self, device: str | torch.device, dtype: torch.dtype) -> MapPipeline:
        for module in self.modules().values():
            # nn.Module.to: diffusers' override warns about fp32-pinned modules we do not have.
            torch.nn.Module.to(module, device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def vae_scale_factor(self) -> int:
        return latent_factor(self.vae)

    @torch.inference_mode()
    def __call__(
        self,
        requests: Sequence[BlockRequest],
        steps: int,
        scheduler: str = "ddpm",
        batch_invariant: bool = False,
        strength: float = 1.0,
    ) -> list[Image.Image]:
        """batch_invariant: run samples one by one, so results are bit-identical whatever the
        batch. Batched kernels (gemm vs gemv, conv algorithms) round differently per batch size,
        which moves a few pixels by one level; the random draws are per sample either way.

        strength < 1 (SDEdit, Meng et al. 2022; diffusers' img2img `strength`): run only the
        last round(steps * strength) steps of the schedule, starting from the map head's sketch
        of the block's imagery noised to that level; the reference conditions the denoiser as
        at strength 1. The map then keeps the sketch's layout, where the demo denoiser alone
        draws blotches on real imagery. Every block starts from its own sketch, not from its
        upsampled reference: on real imagery the sketch of a zoom's own pixels holds more
        (model/weights/demo/README.md)."""
        if not requests:
            return []
        if batch_invariant and len(requests) > 1:
            return [self([r], steps, scheduler, strength=strength)[0] for r in requests]
        if not 0 < strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        generators = [sample_generator(r.noise_seed) for r in requests]
        conditions = self.encode_conditions(requests)
        noise_scheduler = make_scheduler(scheduler, steps, self.prediction_type)
        height, width = requests[0].imagery.size[::-1]
        noise = self.prepare_latents(requests, generators, height, width)
        timesteps = noise_scheduler.timesteps
        if strength == 1:
            latents = noise * noise_scheduler.init_noise_sigma
        else:
            begin = len(timesteps) - max(1, round(len(timesteps) * strength))
            timesteps = timesteps[begin:]
            if hasattr(noise_scheduler, "set_begin_index"):  # schedulers that count their steps
                noise_scheduler.set_begin_index(begin)
            start = encode_latents(self.vae, self.start_maps(requests))
            latents = noise_scheduler.add_noise(
                start.float(), noise, timesteps[:1].repeat(len(requests))
            )
        latents = self.denoise(latents, conditions, noise_scheduler, generators, timesteps)
        return self.decode(latents)

    def start_maps(self, requests: Sequence[BlockRequest]) -> torch.Tensor:
        """Where strength < 1 starts: the map head's sketch of each block's imagery
        (B x 3 x H x W in [-1, 1], on the device)."""
        imagery = torch.stack([image_to_tensor(r.imagery) for r in requests])
        return self.mfencoder.draw_map(imagery.to(self.device, self.dtype)).clamp(-1, 1)

    def encode_conditions(self, requests: Sequence[BlockRequest]) -> Conditions:
        sizes = {r.imagery.size for r in requests}
        if len(sizes) != 1:
            raise ValueError(f"all blocks of a batch must have one size, got {sorted(sizes)}")
        for r in requests:
            if r.reference is not None and r.reference.size != r.imagery.size:
                raise ValueError(f"reference {r.reference.size} != imagery {r.imagery.size}")
        imagery = torch.stack([image_to_tensor(r.imagery) for r in requests])
        has_reference = torch.tensor([r.reference is not None for r in requests])
        # Absent references are zeros here and replaced by the learned null inside MFEncoder.
        reference = torch.stack(
            [
                image_to_tensor(r.reference) if r.reference is not None else torch.zeros_like(img)
                for r, img in zip(requests, imagery, strict=True)
            ]
        )
        device, dtype = self.device, self.dtype
        return encode_conditions(
            self.mfencoder,
            self.sfadapter,
            self.scale_encoder,
            imagery.to(device, dtype),
            reference.to(device, dtype) if has_reference.any() else None,
            has_reference.to(device),
            [r.scale for r in requests],
            dtype,
        )

    def prepare_latents(
        self,
        requests: Sequence[BlockRequest],
        generators: Sequence[torch.Generator],
        height: int,
        width: int,
    ) -> torch.Tensor:
        """Each block's starting noise (unit variance; schedulers scale it by their sigma)."""
        factor = self.vae_scale_factor
        if height % factor or width % factor:
            raise ValueError(f"block size {width}x{height} is not a multiple of {factor}")
        shape = (1, self.unet.config.in_channels, height // factor, width // factor)

        def noise(r: BlockRequest, g: torch.Generator) -> torch.Tensor:
            if r.origin is None:
                return torch.randn(shape, generator=g)
            return anchored_noise(r.noise_seed, r.scale.zoom, r.origin, shape[1:], factor)

        draws = [noise(r, g) for r, g in zip(requests, generators, strict=True)]
        return torch.cat(draws).to(self.device)

    def denoise(
        self,
        latents: torch.Tensor,
        conditions: Conditions,
        scheduler: SchedulerMixin,
        generators: Sequence[torch.Generator],
        timesteps: Sequence[torch.Tensor] | torch.Tensor,
    ) -> torch.Tensor:
        # A list of generators makes diffusers draw step noise per sample (shape 1 x ...).
        step_generator = list(generators) if len(generators) > 1 else generators[0]
        with inject_features(self.unet, conditions.features):
            for t in timesteps:
                model_input = scheduler.scale_model_input(latents, t).to(self.dtype)
                model_output = self.unet(
                    model_input, t, encoder_hidden_states=conditions.context
                ).sample
                latents = scheduler.step(
                    model_output.float(), t, latents, generator=step_generator
                ).prev_sample
        return latents

    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        images = decode_latents(self.vae, latents.to(self.dtype))
        return [tensor_to_image(image) for image in images]
