"""Offline validation of the deployment artifacts (deploy/, k8s/).

Runs ``scripts/check-deploy``: kustomize render of every overlay,
kubernetes-validate --strict, checkov, hadolint, shellcheck and compose
sanity checks (plus the nginx snippet test when nginx is installed).

The first run needs network access to PyPI: the script creates its own
virtualenv ``.venv-deploy`` from ``deploy/requirements-lint.txt``. Later runs
reuse it and take a few seconds. Needs ``kubectl`` (or ``kustomize``) on PATH.
"""

import os
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check-deploy"


def test_check_deploy_passes() -> None:
    proc = subprocess.run(
        ["bash", str(SCRIPT)],
        env={**os.environ, "REQUIRE_NGINX": "1"},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        print(proc.stdout)
    assert proc.returncode == 0, f"scripts/check-deploy exited {proc.returncode}:\n{proc.stdout[-20000:]}"
