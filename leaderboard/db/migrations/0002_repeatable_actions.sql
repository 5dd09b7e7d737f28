-- Repeatable actions: an action may count once per period (an hour, a day, a week, or any
-- number of seconds) instead of once ever. repeat_s = 0: once ever (as before).
ALTER TABLE actions
    ADD COLUMN repeat_s integer NOT NULL DEFAULT 0 CHECK (repeat_s BETWEEN 0 AND 31536000);

-- The period a completion counts in: floor(epoch / repeat_s) on the database's clock (weeks
-- start on Monday 00:00 UTC), 0 for an action that counts once. "Already completed" now means
-- within the same period; the audit log still holds every completion.
ALTER TABLE completions ADD COLUMN period bigint NOT NULL DEFAULT 0;
ALTER TABLE completions DROP CONSTRAINT completions_once;
ALTER TABLE completions ADD CONSTRAINT completions_once UNIQUE (user_id, action_id, period);
