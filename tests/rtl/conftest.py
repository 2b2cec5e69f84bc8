import os

import pytest

from snnc.rtl.runner import simulator_available


def require(simulator: str):
    """Skip when the simulator is missing locally; fail instead when SNNC_REQUIRE_RTL=1 (CI)."""
    if simulator_available(simulator):
        return
    msg = f"{simulator} is not installed"
    if os.environ.get("SNNC_REQUIRE_RTL") == "1":
        pytest.fail(msg + " but SNNC_REQUIRE_RTL=1 (CI must run the RTL tests)")
    pytest.skip(msg)


@pytest.fixture
def verilator():
    require("verilator")
    return "verilator"


@pytest.fixture(params=["verilator", "icarus"])
def simulator(request):
    """Both simulators: every test using this fixture must pass on Verilator and on Icarus."""
    require(request.param)
    return request.param
