"""R1-Distill prompt formatting (cegppo_edu.gpu.prompts) with a locally built tokenizer, with and without a chat
template. The template below is a small stand-in written for this test in the layout of the R1-Distill one
(BOS, user marker, message, assistant marker, ``<think>\\n`` prefill); it is not the model's file."""

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from cegppo_edu.gpu.prompts import (FALLBACK_TEMPLATE, R1_MATH_INSTRUCTION, THINK_PREFILL, answer_section,
                                encode_r1_prompt, format_prompt, math_user_message)

R1_LIKE_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}<U>{{ m['content'] }}"
                    "{% endif %}{% endfor %}{% if add_generation_prompt %}<A><think>\n{% endif %}")
OLD_TEMPLATE = R1_LIKE_TEMPLATE.replace("<A><think>\n", "<A>")  # older revisions did not pre-fill <think>


def char_tokenizer(template=None):
    chars = sorted(set("".join(chr(c) for c in range(32, 127)) + "\n"))
    vocab = {"<s>": 0, "<unk>": 1, **{c: i + 2 for i, c in enumerate(chars)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", unk_token="<unk>")
    tok.chat_template = template
    return tok


def test_user_message_is_problem_newline_instruction():
    assert math_user_message("What is 2+2?") == "What is 2+2?\n" + R1_MATH_INSTRUCTION
    assert R1_MATH_INSTRUCTION == "Please reason step by step, and put your final answer within \\boxed{}."
    with pytest.raises(ValueError, match="non-empty"):
        math_user_message("  ")


def test_chat_template_is_used_with_generation_prompt_and_no_system_turn():
    text = format_prompt("What is 2+2?", char_tokenizer(R1_LIKE_TEMPLATE))
    assert text == "<s><U>What is 2+2?\n" + R1_MATH_INSTRUCTION + "<A><think>\n"


def test_think_prefill_is_added_when_the_template_lacks_it():
    tok = char_tokenizer(OLD_TEMPLATE)
    assert format_prompt("1+1?", tok).endswith("<A>" + THINK_PREFILL)
    assert format_prompt("1+1?", tok, ensure_think_prefill=False).endswith("<A>")


def test_fallback_without_template_and_without_tokenizer():
    expected = FALLBACK_TEMPLATE.format(message=math_user_message("1+1?"))
    assert format_prompt("1+1?", char_tokenizer(None)) == expected
    assert format_prompt("1+1?", None) == expected
    assert expected.endswith("Assistant: <think>\n")


def test_encode_adds_no_second_bos():
    tok = char_tokenizer(R1_LIKE_TEMPLATE)
    ids = encode_r1_prompt("1+1?", tok)
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert "".join(tok.convert_ids_to_tokens(ids)) == format_prompt("1+1?", tok)


@pytest.mark.parametrize("response, section", [
    ("<think>\nmaybe 3</think> The answer is \\boxed{4}.", " The answer is \\boxed{4}."),
    ("a</think>b</think>c", "c"),  # the last </think> counts
    ("<think>\nstill thinking \\boxed{4}", None),  # truncated reasoning: nothing to grade
])
def test_answer_section_is_the_text_after_the_last_think_end(response, section):
    assert answer_section(response) == section


def test_the_authors_prompt_is_the_bare_problem_through_the_chat_template():
    """Their data (MathSub-30K, their AIME files) carries the problem alone as the user turn: no instruction."""
    from cegppo_edu.gpu.prompts import encode_authors_prompt
    tok = char_tokenizer(R1_LIKE_TEMPLATE)
    ids = encode_authors_prompt("What is 2+2?", tok)
    assert "".join(tok.convert_ids_to_tokens(ids)) == "<s><U>What is 2+2?<A><think>\n"
    assert math_user_message("What is 2+2?", "authors") == "What is 2+2?"
    with pytest.raises(ValueError, match="protocol='mine'"):
        math_user_message("1+1?", "mine")
