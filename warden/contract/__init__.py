"""The contract every layer shares: events, findings, the matrix model, metric names. Imports nothing of Warden's."""
