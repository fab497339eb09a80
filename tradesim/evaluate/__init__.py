"""Running agents through the engine to judge them: backtest by name, the hack audit, the
leaderboard, the out-of-sample study and the counterfactual look-ahead check.

This package sits above ``engine``, ``agents`` and ``rewards`` (rewards must not import the
engine), so code that runs agents in order to score them lives here.
"""
