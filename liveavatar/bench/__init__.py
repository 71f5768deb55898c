"""Benchmarks (`liveavatar bench ...`). Each module has `run(**options) -> dict` returning
`report.result(name, rows, **extra)`; timing tests never live in the test suite."""
