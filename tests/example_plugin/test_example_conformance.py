"""What the plugin's own test suite would hold: the prunebench conformance kit."""

from prunebench.testing import MethodConformance

from prunebench_example import LayerwiseMagnitude


class TestLayerwiseMagnitude(MethodConformance):
    method_class = LayerwiseMagnitude
