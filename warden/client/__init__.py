"""Small helpers that gateways and agent runtimes embed to talk to Warden; they import only warden.contract."""
