"""Agent registry and baselines; qtnet/, contest/ and group/ hold the learning agents."""
