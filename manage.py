#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""
import os
import sys


def main():
    if sys.argv[1:] == ["version"]:
        # Django answers `version` with its own version before loading any command: this is evalcompare's
        # (package metadata), alone on a line for scripts. `python -m django --version` gives Django's.
        import evalcompare

        print(evalcompare.__version__)
        return
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalcompare.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
