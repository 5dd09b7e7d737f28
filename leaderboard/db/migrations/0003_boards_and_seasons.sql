-- Boards next to the all-time one (which stays the `scores` table): each counts some actions
-- and resets on a schedule. Declared in the catalog, upserted at API start-up.
CREATE TABLE boards (
    id         text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    title      text NOT NULL,
    action_ids text[],  -- NULL: every action counts
    reset      text NOT NULL,  -- 'never' or a cron expression, evaluated in `timezone`
    timezone   text NOT NULL,
    active     boolean NOT NULL DEFAULT true
);

-- A season is the span between two resets, written ahead of time by the API so that the award
-- statement only has to find the row holding the database's now().
CREATE TABLE seasons (
    board_id  text NOT NULL REFERENCES boards (id),
    season    integer NOT NULL CHECK (season >= 1),
    starts_at timestamptz NOT NULL,
    ends_at   timestamptz CHECK (ends_at > starts_at),  -- NULL: never ends
    PRIMARY KEY (board_id, season)
);
CREATE INDEX seasons_span ON seasons (board_id, starts_at DESC);

-- Each board's standings per season; the current season is mirrored in Redis, the archived
-- ones are read from here. Ties as on the all-time board: the earlier reached_seq ranks higher.
CREATE TABLE board_scores (
    board_id    text NOT NULL,
    season      integer NOT NULL,
    user_id     text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
    score       bigint NOT NULL CHECK (score >= 0),
    reached_seq bigint NOT NULL,
    reached_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (board_id, season, user_id),
    FOREIGN KEY (board_id, season) REFERENCES seasons (board_id, season)
);
CREATE INDEX board_scores_ranking ON board_scores (board_id, season, score DESC, reached_seq ASC);

-- An action may count once per season of a board (repeat: {season: board}).
ALTER TABLE actions ADD COLUMN repeat_board text REFERENCES boards (id);
