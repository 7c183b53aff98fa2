"""adah.utils.registry: the one registry every kind of part uses."""

import pytest

from adah.errors import AdahError
from adah.utils.registry import Registry


def test_registry_keeps_order_refuses_duplicates_and_names_the_choices():
    reg = Registry("thing", key="model.thing")
    reg.add("b", 2)

    @reg.register("a")
    def build():
        return 1

    assert reg.names() == ["b", "a"] and reg.get("a") is build and "a" in reg and len(reg) == 2
    with pytest.raises(ValueError, match="already registered"):
        reg.add("a", 3)
    with pytest.raises(AdahError, match=r"model.thing must be one of b, a, got 'c'"):
        reg.get("c")
    reg.remove("b")
    assert reg.names() == ["a"]
    with pytest.raises(AdahError, match=r"unknown widget 'x'; available: \(none registered\)"):
        Registry("widget").get("x")
