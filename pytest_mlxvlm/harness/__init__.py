"""The pytest side of a session: the mlx_bench object, the session object, options, their resolution, xdist, the terminal."""
