-- Collections and their optional JSON Schema.
CREATE TABLE document_collections (
    name TEXT PRIMARY KEY,
    schema TEXT,
    created_at BIGINT NOT NULL
);

-- Every collection's documents in one table (see docs/documents.md).
CREATE TABLE documents (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    doc JSONB NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (collection, id)
);

CREATE TABLE document_indexes (
    collection TEXT NOT NULL,
    name TEXT NOT NULL,
    keys TEXT NOT NULL,
    is_unique BOOLEAN NOT NULL,
    -- Whether some document holds an array on the indexed path (as MongoDB's multikey
    -- flag): while it does not, conditions on the path compile without array branches.
    multikey BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (collection, name)
);
