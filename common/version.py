"""The product's version, as every service reports it (the server API's Info)."""

VERSION = "0.1.0"  # keep equal to pyproject.toml's
