"""Recipes that chain the library end to end: ``adah demo`` (:mod:`adah.recipes.demo`) and
``adah fit`` on a folder of photos (:mod:`adah.recipes.fit`)."""
