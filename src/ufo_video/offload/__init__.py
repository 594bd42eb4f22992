"""Memory savers that move tensors between host and device while a model runs.

`block_swap`: N transformer blocks keep their frozen weights in (pinned) host memory and are copied
into a small ring of device buffers just before they run. `activations`: the inputs saved by
gradient checkpointing are kept in host memory until the backward pass recomputes the block.
Generic: imports nothing from train/, infer/, ui/ or any model family (the family says which
ModuleList holds its blocks: `ModelAdapter.swap_blocks`).
"""
