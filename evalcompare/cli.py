"""The `evalcompare` command (installed with the package):

    evalcompare --version              the version (package metadata); `evalcompare version` too
    evalcompare serve [gunicorn args]  the production server: gunicorn with evalcompare/gunicorn_conf.py
    evalcompare <command> [args]       any Django management command, as manage.py: migrate, collectstatic,
                                       createsuperuser, load_demo, run_evaluation, …

Settings come from the environment (DJANGO_SETTINGS_MODULE defaults to evalcompare.settings); a
missing or bad value is reported in one line, exit status 2, before anything runs.
"""

import os
import sys

GUNICORN_CONFIG = "python:evalcompare.gunicorn_conf"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["--version"], ["-V"]):
        from evalcompare import __version__

        print(__version__)
        return
    if argv[:1] == ["serve"]:
        serve(argv[1:])
        return
    if argv in ([], ["help"], ["-h"], ["--help"]):
        print(__doc__.strip() + "\n")  # then Django's list of commands
    manage(["evalcompare", *argv])


def check_settings() -> None:
    """Load the settings now, so that a missing or bad environment value is one clear line, not a traceback."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalcompare.settings")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        settings.INSTALLED_APPS  # noqa: B018 (reading a setting loads the settings module)
    except ImproperlyConfigured as error:
        print(f"evalcompare: configuration error: {error}", file=sys.stderr)
        sys.exit(2)


def manage(argv: list[str]) -> None:
    """Run a Django management command (argv[0] is the program name), as manage.py does."""
    if argv[1:] == ["version"]:
        # Django answers `version` with its own version before loading any command: this is evalcompare's
        # (package metadata), alone on a line for scripts. `python -m django --version` gives Django's.
        from evalcompare import __version__

        print(__version__)
        return
    check_settings()
    from django.core.management import execute_from_command_line

    execute_from_command_line(argv)


def serve(gunicorn_args: list[str]) -> None:
    """Replace this process with gunicorn (so it receives the signals of a service manager or a container)."""
    check_settings()
    import evalcompare.gunicorn_conf  # noqa: F401 (checks WEB_CONCURRENCY, PORT and the rest, exits on a bad value)

    os.execv(sys.executable, [sys.executable, "-m", "gunicorn", "--config", GUNICORN_CONFIG, *gunicorn_args])


if __name__ == "__main__":
    main()
