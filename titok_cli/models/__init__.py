"""TiTok networks: image -> encoder -> quantizer -> decoder -> pixel decoder, and the generators."""
