-- Sources (files in <media_dir>/originals/) and chunked uploads in progress.

CREATE TABLE sources (
    source_id         TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    original_filename TEXT NOT NULL,
    file_path         TEXT NOT NULL UNIQUE,      -- relative to media_dir, e.g. originals/clip.mp4
    file_size         INTEGER NOT NULL DEFAULT 0,
    duration          REAL,
    width             INTEGER,
    height            INTEGER,
    codec             TEXT,
    fps               REAL,
    audio_codec       TEXT,
    uploaded_at       TEXT NOT NULL,             -- ISO-8601 UTC with Z
    status            TEXT NOT NULL DEFAULT 'ready' CHECK (status IN ('ready', 'invalid')),
    error             TEXT
);

CREATE INDEX sources_uploaded_at ON sources (uploaded_at);

CREATE TABLE uploads (
    upload_id         TEXT PRIMARY KEY,          -- the first job's id (the id clients use)
    job_ids           TEXT NOT NULL,             -- JSON array of every job of this upload
    source_id         TEXT NOT NULL,             -- the id the source will get on completion
    filename          TEXT NOT NULL,             -- sanitised file name
    original_filename TEXT NOT NULL,
    expected_size     INTEGER NOT NULL,
    received_size     INTEGER NOT NULL DEFAULT 0,  -- acknowledged (written + fsynced) bytes
    sha256            TEXT,                      -- expected hash (lower-case hex) if the client gave one
    part_path         TEXT NOT NULL,             -- file under <state_dir>/uploads/
    options           TEXT NOT NULL,             -- JSON of the raw encode options
    status            TEXT NOT NULL DEFAULT 'uploading'
                      CHECK (status IN ('uploading', 'completing')),
    created_at        TEXT NOT NULL,
    last_activity     REAL NOT NULL              -- reactor seconds of the last chunk (abandon timer)
);
