-- The catalog of actions a user can complete; points are decided here, never by the client.
CREATE TABLE actions (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    title       text NOT NULL,
    description text NOT NULL DEFAULT '',
    points      integer NOT NULL CHECK (points BETWEEN 1 AND 100000),
    -- JSON Schema that the completion's `data` must satisfy; NULL: `data` must be empty.
    data_schema jsonb,
    active      boolean NOT NULL DEFAULT true,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Global order in which users reached their current score: the tie-break (who reached a score
-- first ranks higher). A sequence rather than a timestamp because two commits can share a
-- microsecond, and the Redis ranking must order ties exactly as PostgreSQL does.
CREATE SEQUENCE score_reached_seq AS bigint;

CREATE TABLE scores (
    user_id     text PRIMARY KEY CHECK (length(user_id) BETWEEN 1 AND 128),
    score       bigint NOT NULL CHECK (score >= 0),
    reached_seq bigint NOT NULL,
    reached_at  timestamptz NOT NULL DEFAULT now(),
    completions integer NOT NULL DEFAULT 0
);
CREATE INDEX scores_ranking ON scores (score DESC, reached_seq ASC);

-- The audit log: one row per completion, written in the same transaction as the score.
CREATE TABLE completions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      text NOT NULL,
    action_id    text NOT NULL REFERENCES actions (id),
    points       integer NOT NULL,
    data         jsonb NOT NULL DEFAULT '{}'::jsonb,
    request_id   text NOT NULL,
    completed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT completions_once UNIQUE (user_id, action_id)
);
