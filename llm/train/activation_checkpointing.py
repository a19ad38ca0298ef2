"""Activation checkpointing per transformer block (`train.activation_checkpointing`).

A block keeps only its input for backward and recomputes the rest when backward reaches it: the
activations held at the peak shrink from every block's internals to one tensor per block, for about a
third more compute (one more forward of each block). The block's own forward is swapped on the
instance rather than wrapping the module, so parameter names, checkpoints and FSDP's units are
unchanged; FSDP gathers a block's weights before its backward, which is when the recompute runs.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from llm.model import Block


def checkpointed(forward, *args, **kwargs):
    if not torch.is_grad_enabled():  # evaluation and generation keep nothing for backward anyway
        return forward(*args, **kwargs)
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def apply_activation_checkpointing(model: nn.Module) -> int:
    """Checkpoint every Block of `model`; returns how many."""
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    for block in blocks:
        if not getattr(block, "activation_checkpointed", False):
            block.forward = functools.partial(checkpointed, block.forward)
            block.activation_checkpointed = True
    return len(blocks)
