"""Scoring agents by running them through the engine: the hack audit and the leaderboard.

This package sits above both ``engine`` and ``rewards`` (rewards must not import the engine),
so code that runs agents in order to score them lives here.
"""
