#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""
import sys


def main():
    from evalcompare.cli import manage  # the `evalcompare` command's: a bad setting is one clear line

    manage(sys.argv)


if __name__ == "__main__":
    main()
