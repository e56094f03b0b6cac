"""Suite-wide setup.

CPython 3.11.7 can corrupt its AST recursion counter (a bug fixed in later 3.11
releases), after which every ``ast.parse`` raises "AST constructor recursion depth
mismatch": pytest's assertion rewriting of a module imported late (hypothesis's
plugin imports ``hypothesis.database`` at session end) then crashes the run.
Importing such modules up front keeps every parse at collection time.
"""

import hypothesis.database  # noqa: F401
import telethon
import telethon.network  # noqa: F401
