"""Delivery rules shared by every sending path: the failure policy (:mod:`.policy`)."""
