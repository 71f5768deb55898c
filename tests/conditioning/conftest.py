import pytest

from liveavatar.clock import VirtualClock
from liveavatar.conditioning import Conditioner, load_mapping

from .synth import Driver

START_S = 100.0   # virtual time starts here (0 means "no capture time yet" in Conditioning)


@pytest.fixture
def clock():
    return VirtualClock(int(START_S * 1e9))


@pytest.fixture(scope="session")
def default_mapping():
    return load_mapping()


@pytest.fixture
def cond(clock, default_mapping):
    return Conditioner(default_mapping, rate_hz=30.0, clock=clock)


@pytest.fixture
def drive(cond, clock):
    return Driver(cond, clock)
