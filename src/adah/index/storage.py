"""Storage: an index folder opened for search (the files of :mod:`adah.index.store`, checked)
and the model it was built with.
"""

from __future__ import annotations

from pathlib import Path

import torch

from adah.data.vocab import Vocabulary
from adah.errors import AdahError
from adah.index import store


def load_model_for(folder: Path, manifest: dict, model, device: torch.device, vocab: Vocabulary | None):
    """(model, config, checkpoint payload, checkpoint path) of the index's model, after checking
    its fingerprint and vocabulary against the manifest."""
    from adah.training.checkpoint import load_model, text_vocabulary_of
    from adah.index.build import model_fingerprint

    recorded = store.recorded_path(manifest["model"], "checkpoint", folder)
    path = recorded if model == "auto" else Path(model)
    if model == "auto" and (recorded is None or not path.is_file()):
        raise AdahError(f"{folder}: the model it was built with ({recorded}) is not there; pass the checkpoint "
                        "explicitly (--checkpoint / Index.load(..., model=PATH))")
    net, cfg, payload = load_model(path, device, lazy_image=True)  # a text query never builds the image backbone
    got, want = model_fingerprint(net), manifest["model"]["fingerprint"]
    if got != want:
        raise AdahError(f"{path}: model fingerprint {got} differs from the index's {want}: the index was built with "
                        "another model (or other weights); rebuild it from this checkpoint (adah index build --checkpoint)")
    saved = text_vocabulary_of(payload, str(path))
    if saved is not None and vocab is not None and saved.tokens != vocab.tokens:
        raise AdahError(f"{path}: its text vocabulary differs from the one stored in the index {folder}")
    return net, cfg, payload, path
