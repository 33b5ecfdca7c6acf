"""Notifiers: one package per channel to humans, registered in responders.notifiers.registry."""
