# The repository root: lets `suites` and `tests` import each other's helpers as packages.
