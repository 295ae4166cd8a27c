"""Prompt formatting for DeepSeek-R1-Distill models on math problems (DESIGN.md, "Known facts").

The conventions of the R1-Distill model cards, which the CE-GPPO authors also train with:

- no system prompt;
- one user turn: the problem, a newline, then ``R1_MATH_INSTRUCTION``;
- the chat template's generation prompt ends with ``<think>\\n``, so the model starts inside its reasoning.
  Older revisions of the tokenizer's template do not add it; ``format_prompt`` appends it when missing so
  that every run starts the response at the same place.

That is the default protocol, ``"model-card"``. The CE-GPPO authors prompt differently: their training data
and AIME files (Kwai-Klear/CE-GPPO, ``benchmarks/aime960_math_verify.json``) carry the bare problem as the user
turn, with no instruction, and they grade the whole response (``math_reward.grade_response_authors``). The
``"authors"`` protocol does the same, for numbers comparable with theirs (``encode_authors_prompt``,
``cegppo eval --protocol authors``).

A tokenizer without a chat template (the tiny character-level tokenizer of the smoke runs) gets the plain
``FALLBACK_TEMPLATE`` below, which keeps the same three parts: the user turn, an assistant marker, and the
``<think>\\n`` prefill.
"""

from __future__ import annotations

R1_MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
THINK_PREFILL = "<think>\n"
THINK_END = "</think>"
FALLBACK_TEMPLATE = "User: {message}\nAssistant: " + THINK_PREFILL


PROTOCOLS = ("model-card", "authors")  # how a problem is prompted and graded; see the module docstring


def math_user_message(problem: str, protocol: str = "model-card") -> str:
    """The user turn: ``problem + "\\n" + instruction`` (the model card's), or the bare problem (the authors')."""
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError(f"problem={problem!r} must be a non-empty string")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r} is not allowed; choose one of {', '.join(PROTOCOLS)}")
    return problem if protocol == "authors" else f"{problem}\n{R1_MATH_INSTRUCTION}"


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def format_prompt(problem: str, tokenizer=None, ensure_think_prefill: bool = True,
                  protocol: str = "model-card") -> str:
    """The full prompt text for ``problem``: the tokenizer's chat template with the generation prompt, or
    ``FALLBACK_TEMPLATE`` when the tokenizer is ``None`` or has no template."""
    message = math_user_message(problem, protocol)
    if tokenizer is None or not has_chat_template(tokenizer):
        return FALLBACK_TEMPLATE.format(message=message)
    text = tokenizer.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                         add_generation_prompt=True)
    if ensure_think_prefill and not text.endswith(THINK_PREFILL):
        text += THINK_PREFILL
    return text


def encode_r1_prompt(problem: str, tokenizer, ensure_think_prefill: bool = True,
                     protocol: str = "model-card") -> list[int]:
    """Token ids of ``format_prompt``. The template already writes the BOS token, so none is added here."""
    text = format_prompt(problem, tokenizer, ensure_think_prefill, protocol)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_authors_prompt(problem: str, tokenizer) -> list[int]:
    """The CE-GPPO authors' prompt: the bare problem as the one user turn (their data carries no instruction),
    through the chat template. ``--set prompt_encoder=cegppo_edu.gpu.prompts:encode_authors_prompt``."""
    return encode_r1_prompt(problem, tokenizer, protocol="authors")


def answer_section(response: str) -> str | None:
    """The text after the last ``</think>``, or ``None`` when the reasoning never closed (truncated)."""
    cut = response.rfind(THINK_END)
    if cut < 0:
        return None
    return response[cut + len(THINK_END):]
