"""The data layer: catalogs, image decoding and crops, held-out scene lists, the iconic-photo test,
the detector boundary and the one rule that proposes scene crops."""
