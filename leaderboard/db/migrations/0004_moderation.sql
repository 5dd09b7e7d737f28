-- Moderation: bans, score adjustments, erasure, and the admin audit log.
--
-- A banned user's rows stay (so that unbanning restores the exact score and rank) but are
-- hidden: every ranking query reads `NOT banned`, and the ranking indexes cover only those.
-- The flag lives on the scores row because that row is where an award and a ban meet: the
-- award's upsert and the ban's update lock it, so whichever commits second sees the other.
ALTER TABLE scores ADD COLUMN banned boolean NOT NULL DEFAULT false;
ALTER TABLE board_scores ADD COLUMN banned boolean NOT NULL DEFAULT false;
DROP INDEX scores_ranking;
CREATE INDEX scores_ranking ON scores (score DESC, reached_seq ASC) WHERE NOT banned;
DROP INDEX board_scores_ranking;
CREATE INDEX board_scores_ranking ON board_scores (board_id, season, score DESC, reached_seq ASC)
    WHERE NOT banned;
CREATE INDEX board_scores_user ON board_scores (user_id);

CREATE TABLE bans (
    user_id   text PRIMARY KEY,
    reason    text NOT NULL,
    banned_by text NOT NULL,
    banned_at timestamptz NOT NULL DEFAULT now()
);

-- Points added or taken back by an admin: a row of its own next to the completions.
CREATE TABLE adjustments (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    text NOT NULL,
    board_id   text,  -- NULL: the all-time board
    season     integer,
    points     integer NOT NULL CHECK (points <> 0),
    reason     text NOT NULL,
    actor      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX adjustments_user ON adjustments (user_id);
CREATE INDEX completions_user ON completions (user_id);

-- Erased users, by a hash of their id only: a completion in flight when the erasure ran must
-- not bring the user back, and nothing here names them.
CREATE TABLE erased_users (
    user_hash bytea PRIMARY KEY,
    erased_at timestamptz NOT NULL DEFAULT now()
);

-- Who did what to whom, when and why. `subject` is cleared when that user is erased.
CREATE TABLE admin_audit (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text NOT NULL,
    action  text NOT NULL,
    subject text,
    reason  text NOT NULL DEFAULT '',
    detail  jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX admin_audit_subject ON admin_audit (subject);
