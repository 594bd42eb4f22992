"""LTX-2's training hooks: latents, the audio stream, first-frame conditioning, the denoiser call.

Why each choice (sources in docs/ltx2-notes.md, "Audio when training on silent clips"):

- Latents are normalised exactly as the pipelines do it: the VAE posterior's mode,
  `(z - latents_mean) * scaling_factor / latents_std` per channel, and back for decoding.
- The audio stream: diffusers' transformer cannot run without one, and UFO clips are silent. We
  feed what SimpleTuner feeds for a clip without audio: the ZERO audio latent (normalised space)
  noised at the sample's own noise level, `sigma * eps` with eps drawn from the sample's generator,
  `audio_timestep` = the video's timestep, no isolation of the modalities (the pipelines never
  generate with it), and no loss on the audio output. ai-toolkit feeds unscaled noise labelled
  with the video's timestep, which at low sigma says "almost clean" about pure noise.
- The frame rate is `training_fps` (`train.fps`, set by the trainer; default 24, the pipelines'
  default and LTX-2's native rate, which diffusion-pipe fixes too): UFO trains on static clips,
  whose own frame rate means nothing, so the rate is the one the LoRA will be used at. It sets the
  RoPE time scale and the audio length.
- Image-to-video (`train_mode = "inpaint"`): every sample's first latent frame is the clean
  latent of its first pixel frame encoded ALONE after the H.264 re-compression the pipeline
  applies (`image_crf`, 33 for Gemma 3 models: diffusers says it "matches training compression"),
  with per-token timestep t * (1 - mask) — `LTX2ImageToVideoPipeline`'s construction — and the
  loss ignores that frame (`loss_mask`), as ai-toolkit's LTX-2 trainer does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ufo_video.errors import UfoError
from ufo_video.models.base import Conditioning
from ufo_video.models.configs import read_json

#: the pipelines' `use_cross_timestep` default (`LTX2Pipeline.__call__`)
USE_CROSS_TIMESTEP = True


def _pack(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, F, H, W] -> tokens [B, F*H*W, C] (`LTX2Pipeline._pack_latents` with patch 1)."""
    from diffusers import LTX2Pipeline

    return LTX2Pipeline._pack_latents(latents, 1, 1)


def _unpack(tokens: torch.Tensor, f: int, h: int, w: int) -> torch.Tensor:
    from diffusers import LTX2Pipeline

    return LTX2Pipeline._unpack_latents(tokens, f, h, w, 1, 1)


