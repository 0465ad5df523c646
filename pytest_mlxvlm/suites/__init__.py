"""The built-in suites beyond images: prefix cache, server, video, batches, with their fixtures."""
