from __future__ import annotations

import subprocess
import sys


def test_io_never_imports_torch() -> None:
    code = "import sys, video_mm.io; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
