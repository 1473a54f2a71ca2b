"""The README's Python examples run as written (with fewer training steps and a cheaper grid tuning)."""

import re
import runpy
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
CHEAPER = {"range(100)": "range(3)", 'prediction="eps")  # auto sampler': 'prediction="eps", max_evals=3, reference_steps=20)'}


def test_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert len(blocks) >= 2, "README lost its python examples"
    code = "\n".join(blocks)
    for old, new in CHEAPER.items():
        assert old in code, f"README example changed: {old!r} not found; update CHEAPER"
        code = code.replace(old, new)
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    namespace = runpy.run_path(str(script))
    assert namespace["samples"].shape == (16, 1, 8, 8)
    assert namespace["tuned"].steps == 10 and len(namespace["tuned"].times) == 11
