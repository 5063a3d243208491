"""EnclaveSQL's benchmark suite (`make bench`): side-by-side ratios measured in one run.

Never imported by the engine or the tests; timings live here and nowhere else.
"""
