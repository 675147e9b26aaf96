"""Pretrained weights: `jwsol.weights.torchvision` ports torchvision state_dicts to Flax.

NOTE: this package imports none of its modules, so `python -m jwsol.weights.torchvision` runs
without runpy's "found in sys.modules" warning; import the module itself.
"""
