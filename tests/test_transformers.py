"""spocu.transformers: hidden_act="spocu" in ACT2FN, save/load in a fresh process, swapped models keep SPOCU or refuse to save."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
import torch
from transformers import BertConfig, BertModel
from transformers.activations import ACT2FN

import spocu.transformers
from spocu.core import reference_spocu
from spocu.torch import SPOCU, replace_activations

SRC = Path(__file__).resolve().parents[1] / "src"
IDS = torch.tensor([[1, 7, 3, 9, 4, 2]])


def _config(**kwargs) -> BertConfig:
    return BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                      max_position_embeddings=16, **kwargs)  # fmt: skip


def _bert(**kwargs) -> BertModel:
    torch.manual_seed(0)
    return BertModel(_config(**kwargs)).eval()


@pytest.mark.parametrize(("name", "c"), [("spocu", float("inf")), ("spocu_c1", 1.0)])
def test_hidden_act_builds_spocu(name, c):
    act = _bert(hidden_act=name).encoder.layer[0].intermediate.intermediate_act_fn
    assert isinstance(act, SPOCU) and act.c == c and not act.learnable
    x = torch.linspace(-3, 3, 25, dtype=torch.float64)
    torch.testing.assert_close(act(x), torch.as_tensor(reference_spocu(x.numpy(), c=c)), rtol=1e-12, atol=1e-12)


def test_register_is_idempotent_and_never_overwrites(monkeypatch):
    spocu.transformers.register()
    assert isinstance(ACT2FN["spocu"], SPOCU)
    monkeypatch.setitem(ACT2FN, "spocu_c1", torch.nn.ReLU)
    with pytest.raises(ValueError, match=r"ACT2FN\['spocu_c1'\] is already .*ReLU.*not overwriting"):
        spocu.transformers.register()


def _reload_in_fresh_process(directory: Path) -> np.ndarray:
    # the same intra-op thread count as this process: a matmul's last bits depend on it (an earlier test in this
    # worker may have changed it), and the comparison is of the saved model, not of the thread count
    script = (
        "import sys, numpy as np, torch\n"
        f"torch.set_num_threads({torch.get_num_threads()})\n"
        "import spocu.transformers\n"
        "from transformers import BertModel\n"
        f"model = BertModel.from_pretrained({str(directory)!r}).eval()\n"
        "with torch.no_grad():\n"
        f"    out = model(torch.tensor({IDS.tolist()})).last_hidden_state\n"
        f"np.save({str(directory / 'out.npy')!r}, out.numpy())\n"
        "print(type(model.encoder.layer[0].intermediate.intermediate_act_fn).__name__)\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "SPOCU"
    return np.load(directory / "out.npy")


def _output(model: BertModel) -> np.ndarray:
    with torch.no_grad():
        return model(IDS).last_hidden_state.numpy()


@pytest.mark.slow
def test_save_pretrained_from_pretrained_in_a_fresh_process(tmp_path):
    model = _bert(hidden_act="spocu_c1")
    model.save_pretrained(tmp_path)
    np.testing.assert_array_equal(_reload_in_fresh_process(tmp_path), _output(model))


@pytest.mark.slow
def test_a_swapped_model_keeps_spocu_through_save_and_load(tmp_path):
    model = _bert()  # hidden_act="gelu": GELUActivation modules
    plain = _output(model)
    report = replace_activations(model, "gelu", lambda: SPOCU(c=1.0), example_inputs=IDS, report=True)
    assert report.summary() == "2 of 2 gelu (2 modules, 0 functional calls)"
    assert model.config.hidden_act == "spocu_c1"
    swapped = _output(model)
    assert not np.allclose(swapped, plain)
    model.save_pretrained(tmp_path)
    np.testing.assert_array_equal(_reload_in_fresh_process(tmp_path), swapped)


@pytest.mark.parametrize(
    "new",
    [lambda: SPOCU(learnable=True), lambda: SPOCU(alpha=2.0), lambda: SPOCU(c=2.0)],
)
def test_a_swap_the_config_cannot_say_refuses_to_save(tmp_path, new):
    model = _bert()
    replace_activations(model, "gelu", new)
    assert model.config.hidden_act == "gelu"
    with pytest.raises(
        RuntimeError,
        match=r"save_pretrained: .*not one registered name.*from_pretrained would silently rebuild",
    ):
        model.save_pretrained(tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_swap_the_config_would_change_elsewhere_refuses_to_save(tmp_path):
    model = _bert()
    model.encoder.layer[0].intermediate.intermediate_act_fn = SPOCU(c=1.0)  # set by hand: not in the config
    replace_activations(model, "gelu", SPOCU)  # layer 1 only, c = inf: "spocu" would rebuild layer 0 with c = inf
    assert model.config.hidden_act == "gelu"
    with pytest.raises(
        RuntimeError,
        match=r"would build other modules at encoder\.layer\.0\.intermediate\.intermediate_act_fn",
    ):
        model.save_pretrained(tmp_path)


def test_swapping_a_part_of_a_transformers_model_warns_that_save_pretrained_will_not_keep_it():
    model = _bert()
    with pytest.warns(UserWarning, match="BertLayer is a part of a transformers model"):
        replace_activations(model.encoder.layer[0], "gelu", SPOCU)
