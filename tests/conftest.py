import os
import tempfile

from hypothesis import settings

# Tests must never reach a model hub or the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Imported / recorded actions go to a throw-away folder, never the user's own (child processes
# inherit it).
os.environ["LIVEAVATAR_DATA_DIR"] = tempfile.mkdtemp(prefix="liveavatar-test-")
# CI is reproducible: the same examples every run (derandomize), no example database carried
# between runs. For a longer hunt by hand: HYPOTHESIS_PROFILE=explore pytest tests/fuzz
# (random examples, ten times as many: tests/fuzzing.py; failures kept in .hypothesis/).
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
