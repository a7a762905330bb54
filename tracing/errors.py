"""The one exception type users see.

Every check on user input (a file, a field, a value, an option) raises :class:`AmnesiaError`
with a message that names the offending thing and says what was expected. The CLI prints it as
one line and exits non-zero; Python users can catch it. Other exceptions are bugs.
"""


class AmnesiaError(ValueError):
    """Bad input or an impossible request, with a one-line message a user can act on."""


def did_you_mean(name: str, choices, *, quote: bool = False) -> str:
    """`` (did you mean X?)`` with the choice nearest ``name`` (difflib's), or "" when none is near."""
    import difflib

    near = difflib.get_close_matches(str(name), list(choices), n=1)
    if not near:
        return ""
    return f" (did you mean {near[0]!r}?)" if quote else f" (did you mean {near[0]}?)"
