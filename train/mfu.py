"""Model FLOPs utilization: the bf16 dense peak of the CUDA device the run is on."""

from __future__ import annotations

# bf16 dense (no sparsity) tensor-core peaks, FLOP/s, by a substring of the CUDA device name.
# Checked in order: the first match wins, so specific names come before general ones.
PEAK_FLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM5 / HBM3
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
]


def peak_flops(device_name: str) -> float | None:
    """The bf16 dense peak of a CUDA device by name; None when the device is not in the table."""
    for key, flops in PEAK_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None
