"""The sdist and the wheel carry everything the portal needs, and an installed wheel serves it.

Built as `python -m build` would, offline: the sdist from the project's files, then the wheel from that
sdist (so the sdist is proven complete), with the setuptools already installed (no build isolation, no
download). The wheel goes into a fresh venv whose only other path is the project venv's site-packages,
for the dependencies; the checkout is never on its path.
"""

import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import httpx
import pytest

from comparisons.benchmark import database_url
from tests.serving import ROOT, assert_serves_hashed_static_files, gunicorn, log_in, production_environment, run

SHIPPED = ["evalcompare/templates/base.html", "evalcompare/templates/registration/login.html",
           "evalcompare/templates/comparisons/comparison_detail.html", "evalcompare/gunicorn_conf.py",
           "comparisons/static/comparisons/evalcompare.css", "comparisons/static/comparisons/htmx-2.0.11.min.js",
           "comparisons/sql/comparisons_in_window.sql", "comparisons/demo_data/demo.json"]


@pytest.fixture(scope="module")
def distributions(tmp_path_factory) -> tuple[Path, Path]:
    """(sdist, wheel) built from the project's files as they are in the work tree."""
    work = tmp_path_factory.mktemp("build")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    source = work / "source"
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    dist = work / "dist"
    run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(dist)!r})"],
        env=None, cwd=source)
    sdist = next(dist.glob("evalcompare-*.tar.gz"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         "--wheel-dir", str(dist), str(sdist)], env=None, cwd=work)
    return sdist, next(dist.glob("evalcompare-*.whl"))


def test_the_sdist_and_the_wheel_carry_templates_static_sql_and_demo_data(distributions):
    sdist, wheel = distributions
    with tarfile.open(sdist) as archive:
        in_sdist = {name.partition("/")[2] for name in archive.getnames()}
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    for name in SHIPPED:
        assert name in in_sdist, name
        assert name in in_wheel, name
    sql_files = {path.name for path in (ROOT / "comparisons" / "sql").glob("*.sql")}
    assert sql_files == {Path(name).name for name in in_wheel if name.startswith("comparisons/sql/")}
    assert not any(name.startswith(("tests/", "fixtures/")) for name in in_wheel)
    assert any(name.endswith("entry_points.txt") for name in in_wheel)


@pytest.mark.django_db(transaction=True)
def test_the_installed_wheel_serves_the_demo_with_its_css(distributions, tmp_path):
    _, wheel = distributions
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], env=None)
    site_packages = Path(subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; "
                                         "print(sysconfig.get_path('purelib'))"], capture_output=True, text=True,
                                        check=True).stdout.strip())
    # The dependencies come from the project venv, after the venv's own packages (its .pth files, such as
    # the checkout's editable install, are not processed from there).
    (site_packages / "project-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run([venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "--quiet",
         str(wheel)], env=None, cwd=tmp_path)
    evalcompare = [str(venv / "bin" / "evalcompare")]
    environment = production_environment(database_url(), tmp_path / "static")
    # The code, the templates and the demo data all come from the installed copy.
    where = run([venv / "bin" / "python", "-c", "from evalcompare.cli import check_settings; check_settings(); "
                 "import django; django.setup(); import evalcompare, comparisons.demo as demo; "
                 "from django.template.loader import get_template; print(evalcompare.__file__); "
                 "print(get_template('base.html').origin.name); print(demo.DEMO_FILE)"],
                environment, cwd=tmp_path).stdout.split()
    assert len(where) == 3 and all(Path(path).is_relative_to(site_packages) for path in where), where
    assert Path(where[2]).is_file()

    run(evalcompare + ["collectstatic", "--noinput"], environment, cwd=tmp_path)
    assert "Demo data loaded" in run(evalcompare + ["load_demo"], environment, cwd=tmp_path).stdout
    with gunicorn(evalcompare, environment, tmp_path / "gunicorn.log", cwd=tmp_path) as base, \
            httpx.Client(base_url=base, timeout=30) as client:
        login = client.get("/login/")
        assert_serves_hashed_static_files(client, login.text)
        log_in(client, "demo", "evalcompare-demo")
        page = client.get("/evaluations/support_answers/", follow_redirects=True)
        assert page.status_code == 200 and "support_answers" in page.text
        assert_serves_hashed_static_files(client, page.text)
