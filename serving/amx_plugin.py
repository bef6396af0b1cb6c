"""A vLLM general plugin: ask Linux for AMX tile state before the first forward pass.

On CPUs with AMX, oneDNN's bf16 kernels use AMX tiles; Linux grants them only after
``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)``. Without it a short first forward pass in eager
bf16 dies with SIGILL. vLLM loads ``vllm.general_plugins`` entry points in every process it starts.
"""

from __future__ import annotations

import ctypes
import platform

SYS_ARCH_PRCTL = 158
ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILEDATA = 18


def register() -> None:
    """Request AMX permission for this process (a no-op where it does not apply)."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return
    try:
        ctypes.CDLL(None, use_errno=True).syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)
    except (OSError, AttributeError):  # no libc symbol: nothing to ask
        pass
