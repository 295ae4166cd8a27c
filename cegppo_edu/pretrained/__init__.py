"""Real pretrained models that run on a CPU with no model hub (chapter 5): SmolLM2-135M-Instruct.

Importing the package registers chapter 5's task and preset with the trainer (``smollm2.py``).
"""

from . import smollm2  # noqa: F401  (registers the task and the preset)
