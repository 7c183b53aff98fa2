"""Utilities with no knowledge of models or data: atomic files (:mod:`adah.utils.fileio`), locks,
progress bars, runtime set-up, distributed helpers and the one image decoder."""
