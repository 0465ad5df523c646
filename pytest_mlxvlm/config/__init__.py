"""The settings of a session: workload, gate policy, outputs, A/B, server and media plans, and the tolerances."""
