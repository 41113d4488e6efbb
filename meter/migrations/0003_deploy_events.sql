-- A deployment's page reads its events (instances placed, ready, stopped,
-- failed; scale decisions; shortfalls) by deployment, oldest first.
CREATE INDEX events_deploy_at ON events (deploy_id, at_us);
-- journal is 1 for a deployment's journal events (meter.Journal), 0 for
-- the account events: GET /account/events shows those only, and retention
-- deletes journal events only.
ALTER TABLE events ADD COLUMN journal INTEGER NOT NULL DEFAULT 0;
CREATE INDEX events_journal_at ON events (journal, at_us);
