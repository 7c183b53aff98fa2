"""A model loaded for text queries builds its image branch on first use, once, even when several
request threads ask for it at the same moment (found as a KeyError 'image' and an HTTP 500 under
concurrent image uploads after the merge of the lazy branch and the decoder pool)."""

import threading
from pathlib import Path

from adah.training.checkpoint import load_model

OLD = Path(__file__).parent / "data" / "checkpoint_main_b02dfe0.pt"


def test_concurrent_first_uses_build_one_image_branch():
    model, _, _ = load_model(OLD, lazy_image=True)
    start, got, errors = threading.Barrier(8), [], []

    def use():
        start.wait()
        try:
            got.append(model.image.backbone)
        except Exception as exc:  # noqa: BLE001 - the test reports what went wrong
            errors.append(repr(exc))

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(got) == 8 and all(b is got[0] for b in got)
    assert model.image.backbone is got[0]
