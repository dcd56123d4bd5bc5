"""Every built-in method passes the conformance kit third parties use."""

from prunebench.methods.admm import ADMMConfig, MemristorConfig
from prunebench.testing import MethodConformance


class TestMagnitude(MethodConformance):
    method = "magnitude"


class TestRandom(MethodConformance):
    method = "random"


class TestADMM(MethodConformance):
    method = "admm"
    # short schedules: 9 structures x 5 schemes run here
    config = ADMMConfig(stages=1, iterations=2, quant_iterations=1, mapping_rounds=2)


class TestADMMMemristor(MethodConformance):
    method = "admm_memristor"
    config = MemristorConfig(stages=1, iterations=2, quant_iterations=1, mapping_rounds=2, mismatch_trials=1)


class TestPattern(MethodConformance):
    method = "pattern"


class TestPETernary(MethodConformance):
    method = "pe_ternary"


class TestSLR(MethodConformance):
    method = "slr"


class TestAutoPrune(MethodConformance):
    method = "autoprune"
