"""The ``credman`` command line: the operators' tool over :class:`CredentialManager`.

One module per command group, each with a ``register(app)`` that adds its commands to the
root app (:mod:`credman.cli.app`); the shared pieces are public names of
:mod:`credman.cli.context` (global options, the manager factory), :mod:`credman.cli.output`
(consoles, formatting) and :mod:`credman.cli.secret_input` (secrets from env, file or
stdin, never argv).
"""

from credman.cli.app import app, main

__all__ = ["app", "main"]
