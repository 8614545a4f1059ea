"""The schemathesis command line, with one workaround for CPython 3.11.

Hypothesis describes the lambdas inside its strategies by parsing their
source with `ast.parse`. On Python 3.11 that parse can fail with
`SystemError: AST constructor recursion depth mismatch` when it runs deep
inside Hypothesis (which raises the recursion limit as it draws), and
schemathesis then reports a "Runtime Error" for the operation being
generated: a tool failure, not a finding about the API. Such a lambda is
described as `<unknown>` instead, as Hypothesis already does for lambdas
whose source it cannot find. Newer Pythons do not need this.
"""

import sys

if sys.version_info < (3, 12):
    from hypothesis.internal import lambda_sources

    _describe = lambda_sources._lambda_description

    def _tolerant(f, *args, **kwargs):
        try:
            return _describe(f, *args, **kwargs)
        except SystemError:
            return "lambda *args, **kwargs: <unknown>"

    lambda_sources._lambda_description = _tolerant

from schemathesis.cli import schemathesis  # noqa: E402

if __name__ == "__main__":
    sys.exit(schemathesis())
