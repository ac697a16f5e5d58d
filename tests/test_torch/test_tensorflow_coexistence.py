"""TensorFlow and Triton both bundle LLVM: importing Triton after TensorFlow aborts the
process. spocu.torch must then keep working on plain ops (with one warning), not crash."""

import importlib.util
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("triton") is None,
    reason="needs both tensorflow and triton installed to provoke the conflict",
)


@pytest.mark.slow
def test_fused_path_falls_back_instead_of_aborting_after_tensorflow():
    code = textwrap.dedent(
        """
        import warnings
        import numpy as np
        import tensorflow  # noqa: F401  -- loaded first, as in a Keras-then-torch program
        import torch
        import spocu.torch as st
        from spocu.core import reference_spocu
        x = torch.linspace(-6, 12, 1 << 16, dtype=torch.float32, requires_grad=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y = st.spocu(x)
            y.sum().backward()
            st.spocu(x * 2)
            st.spocu(x.detach(), backend="inductor")  # forcing the fused path must not abort either
        messages = [str(w.message) for w in caught if "TensorFlow" in str(w.message)]
        assert len(messages) == 1, messages
        np.testing.assert_allclose(y.detach().double().numpy(), reference_spocu(x.detach().double().numpy()),
                                   rtol=2e-5, atol=2e-4)
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")


@pytest.mark.slow
def test_swap_after_tensorflow_swaps_modules_and_refuses_the_check_instead_of_aborting():
    # the swap check's dispatch mode makes torch import Dynamo (hence Triton): it must refuse, naming why
    code = textwrap.dedent(
        """
        import tensorflow  # noqa: F401
        import torch
        from spocu.torch import SPOCU, replace_activations
        net = replace_activations(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()), "relu", SPOCU)
        assert isinstance(net[1], SPOCU) and net(torch.randn(3, 2)).shape == (3, 2)
        try:
            replace_activations(torch.nn.Sequential(torch.nn.ReLU()), "relu", SPOCU,
                                example_inputs=(torch.randn(3, 2),))
        except RuntimeError as error:
            assert "Triton" in str(error) and "TensorFlow" in str(error), error
            print("refused")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("refused")
