import os
import sys

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))  # tests' own helpers: reference.py, spm_fixtures.py, ...
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "architecture"))  # import_rules.py


@pytest.fixture(scope="module")
def one_torch_thread():
    """On 2 cores, torch's thread pool next to TensorFlow's makes each tiny forward ~20x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
