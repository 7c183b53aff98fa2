"""Feature caches: backbone maps of a photo collection extracted once and read back by every run
(:mod:`adah.features.image_cache`), and sentence-encoder embeddings of the text
(:mod:`adah.features.text_cache`). Imports nothing above data and models."""
