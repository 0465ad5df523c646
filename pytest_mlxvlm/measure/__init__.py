"""The measuring core: generation, images, workers."""
