"""The GPU chapter: math data, R1-Distill prompts, the math-verify reward, the vLLM sampler, evaluation and the
presets (importing the package registers them with the trainer)."""

from . import presets  # noqa: F401  (registers the plug-ins and presets)
