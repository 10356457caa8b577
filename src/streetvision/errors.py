"""The one base class of every error streetvision raises on bad input or a failed check.

Each module defines its specific errors next to the code that raises them (``ConfigError``,
``DataSourceError``, ``BundleError``, ...), all subclasses of ``StreetvisionError`` (and of the
built-in type they refine, e.g. ``ValueError``), so a caller can catch everything the tool reports with
one ``except StreetvisionError``. Messages name the file, key, split or row at fault.
"""


class StreetvisionError(Exception):
    """Bad input or a failed integrity check; the message says what and where."""
