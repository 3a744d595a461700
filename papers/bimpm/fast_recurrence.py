"""BiMPM's LSTMs on padded tensors, without packed sequences: model.py's recurrences, faster on CPU.

model.py runs its LSTMs on packed sequences, the plain way to make an LSTM skip padding, and
uses these two instead when `BiMPMConfig.fast_recurrence` is True (the default). They take what
model.py's `BiLSTM` and `last_char_states` take and return the same:

- `BiLSTM`: nn.LSTM(bidirectional=True) on a packed sequence, as two one-way LSTMs on the padded
  tensor. The forward LSTM reads each row as it is: padding comes after the real tokens, so
  nothing it returns for a real token has seen padding. The backward LSTM reads each row
  reversed within its length (`reversal_index`), so it starts at the last real token.
- `last_char_states`: the character LSTM's state after each word's last character, with the
  words grouped by length, so that each LSTM call runs on words of one length and needs no
  padding at all.

Same maths, other kernels: on CPU a packed LSTM steps through autograd one time step at a time
and re-zeroes a full-size gradient buffer at every step, while a padded call runs oneDNN's fused
LSTM (measurements: papers/bimpm/README.md, Speed). Tests check that the outputs and gradients
of both paths agree (float64, padded batches of uneven lengths).

Checkpoints: model.py's BiLSTM holds one bidirectional nn.LSTM (`lstm.weight_ih_l0`,
`lstm.weight_ih_l0_reverse`, ...), this one two one-way LSTMs (`fw.weight_ih_l0`,
`bw.weight_ih_l0`, ...). They are the same tensors in the same order, so a seeded build gives
both paths the same weights and an optimizer's state lines up with either; each BiLSTM renames
the other layout's keys when a state dict is loaded (`to_fast_names`, `to_packed_names`), so a
checkpoint trained with either path loads into the other.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def reversal_index(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """(B, T) time index that reverses the first lengths[b] steps of row b; padding stays put."""
    t = torch.arange(T, device=lengths.device)[None]  # (1, T)
    return torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (B, T)


def to_fast_names(state_dict: dict, prefix: str, *_) -> None:
    """Load-state-dict pre-hook: the packed layout's keys under `prefix` (`lstm.<name>` and
    `lstm.<name>_reverse`) renamed to this file's (`fw.<name>`, `bw.<name>`), in place."""
    for key in [k for k in state_dict if k.startswith(f"{prefix}lstm.")]:
        name = key.removeprefix(f"{prefix}lstm.")
        half = "bw" if name.endswith("_reverse") else "fw"
        state_dict[f"{prefix}{half}.{name.removesuffix('_reverse')}"] = state_dict.pop(key)


def to_packed_names(state_dict: dict, prefix: str, *_) -> None:
    """Load-state-dict pre-hook for model.py's BiLSTM: this file's keys under `prefix` renamed
    to the packed layout's, in place (the inverse of to_fast_names)."""
    for half, suffix in (("fw", ""), ("bw", "_reverse")):
        for key in [k for k in state_dict if k.startswith(f"{prefix}{half}.")]:
            name = key.removeprefix(f"{prefix}{half}.")
            state_dict[f"{prefix}lstm.{name}{suffix}"] = state_dict.pop(key)


class BiLSTM(nn.Module):
    """A bidirectional LSTM over the real tokens of right-padded rows, as two one-way LSTMs."""

    def __init__(self, in_dim: int, units: int):
        super().__init__()
        self.fw = nn.LSTM(in_dim, units, batch_first=True)
        self.bw = nn.LSTM(in_dim, units, batch_first=True)
        # A checkpoint of model.py's BiLSTM loads too. (The hook is public as
        # register_load_state_dict_pre_hook from torch 2.5; pyproject allows 2.4.)
        self._register_load_state_dict_pre_hook(to_fast_names)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, outputs: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """x (B, T, in), lengths (B,) >= 1 -> per-step outputs (B, T, 2 units), zeros at
        padding (None when outputs=False), and final states (B, 2 units): the forward state at
        the last real token and the backward state at the first."""
        B, T = x.shape[:2]
        # Row b's step t read from flat row b*T + rev[b, t] (whole rows copied: index_select).
        rev = (reversal_index(lengths, T) + T * torch.arange(B, device=x.device)[:, None]).view(-1)
        out_f, _ = self.fw(x)  # (B, T, units)
        out_b, _ = self.bw(x.flatten(0, 1).index_select(0, rev).view_as(x))  # (B, T, units)
        last = (torch.arange(B, device=x.device), lengths - 1)
        finals = torch.cat([out_f[last], out_b[last]], dim=-1)  # (B, 2 units)
        if not outputs:
            return None, finals
        out_b = out_b.flatten(0, 1).index_select(0, rev).view_as(out_f)  # back in token order
        out = torch.cat([out_f, out_b], dim=-1)
        mask = torch.arange(T, device=x.device)[None] < lengths[:, None]  # (B, T)
        return out * mask[..., None], finals  # (B, T, 2 units), (B, 2 units)


def last_char_states(lstm: nn.LSTM, chars: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The LSTM's state after each word's last character: chars (N, K, char_dim), the embedded
    characters of N words, each padded after its lengths[n] >= 1 characters -> (N, hidden).

    The words in groups of equal length: each group is one LSTM call with no padding, so h_n is
    the state after each word's last character."""
    order = torch.argsort(lengths)  # (N,) words by length
    counts = torch.bincount(lengths, minlength=chars.size(1) + 1).tolist()  # counts[n]: n chars
    groups = chars[order].split(counts)  # group n: (counts[n], K, char_dim)
    h_sorted = [lstm(g[:, :n])[1][0][0] for n, g in enumerate(groups) if len(g)]
    h = chars.new_zeros(lengths.numel(), lstm.hidden_size)  # (N, hidden)
    if h_sorted:
        h = h.index_copy(0, order, torch.cat(h_sorted))  # back to word order
    return h  # (N, hidden)
