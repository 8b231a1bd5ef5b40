"""Real tokenizers trained on a few lines of text: a SentencePiece model (SigLIP) and a byte-level
BPE with CLIP's end-of-word suffix. Small, deterministic, and loadable by transformers exactly
like the hub's files."""

from __future__ import annotations

import io
import json
from pathlib import Path

TRAINING_TEXT = """\
This is a photo of a cat.
This is a photo of a dog.
This is a photo of two cats sleeping on a sofa.
a plane flying over the mountains at sunset
a red car parked on a city street
a beach with palm trees and blue water
a bowl of fruit on a wooden table
a person riding a bicycle in the rain
an anime girl with long hair and a smile
a drawing of a house with a garden
a black and white portrait of an old man
a close-up of a flower with a bee
snow covered forest in winter
a plate of pasta with tomato sauce
a laptop and a cup of coffee on a desk
children playing football in a park
a night sky full of stars
a boat on a calm lake
a bird sitting on a branch
a screenshot of a text document
"""


def train_sentencepiece(path: Path, vocab_size: int = 100) -> None:
    """Write ``spiece.model`` with SigLIP's special ids: 0 <pad>, 1 </s>, 2 <unk>."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAINING_TEXT.lower().splitlines() * 4),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())


def train_clip_bpe(folder: Path, vocab_size: int = 600) -> dict[str, int]:
    """Write ``vocab.json`` and ``merges.txt`` for a byte-level BPE shaped like CLIP's.

    The vocabulary starts with the 256 byte symbols and their ``</w>`` forms, as CLIP's does,
    then the learned merges, then ``<|startoftext|>`` and ``<|endoftext|>``.
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                behavior="removed",
                invert=True,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=alphabet,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tok.train_from_iterator(TRAINING_TEXT.splitlines() * 4, trainer=trainer)
    learned = json.loads(tok.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in learned["merges"]]

    symbols = sorted(alphabet, key=lambda s: ord(s))
    vocab: dict[str, int] = {}
    for s in symbols:
        vocab[s] = len(vocab)
    for s in symbols:
        vocab[s + "</w>"] = len(vocab)
    for merge in merges:
        merged = merge.replace(" ", "")
        if merged not in vocab:
            vocab[merged] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return vocab
