"""Pretrained weights: `torchvision` (key tables, port, CLI), `store` (files), `merge` (into a model).

NOTE: this package imports none of its modules, so `python -m jwsol.weights.torchvision` runs
without runpy's "found in sys.modules" warning; import the module itself.
"""