class LTX2Training:
    """The training half of `LTX2Adapter` (mixed in; uses its components and `info`)."""

    # ---- latents ---------------------------------------------------------------------------------
    def _latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        vae = self.vae
        mean = vae.latents_mean.view(1, -1, 1, 1, 1).to(like.device, like.dtype)
        std = vae.latents_std.view(1, -1, 1, 1, 1).to(like.device, like.dtype)
        return mean, std, float(vae.config.scaling_factor)

    def _posteriors(self, pixels: torch.Tensor) -> list[Any]:
        if self.vae is None:
            raise UfoError(f"{self.info.path}: encoding video needs the VAE loaded")
        pixels = pixels.to(device=self.vae.device, dtype=self.vae.dtype)
        return [self.vae.encode(pixels[i : i + 1]).latent_dist for i in range(pixels.shape[0])]

    def encode_video(self, pixels: torch.Tensor) -> torch.Tensor:
        """The posterior's mode (`retrieve_latents(..., "argmax")`), normalised per channel as
        `LTX2Pipeline._normalize_latents` does with the VAE's `scaling_factor`."""
        z = torch.cat([d.mode() for d in self._posteriors(pixels)])
        mean, std, scale = self._latent_stats(z)
        return (z - mean) * scale / std

    def encode_video_posterior(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dists = self._posteriors(pixels)
        z = torch.cat([d.mode() for d in dists])
        mean, std, scale = self._latent_stats(z)
        return (z - mean) * scale / std, torch.cat([d.std for d in dists]) * scale / std

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """`_denormalize_latents` then the VAE decode, as the pipelines' end with `decode_timestep`
        0 (a timestep-conditioned VAE gets timestep 0 and no decode noise)."""
        latents = latents.to(device=self.vae.device, dtype=self.vae.dtype)
        mean, std, scale = self._latent_stats(latents)
        z = latents * std / scale + mean
        temb = None
        if self.vae.config.timestep_conditioning:
            temb = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)
        return self.vae.decode(z, temb, return_dict=False)[0].clamp(-1, 1)

    # ---- the audio stream ------------------------------------------------------------------------
    def frame_rate(self) -> float:
        """The rate training conditions on (`ModelAdapter.training_fps`: `train.fps`, else 24)."""
        return float(self.training_fps if self.training_fps is not None else self.default_fps)

    def audio_shape(self, frames: int) -> tuple[int, int]:
        """(audio latent frames, audio token width) for a clip of `frames` pixel frames at
        `frame_rate()`: the pipelines' `round(frames / frame_rate * sample_rate / hop / 4)` and
        latent channels x mel bins / 4 (the audio VAE's constant compressions), from its config."""
        from diffusers.models.autoencoders.autoencoder_kl_ltx2_audio import LATENT_DOWNSAMPLE_FACTOR

        cfg = self.__dict__.get("_audio_cfg")
        if cfg is None:
            cfg = self.__dict__["_audio_cfg"] = read_json(self.info.path / "audio_vae" / "config.json")
        per_second = float(cfg.get("sample_rate", 16000)) / float(cfg.get("mel_hop_length", 160)) / LATENT_DOWNSAMPLE_FACTOR
        length = round(frames / self.frame_rate() * per_second)
        width = int(cfg.get("latent_channels", 8)) * (int(cfg.get("mel_bins", 64)) // LATENT_DOWNSAMPLE_FACTOR)
        return length, width

    def _audio_noise(self, frames: int, generators: list[torch.Generator]) -> torch.Tensor:
        length, width = self.audio_shape(frames)
        return torch.stack([torch.randn(length, width, generator=g, dtype=torch.float32) for g in generators])

    def t2v_conditioning(self, latents: torch.Tensor) -> Conditioning:
        """Text-to-video on random latents (benchmarks, checks): the audio stream `predict` needs,
        drawn for the clip these latents encode (a fixed seed: the values do not matter there)."""
        frames = (latents.shape[2] - 1) * self.temporal_factor + 1
        generators = [torch.Generator().manual_seed(i) for i in range(latents.shape[0])]
        return {"audio_noise": self._audio_noise(frames, generators).to(latents.device)}

    # ---- image-to-video conditioning -------------------------------------------------------------
    def image_crf(self) -> int:
        """The H.264 CRF the i2v pipeline re-compresses its image with (`resolve_default_image_crf`)."""
        from diffusers.pipelines.ltx2.utils import resolve_default_image_crf

        return int(resolve_default_image_crf(self.text_encoder))

    def first_frame_latent(self, first: torch.Tensor) -> torch.Tensor:
        """First frames [B, 3, H, W] in [-1, 1] -> the clean conditioning latent [B, C, 1, h, w]:
        each frame re-compressed at `image_crf()` (`apply_image_conditioning_crf` on its uint8
        pixels, as the pipeline does to its PIL image), back to [-1, 1] as the video processor
        normalises, encoded alone and normalised (`prepare_latents`)."""
        from diffusers.pipelines.ltx2.utils import apply_image_conditioning_crf

        crf = self.image_crf()
        frames = []
        for frame in first:
            u8 = ((frame.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            if crf:
                u8 = apply_image_conditioning_crf(np.ascontiguousarray(u8), crf)
            frames.append(torch.from_numpy(np.ascontiguousarray(u8)).permute(2, 0, 1).float() / 127.5 - 1.0)
        return self.encode_video(torch.stack(frames).unsqueeze(2))

    def _check_mode(self, mode: str) -> None:
        if mode not in ("inpaint", "normal"):
            raise UfoError(f"train.train_mode={mode!r}: LTX-2 trains 'normal' (text-to-video) or 'inpaint' (first frame)")

    def training_conditioning(
        self, pixels: torch.Tensor, latents: torch.Tensor, generators: list[torch.Generator], mode: str,
        start_image_noise: bool = False,
    ) -> tuple[Conditioning, list[str]]:
        """`audio_noise` [B, N_a, D_a] (drawn first, per sample) and, for "inpaint", `first_latent`
        [B, C, 1, h, w]. The pipelines add no noise to the given frame, so `start_image_noise`
        changes nothing."""
        self._check_mode(mode)
        cond: Conditioning = {"audio_noise": self._audio_noise(pixels.shape[2], generators).to(latents.device)}
        if mode != "inpaint":
            return cond, ["t2v"] * len(generators)
        cond["first_latent"] = self.first_frame_latent(pixels[:, :, 0]).to(latents.device, latents.dtype)
        return cond, ["first"] * len(generators)

    def cache_conditioning_items(self, mode: str, start_image_noise: bool = False) -> tuple[str, ...]:
        return ("first_latent",) if mode == "inpaint" else ()

    def encode_cache_conditioning(self, pixels: torch.Tensor, items: tuple[str, ...]) -> dict[str, torch.Tensor]:
        return {"first_latent": self.first_frame_latent(pixels[:, :, 0])[0]} if "first_latent" in items else {}

    def conditioning_from_cache(
        self, items: dict[str, torch.Tensor], generators: list[torch.Generator], mode: str,
        start_image_noise: bool = False, pixel_shape: tuple[int, int, int] | None = None,
    ) -> tuple[Conditioning, list[str]]:
        """The audio noise redrawn from the same generators (first, as uncached), the cached first latent."""
        self._check_mode(mode)
        if pixel_shape is None:
            raise ValueError("LTX-2's cached conditioning needs the clip's pixel shape (its audio length)")
        cond: Conditioning = {"audio_noise": self._audio_noise(pixel_shape[0], generators)}
        if mode != "inpaint":
            return cond, ["t2v"] * len(generators)
        cond["first_latent"] = items["first_latent"]
        return cond, ["first"] * len(generators)

    #: the audio stream's noise: the pipeline draws its own (see the module docstring)
    conditioning_noise_items = ("audio_noise",)

    def pipeline_call_conditioning(self, call: dict[str, Any]) -> Conditioning:
        """`transformer_inputs`' inverse for one call of the pipelines' transformer: text from the
        connectors' outputs, `audio_noise` = the audio input over its noise level (exact at the
        first step, sigma 1), and for image-to-video (per-token timesteps, 0 on latent frame 0) the
        clean `first_latent` unpacked from frame 0's tokens. A guidance batch (the pipelines put the
        negative prompt first and repeat the latents: two identical halves of `hidden_states`) is
        read from its conditional half."""
        hidden = call["hidden_states"]
        half = hidden.shape[0] // 2 if hidden.shape[0] == 2 and torch.equal(hidden[0], hidden[1]) else 0

        def cond(x: torch.Tensor) -> torch.Tensor:
            return x[half:]

        t = cond(call["audio_timestep"]).float().reshape(-1, 1, 1)
        out: Conditioning = {
            "audio_noise": cond(call["audio_hidden_states"]).float() / (t / 1000.0),
            "encoder_hidden_states": cond(call["encoder_hidden_states"]),
            "audio_encoder_hidden_states": cond(call["audio_encoder_hidden_states"]),
            "encoder_attention_mask": cond(call["encoder_attention_mask"]),
        }
        timestep = cond(call["timestep"])
        f, h, w = int(call["num_frames"]), int(call["height"]), int(call["width"])
        if timestep.dim() == 2 and bool((timestep[:, : h * w] == 0).all()):
            out["first_latent"] = _unpack(cond(hidden), f, h, w)[:, :, :1]
        return out

    def loss_mask(self, conditioning: Conditioning, latents: torch.Tensor) -> torch.Tensor | None:
        """Image-to-video: 0 on the given (clean) first latent frame, whose prediction the pipeline
        discards, 1 elsewhere."""
        if "first_latent" not in conditioning:
            return None
        mask = torch.ones(latents.shape[0], 1, *latents.shape[2:], device=latents.device, dtype=latents.dtype)
        mask[:, :, 0] = 0
        return mask

    # ---- the denoiser ----------------------------------------------------------------------------
    def transformer_inputs(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, text: Conditioning,
                           conditioning: Conditioning) -> dict[str, Any]:
        """The keyword arguments the pipelines' first (cond) pass gives the transformer, for these
        latents: packed tokens, the audio stream at the video's noise level, per-token timesteps
        with the first frame clean for i2v, text from the connectors, latent sizes, frame rate."""
        if "audio_noise" not in conditioning:
            raise ValueError("LTX-2's predict needs 'audio_noise' (training_conditioning's audio stream)")
        b, _, f, h, w = noisy_latents.shape
        hidden = noisy_latents
        t = timesteps.reshape(b)
        video_t: torch.Tensor = t
        if "first_latent" in conditioning:
            mask = torch.zeros(b, 1, f, h, w, device=hidden.device, dtype=hidden.dtype)
            mask[:, :, 0] = 1.0
            init = conditioning["first_latent"].to(hidden.dtype).repeat(1, 1, f, 1, 1)
            hidden = init * mask + hidden * (1 - mask)
            video_t = t.unsqueeze(-1) * (1 - _pack(mask).squeeze(-1))
        # the zero audio latent noised at the sample's sigma: (1 - s) * 0 + s * eps
        sigma = (t.float() / 1000.0).view(b, 1, 1)
        audio = (sigma * conditioning["audio_noise"].float()).to(hidden.dtype)
        return dict(
            hidden_states=_pack(hidden), audio_hidden_states=audio,
            encoder_hidden_states=text["encoder_hidden_states"], audio_encoder_hidden_states=text["audio_encoder_hidden_states"],
            timestep=video_t, audio_timestep=t, sigma=t,
            encoder_attention_mask=text["encoder_attention_mask"], audio_encoder_attention_mask=text["encoder_attention_mask"],
            num_frames=f, height=h, width=w, fps=self.frame_rate(), audio_num_frames=audio.shape[1],
            isolate_modalities=False, use_cross_timestep=USE_CROSS_TIMESTEP, return_dict=False,
        )  # fmt: skip

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, text: Conditioning,
                conditioning: Conditioning | None = None) -> torch.Tensor:
        """The video velocity (noise - x0, the trainer's flow target: LTX-2's scheduler steps
        x + (s' - s) * v with the same v) unpacked to [B, C, f, h, w]; the audio output is dropped."""
        if self.transformer is None:
            raise UfoError(f"{self.info.path}: the transformer is not loaded")
        f, h, w = noisy_latents.shape[2:]
        kwargs = self.transformer_inputs(noisy_latents, timesteps, text, conditioning or {})
        video, _audio = self.transformer(**kwargs)
        return _unpack(video, f, h, w)
