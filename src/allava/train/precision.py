"""When to train in bf16: where the hardware does it natively, and nowhere else."""
from __future__ import annotations

import torch


def bf16_native() -> bool:
    """A bf16-capable GPU, or a CPU with AVX512-BF16 / AMX (where bf16 autocast cuts step time by
    about a third; on other CPUs it is emulated and slower than fp32)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    return any(getattr(cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def use_bf16(flag: bool | str | None) -> bool:
    """``None`` / ``"auto"``: bf16 where native; otherwise the flag as given."""
    return bf16_native() if flag is None or flag == "auto" else bool(flag)
