import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))  # tests' own helpers: reference.py, spm_fixtures.py
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "architecture"))  # import_rules.py
