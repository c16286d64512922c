-- sessionbench store schema, version 2: what keeps every process's Redis cache honest.
-- A process that committed a write but could not update (or delete) the session's cache
-- entry records the session here before it acknowledges; every hybrid process polls this
-- table, deletes those entries in Redis and then the rows.  The epoch is the cache
-- namespace generation: every cache entry carries the epoch it was filled under and is
-- dropped when it differs from the one the scripts are given; bumping it invalidates all.
CREATE TABLE IF NOT EXISTS sessionstore_cache_invalidations (
    id         bigserial PRIMARY KEY,
    session_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS sessionstore_cache_epoch (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch     bigint NOT NULL DEFAULT 0
);
INSERT INTO sessionstore_cache_epoch (singleton, epoch) VALUES (true, 0) ON CONFLICT DO NOTHING;
