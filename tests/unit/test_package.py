"""The package's own surface: small, lazy."""

import subprocess
import sys


def test_hub_is_reachable_from_the_package_and_loaded_lazily():
    import mlhub
    from mlhub.client import Hub

    assert mlhub.Hub is Hub and mlhub.__version__
    code = "import sys, mlhub; print('sqlalchemy' in sys.modules, 'ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
