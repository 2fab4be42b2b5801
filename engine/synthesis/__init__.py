"""Synthetic in-room views: products cut out of their catalog photos and pasted into room photos."""
