import os
import sys

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # xdist runs a worker per core: one compute thread each (also in the processes tests start), rather than
    # every worker's TensorFlow and torch pools spinning on all the cores
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))  # tests' own helpers: reference.py, spm_fixtures.py, ...
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "architecture"))  # import_rules.py


@pytest.fixture(scope="session", autouse=True)
def kzoo_cache(tmp_path_factory):
    """kzoo's disk cache (kzoo.io.cache: conversions' and text-in exports' tables) in this run's temp dir, shared
    by xdist's workers and the processes tests start: never the user's ~/.cache, nothing from an earlier run."""
    base = tmp_path_factory.getbasetemp()
    os.environ["KZOO_CACHE_DIR"] = str((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "kzoo-cache")


@pytest.fixture(scope="module")
def one_torch_thread():
    """On 2 cores, torch's thread pool next to TensorFlow's makes each tiny forward ~20x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# scripts/test.sh runs xdist with --dist loadscope: each module on one worker, so its module-scoped fixtures
# (converted models, exports: tens of seconds each) are built once, not on both workers. Modules go out in
# collection order, so the longest go first (measured test time, 2 cores); the rest keep theirs.
LONGEST_FIRST = [
    "export/test_export.py", "training/test_distribute.py", "training/test_train.py",
    "tokenizers/test_sentencepiece.py", "pipelines/test_generation.py", "pipelines/test_task_exports.py",
    "training/test_train_cli.py", "pipelines/test_sentence_embedding.py", "training/test_train_qa.py",
    "pipelines/test_classification_pipelines.py", "runtime/test_runners.py", "converters/test_new_heads.py",
    "models/test_parity.py", "cli/test_cli_errors.py",
]


@pytest.hookimpl(trylast=True)  # (after pytest groups each module's tests by fixture parameters)
def pytest_collection_modifyitems(items):
    here = os.path.dirname(__file__)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(os.path.relpath(item.path, here).replace(os.sep, "/"), len(rank)))
