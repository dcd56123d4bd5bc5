"""Every built-in method passes the conformance kit third parties use."""

from prunebench.methods.admm import ADMMConfig, MemristorConfig
from prunebench.methods.obc import OBCConfig
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


# baselines (issue 16.4): gmp, random_shuffled, tp_l1 / tp_taylor, imp_lrr, obc
# (one epoch of budget: 8 steps, enough for gmp's schedule, imp's rounds and tp's Taylor steps)
class TestGMP(MethodConformance):
    method = "gmp"
    budget_epochs = 1.0


class TestRandomShuffled(MethodConformance):
    method = "random_shuffled"
    budget_epochs = 1.0


class TestTPL1(MethodConformance):
    method = "tp_l1"
    budget_epochs = 1.0


class TestTPTaylor(MethodConformance):
    method = "tp_taylor"
    budget_epochs = 1.0


class TestIMPLRR(MethodConformance):
    method = "imp_lrr"
    budget_epochs = 1.0


class TestOBC(MethodConformance):
    method = "obc"
    budget_epochs = 1.0
    config = OBCConfig(calibration_samples=64)
