"""Detection quality on public agent-security data sets that no one here wrote (issue 26, part 5)."""
