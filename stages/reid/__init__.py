"""Appearance ReID: an embedding of RGB person crops, pooled over a track's frames."""
