"""Quality measurement: feature networks (FID Inception-v3, LPIPS-VGG) and the metrics built on them.

Each module holds one thing: a network with the public weight files' key names, or one family of
metrics. Nothing here imports typer or rich; `titok eval` is the command layer over it.
"""
