"""Where models come from: mlx_vlm.load of a hub id or folder, synthetic models and weightless twins."""
