-- sessionbench store schema, version 1.
-- seq is assigned per session by bumping chat_sessions.last_seq in the statement that
-- inserts the messages, so order is total per session and never depends on clock ties.
CREATE TABLE IF NOT EXISTS chat_sessions (
    session_id      uuid PRIMARY KEY,
    user_id         text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_message_at timestamptz NOT NULL DEFAULT now(),
    last_seq        bigint NOT NULL DEFAULT 0,
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_active       boolean NOT NULL DEFAULT true
);
CREATE INDEX IF NOT EXISTS chat_sessions_user_recent ON chat_sessions (user_id, last_message_at DESC);
CREATE INDEX IF NOT EXISTS chat_sessions_last_message ON chat_sessions (last_message_at);

CREATE TABLE IF NOT EXISTS chat_messages (
    session_id uuid NOT NULL REFERENCES chat_sessions (session_id) ON DELETE CASCADE,
    seq        bigint NOT NULL,
    role       text NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    metadata   jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (session_id, seq)
);
CREATE INDEX IF NOT EXISTS chat_messages_fts ON chat_messages USING gin (to_tsvector('english', content));
