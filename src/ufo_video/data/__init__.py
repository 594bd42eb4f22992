"""Training data: metadata, safe decoding, UFO static clips, buckets and the trainer's loader.

Entry point for the trainer: ``ufo_video.data.loader.build_train_loader``.
"""
