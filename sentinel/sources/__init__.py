"""Metric and log backends behind one narrow protocol (`sources.base.Source`)."""
