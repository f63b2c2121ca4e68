"""Pure evaluation (results, SLO judgement, budgets and burn rates) and the engine that
runs one cycle.
"""
