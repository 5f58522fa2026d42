"""The README's runnable examples run as written.

Every fenced block tagged ```python is executed, in order, in a fresh interpreter inside an empty directory. Blocks
that need the Hub or a GPU are tagged ```py (rendered the same) and are not executed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run_as_written(tmp_path):
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.DOTALL | re.MULTILINE)
    assert blocks, "README.md has no ```python example"
    script = tmp_path / "readme_examples.py"
    script.write_text("\n\n".join(blocks))
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "torch.Size([1, 4, 64]) torch.Size([3, 8, 64])" in result.stdout
