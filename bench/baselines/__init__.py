"""Straightforward reference implementations that bench cases time against."""
