"""Research drivers: the protocols and scenarios that only the benchmarks in benchmarks/ run.

Not installed with the package. The rule: `spm_gen` holds the library and what the `spm-gen` commands and
the scripts in scripts/ call; a module that only benchmarks (and their tests) call lives here. Benchmarks
import it from the repository root (they put it on `sys.path`).
"""
