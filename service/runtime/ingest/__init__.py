"""Batch ingest: the input topics consumed in bounded batches by one aiokafka consumer per worker, hosted by the
faust app, because faust pays ~150-250 µs per Kafka message (a task, a lock, an Event and an ack each) and has no
supported way to hand an agent a batch (see docs/architecture.md, "The hot path").

The loop (`loop`): `getmany` (`feed`) → decode → detect (`judge`, per partition state from
`service.runtime.state_rebuild`) → each finding and dead letter (`dead_letters`) sent as soon as it is made
(`deliveries`); then, once `max_events` are judged since the last commit, or that commit is `commit_every_s` old, or
the input runs dry: await every acknowledgement → commit (`checkpoint`). So offsets are committed only after the
broker has acknowledged everything their messages produced; a failed produce is sent again and nothing is committed
until it is taken; a worker killed in between leaves them uncommitted and whoever reads them next produces the same
findings (same `finding_id`, which the responder dedups).

Its consumer group is `<app_id>.ingest` (a plain aiokafka consumer cannot join faust's group: another assignor
protocol).

Each input topic has a handler (`service.runtime.inputs`): the native one turns a message into its batch of events;
the span topic's holds spans until an ancestor names their agent, so a partition's commit stops at its lowest held
offset, a release tick in the loop (getmany's timeout bounds its wait) judges the spans whose wait is over, and a
revocation drops what is held (those messages are read again from the committed offset).
"""
