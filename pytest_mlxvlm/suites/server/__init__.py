"""The server suite: a server process, the streamed HTTP client, the benchmark object, cache steps and fixtures."""
