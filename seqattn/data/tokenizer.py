"""SentencePiece tokenizers with the special symbols <pad>=0 <unk>=1 <sos>=2 <eos>=3."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from seqattn_runtime.rules import EOS, PAD, SOS, UNK
from seqattn_runtime.translator import encode_lines

from ..errors import SeqattnError
from .sampling import Segmentations

__all__ = ["EOS", "PAD", "SOS", "SPECIALS", "UNK", "TargetView", "Tokenizer", "Tokenizers"]
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

    @classmethod
    def adopt(cls, path: Path) -> Tokenizer:
        """Return an existing SentencePiece model (any special ids) renumbered to <pad> <unk> <sos> <eos> = 0..3.

        Its pieces and scores are kept, so text splits into exactly the same pieces as with the original.
        """
        from sentencepiece import sentencepiece_model_pb2 as pb

        try:
            model = pb.ModelProto()
            model.ParseFromString(Path(path).read_bytes())
        except FileNotFoundError:
            raise SeqattnError(f"{path}: SentencePiece model not found") from None
        except Exception:
            raise SeqattnError(f"{path}: not a valid SentencePiece model") from None
        special = (pb.ModelProto.SentencePiece.UNKNOWN, pb.ModelProto.SentencePiece.CONTROL)
        kept = [p for p in model.pieces if p.type not in special]
        del model.pieces[:]
        for name, kind in zip(SPECIALS, ("CONTROL", "UNKNOWN", "CONTROL", "CONTROL")):
            model.pieces.add(piece=name, score=0.0, type=getattr(pb.ModelProto.SentencePiece, kind))
        model.pieces.extend(kept)
        spec = model.trainer_spec
        spec.pad_id, spec.unk_id, spec.bos_id, spec.eos_id = PAD, UNK, SOS, EOS
        spec.pad_piece, spec.unk_piece, spec.bos_piece, spec.eos_piece = SPECIALS
        return cls(model.SerializeToString(), path)

    def save(self, path: Path) -> None:
        """Write the model to path (and a readable .vocab beside it), each atomically."""
        from ..checkpoint import atomic_write

        atomic_write(path, lambda f: f.write(self.proto))
        vocab = "".join(f"{self.sp.IdToPiece(i)}\t{self.sp.GetScore(i)}\n" for i in range(len(self)))
        atomic_write(path.with_suffix(".vocab"), lambda f: f.write(vocab.encode("utf-8")))

    def __len__(self) -> int:
        return self.sp.GetPieceSize()

    def encode(self, lines: list[str]) -> list[list[int]]:
        """Return the piece ids of each line (no <sos>/<eos>)."""
        return encode_lines(self.sp, lines)

    def segmentations(self, lines: list[str], nbest: int):
        """Return the nbest most likely segmentations of each line (`sampling.Segmentations`)."""
        return Segmentations.of(self.sp, lines, nbest)

    def pieces(self, ids: list[int]) -> list[str]:
        """Return the pieces of ids."""
        return [self.sp.IdToPiece(i) for i in ids]

    def decode(self, ids: list[int]) -> str:
        """Return the detokenized text of ids."""
        return self.sp.Decode(ids)


class TargetView:
    """The pieces of a joint tokenizer that the target side uses, renumbered 0..n-1 (specials first).

    With a joint vocabulary about half the pieces never occur in target text; the decoder's
    embedding and output layer only cover this view, which halves the largest matrix product
    of training and decoding. Ids outside the view encode as <unk>.
    """

    def __init__(self, base: Tokenizer, keep: list[int]):
        self.base, self.keep = base, keep                # keep: sorted base ids, starting 0, 1, 2, 3
        self.to_view = {b: i for i, b in enumerate(keep)}

    @classmethod
    def of(cls, base: Tokenizer, tgt_ids: list[list[int]]) -> TargetView:
        """Return the view of the base ids that occur in tgt_ids (plus the specials)."""
        return cls(base, sorted(set(range(len(SPECIALS))).union(*tgt_ids)))

    def __len__(self) -> int:
        return len(self.keep)

    def encode(self, lines: list[str]) -> list[list[int]]:
        """Return the view ids of each line (no <sos>/<eos>)."""
        get = self.to_view.get
        return [[get(i, UNK) for i in ids] for ids in self.base.encode(lines)]

    def segmentations(self, lines: list[str], nbest: int):
        """Return `Tokenizer.segmentations` in view ids; a segmentation using a piece outside the view is
        never drawn (the decoder has no output for it), the standard one stays."""
        import numpy as np

        to_view = np.full(len(self.base), -1, np.int64)
        to_view[self.keep] = np.arange(len(self.keep))
        return Segmentations.of(self.base.sp, lines, nbest, to_view)

    def pieces(self, ids: list[int]) -> list[str]:
        return self.base.pieces([self.keep[i] for i in ids])

    def decode(self, ids: list[int]) -> str:
        return self.base.decode([self.keep[i] for i in ids])

    def save(self, path: Path) -> None:
        """Write the kept base ids, one `id<TAB>piece` a line (atomically)."""
        from ..checkpoint import atomic_write

        text = "".join(f"{i}\t{p}\n" for i, p in zip(self.keep, self.base.pieces(self.keep)))
        atomic_write(path, lambda f: f.write(text.encode("utf-8")))

    @classmethod
    def load(cls, base: Tokenizer, path: Path) -> TargetView:
        """Return the view saved at path; raise SeqattnError naming the line of a bad entry."""
        keep = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            field = line.split("\t", 1)[0]
            if not field.isdigit() or int(field) >= len(base) or (keep and int(field) <= keep[-1]):
                raise SeqattnError(f"{path}:{n}: expected increasing piece ids below {len(base)}, got {field!r}")
            keep.append(int(field))
        if keep[: len(SPECIALS)] != list(range(len(SPECIALS))):
            raise SeqattnError(f"{path}: the first ids must be the specials 0..{len(SPECIALS) - 1}")
        return cls(base, keep)


@dataclass
class Tokenizers:
    """The source and target tokenizers of a model; when joint, tgt is a TargetView of src."""

    src: Tokenizer
    tgt: Tokenizer | TargetView

    @classmethod
    def train(cls, src_lines: list[str], tgt_lines: list[str], vocab_size: int, joint: bool,
              spm_model: Path | None = None) -> Tokenizers:
        """Return tokenizers trained on the training text (or adopted from spm_model, joint)."""
        if joint or spm_model:
            tok = Tokenizer.adopt(spm_model) if spm_model else Tokenizer.train(src_lines + tgt_lines, vocab_size)
            return cls(tok, TargetView.of(tok, tok.encode(tgt_lines)))
        return cls(Tokenizer.train(src_lines, vocab_size), Tokenizer.train(tgt_lines, vocab_size))

    @property
    def joint(self) -> bool:
        return self.src is getattr(self.tgt, "base", self.tgt)

    def save(self, model_dir: Path) -> None:
        """Write spm.model + tgt_pieces.txt (joint) or src.model + tgt.model into model_dir."""
        if self.joint:
            self.src.save(model_dir / "spm.model")
            if isinstance(self.tgt, TargetView):
                self.tgt.save(model_dir / "tgt_pieces.txt")
        else:
            self.src.save(model_dir / "src.model")
            self.tgt.save(model_dir / "tgt.model")

    @classmethod
    def load(cls, model_dir: Path) -> Tokenizers:
        """Return the tokenizers saved in model_dir (a joint one without tgt_pieces.txt uses every piece)."""
        if (model_dir / "spm.model").exists():
            tok = Tokenizer.load(model_dir / "spm.model")
            view = model_dir / "tgt_pieces.txt"
            return cls(tok, TargetView.load(tok, view) if view.exists() else tok)
        return cls(Tokenizer.load(model_dir / "src.model"), Tokenizer.load(model_dir / "tgt.model"))
