-- Encoding jobs (spec/content.md section 3).  config/output_paths are JSON.

CREATE TABLE jobs (
    job_id        TEXT PRIMARY KEY,
    seq           INTEGER NOT NULL,             -- creation order (FIFO queue, newest-first lists)
    name          TEXT NOT NULL,
    source_id     TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN
                  ('uploading', 'queued', 'encoding', 'complete', 'failed', 'cancelled')),
    progress      REAL NOT NULL DEFAULT 0,
    stage         TEXT NOT NULL DEFAULT '',
    config        TEXT NOT NULL,
    output_paths  TEXT NOT NULL DEFAULT '[]',
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    completed_at  TEXT,
    error         TEXT
);

CREATE INDEX jobs_status ON jobs (status);
CREATE INDEX jobs_source ON jobs (source_id);
