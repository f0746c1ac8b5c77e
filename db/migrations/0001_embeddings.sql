-- Baseline: the runbook's embedding table (1536 dimensions, cosine distance).
-- The vector extension is created beforehand by the pgvector role (as the admin).
--
-- The index is HNSW rather than the runbook's ivfflat (lists = 100): IVFFlat learns its
-- lists from the rows present at build time, so built on an empty table it gives poor
-- recall once data arrives; HNSW needs no training and is correct on an empty table.
CREATE TABLE IF NOT EXISTS embeddings (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    doc_id text NOT NULL,
    chunk_idx integer NOT NULL CHECK (chunk_idx >= 0),
    embedding vector(1536) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (doc_id, chunk_idx)
);

CREATE INDEX IF NOT EXISTS embeddings_embedding_hnsw_cosine
    ON embeddings USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
