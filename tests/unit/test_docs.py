"""Generated documentation stays in step with the code."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_method_table_is_current() -> None:
    # Regenerate with: python tools/method_table.py
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "method_table.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
