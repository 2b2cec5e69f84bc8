"""The snnc IR: populations, projections and a verifier (see ``docs/architecture.md``)."""

from .graph import (WEIGHT_BITS, INPUT_BITS, STRENGTH_LIMIT, MAX_KERNEL, MAX_TIMESTEPS,
                    InputPopulation,
                    Population, Dense, Conv, MaxPool, Readout, Graph, weight_limit, frozen_array,
                    conv_output_shape)
from .verify import (VerifyError, verify, source_range, input_current_bounds, state_range,
                     signed_bits, required_state_bits, receptive_sum)

__all__ = [
    "WEIGHT_BITS", "INPUT_BITS", "STRENGTH_LIMIT", "MAX_KERNEL", "MAX_TIMESTEPS", "InputPopulation",
    "Population",
    "Dense", "Conv", "MaxPool", "Readout", "Graph", "weight_limit", "frozen_array",
    "conv_output_shape", "VerifyError", "verify", "source_range", "input_current_bounds",
    "state_range", "signed_bits", "required_state_bits", "receptive_sum",
]
