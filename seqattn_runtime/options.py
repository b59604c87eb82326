"""How to decode (`SearchOptions`): written once for the CLIs, the HTTP API, seqattn's Translator and the
runtime. numpy-free and torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SeqattnError
from .rules import Stopping


@dataclass
class SearchOptions:
    """How to decode: greedy (beam 1), beam search, or sampling."""

    beam: int = 1
    nbest: int = 1
    alpha: float = 1.0          # GNMT length penalty exponent (beam search; 0: raw log-probabilities)
    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0              # 0: no cut
    top_p: float = 1.0          # 1: no cut
    num_samples: int = 1
    seed: int | None = None
    coverage_penalty: float = 0.0   # GNMT's beta (beam search; 0: off)
    alternatives: int = 0           # with the best output, the k most likely pieces at each of its positions
    stopping: str | None = None     # beam search's stopping rule (`rules.Stopping`); None: the model's decode.stopping
    patience: float | None = None   # stopping 'patience': its factor; None: the model's decode.patience
    shortlist: bool = False         # score only the batch's shortlist of target pieces (the model's shortlist.npz)

    def check(self) -> SearchOptions:
        """Return self; raise SeqattnError naming the option that is out of range."""
        if self.beam < 1:
            raise SeqattnError(f"--beam must be >= 1, got {self.beam}")
        if not 1 <= self.nbest <= self.beam:
            raise SeqattnError(f"--nbest must be between 1 and --beam ({self.beam}), got {self.nbest}")
        if self.sample and self.beam > 1:
            raise SeqattnError("--sample and --beam > 1 exclude each other")
        if self.temperature <= 0:
            raise SeqattnError(f"--temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise SeqattnError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.num_samples < 1:
            raise SeqattnError("--top-k must be >= 0 and --num-samples >= 1")
        if self.num_samples > 1 and not self.sample:
            raise SeqattnError("--num-samples needs --sample")
        if self.coverage_penalty < 0 or (self.coverage_penalty and self.beam == 1):
            raise SeqattnError(f"--coverage-penalty must be >= 0 and needs --beam > 1, got {self.coverage_penalty} "
                               f"with --beam {self.beam}")
        return self

    def stopping_rule(self, default: Stopping) -> Stopping:
        """Return the beam search's stopping rule: default (the model's) changed by these options; raise
        SeqattnError naming the option that is out of range."""
        try:
            return default.given(self.stopping, self.patience)
        except ValueError as e:
            raise SeqattnError(f"--{e}") from None
