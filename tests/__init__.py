"""Uchat test suite. A regular package, so `tests.*` resolves here before any stray
`tests` package a dependency installs into site-packages (confusables ships one)."""
