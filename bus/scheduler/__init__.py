"""Schedule rules: expressions, planning, and exactly-once firing by the leading broker."""
