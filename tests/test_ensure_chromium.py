"""scripts/ensure-chromium, run by `make test` first: its decisions, with stand-ins for id, sudo and apt-get
(so nothing is installed or removed here) and a CHROMIUM_PATH that does not exist until "installed"."""

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "ensure-chromium"


def fake_bin(tmp_path, *, uid: int, sudo: str | None, apt: bool) -> Path:
    """A PATH directory holding only `id` (saying `uid`), `env`, and optionally `sudo` and `apt-get`.
    The stand-in apt-get logs its arguments and, on `install`, creates the chromium executable."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {"id": f'#!/bin/sh\necho {uid}\n'}
    if sudo == "passwordless":
        scripts["sudo"] = '#!/bin/sh\n[ "$1" = -n ] && shift\necho "sudo $*" >> "$LOG"\n"$@"\n'
    elif sudo == "asks-password":
        scripts["sudo"] = '#!/bin/sh\necho "sudo: a password is required" >&2\nexit 1\n'
    if apt:
        scripts["apt-get"] = ('#!/bin/sh\necho "apt-get $*" >> "$LOG"\n'
                              'case "$*" in *install*) printf "#!/bin/sh\\n" > "$CHROMIUM_PATH"; '
                              'chmod +x "$CHROMIUM_PATH";; esac\n')
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (bin_dir / "env").symlink_to("/usr/bin/env")
    (bin_dir / "chmod").symlink_to("/bin/chmod")
    return bin_dir


def run(tmp_path, bin_dir, chromium=None):
    log = tmp_path / "log"
    log.touch()
    env = {"PATH": str(bin_dir), "LOG": str(log), "CHROMIUM_PATH": str(chromium or tmp_path / "chromium")}
    result = subprocess.run(["/bin/sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)
    return result, log.read_text().splitlines()


def test_present_chromium_needs_nothing(tmp_path):
    chromium = tmp_path / "chromium"
    chromium.write_text("#!/bin/sh\n")
    chromium.chmod(0o755)
    result, log = run(tmp_path, fake_bin(tmp_path, uid=1000, sudo=None, apt=True), chromium)
    assert result.returncode == 0 and log == [] and result.stderr == ""


def test_root_installs_debians_chromium(tmp_path):
    result, log = run(tmp_path, fake_bin(tmp_path, uid=0, sudo=None, apt=True))
    assert result.returncode == 0, result.stderr
    assert log == ["apt-get update -qq", "apt-get install -y -qq chromium"]
    assert (tmp_path / "chromium").exists()


def test_a_user_with_passwordless_sudo_installs_through_sudo(tmp_path):
    result, log = run(tmp_path, fake_bin(tmp_path, uid=1000, sudo="passwordless", apt=True))
    assert result.returncode == 0, result.stderr
    assert log == ["sudo true", "sudo apt-get update -qq", "apt-get update -qq",
                   "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium",
                   "apt-get install -y -qq chromium"]


def test_a_user_who_cannot_install_gets_the_command_at_once(tmp_path):
    for sudo in ("asks-password", None):
        case = tmp_path / str(sudo)
        case.mkdir()
        result, log = run(case, fake_bin(case, uid=1000, sudo=sudo, apt=True))
        assert result.returncode == 1
        assert "sudo apt-get update && sudo apt-get install -y chromium" in result.stderr
        assert not any(line.startswith("apt-get") for line in log)


def test_without_apt_get_it_says_to_set_chromium_path(tmp_path):
    result, log = run(tmp_path, fake_bin(tmp_path, uid=0, sudo=None, apt=False))
    assert result.returncode == 1 and "CHROMIUM_PATH" in result.stderr and log == []


def test_an_install_that_leaves_no_executable_fails(tmp_path):
    bin_dir = fake_bin(tmp_path, uid=0, sudo=None, apt=True)
    (bin_dir / "apt-get").write_text('#!/bin/sh\necho "apt-get $*" >> "$LOG"\n')
    result, _log = run(tmp_path, bin_dir)
    assert result.returncode == 1 and "set CHROMIUM_PATH" in result.stderr


def test_make_test_runs_it_first():
    makefile = (SCRIPT.parent.parent / "Makefile").read_text()
    recipe = makefile.split("\ntest: setup\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert recipe[0].strip() == "scripts/ensure-chromium"
    assert os.access(SCRIPT, os.X_OK)
