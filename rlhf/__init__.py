"""InstructGPT-style RLHF training: sampling, SFT, reward model and PPO, on torch and transformers."""

import os

# Every model and tokenizer loads from a local folder; never reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
# Our own progress bars say what is happening; transformers' load reports and shard bars would bury them.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

__version__ = "0.1.0"
