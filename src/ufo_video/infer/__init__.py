"""Inference: text/image-to-video with UFO LoRAs, weight sweeps, and the guide's predict scripts.

Modules: `settings` (config + flags -> GenerationSettings / VideoRequest), `engine`
(VideoGenerator: model, LoRAs, memory mode, step cache), `run` (output names, the generate loop,
predict-script entry), `sweep`, `prompts` (batch files), `outputs` (images in, videos and
sidecars out), `cache` (First Block Cache), `cli` (`ufo-video generate | sweep`).
"""
