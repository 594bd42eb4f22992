"""Shared state of one bench run: the preset, a scratch folder, the model folder (written once),
the device, the rounds. Cases ask it for what they need; expensive things are built once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ufo_video.bench.presets import Preset, write_dataset, write_model


@dataclass
class Workspace:
    preset: Preset
    root: Path
    device: torch.device
    rounds: int
    warmup: int = 1  # untimed calls of each side before timing (0 in smoke mode)
    _model: Path | None = None
    _cache: dict[str, Any] = field(default_factory=dict)

    @property
    def model_dir(self) -> Path:
        if self._model is None:
            self._model = write_model(self.preset, self.root / "model")
        return self._model

    def dataset(self, name: str, **kwargs: Any) -> Path:
        """Metadata path of a generated dataset (written the first time it is asked for)."""
        key = f"data:{name}"
        if key not in self._cache:
            self._cache[key] = write_dataset(self.root / "data" / name, **kwargs)
        return self._cache[key]

    def train_config(self, data_meta: Path, **overrides: Any):
        """A CPU/GPU training config on the preset's model and clip size (fp32 on CPU)."""
        from ufo_video.config import build_config

        h, w, f = self.preset.train_size
        on_gpu = self.device.type == "cuda"
        sections: dict[str, dict[str, Any]] = {
            "model": {"pretrained_model_name_or_path": str(self.model_dir), "device": str(self.device),
                      "weight_dtype": "bf16" if on_gpu else "fp32"},
            "data": {"train_data_dir": str(data_meta.parent), "train_data_meta": str(data_meta),
                     "image_sample_size": max(h, w), "video_sample_size": max(h, w), "token_sample_size": max(h, w),
                     "video_sample_n_frames": f, "enable_bucket": False, "dataloader_num_workers": 0,
                     "text_drop_ratio": 0.0},
            "lora": {"rank": self.preset.lora_rank, "network_alpha": self.preset.lora_rank},
            "train": {"output_dir": str(self.root / "train-out"), "train_batch_size": 1, "max_train_steps": 10_000,
                      "mixed_precision": "bf16" if on_gpu else "no", "gradient_checkpointing": self.warmup > 0,
                      "report_to": "none", "seed": 42,
                      # both sides of the cached-step case train without the pipeline's start-image
                      # noise: with it the cached step also VAE-encodes freshly noised given frames
                      # every step (train.start_image_noise), and the case measures the step on
                      # finished cached tensors
                      "start_image_noise": "off"},
        }  # fmt: skip
        for dotted, value in overrides.items():
            section, key = dotted.split("__", 1)
            sections[section][key] = value
        return build_config(sections, source="bench")
