"""Every config file and variant loads; loading imports no TensorFlow and no jwsol module; the
variant grammar of configs/common.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from configs import common
from jwsol.training import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VARIANTS = {
    "sliding_window": ("", "mnist", "smoke", "steps=7"),
    "localizer": (
        "", "robust", "epochs2", "epochs30", "epochs45", "robust,epochs45", "epochs=3",
        "scenes", "scenes_robust", "scenes,robust", "smoke",
    ),
    "wsddn": ("", "paper", "scenes", "smoke", "scenes,steps=2000,res=256", "scenes,scratch"),
    "oicr": ("", "scenes", "smoke", "scenes,k=2,tta", "scenes,k=0,scratch", "smoke,steps=3"),
    "resnet_tinyimagenet": ("", "shuffled", "fashion_mnist", "smoke"),
    "resnet_voc": ("", "resize448", "tfds", "scenes", "smoke"),
}  # fmt: skip
CASES = [(name, v) for name, variants in VARIANTS.items() for v in variants]


def test_every_config_file_is_listed():
    files = {f[:-3] for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".py")}
    assert files - {"__init__", "common"} == set(VARIANTS)


@pytest.mark.parametrize("name, variant", CASES)
def test_variant_loads_locked(name, variant):
    config = config_lib.load(os.path.join(ROOT, "configs", f"{name}.py:{variant}"))
    assert config.task and config.train.batch_size > 0 and config.is_locked
    if "smoke" in variant:
        assert config.train.num_steps <= 6 and config.train.num_epochs == 0
        assert config.train.eval_every_epochs == config.train.checkpoint_every_epochs == 0


def test_scratch_drops_the_pretrained_trunk():
    for name in ("wsddn", "oicr"):
        pre = config_lib.load(os.path.join(ROOT, f"configs/{name}.py:scenes"))
        scratch = config_lib.load(os.path.join(ROOT, f"configs/{name}.py:scenes,scratch"))
        assert pre.pretrained.make == "fashion_mnist" and pre.pretrained.path
        assert scratch.pretrained.from_scratch and not scratch.pretrained.path


def test_modifiers_reach_the_fields():
    c = config_lib.load(os.path.join(ROOT, "configs/wsddn.py:scenes,steps=2000,res=256"))
    assert (c.train.num_steps, c.data.image_size, c.data.source) == (2000, 256, "scenes")
    # The pretrained trunk is made for objects at the new scale (320 px canvases: 80-160 px).
    assert (c.pretrained.recipe.min_object_size, c.pretrained.recipe.max_object_size) == (64, 128)
    o = config_lib.load(os.path.join(ROOT, "configs/oicr.py:scenes,res=256"))
    assert o.data.image_size == 256 and o.pretrained.path == c.pretrained.path
    c = config_lib.load(os.path.join(ROOT, "configs/localizer.py:robust,epochs=3"))
    assert c.model.pooling == "avg" and c.train.num_epochs == 3.0
    assert c.train.eval_every_epochs == c.train.checkpoint_every_epochs == 2.0
    with pytest.raises(ValueError, match="unknown variant 'smoke,bogus'.*allowed: mnist, smoke"):
        config_lib.load(os.path.join(ROOT, "configs/sliding_window.py:smoke,bogus"))


_LOAD_ALL = """
import importlib.util, sys
for path in sys.argv[1:]:
    file, _, variant = path.partition(':')
    spec = importlib.util.spec_from_file_location('c', file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.get_config(variant or None)
bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'jwsol', 'jax'))
print(bad)
"""


def test_loading_configs_imports_no_tensorflow_and_no_jwsol(tmp_path):
    """As ml_collections.config_flags loads a file: by path, from any working directory."""
    paths = [os.path.join(ROOT, "configs", f"{name}.py:{v}") for name, v in CASES]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", _LOAD_ALL, *paths], cwd=tmp_path, env=env,
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "[]"


def test_config_lib_load_imports_no_task_and_no_tensorflow():
    code = (
        "import sys; from jwsol.training import config as c; "
        "c.load('configs/wsddn.py:smoke'); c.load('configs/resnet_voc.py'); "
        "print(sorted(m for m in sys.modules if m.startswith(('tensorflow', 'jwsol.tasks'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# parse_arg --------------------------------------------------------------------------------------


def test_parse_arg_base_and_typed_modifiers():
    a = common.parse_arg("scenes,steps=2000,res=256,lr=0.5", bases=("scenes",), steps=0, res=0,
                         lr=1.0, name="x", flag=False)  # fmt: skip
    assert a.to_dict() == {
        "base": "scenes", "steps": 2000, "res": 256, "lr": 0.5, "name": "x", "flag": False,
        "given": ("steps", "res", "lr"),
    }  # fmt: skip
    assert isinstance(a.steps, int) and isinstance(a.lr, float)
    b = common.parse_arg(" flag , name=y,flag=false", flag=True, name="")
    assert (b.base, b.flag, b.name, b.given) == ("", False, "y", ("flag", "name", "flag"))
    assert common.parse_arg(None, steps=3).to_dict() == {"base": "", "given": (), "steps": 3}
    assert common.parse_arg("", bases=("a",)).base == ""


def test_parse_arg_aliases_expand_in_place():
    aliases = {"sr": "scenes,robust", "e45": "epochs=45"}
    a = common.parse_arg("sr,e45", bases=("scenes",), aliases=aliases, robust=False, epochs=0.0)
    assert (a.base, a.robust, a.epochs) == ("scenes", True, 45.0)


@pytest.mark.parametrize(
    "arg, problem",
    [
        ("bogus", "unknown word 'bogus'"),
        ("scenes,smoke", "two base words"),
        ("steps", "'steps' needs a value"),
        ("steps=x", "'x' is not a int"),
        ("flag=maybe", "'maybe' is not a bool"),
        ("nope=1", "unknown word 'nope'"),
    ],
)
def test_parse_arg_errors_name_the_allowed_words(arg, problem):
    with pytest.raises(ValueError) as e:
        common.parse_arg(arg, bases=("scenes", "smoke"), steps=0, flag=False)
    assert f"unknown variant {arg!r}: {problem}" in str(e.value)
    assert "allowed: scenes, smoke, steps=0, flag=False" in str(e.value)
