"""Source library: files in <media_dir>/originals/ with ffprobe metadata."""
