"""test_core_module.py: the coarch._core module object (csrc/module.c): its state.

Exception classes and types live in the state of each module object, found from the type that
raises (multi-phase init, PyType_GetModuleByDef), never from a process-wide lookup. A second
module object made from the same spec has its own classes, and each raises its own. It runs in
a child process, so this process's coarch._core stays the only one the other tests see.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

CHILD = textwrap.dedent(
    """
    import importlib.util, sys
    from coarch import _core

    spec = importlib.util.find_spec("coarch._core")
    second = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(second)
    assert second is not _core and second.ModelError is not _core.ModelError
    missing = sys.argv[1]
    for module in (_core, second, _core):
        try:
            module.Embedder(missing, precision="fp32")
        except Exception as error:
            assert type(error) is module.ModelError, (module, type(error), error)
        else:
            raise AssertionError("a missing model folder loaded")
        try:
            module.MemoryManager(limit_mb=1)._check_model()
        except Exception as error:
            assert type(error) is module.MemoryLimitError, (module, type(error), error)
        else:
            raise AssertionError("a 1 MB limit took the model")
    try:
        _core.Embedder(missing, precision="fp32", memory=second.MemoryManager())
    except TypeError as error:
        assert "memory must be a coarch.MemoryManager" in str(error), error
    else:
        raise AssertionError("a manager of another module object was taken")
    print("ok")
    """
)


def test_each_module_object_raises_its_own_classes(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
