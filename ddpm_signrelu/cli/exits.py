"""Bad input ends a command with one line, ``error: ...``, and exit code 2, never a stack trace."""

import argparse
import sys

from lightning.fabric.utilities.exceptions import MisconfigurationException

from ddpm_signrelu.errors import UserError


def user_error(err: BaseException) -> Exception | None:
    """The bad-input error behind ``err``, if any: a :class:`UserError`, Lightning's MisconfigurationException or a
    command-line parser's error, also where the parser raised its own error from it (``raise ... from``)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, (UserError, MisconfigurationException, argparse.ArgumentError)):
            return err
        seen.add(id(err))
        err = err.__cause__
    return None


def run_command(main) -> None:
    """Run ``main``; bad input ends it with one line, ``error: ...``, and exit code 2."""
    try:
        main()
    except Exception as err:
        if (cause := user_error(err)) is None:
            raise
        print(f"error: {one_line(cause)}", file=sys.stderr)
        sys.exit(2)


def one_line(err: Exception) -> str:
    """``err``'s message on one line; a parser's "does not validate against any of the Union subtypes" is cut to the
    key, what each subtype expected (None aside) and the value given, with a pointer to ``--help``."""
    message = " ".join(str(err).split())
    if not isinstance(err, argparse.ArgumentError):
        return message
    head, _, problems = message.partition(" Errors: - ")
    if problems:
        problems, _, given = problems.partition(" Given value type: ")
        expected = [p for p in problems.split(" - ") if "NoneType" not in p]
        value = given.partition(" Given value: ")[2]
        message = f"{head.partition(': Does not validate')[0]}: {'; or '.join(expected)} (given: {value})"
    return f"{message}; --help lists the options"
