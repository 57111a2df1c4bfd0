"""tests/system-packages.sh: `make test` installs the Debian packages it drives, or stops at once saying how."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "system-packages.sh"


def _run(path: str, as_nobody: bool, script: Path = SCRIPT) -> subprocess.CompletedProcess:
    cmd = ["/bin/bash", str(script)]
    if as_nobody:  # su sets its own PATH: pass ours inside the command
        cmd = [shutil.which("su") or "/bin/su", "-s", "/bin/bash", "nobody", "-c", f"PATH={path} /bin/bash {script}"]
    return subprocess.run(cmd, env={"PATH": path}, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def test_without_root_or_sudo_it_stops_at_once_naming_the_command():
    # A PATH with nothing but bash and id: every package probed by command looks missing, and there is no sudo.
    bin_dir = tempfile.mkdtemp(prefix="syspkg-")
    try:
        os.chmod(bin_dir, 0o755)
        for name in ("bash", "id"):
            os.symlink(shutil.which(name), os.path.join(bin_dir, name))
        # nobody may not be able to read the checkout (a clone in a `mktemp -d` directory is 0700): run a copy.
        script = Path(shutil.copy(SCRIPT, bin_dir))
        os.chmod(script, 0o644)
        result = _run(bin_dir, as_nobody=os.geteuid() == 0, script=script)
    finally:
        shutil.rmtree(bin_dir)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "prometheus" in lines[0] and "festival" in lines[0]
    assert "sudo apt-get update && sudo apt-get install -y" in lines[0]


def test_with_every_package_present_it_says_nothing():
    result = _run(os.environ["PATH"], as_nobody=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
