"""Experiments built on training and evaluation: the attention study (:mod:`adah.experiments.study`:
variants of G x seeds x code lengths on one saved split, validation-only selection), the ablation
(:mod:`adah.experiments.ablation`: attention none / image / text / both) and the comparison with
baselines (:mod:`adah.experiments.benchmark`). Each is a command of ``adah``; they import
training, never the other way round.
"""
