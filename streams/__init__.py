"""Stream processing: activity in, findings out (ingest → detect), on faust-streaming."""
