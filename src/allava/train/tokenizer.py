"""Stage 0a: train a small byte-level BPE tokenizer from scratch (Phi-2 / CLIP tokenizer stand-in).

Byte-level so that any string (unicode, emoji, odd whitespace) is encodable and decodes back
unchanged. `encode` adds NO bos/eos: callers that need them (LM packing, CLIP captions) add them
explicitly. No `<image>` token is added here; the LLaVA builder adds it, as it must for real LMs.

Special-token ids are fixed: `<s>`=0, `</s>`=1, `<unk>`=2, `<pad>`=3. Keeping eos != 2 matters:
transformers' CLIP text model treats `eos_token_id == 2` as a legacy config and pools at the
highest token id instead of at the eos position.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"
SPECIAL_TOKENS = [BOS, EOS, UNK, PAD]


def _bpe_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=UNK))
    # No normalizer and no prefix space: decode(encode(text)) == text exactly.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`, save it to `out_dir` and return the HF fast tokenizer.

    Deterministic for the same texts and vocab size. `AutoTokenizer.from_pretrained(out_dir)` reloads
    it with bos/eos/unk/pad set.
    """
    tok = _bpe_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,  # ids 0..3 in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is ever <unk>
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        clean_up_tokenization_spaces=False,  # would otherwise rewrite " ." -> "." on decode
        model_max_length=100_000,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(out_dir)
    return hf
