import os

# Tests must never reach a model hub or the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
