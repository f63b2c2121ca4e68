"""`sentinel test`: rule unit tests evaluated fully in-process.

Input series in promtool's compact notation and log lines feed small in-process PromQL
and LogQL engines covering the expressions Sentinel generates; the same evaluation and
alert state machine as the daemon then run at each evaluation step.
"""
