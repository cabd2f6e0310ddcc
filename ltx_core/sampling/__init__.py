"""Flow-matching sampling: schedules, seeded noise, frame conditioning and the Euler loop."""
