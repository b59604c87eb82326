"""SentencePiece tokenizers with the special symbols <pad>=0 <unk>=1 <sos>=2 <eos>=3."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from ..errors import SeqattnError

PAD, UNK, SOS, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<sos>", "<eos>")


class Tokenizer:
    """One SentencePiece model: text <-> pieces <-> ids."""

    def __init__(self, model_proto: bytes, path: Path | None = None):
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(model_proto)
        except Exception:
            raise SeqattnError(f"{path or 'tokenizer'}: not a valid SentencePiece model") from None
        self.proto = model_proto

    @classmethod
    def train(cls, lines: list[str], vocab_size: int) -> Tokenizer:
        """Return a tokenizer trained on lines (vocab_size is a soft limit on small data)."""
        import sentencepiece as spm

        buf = io.BytesIO()
        sentences = [line for line in lines if line.strip()]
        if not sentences:
            raise SeqattnError("cannot train a tokenizer: the training text has no non-empty line")
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=buf, vocab_size=vocab_size,
            model_type="unigram", character_coverage=1.0, hard_vocab_limit=False, split_digits=True,
            pad_id=PAD, unk_id=UNK, bos_id=SOS, eos_id=EOS,
            pad_piece=SPECIALS[0], unk_piece=SPECIALS[1], bos_piece=SPECIALS[2], eos_piece=SPECIALS[3],
            num_threads=2, minloglevel=2, input_sentence_size=2_000_000, shuffle_input_sentence=True)
        return cls(buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> Tokenizer:
        """Return the tokenizer saved at path."""
        try:
            return cls(Path(path).read_bytes(), path)
        except FileNotFoundError:
            raise SeqattnError(f"{path}: tokenizer file not found") from None

    def save(self, path: Path) -> None:
        """Write the model to path (and a readable .vocab beside it)."""
        path.write_bytes(self.proto)
        vocab = "".join(f"{self.sp.IdToPiece(i)}\t{self.sp.GetScore(i)}\n" for i in range(len(self)))
        path.with_suffix(".vocab").write_text(vocab, encoding="utf-8")

    def __len__(self) -> int:
        return self.sp.GetPieceSize()

    def encode(self, lines: list[str]) -> list[list[int]]:
        """Return the piece ids of each line (no <sos>/<eos>)."""
        return self.sp.Encode(lines)

    def pieces(self, ids: list[int]) -> list[str]:
        """Return the pieces of ids."""
        return [self.sp.IdToPiece(i) for i in ids]

    def decode(self, ids: list[int]) -> str:
        """Return the detokenized text of ids."""
        return self.sp.Decode(ids)


@dataclass
class Tokenizers:
    """The source and target tokenizers of a model (the same object when joint)."""

    src: Tokenizer
    tgt: Tokenizer

    @classmethod
    def train(cls, src_lines: list[str], tgt_lines: list[str], vocab_size: int, joint: bool) -> Tokenizers:
        """Return tokenizers trained on the training text."""
        if joint:
            tok = Tokenizer.train(src_lines + tgt_lines, vocab_size)
            return cls(tok, tok)
        return cls(Tokenizer.train(src_lines, vocab_size), Tokenizer.train(tgt_lines, vocab_size))

    @property
    def joint(self) -> bool:
        return self.src is self.tgt

    def save(self, model_dir: Path) -> None:
        """Write spm.model (joint) or src.model + tgt.model into model_dir."""
        if self.joint:
            self.src.save(model_dir / "spm.model")
        else:
            self.src.save(model_dir / "src.model")
            self.tgt.save(model_dir / "tgt.model")

    @classmethod
    def load(cls, model_dir: Path) -> Tokenizers:
        """Return the tokenizers saved in model_dir."""
        if (model_dir / "spm.model").exists():
            tok = Tokenizer.load(model_dir / "spm.model")
            return cls(tok, tok)
        return cls(Tokenizer.load(model_dir / "src.model"), Tokenizer.load(model_dir / "tgt.model"))
