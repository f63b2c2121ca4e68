"""Commands that need no daemon: backtest, check, rule unit tests."""
