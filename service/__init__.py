"""The roof: the runtime that hosts the stages (workers, web, topics) and the `warden` command on top of it."""
