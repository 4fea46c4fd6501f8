"""End-to-end tests: the built zipapp run as a user would (a package, so test names may repeat elsewhere)."""
