"""Let PyPI's torchvision import beside the CPU torch (the vLLM CPU test environment only).

PyPI's torchvision wheels are CUDA builds: their operator library needs torch's CUDA libraries,
so beside the CPU torch it does not load. torchvision copes with that (its ops report
`_has_ops() == False`) except for two fake-tensor registrations, of `nms` and `qnms`, that run
unguarded at import and fail. vLLM's LLaVA code imports transformers' Pixtral processor, which
imports torchvision's transforms: without this nothing LLaVA-like starts. This guards those two
registrations like the others; torchvision's detection ops stay unavailable (nothing here uses
them). GPU images install a matching CUDA torchvision and never run this.

    python deploy/vllm/torchvision_without_ops.py   # idempotent; exit 1 if it cannot
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

UNGUARDED = re.compile(r'^@torch\.library\.register_fake\(("torchvision::\w+")\)$', re.MULTILINE)
GUARDED = (r"@(torch.library.register_fake(\1) if torchvision.extension._has_ops() "
           r"else (lambda fn: fn))")


def main() -> int:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        print("torchvision is not installed", file=sys.stderr)
        return 1
    path = Path(spec.origin).parent / "_meta_registrations.py"
    text = path.read_text()
    fixed, count = UNGUARDED.subn(GUARDED, text)
    if count:
        path.write_text(fixed)
    print(f"{path}: {count} registration(s) guarded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
