"""The snnc IR: populations, projections and a verifier (see ``docs/architecture.md``)."""

from .graph import (WEIGHT_BITS, INPUT_BITS, STRENGTH_LIMIT, InputPopulation, Population, Dense,
                    Readout, Graph, weight_limit, frozen_array)
from .verify import (VerifyError, verify, source_range, input_current_bounds, state_range,
                     signed_bits, required_state_bits)

__all__ = [
    "WEIGHT_BITS", "INPUT_BITS", "STRENGTH_LIMIT", "InputPopulation", "Population", "Dense",
    "Readout", "Graph", "weight_limit", "frozen_array", "VerifyError", "verify", "source_range",
    "input_current_bounds", "state_range", "signed_bits", "required_state_bits",
]
