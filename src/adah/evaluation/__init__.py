"""Evaluation: retrieval metrics on codes (:mod:`adah.evaluation.metrics`: MAP, tie-aware MAP,
top-K, PR, R@K), encoding a split with a model (:mod:`adah.evaluation.retrieval`), evaluating a
saved checkpoint (:mod:`adah.evaluation.checkpoint_eval`) and plots (:mod:`adah.evaluation.plots`)."""
