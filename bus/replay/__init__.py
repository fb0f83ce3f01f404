"""Replays: the leading broker re-sends an archive's window of events to its bus's rules."""
