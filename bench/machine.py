"""The CPU a benchmark ran on, named so that two kinds sold under one model name stay apart (an
"Intel(R) Xeon(R) Processor" with AMX reads five passages twice as fast as one without)."""

from __future__ import annotations

from rag.config import cpu_flags

# What sets this workplace's CPU kinds apart in speed: matrix units, bfloat16 arithmetic, width
_FEATURES = (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512 BF16"), ("avx512f", "AVX-512"))


def cpu_name() -> str:
    """The CPU's model name and the speed features it shows, e.g. "Intel(R) Xeon(R) Processor
    (AVX-512; no AMX, no AVX-512 BF16)"."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    flags = cpu_flags()
    has = [name for flag, name in _FEATURES if flag in flags]
    lacks = [f"no {name}" for flag, name in _FEATURES if flag not in flags]
    return f"{model} ({'; '.join(filter(None, (', '.join(has), ', '.join(lacks))))})"
