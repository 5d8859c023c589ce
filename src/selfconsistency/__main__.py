"""The `selfconsistency` command's entry point: a Ctrl-C while the CLI's modules still load (the first second)
ends the command as one afterwards does, without a traceback."""

import sys


def main() -> None:
    try:
        from .cli import app

        app(prog_name="selfconsistency")
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
