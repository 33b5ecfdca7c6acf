"""The runtime: settings, faust app wiring, the web server, the embedded broker, topics and the policy watch."""
