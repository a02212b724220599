"""Training of a generator: optionally first its autoencoder on map crops (`vae_steps`, for a
learned AutoencoderKL; the demo's patch codec needs none), then the diffusion model (UNet +
MFEncoder + SFAdapter + scale encoder) on imagery/reference/map samples.

One global step counter runs through both phases (autoencoder steps first), so `--resume`
needs nothing but the output folder. The denoiser learns its config's prediction type (epsilon
or v) on the SD schedule (what model/schedulers.py samples with) with min-SNR weighting, which
converges several times faster than the plain loss, and an EMA of its weights is what gets
exported.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler

from model import configs
from model.codec import decode_latents, encode_latents, latent_mask
from model.configs import DENOISER, Components
from model.generator import load_components
from model.injection import inject_features
from model.pipeline import encode_conditions
from model.schedulers import TRAIN_SCHEDULE, check_prediction_type
from model.train_checkpoint import (
    CHECKPOINT,
    load_trainer_state,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from model.train_data import KNOWN, NOT_LABELLED, Augment, Batch, TileDataset

logger = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    config: str = "demo"
    init: str | None = None  # warm start: a generator folder (or "demo") instead of config's init
    data: tuple[str, ...] = (".",)  # one or more data set folders, `DIR*W` to weigh one
    out: str = "runs/demo"
    split: str | None = "train"
    steps: int = 2000  # diffusion steps
    vae_steps: int = 0  # autoencoder steps, run first (a from-scratch AutoencoderKL only)
    batch_size: int = 8
    vae_batch_size: int = 8
    crop: int = 128
    vae_crop: int = 128
    lr: float = 3e-4
    vae_lr: float = 1e-3
    warmup: int = 100
    cooldown: int = 0  # the last N diffusion steps decay the learning rate linearly to 0
    prediction_type: str | None = None  # None: the config's (model/schedulers.py)
    min_snr_gamma: float = 5.0
    # Pixels known to be none of the labelled classes (partial labels) are pushed at least this
    # far (RGB distance in [-1, 1] units) from those classes' colours; no colour is imposed.
    exclusion_margin: float = 0.25
    # Weight of the loss of the MFEncoder's map head (`MapHead`: the map drawn from the imagery
    # alone, where blocks start at strength < 1; added to an encoder without one, of
    # map_head_channels). 0: off. map_head_only trains the head alone: no UNet pass, so many
    # cheap steps.
    imagery_map_weight: float = 0.0
    map_head_only: bool = False
    map_head_channels: tuple[int, ...] = (16, 32, 64, 128, 128)
    ema_decay: float = 0.999
    kl_weight: float = 1e-6
    checkpoint_every: int = 200
    seed: int = 0
    device: str = "cpu"
    augment: Augment = field(default_factory=Augment)


@dataclass
class StepResult:
    step: int
    phase: str
    loss: float
    samples: int


def trainable_config(config: str) -> configs.ModelConfig:
    found = configs.REGISTRY.get(config)
    if found is None or found.init is None:
        raise ValueError(f"cannot train config {config!r} ({', '.join(configs.TRAINABLE_CONFIGS)})")
    return found


def trainable_parameters(config: str, components: Components) -> list[torch.nn.Parameter]:
    """An `attention_only` config (sd21) fine-tunes as the paper: MFEncoder, SFAdapter and the
    UNet attention layers (the pretrained UNet and CLIP text tower stay frozen); small configs
    train their whole denoiser."""
    params = [*components.mfencoder.parameters(), *components.sfadapter.parameters()]
    if trainable_config(config).attention_only:
        return params + [p for n, p in components.unet.named_parameters() if ".attentions." in n]
    return params + [*components.unet.parameters(), *components.scale_encoder.parameters()]


def normalize_latents(vae: AutoencoderKL, maps: torch.Tensor) -> tuple[list[float], list[float]]:
    """Fold per-channel latent mean/std into quant_conv and post_quant_conv, so the diffusion
    model sees zero-mean unit-variance latents and the pipeline's plain `latents /
    scaling_factor` (no shift) stays right with scaling_factor 1."""
    with torch.no_grad():
        latents = vae.encode(maps).latent_dist.mean
        mean = latents.mean(dim=(0, 2, 3))
        std = latents.std(dim=(0, 2, 3)).clamp_min(1e-4)
        channels = mean.numel()
        quant, post = vae.quant_conv, vae.post_quant_conv
        # Rows 0..C-1 of quant_conv give the posterior mean, C..2C-1 its log-variance.
        quant.weight[:channels] /= std[:, None, None, None]
        quant.bias[:channels] = (quant.bias[:channels] - mean) / std
        quant.bias[channels:] -= 2 * torch.log(std)
        post.bias += (post.weight[:, :, 0, 0] * mean[None]).sum(dim=1)
        post.weight.mul_(std[None, :, None, None])
    vae.register_to_config(scaling_factor=1.0)
    return mean.tolist(), std.tolist()


class Trainer:
    def __init__(self, options: TrainOptions, resume: bool = False) -> None:
        self.options = options
        self.out = Path(options.out)
        self.device = torch.device(options.device)
        self.rng = torch.Generator("cpu").manual_seed(options.seed)
        torch.manual_seed(options.seed)
        state = load_trainer_state(self.out) if resume else None
        if state is not None:
            self.components = load_components(self.out / CHECKPOINT / "generator")
        elif options.init is not None:
            # A warm start: the shipped weights (or any checkpoint) with a new optimizer.
            init = configs.demo_weights_dir() if options.init == "demo" else Path(options.init)
            self.components = load_components(init)
        else:
            init_fresh = trainable_config(options.config).init
            assert init_fresh is not None  # trainable_config checked it
            self.components = init_fresh(options.seed)
        if options.prediction_type is not None:
            # A switch is a fine-tune of the target (SD 2 moved epsilon -> v this way).
            self.components.prediction_type = check_prediction_type(options.prediction_type)
        self.modules = self.components.modules()
        for module in self.modules.values():
            module.to(self.device).train().requires_grad_(False)
        if options.map_head_only and options.imagery_map_weight <= 0:
            raise ValueError("training the map head alone needs imagery_map_weight > 0")
        if options.imagery_map_weight > 0 and self.components.mfencoder.map_head is None:
            self.components.mfencoder.add_map_head(options.map_head_channels)
            self.components.mfencoder.to(self.device)
        if options.map_head_only:
            assert self.components.mfencoder.map_head is not None  # added just above
            params = list(self.components.mfencoder.map_head.parameters())
        else:
            params = trainable_parameters(options.config, self.components)
        for p in params:
            p.requires_grad_(True)
        self.vae_optimizer: torch.optim.AdamW | None = None
        if options.vae_steps > 0:
            if not isinstance(self.components.vae, AutoencoderKL):
                raise ValueError(
                    f"{options.config} has a fixed codec, no autoencoder to train: "
                    "use 0 autoencoder steps"
                )
            self.components.vae.requires_grad_(True)
            self.vae_optimizer = torch.optim.AdamW(
                self.components.vae.parameters(), lr=options.vae_lr, weight_decay=0.0
            )
        self.optimizer = torch.optim.AdamW(params, lr=options.lr, weight_decay=0.01)
        self.ema: dict[str, torch.Tensor] = {
            f"{key}.{n}": t.detach().clone()
            for key in DENOISER
            for n, t in self.modules[key].state_dict().items()
        }
        self.noise_schedule = DDPMScheduler(
            **TRAIN_SCHEDULE, prediction_type=self.components.prediction_type
        )
        self.alphas_cumprod = self.noise_schedule.alphas_cumprod.to(self.device)
        self.step = 0
        self.latents_normalized = options.vae_steps == 0
        self.latent_stats: dict[str, list[float]] = {}
        if state is not None:
            self._restore(state)
        self.data = TileDataset(options.data, options.split)

    @property
    def total_steps(self) -> int:
        return self.options.vae_steps + self.options.steps

    def phase(self) -> str:
        return "autoencoder" if self.step < self.options.vae_steps else "diffusion"

    def run(self, on_step: Callable[[StepResult], None] | None = None) -> None:
        every = self.options.checkpoint_every
        while self.step < self.total_steps:
            result = self.train_step()
            self._log(result)
            if on_step is not None:
                on_step(result)
            if self.step % every == 0 or self.step == self.total_steps:
                self.save()

    def train_step(self) -> StepResult:
        phase = self.phase()
        if phase == "diffusion" and not self.latents_normalized:
            self._normalize_latents()
        self._set_lr()
        if phase == "autoencoder":
            loss, samples = self._autoencoder_step(), self.options.vae_batch_size
        else:
            loss, samples = self._diffusion_step(), self.options.batch_size
        self.step += 1
        return StepResult(self.step, phase, loss, samples)

    def _set_lr(self) -> None:
        o = self.options
        diffusion = self.phase() == "diffusion"
        if diffusion:
            optimizer, base, done = self.optimizer, o.lr, self.step - o.vae_steps
        else:
            assert self.vae_optimizer is not None  # autoencoder steps need one (checked at init)
            optimizer, base, done = self.vae_optimizer, o.vae_lr, self.step
        scale = min(1.0, (done + 1) / max(1, o.warmup))
        if diffusion and o.cooldown:
            # A constant rate leaves the weights bouncing around the minimum; annealing at the
            # end settles them (the same run's resume picks the schedule up where it was).
            scale = min(scale, (o.steps - done) / o.cooldown)
        for group in optimizer.param_groups:
            group["lr"] = base * scale

    def _autoencoder_step(self) -> float:
        o, vae, optimizer = self.options, self.components.vae, self.vae_optimizer
        assert isinstance(vae, AutoencoderKL) and optimizer is not None  # checked at init
        maps = self.data.map_batch(o.vae_batch_size, o.vae_crop, self.rng).to(self.device)
        posterior = vae.encode(maps).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=self.rng).to(self.device)
        recon = vae.decode(posterior.mean + posterior.std * noise).sample
        # L1 keeps flat colours and edges sharp; MSE weighs the rare large errors (thin roads).
        loss = F.l1_loss(recon, maps) + F.mse_loss(recon, maps)
        # kl() sums over the latent; per pixel, as LDM's loss (which sums the reconstruction
        # over pixels too). Unscaled, 1e-6 weighs ~50,000x more and the bottleneck turns the
        # maps grey: parks and major roads were lost.
        loss = loss + o.kl_weight * posterior.kl().mean() / maps[0].numel()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        return loss.detach().item()

    def diffusion_loss(self, batch: Batch) -> torch.Tensor:
        c, device = self.components, self.device
        with torch.no_grad():
            latents = encode_latents(c.vae, batch.target.to(device))
        noise = torch.randn(latents.shape, generator=self.rng).to(device)
        t = torch.randint(0, len(self.alphas_cumprod), (latents.shape[0],), generator=self.rng)
        t = t.to(device)
        noisy = self.noise_schedule.add_noise(latents, noise, t)
        conditions = encode_conditions(
            c.mfencoder,
            c.sfadapter,
            c.scale_encoder,
            batch.imagery.to(device),
            batch.reference.to(device),
            batch.has_reference.to(device),
            batch.scales,
        )
        with inject_features(c.unet, conditions.features):
            pred = c.unet(noisy, t, encoder_hidden_states=conditions.context).sample
        alpha = self.alphas_cumprod[t]
        snr = alpha / (1 - alpha)
        # Min-SNR-gamma (Hang et al. 2023) caps the weight of the easy, low-noise steps. In x0
        # terms an epsilon loss weighs a step by snr, a v loss by snr + 1; capping those at
        # gamma keeps v's weight of 1 on the noisiest steps, where a v-model learns to draw
        # the map from the conditions alone (min(snr, gamma) would weigh them ~0, and the
        # first DDIM steps of a few-step sampler would stay noise).
        if c.prediction_type == "v_prediction":
            target = self.noise_schedule.get_velocity(latents, noise, t)
            weight = (snr + 1).clamp(max=self.options.min_snr_gamma) / (snr + 1)
        else:
            target = noise
            weight = snr.clamp(max=self.options.min_snr_gamma) / snr
        error = F.mse_loss(pred, target, reduction="none")
        aux = self.imagery_map_loss(batch) if self.options.imagery_map_weight > 0 else 0.0
        if batch.knowledge is None:
            return (error.mean(dim=(1, 2, 3)) * weight).mean() + aux
        # Partial labels: the map is learned only where it is known (the loss is a mean over
        # known latent cells), and pixels known to be none of the labelled classes only learn
        # what they are not.
        knowledge = batch.knowledge.to(device)
        known = latent_mask(c.vae, (knowledge == KNOWN).float())
        per_sample = (error * known).sum(dim=(1, 2, 3)) / known.sum(dim=(1, 2, 3)).clamp(min=1)
        x0 = self.predicted_x0(noisy, pred, t)
        excluded = self.exclusion_loss(x0, knowledge == NOT_LABELLED, batch.excluded_colours)
        return ((per_sample + excluded) * weight).mean() + aux

    def imagery_map_loss(self, batch: Batch) -> torch.Tensor:
        """The map head's loss (`imagery_map_weight`): its map against the target where known,
        plus the exclusion term where only the labelled classes are ruled out, as the
        diffusion loss."""
        target = batch.target.to(self.device)
        drawn = self.components.mfencoder.draw_map(batch.imagery.to(self.device))
        error = (drawn - target).pow(2).mean(dim=1, keepdim=True)
        if batch.knowledge is None:
            per_sample = error.mean(dim=(1, 2, 3))
        else:
            knowledge = batch.knowledge.to(self.device)
            known = (knowledge == KNOWN).float()
            per_sample = (error * known).sum(dim=(1, 2, 3)) / known.sum(dim=(1, 2, 3)).clamp(1)
            per_sample = per_sample + self.exclusion_penalty(
                drawn, knowledge == NOT_LABELLED, batch.excluded_colours
            )
        return self.options.imagery_map_weight * per_sample.mean()

    def predicted_x0(
        self, noisy: torch.Tensor, pred: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """The clean latents the model's prediction implies."""
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        if self.components.prediction_type == "v_prediction":
            return a.sqrt() * noisy - (1 - a).sqrt() * pred
        return (noisy - (1 - a).sqrt() * pred) / a.sqrt().clamp(min=0.05)

    def exclusion_loss(
        self, x0: torch.Tensor, where: torch.Tensor, colours: list[torch.Tensor] | None
    ) -> torch.Tensor:
        """Per sample: mean over `where` pixels of relu(margin - distance to the nearest
        excluded colour)^2 of the predicted map. Inside a label extent a pixel without a
        footprint is known not to be a building; this teaches exactly that, while its class
        (road, ground, trees...) is left to what the model learned where maps are complete.
        Drawing those pixels as background would invent ground where roads and trees are."""
        if colours is None or not bool(where.any()):
            return torch.zeros(x0.shape[0], device=x0.device)
        pixels = decode_latents(self.components.vae, x0)  # B x 3 x H x W in [-1, 1]
        return self.exclusion_penalty(pixels, where, colours)

    def exclusion_penalty(
        self, pixels: torch.Tensor, where: torch.Tensor, colours: list[torch.Tensor] | None
    ) -> torch.Tensor:
        """exclusion_loss of a drawn map (B x 3 x H x W pixels in [-1, 1])."""
        out = torch.zeros(pixels.shape[0], device=pixels.device)
        if colours is None or not bool(where.any()):
            return out
        margin = self.options.exclusion_margin
        for i, palette in enumerate(colours):
            mask = where[i, 0]
            if not palette.numel() or not bool(mask.any()):
                continue
            chosen = pixels[i][:, mask]  # 3 x N
            dist = torch.cdist(chosen.T, palette.to(pixels.device)).min(dim=1).values
            out[i] = F.relu(margin - dist).pow(2).mean()
        return out

    def _diffusion_step(self) -> float:
        o = self.options
        batch = self.data.batch(o.batch_size, o.crop, self.rng, o.augment)
        loss = self.imagery_map_loss(batch) if o.map_head_only else self.diffusion_loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        self.optimizer.step()
        self._update_ema()
        return loss.detach().item()

    def _update_ema(self) -> None:
        done = self.step - self.options.vae_steps + 1
        decay = min(self.options.ema_decay, (1 + done) / (10 + done))
        with torch.no_grad():
            for key in DENOISER:
                for n, t in self.modules[key].state_dict().items():
                    shadow = self.ema[f"{key}.{n}"]
                    if t.is_floating_point():
                        shadow.lerp_(t, 1 - decay)
                    else:
                        shadow.copy_(t)

    def _normalize_latents(self) -> None:
        maps = self.data.map_batch(64, self.options.vae_crop, self.rng).to(self.device)
        mean, std = normalize_latents(self.components.vae, maps)
        self.latent_stats = {"mean": mean, "std": std}
        self.latents_normalized = True
        logger.info("latent mean %s std %s folded into the autoencoder", mean, std)

    def ema_modules(self) -> dict[str, torch.nn.Module]:
        """Copies of the modules carrying the EMA weights (the VAE is not averaged)."""
        out: dict[str, torch.nn.Module] = {"vae": self.components.vae}
        for key in DENOISER:
            module = self.modules[key]
            copy = type(module).from_config(module.config)
            prefix = f"{key}."
            copy.load_state_dict(
                {k[len(prefix) :]: v for k, v in self.ema.items() if k.startswith(prefix)}
            )
            out[key] = copy
        return {k: out[k] for k in self.modules}

    def save(self) -> None:
        state: dict[str, Any] = {
            "step": self.step,
            "options": asdict(self.options),
            "optimizer": self.optimizer.state_dict(),
            "vae_optimizer": self.vae_optimizer and self.vae_optimizer.state_dict(),
            "ema": self.ema,
            "rng": rng_state(self.rng),
            "latents_normalized": self.latents_normalized,
            "latent_stats": self.latent_stats,
        }
        c = self.components
        ema = self.ema_modules() if self.step > self.options.vae_steps else None
        save_checkpoint(self.out, c, self.modules, ema, state)
        logger.info("checkpoint at step %d in %s", self.step, self.out)

    def _restore(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.vae_optimizer is not None:
            self.vae_optimizer.load_state_dict(state["vae_optimizer"])
        self.ema = {k: v.to(self.device) for k, v in state["ema"].items()}
        self.latents_normalized = bool(state["latents_normalized"])
        self.latent_stats = state.get("latent_stats", {})
        restore_rng(state["rng"], self.rng)
        self._trim_log()

    def _log(self, result: StepResult) -> None:
        path = self.out / "losses.csv"
        self.out.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["step", "phase", "loss", "time"])
            writer.writerow([result.step, result.phase, f"{result.loss:.6f}", f"{time.time():.1f}"])

    def _trim_log(self) -> None:
        """Drop loss rows past the checkpoint: the resumed run redoes those steps."""
        path = self.out / "losses.csv"
        if not path.exists():
            return
        rows = list(csv.reader(path.open(newline="")))
        kept = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= self.step]
        with path.open("w", newline="") as f:
            csv.writer(f).writerows(kept)
