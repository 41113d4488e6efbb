-- A user's webhook secret (signs the notifications; never shown back).
ALTER TABLE accounts ADD COLUMN webhook_secret TEXT NOT NULL DEFAULT '';

-- What thaw told a user about their account and deployments (thresholds
-- crossed, deployments running idle), newest last.
CREATE TABLE events (
	owner TEXT NOT NULL,
	at_us BIGINT NOT NULL,
	type TEXT NOT NULL,
	deploy_id TEXT NOT NULL,
	message TEXT NOT NULL,
	detail TEXT NOT NULL
);
CREATE INDEX events_owner_at ON events (owner, at_us);
