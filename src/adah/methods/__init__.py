"""Training methods: one registry, :data:`METHODS` (config key ``train.method``), one module each.

* ``adah``: the trainer's own objective, ADAH and its ablations (``model.attention``; ``none`` is
  the deep baseline without attention);
* ``dcmh``: DCMH (Jiang & Li, CVPR 2017), :mod:`adah.methods.dcmh`;
* ``djsrh``: DJSRH (Su, Zhong, Zhang, ICCV 2019), unsupervised, :mod:`adah.methods.djsrh`;
* ``ssah``: SSAH (Li et al., CVPR 2018), label network and modality discriminators, :mod:`adah.methods.ssah`.

:func:`train` trains any of them (``adah.training.train`` with :func:`build_method` as the
trainer's ``method`` hook; the trainer sits a layer below and never imports this package).
Adding a method is one module that subclasses :class:`Method` and calls ``METHODS.add`` with a
:class:`MethodSpec`, plus its import below. docs/methods.md describes each with its deviations.
"""

from adah.methods.base import METHODS, Method, MethodSpec, build_method, method_overrides, train

METHODS.add("adah", MethodSpec("ADAH", None))

from adah.methods import dcmh, djsrh, ssah  # noqa: E402,F401  (each registers itself)

__all__ = ["METHODS", "Method", "MethodSpec", "build_method", "method_overrides", "train"]
