"""FPGA flows: boards, the host top level, bitstream builds, the UART host client, netlists."""
