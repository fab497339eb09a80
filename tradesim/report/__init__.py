"""Every HTML page tradesim writes: run tear sheets, leaderboards, audits, studies."""
