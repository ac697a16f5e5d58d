import os
import sys

# Keep TensorFlow/JAX quiet and on the CPU in tests; Keras's backend comes from the environment.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

sys.path.insert(0, os.path.dirname(__file__))
