"""QTNet-style deep-RL trader: batched torch env, GRU recurrent DPG with Q-filtered imitation."""
