"""argparse types for numbers: out-of-range values are argparse's one-line errors, before anything is read."""

import argparse


def positive(kind: type, maximum: float | None = None):
    """An argparse type: a number of `kind` above 0 (and at most `maximum`), else argparse's one-line error."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if not value > 0 or (maximum is not None and value > maximum):
            bound = f" and at most {maximum:g}" if maximum is not None else ""
            raise argparse.ArgumentTypeError(f"{text} is out of range: give a value above 0{bound}")
        return value

    return parse


POSITIVE_INT = positive(int)
POSITIVE_FLOAT = positive(float)


def non_negative_int(text: str) -> int:
    """An argparse type: an integer of 0 or more, else argparse's one-line error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is out of range: give 0 or more")
    return value


FRACTION = positive(float, 0.99)  # of tokens masked, of persons held out: above 0 and at most 0.99
