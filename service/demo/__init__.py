"""`warden demo` and the stand-ins it starts (a local Slack Web API, an OAuth server): never imported by the runtime."""
