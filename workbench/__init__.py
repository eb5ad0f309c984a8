"""rl workbench: RL fine-tuning experiments on entropy, length and cost shaping (library part)."""

import os

__version__ = "0.1.0"

# No telemetry from the Hugging Face libraries: TRL's trainer sends it from a background thread at construction
# (huggingface_hub.send_telemetry), which does a DNS lookup; nothing here may reach the network at run time, and in a
# joblib worker of `rl sweep` that lookup segfaulted once and took the sweep down (SIGSEGV in getaddrinfo).
# huggingface_hub reads the variable when it is first imported, so it is set here, before any of it is; a value the
# user set is kept.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
