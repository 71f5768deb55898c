import os
import tempfile

# Tests must never reach a model hub or the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Imported / recorded actions go to a throw-away folder, never the user's own (child processes
# inherit it).
os.environ["LIVEAVATAR_DATA_DIR"] = tempfile.mkdtemp(prefix="liveavatar-test-")
