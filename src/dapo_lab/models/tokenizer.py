"""A byte-level tokenizer for the tiny model, built locally with `tokenizers` (no downloads).

Every one of the 256 bytes is a token (in GPT-2's byte-to-unicode form) and the merge list is empty, so any
string round-trips and one character of the ASCII task is one token. The pre-tokenizer, normalizer and
decoder are exactly Qwen2's: with transformers 5.x, `AutoTokenizer` on a `model_type=qwen2` folder returns
`Qwen2Tokenizer`, which ignores the saved pipeline and rebuilds Qwen2's own from vocab + merges. A simpler
character tokenizer (WordLevel) silently loses spaces and newlines after that reload; this one does not,
because the rebuilt pipeline is the one it already had.
"""

from __future__ import annotations

from functools import lru_cache

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE
from transformers import PreTrainedTokenizerFast

# Qwen2's split regex (transformers' `tokenization_qwen2.PRETOKENIZE_REGEX`).
QWEN2_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
EOS_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (EOS_TOKEN, IM_START, IM_END)
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 bytes to printable unicode characters.

    >>> m = bytes_to_unicode()
    >>> len(set(m.values())), m[ord("a")], m[ord(" ")], m[ord("\\n")]
    (256, 'a', 'Ġ', 'Ċ')
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def build_byte_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny model's tokenizer: ids 0-255 are the bytes, then `<|endoftext|>` (eos and pad),
    `<|im_start|>`, `<|im_end|>`; a Qwen-style chat template.

    >>> tok = build_byte_tokenizer()
    >>> ids = tok("3+5=8\\nAnswer: 8")["input_ids"]
    >>> len(ids), tok.decode(ids), len(tok), tok.eos_token_id == tok.pad_token_id == 256
    (15, '3+5=8\\nAnswer: 8', 259, True)
    """
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    core = Tokenizer(BPE(vocab=vocab, merges=[], unk_token=None, fuse_unk=False, byte_fallback=False))
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        additional_special_tokens=[IM_START, IM_END],
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok
