"""The Slack notifier with its rendering and interactivity: everything Slack-specific lives in this package."""
